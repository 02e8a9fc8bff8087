/* Reference for redis-sync-get: one thread of blocking GETs over raw hiredis.
 * Usage: redis_sync_get HOST PORT KEY SECONDS ; prints seconds per GET. */
#include <hiredis/hiredis.h>
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
    if (argc != 5) { fprintf(stderr, "usage: %s HOST PORT KEY SECONDS\n", argv[0]); return 2; }
    /* The same connection set-up as Tandem's blocking pool: connect and command timeouts of 1 s. */
    struct timeval tv = { 1, 0 };
    redisContext *c = redisConnectWithTimeout(argv[1], atoi(argv[2]), tv);
    if (c == NULL || c->err) { fprintf(stderr, "connect failed\n"); return 1; }
    redisSetTimeout(c, tv);
    const char *args[2] = { "GET", argv[3] };
    size_t lens[2] = { 3, strlen(argv[3]) };
    double seconds = atof(argv[4]);
    long ops = 0;
    for (int i = 0; i < 1000; i++) { redisReply *r = redisCommandArgv(c, 2, args, lens); if (!r) return 1; freeReplyObject(r); }
    double start = now(), end = start + seconds, t = start;
    while (t < end) {
        for (int i = 0; i < 256; i++) {
            redisReply *r = redisCommandArgv(c, 2, args, lens);
            if (r == NULL) { fprintf(stderr, "command failed\n"); return 1; }
            if (r->type != REDIS_REPLY_STRING) { fprintf(stderr, "unexpected reply\n"); return 1; }
            freeReplyObject(r);
        }
        ops += 256;
        t = now();
    }
    printf("%.9f\n", (t - start) / ops);
    redisFree(c);
    return 0;
}
