/* A second figure for http-small-gets: the same job as curl_multi_gets.c, driven the way Tandem
 * drives curl (the multi-socket API: curl_multi_socket_action on epoll readiness, curl's socket and
 * timer callbacks), with nothing else on top. It shows what the API Tandem must use costs by itself.
 * Usage: curl_socket_gets URL CONCURRENCY SECONDS ; prints requests per second. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

static int epfd;
static long curl_timeout_ms = -1;
/* The epoll interest registered for each descriptor (0: none), so that a callback that repeats the
 * current interest costs no system call. */
static unsigned registered[65536];

static size_t discard(char *p, size_t s, size_t n, void *u) { (void)p; (void)u; return s * n; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *u, void *sp) {
    (void)e; (void)u; (void)sp;
    if (fd < 0 || fd >= 65536) return 0;
    unsigned want = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) want |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) want |= EPOLLOUT;
    struct epoll_event ev = { .events = want, .data.fd = fd };
    if (want == 0) {
        if (registered[fd]) epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev);
        registered[fd] = 0;
    } else if (registered[fd] != want) {
        epoll_ctl(epfd, registered[fd] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
        registered[fd] = want;
    }
    return 0;
}

static int on_timer(CURLM *m, long ms, void *u) { (void)m; (void)u; curl_timeout_ms = ms; return 0; }

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s URL CONCURRENCY SECONDS\n", argv[0]); return 2; }
    const char *url = argv[1];
    int concurrency = atoi(argv[2]);
    double seconds = atof(argv[3]);
    curl_global_init(CURL_GLOBAL_ALL);
    epfd = epoll_create1(0);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)concurrency);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
    for (int i = 0; i < concurrency; i++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, e);
    }
    long done = 0, failed = 0;
    int running = 0;
    struct epoll_event events[128];
    double start = now(), end = start + seconds;
    while (now() < end) {
        int wait_ms = curl_timeout_ms < 0 || curl_timeout_ms > 100 ? 100 : (int)curl_timeout_ms;
        int n = epoll_wait(epfd, events, 128, wait_ms);
        for (int i = 0; i < n; i++) {
            int flags = 0;
            if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
            if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
            if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
            curl_multi_socket_action(multi, events[i].data.fd, flags, &running);
        }
        if (n == 0 || curl_timeout_ms == 0) curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE) continue;
            CURL *e = m->easy_handle;
            if (m->data.result == CURLE_OK) done++; else failed++;
            curl_multi_remove_handle(multi, e);
            curl_multi_add_handle(multi, e);
        }
    }
    double elapsed = now() - start;
    if (failed > done / 100) { fprintf(stderr, "%ld requests failed\n", failed); return 1; }
    printf("%.1f\n", done / elapsed);
    return 0;
}
