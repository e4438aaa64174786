/* experiment.c — A/B experiments (experiment.h): the routing module, the
 * feedback endpoint, the store writer, the admin API, the metrics and
 * `shade experiment report`. */
#include "experiment.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "abtest.h"
#include "bg.h"
#include "buf.h"
#include "canary.h"
#include "gateway.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "module.h"
#include "rand.h"
#include "redact.h"
#include "state.h"
#include "rollout.h"
#include "router.h"
#include "sample.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define INC(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)

/* the judge's outcomes on an arm's pairs (experiment_judgements.outcome,
 * judge.c): the arm's answer wins or loses when both orders agree */
enum { EJ_LOSS, EJ_WIN, EJ_TIE, EJ_INCONSISTENT, EJ_ERROR, EJ__N };
static const char *const ej_names[EJ__N] = { "loss", "win", "tie", "inconsistent", "error" };
/* the judge samples: what became of them (sample.h's SS_ counters) */
static const char *const es_names[SS__N] = { "sampled", "paired", "dropped_cap", "dropped_control_failed",
                                             "dropped_arm_failed", "dropped_queue_full" };

#define FB_CAP (1u << 16)  /* request ids remembered for feedback, all experiments */
#define FB_PROBE 16        /* slots looked at per id: the oldest of them is overwritten */

struct exp_arm {
    const struct config_experiment_arm *cfg;
    const struct model_rt *m;
    uint32_t hi;                   /* buckets [previous arm's hi, hi) are this arm's */
    _Atomic uint64_t cnt[AB_COUNTERS]; /* since the experiment began (the stored counts + this process's) */
    uint64_t written[AB_COUNTERS]; /* writer thread: what the store has of cnt */
    _Atomic uint64_t jcnt[EJ__N];  /* the judge's outcomes on the arm's pairs, since the experiment began
                                      (read from the store by the writer) */
};

struct experiment_rt {
    const struct config_experiment *cfg;
    uint16_t index;
    struct exp_arm arms[EXPERIMENT_MAX_ARMS];
    size_t narms;
    char fingerprint[4096];        /* model, unit, salt and arms as JSON: another = a new experiment */
    uint64_t id;                   /* its name and fingerprint, hashed: the feedback map's experiment */
    double started;
    _Atomic uint64_t nounit;       /* requests without a unit (assigned per request) */
    pthread_mutex_t lock;          /* the pairing buffer */
    struct rollout_pairs ctl;      /* newest unpaired control answers */
    struct side_sampler js;        /* judge samples (sample.h): an arm's request also sent to the control's model */
    double next_write;
    bool stale;                    /* the store holds a newer config's counts: no more writes */
};

/* a request id that may get feedback: its hash (0 = empty), when it
 * finished, the experiment (its id: a hash of its name and fingerprint,
 * the same in the process that served it and in one after a reload) and
 * the arm that served it */
struct fb_slot {
    uint64_t h;
    double t;
    uint64_t ex;
    uint16_t arm;
    bool given;
};

/* The map, in the shared state (state.h): a request served before a reload
 * still gets its feedback from the new process, and only once. */
struct fb_map {
    pthread_mutex_t lock;          /* process-shared, robust */
    struct fb_slot slot[FB_CAP];
};

static struct {
    struct bg t;                   /* the writer thread */
    sqlite3 *db;
    struct gateway *gw;
    struct fb_map *fb;
    bool fb_private;
    struct redactor red;           /* shadow_store.redact, for the judge samples */               /* no room in the shared state: this process's own (freed at stop) */
} E = { .t = BG_INIT };



/* ================================================================ feedback map */

static uint64_t fb_hash(const char *id, size_t n) { return rnd_mix64(rnd_fnv1a64(RND_FNV1A64_INIT, id, n)) | 1; }

static void fb_lock(void)
{
    st_mutex_lock(&E.fb->lock); /* a process died holding it: slots are whole */
}

static void fb_init(void *p)
{
    st_mutex_init(&((struct fb_map *)p)->lock);
}

/* Remember a finished request of an experiment: the slot of the same id,
 * else an empty one, else the oldest of the window is overwritten. */
static void fb_remember(const char *id, size_t n, uint64_t ex, uint16_t arm, double now)
{
    if (!E.fb)
        return;
    uint64_t h = fb_hash(id, n);
    fb_lock();
    struct fb_slot *pick = NULL;
    for (size_t k = 0; k < FB_PROBE; k++) {
        struct fb_slot *s = &E.fb->slot[(h + k) & (FB_CAP - 1)];
        if (s->h == h || !s->h) {
            pick = s;
            break;
        }
        if (!pick || s->t < pick->t)
            pick = s;
    }
    *pick = (struct fb_slot){ h, now, ex, arm, false };
    pthread_mutex_unlock(&E.fb->lock);
}

/* ================================================================ module */

struct ex_ctx {
    struct experiment_rt *ex; /* NULL: the model has no experiment */
    uint16_t arm;
    struct side_sample *js;     /* a judge sample, NULL: not sampled */
    struct shadow_answer *ans;  /* the arm's answer, read for the judge sample */
};

static enum pl_rc experiment_request(struct pl_req *q, void *ctx)
{
    struct experiment_rt *ex = q->m0 ? q->m0->experiment : NULL;
    if (!ex || q->renamed) /* renamed: a rollout's candidate, not the public model */
        return PL_NEXT;
    struct ex_ctx *c = ctx;
    const struct config_experiment *cfg = ex->cfg;
    const char *u;
    size_t ul;
    if (!rollout_unit(q, cfg->unit, cfg->unit_header, &u, &ul)) /* no unit: not sticky, counted */
        INC(ex->nounit);
    uint32_t b = canary_bucket(cfg->salt, strlen(cfg->salt), u, ul);
    size_t a = 0;
    while (a + 1 < ex->narms && b >= ex->arms[a].hi)
        a++;
    c->ex = ex;
    c->arm = (uint16_t)a;
    q->experiment = cfg->name;
    q->variant = cfg->arms[a].name;
    if (ex->arms[a].m != q->m0) {
        /* served as the arm's model: its pool, limits, fallbacks and metrics */
        q->m0 = q->m = ex->arms[a].m;
        q->renamed = true;
    }
    /* judge preference: a sample of a non-control arm's requests is also
     * sent to the control's model (a side call started once the request is
     * on the wire) */
    if (a != 0 && cfg->judge_model && (q->ep == EP_CHAT || q->ep == EP_COMPLETIONS) &&
        side_sample_pick(q->w, cfg->judge_sample_percent) && (c->js = side_sample_admit(&ex->js, q, (uint16_t)a))) {
        c->ans = malloc(sizeof *c->ans);
        if (c->ans)
            shadow_answer_init(c->ans, q->w->gw->cfg->store.response_max_bytes);
    }
    return PL_NEXT;
}

static void experiment_sent(struct pl_req *q, void *ctx)
{
    struct ex_ctx *c = ctx;
    if (c->js)
        side_sample_start(q, c->js);
}

static void experiment_event(struct pl_req *q, void *ctx, const struct pl_event *ev)
{
    struct ex_ctx *c = ctx;
    side_sample_event(c->ans, ev);
}

static void experiment_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct ex_ctx *c = ctx;
    struct experiment_rt *ex = c->ex;
    struct shadow_answer *ans = c->ans;
    c->ans = NULL;
    if (ans) {
        if (o->answer_gap)
            shadow_answer_gap(ans);
        shadow_answer_finish_stream(ans);
    }
    if (c->js) {
        bool answered = ans && !o->aborted && o->status >= 200 && o->status < 300 && !o->err_kind &&
                        !o->body_too_large;
        side_sample_finish(c->js, answered ? ans : NULL, o->aborted);
        c->js = NULL;
        if (answered)
            ans = NULL; /* moved */
    }
    if (ans) {
        shadow_answer_free(ans);
        free(ans);
    }
    if (!ex || o->aborted) /* a client that left says nothing about its arm */
        return;
    struct exp_arm *arm = &ex->arms[c->arm];
    struct rollout_obs x;
    rollout_observe(q, o, &x);
    double cost = x.ok && o->cost_usd >= 0 ? o->cost_usd : NAN;
    INC(arm->cnt[AB_REQ]);
    if (!x.ok)
        INC(arm->cnt[AB_FAIL]);
    fb_remember(q->http->reqid, q->http->reqid_len, ex->id, c->arm, unix_now());
    struct rollout_pair b;
    pthread_mutex_lock(&ex->lock);
    if (c->arm == 0 && x.ok) /* the newest control answer waits for the next arm's one */
        rollout_pairs_push(&ex->ctl, &(struct rollout_pair){ x.lat, x.ttft, cost });
    bool paired = c->arm != 0 && (x.ok || x.timeout) && rollout_pairs_pop(&ex->ctl, &b);
    pthread_mutex_unlock(&ex->lock);
    if (!paired)
        return;
    if (x.timeout || x.lat > b.lat)
        INC(arm->cnt[AB_LAT_SLOW]);
    else if (x.lat < b.lat)
        INC(arm->cnt[AB_LAT_FAST]);
    if (isfinite(b.ttft) && (x.timeout || x.ttft > b.ttft))
        INC(arm->cnt[AB_TTFT_SLOW]);
    else if (isfinite(b.ttft) && x.ttft < b.ttft)
        INC(arm->cnt[AB_TTFT_FAST]);
    if (isfinite(b.cost) && isfinite(cost) && cost != b.cost)
        INC(arm->cnt[cost > b.cost ? AB_COST_MORE : AB_COST_LESS]);
}

/* x-shade-variant: the arm's name, when the experiment asks for it */
static void experiment_head(struct pl_req *q, void *ctx, const struct pl_head *h)
{
    struct ex_ctx *c = ctx;
    if (c->ex && c->ex->cfg->variant_header) {
        const char *name = c->ex->arms[c->arm].cfg->name;
        pl_head_add(h, "x-shade-variant", name, strlen(name));
    }
}

/* ================================================================ store */

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS experiment_state (\n"
    "  experiment TEXT PRIMARY KEY,\n"
    "  fingerprint TEXT NOT NULL,\n"  /* model, unit, salt, arms (JSON): another = counted again from 0 */
    "  started REAL NOT NULL,\n"
    "  ts REAL NOT NULL,\n"           /* last written */
    "  alpha REAL NOT NULL\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS experiment_counts (\n"
    "  experiment TEXT NOT NULL,\n"
    "  arm TEXT NOT NULL,\n"
    "  counter TEXT NOT NULL,\n"      /* abtest.h's ab_counter_names */
    "  n INTEGER NOT NULL,\n"         /* since the experiment began */
    "  PRIMARY KEY (experiment, arm, counter)\n"
    ");\n"
    /* judge preference: an arm's answer and the control's to the same
     * request (a side call), judged by judge.c in both orders */
    "CREATE TABLE IF NOT EXISTS experiment_pairs (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  experiment TEXT NOT NULL,\n"
    "  arm TEXT NOT NULL,\n"
    "  ts REAL NOT NULL,\n"
    "  request_id TEXT,\n"
    "  prompt TEXT,\n"              /* the request (messages or prompt JSON), bounded */
    "  control TEXT, answer TEXT\n"  /* the control's answer, the arm's (the client's) */
    ");\n"
    "CREATE INDEX IF NOT EXISTS experiment_pairs_experiment ON experiment_pairs(experiment, id);\n"
    /* order1 shows the control's answer as A and the arm's as B, order2
     * swapped; outcome is the arm's (win, loss, tie, inconsistent, error) */
    "CREATE TABLE IF NOT EXISTS experiment_judgements (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  pair_id INTEGER NOT NULL UNIQUE,\n"
    "  experiment TEXT NOT NULL,\n"
    "  arm TEXT NOT NULL,\n"
    "  judge TEXT NOT NULL,\n"
    "  order1 TEXT, order2 TEXT,\n"
    "  outcome TEXT NOT NULL,\n"
    "  ts REAL NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS experiment_judgements_experiment ON experiment_judgements(experiment, arm, "
    "outcome);\n";

static void fingerprint(struct experiment_rt *ex)
{
    const struct config_experiment *c = ex->cfg;
    static const char *const units[] = { "user", "header", "key" };
    struct buf b = { 0 };
    buf_append_str(&b, "{\"model\":");
    json_buf_str(&b, c->model);
    buf_printf(&b, ",\"unit\":\"%s\",\"unit_header\":", units[c->unit]);
    json_buf_str(&b, c->unit_header ? c->unit_header : "");
    buf_append_str(&b, ",\"salt\":");
    json_buf_str(&b, c->salt);
    buf_append_str(&b, ",\"arms\":[");
    for (size_t i = 0; i < c->narms; i++) {
        buf_append_str(&b, i ? ",{\"name\":" : "{\"name\":");
        json_buf_str(&b, c->arms[i].name);
        buf_append_str(&b, ",\"model\":");
        json_buf_str(&b, c->arms[i].model);
        buf_printf(&b, ",\"share\":%.17g}", c->arms[i].share);
    }
    buf_append_str(&b, "]");
    if (c->judge_model) { /* only with a judge: an older experiment keeps its fingerprint */
        buf_append_str(&b, ",\"judge\":");
        json_buf_str(&b, c->judge_model);
    }
    buf_append_str(&b, "}");
    snprintf(ex->fingerprint, sizeof ex->fingerprint, "%.*s", (int)buf_used(&b), buf_data(&b) ? buf_data(&b) : "");
    buf_free(&b);
    uint64_t h = rnd_fnv1a64(RND_FNV1A64_INIT, ex->cfg->name, strlen(ex->cfg->name) + 1);
    ex->id = rnd_mix64(rnd_fnv1a64(h, ex->fingerprint, strlen(ex->fingerprint))) | 1;
}

static int counter_index(const char *name)
{
    for (int k = 0; k < AB_COUNTERS; k++)
        if (strcmp(ab_counter_names[k], name) == 0)
            return k;
    return -1;
}

static int arm_index(const struct experiment_rt *ex, const char *name)
{
    for (size_t a = 0; a < ex->narms; a++)
        if (strcmp(ex->arms[a].cfg->name, name) == 0)
            return (int)a;
    return -1;
}

static bool exec1(const char *sql, const char *name, const char *text, double x, double y)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(E.db, sql, -1, &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (text)
        sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, x);
    sqlite3_bind_double(st, 4, y);
    bool ok = sqlite3_step(st) == SQLITE_DONE;
    sqlite3_finalize(st);
    return ok;
}

/* The counts from the store when the experiment is the same one; else it
 * starts again (its old counts deleted).  Sets ex->started. */
static bool restore(struct experiment_rt *ex, double now)
{
    const char *name = ex->cfg->name;
    sqlite3_stmt *st = NULL;
    bool same = false, found = false;
    sqlite3_exec(E.db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (sqlite3_prepare_v2(E.db, "SELECT fingerprint, started FROM experiment_state WHERE experiment = ?1", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *fp = (const char *)sqlite3_column_text(st, 0);
            found = true;
            same = fp && strcmp(fp, ex->fingerprint) == 0;
            ex->started = sqlite3_column_double(st, 1);
        }
    }
    sqlite3_finalize(st);
    bool ok = true;
    if (same && sqlite3_prepare_v2(E.db, "SELECT arm, counter, n FROM experiment_counts WHERE experiment = ?1", -1,
                                   &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *an = (const char *)sqlite3_column_text(st, 0), *cn = (const char *)sqlite3_column_text(st, 1);
            int a = an ? arm_index(ex, an) : -1, k = cn ? counter_index(cn) : -1;
            sqlite3_int64 n = sqlite3_column_int64(st, 2);
            if (a >= 0 && k >= 0 && n >= 0) {
                atomic_store(&ex->arms[a].cnt[k], (uint64_t)n);
                ex->arms[a].written[k] = (uint64_t)n;
            }
        }
        sqlite3_finalize(st);
        log_info("experiment %s: resumed from the store", name);
    } else if (!same) {
        if (found)
            log_warn("experiment %s: its arms changed since the stored counts: counting again from 0", name);
        ex->started = now;
        ok = exec1("DELETE FROM experiment_counts WHERE experiment = ?1", name, NULL, 0, 0) &&
             exec1("DELETE FROM experiment_judgements WHERE experiment = ?1", name, NULL, 0, 0) &&
             exec1("DELETE FROM experiment_pairs WHERE experiment = ?1", name, NULL, 0, 0) &&
             exec1("INSERT INTO experiment_state (experiment, fingerprint, started, ts, alpha) "
                   "VALUES (?1, ?2, ?3, ?3, ?4) ON CONFLICT(experiment) DO UPDATE SET fingerprint = ?2, "
                   "started = ?3, ts = ?3, alpha = ?4",
                   name, ex->fingerprint, now, ex->cfg->alpha);
    }
    sqlite3_exec(E.db, ok ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    return ok;
}

/* Add what was counted since the last write; nothing when the store's
 * fingerprint is another config's (a reload changed the arms: the newer
 * process owns the counts). */
static void persist(struct experiment_rt *ex, double now)
{
    if (!E.db || ex->stale)
        return;
    const char *name = ex->cfg->name;
    uint64_t snap[EXPERIMENT_MAX_ARMS][AB_COUNTERS];
    for (size_t a = 0; a < ex->narms; a++)
        for (int k = 0; k < AB_COUNTERS; k++)
            snap[a][k] = LD(ex->arms[a].cnt[k]);
    sqlite3_stmt *fp = NULL, *add = NULL;
    bool ok = sqlite3_exec(E.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok)
        goto out;
    ok = sqlite3_prepare_v2(E.db, "SELECT fingerprint FROM experiment_state WHERE experiment = ?1", -1, &fp, NULL) ==
             SQLITE_OK &&
         sqlite3_prepare_v2(E.db,
                            "INSERT INTO experiment_counts (experiment, arm, counter, n) VALUES (?1, ?2, ?3, ?4) "
                            "ON CONFLICT(experiment, arm, counter) DO UPDATE SET n = n + excluded.n",
                            -1, &add, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(fp, 1, name, -1, SQLITE_STATIC);
        const char *f = sqlite3_step(fp) == SQLITE_ROW ? (const char *)sqlite3_column_text(fp, 0) : NULL;
        if (!f || strcmp(f, ex->fingerprint) != 0) {
            ex->stale = true;
            log_warn("experiment %s: the store holds another configuration of it now: this process stops writing",
                     name);
            sqlite3_exec(E.db, "ROLLBACK", NULL, NULL, NULL);
            goto out;
        }
    }
    for (size_t a = 0; ok && a < ex->narms; a++)
        for (int k = 0; ok && k < AB_COUNTERS; k++) {
            uint64_t d = snap[a][k] - ex->arms[a].written[k];
            if (!d)
                continue;
            sqlite3_reset(add);
            sqlite3_bind_text(add, 1, name, -1, SQLITE_STATIC);
            sqlite3_bind_text(add, 2, ex->arms[a].cfg->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(add, 3, ab_counter_names[k], -1, SQLITE_STATIC);
            sqlite3_bind_int64(add, 4, (sqlite3_int64)d);
            ok = sqlite3_step(add) == SQLITE_DONE;
        }
    ok = ok && exec1("UPDATE experiment_state SET ts = ?3, alpha = ?4 WHERE experiment = ?1", name, NULL, now,
                     ex->cfg->alpha);
    ok = sqlite3_exec(E.db, ok ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK && ok;
out:
    if (ok && !ex->stale)
        for (size_t a = 0; a < ex->narms; a++)
            memcpy(ex->arms[a].written, snap[a], sizeof snap[a]);
    else if (!ok)
        log_warn("experiment %s: cannot write to the store: %s", name, sqlite3_errmsg(E.db));
    sqlite3_finalize(fp);
    sqlite3_finalize(add);
}

/* ================================================================ judge samples */

/* The judge samples the workers finished: stored as pairs for the judge
 * thread (judge.c), here on the writer's thread (never on a worker). */
static void pairs_store(struct experiment_rt *ex)
{
    struct side_sample *s = side_sample_take(&ex->js);
    if (!s)
        return;
    sqlite3_stmt *st = NULL;
    if (E.db && !ex->stale &&
        sqlite3_prepare_v2(E.db,
                           "INSERT INTO experiment_pairs (experiment, arm, ts, request_id, prompt, control, answer) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &st, NULL) != SQLITE_OK)
        st = NULL;
    if (st)
        sqlite3_exec(E.db, "BEGIN", NULL, NULL, NULL);
    while (s) {
        struct side_sample *next = s->next;
        if (st && s->tag < ex->narms) {
            side_sample_redact(s, &E.red);
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, ex->cfg->name, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, ex->arms[s->tag].cfg->name, -1, SQLITE_STATIC);
            sqlite3_bind_double(st, 3, s->ts);
            sqlite3_bind_text(st, 4, s->reqid, -1, SQLITE_STATIC);
            if (s->prompt)
                sqlite3_bind_text(st, 5, s->prompt, (int)s->prompt_len, SQLITE_STATIC);
            else
                sqlite3_bind_null(st, 5);
            for (int k = 0; k < 2; k++) /* [1] the control's answer, [0] the arm's */
                sqlite3_bind_text(st, 6 + k, buf_data(&s->ans[1 - k].text) ? buf_data(&s->ans[1 - k].text) : "",
                                  (int)buf_used(&s->ans[1 - k].text), SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_DONE)
                atomic_fetch_add_explicit(&ex->js.cnt[SS_PAIRED], 1, memory_order_relaxed);
            else
                log_warn("experiment %s: cannot store a judge pair: %s", ex->cfg->name, sqlite3_errmsg(E.db));
        }
        side_sample_free(s);
        s = next;
    }
    if (st) {
        sqlite3_exec(E.db, "COMMIT", NULL, NULL, NULL);
        sqlite3_finalize(st);
    }
}

/* The judge's verdicts on the experiment's pairs, per arm and outcome,
 * counted in the store (every process's judge writes there; a pair is
 * judged once): the live view's judge counts. */
static void judgements_read(struct experiment_rt *ex)
{
    sqlite3_stmt *st = NULL;
    if (!E.db || sqlite3_prepare_v2(E.db,
                                    "SELECT arm, outcome, count(*) FROM experiment_judgements WHERE experiment = ?1 "
                                    "GROUP BY arm, outcome",
                                    -1, &st, NULL) != SQLITE_OK)
        return;
    uint64_t n[EXPERIMENT_MAX_ARMS][EJ__N];
    memset(n, 0, sizeof n);
    sqlite3_bind_text(st, 1, ex->cfg->name, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *an = (const char *)sqlite3_column_text(st, 0), *on = (const char *)sqlite3_column_text(st, 1);
        int a = an ? arm_index(ex, an) : -1, k = EJ_ERROR;
        for (int i = 0; on && i < EJ__N; i++)
            if (strcmp(on, ej_names[i]) == 0)
                k = i;
        if (a >= 0)
            n[a][k] += (uint64_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return;
    for (size_t a = 0; a < ex->narms; a++)
        for (int k = 0; k < EJ__N; k++)
            atomic_store_explicit(&ex->arms[a].jcnt[k], n[a][k], memory_order_relaxed);
}

/* ================================================================ writer */

static void *writer_main(void *arg)
{
    (void)arg;
    struct gateway *gw = E.gw;
    pthread_mutex_lock(&E.t.lock);
    for (;;) {
        double now = unix_now(), next = now + 3600;
        for (size_t i = 0; i < gw->nexperiments; i++)
            next = fmin(next, gw->experiments[i].next_write);
        if (!E.t.stop)
            bg_wait(&E.t, next - now);
        bool stop = E.t.stop;
        pthread_mutex_unlock(&E.t.lock);
        now = unix_now();
        for (size_t i = 0; i < gw->nexperiments; i++) {
            struct experiment_rt *ex = &gw->experiments[i];
            if (stop || ex->next_write <= now) {
                persist(ex, now);
                if (ex->cfg->judge_model) {
                    pairs_store(ex);
                    judgements_read(ex);
                }
                ex->next_write = now + ex->cfg->check_interval_ms / 1000.0;
            }
        }
        pthread_mutex_lock(&E.t.lock);
        if (stop)
            break;
    }
    pthread_mutex_unlock(&E.t.lock);
    return NULL;
}

int experiment_start(struct gateway *gw, char *err, size_t errlen)
{
    const struct config *cfg = gw->cfg;
    gw->experiments = NULL;
    gw->nexperiments = 0;
    if (!cfg->nexperiments)
        return 0;
    if (redactor_init(&E.red, cfg->store.redact, cfg->store.nredact, err, errlen) < 0)
        return -1;
    gw->experiments = calloc(cfg->nexperiments, sizeof *gw->experiments);
    E.fb = st_region("experiment-feedback", sizeof *E.fb, fb_init);
    E.fb_private = !E.fb;
    if (!E.fb && (E.fb = calloc(1, sizeof *E.fb))) {
        log_warn("experiments: no room in the shared state for the feedback map: feedback for a request "
                 "served before a reload will not be found");
        fb_init(E.fb);
    }
    if (!gw->experiments || !E.fb) {
        snprintf(err, errlen, "experiments: out of memory");
        free(gw->experiments);
        gw->experiments = NULL;
        if (E.fb_private)
            free(E.fb);
        E.fb = NULL;
        return -1;
    }
    if (rollout_store_open(cfg->store.path, schema_sql, "experiments", &E.db, err, errlen) < 0) {
        experiment_stop(gw);
        return -1;
    }
    double now = unix_now();
    for (size_t i = 0; i < cfg->nexperiments; i++) {
        struct experiment_rt *ex = &gw->experiments[i];
        ex->cfg = &cfg->experiments[i];
        ex->index = (uint16_t)i;
        ex->narms = ex->cfg->narms;
        double cum = 0;
        for (size_t a = 0; a < ex->narms; a++) {
            ex->arms[a].cfg = &ex->cfg->arms[a];
            ex->arms[a].m = &gw->models[ex->cfg->arms[a].model_index];
            cum += ex->cfg->arms[a].share;
            ex->arms[a].hi = a + 1 == ex->narms ? 10000 : (uint32_t)llround(cum * 100);
        }
        pthread_mutex_init(&ex->lock, NULL);
        side_sampler_init(&ex->js);
        ex->js.ref = ex->arms[0].m; /* the control's model */
        ex->js.tag_header = "x-shade-experiment";
        ex->js.tag = ex->cfg->name;
        ex->js.nlegs = 1;
        ex->js.max_concurrent = ex->cfg->judge_max_concurrent;
        ex->js.deadline_ms = ex->cfg->judge_deadline_ms;
        ex->js.prompt_max = cfg->store.prompt_max_bytes;
        ex->js.answer_max = cfg->store.response_max_bytes;
        gw->nexperiments++;
        fingerprint(ex);
        if (!restore(ex, now)) {
            snprintf(err, errlen, "experiment %s: store %s: %s", ex->cfg->name, cfg->store.path,
                     sqlite3_errmsg(E.db));
            experiment_stop(gw);
            return -1;
        }
        if (ex->cfg->judge_model)
            judgements_read(ex);
        ex->next_write = now + ex->cfg->check_interval_ms / 1000.0;
        gw->models[ex->cfg->model_index].experiment = ex;
    }
    E.gw = gw;
    if (bg_start(&E.t, writer_main, NULL) < 0) {
        snprintf(err, errlen, "experiments: cannot start the writer thread");
        experiment_stop(gw);
        return -1;
    }
    return 0;
}

void experiment_stop(struct gateway *gw)
{
    bg_stop(&E.t); /* its last write counts what the workers finished */
    redactor_free(&E.red);
    if (E.db) {
        sqlite3_close(E.db);
        E.db = NULL;
    }
    for (size_t i = 0; i < gw->nexperiments; i++) {
        gw->models[gw->experiments[i].cfg->model_index].experiment = NULL;
        pthread_mutex_destroy(&gw->experiments[i].lock);
        side_sampler_destroy(&gw->experiments[i].js);
    }
    free(gw->experiments);
    gw->experiments = NULL;
    gw->nexperiments = 0;
    if (E.fb_private)
        free(E.fb);
    E.fb = NULL;
    E.gw = NULL;
}

/* ================================================================ rendering */

/* One experiment as the reports show it: live (the admin API) or from the
 * store (`shade experiment report`). */
struct exp_view {
    const char *name, *model;
    double alpha, started, ts;
    size_t narms;
    const char *arm[EXPERIMENT_MAX_ARMS], *arm_model[EXPERIMENT_MAX_ARMS];
    double share[EXPERIMENT_MAX_ARMS];
    uint64_t c[EXPERIMENT_MAX_ARMS][AB_COUNTERS];
    bool judge;       /* the experiment has a judge: judge preference is compared */
    const char *judge_model;
    uint64_t jc[EXPERIMENT_MAX_ARMS][EJ__N]; /* the judge's outcomes per arm */
    double judge_percent;                    /* < 0: not known (the store does not keep it) */
    uint64_t samples[SS__N];                 /* live only: what became of the judge samples */
    long long nounit; /* -1: not known (the store does not keep it) */
};

static double ev(double le) { return le > 690 ? 1e300 : exp(le); }

static void view_live(struct experiment_rt *ex, struct exp_view *v)
{
    memset(v, 0, sizeof *v);
    v->name = ex->cfg->name;
    v->model = ex->cfg->model;
    v->alpha = ex->cfg->alpha;
    v->started = ex->started;
    v->ts = unix_now();
    v->narms = ex->narms;
    for (size_t a = 0; a < ex->narms; a++) {
        v->arm[a] = ex->arms[a].cfg->name;
        v->arm_model[a] = ex->arms[a].cfg->model;
        v->share[a] = ex->arms[a].cfg->share;
        for (int k = 0; k < AB_COUNTERS; k++)
            v->c[a][k] = LD(ex->arms[a].cnt[k]);
        for (int k = 0; k < EJ__N; k++)
            v->jc[a][k] = LD(ex->arms[a].jcnt[k]);
        v->c[a][AB_JUDGE_LOSS] = v->jc[a][EJ_LOSS];
        v->c[a][AB_JUDGE_WIN] = v->jc[a][EJ_WIN];
    }
    v->judge = ex->cfg->judge_model != NULL;
    v->judge_model = ex->cfg->judge_model;
    v->judge_percent = ex->cfg->judge_sample_percent;
    for (int k = 0; k < SS__N; k++)
        v->samples[k] = LD(ex->js.cnt[k]);
    v->nounit = (long long)LD(ex->nounit);
}

static void render_json(struct buf *b, const struct exp_view *v)
{
    struct ab_arm_result r[EXPERIMENT_MAX_ARMS];
    ab_analyze((const uint64_t(*)[AB_COUNTERS])v->c, v->narms, v->alpha, v->judge, r);
    buf_append_str(b, "{\"name\":");
    json_buf_str(b, v->name);
    buf_append_str(b, ",\"model\":");
    json_buf_str(b, v->model);
    buf_append_str(b, ",\"alpha\":");
    json_buf_num(b, v->alpha);
    buf_printf(b, ",\"tests\":%.0f,\"started\":%.3f,\"at\":%.3f", ab_tests(v->narms, v->judge), v->started, v->ts);
    if (v->nounit >= 0)
        buf_printf(b, ",\"requests_without_unit\":%lld", v->nounit);
    if (v->judge) {
        buf_append_str(b, ",\"judge\":{\"model\":");
        json_buf_str(b, v->judge_model);
        if (v->judge_percent >= 0) {
            buf_append_str(b, ",\"sample_percent\":");
            json_buf_num(b, v->judge_percent);
            buf_append_str(b, ",\"samples\":{");
            for (int k = 0; k < SS__N; k++)
                buf_printf(b, "%s\"%s\":%llu", k ? "," : "", es_names[k], (unsigned long long)v->samples[k]);
            buf_append_str(b, "}");
        }
        buf_append_str(b, "}");
    }
    buf_append_str(b, ",\"arms\":[");
    for (size_t a = 0; a < v->narms; a++) {
        buf_append_str(b, a ? ",{\"name\":" : "{\"name\":");
        json_buf_str(b, v->arm[a]);
        buf_append_str(b, ",\"model\":");
        json_buf_str(b, v->arm_model[a]);
        buf_append_str(b, ",\"share\":");
        json_buf_num(b, v->share[a]);
        buf_printf(b, ",\"control\":%s,\"counts\":{", a ? "false" : "true");
        for (int k = 0; k < AB_COUNTERS; k++)
            buf_printf(b, "%s\"%s\":%llu", k ? "," : "", ab_counter_names[k], (unsigned long long)v->c[a][k]);
        buf_append_str(b, "},\"success\":{\"rate\":");
        json_buf_num(b, r[a].success);
        buf_append_str(b, ",\"cs_low\":");
        json_buf_num(b, r[a].success_lo);
        buf_append_str(b, ",\"cs_high\":");
        json_buf_num(b, r[a].success_hi);
        buf_printf(b, "},\"feedback\":{\"positive\":%llu,\"negative\":%llu,\"rate\":",
                   (unsigned long long)v->c[a][AB_FB_POS], (unsigned long long)v->c[a][AB_FB_NEG]);
        json_buf_num(b, r[a].positive);
        buf_append_str(b, ",\"cs_low\":");
        json_buf_num(b, r[a].positive_lo);
        buf_append_str(b, ",\"cs_high\":");
        json_buf_num(b, r[a].positive_hi);
        buf_append_str(b, "}");
        if (a && v->judge) {
            buf_append_str(b, ",\"judgements\":{");
            for (int k = 0; k < EJ__N; k++)
                buf_printf(b, "%s\"%s\":%llu", k ? "," : "", ej_names[k], (unsigned long long)v->jc[a][k]);
            buf_append_str(b, "}");
        }
        if (a) {
            buf_append_str(b, ",\"comparisons\":{");
            for (int m = 0; m < ab_metrics(v->judge); m++) {
                const struct ab_comparison *x = &r[a].cmp[m];
                buf_printf(b, "%s\"%s\":{\"verdict\":\"%s\",\"e_value_worse\":", m ? "," : "", ab_metric_names[m],
                           ab_verdict_names[x->verdict]);
                json_buf_num(b, ev(x->log_e_worse));
                buf_append_str(b, ",\"e_value_better\":");
                json_buf_num(b, ev(x->log_e_better));
                buf_append_str(b, ",\"p\":");
                json_buf_num(b, x->p);
                buf_printf(b, ",\"n\":%llu,\"arm\":%llu,\"control\":%llu}", (unsigned long long)x->n,
                           (unsigned long long)x->arm_side, (unsigned long long)x->control_side);
            }
            buf_append_str(b, "}");
        }
        buf_append_str(b, "}");
    }
    buf_printf(b, "],\"threshold\":");
    json_buf_num(b, ab_tests(v->narms, v->judge) / v->alpha);
    buf_append_str(b, "}");
}

/* what each comparison counts, for people */
static const char *const side_words[AB_METRICS][2] = {
    { "failures from the arm", "from the control" },
    { "pairs slower", "faster" },
    { "pairs slower to the first token", "faster" },
    { "pairs costlier", "cheaper" },
    { "negative feedback from the arm", "from the control" },
    { "judged pairs lost", "won" },
};

static void render_text(struct buf *b, const struct exp_view *v)
{
    struct ab_arm_result r[EXPERIMENT_MAX_ARMS];
    ab_analyze((const uint64_t(*)[AB_COUNTERS])v->c, v->narms, v->alpha, v->judge, r);
    buf_printf(b, "experiment %s: model %s, %zu arms, alpha %g (a comparison shows a difference at e-value >= %g)\n",
               v->name, v->model, v->narms, v->alpha, ab_tests(v->narms, v->judge) / v->alpha);
    if (v->judge)
        buf_printf(b, "  judge %s: each verdict asked in both orders; a win or loss counts when both agree\n",
                   v->judge_model);
    for (size_t a = 0; a < v->narms; a++) {
        const uint64_t *c = v->c[a];
        buf_printf(b, "  arm %s%s (model %s, %g%%): %llu requests, %llu failed, success ", v->arm[a],
                   a ? "" : " [control]", v->arm_model[a], v->share[a], (unsigned long long)c[AB_REQ],
                   (unsigned long long)c[AB_FAIL]);
        if (c[AB_REQ])
            buf_printf(b, "%.2f%% [%.2f%%, %.2f%%]", 100 * r[a].success, 100 * r[a].success_lo,
                       100 * r[a].success_hi);
        else
            buf_append_str(b, "-");
        buf_printf(b, "; feedback %llu up / %llu down", (unsigned long long)c[AB_FB_POS],
                   (unsigned long long)c[AB_FB_NEG]);
        if (c[AB_FB_POS] + c[AB_FB_NEG])
            buf_printf(b, ", positive %.1f%% [%.1f%%, %.1f%%]", 100 * r[a].positive, 100 * r[a].positive_lo,
                       100 * r[a].positive_hi);
        if (a && v->judge)
            buf_printf(b, "; judged against the control: %llu won, %llu lost, %llu tie, %llu split, %llu error",
                       (unsigned long long)v->jc[a][EJ_WIN], (unsigned long long)v->jc[a][EJ_LOSS],
                       (unsigned long long)v->jc[a][EJ_TIE], (unsigned long long)v->jc[a][EJ_INCONSISTENT],
                       (unsigned long long)v->jc[a][EJ_ERROR]);
        buf_append_str(b, "\n");
        for (int m = 0; a && m < ab_metrics(v->judge); m++) {
            const struct ab_comparison *x = &r[a].cmp[m];
            buf_printf(b, "    %-9s %-24s e-value worse %-9.3g better %-9.3g p %-7.3g (%llu %s, %llu %s)\n",
                       ab_metric_names[m], ab_verdict_names[x->verdict], ev(x->log_e_worse), ev(x->log_e_better),
                       x->p, (unsigned long long)x->arm_side, side_words[m][0], (unsigned long long)x->control_side,
                       side_words[m][1]);
        }
    }
}

static void html_text(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            buf_append_str(b, "&lt;");
        else if (*s == '>')
            buf_append_str(b, "&gt;");
        else if (*s == '&')
            buf_append_str(b, "&amp;");
        else if (*s == '"')
            buf_append_str(b, "&quot;");
        else
            buf_append(b, s, 1);
    }
}

static void render_html(struct buf *b, const struct exp_view *v)
{
    struct ab_arm_result r[EXPERIMENT_MAX_ARMS];
    ab_analyze((const uint64_t(*)[AB_COUNTERS])v->c, v->narms, v->alpha, v->judge, r);
    buf_append_str(b, "<h2>Experiment ");
    html_text(b, v->name);
    buf_append_str(b, "</h2>\n<p>Model ");
    html_text(b, v->model);
    buf_printf(b, "; alpha %g over %.0f tests: a comparison shows a difference at e-value &ge; %g.</p>\n", v->alpha,
               ab_tests(v->narms, v->judge), ab_tests(v->narms, v->judge) / v->alpha);
    buf_append_str(b, "<table>\n<tr><th>arm</th><th>model</th><th>share</th><th>requests</th><th>success "
                      "(confidence sequence)</th><th>feedback up / down</th><th>positive (confidence "
                      "sequence)</th></tr>\n");
    for (size_t a = 0; a < v->narms; a++) {
        const uint64_t *c = v->c[a];
        buf_append_str(b, "<tr><td>");
        html_text(b, v->arm[a]);
        buf_append_str(b, a ? "</td><td>" : " (control)</td><td>");
        html_text(b, v->arm_model[a]);
        buf_printf(b, "</td><td>%g%%</td><td>%llu</td><td>%.2f%% [%.2f%%, %.2f%%]</td><td>%llu / %llu</td>"
                      "<td>%.1f%% [%.1f%%, %.1f%%]</td></tr>\n",
                   v->share[a], (unsigned long long)c[AB_REQ], 100 * r[a].success, 100 * r[a].success_lo,
                   100 * r[a].success_hi, (unsigned long long)c[AB_FB_POS], (unsigned long long)c[AB_FB_NEG],
                   100 * r[a].positive, 100 * r[a].positive_lo, 100 * r[a].positive_hi);
    }
    buf_append_str(b, "</table>\n<table>\n<tr><th>arm</th><th>metric</th><th>verdict</th><th>e-value worse</th>"
                      "<th>e-value better</th><th>always-valid p</th><th>n</th></tr>\n");
    for (size_t a = 1; a < v->narms; a++)
        for (int m = 0; m < ab_metrics(v->judge); m++) {
            const struct ab_comparison *x = &r[a].cmp[m];
            buf_append_str(b, "<tr><td>");
            html_text(b, v->arm[a]);
            buf_printf(b, "</td><td>%s</td><td class=\"%s\">%s</td><td>%.3g</td><td>%.3g</td><td>%.3g</td>"
                          "<td>%llu</td></tr>\n",
                       ab_metric_names[m], x->verdict == AB_WORSE ? "worse" : x->verdict == AB_BETTER ? "better" : "",
                       ab_verdict_names[x->verdict], ev(x->log_e_worse), ev(x->log_e_better), x->p,
                       (unsigned long long)x->n);
        }
    buf_append_str(b, "</table>\n");
    if (!v->judge)
        return;
    buf_append_str(b, "<p>Judge ");
    html_text(b, v->judge_model);
    buf_append_str(b, ": each pair (the arm's answer and the control's to the same request) judged in both orders; "
                      "a win or a loss counts only when both agree.</p>\n<table>\n<tr><th>arm</th>");
    for (int k = 0; k < EJ__N; k++)
        buf_printf(b, "<th>%s</th>", ej_names[k]);
    buf_append_str(b, "</tr>\n");
    for (size_t a = 1; a < v->narms; a++) {
        buf_append_str(b, "<tr><td>");
        html_text(b, v->arm[a]);
        buf_append_str(b, "</td>");
        for (int k = 0; k < EJ__N; k++)
            buf_printf(b, "<td>%llu</td>", (unsigned long long)v->jc[a][k]);
        buf_append_str(b, "</tr>\n");
    }
    buf_append_str(b, "</table>\n");
}

/* ================================================================ POST /v1/feedback */

static int bad_request(http_req *r, const char *code, const char *param, const char *msg)
{
    http_respond_error(r, 400, "invalid_request_error", code, param, "%s", msg);
    return 400;
}

static int feedback_post(struct worker *w, http_req *r)
{
    struct json_span root, key, val, id = { 0 }, score = { 0 }, thumbs = { 0 };
    struct json_error je;
    if (r->body_len == 0)
        return bad_request(r, NULL, NULL, "We could not parse the JSON body of your request: the body is empty.");
    if (json_validate(r->body, r->body_len, &root, &je) < 0) {
        char msg[200];
        snprintf(msg, sizeof msg, "We could not parse the JSON body of your request: %s at byte %zu.", je.message,
                 je.offset);
        return bad_request(r, NULL, NULL, msg);
    }
    if (root.type != JSON_OBJECT)
        return bad_request(r, NULL, NULL, "The request body must be a JSON object.");
    for (size_t it = 0; json_next(&root, &it, &key, &val);) {
        struct json_span *dst = json_str_eq(&key, "request_id") ? &id
                                : json_str_eq(&key, "score")    ? &score
                                : json_str_eq(&key, "thumbs")   ? &thumbs
                                                                : NULL;
        if (dst && dst->p)
            return bad_request(r, "duplicate_parameter", NULL, "A parameter appears more than once in the body.");
        if (dst)
            *dst = val;
    }
    if (!id.p)
        return bad_request(r, "missing_required_parameter", "request_id", "Missing required parameter: 'request_id'.");
    if (id.type != JSON_STRING)
        return bad_request(r, "invalid_type", "request_id", "Invalid type for 'request_id': expected a string.");
    if (score.p && thumbs.p)
        return bad_request(r, "invalid_value", "score", "Give either 'score' or 'thumbs', not both.");
    if (!score.p && !thumbs.p)
        return bad_request(r, "missing_required_parameter", "score",
                           "Missing required parameter: 'score' (0 to 1) or 'thumbs' (\"up\" or \"down\").");
    bool positive;
    if (score.p) {
        double x;
        if (score.type != JSON_NUMBER || !json_to_double(&score, &x))
            return bad_request(r, "invalid_type", "score", "Invalid type for 'score': expected a number.");
        if (!(x >= 0 && x <= 1))
            return bad_request(r, "invalid_value", "score", "Invalid 'score': expected a number from 0 to 1.");
        positive = x >= 0.5;
    } else {
        if (thumbs.type != JSON_STRING || !(json_str_eq(&thumbs, "up") || json_str_eq(&thumbs, "down")))
            return bad_request(r, "invalid_value", "thumbs", "Invalid 'thumbs': expected \"up\" or \"down\".");
        positive = json_str_eq(&thumbs, "up");
    }
    char rid[256];
    long n = json_str_unescape(&id, rid, sizeof rid);
    struct gateway *gw = w->gw;
    struct experiment_rt *ex = NULL;
    uint16_t arm = 0;
    bool given = false;
    if (n > 0 && E.fb && E.gw == gw) {
        uint64_t h = fb_hash(rid, (size_t)n);
        double now = unix_now();
        fb_lock();
        for (size_t k = 0; k < FB_PROBE; k++) {
            struct fb_slot *s = &E.fb->slot[(h + k) & (FB_CAP - 1)];
            if (s->h != h)
                continue;
            struct experiment_rt *e = NULL; /* served here or by a process before a reload */
            for (size_t i = 0; i < gw->nexperiments && !e; i++)
                if (gw->experiments[i].id == s->ex && s->arm < gw->experiments[i].narms)
                    e = &gw->experiments[i];
            if (e && now - s->t <= e->cfg->feedback_ttl_ms / 1000.0) {
                ex = e;
                arm = s->arm;
                given = s->given;
                s->given = true;
            }
            break;
        }
        pthread_mutex_unlock(&E.fb->lock);
    }
    if (!ex) {
        http_respond_error(r, 404, "invalid_request_error", "feedback_request_not_found", "request_id",
                           "No recent request of an experiment has this id (unknown, or older than its "
                           "feedback_ttl).");
        return 404;
    }
    if (given) {
        http_respond_error(r, 409, "invalid_request_error", "feedback_already_given", "request_id",
                           "This request already has feedback; only the first counts.");
        return 409;
    }
    INC(ex->arms[arm].cnt[positive ? AB_FB_POS : AB_FB_NEG]);
    struct buf b = { 0 };
    buf_append_str(&b, "{\"ok\":true,\"experiment\":");
    json_buf_str(&b, ex->cfg->name);
    buf_append_str(&b, ",\"arm\":");
    json_buf_str(&b, ex->arms[arm].cfg->name);
    buf_printf(&b, ",\"value\":\"%s\"}\n", positive ? "positive" : "negative");
    return http_respond_buf(r, 200, "application/json", &b);
}

/* ================================================================ admin API */

static int experiment_admin(struct worker *w, http_req *r)
{
    struct gateway *gw = w->gw;
    const char *p = r->path + 18; /* after "/admin/experiments" */
    size_t n = r->path_len - 18;
    if (r->method != HTTP_M_GET && r->method != HTTP_M_HEAD) {
        http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                           "Method not allowed here (allowed: GET, HEAD).");
        return 405;
    }
    struct buf b = { 0 };
    struct exp_view v;
    if (n == 0 || (n == 1 && p[0] == '/')) {
        buf_append_str(&b, "{\"experiments\":[");
        for (size_t i = 0; i < gw->nexperiments; i++) {
            if (i)
                buf_append_str(&b, ",");
            view_live(&gw->experiments[i], &v);
            render_json(&b, &v);
        }
        buf_append_str(&b, "]}\n");
    } else {
        if (p[0] == '/')
            p++, n--;
        struct experiment_rt *ex = NULL;
        for (size_t i = 0; i < gw->nexperiments && !ex; i++)
            if (strlen(gw->experiments[i].cfg->name) == n && memcmp(gw->experiments[i].cfg->name, p, n) == 0)
                ex = &gw->experiments[i];
        if (!ex) {
            http_respond_error(r, 404, "invalid_request_error", "experiment_not_found", NULL,
                               "No experiment named '%.*s'.", (int)(n > 200 ? 200 : n), p);
            return 404;
        }
        view_live(ex, &v);
        render_json(&b, &v);
        buf_append_str(&b, "\n");
    }
    return http_respond_buf(r, 200, "application/json", &b);
}

/* ================================================================ metrics */

static void label_pair(struct buf *o, const char *metric, const struct experiment_rt *ex, size_t a)
{
    buf_printf(o, "%s{experiment=\"", metric);
    metrics_put_label(o, ex->cfg->name);
    buf_append_str(o, "\",arm=\"");
    metrics_put_label(o, ex->arms[a].cfg->name);
}

static void experiment_metrics(const struct gateway *gw, struct buf *o)
{
    if (!gw->nexperiments)
        return;
    buf_append_str(o, "# HELP shade_experiment_requests_total Finished requests of an experiment by arm and outcome.\n"
                      "# TYPE shade_experiment_requests_total counter\n");
    for (size_t i = 0; i < gw->nexperiments; i++)
        for (size_t a = 0; a < gw->experiments[i].narms; a++) {
            const struct exp_arm *arm = &gw->experiments[i].arms[a];
            uint64_t req = LD(arm->cnt[AB_REQ]), fail = LD(arm->cnt[AB_FAIL]);
            label_pair(o, "shade_experiment_requests_total", &gw->experiments[i], a);
            buf_printf(o, "\",outcome=\"ok\"} %llu\n", (unsigned long long)(req - fail));
            label_pair(o, "shade_experiment_requests_total", &gw->experiments[i], a);
            buf_printf(o, "\",outcome=\"error\"} %llu\n", (unsigned long long)fail);
        }
    buf_append_str(o, "# HELP shade_experiment_feedback_total User feedback on an experiment's requests by arm.\n"
                      "# TYPE shade_experiment_feedback_total counter\n");
    for (size_t i = 0; i < gw->nexperiments; i++)
        for (size_t a = 0; a < gw->experiments[i].narms; a++) {
            const struct exp_arm *arm = &gw->experiments[i].arms[a];
            label_pair(o, "shade_experiment_feedback_total", &gw->experiments[i], a);
            buf_printf(o, "\",value=\"positive\"} %llu\n", (unsigned long long)LD(arm->cnt[AB_FB_POS]));
            label_pair(o, "shade_experiment_feedback_total", &gw->experiments[i], a);
            buf_printf(o, "\",value=\"negative\"} %llu\n", (unsigned long long)LD(arm->cnt[AB_FB_NEG]));
        }
    bool judged = false;
    for (size_t i = 0; i < gw->nexperiments; i++)
        judged = judged || gw->experiments[i].cfg->judge_model;
    if (!judged)
        return;
    buf_append_str(o, "# HELP shade_experiment_judgements_total The judge's verdicts on an arm's answers against the "
                      "control's (win and loss: both orders agree).\n"
                      "# TYPE shade_experiment_judgements_total counter\n");
    for (size_t i = 0; i < gw->nexperiments; i++)
        for (size_t a = 1; gw->experiments[i].cfg->judge_model && a < gw->experiments[i].narms; a++)
            for (int k = 0; k < EJ__N; k++) {
                label_pair(o, "shade_experiment_judgements_total", &gw->experiments[i], a);
                buf_printf(o, "\",outcome=\"%s\"} %llu\n", ej_names[k],
                           (unsigned long long)LD(gw->experiments[i].arms[a].jcnt[k]));
            }
}

/* /v1/feedback is the clients': not behind the admin key.  It only looks
 * up and marks a fixed table filled by finished requests, so it cannot
 * grow memory, and a request's feedback counts once. */
static const struct route experiment_routes[] = {
    { ROUTE_POST, "/v1/feedback", false, false, feedback_post },
    { ROUTE_ANY, "/admin/experiments", true, true, experiment_admin },
};

const struct pl_module mod_experiment = {
    .name = "experiment",
    .phase = PH_ROUTE,
    .ctx_size = sizeof(struct ex_ctx),
    .on_request = experiment_request,
    .on_sent = experiment_sent,
    .on_event = experiment_event,
    .on_finish = experiment_finish,
    .on_head = experiment_head,
    .routes = experiment_routes,
    .nroutes = sizeof experiment_routes / sizeof experiment_routes[0],
    .metrics_render = experiment_metrics,
};

/* ================================================================ shade experiment */

static const char usage_experiment[] =
    "usage: shade experiment report --db FILE [--experiment NAME] [--format text|json|html]\n"
    "\n"
    "Each experiment's arms from the store (shadow_store.path): requests,\n"
    "success and positive feedback with confidence sequences, and each arm\n"
    "compared with the control (the first arm) on failures, latency, TTFT,\n"
    "cost, feedback and (with a judge) judge preference: e-values,\n"
    "always-valid p-values and a verdict\n"
    "(better, worse, no difference shown yet).  doc/rollouts.md, Experiments.\n";

/* An experiment's arms back from its fingerprint (names into store). */
static int view_of_fingerprint(const char *fp, struct exp_view *v, char store[][2][300])
{
    struct json_span root, arms, e, x;
    struct json_error je;
    if (json_validate(fp, strlen(fp), &root, &je) < 0 || !json_get(&root, "arms", &arms) || arms.type != JSON_ARRAY)
        return -1;
    v->narms = 0;
    for (size_t it = 0; json_next(&arms, &it, NULL, &e) && v->narms < EXPERIMENT_MAX_ARMS;) {
        size_t a = v->narms;
        if (!json_get(&e, "name", &x) || json_str_unescape(&x, store[a][0], sizeof store[a][0]) < 0 ||
            !json_get(&e, "model", &x) || json_str_unescape(&x, store[a][1], sizeof store[a][1]) < 0 ||
            !json_get(&e, "share", &x) || !json_to_double(&x, &v->share[a]))
            return -1;
        v->arm[a] = store[a][0];
        v->arm_model[a] = store[a][1];
        v->narms++;
    }
    return v->narms >= 2 ? 0 : -1;
}

static int report_one(sqlite3 *db, const char *name, const char *fp, double started, double ts, double alpha,
                      const char *format, struct buf *out)
{
    struct exp_view v;
    char names[EXPERIMENT_MAX_ARMS][2][300];
    char model[300] = "";
    memset(&v, 0, sizeof v);
    struct json_span root, x;
    struct json_error je;
    if (view_of_fingerprint(fp, &v, names) < 0 || json_validate(fp, strlen(fp), &root, &je) < 0 ||
        !json_get(&root, "model", &x) || json_str_unescape(&x, model, sizeof model) < 0) {
        fprintf(stderr, "shade experiment: %s: unreadable arms in the store\n", name);
        return -1;
    }
    v.name = name;
    v.model = model;
    v.alpha = alpha;
    v.started = started;
    v.ts = ts;
    v.nounit = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT arm, counter, n FROM experiment_counts WHERE experiment = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *an = (const char *)sqlite3_column_text(st, 0), *cn = (const char *)sqlite3_column_text(st, 1);
        int k = cn ? counter_index(cn) : -1;
        for (size_t a = 0; an && k >= 0 && a < v.narms; a++)
            if (strcmp(v.arm[a], an) == 0)
                v.c[a][k] = (uint64_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    char judge[300] = "";
    if (json_get(&root, "judge", &x) && json_str_unescape(&x, judge, sizeof judge) >= 0) {
        v.judge = true;
        v.judge_model = judge;
        v.judge_percent = -1;
        /* a store from before judge preference has no such table: no verdicts */
        if (sqlite3_prepare_v2(db,
                               "SELECT arm, outcome, count(*) FROM experiment_judgements WHERE experiment = ?1 "
                               "GROUP BY arm, outcome",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            while (sqlite3_step(st) == SQLITE_ROW) {
                const char *an = (const char *)sqlite3_column_text(st, 0),
                           *on = (const char *)sqlite3_column_text(st, 1);
                int k = EJ_ERROR;
                for (int i = 0; on && i < EJ__N; i++)
                    if (strcmp(on, ej_names[i]) == 0)
                        k = i;
                for (size_t a = 0; an && a < v.narms; a++)
                    if (strcmp(v.arm[a], an) == 0)
                        v.jc[a][k] += (uint64_t)sqlite3_column_int64(st, 2);
            }
            sqlite3_finalize(st);
        }
        for (size_t a = 0; a < v.narms; a++) {
            v.c[a][AB_JUDGE_LOSS] = v.jc[a][EJ_LOSS];
            v.c[a][AB_JUDGE_WIN] = v.jc[a][EJ_WIN];
        }
    }
    if (strcmp(format, "json") == 0)
        render_json(out, &v);
    else if (strcmp(format, "html") == 0)
        render_html(out, &v);
    else
        render_text(out, &v);
    return 0;
}

int experiment_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_experiment, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *db_path = NULL, *only = NULL, *format = "text";
    if (strcmp(argv[1], "report") != 0) {
        fprintf(stderr, "shade experiment: unknown command '%s'\n%s", argv[1], usage_experiment);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--db") == 0)
            db_path = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--experiment") == 0)
            only = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--format") == 0)
            format = argv[++i];
        else {
            fprintf(stderr, "shade experiment: bad or unknown option '%s'\n%s", argv[i], usage_experiment);
            return 2;
        }
    }
    if (strcmp(format, "text") != 0 && strcmp(format, "json") != 0 && strcmp(format, "html") != 0) {
        fprintf(stderr, "shade experiment: --format must be text, json or html\n");
        return 2;
    }
    if (!db_path) {
        fprintf(stderr, "shade experiment: missing --db FILE\n%s", usage_experiment);
        return 2;
    }
    struct stat sb;
    if (stat(db_path, &sb) < 0) {
        fprintf(stderr, "shade experiment: %s: %s\n", db_path, strerror(errno));
        return 1;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 5000) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT experiment, fingerprint, started, ts, alpha FROM experiment_state ORDER BY "
                           "experiment",
                           -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "shade experiment: %s: no experiments in this store (%s)\n", db_path,
                db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return 1;
    }
    struct buf out = { 0 };
    bool json = strcmp(format, "json") == 0, html = strcmp(format, "html") == 0;
    buf_append_str(&out, json ? "{\"experiments\":[" : html ? "<!doctype html>\n<meta charset=\"utf-8\">\n"
                                                              "<title>shade experiments</title>\n" : "");
    int rc = 0, found = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0), *fp = (const char *)sqlite3_column_text(st, 1);
        if (!name || !fp || (only && strcmp(name, only) != 0))
            continue;
        if (json && found)
            buf_append_str(&out, ",");
        if (!json && !html && found)
            buf_append_str(&out, "\n");
        found++;
        if (report_one(db, name, fp, sqlite3_column_double(st, 2), sqlite3_column_double(st, 3),
                       sqlite3_column_double(st, 4), format, &out) < 0)
            rc = 1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    buf_append_str(&out, json ? "]}\n" : "");
    if (only && !found) {
        fprintf(stderr, "shade experiment: no experiment named '%s' in %s\n", only, db_path);
        rc = 1;
    } else if (buf_data(&out)) {
        fwrite(buf_data(&out), 1, buf_used(&out), stdout);
    }
    buf_free(&out);
    return rc;
}
