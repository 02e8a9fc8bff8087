/* References for http-small-gets: C loops over raw curl multi keeping CONCURRENCY GETs in flight.
 *   perform (the default): curl_multi_perform and curl_multi_poll, the strongest plain use of curl.
 *   socket: driven the way Tandem drives curl (the multi-socket API: curl_multi_socket_action on epoll
 *           readiness, curl's socket and timer callbacks), with nothing else on top; it shows what
 *           the API Tandem must use costs by itself.
 * Usage: curl_multi_gets URL CONCURRENCY SECONDS [perform|socket] ; prints requests per second. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

static int epfd = -1;
static long curl_timeout_ms = -1;
/* The epoll interest registered for each descriptor (0: none), so that a callback that repeats the
 * current interest costs no system call. */
static unsigned registered[65536];
static long done = 0, failed = 0;

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

/* Counts finished transfers and starts each handle again. */
static void restart_finished(CURLM *multi) {
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

/* One turn of the socket-API loop: wait for readiness or curl's timeout, and tell curl. */
static void socket_turn(CURLM *multi) {
    struct epoll_event events[128];
    int running = 0;
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
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) { fprintf(stderr, "usage: %s URL CONCURRENCY SECONDS [perform|socket]\n", argv[0]); return 2; }
    const char *url = argv[1];
    int concurrency = atoi(argv[2]);
    double seconds = atof(argv[3]);
    int socket_api = argc == 5 && strcmp(argv[4], "socket") == 0;
    curl_global_init(CURL_GLOBAL_ALL);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)concurrency);
    if (socket_api) {
        epfd = epoll_create1(0);
        curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
    }
    for (int i = 0; i < concurrency; i++) {
        CURL *e = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_multi_add_handle(multi, e);
    }
    double start = now(), end = start + seconds;
    while (now() < end) {
        if (socket_api) {
            socket_turn(multi);
        } else {
            int running = 0;
            curl_multi_perform(multi, &running);
        }
        restart_finished(multi);
        if (!socket_api) curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    double elapsed = now() - start;
    if (failed > done / 100) { fprintf(stderr, "%ld requests failed\n", failed); return 1; }
    printf("%.1f\n", done / elapsed);
    return 0;
}
