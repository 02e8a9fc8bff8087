/* References for http-small-gets: C loops over raw curl multi keeping CONCURRENCY GETs in flight.
 *   perform (the default): curl_multi_perform and curl_multi_poll, the strongest plain use of curl.
 *   socket: driven the way Tandem drives curl (the multi-socket API: curl_multi_socket_action on epoll
 *           readiness, curl's socket and timer callbacks), with nothing else on top; it shows what
 *           the API Tandem must use costs by itself.
 * Both modes do the work Tandem does for each request: the same options (request and connect
 * timeouts, which make curl keep timers; Tandem's User-Agent; no `Expect:`; HTTP protocols only; the
 * body size limit), the response's header lines and body copied into buffers of the handle (reset for
 * each request, as Tandem's transfer starts empty), and the status code read and checked (not 200
 * counts as a failure).
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

/* What one handle received: header lines and body, kept between requests and emptied for each. */
struct received {
    char *headers, *body;
    size_t header_len, header_cap, body_len, body_cap;
};

static const size_t max_body = 16u * 1024 * 1024;  /* Tandem's default maxBodyBytes */

static int append(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n) c *= 2;
        char *b = realloc(*buf, c);
        if (!b) return 0;
        *buf = b;
        *cap = c;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 1;
}

static size_t on_body(char *p, size_t s, size_t n, void *u) {
    struct received *r = u;
    if (r->body_len + s * n > max_body) return 0;
    return append(&r->body, &r->body_len, &r->body_cap, p, s * n) ? s * n : 0;
}

static size_t on_header(char *p, size_t s, size_t n, void *u) {
    struct received *r = u;
    if (s * n >= 5 && memcmp(p, "HTTP/", 5) == 0) r->header_len = 0;  /* a new response */
    return append(&r->headers, &r->header_len, &r->header_cap, p, s * n) ? s * n : 0;
}

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
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (m->data.result == CURLE_OK && status == 200) done++; else failed++;
        curl_multi_remove_handle(multi, e);
        struct received *r = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
        r->header_len = r->body_len = 0;
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
    struct curl_slist *headers = curl_slist_append(NULL, "Expect:");
    /* main owns the handles, their buffers and the header list, and frees them at the end. */
    struct received *received = calloc((size_t)concurrency, sizeof *received);
    CURL **easies = calloc((size_t)concurrency, sizeof *easies);
    if (!received || !easies) { fprintf(stderr, "out of memory\n"); return 1; }
    for (int i = 0; i < concurrency; i++) {
        CURL *e = easies[i] = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_PRIVATE, &received[i]);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &received[i]);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &received[i]);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));  /* as Tandem sets it */
#pragma GCC diagnostic pop
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_body);
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(e, CURLOPT_USERAGENT, "tandem/0.1.0");
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
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
    for (int i = 0; i < concurrency; i++) {
        curl_multi_remove_handle(multi, easies[i]);
        curl_easy_cleanup(easies[i]);
        free(received[i].headers);
        free(received[i].body);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    free(easies);
    free(received);
    if (failed > done / 100) { fprintf(stderr, "%ld requests failed\n", failed); return 1; }
    printf("%.1f\n", done / elapsed);
    return 0;
}
