/* loopback.h — the plumbing of the unit tests' fake servers (a thread with
 * a listening socket on 127.0.0.1): one copy, so each test writes only what
 * its fake answers. */
#ifndef SHADE_LOOPBACK_H
#define SHADE_LOOPBACK_H

#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

/* A listening socket on a free loopback port: the fd (port filled), or -1. */
static inline int loopback_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* The next connection, or -1 once *stop is set (polled every 10 ms, so the
 * thread can be joined). */
static inline int loopback_accept(int lfd, atomic_bool *stop)
{
    while (!atomic_load(stop)) {
        struct pollfd p = { lfd, POLLIN, 0 };
        if (poll(&p, 1, 10) <= 0)
            continue;
        int c = accept(lfd, NULL, NULL);
        if (c >= 0)
            return c;
    }
    return -1;
}

/* Hold a connection unanswered until the peer closes it (its deadline is
 * what ends the exchange) or *stop is set. */
static inline void loopback_hold(int c, atomic_bool *stop)
{
    char sink[512];
    while (!atomic_load(stop)) {
        struct pollfd q = { c, POLLIN, 0 };
        if (poll(&q, 1, 10) > 0 && recv(c, sink, sizeof sink, 0) <= 0)
            break;
    }
}

#endif
