#ifndef CTANDEMSYS_H
#define CTANDEMSYS_H
// Linux system interfaces that Swift's Glibc module does not export (epoll, eventfd).
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <stdint.h>

// Builds an epoll_event (a packed struct with a union inside, awkward from Swift).
static inline struct epoll_event ctandemsys_epoll_event(uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return ev;
}
static inline uint64_t ctandemsys_epoll_event_data(const struct epoll_event *ev) { return ev->data.u64; }
static inline uint32_t ctandemsys_epoll_event_events(const struct epoll_event *ev) { return ev->events; }
#endif
