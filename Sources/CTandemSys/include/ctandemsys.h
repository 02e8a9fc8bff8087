#ifndef CTANDEMSYS_H
#define CTANDEMSYS_H
// Linux system interfaces that Swift's Glibc module does not export (epoll, eventfd).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <stdint.h>
#include <sys/prctl.h>

// Builds an epoll_event (a packed struct with a union inside, awkward from Swift).
static inline struct epoll_event ctandemsys_epoll_event(uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return ev;
}
static inline uint64_t ctandemsys_epoll_event_data(const struct epoll_event *ev) { return ev->data.u64; }
static inline uint32_t ctandemsys_epoll_event_events(const struct epoll_event *ev) { return ev->events; }

// ThreadSanitizer's annotation interface. Swift's `Mutex` on Linux hands a contended lock over inside
// the kernel (FUTEX_LOCK_PI), where ThreadSanitizer cannot see the ordering, so every access guarded by
// it would be reported as a race. Tandem's locked sections announce acquire/release to the sanitizer
// themselves. The symbols are weak: without -sanitize=thread they are null and nothing is called.
extern void __tsan_acquire(void *addr) __attribute__((weak));
extern void __tsan_release(void *addr) __attribute__((weak));
static inline void ctandemsys_tsan_acquire(void *addr) { if (__tsan_acquire) __tsan_acquire(addr); }
static inline void ctandemsys_tsan_release(void *addr) { if (__tsan_release) __tsan_release(addr); }

// Names the calling thread (what top, perf and gdb show). Linux keeps the first 15 bytes.
static inline int ctandemsys_set_thread_name(const char *name) { return prctl(PR_SET_NAME, name, 0, 0, 0); }
#endif
