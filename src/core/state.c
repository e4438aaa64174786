/* state.c — the local backend of the shared state (state.h, doc/state.md).
 *
 * The segment:
 *
 *   header   magic, layout version, sizes, change generations, counters
 *   stripes  256 × { robust process-shared mutex, entries in use }
 *   slots    nslots × 64 bytes: { id[2], expires, v[4] }
 *
 * An id belongs to one stripe (its low byte) and is found by linear probing
 * inside that stripe's run of slots, from a start its other half picks.
 * Entries are never removed, only left to expire: a probe goes on past
 * expired entries (their id may still be asked for) and stops at a slot
 * never used.  A new id takes the first expired or never-used slot of its
 * probe, once the whole probe has shown the id is not there.
 *
 * Times are CLOCK_MONOTONIC milliseconds: the same clock in every process
 * of the machine, so the balance a reload inherits is refilled correctly.
 */
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rand.h"

#define ST_MAGIC 0x5348414445535431ull /* "SHADEST1" */
#define ST_VERSION 2u /* 2: named regions */
#define NSTRIPES 256u
#define MILLI 1000 /* ST_REFILL balances are kept in thousandths, so refill is smooth */

#define NREGIONS 8
struct header {
    uint64_t magic;
    uint32_t version, nstripes;
    uint64_t nslots, size;
    _Atomic uint64_t gen[ST_GENERATIONS];
    _Atomic uint64_t full_errors, recovered;
    pthread_mutex_t region_lock;       /* process-shared, robust: the table below */
    struct { char name[24]; uint64_t off, size; } region[NREGIONS];
    uint64_t region_used;              /* bytes of the region area given out */
};

struct stripe {
    pthread_mutex_t m;
    uint32_t used;
} __attribute__((aligned(64)));

struct slot {
    uint64_t id[2];   /* {0,0}: never used */
    int64_t expires;  /* monotonic ms; the entry is free from then on */
    int64_t v[4];
    int64_t pad;
};
_Static_assert(sizeof(struct slot) == 64, "a slot is one cache line");

static struct {
    void *base;
    size_t size;
    bool shared;
    int64_t defer_ms;     /* SHADE_STATE_DEFER_MS: answer reservations later (tests) */
    struct header *h;
    struct stripe *stripes;
    struct slot *slots;
    size_t per_stripe;
} S;

int64_t st_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void st_id(uint64_t id[2], const char *rule, const void *scope, size_t scope_len)
{
    uint64_t a = rnd_fnv1a64(RND_FNV1A64_INIT, rule, strlen(rule));
    a = rnd_fnv1a64(a ^ 0xff, scope, scope_len);
    id[0] = rnd_mix64(a);
    id[1] = rnd_mix64(a ^ 0x9e3779b97f4a7c15ull) | 1; /* never {0,0} */
}

/* ---------------------------------------------------------------- the segment */

static size_t layout(size_t slots, size_t *per_stripe)
{
    size_t ps = (slots + NSTRIPES - 1) / NSTRIPES;
    if (ps < 8)
        ps = 8;
    *per_stripe = ps;
    return sizeof(struct header) + 64 /* alignment */ + NSTRIPES * sizeof(struct stripe) +
           NSTRIPES * ps * sizeof(struct slot) + ST_REGION_BYTES;
}

static void bind_layout(void *base, size_t per_stripe)
{
    S.base = base;
    S.h = base;
    uintptr_t p = ((uintptr_t)base + sizeof(struct header) + 63) & ~(uintptr_t)63;
    S.stripes = (struct stripe *)p;
    S.slots = (struct slot *)(S.stripes + NSTRIPES);
    S.per_stripe = per_stripe;
}

int st_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t at;
    int rc = pthread_mutexattr_init(&at);
    if (rc)
        return rc;
    rc = pthread_mutexattr_setpshared(&at, PTHREAD_PROCESS_SHARED);
    rc = rc ? rc : pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
    rc = rc ? rc : pthread_mutex_init(m, &at);
    pthread_mutexattr_destroy(&at);
    return rc;
}

void st_mutex_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) == EOWNERDEAD) { /* a process died holding it: the data is whole int64s, go on */
        pthread_mutex_consistent(m);
        if (S.h)
            atomic_fetch_add(&S.h->recovered, 1);
    }
}

static int init_segment(void *base, size_t size, size_t per_stripe)
{
    memset(base, 0, size);
    bind_layout(base, per_stripe);
    int rc = 0;
    for (size_t i = 0; !rc && i < NSTRIPES; i++)
        rc = st_mutex_init(&S.stripes[i].m);
    rc = rc ? rc : st_mutex_init(&S.h->region_lock);
    if (rc)
        return -1;
    S.h->nstripes = NSTRIPES;
    S.h->nslots = NSTRIPES * per_stripe;
    S.h->size = size;
    S.h->version = ST_VERSION;
    atomic_thread_fence(memory_order_release);
    S.h->magic = ST_MAGIC;
    return 0;
}

int st_segment_create(size_t slots)
{
    size_t ps, size = layout(slots ? slots : ST_SLOTS_DEFAULT, &ps);
    int fd = memfd_create("shade-state", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    void *m = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0)
        m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED || init_segment(m, size, ps) < 0) {
        if (m != MAP_FAILED)
            munmap(m, size);
        close(fd);
        memset(&S, 0, sizeof S);
        return -1;
    }
    munmap(m, size);
    memset(&S, 0, sizeof S); /* the master does not use it */
    return fd;
}

/* Read fd's header into *h: true when it is a segment of this layout. */
static bool read_header(int fd, struct header *h)
{
    size_t ps;
    return pread(fd, h, sizeof *h, 0) == (ssize_t)sizeof *h && h->magic == ST_MAGIC && h->version == ST_VERSION &&
           h->nstripes == NSTRIPES && h->nslots % NSTRIPES == 0 && layout(h->nslots, &ps) == h->size;
}

bool st_segment_usable(int fd)
{
    struct header h;
    return read_header(fd, &h);
}

/* Map a segment the master made; false when it is not one of ours. */
static bool map_fd(int fd)
{
    struct header h;
    if (!read_header(fd, &h))
        return false;
    void *m = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return false;
    bind_layout(m, h.nslots / NSTRIPES);
    S.size = h.size;
    S.shared = true;
    return true;
}

int st_attach(void)
{
    if (S.base)
        return 0;
    const char *d = getenv("SHADE_STATE_DEFER_MS");
    int64_t defer = d ? atoll(d) : 0;
    const char *e = getenv("SHADE_STATE_FD");
    if (e) {
        int fd = atoi(e);
        bool ok = fd > 2 && map_fd(fd);
        if (fd > 2)
            close(fd);
        unsetenv("SHADE_STATE_FD");
        if (ok) {
            S.defer_ms = defer > 0 ? defer : 0;
            return 0;
        }
        log_warn("state: the master's segment is unusable; limits and lockouts restart with this process");
    }
    size_t ps, size = layout(ST_SLOTS_DEFAULT, &ps);
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    if (init_segment(m, size, ps) < 0) {
        munmap(m, size);
        memset(&S, 0, sizeof S);
        return -1;
    }
    S.size = size;
    S.shared = false;
    S.defer_ms = defer > 0 ? defer : 0;
    return 0;
}

bool st_shared(void)
{
    return S.shared;
}

void st_detach(void)
{
    if (S.base)
        munmap(S.base, S.size);
    memset(&S, 0, sizeof S);
}

/* ---------------------------------------------------------------- locking and look-up */

static void lock(unsigned s)
{
    st_mutex_lock(&S.stripes[s].m);
}

static void unlock(unsigned s)
{
    pthread_mutex_unlock(&S.stripes[s].m);
}

static unsigned stripe_of(const uint64_t id[2])
{
    return (unsigned)(id[0] & (NSTRIPES - 1));
}

/* The id's entry (*fresh = false), or a free slot now claimed for it
 * (*fresh = true, values zero), or NULL when its stripe is full.  Its
 * stripe is locked. */
static struct slot *find(const uint64_t id[2], int64_t now, bool create, bool *fresh)
{
    unsigned s = stripe_of(id);
    struct slot *run = S.slots + (size_t)s * S.per_stripe;
    size_t start = (size_t)(id[1] % S.per_stripe), freeslot = SIZE_MAX;
    for (size_t k = 0; k < S.per_stripe; k++) {
        struct slot *e = &run[(start + k) % S.per_stripe];
        if (e->id[0] == id[0] && e->id[1] == id[1]) {
            if (e->expires && e->expires <= now) { /* expired: as good as new */
                if (!create)
                    return NULL;
                memset(e->v, 0, sizeof e->v);
                e->expires = 0;
                *fresh = true;
            } else {
                *fresh = false;
            }
            return e;
        }
        bool never = !e->id[0] && !e->id[1];
        if (freeslot == SIZE_MAX && (never || (e->expires && e->expires <= now)))
            freeslot = (start + k) % S.per_stripe;
        if (never)
            break;
    }
    if (!create)
        return NULL;
    if (freeslot == SIZE_MAX) {
        atomic_fetch_add(&S.h->full_errors, 1);
        return NULL;
    }
    struct slot *e = &run[freeslot];
    if (!e->id[0] && !e->id[1])
        S.stripes[s].used++;
    *e = (struct slot){ .id = { id[0], id[1] } };
    *fresh = true;
    return e;
}

/* ---------------------------------------------------------------- buckets
 *
 * v[0] balance (ST_REFILL: in thousandths), v[1] last refill (monotonic ms)
 * or the window, v[2] the capacity it was last seen with. */

static int64_t mul_div(int64_t a, int64_t b, int64_t c)
{
    return c ? (int64_t)((__int128)a * b / c) : 0;
}

static int64_t units(const struct st_bucket *b, int64_t v)
{
    if (b->kind != ST_REFILL)
        return v;
    return v >= 0 ? v / MILLI : -((-v + MILLI - 1) / MILLI); /* a debt is whole units: floor */
}

static int64_t scale(const struct st_bucket *b, int64_t v)
{
    return b->kind == ST_REFILL ? v * MILLI : v;
}

/* Bring e up to now: refilled, a new window, a changed capacity clamped. */
static void bucket_now(struct slot *e, bool fresh, const struct st_bucket *b, int64_t now)
{
    int64_t cap = b->kind == ST_REFILL ? b->capacity * MILLI : b->capacity;
    if (fresh) {
        e->v[0] = cap - scale(b, b->fresh_used > 0 ? b->fresh_used : 0);
        e->v[1] = b->kind == ST_WINDOW ? b->window : now;
        e->v[2] = b->capacity;
        return;
    }
    if (e->v[2] != b->capacity) { /* the rule changed: keep what was used, within the new capacity */
        int64_t old = b->kind == ST_REFILL ? e->v[2] * MILLI : e->v[2];
        e->v[0] += cap - old;
        e->v[2] = b->capacity;
    }
    switch (b->kind) {
    case ST_REFILL: {
        int64_t dt = now - e->v[1];
        if (dt < 0)
            dt = 0;
        if (dt > 4 * b->period_ms) /* enough to pay back any overage a settle left */
            dt = 4 * b->period_ms;
        e->v[0] += mul_div(dt, cap, b->period_ms);
        e->v[1] = now;
        break;
    }
    case ST_WINDOW:
        if (e->v[1] != b->window) {
            e->v[0] = cap - (b->fresh_used > 0 ? b->fresh_used : 0);
            e->v[1] = b->window;
        }
        break;
    case ST_GAUGE:
        break;
    }
    if (e->v[0] > cap)
        e->v[0] = cap;
}

/* When the entry may be forgotten: when it would be full again anyway. */
static void bucket_expiry(struct slot *e, const struct st_bucket *b, int64_t now)
{
    int64_t cap = scale(b, b->capacity);
    switch (b->kind) {
    case ST_REFILL:
        e->expires = now + (e->v[0] >= cap ? 0 : mul_div(cap - e->v[0], b->period_ms, cap)) + 1000;
        break;
    case ST_WINDOW:
        e->expires = now + (b->window_left_ms > 0 ? b->window_left_ms : 0) + 1000;
        break;
    case ST_GAUGE: /* in use: kept an hour past its last change (a process that died holding it) */
        e->expires = now + (e->v[0] >= cap ? 1000 : 3600 * 1000);
        break;
    }
}

static int64_t reset_ms(const struct slot *e, const struct st_bucket *b)
{
    int64_t cap = scale(b, b->capacity);
    switch (b->kind) {
    case ST_REFILL:
        return e->v[0] >= cap ? 0 : mul_div(cap - e->v[0], b->period_ms, cap);
    case ST_WINDOW:
        return b->window_left_ms > 0 ? b->window_left_ms : 0;
    case ST_GAUGE:
        return 0;
    }
    return 0;
}

static int64_t retry_ms(const struct slot *e, const struct st_bucket *b, int64_t amount)
{
    if (amount > b->capacity)
        return -1;
    int64_t need = scale(b, amount) - e->v[0];
    switch (b->kind) {
    case ST_REFILL:
        return need <= 0 ? 0 : mul_div(need, b->period_ms, scale(b, b->capacity)) + 1;
    case ST_WINDOW:
        return b->window_left_ms > 0 ? b->window_left_ms : 0;
    case ST_GAUGE:
        return 1000; /* when one finishes: not known */
    }
    return -1;
}

/* Lock the distinct stripes of b[0..n), in index order (no deadlock). */
static size_t lock_all(const struct st_bucket *b, size_t n, unsigned *held)
{
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned s = stripe_of(b[i].id), k = (unsigned)nh;
        bool dup = false;
        for (size_t j = 0; j < nh; j++)
            dup |= held[j] == s;
        if (dup)
            continue;
        while (k > 0 && held[k - 1] > s) {
            held[k] = held[k - 1];
            k--;
        }
        held[k] = s;
        nh++;
    }
    for (size_t i = 0; i < nh; i++)
        lock(held[i]);
    return nh;
}

static void unlock_all(const unsigned *held, size_t nh)
{
    for (size_t i = nh; i-- > 0;)
        unlock(held[i]);
}

void st_reserve(const struct st_bucket *b, size_t n, const int64_t *amount, struct st_result *r)
{
    memset(r, 0, sizeof *r);
    r->failed = -1;
    if (n > ST_MAX_BUCKETS)
        n = ST_MAX_BUCKETS;
    if (!S.base || !n) {
        r->ok = n == 0;
        r->error = n != 0;
        return;
    }
    int64_t now = st_now_ms();
    unsigned held[ST_MAX_BUCKETS];
    size_t nh = lock_all(b, n, held);
    struct slot *e[ST_MAX_BUCKETS];
    for (size_t i = 0; i < n; i++) {
        bool fresh;
        e[i] = find(b[i].id, now, true, &fresh);
        if (!e[i]) {
            r->error = true;
            for (size_t j = 0; j < i; j++) /* entries just made stay valid: full buckets */
                bucket_expiry(e[j], &b[j], now);
            unlock_all(held, nh);
            return;
        }
        bucket_now(e[i], fresh, &b[i], now);
    }
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++)
        if (amount[i] > b[i].capacity || e[i]->v[0] < scale(&b[i], amount[i])) {
            ok = false;
            r->failed = (int)i;
            r->retry_ms = retry_ms(e[i], &b[i], amount[i]);
        }
    for (size_t i = 0; i < n; i++) {
        if (ok)
            e[i]->v[0] -= scale(&b[i], amount[i]);
        int64_t u = units(&b[i], e[i]->v[0]);
        r->remaining[i] = u > 0 ? u : 0;
        r->reset_ms[i] = reset_ms(e[i], &b[i]);
        bucket_expiry(e[i], &b[i], now);
    }
    r->ok = ok;
    unlock_all(held, nh);
}

static void pending_fire(loop_t *l, ev_timer *t)
{
    (void)l;
    struct st_pending *p = t->data;
    p->active = false;
    p->cb(p->arg, &p->r);
}

enum st_rc st_reserve_on(loop_t *loop, const struct st_bucket *b, size_t n, const int64_t *amount, struct st_result *r,
                         struct st_pending *p, void (*cb)(void *arg, const struct st_result *r), void *arg)
{
    if (!S.defer_ms || !loop) {
        st_reserve(b, n, amount, r);
        return ST_DONE;
    }
    /* as a remote backend: the reservation is made there at once, its
     * answer arrives a round trip later */
    *p = (struct st_pending){ .loop = loop, .b = b, .amount = amount, .n = n, .cb = cb, .arg = arg, .active = true };
    st_reserve(b, n, amount, &p->r);
    ev_timer_init(&p->timer, pending_fire, p);
    ev_timer_start(loop, &p->timer, (uint64_t)S.defer_ms);
    return ST_PENDING;
}

void st_cancel(struct st_pending *p)
{
    if (!p->active)
        return;
    p->active = false;
    ev_timer_stop(p->loop, &p->timer);
    if (p->r.ok) { /* made, never to be used: all of it back (the request counted for nothing) */
        int64_t zero[ST_MAX_BUCKETS] = { 0 };
        int64_t back[ST_MAX_BUCKETS];
        for (size_t i = 0; i < p->n && i < ST_MAX_BUCKETS; i++)
            back[i] = p->amount[i];
        st_settle(p->b, p->n, back, zero);
    }
}

void st_settle(const struct st_bucket *b, size_t n, const int64_t *reserved, const int64_t *used)
{
    if (!S.base)
        return;
    if (n > ST_MAX_BUCKETS)
        n = ST_MAX_BUCKETS;
    int64_t now = st_now_ms();
    unsigned held[ST_MAX_BUCKETS];
    size_t nh = lock_all(b, n, held);
    for (size_t i = 0; i < n; i++) {
        bool fresh;
        struct slot *e = find(b[i].id, now, false, &fresh);
        if (!e || fresh) /* forgotten since: it is full, nothing to give back */
            continue;
        if (b[i].kind == ST_WINDOW && e->v[1] != b[i].window) /* reserved in an earlier window */
            continue;
        bucket_now(e, false, &b[i], now);
        int64_t back = b[i].kind == ST_GAUGE ? reserved[i] : reserved[i] - used[i];
        e->v[0] += scale(&b[i], back);
        int64_t cap = scale(&b[i], b[i].capacity);
        if (e->v[0] > cap)
            e->v[0] = cap;
        bucket_expiry(e, &b[i], now);
    }
    unlock_all(held, nh);
}

int64_t st_peek(const struct st_bucket *b)
{
    if (!S.base)
        return b->capacity;
    int64_t now = st_now_ms();
    unsigned s = stripe_of(b->id);
    lock(s);
    bool fresh;
    struct slot *e = find(b->id, now, false, &fresh);
    int64_t v = b->capacity;
    if (e && !fresh) {
        struct slot tmp = *e;
        bucket_now(&tmp, false, b, now);
        v = units(b, tmp.v[0]);
    }
    unlock(s);
    return v;
}

/* ---------------------------------------------------------------- records, generations */

bool st_update(const uint64_t id[2], int64_t (*fn)(int64_t v[4], bool fresh, int64_t now_ms, void *arg), void *arg)
{
    if (!S.base)
        return false;
    int64_t now = st_now_ms();
    unsigned s = stripe_of(id);
    lock(s);
    bool fresh;
    struct slot *e = find(id, now, true, &fresh);
    if (e) {
        int64_t life = fn(e->v, fresh, now, arg);
        e->expires = now + (life > 0 ? life : 0);
        if (life <= 0)
            e->expires = now; /* free from now */
    }
    unlock(s);
    return e != NULL;
}

bool st_get(const uint64_t id[2], int64_t v[4])
{
    if (!S.base)
        return false;
    int64_t now = st_now_ms();
    unsigned s = stripe_of(id);
    lock(s);
    bool fresh = false;
    struct slot *e = find(id, now, false, &fresh);
    bool found = e && !fresh;
    if (found)
        memcpy(v, e->v, sizeof e->v);
    unlock(s);
    return found;
}

void *st_region(const char *name, size_t size, void (*init)(void *p))
{
    if (!S.base || strlen(name) >= sizeof S.h->region[0].name)
        return NULL;
    size = (size + 63) & ~(size_t)63;
    char *area = (char *)(S.slots + (size_t)NSTRIPES * S.per_stripe);
    void *out = NULL;
    st_mutex_lock(&S.h->region_lock);
    for (int i = 0; i < NREGIONS; i++) {
        if (S.h->region[i].name[0] && strcmp(S.h->region[i].name, name) == 0) {
            out = S.h->region[i].size == size ? area + S.h->region[i].off : NULL;
            goto done;
        }
    }
    for (int i = 0; i < NREGIONS; i++) {
        if (S.h->region[i].name[0])
            continue;
        if (S.h->region_used + size > ST_REGION_BYTES)
            break;
        strcpy(S.h->region[i].name, name);
        S.h->region[i].off = S.h->region_used;
        S.h->region[i].size = size;
        S.h->region_used += size;
        out = area + S.h->region[i].off;
        memset(out, 0, size);
        if (init)
            init(out);
        break;
    }
done:
    pthread_mutex_unlock(&S.h->region_lock);
    return out;
}

uint64_t st_gen(unsigned i)
{
    return S.base && i < ST_GENERATIONS ? atomic_load_explicit(&S.h->gen[i], memory_order_acquire) : 0;
}

void st_bump(unsigned i)
{
    if (S.base && i < ST_GENERATIONS)
        atomic_fetch_add_explicit(&S.h->gen[i], 1, memory_order_acq_rel);
}

void st_stats(struct st_stats *s)
{
    memset(s, 0, sizeof *s);
    if (!S.base)
        return;
    s->slots = S.h->nslots;
    for (unsigned i = 0; i < NSTRIPES; i++)
        s->used += __atomic_load_n(&S.stripes[i].used, __ATOMIC_RELAXED);
    s->full_errors = atomic_load(&S.h->full_errors);
    s->recovered = atomic_load(&S.h->recovered);
}
