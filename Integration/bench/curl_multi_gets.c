/* Reference for http-small-gets: a C loop over raw curl multi keeping CONCURRENCY GETs in flight.
 * Usage: curl_multi_gets URL CONCURRENCY SECONDS ; prints requests per second. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static size_t discard(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s URL CONCURRENCY SECONDS\n", argv[0]); return 2; }
    const char *url = argv[1];
    int concurrency = atoi(argv[2]);
    double seconds = atof(argv[3]);
    curl_global_init(CURL_GLOBAL_ALL);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)concurrency);
    for (int i = 0; i < concurrency; i++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, e);
    }
    long done = 0, failed = 0;
    double start = now(), end = start + seconds;
    int running = 0;
    while (now() < end) {
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE) continue;
            CURL *e = m->easy_handle;
            if (m->data.result == CURLE_OK) done++; else failed++;
            curl_multi_remove_handle(multi, e);
            curl_multi_add_handle(multi, e);
        }
        curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    double elapsed = now() - start;
    if (failed > done / 100) { fprintf(stderr, "%ld requests failed\n", failed); return 1; }
    printf("%.1f\n", done / elapsed);
    return 0;
}
