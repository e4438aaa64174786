/* recorder.c — the pair store's writer thread (see recorder.h, store.h).
 *
 * One thread, one SQLite connection, WAL mode: readers (`shade report`,
 * the judge, a second serving process during a reload) never block it and
 * a kill -9 loses at most the transaction being written — never the file.
 * With synchronous=NORMAL a committed transaction survives a crash of the
 * process (the WAL is in the OS's hands); synchronous=FULL also survives
 * power loss.
 *
 * Per batch: events, then every pair (pairs row, one legs row per leg, one
 * comparisons row per compared leg), then the counter deltas, in one
 * transaction.  Prompt extraction, hashing, redaction and comparison all
 * happen here, off the workers.
 */
#include "recorder.h"
#include "redact.h"

#include <pthread.h>
#include <regex.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bg.h"
#include "compare.h"
#include "gateway.h"
#include "log.h"
#include "report.h"
#include "pair.h"
#include "store.h"

struct rec_event {
    struct rec_event *next;
    struct shadow_rt *sh;
    char kind[16];
    char detail[256];
    double ts;
};

/* what the counters table has been told so far, per shadow */
struct persisted {
    uint64_t mirrored, stored, dropped[DROP__COUNT];
};

static struct recorder {
    bool running;
    struct gateway *gw;
    sqlite3 *db;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct shadow_pair *head, *tail;
    size_t n, cap;
    uint64_t bytes, max_bytes;    /* held by pairs queued or being written, and its bound */
    struct rec_event *events, *events_tail;
    bool stop;
    struct redactor red;          /* shadow_store.redact */
    struct persisted *told;
    double *next_analysis;
    uint64_t *analysed_at;        /* stored count at the last analysis, +1 (0 = never) */
    struct live *live;            /* [nshadows] the decision, fed pair by pair since the start */
    double next_prune;            /* retention: when to look for old pairs next */
    sqlite3_stmt *ins_pair, *ins_leg, *ins_cmp, *ins_event, *upd_counter;
} R;

/* ---------------------------------------------------------------- workers' side */

void recorder_drop(struct shadow_rt *sh, int reason)
{
    atomic_fetch_add_explicit(&sh->dropped[reason], 1, memory_order_relaxed);
}

void recorder_submit(struct shadow_pair *p)
{
    p->weight = shadow_pair_bytes(p);
    pthread_mutex_lock(&R.lock);
    if (!R.running || R.stop || R.n >= R.cap || R.bytes + p->weight > R.max_bytes) {
        int reason = !R.running || R.stop ? DROP_SHUTDOWN : DROP_QUEUE_FULL;
        pthread_mutex_unlock(&R.lock);
        recorder_drop(p->sh, reason);
        shadow_pair_free(p);
        return;
    }
    p->next = NULL;
    if (R.tail)
        R.tail->next = p;
    else
        R.head = p;
    R.tail = p;
    R.n++;
    R.bytes += p->weight;
    pthread_cond_signal(&R.cond);
    pthread_mutex_unlock(&R.lock);
}

void recorder_event(struct shadow_rt *sh, const char *kind, const char *detail)
{
    struct rec_event *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->sh = sh;
    e->ts = unix_now();
    snprintf(e->kind, sizeof e->kind, "%s", kind);
    snprintf(e->detail, sizeof e->detail, "%s", detail ? detail : "");
    pthread_mutex_lock(&R.lock);
    if (!R.running) {
        pthread_mutex_unlock(&R.lock);
        free(e);
        return;
    }
    if (R.events_tail)
        R.events_tail->next = e;
    else
        R.events = e;
    R.events_tail = e;
    pthread_cond_signal(&R.cond);
    pthread_mutex_unlock(&R.lock);
}

void recorder_set_state(struct shadow_rt *sh, int state, const char *kind, const char *why)
{
    int old = atomic_exchange(&sh->state, state);
    pthread_mutex_lock(&sh->lock);
    snprintf(sh->reason, sizeof sh->reason, "%s", why ? why : "");
    pthread_mutex_unlock(&sh->lock);
    if (old == state)
        return;
    log_info("shadow %s: %s -> %s (%s)", sh->cfg->name, shadow_state_names_rt[old], shadow_state_names_rt[state],
             why ? why : "");
    static const char *const kinds[] = { "start", "pause", "stop" };
    recorder_event(sh, kind ? kind : kinds[state], why);
}


size_t recorder_queue_depth(void)
{
    pthread_mutex_lock(&R.lock);
    size_t n = R.n;
    pthread_mutex_unlock(&R.lock);
    return n;
}

uint64_t recorder_queue_bytes(void)
{
    pthread_mutex_lock(&R.lock);
    uint64_t n = R.bytes;
    pthread_mutex_unlock(&R.lock);
    return n;
}

/* ---------------------------------------------------------------- text */

/* Replace every match of the redaction patterns with [REDACTED]. */
static void redact(struct buf *out, const char *s, size_t n)
{
    redactor_apply(&R.red, out, s, n);
}

/* Bind text bounded to max bytes (never cutting a UTF-8 character). */
static void bind_bounded(sqlite3_stmt *st, int col, const char *s, size_t n, size_t max, bool *cut)
{
    if (n > max) {
        while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
            max--;
        n = max;
        *cut = true;
    }
    sqlite3_bind_text(st, col, s ? s : "", (int)n, SQLITE_TRANSIENT);
}

/* ---------------------------------------------------------------- writing */

static bool leg_ok(const struct shadow_leg_result *l) { return !l->error && l->status >= 200 && l->status < 300; }

static void bind_double_or_null(sqlite3_stmt *st, int col, double v, bool present)
{
    if (present)
        sqlite3_bind_double(st, col, v);
    else
        sqlite3_bind_null(st, col);
}

static void bind_int_or_null(sqlite3_stmt *st, int col, int v)
{
    if (v >= 0)
        sqlite3_bind_int(st, col, v);
    else
        sqlite3_bind_null(st, col);
}

static int write_leg(int64_t pair_id, int kind, const struct shadow_leg_result *l, size_t prompt_bytes)
{
    sqlite3_stmt *st = R.ins_leg;
    const struct config_store *cs = &R.gw->cfg->store;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, pair_id);
    sqlite3_bind_text(st, 2, shadow_leg_names[kind], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, l->target, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, l->backend, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, l->upstream_model, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 6, l->streamed);
    sqlite3_bind_int(st, 7, l->status);
    sqlite3_bind_text(st, 8, l->error, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 9, l->latency_ms);
    bind_double_or_null(st, 10, l->ttft_ms, l->ttft_ms >= 0);
    const struct shadow_answer *a = &l->ans;
    bind_double_or_null(st, 11, a->itl_n ? a->itl_sum_ms / (double)a->itl_n : 0, a->itl_n > 0);
    bind_double_or_null(st, 12, a->itl_max_ms, a->itl_n > 0);
    bool exact = a->usage_in >= 0 && a->usage_out >= 0;
    int64_t tin, tout;
    shadow_leg_tokens(l, prompt_bytes, &tin, &tout);
    if (!leg_ok(l) && !exact && !a->too_large)
        tin = tout = 0; /* a failed leg's estimate would be invented (not a too large one's: it answered) */
    sqlite3_bind_int64(st, 13, tin);
    sqlite3_bind_int64(st, 14, tout);
    sqlite3_bind_int(st, 15, exact);
    sqlite3_bind_double(st, 16, ((double)tin * l->price_in + (double)tout * l->price_out) / 1e6);
    if (a->finish[0])
        sqlite3_bind_text(st, 17, a->finish, -1, SQLITE_TRANSIENT);
    struct buf red = { 0 };
    /* the stored answer is not all of it: cut, or not read at all */
    bool cut = a->text_truncated || a->tools_truncated || a->too_large;
    redact(&red, buf_data(&a->text) ? buf_data(&a->text) : "", buf_used(&a->text));
    bind_bounded(st, 18, buf_data(&red) ? buf_data(&red) : "", buf_used(&red), cs->response_max_bytes, &cut);
    sqlite3_bind_int(st, 19, cut);
    if (buf_used(&a->tools)) /* bounded to response_max_bytes by answer.c, whole calls */
        sqlite3_bind_text(st, 20, buf_data(&a->tools), (int)buf_used(&a->tools), SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    buf_free(&red);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void to_cmp(const struct shadow_leg_result *l, struct cmp_answer *c)
{
    c->ok = leg_ok(l);
    c->status = l->status;
    c->error = l->error;
    c->text = buf_data(&l->ans.text);
    c->len = buf_used(&l->ans.text);
    c->finish = l->ans.finish[0] ? l->ans.finish : NULL;
    c->tool_calls = buf_data(&l->ans.tools);
    c->tool_len = buf_used(&l->ans.tools);
}

static int write_cmp(int64_t pair_id, const char *against, const struct shadow_pair *p, int kind)
{
    const struct config_shadow *c = p->sh->cfg;
    struct cmp_answer a, b;
    struct cmp_result r;
    struct cmp_opts o = { (const char *const *)c->refusal_patterns, c->nrefusal };
    to_cmp(&p->leg[LEG_PRIMARY], &a);
    to_cmp(&p->leg[kind], &b);
    compare_answers(&a, &b, c->nrefusal ? &o : NULL, &r);
    sqlite3_stmt *st = R.ins_cmp;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, pair_id);
    sqlite3_bind_text(st, 2, against, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, r.status_agree);
    bind_int_or_null(st, 4, r.finish_agree);
    bind_int_or_null(st, 5, r.exact);
    bind_double_or_null(st, 6, r.edit_sim, r.edit_sim >= 0);
    bind_double_or_null(st, 7, r.rouge_l, r.rouge_l >= 0);
    bind_double_or_null(st, 8, r.length_ratio, r.length_ratio >= 0);
    bind_int_or_null(st, 9, r.json_valid);
    bind_int_or_null(st, 10, r.json_same);
    bind_int_or_null(st, 11, r.tool_agree);
    sqlite3_bind_int(st, 12, r.refusal_a);
    sqlite3_bind_int(st, 13, r.refusal_b);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

static int write_pair(struct shadow_pair *p)
{
    sqlite3_stmt *st = R.ins_pair;
    const struct config_store *cs = &R.gw->cfg->store;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    sqlite3_bind_text(st, 1, p->sh->cfg->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->reqid, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, p->ts);
    sqlite3_bind_text(st, 4, p->sh->model->cfg->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, p->chat ? "chat" : "completions", -1, SQLITE_STATIC);
    /* the worker kept prompt_max_bytes + SHADOW_PROMPT_SLACK of the prompt
     * and hashed the whole (shadow.c keep_prompt) */
    struct buf red = { 0 };
    bool cut = p->prompt_cut;
    redact(&red, p->prompt ? p->prompt : "", p->prompt_len);
    bind_bounded(st, 6, buf_data(&red) ? buf_data(&red) : "", buf_used(&red), cs->prompt_max_bytes, &cut);
    sqlite3_bind_text(st, 7, p->prompt_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 8, cut);
    int rc = sqlite3_step(st);
    buf_free(&red);
    if (rc != SQLITE_DONE)
        return -1;
    int64_t id = sqlite3_last_insert_rowid(R.db);
    for (int k = 0; k < LEG__COUNT; k++)
        if (p->leg[k].present && write_leg(id, k, &p->leg[k], p->prompt_bytes) < 0)
            return -1;
    if (p->leg[LEG_SHADOW].present && write_cmp(id, "shadow", p, LEG_SHADOW) < 0)
        return -1;
    if (p->leg[LEG_AA].present && write_cmp(id, "aa", p, LEG_AA) < 0)
        return -1;
    return 0;
}

static int add_counter(const char *shadow, const char *name, uint64_t delta)
{
    if (!delta)
        return 0;
    sqlite3_stmt *st = R.upd_counter;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, shadow, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)delta);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

/* Counters table += what happened since the last write.  Called inside the
 * batch's transaction, after the batch's pairs were counted as stored. */
static int persist_counters(void)
{
    for (size_t i = 0; i < R.gw->nshadows; i++) {
        struct shadow_rt *sh = &R.gw->shadows[i];
        struct persisted *t = &R.told[i], now;
        now.mirrored = atomic_load(&sh->mirrored);
        now.stored = atomic_load(&sh->stored);
        for (int d = 0; d < DROP__COUNT; d++)
            now.dropped[d] = atomic_load(&sh->dropped[d]);
        if (add_counter(sh->cfg->name, "mirrored", now.mirrored - t->mirrored) < 0 ||
            add_counter(sh->cfg->name, "stored", now.stored - t->stored) < 0)
            return -1;
        for (int d = 0; d < DROP__COUNT; d++) {
            char name[40];
            snprintf(name, sizeof name, "dropped_%s", shadow_drop_names[d]);
            if (add_counter(sh->cfg->name, name, now.dropped[d] - t->dropped[d]) < 0)
                return -1;
        }
        *t = now;
    }
    return 0;
}

static void write_batch(struct shadow_pair *pairs, struct rec_event *events)
{
    bool ok = sqlite3_exec(R.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    for (struct rec_event *e = events; ok && e; e = e->next) {
        sqlite3_stmt *st = R.ins_event;
        sqlite3_reset(st);
        sqlite3_bind_double(st, 1, e->ts);
        sqlite3_bind_text(st, 2, e->sh->cfg->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, e->kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, e->detail, -1, SQLITE_STATIC);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    size_t n = 0;
    for (struct shadow_pair *p = pairs; ok && p; p = p->next, n++)
        ok = write_pair(p) == 0;
    if (ok) {
        /* counted as stored before the commit that stores them: the
         * counters row goes into the same transaction */
        for (struct shadow_pair *p = pairs; p; p = p->next)
            atomic_fetch_add_explicit(&p->sh->stored, 1, memory_order_relaxed);
        ok = persist_counters() == 0 && sqlite3_exec(R.db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
        if (!ok)
            for (struct shadow_pair *p = pairs; p; p = p->next)
                atomic_fetch_sub_explicit(&p->sh->stored, 1, memory_order_relaxed);
    }
    if (!ok) {
        log_error("pair store %s: %s; %zu pair(s) dropped", R.gw->cfg->store.path, sqlite3_errmsg(R.db), n);
        sqlite3_exec(R.db, "ROLLBACK", NULL, NULL, NULL);
        for (struct shadow_pair *p = pairs; p; p = p->next)
            recorder_drop(p->sh, DROP_DB_ERROR);
        /* the told-counters may be ahead of the file now: re-sync next time */
        memset(R.told, 0, R.gw->nshadows * sizeof *R.told);
        for (size_t i = 0; i < R.gw->nshadows; i++) {
            R.told[i].mirrored = atomic_load(&R.gw->shadows[i].mirrored);
            R.told[i].stored = atomic_load(&R.gw->shadows[i].stored);
            for (int d = 0; d < DROP__COUNT; d++)
                R.told[i].dropped[d] = atomic_load(&R.gw->shadows[i].dropped[d]);
        }
    }
    uint64_t freed = 0;
    while (pairs) {
        struct shadow_pair *next = pairs->next;
        freed += pairs->weight;
        shadow_pair_free(pairs);
        pairs = next;
    }
    /* the bytes bound covers pairs being written too: released only now */
    pthread_mutex_lock(&R.lock);
    R.bytes -= freed;
    pthread_mutex_unlock(&R.lock);
    while (events) {
        struct rec_event *next = events->next;
        free(events);
        events = next;
    }
}

/* ---------------------------------------------------------------- retention */

/* Delete pairs older than retention_days (with their legs, comparisons and
 * judgements), a bounded batch per transaction so readers and a second
 * writer never wait long.  Counters are cumulative and stay. */
static void prune(void)
{
    uint32_t days = R.gw->cfg->store.retention_days;
    if (!days)
        return;
    double cutoff = unix_now() - (double)days * 86400.0;
    static const char *const sql[] = {
        "DELETE FROM legs WHERE pair_id IN (SELECT id FROM old)",
        "DELETE FROM comparisons WHERE pair_id IN (SELECT id FROM old)",
        "DELETE FROM judgements WHERE pair_id IN (SELECT id FROM old)",
        "DELETE FROM pairs WHERE id IN (SELECT id FROM old)",
    };
    uint64_t total = 0;
    for (int round = 0; round < 100; round++) {
        char *msg = NULL;
        char fill[200];
        snprintf(fill, sizeof fill,
                 "CREATE TEMP TABLE IF NOT EXISTS old (id INTEGER PRIMARY KEY); DELETE FROM old; "
                 "INSERT INTO old SELECT id FROM pairs WHERE ts < %.3f ORDER BY id LIMIT 5000", cutoff);
        if (sqlite3_exec(R.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            return;
        bool ok = sqlite3_exec(R.db, fill, NULL, NULL, &msg) == SQLITE_OK;
        int n = ok ? sqlite3_changes(R.db) : 0;
        for (int i = 0; ok && n > 0 && i < 4; i++)
            ok = sqlite3_exec(R.db, sql[i], NULL, NULL, &msg) == SQLITE_OK;
        if (!ok) {
            log_warn("pair store %s: retention: %s", R.gw->cfg->store.path, msg ? msg : sqlite3_errmsg(R.db));
            sqlite3_free(msg);
            sqlite3_exec(R.db, "ROLLBACK", NULL, NULL, NULL);
            return;
        }
        sqlite3_exec(R.db, "COMMIT", NULL, NULL, NULL);
        total += (uint64_t)n;
        if (n < 5000)
            break;
    }
    if (total)
        log_info("pair store %s: %llu pairs older than %u days deleted", R.gw->cfg->store.path,
                 (unsigned long long)total, days);
}

/* ---------------------------------------------------------------- analysis */

/* The live decision of one shadow: verdict.h's state over every pair since
 * the shadow's newest start, fed only the pairs stored since the last
 * analysis (report_feed), so an analysis costs the new pairs plus a report
 * of the newest LIVE_WINDOW pairs, however long the shadow has run. */
#define LIVE_WINDOW 20000
struct live {
    struct verdict_state vs;
    int64_t last_id;
    double start; /* the start the state counts from; -1 = not set up */
};

static void rules_of(const struct config_shadow *c, struct report_rules *r)
{
    report_rules_default(r);
    r->v.success_min = c->rec_success_min;
    r->v.latency_ratio_max = c->rec_latency_ratio_max;
    r->v.min_pairs = c->rec_min_pairs;
    r->v.alpha = r->v.alpha_ready = c->rec_alpha;
    r->v.latency_margin = c->rec_latency_margin;
    r->v.quality_margin = c->rec_quality_margin;
    r->v.stop_below = c->autostop_success_min;
    r->v.stop_alpha = c->autostop_alpha;
    r->v.stop_horizon = c->autostop_horizon;
}

static char *take(struct buf *b)
{
    buf_append(b, "", 1);
    char *s = b->p && b->off == 0 ? b->p : NULL;
    if (!s)
        buf_free(b);
    return s;
}

static void analyse(struct shadow_rt *sh, struct live *lv)
{
    const struct config_shadow *c = sh->cfg;
    struct report_rules rules;
    rules_of(c, &rules);
    /* a start (or resume) is a new analysis: the tests begin again */
    double start = 0;
    if (report_analysis_start(R.db, c->name, &start) < 0) {
        log_warn("shadow %s: analysis failed: %s", c->name, sqlite3_errmsg(R.db));
        return;
    }
    if (lv->start != start) {
        verdict_init(&lv->vs, &rules.v);
        lv->last_id = 0;
        lv->start = start;
    }
    if (report_feed(R.db, c->name, start, &lv->last_id, &lv->vs) < 0) {
        log_warn("shadow %s: analysis failed: %s", c->name, sqlite3_errmsg(R.db));
        return;
    }
    if (atomic_load(&sh->state) == SHADOW_RUNNING && c->autostop_success_min > 0 && lv->vs.stop_n &&
        lv->vs.n >= c->autostop_min_pairs) {
        char why[256];
        snprintf(why, sizeof why,
                 "auto-stop: shadow success fell below %.1f%% (CUSUM over %llu pairs since start; a "
                 "candidate at the bar is stopped within %.0f pairs with chance <= %g)",
                 100.0 * c->autostop_success_min, (unsigned long long)lv->vs.n, c->autostop_horizon,
                 c->autostop_alpha);
        recorder_set_state(sh, SHADOW_STOPPED, "auto_stop", why);
    }
    /* the decision over every pair since the start; the tables over the
     * newest LIVE_WINDOW of them */
    struct report_query q = { .shadow = c->name, .since = 0, .worst = 3, .max_pairs = LIVE_WINDOW,
                              .from_start = true, .decided = &lv->vs };
    struct buf js = { 0 }, tx = { 0 };
    char err[256];
    static const enum report_format fs[2] = { REPORT_JSON, REPORT_TEXT };
    struct buf *outs[2] = { &js, &tx };
    if (report_render_formats(R.db, &q, &rules, fs, outs, 2, err, sizeof err) < 0) {
        if (!strstr(err, "no shadow named")) /* nothing stored yet is not a failure */
            log_warn("shadow %s: analysis failed: %s", c->name, err);
        buf_free(&js);
        buf_free(&tx);
        return;
    }
    char *j = take(&js), *t = take(&tx);
    struct verdict v;
    verdict_decide(&lv->vs, &v);
    pthread_mutex_lock(&sh->lock);
    snprintf(sh->live_rule, sizeof sh->live_rule, "%s", v.rule);
    atomic_store(&sh->live_action, 1 + (int)v.action);
    free(sh->live_json);
    free(sh->live_text);
    sh->live_json = j;
    sh->live_text = t;
    sh->live_at = unix_now();
    pthread_mutex_unlock(&sh->lock);
}

/* ---------------------------------------------------------------- thread */

static void *writer_main(void *arg)
{
    pthread_mutex_lock(&R.lock);
    for (;;) {
        double now = unix_now(), next = R.next_prune;
        for (size_t i = 0; i < R.gw->nshadows; i++)
            if (R.next_analysis[i] < next)
                next = R.next_analysis[i];
        if (!R.head && !R.events && !R.stop)
            cond_wait_for(&R.cond, &R.lock, next - now);
        struct shadow_pair *pairs = R.head;
        struct rec_event *events = R.events;
        R.head = R.tail = NULL;
        R.n = 0;
        R.events = R.events_tail = NULL;
        bool stop = R.stop;
        pthread_mutex_unlock(&R.lock);
        if (pairs || events)
            write_batch(pairs, events);
        now = unix_now();
        if (!stop && now >= R.next_prune) {
            prune();
            R.next_prune = now + 3600;
        }
        for (size_t i = 0; i < R.gw->nshadows && !stop; i++) {
            if (R.next_analysis[i] > now)
                continue;
            /* nothing new since the last analysis: nothing to redo */
            uint64_t st = atomic_load(&R.gw->shadows[i].stored) + 1;
            if (R.analysed_at[i] != st) {
                analyse(&R.gw->shadows[i], &R.live[i]);
                R.analysed_at[i] = st;
            }
            R.next_analysis[i] = unix_now() + (double)R.gw->shadows[i].cfg->analysis_interval_ms / 1000.0;
        }
        pthread_mutex_lock(&R.lock);
        if (stop && !R.head && !R.events)
            break;
    }
    pthread_mutex_unlock(&R.lock);
    return NULL;
}

/* ---------------------------------------------------------------- start / stop */

static int prepare(const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(R.db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK ? 0 : -1;
}

/* A state set at run time (admin API, auto-stop) outlives the process: the
 * newest event of each shadow wins over the configured initial state. */
static void restore_states(void)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(R.db, "SELECT kind, detail FROM events WHERE shadow = ? ORDER BY ts DESC, rowid DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    for (size_t i = 0; i < R.gw->nshadows; i++) {
        struct shadow_rt *sh = &R.gw->shadows[i];
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, sh->cfg->name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
            continue;
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        const char *detail = (const char *)sqlite3_column_text(st, 1);
        int state = !kind ? -1 : !strcmp(kind, "start") ? SHADOW_RUNNING : !strcmp(kind, "pause") ? SHADOW_PAUSED
                                                                                                   : SHADOW_STOPPED;
        if (state < 0)
            continue;
        atomic_store(&sh->state, state);
        snprintf(sh->reason, sizeof sh->reason, "restored from the pair store: %s%s%s", kind,
                 detail && *detail ? ": " : "", detail ? detail : "");
        if (state != SHADOW_RUNNING)
            log_warn("shadow %s is %s (%s); POST /admin/shadows/%s/start resumes it", sh->cfg->name,
                     shadow_state_names_rt[state], sh->reason, sh->cfg->name);
    }
    sqlite3_finalize(st);
}

static void close_all(void)
{
    sqlite3_finalize(R.ins_pair);
    sqlite3_finalize(R.ins_leg);
    sqlite3_finalize(R.ins_cmp);
    sqlite3_finalize(R.ins_event);
    sqlite3_finalize(R.upd_counter);
    if (R.db) {
        sqlite3_wal_checkpoint_v2(R.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        sqlite3_close(R.db);
    }
    redactor_free(&R.red);
    free(R.told);
    free(R.next_analysis);
    free(R.analysed_at);
    free(R.live);
    pthread_mutex_destroy(&R.lock);
    pthread_cond_destroy(&R.cond);
    memset(&R, 0, sizeof R);
}

int recorder_start(struct gateway *gw, char *err, size_t errlen)
{
    if (!gw->nshadows)
        return 0;
    const struct config_store *cs = &gw->cfg->store;
    memset(&R, 0, sizeof R);
    R.gw = gw;
    R.cap = cs->queue_size;
    R.max_bytes = cs->queue_max_bytes;
    pthread_mutex_init(&R.lock, NULL);
    pthread_cond_init(&R.cond, NULL);
    R.told = calloc(gw->nshadows, sizeof *R.told);
    R.next_analysis = calloc(gw->nshadows, sizeof *R.next_analysis);
    R.analysed_at = calloc(gw->nshadows, sizeof *R.analysed_at);
    R.live = calloc(gw->nshadows, sizeof *R.live);
    for (size_t i = 0; R.live && i < gw->nshadows; i++)
        R.live[i].start = -1;
    if (!R.told || !R.next_analysis || !R.analysed_at || !R.live) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    char rerr[400];
    if (redactor_init(&R.red, cs->redact, cs->nredact, rerr, sizeof rerr) < 0) {
        snprintf(err, errlen, "%s: %s", gw->cfg->path, rerr);
        goto fail;
    }
    if (sqlite3_open_v2(cs->path, &R.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "pair store %s: %s", cs->path, R.db ? sqlite3_errmsg(R.db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(R.db, 5000);
    char pragmas[200];
    snprintf(pragmas, sizeof pragmas, "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;",
             cs->synchronous ? "FULL" : "NORMAL");
    char *msg = NULL;
    if (sqlite3_exec(R.db, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(R.db, STORE_SCHEMA_SQL, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(R.db, "INSERT OR IGNORE INTO meta VALUES ('schema_version', '1')", NULL, NULL, &msg) !=
            SQLITE_OK) {
        snprintf(err, errlen, "pair store %s: %s", cs->path, msg ? msg : sqlite3_errmsg(R.db));
        sqlite3_free(msg);
        goto fail;
    }
    if (prepare("INSERT INTO pairs (shadow, request_id, ts, model, endpoint, prompt, prompt_hash, prompt_truncated) "
                "VALUES (?,?,?,?,?,?,?,?)", &R.ins_pair) < 0 ||
        prepare("INSERT INTO legs (pair_id, leg, target, backend, upstream_model, streamed, status, error, "
                "latency_ms, ttft_ms, itl_ms, itl_max_ms, tokens_in, tokens_out, tokens_exact, cost_usd, "
                "finish_reason, response, response_truncated, tool_calls) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", &R.ins_leg) < 0 ||
        prepare("INSERT INTO comparisons (pair_id, against, status_agree, finish_agree, exact, edit_sim, rouge_l, "
                "length_ratio, json_valid, json_same, tool_agree, refusal_primary, refusal_other) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", &R.ins_cmp) < 0 ||
        prepare("INSERT INTO events (ts, shadow, kind, detail) VALUES (?,?,?,?)", &R.ins_event) < 0 ||
        prepare("INSERT INTO counters (shadow, name, value) VALUES (?,?,?) "
                "ON CONFLICT (shadow, name) DO UPDATE SET value = value + excluded.value", &R.upd_counter) < 0) {
        snprintf(err, errlen, "pair store %s: %s", cs->path, sqlite3_errmsg(R.db));
        goto fail;
    }
    restore_states();
    double now = unix_now();
    for (size_t i = 0; i < gw->nshadows; i++)
        R.next_analysis[i] = now + (double)gw->shadows[i].cfg->analysis_interval_ms / 1000.0;
    R.running = true;
    if (pthread_create(&R.thread, NULL, writer_main, NULL) != 0) {
        R.running = false;
        snprintf(err, errlen, "cannot start the pair store's writer thread");
        goto fail;
    }
    log_info("pair store %s: %zu shadow%s recorded", cs->path, gw->nshadows, gw->nshadows == 1 ? "" : "s");
    return 0;
fail:
    close_all();
    return -1;
}

void recorder_stop(void)
{
    if (!R.running)
        return;
    pthread_mutex_lock(&R.lock);
    R.stop = true;
    pthread_cond_signal(&R.cond);
    pthread_mutex_unlock(&R.lock);
    pthread_join(R.thread, NULL);
    /* the last counters (drops at shutdown happen after the last batch) */
    if (sqlite3_exec(R.db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK) {
        if (persist_counters() == 0)
            sqlite3_exec(R.db, "COMMIT", NULL, NULL, NULL);
        else
            sqlite3_exec(R.db, "ROLLBACK", NULL, NULL, NULL);
    }
    log_info("pair store %s: flushed and closed", R.gw->cfg->store.path);
    R.running = false;
    close_all();
}
