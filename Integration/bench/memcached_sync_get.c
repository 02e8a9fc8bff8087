/* Reference for memcached-sync-get: one thread of blocking gets over raw libmemcached.
 * Usage: memcached_sync_get HOST:PORT KEY SECONDS ; prints seconds per get. */
#include <libmemcached-1.0/memcached.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s HOST:PORT KEY SECONDS\n", argv[0]); return 2; }
    char config[256];
    snprintf(config, sizeof config, "--SERVER=%s", argv[1]);
    memcached_st *m = memcached(config, strlen(config));
    if (m == NULL) { fprintf(stderr, "bad config\n"); return 1; }
    /* The same behaviours as Tandem's pool. */
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, 1000);
    const char *key = argv[2];
    size_t klen = strlen(key);
    double seconds = atof(argv[3]);
    long ops = 0;
    for (int i = 0; i < 1000; i++) {
        size_t len; uint32_t flags; memcached_return_t rc;
        char *v = memcached_get(m, key, klen, &len, &flags, &rc);
        if (rc != MEMCACHED_SUCCESS) { fprintf(stderr, "get failed: %s\n", memcached_strerror(m, rc)); return 1; }
        free(v);
    }
    double start = now(), end = start + seconds, t = start;
    while (t < end) {
        for (int i = 0; i < 256; i++) {
            size_t len; uint32_t flags; memcached_return_t rc;
            char *v = memcached_get(m, key, klen, &len, &flags, &rc);
            if (rc != MEMCACHED_SUCCESS) { fprintf(stderr, "get failed\n"); return 1; }
            free(v);
        }
        ops += 256;
        t = now();
    }
    printf("%.9f\n", (t - start) / ops);
    memcached_free(m);
    return 0;
}
