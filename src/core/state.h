/* state.h — state shared by every serving process of one master, and kept
 * across reloads: limit buckets, lockout counters, change generations
 * (state.c, doc/state.md).
 *
 * The master creates the segment (st_segment_create) before its first
 * serving process and hands its descriptor to each one (SHADE_STATE_FD);
 * a serving process maps it (st_attach).  A reload therefore neither
 * resets a limit (the new process maps the same memory) nor doubles it
 * (old and new processes charge the same buckets while the old one
 * drains).  Without a master (tests, a process started by hand) st_attach
 * maps a private segment: the same code, shared by the threads only.
 *
 * Every operation completes now (this local backend); the API is the
 * synchronous half of the one in doc/state.md, which a Redis backend will
 * extend with a completion callback.  Critical sections hold one or a few
 * stripe locks (process-shared, robust: a process killed inside one leaves
 * it recoverable) for a few dozen instructions: no system call, no
 * allocation.
 */
#ifndef SHADE_STATE_H
#define SHADE_STATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define ST_SLOTS_DEFAULT 65536u /* 64 bytes each: 4 MiB */
#define ST_MAX_BUCKETS 8        /* per reservation */
#define ST_GENERATIONS 8        /* change counters (st_gen) */

/* What a bucket is. */
enum st_kind {
    ST_REFILL,  /* a token bucket: capacity refilled evenly over period_ms (rpm, tpm) */
    ST_WINDOW,  /* capacity per calendar window the caller names (a day, a month), full at its start (budgets) */
    ST_GAUGE,   /* capacity held while in use, returned at settle (concurrency) */
};

struct st_bucket {
    uint64_t id[2];       /* its name, hashed (st_id) */
    int64_t capacity;     /* units: requests, tokens, nano-dollars */
    int64_t period_ms;    /* ST_REFILL: the time to refill it whole */
    int64_t window;       /* ST_WINDOW: which window (e.g. the day's number); a new one starts full */
    int64_t window_left_ms; /* ST_WINDOW: until it ends */
    int64_t fresh_used;   /* already used when the bucket is made (a budget's spend from the ledger) */
    enum st_kind kind;
};

/* A 128-bit id for a name made of parts, e.g. ("tpm", key id). */
void st_id(uint64_t id[2], const char *rule, const void *scope, size_t scope_len);

struct st_result {
    bool ok;              /* reserved in every bucket */
    int failed;           /* the first bucket that refused, -1 none (or an error) */
    bool error;           /* the table had no room: nothing was reserved */
    int64_t remaining[ST_MAX_BUCKETS]; /* after this reservation (ok) or now (refused), >= 0 */
    int64_t reset_ms[ST_MAX_BUCKETS];  /* until the bucket is full again */
    int64_t retry_ms;     /* refused: until the failed bucket could hold the amount (-1: never) */
};

/* The master: a segment for `slots` entries (rounded up to a multiple of
 * the stripe count).  Returns its descriptor (close-on-exec cleared by the
 * caller that passes it on), or -1. */
int st_segment_create(size_t slots);
/* Is fd a segment this binary can use (after a binary upgrade, the old
 * master's segment may have another layout)? */
bool st_segment_usable(int fd);
/* The serving process: map the master's segment (SHADE_STATE_FD), or a
 * private one when there is none or it is unusable (logged).  0, or -1. */
int st_attach(void);
/* true when the segment is the master's (shared across reloads). */
bool st_shared(void);
void st_detach(void);

/* Reserve amount[i] in every bucket b[0..n) — all or nothing.  A bucket
 * whose capacity is below its amount can never hold it: refused, with
 * retry_ms = -1. */
void st_reserve(const struct st_bucket *b, size_t n, const int64_t *amount, struct st_result *r);
/* The asynchronous form, for the worker loop (doc/state.md): a remote
 * backend (Redis, for several replicas) answers after a round trip.
 *   ST_DONE     *r is filled now (the local backend, always)
 *   ST_PENDING  cb(arg, r) runs later on loop, with r = &p->r, unless
 *               st_cancel(p) is called first (the client left): then a
 *               reservation that was made is given back whole
 * p is the caller's storage (a request's context): no allocation; b and
 * amount must stay valid until cb runs or st_cancel returns.  With
 * SHADE_STATE_DEFER_MS=N in the environment of the serving process, the
 * local backend answers every reservation N ms later this way, so the
 * pending path is exercised by the tests as a remote backend will use it. */
enum st_rc { ST_DONE, ST_PENDING };
struct st_pending {
    ev_timer timer;
    loop_t *loop;
    const struct st_bucket *b;
    const int64_t *amount;
    size_t n;
    void (*cb)(void *arg, const struct st_result *r);
    void *arg;
    struct st_result r;
    bool active;
};
enum st_rc st_reserve_on(loop_t *loop, const struct st_bucket *b, size_t n, const int64_t *amount, struct st_result *r,
                         struct st_pending *p, void (*cb)(void *arg, const struct st_result *r), void *arg);
void st_cancel(struct st_pending *p);

/* Settle what was reserved with what was used: the unused part goes back
 * (ST_REFILL, ST_WINDOW), an overage is consumed (the balance may go
 * below zero); ST_GAUGE buckets get their reservation back whole.  Buckets
 * of an earlier window or evicted since are left alone. */
void st_settle(const struct st_bucket *b, size_t n, const int64_t *reserved, const int64_t *used);
/* The balance of a bucket now, without changing it (refilled to now);
 * capacity when it has no entry. */
int64_t st_peek(const struct st_bucket *b);

/* A small record with an expiry, updated under its lock: fn gets its four
 * values (zero when new or expired, fresh = true) and returns the entry's
 * new lifetime in ms from now (0: drop it).  Returns false when the table
 * had no room (fn not called). */
bool st_update(const uint64_t id[2], int64_t (*fn)(int64_t v[4], bool fresh, int64_t now_ms, void *arg),
               void *arg);

/* Read a record's values without making it: false when there is none
 * (or it expired). */
bool st_get(const uint64_t id[2], int64_t v[4]);

/* A named region of the segment for a module's own shared structure (e.g.
 * the experiments' feedback map), the same memory in every serving process
 * and kept across reloads.  The process that makes it zeroes it and runs
 * init(p) (a process-shared mutex, say) before any other process can see
 * it.  The regions share ST_REGION_BYTES; NULL when there is no room or
 * the name was made with another size. */
#define ST_REGION_BYTES (4u << 20)
void *st_region(const char *name, size_t size, void (*init)(void *p));

/* A mutex for memory shared between processes (the stripes, a region's
 * own structure): process-shared and robust.  st_mutex_lock recovers one
 * whose holder died inside (the data it guards must stay usable then).
 * 0, or an error number. */
int st_mutex_init(pthread_mutex_t *m);
void st_mutex_lock(pthread_mutex_t *m);

/* Change counters every process sees at once (e.g. "the key table
 * changed"): read with st_gen, bumped with st_bump. */
uint64_t st_gen(unsigned i);
void st_bump(unsigned i);

/* The clock buckets run on (CLOCK_MONOTONIC ms: the same in every
 * process of the machine, immune to clock steps). */
int64_t st_now_ms(void);

struct st_stats {
    uint64_t slots, used, full_errors, recovered;
};
void st_stats(struct st_stats *s);

#endif
