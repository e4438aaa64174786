/* loop.h — a small epoll event loop, one per worker thread (Redis's ae.c and
 * libuv are the models).  Handles are caller-allocated; nothing here
 * allocates per event.
 *
 * Lifetime rule: an object holding an ev_io may be closed while other events
 * for it are still in the current epoll batch.  ev_io_stop() sets io->fd to -1
 * and the dispatcher skips such handles, and loop_defer_free() releases the
 * object only after the batch is done.
 */
#ifndef SHADE_LOOP_H
#define SHADE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct loop loop_t;

#define EV_READ  1u
#define EV_WRITE 2u
#define EV_HUP   4u   /* reported only: error or hang-up */

typedef struct ev_io ev_io;
typedef void (*ev_io_cb)(loop_t *l, ev_io *io, unsigned events);
struct ev_io {
    int fd;          /* -1 when not started */
    unsigned mask;   /* what is registered with epoll */
    ev_io_cb cb;
    void *data;
};

typedef struct ev_timer ev_timer;
typedef void (*ev_timer_cb)(loop_t *l, ev_timer *t);
struct ev_timer {
    uint64_t when;   /* absolute, loop milliseconds */
    size_t slot;     /* heap index + 1; 0 when inactive */
    ev_timer_cb cb;
    void *data;
};

/* Deferred callbacks run after the current batch of events, before the loop
 * sleeps again: the way to leave a parser callback or break re-entrancy. */
typedef struct ev_defer ev_defer;
typedef void (*ev_defer_cb)(loop_t *l, ev_defer *d);
struct ev_defer {
    ev_defer *next;
    ev_defer_cb cb;
    void *data;
    bool queued;
};

/* Wake a loop from another thread (eventfd). */
typedef struct ev_async ev_async;
typedef void (*ev_async_cb)(loop_t *l, ev_async *a);
struct ev_async {
    ev_io io;
    ev_async_cb cb;
    void *data;
};

loop_t *loop_new(void);
void loop_free(loop_t *l);
int loop_run(loop_t *l);       /* until loop_stop() */
int loop_run_once(loop_t *l, int max_wait_ms); /* one iteration; events handled or -errno */
void loop_stop(loop_t *l);
uint64_t loop_now(loop_t *l);  /* cached monotonic ms, updated each iteration */
void loop_update_time(loop_t *l);
uint64_t mono_ns(void);        /* CLOCK_MONOTONIC in ns, not cached */
double unix_now(void);         /* CLOCK_REALTIME in seconds, not cached */
uint64_t wall_ms(void);        /* CLOCK_REALTIME in ms */
/* Cached "Date:" value for the current second (IMF-fixdate, 29 chars). */
const char *loop_http_date(loop_t *l);

void ev_io_init(ev_io *io, ev_io_cb cb, void *data);
int ev_io_start(loop_t *l, ev_io *io, int fd, unsigned mask);
int ev_io_set(loop_t *l, ev_io *io, unsigned mask);   /* no syscall if unchanged */
void ev_io_stop(loop_t *l, ev_io *io);

void ev_timer_init(ev_timer *t, ev_timer_cb cb, void *data);
void ev_timer_start(loop_t *l, ev_timer *t, uint64_t after_ms);  /* re-arms if active */
void ev_timer_stop(loop_t *l, ev_timer *t);
static inline bool ev_timer_active(const ev_timer *t) { return t->slot != 0; }

void ev_defer_init(ev_defer *d, ev_defer_cb cb, void *data);
void ev_defer_post(loop_t *l, ev_defer *d);
void ev_defer_cancel(loop_t *l, ev_defer *d);

int ev_async_init(loop_t *l, ev_async *a, ev_async_cb cb, void *data);
void ev_async_send(ev_async *a);         /* thread-safe */
void ev_async_close(loop_t *l, ev_async *a);

/* Free p with fn after the current event batch (see lifetime rule above). */
void loop_defer_free(loop_t *l, void *p, void (*fn)(void *));

#endif
