/* keys_table.c — the virtual keys in a serving process (keys.h,
 * doc/keys.md): the table of live keys by digest, kept current by a
 * background thread that polls the store's key_meta.version; the spend
 * ledger, recorded in memory by the workers and written by the same thread;
 * each key's spend in its budget period; the per-key metrics.
 *
 * The workers never touch SQLite here.  keys_acquire takes a read lock and
 * a reference; keys_record_usage and keys_period_spend take a mutex for a
 * few hash probes.
 *
 * The table is immutable once published: a change (a reload after the
 * version moved, a key written by this process's admin API, a key that
 * expired) builds a new one and swaps it in.  A record moved to the new
 * table keeps the table's reference; one left out loses it, and is freed
 * once the last request holding it finishes (key_release).
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "bg.h"
#include "buf.h"
#include "config.h"
#include "keys.h"
#include "keys_store.h"
#include "log.h"
#include "rand.h"
#include "loop.h"
#include "metrics.h"

#define POLL_S 0.2          /* key_meta.version checked */
#define FLUSH_S 1.0         /* the ledger written */
#define SPEND_REFRESH_S 30  /* every key's period spend read again (other processes' spend) */
#define RING 40             /* days of spend kept per key: a month and more */
#define MET_MAX 1000        /* keys with their own metrics label */
#define NB 1024             /* hash buckets of the in-memory ledger, spend and metrics */

struct ktab {
    size_t cap, n;            /* cap a power of two, n <= cap / 2 */
    int64_t next_expiry;      /* the soonest expires_unix of a key in it, 0 = none */
    const struct key_rec *slot[];
};

/* ledger rows not written yet, by (key id, model, day) */
struct pend {
    struct pend *next;
    uint64_t h;
    char *id, *model;
    int64_t day, requests, tin, tout;
    double cost;
};

/* a key's spend by day: the ledger as last read (base), what this process
 * recorded since (local), and the part of local written since (flushed:
 * in the ledger now, so taken off local at the next read) */
struct kspend {
    struct kspend *next;
    uint64_t h;
    char *id;
    int64_t tag[RING];
    double base[RING], local[RING], flushed[RING];
};

struct kmet {
    struct kmet *next;
    uint64_t h;
    char *name;
    uint64_t requests, tin, tout;
    double usd;
};

static struct {
    /* the table */
    pthread_rwlock_t lock;
    struct ktab *tab;
    pthread_mutex_t wlock;    /* serialises building a new table */
    uint64_t gen;             /* bumped by keys_apply, under wlock */
    _Atomic bool on;
    bool virtual_keys;         /* auth.virtual_keys: else only the ledger runs */
    /* the thread and its store connection */
    struct bg t;
    bool poke;                /* under t.lock: look at the store now */
    sqlite3 *db;
    int64_t version;
    /* ledger, spend, metrics */
    pthread_mutex_t mu;
    struct pend *pend[NB];
    size_t npend;
    struct kspend *spend[NB];
    struct kmet *met[NB];
    size_t nmet;
    _Atomic uint64_t reloads, write_errors;
} T = {
    .lock = PTHREAD_RWLOCK_INITIALIZER,
    .wlock = PTHREAD_MUTEX_INITIALIZER,
    .t = BG_INIT,
    .mu = PTHREAD_MUTEX_INITIALIZER,
};

/* FNV-1a of a string, from h (rand.h's) */
static uint64_t hash_str(uint64_t h, const char *s)
{
    return rnd_fnv1a64(h, s, strlen(s));
}

static uint64_t digest_hash(const unsigned char d[32])
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return h;
}

static int64_t today(int64_t now) { return now / 86400; }

/* ---------------------------------------------------------------- records */

static struct key_rec *rec_of(struct ks_key *k)
{
    struct key_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    r->id = strdup(k->id);
    r->name = strdup(k->spec.name);
    r->prefix = strdup(k->prefix);
    if (!r->id || !r->name || !r->prefix) {
        key_release(r);
        return NULL;
    }
    memcpy(r->digest, k->digest, 32);
    /* the lists are taken from the spec */
    r->models = k->spec.models;
    r->nmodels = k->spec.nmodels;
    r->mlim = k->spec.mlim;
    r->nmlim = k->spec.nmlim;
    k->spec.models = NULL;
    k->spec.nmodels = 0;
    k->spec.mlim = NULL;
    k->spec.nmlim = 0;
    r->lim = k->spec.lim;
    r->budget = k->spec.budget;
    r->expires_unix = k->spec.expires_unix;
    r->priority = k->spec.priority;
    r->metrics = k->spec.metrics;
    return r;
}

/* ---------------------------------------------------------------- tables */

static struct ktab *tab_new(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n + 2)
        cap *= 2;
    struct ktab *t = calloc(1, sizeof *t + cap * sizeof t->slot[0]);
    if (t)
        t->cap = cap;
    return t;
}

/* Insert (the table takes the caller's reference). */
static void tab_put(struct ktab *t, const struct key_rec *r)
{
    size_t i = digest_hash(r->digest) & (t->cap - 1);
    while (t->slot[i])
        i = (i + 1) & (t->cap - 1);
    t->slot[i] = r;
    t->n++;
    if (r->expires_unix && (!t->next_expiry || r->expires_unix < t->next_expiry))
        t->next_expiry = r->expires_unix;
}

/* Publish t; the old table's references are dropped (a record that t keeps
 * too was held again for t by whoever put it there). */
static void tab_swap(struct ktab *t)
{
    pthread_rwlock_wrlock(&T.lock);
    struct ktab *old = T.tab;
    T.tab = t;
    pthread_rwlock_unlock(&T.lock);
    if (!old)
        return;
    for (size_t i = 0; i < old->cap; i++)
        if (old->slot[i])
            key_release(old->slot[i]);
    free(old);
}

const struct key_rec *keys_acquire(const unsigned char digest[32])
{
    if (!atomic_load_explicit(&T.on, memory_order_acquire))
        return NULL;
    const struct key_rec *found = NULL;
    pthread_rwlock_rdlock(&T.lock);
    const struct ktab *t = T.tab;
    for (size_t i = t ? digest_hash(digest) & (t->cap - 1) : 0; t && t->slot[i]; i = (i + 1) & (t->cap - 1))
        if (memcmp(t->slot[i]->digest, digest, 32) == 0) {
            found = t->slot[i];
            key_hold(found);
            break;
        }
    pthread_rwlock_unlock(&T.lock);
    return found;
}

bool keys_running(void)
{
    return atomic_load(&T.on);
}

void keys_apply(struct ks_key *k)
{
    if (!atomic_load(&T.on))
        return;
    int64_t now = (int64_t)time(NULL);
    bool live = !k->revoked_unix && !(k->spec.expires_unix && k->spec.expires_unix <= now);
    struct key_rec *nr = live ? rec_of(k) : NULL;
    pthread_mutex_lock(&T.wlock);
    pthread_rwlock_rdlock(&T.lock);
    const struct ktab *cur = T.tab;
    struct ktab *t = tab_new((cur ? cur->n : 0) + 1);
    for (size_t i = 0; t && cur && i < cur->cap; i++) {
        const struct key_rec *r = cur->slot[i];
        if (r && strcmp(r->id, k->id) != 0) {
            key_hold(r); /* t's reference; the old table's goes in tab_swap */
            tab_put(t, r);
        }
    }
    pthread_rwlock_unlock(&T.lock);
    if (t && nr)
        tab_put(t, nr);
    else if (nr)
        key_release(nr);
    if (t) {
        T.gen++;
        tab_swap(t);
    }
    pthread_mutex_unlock(&T.wlock);
    /* the thread reads the new version too (and the other processes do) */
    pthread_mutex_lock(&T.t.lock);
    T.poke = true;
    pthread_cond_signal(&T.t.cond);
    pthread_mutex_unlock(&T.t.lock);
}

/* ---------------------------------------------------------------- spend */

static struct kspend *spend_of(const char *id, bool make)
{
    uint64_t h = hash_str(0xcbf29ce484222325ull, id);
    struct kspend **b = &T.spend[h % NB];
    for (struct kspend *s = *b; s; s = s->next)
        if (s->h == h && strcmp(s->id, id) == 0)
            return s;
    if (!make)
        return NULL;
    struct kspend *s = calloc(1, sizeof *s);
    if (!s || !(s->id = strdup(id))) {
        free(s);
        return NULL;
    }
    for (int i = 0; i < RING; i++)
        s->tag[i] = -1;
    s->h = h;
    s->next = *b;
    *b = s;
    return s;
}

static size_t day_slot(struct kspend *s, int64_t day)
{
    size_t i = (size_t)(day % RING);
    if (s->tag[i] != day) {
        s->tag[i] = day;
        s->base[i] = s->local[i] = s->flushed[i] = 0;
    }
    return i;
}

/* The first day of the period containing day (UTC). */
double keys_period_spend(const struct key_rec *k, int64_t now_unix)
{
    if (!k || !k->id)
        return 0;
    int64_t d1 = today(now_unix), d0, next;
    key_period_days(k->budget.period, d1, &d0, &next);
    double sum = 0;
    pthread_mutex_lock(&T.mu);
    struct kspend *s = spend_of(k->id, false);
    for (int64_t d = d0; s && d <= d1; d++) {
        size_t i = (size_t)(d % RING);
        if (s->tag[i] == d)
            sum += s->base[i] + s->local[i];
    }
    pthread_mutex_unlock(&T.mu);
    return sum > 0 ? sum : 0;
}

struct spend_rows {
    struct { char *id; int64_t day; double usd; } *v;
    size_t n, cap;
};

static int spend_row(const struct ks_spend *r, void *arg)
{
    struct spend_rows *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        void *v = realloc(a->v, cap * sizeof *a->v);
        if (!v)
            return 1;
        a->v = v;
        a->cap = cap;
    }
    if (!(a->v[a->n].id = strdup(r->key_id)))
        return 1;
    a->v[a->n].day = r->day;
    a->v[a->n].usd = r->cost_usd;
    a->n++;
    return 0;
}

/* Every key's spend from the ledger again.  Called on the thread after its
 * own rows were written: what they held moves from local to base. */
static void spend_reload(int64_t now)
{
    struct spend_rows a = { 0 };
    if (ks_spend_each(T.db, NULL, today(now) - (RING - 2), spend_row, &a) < 0) {
        log_warn("keys: cannot read the spend ledger: %s", ks_errmsg(T.db));
        for (size_t i = 0; i < a.n; i++)
            free(a.v[i].id);
        free(a.v);
        return;
    }
    pthread_mutex_lock(&T.mu);
    for (size_t b = 0; b < NB; b++)
        for (struct kspend *s = T.spend[b]; s; s = s->next)
            for (int i = 0; i < RING; i++) {
                s->base[i] = 0;
                s->local[i] -= s->flushed[i];
                s->flushed[i] = 0;
            }
    for (size_t i = 0; i < a.n; i++) {
        struct kspend *s = spend_of(a.v[i].id, true);
        if (s)
            s->base[day_slot(s, a.v[i].day)] += a.v[i].usd;
        free(a.v[i].id);
    }
    pthread_mutex_unlock(&T.mu);
    free(a.v);
}

/* ---------------------------------------------------------------- usage */

static struct kmet *met_of(const char *name)
{
    uint64_t h = hash_str(0x84222325cbf29ce4ull, name);
    struct kmet **b = &T.met[h % NB];
    for (struct kmet *m = *b; m; m = m->next)
        if (m->h == h && strcmp(m->name, name) == 0)
            return m;
    if (T.nmet >= MET_MAX)
        return NULL;
    struct kmet *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name))) {
        free(m);
        return NULL;
    }
    m->h = h;
    m->next = *b;
    *b = m;
    T.nmet++;
    return m;
}

void keys_record_usage(const struct key_rec *k, const char *model, int64_t tokens_in, int64_t tokens_out,
                       double cost_usd)
{
    if (!k || !k->id || !model)
        return;
    if (tokens_in < 0)
        tokens_in = 0;
    if (tokens_out < 0)
        tokens_out = 0;
    if (!(cost_usd > 0) || cost_usd > 1e12)
        cost_usd = 0;
    int64_t day = today((int64_t)time(NULL));
    pthread_mutex_lock(&T.mu);
    if (k->metrics) {
        struct kmet *m = met_of(k->name);
        if (m) {
            m->requests++;
            m->tin += (uint64_t)tokens_in;
            m->tout += (uint64_t)tokens_out;
            m->usd += cost_usd;
        }
    }
    if (atomic_load(&T.on)) {
        uint64_t h = hash_str(hash_str(0xcbf29ce484222325ull ^ (uint64_t)day, k->id), model);
        struct pend **b = &T.pend[h % NB], *p = *b;
        while (p && !(p->h == h && p->day == day && strcmp(p->id, k->id) == 0 && strcmp(p->model, model) == 0))
            p = p->next;
        if (!p && (p = calloc(1, sizeof *p))) {
            p->id = strdup(k->id);
            p->model = strndup(model, 256);
            if (!p->id || !p->model) {
                free(p->id);
                free(p->model);
                free(p);
                p = NULL;
            } else {
                p->h = h;
                p->day = day;
                p->next = *b;
                *b = p;
                T.npend++;
            }
        }
        if (p) {
            p->requests++;
            p->tin += tokens_in;
            p->tout += tokens_out;
            p->cost += cost_usd;
        }
        struct kspend *s = spend_of(k->id, true);
        if (s)
            s->local[day_slot(s, day)] += cost_usd;
    }
    pthread_mutex_unlock(&T.mu);
}

static void pend_free(struct pend *p)
{
    while (p) {
        struct pend *n = p->next;
        free(p->id);
        free(p->model);
        free(p);
        p = n;
    }
}

/* Write the rows recorded so far; on failure they go back, to be tried at
 * the next flush.  true when something was written. */
static bool flush(void)
{
    struct pend *all = NULL;
    size_t n = 0;
    pthread_mutex_lock(&T.mu);
    for (size_t b = 0; b < NB; b++) {
        struct pend *p = T.pend[b];
        while (p) {
            struct pend *next = p->next;
            p->next = all;
            all = p;
            p = next;
        }
        T.pend[b] = NULL;
    }
    n = T.npend;
    T.npend = 0;
    pthread_mutex_unlock(&T.mu);
    if (!n)
        return false;
    struct ks_spend *rows = calloc(n, sizeof *rows);
    size_t k = 0;
    for (struct pend *p = all; rows && p && k < n; p = p->next)
        rows[k++] = (struct ks_spend){ p->id, p->model, p->day, p->requests, p->tin, p->tout, p->cost };
    bool ok = rows && ks_spend_add(T.db, rows, k) == 0;
    free(rows);
    pthread_mutex_lock(&T.mu);
    if (ok) {
        for (struct pend *p = all; p; p = p->next) {
            struct kspend *s = spend_of(p->id, false);
            if (s && s->tag[p->day % RING] == p->day)
                s->flushed[p->day % RING] += p->cost;
        }
    } else { /* back into the map, merged with what came meanwhile */
        while (all) {
            struct pend *p = all;
            all = p->next;
            struct pend **b = &T.pend[p->h % NB], *q = *b;
            while (q && !(q->h == p->h && q->day == p->day && strcmp(q->id, p->id) == 0 &&
                          strcmp(q->model, p->model) == 0))
                q = q->next;
            if (q) {
                q->requests += p->requests;
                q->tin += p->tin;
                q->tout += p->tout;
                q->cost += p->cost;
                p->next = NULL;
                pend_free(p);
            } else {
                p->next = *b;
                *b = p;
                T.npend++;
            }
        }
    }
    pthread_mutex_unlock(&T.mu);
    if (ok) {
        pend_free(all);
    } else {
        atomic_fetch_add(&T.write_errors, 1);
        log_warn("keys: cannot write the spend ledger (kept for the next try): %s", ks_errmsg(T.db));
    }
    return ok;
}

/* ---------------------------------------------------------------- reload */

struct load {
    struct key_rec **v;
    size_t n, cap;
};

static int load_key(struct ks_key *k, void *arg)
{
    struct load *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *v = realloc(l->v, cap * sizeof *l->v);
        if (!v)
            return 1;
        l->v = v;
        l->cap = cap;
    }
    struct key_rec *r = rec_of(k);
    if (r)
        l->v[l->n++] = r;
    return 0;
}

/* Read the live keys and publish them as the table, unless this process
 * applied a key meanwhile (then the caller tries again).  0, 1: try again,
 * -1: the store could not be read. */
static int reload(int64_t now)
{
    pthread_mutex_lock(&T.wlock);
    uint64_t gen = T.gen;
    pthread_mutex_unlock(&T.wlock);
    struct load l = { 0 };
    int64_t v = 0;
    /* the version and the rows from one snapshot */
    bool ok = sqlite3_exec(T.db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK && ks_version(T.db, &v) == 0 &&
              ks_each(T.db, now, load_key, &l) == 0;
    sqlite3_exec(T.db, "COMMIT", NULL, NULL, NULL);
    struct ktab *t = ok ? tab_new(l.n) : NULL;
    int rc = t ? 0 : -1;
    pthread_mutex_lock(&T.wlock);
    if (t && T.gen != gen)
        rc = 1;
    if (rc == 0) {
        for (size_t i = 0; i < l.n; i++)
            tab_put(t, l.v[i]);
        tab_swap(t);
        T.version = v;
        atomic_fetch_add(&T.reloads, 1);
    }
    pthread_mutex_unlock(&T.wlock);
    if (rc != 0) {
        for (size_t i = 0; i < l.n; i++)
            key_release(l.v[i]);
        free(t);
    }
    free(l.v);
    if (rc < 0)
        log_warn("keys: cannot read the keys from the store: %s", ks_errmsg(T.db));
    return rc;
}

static void *keys_main(void *arg)
{
    (void)arg;
    double last_flush = 0, last_spend = unix_now();
    pthread_mutex_lock(&T.t.lock);
    for (;;) {
        if (!T.t.stop && !T.poke)
            bg_wait(&T.t, POLL_S);
        bool stop = T.t.stop;
        T.poke = false;
        pthread_mutex_unlock(&T.t.lock);
        double now = unix_now();
        int64_t v = 0;
        bool wrote = false;
        if (stop || now - last_flush >= FLUSH_S) {
            wrote = flush();
            last_flush = now;
        }
        if (stop)
            break;
        pthread_rwlock_rdlock(&T.lock);
        int64_t exp = T.tab ? T.tab->next_expiry : 0;
        pthread_rwlock_unlock(&T.lock);
        bool changed = ks_version(T.db, &v) == 0 && v != T.version;
        if (changed || (exp && exp <= (int64_t)now)) {
            if (reload((int64_t)now) > 0) { /* applied meanwhile: again at once */
                pthread_mutex_lock(&T.t.lock);
                T.poke = true;
                continue;
            }
            if (!wrote)
                flush();
            spend_reload((int64_t)now);
            last_spend = now;
        } else if (now - last_spend >= SPEND_REFRESH_S) {
            spend_reload((int64_t)now);
            last_spend = now;
        }
        pthread_mutex_lock(&T.t.lock);
    }
    return NULL;
}

/* ---------------------------------------------------------------- start, stop */

int keys_start(const struct config *cfg, char *err, size_t errlen)
{
    const struct config_auth *a = auth_config(cfg);
    /* the store holds the virtual keys and every key's spend (the ledger
     * a budget starts from after a restart of the master) */
    if (!auth_on(a))
        return 0;
    if (ks_open(cfg->store.path, 5000, true, &T.db, err, errlen) < 0) {
        if (a->virtual_keys)
            return -1;
        log_warn("keys: no spend ledger (%s): budgets restart with the master, /admin/keys/ID/usage is empty", err);
        T.db = NULL;
        return 0;
    }
    T.virtual_keys = a->virtual_keys;
    atomic_store(&T.on, true);
    int64_t now = (int64_t)time(NULL);
    if (reload(now) != 0) {
        snprintf(err, errlen, "keys: cannot read the keys from the store %s: %s", cfg->store.path,
                 ks_errmsg(T.db));
        keys_stop();
        return -1;
    }
    spend_reload(now);
    T.poke = false;
    if (bg_start(&T.t, keys_main, NULL) < 0) {
        snprintf(err, errlen, "keys: cannot start the keys thread");
        keys_stop();
        return -1;
    }
    pthread_rwlock_rdlock(&T.lock);
    size_t n = T.tab ? T.tab->n : 0;
    pthread_rwlock_unlock(&T.lock);
    log_info("keys: %zu virtual key%s from %s", n, n == 1 ? "" : "s", cfg->store.path);
    return 0;
}

void keys_stop(void)
{
    bg_stop(&T.t); /* its last flush */
    if (T.db)
        flush();
    atomic_store(&T.on, false);
    pthread_mutex_lock(&T.wlock);
    tab_swap(NULL);
    pthread_mutex_unlock(&T.wlock);
    ks_close(T.db);
    T.db = NULL;
    T.version = 0;
    pthread_mutex_lock(&T.mu);
    for (size_t b = 0; b < NB; b++) {
        pend_free(T.pend[b]);
        T.pend[b] = NULL;
        for (struct kspend *s = T.spend[b], *n; s; s = n) {
            n = s->next;
            free(s->id);
            free(s);
        }
        T.spend[b] = NULL;
    }
    T.npend = 0;
    pthread_mutex_unlock(&T.mu);
}

/* ---------------------------------------------------------------- metrics */

void keys_render_metrics(struct buf *o)
{
    if (atomic_load(&T.on) && T.virtual_keys) {
        pthread_rwlock_rdlock(&T.lock);
        size_t n = T.tab ? T.tab->n : 0;
        pthread_rwlock_unlock(&T.lock);
        buf_printf(o,
                   "# HELP shade_keys_live Virtual keys this process accepts (neither revoked nor expired).\n"
                   "# TYPE shade_keys_live gauge\nshade_keys_live %zu\n"
                   "# HELP shade_keys_reloads_total Times the virtual keys were read again from the store.\n"
                   "# TYPE shade_keys_reloads_total counter\nshade_keys_reloads_total %llu\n",
                   n, (unsigned long long)atomic_load(&T.reloads));
    }
    if (atomic_load(&T.on))
        buf_printf(o,
                   "# HELP shade_keys_ledger_errors_total Failed writes of the spend ledger (retried).\n"
                   "# TYPE shade_keys_ledger_errors_total counter\nshade_keys_ledger_errors_total %llu\n",
                   (unsigned long long)atomic_load(&T.write_errors));
    pthread_mutex_lock(&T.mu);
    if (T.nmet) {
        static const char *const fam[3][3] = {
            { "shade_key_requests_total", "counter", "Requests with usage of each key with metrics: true." },
            { "shade_key_tokens_total", "counter", "Tokens of each key with metrics: true, by kind (in, out)." },
            { "shade_key_spend_usd_total", "counter", "Spend in USD of each key with metrics: true." },
        };
        for (int f = 0; f < 3; f++) {
            buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", fam[f][0], fam[f][2], fam[f][0], fam[f][1]);
            for (size_t b = 0; b < NB; b++)
                for (struct kmet *m = T.met[b]; m; m = m->next) {
                    for (int kind = 0; kind < (f == 1 ? 2 : 1); kind++) {
                        buf_printf(o, "%s{key=\"", fam[f][0]);
                        metrics_put_label(o, m->name);
                        if (f == 0)
                            buf_printf(o, "\"} %llu\n", (unsigned long long)m->requests);
                        else if (f == 1)
                            buf_printf(o, "\",kind=\"%s\"} %llu\n", kind ? "out" : "in",
                                       (unsigned long long)(kind ? m->tout : m->tin));
                        else
                            buf_printf(o, "\"} %.9g\n", m->usd);
                    }
                }
        }
    }
    pthread_mutex_unlock(&T.mu);
}
