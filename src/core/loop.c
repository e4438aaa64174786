/* loop.c — epoll, a binary min-heap of timers, deferred callbacks. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256

struct free_item { void *p; void (*fn)(void *); };

struct loop {
    int epfd;
    bool stop;
    uint64_t now;
    ev_timer **heap;
    size_t nheap, capheap;
    ev_defer *dhead, *dtail;
    ev_defer *round_end;   /* last item of the run_defers round in progress */
    struct free_item *frees;
    size_t nfrees, capfrees;
    time_t date_sec;
    char date[40];
};

uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

loop_t *loop_new(void)
{
    loop_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    loop_update_time(l);
    return l;
}

void loop_free(loop_t *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nfrees; i++)
        l->frees[i].fn(l->frees[i].p);
    free(l->frees);
    close(l->epfd);
    free(l->heap);
    free(l);
}

void loop_update_time(loop_t *l) { l->now = mono_ns() / 1000000u; }
uint64_t loop_now(loop_t *l) { return l->now; }
void loop_stop(loop_t *l) { l->stop = true; }

const char *loop_http_date(loop_t *l)
{
    time_t t = time(NULL);
    if (t != l->date_sec) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(l->date, sizeof l->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        l->date_sec = t;
    }
    return l->date;
}

/* ---- io ---- */

static uint32_t to_epoll(unsigned mask)
{
    uint32_t e = 0;
    if (mask & EV_READ)
        e |= EPOLLIN | EPOLLRDHUP;
    if (mask & EV_WRITE)
        e |= EPOLLOUT;
    return e;
}

void ev_io_init(ev_io *io, ev_io_cb cb, void *data)
{
    io->fd = -1;
    io->mask = 0;
    io->cb = cb;
    io->data = data;
}

int ev_io_start(loop_t *l, ev_io *io, int fd, unsigned mask)
{
    struct epoll_event ev = { .events = to_epoll(mask), .data.ptr = io };
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return -errno;
    io->fd = fd;
    io->mask = mask;
    return 0;
}

int ev_io_set(loop_t *l, ev_io *io, unsigned mask)
{
    if (io->fd < 0 || io->mask == mask)
        return 0;
    struct epoll_event ev = { .events = to_epoll(mask), .data.ptr = io };
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
        return -errno;
    io->mask = mask;
    return 0;
}

void ev_io_stop(loop_t *l, ev_io *io)
{
    if (io->fd < 0)
        return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->fd = -1;
    io->mask = 0;
}

/* ---- timers: binary min-heap keyed on `when` ---- */

static void heap_set(loop_t *l, size_t i, ev_timer *t)
{
    l->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(loop_t *l, size_t i)
{
    ev_timer *t = l->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (l->heap[p]->when <= t->when)
            break;
        heap_set(l, i, l->heap[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void heap_down(loop_t *l, size_t i)
{
    ev_timer *t = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->nheap)
            break;
        if (c + 1 < l->nheap && l->heap[c + 1]->when < l->heap[c]->when)
            c++;
        if (l->heap[c]->when >= t->when)
            break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, t);
}

void ev_timer_init(ev_timer *t, ev_timer_cb cb, void *data)
{
    t->when = 0;
    t->slot = 0;
    t->cb = cb;
    t->data = data;
}

void ev_timer_stop(loop_t *l, ev_timer *t)
{
    if (!t->slot)
        return;
    size_t i = t->slot - 1;
    t->slot = 0;
    ev_timer *last = l->heap[--l->nheap];
    if (i == l->nheap)
        return;
    heap_set(l, i, last);
    heap_down(l, i);
    heap_up(l, last->slot - 1);
}

void ev_timer_start(loop_t *l, ev_timer *t, uint64_t after_ms)
{
    if (t->slot)
        ev_timer_stop(l, t);
    if (l->nheap == l->capheap) {
        size_t cap = l->capheap ? l->capheap * 2 : 64;
        ev_timer **h = realloc(l->heap, cap * sizeof *h);
        if (!h)
            abort(); /* timers are tiny; failing here means the process is lost */
        l->heap = h;
        l->capheap = cap;
    }
    t->when = l->now + after_ms;
    heap_set(l, l->nheap++, t);
    heap_up(l, l->nheap - 1);
}

/* ---- deferred work ---- */

void ev_defer_init(ev_defer *d, ev_defer_cb cb, void *data)
{
    d->next = NULL;
    d->cb = cb;
    d->data = data;
    d->queued = false;
}

void ev_defer_post(loop_t *l, ev_defer *d)
{
    if (d->queued)
        return;
    d->queued = true;
    d->next = NULL;
    if (l->dtail)
        l->dtail->next = d;
    else
        l->dhead = d;
    l->dtail = d;
}

void ev_defer_cancel(loop_t *l, ev_defer *d)
{
    if (!d->queued)
        return;
    ev_defer **pp = &l->dhead, *prev = NULL;
    while (*pp && *pp != d) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = d->next;
        if (l->dtail == d)
            l->dtail = prev;
        if (l->round_end == d)
            l->round_end = prev;
    }
    d->queued = false;
    d->next = NULL;
}

static void run_defers(loop_t *l)
{
    /* callbacks may post more work; run until quiet, bounded per pass.
     * Items are taken off the live list one at a time (a round ends at the
     * tail it started with), so a callback may cancel, and its owner free,
     * any other queued item. */
    for (int rounds = 0; l->dhead && rounds < 64; rounds++) {
        l->round_end = l->dtail;
        while (l->round_end) {
            ev_defer *d = l->dhead;
            if (d == l->round_end)
                l->round_end = NULL;
            l->dhead = d->next;
            if (!l->dhead)
                l->dtail = NULL;
            d->queued = false;
            d->next = NULL;
            d->cb(l, d);
        }
    }
}

void loop_defer_free(loop_t *l, void *p, void (*fn)(void *))
{
    if (l->nfrees == l->capfrees) {
        size_t cap = l->capfrees ? l->capfrees * 2 : 64;
        struct free_item *f = realloc(l->frees, cap * sizeof *f);
        if (!f)
            abort();
        l->frees = f;
        l->capfrees = cap;
    }
    l->frees[l->nfrees++] = (struct free_item){ p, fn };
}

static void run_frees(loop_t *l)
{
    /* a free function may queue more frees; index loop sees them */
    for (size_t i = 0; i < l->nfrees; i++)
        l->frees[i].fn(l->frees[i].p);
    l->nfrees = 0;
}

/* ---- async ---- */

static void async_io_cb(loop_t *l, ev_io *io, unsigned events)
{
    ev_async *a = io->data;
    uint64_t v;
    while (read(io->fd, &v, sizeof v) == (ssize_t)sizeof v)
        ;
    a->cb(l, a);
}

int ev_async_init(loop_t *l, ev_async *a, ev_async_cb cb, void *data)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    a->cb = cb;
    a->data = data;
    ev_io_init(&a->io, async_io_cb, a);
    int rc = ev_io_start(l, &a->io, fd, EV_READ);
    if (rc < 0)
        close(fd);
    return rc;
}

void ev_async_send(ev_async *a)
{
    uint64_t one = 1;
    ssize_t n = write(a->io.fd, &one, sizeof one);
    (void)n; /* EAGAIN means a wake-up is already pending */
}

void ev_async_close(loop_t *l, ev_async *a)
{
    int fd = a->io.fd;
    ev_io_stop(l, &a->io);
    if (fd >= 0)
        close(fd);
}

/* ---- run ---- */

/* One iteration: deferred work, then wait up to max_wait_ms (-1 = until the
 * next timer) for events, dispatch them, run due timers. */
int loop_run_once(loop_t *l, int max_wait_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    run_defers(l);
    run_frees(l);
    if (l->stop)
        return 0;
    int timeout = -1;
    if (l->dhead) {
        timeout = 0;
    } else if (l->nheap) {
        uint64_t w = l->heap[0]->when;
        timeout = w <= l->now ? 0 : (int)(w - l->now > 60000 ? 60000 : w - l->now);
    }
    if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms))
        timeout = max_wait_ms;
    int n = epoll_wait(l->epfd, evs, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR)
        return -errno;
    loop_update_time(l);
    for (int i = 0; i < n; i++) {
        ev_io *io = evs[i].data.ptr;
        if (io->fd < 0)
            continue; /* closed earlier in this batch */
        unsigned e = 0;
        uint32_t r = evs[i].events;
        if (r & (EPOLLIN | EPOLLRDHUP))
            e |= EV_READ;
        if (r & EPOLLOUT)
            e |= EV_WRITE;
        if (r & (EPOLLERR | EPOLLHUP))
            e |= EV_HUP | (io->mask & (EV_READ | EV_WRITE));
        if (e)
            io->cb(l, io, e);
    }
    while (l->nheap && l->heap[0]->when <= l->now) {
        ev_timer *t = l->heap[0];
        ev_timer_stop(l, t);
        t->cb(l, t);
    }
    run_defers(l);
    run_frees(l);
    return n;
}

int loop_run(loop_t *l)
{
    l->stop = false;
    while (!l->stop) {
        int rc = loop_run_once(l, -1);
        if (rc < 0)
            return rc;
    }
    run_defers(l);
    run_frees(l);
    return 0;
}
