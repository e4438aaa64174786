/* rollout.c — progressive delivery (rollout.h): the routing module, the
 * controller thread, the store, the admin API and `shade rollout`. */
#include "rollout.h"
#include "keys.h"

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

#include "answer.h"
#include "bg.h"
#include "buf.h"
#include "canary.h"
#include "compare.h"
#include "gateway.h"
#include "hclient.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "module.h"
#include "pair.h"
#include "rand.h"
#include "redact.h"
#include "router.h"
#include "sample.h"
#include "side.h"
#include "verdict.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* what the workers count, since the serving process started */
enum {
    RC_BASE_REQ, RC_CAN_REQ, RC_BASE_FAIL, RC_CAN_FAIL, RC_LAT_SLOW, RC_LAT_OTHER,
    RC_LAT_FAST, RC_LAT_NOTFAST, RC_TTFT_SLOW, RC_TTFT_OTHER, RC_BASE_UNITS, RC_CAN_UNITS, RC_COST_HIGH,
    RC_COST_OTHER,
    RC_COUNTS_V1, /* the counts a stored check had before refusals and quality */
    RC_BASE_REFUSAL = RC_COUNTS_V1, RC_CAN_REFUSAL, RC_QUAL_WORSE, RC_QUAL_OTHER,
    RC_JUDGE_LOSS, RC_JUDGE_WIN, /* after the judge gate came (older checks: 0) */
    RC_COUNTS, /* = canary_counts */
    RC_NOUNIT = RC_COUNTS, RC__N
};

/* the quality gate's samples: what became of them (not decision counts;
 * sample.h's SS_ counters, named for the rollout's arms) */
static const char *const rq_names[SS__N] = { "sampled", "paired", "dropped_cap", "dropped_baseline_failed",
                                             "dropped_canary_failed", "dropped_queue_full" };
/* the judge's outcomes of the rollout's pairs, as the controller read them */
enum { RJ_LOSS, RJ_WIN, RJ_TIE, RJ_INCONSISTENT, RJ_ERROR, RJ__N };
static const char *const rj_names[RJ__N] = { "loss", "win", "tie", "inconsistent", "error" };
/* judgements read per check, at most */
#define JUDGE_READ_MAX 10000

/* units seen in the current step, for the split test on new units: an
 * open-addressing set of their 64-bit hashes; once 3/4 full, later new units
 * are not counted (the split test then rests on the first ~98,000) */
#define UNIT_SET (1u << 17)

/* admin commands, applied by the controller (so every change of state is
 * one stored check, in order) */
enum { CMD_NONE, CMD_PAUSE, CMD_RESUME, CMD_PROMOTE, CMD_ROLLBACK };
static const char *const cmd_names[] = { "", "pause", "resume", "promote", "rollback" };

struct rollout_rt {
    const struct config_rollout *cfg;
    struct model_rt *base, *cand;
    struct canary_rules rules;
    char fingerprint[1024];         /* the rules as JSON: a changed config is a new rollout */
    _Atomic uint32_t share_bp;      /* canary share in basis points: read by every worker */
    _Atomic int phase;              /* enum canary_phase */
    _Atomic uint64_t cnt[RC__N];
    _Atomic uint64_t decisions[5];  /* by canary action */
    pthread_mutex_t lock;           /* the pairing buffer, st, reason, cmd */
    struct rollout_pairs pairs;     /* newest unpaired baseline answers */
    uint64_t *units;                /* [UNIT_SET] hashes (0 = empty) of this step's units */
    size_t nunits;
    size_t units_step;              /* the step (and phase) they belong to */
    double units_started;           /* and its start */
    struct canary_state st;
    uint64_t given[RC_COUNTS];      /* counts already handed to st (controller only) */
    char reason[600];
    double decided_at;
    int cmd;                        /* pending admin command */
    double next_check;
    struct shadow_rt *shadow;       /* the shadow stage's shadow, or NULL */
    struct hook { struct hc_url url; struct hc_addrs addrs; bool on; } webhook, confirm;
    /* refusals and the quality gate */
    struct cmp_opts refusal_opts;   /* the rollout's patterns (refusal_patterns NULL: the defaults) */
    struct side_sampler qs;         /* the quality samples (sample.h): two legs to the baseline */
    /* the judge gate (controller only, stored with the state) */
    int64_t judge_seen;             /* rollout_judgements.id read up to */
    int64_t pair_floor;             /* this run's pairs have ids above it */
    _Atomic uint64_t jcnt[RJ__N];   /* outcomes read since the process started */
};

static struct {
    struct bg t;                    /* the controller thread */
    sqlite3 *db;
    struct gateway *gw;
    struct redactor red;            /* shadow_store.redact, for the quality samples */
} C = { .t = BG_INIT };

static void set_share(struct rollout_rt *ro)
{
    double s = canary_share(&ro->st, &ro->rules);
    atomic_store(&ro->share_bp, (uint32_t)llround(s * 100));
    atomic_store(&ro->phase, (int)ro->st.phase);
}

/* ================================================================ module */

/* a quality sample's answers (sample.h): the canary's, the baseline's, the baseline's again */
enum { QS_CANARY, QS_BASE, QS_NOISE, QS__N };

struct ro_ctx {
    struct rollout_rt *ro; /* NULL: the model has no rollout */
    bool canary;
    struct shadow_answer *ans; /* the answer, read for refusals and the quality sample; NULL: not read */
    struct side_sample *qs;    /* a quality sample, NULL: not sampled */
};

bool rollout_unit(const struct pl_req *q, int unit, const char *unit_header, const char **u, size_t *ul)
{
    *u = NULL;
    *ul = 0;
    if (unit == ROLLOUT_UNIT_USER) {
        struct json_span v;
        if (json_get(&q->root, "user", &v) && v.type == JSON_STRING && v.len > 2)
            *u = v.p, *ul = v.len;
    } else if (unit == ROLLOUT_UNIT_KEY && q->key) {
        /* an authenticated key: its id, which a rotation keeps (the secret changes) */
        *u = q->key->id, *ul = strlen(q->key->id);
    } else {
        const char *name = unit == ROLLOUT_UNIT_HEADER ? unit_header : "authorization";
        const struct http_hdr *h = http_req_header(q->http, name);
        if (!h && unit == ROLLOUT_UNIT_KEY)
            h = http_req_header(q->http, "api-key");
        if (!h && unit == ROLLOUT_UNIT_KEY)
            h = http_req_header(q->http, "x-api-key");
        if (h && h->value_len)
            *u = h->value, *ul = h->value_len;
    }
    if (*u)
        return true;
    *u = q->http->reqid;
    *ul = q->http->reqid_len;
    return false;
}

static enum pl_rc rollout_request(struct pl_req *q, void *ctx)
{
    struct ro_ctx *c = ctx;
    struct rollout_rt *ro = q->m0 ? q->m0->rollout : NULL;
    if (!ro)
        return PL_NEXT;
    const struct config_rollout *cfg = ro->cfg;
    const char *u;
    size_t ul;
    if (!rollout_unit(q, cfg->unit, cfg->unit_header, &u, &ul)) /* no unit: not sticky, counted */
        atomic_fetch_add_explicit(&ro->cnt[RC_NOUNIT], 1, memory_order_relaxed);
    uint32_t b = canary_bucket(cfg->salt, strlen(cfg->salt), u, ul);
    c->ro = ro;
    c->canary = b < atomic_load_explicit(&ro->share_bp, memory_order_relaxed);
    q->rollout = cfg->name;
    q->variant = c->canary ? "canary" : "baseline";
    /* a unit new to this step: counted for the split test */
    uint64_t h = rnd_mix64(rnd_fnv1a64(RND_FNV1A64_INIT, u, ul)) | 1;
    bool fresh = false;
    pthread_mutex_lock(&ro->lock);
    if (ro->units && ro->nunits < UNIT_SET / 4 * 3) {
        size_t i = (size_t)(h & (UNIT_SET - 1));
        while (ro->units[i] && ro->units[i] != h)
            i = (i + 1) & (UNIT_SET - 1);
        if (!ro->units[i]) {
            ro->units[i] = h;
            ro->nunits++;
            fresh = true;
        }
    }
    pthread_mutex_unlock(&ro->lock);
    if (fresh)
        atomic_fetch_add_explicit(&ro->cnt[c->canary ? RC_CAN_UNITS : RC_BASE_UNITS], 1, memory_order_relaxed);
    if (c->canary) {
        /* served as the candidate model: its pool, limits, fallbacks and
         * metrics; upstream it is named as the candidate */
        q->m0 = q->m = ro->cand;
        q->renamed = true;
    }
    /* during the canary: the answer is read for refusals (both arms), and a
     * sample of canary requests is also sent to the baseline */
    if (atomic_load_explicit(&ro->phase, memory_order_relaxed) == CP_CANARY &&
        (q->ep == EP_CHAT || q->ep == EP_COMPLETIONS)) {
        if (c->canary && cfg->quality_sample_percent > 0 && side_sample_pick(q->w, cfg->quality_sample_percent))
            c->qs = side_sample_admit(&ro->qs, q, 0);
        if (cfg->refusals || c->qs) {
            c->ans = malloc(sizeof *c->ans);
            if (c->ans)
                shadow_answer_init(c->ans, q->w->gw->cfg->store.response_max_bytes);
        }
    }
    return PL_NEXT;
}

/* Once the canary request is on the wire: its baseline legs (the user's
 * request never waits for them). */
static void rollout_sent(struct pl_req *q, void *ctx)
{
    struct ro_ctx *c = ctx;
    if (c->qs)
        side_sample_start(q, c->qs);
}

static void rollout_event(struct pl_req *q, void *ctx, const struct pl_event *ev)
{
    struct ro_ctx *c = ctx;
    side_sample_event(c->ans, ev);
}

void rollout_observe(const struct pl_req *q, const struct pl_outcome *o, struct rollout_obs *x)
{
    x->ok = o->status >= 200 && o->status < 300 && !o->err_kind;
    x->timeout = o->err_kind && (strcmp(o->err_kind, "timeout") == 0 || strcmp(o->err_kind, "deadline") == 0);
    x->lat = (double)(mono_ns() - q->http->t_start_ns) / 1e6;
    x->ttft = o->is_sse && o->t_first_token ? (double)(o->t_first_token - q->http->t_start_ns) / 1e6 : NAN;
    x->cost = x->ok && o->cost_usd >= 0 ? o->cost_usd : NAN;
}

void rollout_pairs_push(struct rollout_pairs *p, const struct rollout_pair *x)
{
    size_t i = (p->head + p->n) % ROLLOUT_PAIR_BUF;
    if (p->n == ROLLOUT_PAIR_BUF)
        p->head = (p->head + 1) % ROLLOUT_PAIR_BUF; /* the oldest goes */
    else
        p->n++;
    p->e[i] = *x;
}

bool rollout_pairs_pop(struct rollout_pairs *p, struct rollout_pair *x)
{
    if (!p->n)
        return false;
    *x = p->e[(p->head + p->n - 1) % ROLLOUT_PAIR_BUF];
    p->n--;
    return true;
}

static void rollout_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct ro_ctx *c = ctx;
    struct rollout_rt *ro = c->ro;
    struct shadow_answer *ans = c->ans;
    c->ans = NULL;
    bool answered = ans && !o->aborted && o->status >= 200 && o->status < 300 && !o->err_kind && !o->body_too_large;
    if (ans) {
        if (o->answer_gap)
            shadow_answer_gap(ans);
        shadow_answer_finish_stream(ans);
    }
    bool refused = answered && ro->cfg->refusals &&
                   compare_is_refusal(buf_data(&ans->text), buf_used(&ans->text), &ro->refusal_opts);
    if (c->qs) {
        struct side_sample *qs = c->qs;
        c->qs = NULL;
        side_sample_finish(qs, answered ? ans : NULL, o->aborted);
        if (answered)
            ans = NULL; /* moved */
    }
    if (ans) {
        shadow_answer_free(ans);
        free(ans);
    }
    if (!ro || o->aborted) /* a client that left says nothing about either arm */
        return;
    struct rollout_obs x;
    rollout_observe(q, o, &x);
    bool ok = x.ok, timeout = x.timeout;
    double lat = x.lat, ttft = x.ttft;
    atomic_fetch_add_explicit(&ro->cnt[c->canary ? RC_CAN_REQ : RC_BASE_REQ], 1, memory_order_relaxed);
    if (!ok)
        atomic_fetch_add_explicit(&ro->cnt[c->canary ? RC_CAN_FAIL : RC_BASE_FAIL], 1, memory_order_relaxed);
    if (ok && refused)
        atomic_fetch_add_explicit(&ro->cnt[c->canary ? RC_CAN_REFUSAL : RC_BASE_REFUSAL], 1, memory_order_relaxed);
    const struct canary_rules *r = &ro->rules;
    struct rollout_pair b;
    pthread_mutex_lock(&ro->lock);
    if (!c->canary) {
        if (ok) /* the newest baseline answer waits for the next canary one */
            rollout_pairs_push(&ro->pairs, &(struct rollout_pair){ lat, ttft, x.cost });
        pthread_mutex_unlock(&ro->lock);
        return;
    }
    bool paired = (ok || timeout) && rollout_pairs_pop(&ro->pairs, &b);
    pthread_mutex_unlock(&ro->lock);
    if (!paired)
        return;
    double bl = b.lat, bt = b.ttft;
    bool slow = timeout || lat > r->latency_margin * bl, fast = ok && lat < r->latency_ratio_max * bl;
    atomic_fetch_add_explicit(&ro->cnt[slow ? RC_LAT_SLOW : RC_LAT_OTHER], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ro->cnt[fast ? RC_LAT_FAST : RC_LAT_NOTFAST], 1, memory_order_relaxed);
    if (isfinite(bt) && (isfinite(ttft) || timeout)) {
        bool tslow = timeout || ttft > r->latency_margin * bt;
        atomic_fetch_add_explicit(&ro->cnt[tslow ? RC_TTFT_SLOW : RC_TTFT_OTHER], 1, memory_order_relaxed);
    }
    /* cost per request, when both are priced (a model without prices costs 0) */
    if (isfinite(x.cost) && isfinite(b.cost) && b.cost > 0)
        atomic_fetch_add_explicit(&ro->cnt[x.cost > r->cost_margin * b.cost ? RC_COST_HIGH : RC_COST_OTHER], 1,
                                  memory_order_relaxed);
}

/* x-shade-variant: the arm, when the rollout asks for it */
static void rollout_head(struct pl_req *q, void *ctx, const struct pl_head *h)
{
    struct ro_ctx *c = ctx;
    if (c->ro && c->ro->cfg->variant_header)
        pl_head_add(h, "x-shade-variant", c->canary ? "canary" : "baseline", c->canary ? 6 : 8);
}

/* ================================================================ store */

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS rollout_state (\n"
    "  rollout TEXT PRIMARY KEY,\n"
    "  ts REAL NOT NULL,\n"            /* last written */
    "  fingerprint TEXT NOT NULL,\n"   /* the rules (JSON): another config = another rollout */
    "  state TEXT NOT NULL\n"          /* canary_state as JSON */
    ");\n"
    "CREATE TABLE IF NOT EXISTS rollout_checks (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  rollout TEXT NOT NULL,\n"
    "  ts REAL NOT NULL,\n"            /* the time the check used */
    "  fingerprint TEXT NOT NULL,\n"
    "  counts TEXT NOT NULL,\n"        /* what finished since the previous check: JSON array */
    "  action TEXT,\n"                 /* NULL | start | advance | promote | rollback | freeze | */
                                       /* manual_pause | manual_resume | manual_promote | manual_rollback */
    "  share REAL NOT NULL,\n"         /* the canary share after it, percent */
    "  phase TEXT NOT NULL,\n"
    "  reason TEXT\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS rollout_checks_rollout ON rollout_checks(rollout, id);\n"
    /* the quality gate's paired samples: the canary's answer, the baseline's
     * (the reference) and the baseline's again (the noise floor) */
    "CREATE TABLE IF NOT EXISTS rollout_pairs (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  rollout TEXT NOT NULL,\n"
    "  ts REAL NOT NULL,\n"
    "  request_id TEXT,\n"
    "  d REAL NOT NULL,\n"            /* agreement(baseline, canary) - agreement(baseline, noise) */
    "  worse INTEGER NOT NULL,\n"     /* d < -quality_margin */
    "  scores TEXT NOT NULL,\n"       /* per comparator: [against the canary, against the noise] */
    "  canary TEXT, baseline TEXT, noise TEXT,\n"
    "  prompt TEXT\n"                 /* the request (messages or prompt JSON), bounded; added later: */
    ");\n"                              /* rollout_start adds it to older stores */
    "CREATE INDEX IF NOT EXISTS rollout_pairs_rollout ON rollout_pairs(rollout, id);\n"
    /* the judge's verdicts on a sample of those pairs (judge.c): order1
     * shows the baseline as A and the canary as B, order2 swapped; outcome
     * is the canary's (win, loss, tie, inconsistent, error) */
    "CREATE TABLE IF NOT EXISTS rollout_judgements (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  pair_id INTEGER NOT NULL UNIQUE,\n"
    "  rollout TEXT NOT NULL,\n"
    "  judge TEXT NOT NULL,\n"
    "  order1 TEXT, order2 TEXT,\n"
    "  outcome TEXT NOT NULL,\n"
    "  ts REAL NOT NULL\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS rollout_judgements_rollout ON rollout_judgements(rollout, id);\n";

static void fingerprint(const struct config_rollout *cfg, const struct canary_rules *r, char *out, size_t cap)
{
    int k = snprintf(out, cap,
                     "{\"candidate\":\"%s\",\"shadow\":%s,\"alpha\":%.17g,\"alpha_promote\":%.17g,\"latency_margin\":%.17g,"
                     "\"latency_ratio_max\":%.17g,\"cost_margin\":%.17g,\"success_min\":%.17g,\"srm_alpha\":%.17g,\"on_failure\":%d,"
                     "\"refusals\":%s,\"quality\":%s,\"quality_margin\":%.17g,%s\"steps\":[",
                     cfg->candidate, cfg->shadow ? "true" : "false", r->alpha_rollback, r->alpha_promote, r->latency_margin, r->latency_ratio_max,
                     r->cost_margin, r->success_min, r->srm_alpha, cfg->on_failure, r->refusals ? "true" : "false",
                     r->quality ? "true" : "false", r->quality_margin,
                     /* only when on: a rollout without a judge keeps the fingerprint it had before */
                     r->judge ? "\"judge\":true," : "");
    for (size_t i = 0; i < r->nsteps && k > 0 && (size_t)k < cap; i++)
        k += snprintf(out + k, cap - (size_t)k, "%s[%.17g,%.17g,%llu]", i ? "," : "", r->steps[i].share,
                      r->steps[i].min_seconds, (unsigned long long)r->steps[i].min_requests);
    if (k > 0 && (size_t)k < cap)
        snprintf(out + k, cap - (size_t)k, "]}");
}

/* The rules back from a fingerprint (replay needs no config file). */
static int rules_of_fingerprint(const char *fp, struct canary_rules *r, int *on_failure, bool *shadow)
{
    struct json_span root, v, steps, st, e;
    struct json_error je;
    if (json_validate(fp, strlen(fp), &root, &je) < 0 || root.type != JSON_OBJECT)
        return -1;
    canary_rules_default(r);
    static const char *const keys[] = { "alpha", "alpha_promote", "latency_margin", "latency_ratio_max",
                                        "cost_margin", "success_min", "srm_alpha" };
    double *dst[] = { &r->alpha_rollback, &r->alpha_promote, &r->latency_margin, &r->latency_ratio_max,
                      &r->cost_margin, &r->success_min, &r->srm_alpha };
    for (int i = 0; i < 7; i++)
        if (!json_get(&root, keys[i], &v) || !json_to_double(&v, dst[i]))
            return -1;
    int64_t of = 0;
    if (!json_get(&root, "on_failure", &v) || !json_to_i64(&v, &of))
        return -1;
    *on_failure = (int)of;
    *shadow = json_get(&root, "shadow", &v) && v.type == JSON_TRUE;
    /* stored before the refusal and quality gates: neither was tested */
    r->refusals = json_get(&root, "refusals", &v) && v.type == JSON_TRUE;
    r->quality = json_get(&root, "quality", &v) && v.type == JSON_TRUE;
    r->judge = json_get(&root, "judge", &v) && v.type == JSON_TRUE; /* absent: off */
    if (json_get(&root, "quality_margin", &v) && !json_to_double(&v, &r->quality_margin))
        return -1;
    if (!json_get(&root, "steps", &steps) || steps.type != JSON_ARRAY)
        return -1;
    r->nsteps = 0;
    for (size_t i = 0; json_next(&steps, &i, NULL, &st) && r->nsteps < CANARY_MAX_STEPS;) {
        double x[3];
        size_t j = 0;
        for (size_t k = 0; k < 3 && json_next(&st, &j, NULL, &e); k++)
            if (!json_to_double(&e, &x[k]))
                return -1;
        r->steps[r->nsteps++] = (struct canary_step){ x[0], x[1], (uint64_t)x[2] };
    }
    return r->nsteps ? 0 : -1;
}

static void counts_json(const uint64_t *c, char *out, size_t cap)
{
    int k = snprintf(out, cap, "[");
    for (int i = 0; i < RC_COUNTS && k > 0 && (size_t)k < cap; i++)
        k += snprintf(out + k, cap - (size_t)k, "%s%llu", i ? "," : "", (unsigned long long)c[i]);
    if (k > 0 && (size_t)k < cap)
        snprintf(out + k, cap - (size_t)k, "]");
}

static int counts_parse(const char *s, uint64_t *c)
{
    struct json_span root, e;
    struct json_error je;
    if (json_validate(s, strlen(s), &root, &je) < 0 || root.type != JSON_ARRAY)
        return -1;
    size_t i = 0, k = 0;
    int64_t x;
    for (; k < RC_COUNTS && json_next(&root, &i, NULL, &e); k++) {
        if (!json_to_i64(&e, &x) || x < 0)
            return -1;
        c[k] = (uint64_t)x;
    }
    if (k < RC_COUNTS_V1)
        return -1;
    for (; k < RC_COUNTS; k++) /* a check stored before refusals, quality or the judge */
        c[k] = 0;
    return 0;
}

static void to_counts(const uint64_t *c, struct canary_counts *d)
{
    *d = (struct canary_counts){ c[RC_BASE_REQ], c[RC_CAN_REQ], c[RC_BASE_FAIL], c[RC_CAN_FAIL], c[RC_LAT_SLOW],
                                 c[RC_LAT_OTHER], c[RC_LAT_FAST], c[RC_LAT_NOTFAST], c[RC_TTFT_SLOW],
                                 c[RC_TTFT_OTHER], c[RC_BASE_UNITS], c[RC_CAN_UNITS], c[RC_COST_HIGH],
                                 c[RC_COST_OTHER], c[RC_BASE_REFUSAL], c[RC_CAN_REFUSAL], c[RC_QUAL_WORSE],
                                 c[RC_QUAL_OTHER], c[RC_JUDGE_LOSS], c[RC_JUDGE_WIN] };
}

static void from_counts(const struct canary_counts *d, uint64_t *c)
{
    const uint64_t v[RC_COUNTS] = { d->base_req, d->can_req, d->base_fail, d->can_fail, d->lat_slow,
                                    d->lat_other, d->lat_fast, d->lat_notfast, d->ttft_slow, d->ttft_other,
                                    d->base_units, d->can_units, d->cost_high, d->cost_other,
                                    d->base_refusal, d->can_refusal, d->qual_worse, d->qual_other,
                                    d->judge_loss, d->judge_win };
    memcpy(c, v, sizeof v);
}

static void state_json(const struct canary_state *s, int64_t judge_seen, int64_t pair_floor, struct buf *b)
{
    uint64_t cur[RC_COUNTS], tot[RC_COUNTS];
    char cc[512], tc[512];
    from_counts(&s->cur, cur);
    from_counts(&s->total, tot);
    counts_json(cur, cc, sizeof cc);
    counts_json(tot, tc, sizeof tc);
    buf_printf(b, "{\"phase\":%d,\"step\":%zu,\"step_started\":%.17g,\"checks\":%llu,\"cur\":%s,\"total\":%s",
               (int)s->phase, s->step, s->step_started, (unsigned long long)s->checks, cc, tc);
    const char *names[2] = { "log_carry", "log_e_max" };
    const double *v[2] = { s->log_carry, s->log_e_max };
    for (int k = 0; k < 2; k++) {
        buf_printf(b, ",\"%s\":[", names[k]);
        for (int f = 0; f < CANARY_FAMILIES; f++)
            buf_printf(b, "%s%.17g", f ? "," : "", v[k][f]);
        buf_append_str(b, "]");
    }
    /* the judge gate's place in the store (the judge reads pair_floor) */
    buf_printf(b, ",\"judge_seen\":%lld,\"pair_floor\":%lld}", (long long)judge_seen, (long long)pair_floor);
}

/* judge_seen and pair_floor of a stored state (0 when stored before) */
static void state_parse_judge(const char *js, int64_t *judge_seen, int64_t *pair_floor)
{
    struct json_span root, v;
    *judge_seen = *pair_floor = 0;
    if (json_validate(js, strlen(js), &root, NULL) < 0 || root.type != JSON_OBJECT)
        return;
    if (json_get(&root, "judge_seen", &v) && !json_to_i64(&v, judge_seen))
        *judge_seen = 0;
    if (json_get(&root, "pair_floor", &v) && !json_to_i64(&v, pair_floor))
        *pair_floor = 0;
}

static int state_parse(const char *js, struct canary_state *s)
{
    struct json_span root, v, e;
    struct json_error je;
    if (json_validate(js, strlen(js), &root, &je) < 0 || root.type != JSON_OBJECT)
        return -1;
    memset(s, 0, sizeof *s);
    int64_t x;
    if (!json_get(&root, "phase", &v) || !json_to_i64(&v, &x) || x < 0 || x > CP_SHADOW)
        return -1;
    s->phase = (enum canary_phase)x;
    if (!json_get(&root, "step", &v) || !json_to_i64(&v, &x) || x < 0 || x >= CANARY_MAX_STEPS)
        return -1;
    s->step = (size_t)x;
    if (!json_get(&root, "checks", &v) || !json_to_i64(&v, &x) || x < 0)
        return -1;
    s->checks = (uint64_t)x;
    if (!json_get(&root, "step_started", &v) || !json_to_double(&v, &s->step_started))
        return -1;
    uint64_t c[RC_COUNTS];
    char tmp[1024];
    const char *names[2] = { "cur", "total" };
    struct canary_counts *dst[2] = { &s->cur, &s->total };
    for (int k = 0; k < 2; k++) {
        if (!json_get(&root, names[k], &v) || v.len >= sizeof tmp)
            return -1;
        memcpy(tmp, v.p, v.len);
        tmp[v.len] = 0;
        if (counts_parse(tmp, c) < 0)
            return -1;
        to_counts(c, dst[k]);
    }
    const char *arr[2] = { "log_carry", "log_e_max" };
    double *ad[2] = { s->log_carry, s->log_e_max };
    for (int k = 0; k < 2; k++) {
        if (!json_get(&root, arr[k], &v) || v.type != JSON_ARRAY)
            return -1;
        size_t i = 0;
        for (int f = 0; f < CANARY_FAMILIES; f++) {
            if (!json_next(&v, &i, NULL, &e)) {
                if (f < CF_REFUSALS)
                    return -1;
                break; /* a state stored before refusals and quality */
            }
            if (!json_to_double(&e, &ad[k][f]))
                return -1;
        }
    }
    return 0;
}

static void persist(struct rollout_rt *ro, double ts, const uint64_t *delta, const char *action)
{
    if (!C.db)
        return;
    char counts[512];
    counts_json(delta, counts, sizeof counts);
    struct buf st = { 0 };
    pthread_mutex_lock(&ro->lock);
    state_json(&ro->st, ro->judge_seen, ro->pair_floor, &st);
    double share = canary_share(&ro->st, &ro->rules);
    const char *phase = canary_phase_names[ro->st.phase];
    char reason[600];
    snprintf(reason, sizeof reason, "%s", action ? ro->reason : "");
    pthread_mutex_unlock(&ro->lock);
    buf_append(&st, "", 1);
    sqlite3_stmt *a = NULL, *b = NULL;
    bool ok = buf_data(&st) &&
              sqlite3_prepare_v2(C.db,
                                 "INSERT INTO rollout_checks (rollout, ts, fingerprint, counts, action, share, "
                                 "phase, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                 -1, &a, NULL) == SQLITE_OK &&
              sqlite3_prepare_v2(C.db,
                                 "INSERT INTO rollout_state (rollout, ts, fingerprint, state) VALUES (?1, ?2, ?3, ?4) "
                                 "ON CONFLICT(rollout) DO UPDATE SET ts = ?2, fingerprint = ?3, state = ?4",
                                 -1, &b, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_exec(C.db, "BEGIN", NULL, NULL, NULL);
        sqlite3_bind_text(a, 1, ro->cfg->name, -1, SQLITE_STATIC);
        sqlite3_bind_double(a, 2, ts);
        sqlite3_bind_text(a, 3, ro->fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_text(a, 4, counts, -1, SQLITE_STATIC);
        if (action)
            sqlite3_bind_text(a, 5, action, -1, SQLITE_STATIC);
        sqlite3_bind_double(a, 6, share);
        sqlite3_bind_text(a, 7, phase, -1, SQLITE_STATIC);
        if (action)
            sqlite3_bind_text(a, 8, reason, -1, SQLITE_STATIC);
        sqlite3_bind_text(b, 1, ro->cfg->name, -1, SQLITE_STATIC);
        sqlite3_bind_double(b, 2, ts);
        sqlite3_bind_text(b, 3, ro->fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_text(b, 4, buf_data(&st), -1, SQLITE_STATIC);
        ok = sqlite3_step(a) == SQLITE_DONE && sqlite3_step(b) == SQLITE_DONE;
        sqlite3_exec(C.db, ok ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    }
    if (!ok)
        log_warn("rollout %s: cannot write to the store: %s", ro->cfg->name, sqlite3_errmsg(C.db));
    sqlite3_finalize(a);
    sqlite3_finalize(b);
    buf_free(&st);
}

/* ================================================================ controller */

/* A decision of canary_check, as the rollout applies it: on_failure: pause
 * turns a rollback into a freeze at the current share.  Replay applies the
 * same. */
static void apply_failure_policy(struct canary_state *st, int on_failure, const struct canary_decision *d)
{
    if (d->action == CA_ROLLBACK && on_failure == ROLLOUT_ON_FAILURE_PAUSE)
        st->phase = CP_FROZEN;
}

/* An admin command on a state; false when it does not apply. */
static bool apply_cmd(struct canary_state *st, int cmd, double now)
{
    switch (cmd) {
    case CMD_PAUSE:
        if (st->phase != CP_CANARY)
            return false;
        st->phase = CP_FROZEN;
        return true;
    case CMD_RESUME:
        if (st->phase != CP_FROZEN)
            return false;
        canary_resume(st, now);
        return true;
    case CMD_PROMOTE:
        if (st->phase != CP_CANARY && st->phase != CP_FROZEN)
            return false;
        st->phase = CP_PROMOTED;
        return true;
    case CMD_ROLLBACK:
        if (st->phase == CP_ROLLED_BACK)
            return false;
        st->phase = CP_ROLLED_BACK;
        return true;
    default:
        return false;
    }
}

static void take_delta(struct rollout_rt *ro, uint64_t *delta)
{
    for (int i = 0; i < RC_COUNTS; i++) {
        uint64_t now = LD(ro->cnt[i]);
        delta[i] = now - ro->given[i];
        ro->given[i] = now;
    }
}

/* POST body to a hook; true on a 2xx answer.  Runs on the controller's
 * thread, never under a rollout's lock, bounded by webhook_timeout. */
static bool hook_post(const struct rollout_rt *ro, const struct hook *h, const char *body, int *status,
                      const char **why)
{
    struct hc_request rq = { .addrs = &h->addrs, .method = "POST", .path = h->url.path,
                             .authority = h->url.authority, .content_type = "application/json",
                             .body = body, .body_len = strlen(body),
                             .deadline_ms = hc_now_ms() + ro->cfg->webhook_timeout_ms, .max_response = 4096,
                             .cancel_fd = -1 };
    struct hc_response rs = { 0 };
    enum hc_err e = hc_call(&rq, &rs);
    buf_free(&rs.body);
    *status = rs.status;
    *why = e == HC_OK ? NULL : hc_err_str(e);
    return e == HC_OK && rs.status >= 200 && rs.status < 300;
}

/* The JSON a hook gets: the rollout, the decision and the counts behind it. */
static void hook_body(struct buf *b, const struct rollout_rt *ro, const struct canary_state *st, const char *action,
                      const char *reason, double share_from, double share_to, double now)
{
    buf_append_str(b, "{\"rollout\":");
    json_buf_str(b, ro->cfg->name);
    buf_append_str(b, ",\"model\":");
    json_buf_str(b, ro->cfg->model);
    buf_append_str(b, ",\"candidate\":");
    json_buf_str(b, ro->cfg->candidate);
    buf_printf(b, ",\"action\":\"%s\",\"phase\":\"%s\",\"step\":%zu,\"share_from\":%.6g,\"share_to\":%.6g,"
                  "\"ts\":%.3f,\"reason\":",
               action, canary_phase_names[st->phase], st->step + 1, share_from, share_to, now);
    json_buf_str(b, reason);
    buf_printf(b, ",\"requests\":{\"baseline\":%llu,\"canary\":%llu,\"baseline_failed\":%llu,\"canary_failed\":%llu}}",
               (unsigned long long)st->total.base_req, (unsigned long long)st->total.can_req,
               (unsigned long long)st->total.base_fail, (unsigned long long)st->total.can_fail);
    buf_append(b, "", 1);
}

/* The shadow stage: the shadow's live decision moves the rollout on (to
 * the first step) or ends it.  Under ro->lock; returns the action or NULL. */
static const char *shadow_stage(struct rollout_rt *ro, double now)
{
    struct shadow_rt *sh = ro->shadow;
    int a = atomic_load(&sh->live_action);
    char rule[32];
    pthread_mutex_lock(&sh->lock);
    snprintf(rule, sizeof rule, "%s", sh->live_rule);
    pthread_mutex_unlock(&sh->lock);
    if (a == 1 + VA_READY) {
        canary_begin(&ro->st, now);
        snprintf(ro->reason, sizeof ro->reason, "the shadow %s says ready_for_canary (rule %s): on to %.4g%%",
                 sh->cfg->name, rule, canary_share(&ro->st, &ro->rules));
        return "shadow_ready";
    }
    bool stopped = atomic_load(&sh->state) == SHADOW_STOPPED;
    if (a == 1 + VA_INVESTIGATE || a == 1 + VA_TOO_SLOW || stopped) {
        ro->st.phase = CP_ROLLED_BACK;
        if (a == 1 + VA_INVESTIGATE || a == 1 + VA_TOO_SLOW)
            snprintf(ro->reason, sizeof ro->reason, "the shadow %s says %s (rule %s): never exposed", sh->cfg->name,
                     a == 1 + VA_TOO_SLOW ? "too_slow" : "investigate", rule);
        else
            snprintf(ro->reason, sizeof ro->reason, "the shadow %s was stopped: never exposed", sh->cfg->name);
        return "shadow_failed";
    }
    return NULL;
}

/* The comparators as agreement scores (verdict.h's order and mapping; NAN:
 * does not apply).  status_agree is left out: every leg of a sample
 * answered. */
static void cmp_scores(const struct cmp_result *r, double g[VERDICT_NCMP])
{
    double raw[VERDICT_NCMP] = { NAN,
                                 r->finish_agree < 0 ? NAN : r->finish_agree,
                                 r->exact < 0 ? NAN : r->exact,
                                 r->edit_sim < 0 ? NAN : r->edit_sim,
                                 r->rouge_l < 0 ? NAN : r->rouge_l,
                                 r->length_ratio < 0 ? NAN : r->length_ratio,
                                 r->json_valid < 0 ? NAN : r->json_valid,
                                 r->json_same < 0 ? NAN : r->json_same,
                                 r->tool_agree < 0 ? NAN : r->tool_agree,
                                 r->refusal_b };
    for (int j = 0; j < VERDICT_NCMP; j++)
        g[j] = verdict_agreement(j, raw[j]);
}

static void to_cmp_answer(const struct shadow_answer *a, struct cmp_answer *c)
{
    *c = (struct cmp_answer){ .ok = true, .status = 200, .text = buf_data(&a->text), .len = buf_used(&a->text),
                              .finish = a->finish[0] ? a->finish : NULL, .tool_calls = buf_data(&a->tools),
                              .tool_len = buf_used(&a->tools) };
}

/* D of one sample: the mean over the comparators that apply to both
 * comparisons of agreement(baseline, canary) - agreement(baseline, noise);
 * 0 when none applies.  scores: the per-comparator pairs as JSON. */
double rollout_quality_d(const struct shadow_answer *canary, const struct shadow_answer *base,
                         const struct shadow_answer *noise, const struct cmp_opts *o, struct buf *scores)
{
    struct cmp_answer a, b, n;
    struct cmp_result rc, rn;
    to_cmp_answer(base, &a);
    to_cmp_answer(canary, &b);
    to_cmp_answer(noise, &n);
    compare_answers(&a, &b, o, &rc);
    compare_answers(&a, &n, o, &rn);
    double gc[VERDICT_NCMP], gn[VERDICT_NCMP], sum = 0;
    cmp_scores(&rc, gc);
    cmp_scores(&rn, gn);
    int k = 0;
    if (scores)
        buf_append_str(scores, "{");
    for (int j = 0; j < VERDICT_NCMP; j++) {
        if (isnan(gc[j]) || isnan(gn[j]))
            continue;
        sum += gc[j] - gn[j];
        if (scores) {
            buf_printf(scores, "%s\"%s\":[", k ? "," : "", verdict_cmp_names[j]);
            json_buf_num(scores, gc[j]);
            buf_append_str(scores, ",");
            json_buf_num(scores, gn[j]);
            buf_append_str(scores, "]");
        }
        k++;
    }
    if (scores)
        buf_append(scores, "}", 2);
    return k ? sum / k : 0;
}

/* The samples the workers finished: compared here, on the controller's
 * thread (never on a worker), counted for this check and stored. */
static void quality_drain(struct rollout_rt *ro, double now)
{
    struct side_sample *s = side_sample_take(&ro->qs);
    if (!s)
        return;
    sqlite3_stmt *st = NULL;
    if (C.db && sqlite3_prepare_v2(C.db,
                                   "INSERT INTO rollout_pairs (rollout, ts, request_id, d, worse, scores, canary, "
                                   "baseline, noise, prompt) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                                   -1, &st, NULL) != SQLITE_OK)
        st = NULL;
    if (st)
        sqlite3_exec(C.db, "BEGIN", NULL, NULL, NULL);
    while (s) {
        struct side_sample *next = s->next;
        struct buf sc = { 0 };
        double d = rollout_quality_d(&s->ans[QS_CANARY], &s->ans[QS_BASE], &s->ans[QS_NOISE], &ro->refusal_opts, &sc);
        bool worse = d < -ro->rules.quality_margin;
        atomic_fetch_add_explicit(&ro->cnt[worse ? RC_QUAL_WORSE : RC_QUAL_OTHER], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ro->qs.cnt[SS_PAIRED], 1, memory_order_relaxed);
        side_sample_redact(s, &C.red); /* compared as answered, stored redacted */
        if (st) {
            sqlite3_reset(st);
            sqlite3_bind_text(st, 1, ro->cfg->name, -1, SQLITE_STATIC);
            sqlite3_bind_double(st, 2, s->ts);
            sqlite3_bind_text(st, 3, s->reqid, -1, SQLITE_STATIC);
            sqlite3_bind_double(st, 4, d);
            sqlite3_bind_int(st, 5, worse);
            sqlite3_bind_text(st, 6, buf_data(&sc) ? buf_data(&sc) : "{}", -1, SQLITE_STATIC);
            const int col[QS__N] = { 7, 8, 9 };
            for (int k = 0; k < QS__N; k++)
                sqlite3_bind_text(st, col[k], buf_data(&s->ans[k].text) ? buf_data(&s->ans[k].text) : "",
                                  (int)buf_used(&s->ans[k].text), SQLITE_STATIC);
            if (s->prompt)
                sqlite3_bind_text(st, 10, s->prompt, (int)s->prompt_len, SQLITE_STATIC);
            else
                sqlite3_bind_null(st, 10);
            if (sqlite3_step(st) != SQLITE_DONE)
                log_warn("rollout %s: cannot store a quality pair: %s", ro->cfg->name, sqlite3_errmsg(C.db));
        }
        buf_free(&sc);
        side_sample_free(s);
        s = next;
    }
    if (st) {
        sqlite3_exec(C.db, "COMMIT", NULL, NULL, NULL);
        sqlite3_finalize(st);
    }
    (void)now;
}

/* The judge's new verdicts on this run's pairs (judge.c writes them): read
 * here, on the controller's thread, by id above the last one read, and
 * counted like the workers' counts (a win or a loss only when both orders
 * agreed).  The check stores them, so replay needs no judgements table. */
static void judge_read(struct rollout_rt *ro)
{
    if (!C.db || !ro->rules.judge)
        return;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(C.db,
                           "SELECT id, outcome FROM rollout_judgements WHERE rollout = ?1 AND id > ?2 "
                           "AND pair_id > ?3 ORDER BY id LIMIT ?4",
                           -1, &st, NULL) != SQLITE_OK) {
        log_warn("rollout %s: cannot read judgements: %s", ro->cfg->name, sqlite3_errmsg(C.db));
        return;
    }
    sqlite3_bind_text(st, 1, ro->cfg->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ro->judge_seen);
    sqlite3_bind_int64(st, 3, ro->pair_floor);
    sqlite3_bind_int(st, 4, JUDGE_READ_MAX);
    while (sqlite3_step(st) == SQLITE_ROW) {
        ro->judge_seen = sqlite3_column_int64(st, 0);
        const char *o = (const char *)sqlite3_column_text(st, 1);
        int k = RJ_ERROR;
        for (int i = 0; o && i < RJ__N; i++)
            if (strcmp(o, rj_names[i]) == 0)
                k = i;
        atomic_fetch_add_explicit(&ro->jcnt[k], 1, memory_order_relaxed);
        if (k == RJ_LOSS || k == RJ_WIN)
            atomic_fetch_add_explicit(&ro->cnt[k == RJ_LOSS ? RC_JUDGE_LOSS : RC_JUDGE_WIN], 1, memory_order_relaxed);
    }
    sqlite3_finalize(st);
}

/* The largest id of a table (0 when empty or unreadable). */
static int64_t max_id(const char *table)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT coalesce(max(id), 0) FROM %s", table);
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(C.db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

static void check(struct rollout_rt *ro, double now)
{
    uint64_t delta[RC_COUNTS];
    quality_drain(ro, now);
    judge_read(ro);
    take_delta(ro, delta);
    struct canary_counts d;
    to_counts(delta, &d);
    const char *action = NULL;
    char act[32];
    pthread_mutex_lock(&ro->lock);
    int cmd = ro->cmd;
    ro->cmd = CMD_NONE;
    canary_add(&ro->st, &d);
    struct canary_state trial = ro->st;
    double share_from = canary_share(&ro->st, &ro->rules);
    pthread_mutex_unlock(&ro->lock);
    if (cmd != CMD_NONE) {
        /* a person's command, in place of the check */
        pthread_mutex_lock(&ro->lock);
        if (apply_cmd(&ro->st, cmd, now)) {
            snprintf(act, sizeof act, "manual_%s", cmd_names[cmd]);
            action = act;
            snprintf(ro->reason, sizeof ro->reason, "%s through the admin API", cmd_names[cmd]);
            ro->decided_at = now;
        }
        pthread_mutex_unlock(&ro->lock);
    } else if (trial.phase == CP_SHADOW && ro->shadow) {
        pthread_mutex_lock(&ro->lock);
        action = shadow_stage(ro, now);
        if (action)
            ro->decided_at = now;
        pthread_mutex_unlock(&ro->lock);
    } else {
        /* the decision on a copy: a step up waits for the confirm hook */
        struct canary_decision dec;
        canary_check(&trial, &ro->rules, now, &dec);
        apply_failure_policy(&trial, ro->cfg->on_failure, &dec);
        bool commit = true;
        char held[600] = "";
        if ((dec.action == CA_ADVANCE || dec.action == CA_PROMOTE) && ro->confirm.on) {
            struct buf b = { 0 };
            int status = 0;
            const char *why = NULL;
            hook_body(&b, ro, &trial, canary_action_names[dec.action], dec.reason, share_from,
                      canary_share(&trial, &ro->rules), now);
            if (!buf_data(&b) || !hook_post(ro, &ro->confirm, buf_data(&b), &status, &why)) {
                commit = false;
                if (why)
                    snprintf(held, sizeof held, "the confirm hook failed (%s): %s held", why,
                             canary_action_names[dec.action]);
                else
                    snprintf(held, sizeof held, "the confirm hook answered %d: %s held", status,
                             canary_action_names[dec.action]);
            }
            buf_free(&b);
        }
        pthread_mutex_lock(&ro->lock);
        if (commit) {
            ro->st = trial;
            if (dec.action != CA_NONE) {
                action = canary_action_names[dec.action];
                snprintf(ro->reason, sizeof ro->reason, "%s%s", dec.reason,
                         dec.action == CA_ROLLBACK && ro->st.phase == CP_FROZEN ? " (on_failure: pause)" : "");
                ro->decided_at = now;
                atomic_fetch_add(&ro->decisions[dec.action], 1);
            }
        } else {
            action = "held"; /* the state stays as it was, the counts added */
            snprintf(ro->reason, sizeof ro->reason, "%s", held);
        }
        pthread_mutex_unlock(&ro->lock);
    }
    pthread_mutex_lock(&ro->lock);
    set_share(ro);
    /* a new step (or a resumed one) counts its own new units */
    size_t key = ro->st.step * 8 + (size_t)ro->st.phase;
    if (key != ro->units_step || ro->st.step_started != ro->units_started) {
        if (ro->units)
            memset(ro->units, 0, UNIT_SET * sizeof *ro->units);
        ro->nunits = 0;
        ro->units_step = key;
        ro->units_started = ro->st.step_started;
    }
    char reason[600];
    snprintf(reason, sizeof reason, "%s", ro->reason);
    double share = canary_share(&ro->st, &ro->rules);
    struct canary_state now_st = ro->st;
    pthread_mutex_unlock(&ro->lock);
    if (action)
        log_info("rollout %s: %s -> %s at %.4g%%: %s", ro->cfg->name, action, canary_phase_names[now_st.phase],
                 share, reason);
    persist(ro, now, delta, action);
    if (action && ro->webhook.on && strcmp(action, "held") != 0) {
        struct buf b = { 0 };
        int status = 0;
        const char *why = NULL;
        hook_body(&b, ro, &now_st, action, reason, share_from, share, now);
        if (!buf_data(&b) || !hook_post(ro, &ro->webhook, buf_data(&b), &status, &why))
            log_warn("rollout %s: webhook %s%s: %s%s", ro->cfg->name, ro->cfg->webhook, why ? " failed" : " answered",
                     why ? why : "", why ? "" : (status ? "a non-2xx status" : "no status"));
        buf_free(&b);
    }
}

/* The controller's loop: every rollout checked when due, or at once when
 * an admin command waits; a last check when the process stops. */
static void *controller_main(void *arg)
{
    (void)arg;
    struct gateway *gw = C.gw;
    pthread_mutex_lock(&C.t.lock);
    for (;;) {
        double now = unix_now(), next = now + 3600;
        bool cmd = false;
        for (size_t i = 0; i < gw->nrollouts; i++) {
            struct rollout_rt *ro = &gw->rollouts[i];
            if (ro->next_check < next)
                next = ro->next_check;
            pthread_mutex_lock(&ro->lock);
            cmd = cmd || ro->cmd != CMD_NONE;
            pthread_mutex_unlock(&ro->lock);
        }
        if (!C.t.stop && !cmd)
            bg_wait(&C.t, next - now);
        bool stop = C.t.stop;
        pthread_mutex_unlock(&C.t.lock);
        now = unix_now();
        /* a draining process (a reload: its successor has read the state and
         * decides now) neither decides nor writes: one decision-maker */
        for (size_t i = 0; i < gw->nrollouts && !atomic_load(&gw->draining); i++) {
            struct rollout_rt *ro = &gw->rollouts[i];
            pthread_mutex_lock(&ro->lock);
            bool has_cmd = ro->cmd != CMD_NONE;
            pthread_mutex_unlock(&ro->lock);
            if (stop || has_cmd || ro->next_check <= now) {
                check(ro, now);
                if (!has_cmd)
                    ro->next_check = now + ro->cfg->check_interval_ms / 1000.0;
            }
        }
        pthread_mutex_lock(&C.t.lock);
        if (stop)
            break;
    }
    pthread_mutex_unlock(&C.t.lock);
    return NULL;
}

static void rules_of(const struct config_rollout *cfg, struct canary_rules *r)
{
    canary_rules_default(r);
    r->alpha_rollback = cfg->alpha;
    r->alpha_promote = cfg->alpha_promote;
    r->latency_margin = cfg->latency_margin;
    r->latency_ratio_max = cfg->latency_ratio_max;
    r->cost_margin = cfg->cost_margin;
    r->success_min = cfg->success_min;
    r->srm_alpha = cfg->srm_alpha;
    r->refusals = cfg->refusals;
    r->quality = cfg->quality_sample_percent > 0;
    r->quality_margin = cfg->quality_margin;
    r->judge = r->quality && cfg->quality_judge;
    r->nsteps = cfg->nsteps < CANARY_MAX_STEPS ? cfg->nsteps : CANARY_MAX_STEPS;
    for (size_t i = 0; i < r->nsteps; i++)
        r->steps[i] = (struct canary_step){ cfg->steps[i].percent, cfg->steps[i].min_duration_ms / 1000.0,
                                            cfg->steps[i].min_requests };
}

/* The state of a rollout from the store, when its rules are unchanged. */
static bool restore(struct rollout_rt *ro)
{
    sqlite3_stmt *st = NULL;
    bool ok = false;
    if (sqlite3_prepare_v2(C.db, "SELECT fingerprint, state FROM rollout_state WHERE rollout = ?1", -1, &st, NULL) !=
        SQLITE_OK)
        return false;
    sqlite3_bind_text(st, 1, ro->cfg->name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *fp = (const char *)sqlite3_column_text(st, 0);
        const char *js = (const char *)sqlite3_column_text(st, 1);
        if (fp && js && strcmp(fp, ro->fingerprint) == 0 && state_parse(js, &ro->st) == 0 &&
            ro->st.step < ro->rules.nsteps) {
            ok = true;
            state_parse_judge(js, &ro->judge_seen, &ro->pair_floor);
            log_info("rollout %s: resumed from the store: %s, step %zu of %zu, %.4g%%", ro->cfg->name,
                     canary_phase_names[ro->st.phase], ro->st.step + 1, ro->rules.nsteps,
                     canary_share(&ro->st, &ro->rules));
        } else if (fp) {
            log_warn("rollout %s: its rules changed since the stored state: starting again at step 1", ro->cfg->name);
        }
    }
    sqlite3_finalize(st);
    return ok;
}

int rollout_store_open(const char *path, const char *schema, const char *what, struct sqlite3 **db, char *err,
                       size_t errlen)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) ==
            SQLITE_OK &&
        sqlite3_busy_timeout(*db, 5000) == SQLITE_OK &&
        sqlite3_exec(*db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) == SQLITE_OK &&
        sqlite3_exec(*db, schema, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "%s: store %s: %s", what, path, *db ? sqlite3_errmsg(*db) : "cannot open");
    sqlite3_close(*db);
    *db = NULL;
    return -1;
}

int rollout_start(struct gateway *gw, char *err, size_t errlen)
{
    const struct config *cfg = gw->cfg;
    gw->rollouts = NULL;
    gw->nrollouts = 0;
    if (!cfg->nrollouts)
        return 0;
    gw->rollouts = calloc(cfg->nrollouts, sizeof *gw->rollouts);
    if (!gw->rollouts) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (redactor_init(&C.red, cfg->store.redact, cfg->store.nredact, err, errlen) < 0) {
        free(gw->rollouts);
        gw->rollouts = NULL;
        return -1;
    }
    if (rollout_store_open(cfg->store.path, schema_sql, "rollouts", &C.db, err, errlen) < 0) {
        redactor_free(&C.red);
        free(gw->rollouts);
        gw->rollouts = NULL;
        return -1;
    }
    /* a store from before the judge gate: rollout_pairs gets its prompt column */
    sqlite3_stmt *col = NULL;
    bool has_prompt = false;
    if (sqlite3_prepare_v2(C.db, "SELECT 1 FROM pragma_table_info('rollout_pairs') WHERE name = 'prompt'", -1, &col,
                           NULL) == SQLITE_OK)
        has_prompt = sqlite3_step(col) == SQLITE_ROW;
    sqlite3_finalize(col);
    if (!has_prompt && sqlite3_exec(C.db, "ALTER TABLE rollout_pairs ADD COLUMN prompt TEXT", NULL, NULL, NULL) !=
                           SQLITE_OK &&
        sqlite3_exec(C.db, "SELECT prompt FROM rollout_pairs LIMIT 0", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "rollouts: store %s: cannot add rollout_pairs.prompt: %s", cfg->store.path,
                 sqlite3_errmsg(C.db));
        sqlite3_close(C.db);
        C.db = NULL;
        free(gw->rollouts);
        gw->rollouts = NULL;
        return -1;
    }
    double now = unix_now();
    for (size_t i = 0; i < cfg->nrollouts; i++) {
        struct rollout_rt *ro = &gw->rollouts[i];
        ro->cfg = &cfg->rollouts[i];
        ro->base = &gw->models[ro->cfg->model_index];
        ro->cand = &gw->models[ro->cfg->candidate_index];
        rules_of(ro->cfg, &ro->rules);
        if (ro->cfg->nrefusal)
            ro->refusal_opts = (struct cmp_opts){ (const char *const *)ro->cfg->refusal_patterns, ro->cfg->nrefusal };
        fingerprint(ro->cfg, &ro->rules, ro->fingerprint, sizeof ro->fingerprint);
        pthread_mutex_init(&ro->lock, NULL);
        side_sampler_init(&ro->qs);
        ro->qs.ref = ro->base;
        ro->qs.tag_header = "x-shade-rollout";
        ro->qs.tag = ro->cfg->name;
        ro->qs.nlegs = 2;
        ro->qs.max_concurrent = ro->cfg->quality_max_concurrent;
        ro->qs.deadline_ms = ro->cfg->quality_deadline_ms;
        ro->qs.prompt_max = cfg->store.prompt_max_bytes;
        ro->qs.answer_max = cfg->store.response_max_bytes;
        ro->units = calloc(UNIT_SET, sizeof *ro->units); /* NULL: the split goes untested */
        if (ro->cfg->shadow)
            ro->shadow = &gw->shadows[ro->cfg->shadow_index];
        struct hook *hooks[2] = { &ro->webhook, &ro->confirm };
        const char *urls[2] = { ro->cfg->webhook, ro->cfg->confirm_url };
        for (int k = 0; k < 2; k++) {
            const char *why;
            if (!urls[k])
                continue;
            if (hc_url_parse(urls[k], &hooks[k]->url, &why) < 0 ||
                hc_resolve(hooks[k]->url.host, hooks[k]->url.port, &hooks[k]->addrs, &why) < 0) {
                snprintf(err, errlen, "rollout %s: %s %s: %s", ro->cfg->name, k ? "confirm_url" : "webhook", urls[k],
                         why);
                gw->nrollouts++; /* so rollout_stop frees it */
                ro->base->rollout = NULL;
                rollout_stop(gw);
                return -1;
            }
            hooks[k]->on = true;
        }
        bool resumed = restore(ro);
        if (!resumed) {
            canary_init(&ro->st, now);
            if (ro->shadow)
                ro->st.phase = CP_SHADOW;
            /* a new run: the pairs and verdicts of an earlier one do not count */
            ro->pair_floor = max_id("rollout_pairs");
            ro->judge_seen = max_id("rollout_judgements");
        }
        set_share(ro);
        ro->units_step = ro->st.step * 8 + (size_t)ro->st.phase;
        ro->units_started = ro->st.step_started;
        ro->next_check = now + ro->cfg->check_interval_ms / 1000.0;
        ro->base->rollout = ro;
        ro->cand->canary_of = ro->base;
        gw->nrollouts++;
        if (!resumed) {
            snprintf(ro->reason, sizeof ro->reason, "started at %.4g%%", canary_share(&ro->st, &ro->rules));
            ro->decided_at = now;
            uint64_t zero[RC_COUNTS] = { 0 };
            persist(ro, now, zero, "start");
            log_info("rollout %s: %s -> %s, starting at %.4g%%", ro->cfg->name, ro->cfg->model, ro->cfg->candidate,
                     canary_share(&ro->st, &ro->rules));
        }
    }
    C.gw = gw;
    if (bg_start(&C.t, controller_main, NULL) < 0) {
        snprintf(err, errlen, "rollouts: cannot start the controller thread");
        rollout_stop(gw);
        return -1;
    }
    return 0;
}

void rollout_stop(struct gateway *gw)
{
    redactor_free(&C.red);
    bg_stop(&C.t); /* its last check counts what the workers finished */
    if (C.db) {
        sqlite3_close(C.db);
        C.db = NULL;
    }
    for (size_t i = 0; i < gw->nrollouts; i++) {
        gw->rollouts[i].base->rollout = NULL;
        gw->rollouts[i].cand->canary_of = NULL;
        hc_url_free(&gw->rollouts[i].webhook.url);
        hc_url_free(&gw->rollouts[i].confirm.url);
        free(gw->rollouts[i].units);
        side_sampler_destroy(&gw->rollouts[i].qs);
        pthread_mutex_destroy(&gw->rollouts[i].lock);
    }
    free(gw->rollouts);
    gw->rollouts = NULL;
    gw->nrollouts = 0;
    C.gw = NULL;
}

/* ================================================================ admin API */



static double ev(double le) { return le > 690 ? 1e300 : exp(le); }

static void render_one(struct buf *b, struct rollout_rt *ro)
{
    const struct config_rollout *c = ro->cfg;
    pthread_mutex_lock(&ro->lock);
    struct canary_state s = ro->st;
    char reason[600];
    snprintf(reason, sizeof reason, "%s", ro->reason);
    double at = ro->decided_at;
    int cmd = ro->cmd;
    pthread_mutex_unlock(&ro->lock);
    buf_append_str(b, "{\"name\":");
    json_buf_str(b, c->name);
    buf_append_str(b, ",\"model\":");
    json_buf_str(b, c->model);
    buf_append_str(b, ",\"candidate\":");
    json_buf_str(b, c->candidate);
    buf_printf(b, ",\"phase\":\"%s\",\"step\":%zu,\"steps\":[", canary_phase_names[s.phase], s.step + 1);
    for (size_t i = 0; i < ro->rules.nsteps; i++) {
        buf_printf(b, "%s{\"percent\":", i ? "," : "");
        json_buf_num(b, ro->rules.steps[i].share);
        buf_printf(b, ",\"min_seconds\":");
        json_buf_num(b, ro->rules.steps[i].min_seconds);
        buf_printf(b, ",\"min_requests\":%llu}", (unsigned long long)ro->rules.steps[i].min_requests);
    }
    buf_append_str(b, "],\"share\":");
    json_buf_num(b, canary_share(&s, &ro->rules));
    buf_printf(b, ",\"step_started\":%.3f", s.step_started);
    buf_append_str(b, ",\"reason\":");
    json_buf_str(b, reason);
    if (at > 0)
        buf_printf(b, ",\"decided_at\":%.3f", at);
    else
        buf_append_str(b, ",\"decided_at\":null");
    buf_printf(b, ",\"pending_command\":%s%s%s,\"checks\":%llu", cmd ? "\"" : "", cmd ? cmd_names[cmd] : "null",
               cmd ? "\"" : "", (unsigned long long)s.checks);
    buf_printf(b, ",\"requests\":{\"baseline\":%llu,\"canary\":%llu,\"baseline_failed\":%llu,\"canary_failed\":%llu,"
                  "\"without_unit\":%llu}",
               (unsigned long long)s.total.base_req, (unsigned long long)s.total.can_req,
               (unsigned long long)s.total.base_fail, (unsigned long long)s.total.can_fail,
               (unsigned long long)LD(ro->cnt[RC_NOUNIT]));
    buf_printf(b, ",\"pairs\":{\"latency_slower\":%llu,\"latency_not_slower\":%llu,\"latency_faster\":%llu,"
                  "\"latency_not_faster\":%llu,\"ttft_slower\":%llu,\"ttft_not_slower\":%llu,"
                  "\"cost_higher\":%llu,\"cost_not_higher\":%llu}",
               (unsigned long long)s.total.lat_slow, (unsigned long long)s.total.lat_other,
               (unsigned long long)s.total.lat_fast, (unsigned long long)s.total.lat_notfast,
               (unsigned long long)s.total.ttft_slow, (unsigned long long)s.total.ttft_other,
               (unsigned long long)s.total.cost_high, (unsigned long long)s.total.cost_other);
    buf_printf(b, ",\"refusals\":{\"tested\":%s,\"baseline\":%llu,\"canary\":%llu}",
               ro->rules.refusals ? "true" : "false", (unsigned long long)s.total.base_refusal,
               (unsigned long long)s.total.can_refusal);
    buf_printf(b, ",\"quality\":{\"tested\":%s,\"sample_percent\":", ro->rules.quality ? "true" : "false");
    json_buf_num(b, c->quality_sample_percent);
    buf_append_str(b, ",\"margin\":");
    json_buf_num(b, ro->rules.quality_margin);
    buf_printf(b, ",\"worse\":%llu,\"not_worse\":%llu,\"in_flight\":%d", (unsigned long long)s.total.qual_worse,
               (unsigned long long)s.total.qual_other, atomic_load(&ro->qs.inflight));
    for (int k = 0; k < SS__N; k++)
        buf_printf(b, ",\"%s\":%llu", rq_names[k], (unsigned long long)LD(ro->qs.cnt[k]));
    buf_append_str(b, "}");
    /* the judge gate: lost / won count in the decision (the whole run), the
     * outcomes since this process started */
    buf_printf(b, ",\"judge\":{\"tested\":%s,\"model\":", ro->rules.judge ? "true" : "false");
    if (c->quality_judge)
        json_buf_str(b, c->quality_judge);
    else
        buf_append_str(b, "null");
    buf_append_str(b, ",\"sample_percent\":");
    json_buf_num(b, c->quality_judge ? c->quality_judge_sample : 0);
    buf_printf(b, ",\"lost\":%llu,\"won\":%llu,\"read\":{", (unsigned long long)s.total.judge_loss,
               (unsigned long long)s.total.judge_win);
    for (int k = 0; k < RJ__N; k++)
        buf_printf(b, "%s\"%s\":%llu", k ? "," : "", rj_names[k], (unsigned long long)LD(ro->jcnt[k]));
    buf_append_str(b, "}}");
    buf_append_str(b, ",\"evidence\":{");
    double thr = ev(log(canary_families_on(&ro->rules) / ro->rules.alpha_rollback));
    for (int f = 0; f < CANARY_FAMILIES; f++) {
        buf_printf(b, "%s\"%s\":{\"tested\":%s,\"e_value\":", f ? "," : "", canary_family_names[f],
                   canary_family_on(&ro->rules, f) ? "true" : "false");
        json_buf_num(b, ev(s.log_e[f]));
        buf_append_str(b, ",\"e_value_max\":");
        json_buf_num(b, ev(s.log_e_max[f]));
        buf_append_str(b, ",\"rollback_at\":");
        json_buf_num(b, thr);
        buf_append_str(b, "}");
    }
    buf_append_str(b, ",\"promote_success\":");
    json_buf_num(b, ev(s.log_promote_success));
    buf_append_str(b, ",\"promote_latency\":");
    json_buf_num(b, ev(s.log_promote_latency));
    buf_append_str(b, ",\"promote_at\":");
    json_buf_num(b, 1 / ro->rules.alpha_promote);
    buf_append_str(b, ",\"split\":");
    json_buf_num(b, ev(s.log_srm));
    buf_append_str(b, ",\"freeze_at\":");
    json_buf_num(b, 1 / ro->rules.srm_alpha);
    buf_append_str(b, "}}");
}

static int rollout_admin(struct worker *w, http_req *r)
{
    struct gateway *gw = w->gw;
    bool get = r->method == HTTP_M_GET || r->method == HTTP_M_HEAD, post = r->method == HTTP_M_POST;
    struct buf b = { 0 };
    const char *p, *action;
    size_t nl, al;
    int below = route_below(r, sizeof "/admin/rollouts" - 1, &p, &nl, &action, &al);
    if (below == 0) {
        if (!get) {
            http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                               "Method not allowed on /admin/rollouts (allowed: GET, HEAD).");
            return 405;
        }
        buf_append_str(&b, "{\"rollouts\":[");
        for (size_t i = 0; i < gw->nrollouts; i++) {
            if (i)
                buf_append_str(&b, ",");
            render_one(&b, &gw->rollouts[i]);
        }
        buf_append_str(&b, "]}\n");
        return http_respond_buf(r, 200, "application/json", &b);
    }
    if (below < 0)
        goto not_found;
    struct rollout_rt *ro = NULL;
    for (size_t i = 0; i < gw->nrollouts && !ro; i++)
        if (strlen(gw->rollouts[i].cfg->name) == nl && memcmp(gw->rollouts[i].cfg->name, p, nl) == 0)
            ro = &gw->rollouts[i];
    if (!ro) {
        http_respond_error(r, 404, "invalid_request_error", "rollout_not_found", NULL, "No rollout named '%.*s'.",
                           (int)(nl > 200 ? 200 : nl), p);
        return 404;
    }
    if (al == 0) {
        if (!get) {
            http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                               "Method not allowed here (allowed: GET, HEAD).");
            return 405;
        }
        render_one(&b, ro);
        buf_append_str(&b, "\n");
        return http_respond_buf(r, 200, "application/json", &b);
    }
    for (int c = CMD_PAUSE; c <= CMD_ROLLBACK; c++) {
        if (al != strlen(cmd_names[c]) || memcmp(action, cmd_names[c], al) != 0)
            continue;
        if (!post) {
            http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                               "Method not allowed here (allowed: POST).");
            return 405;
        }
        /* the controller applies it within moments and stores it as a check;
         * a command that does not apply to the state is refused now */
        pthread_mutex_lock(&ro->lock);
        struct canary_state probe = ro->st;
        bool applies = apply_cmd(&probe, c, unix_now());
        if (applies)
            ro->cmd = c;
        pthread_mutex_unlock(&ro->lock);
        if (!applies) {
            http_respond_error(r, 409, "invalid_request_error", "rollout_state_conflict", NULL,
                               "Cannot %s rollout '%s' while it is %s.", cmd_names[c], ro->cfg->name,
                               canary_phase_names[atomic_load(&ro->phase)]);
            return 409;
        }
        bg_wake(&C.t);
        render_one(&b, ro);
        buf_append_str(&b, "\n");
        return http_respond_buf(r, 202, "application/json", &b);
    }
not_found:
    http_respond_error(r, 404, "invalid_request_error", "unknown_url", NULL, "Invalid URL (%.*s %.*s)",
                       (int)r->method_len, r->method_name, (int)r->path_len, r->path);
    return 404;
}

/* ================================================================ metrics */

static void rollout_metrics_judge(const struct gateway *gw, struct buf *o)
{
    bool any = false;
    for (size_t i = 0; i < gw->nrollouts; i++)
        any = any || gw->rollouts[i].rules.judge;
    if (!any)
        return;
    buf_append_str(o, "# HELP shade_rollout_judgements_total Judge verdicts on a rollout's quality pairs read by "
                      "the controller, by outcome for the canary.\n"
                      "# TYPE shade_rollout_judgements_total counter\n");
    for (size_t i = 0; i < gw->nrollouts; i++) {
        const struct rollout_rt *ro = &gw->rollouts[i];
        if (!ro->rules.judge)
            continue;
        for (int k = 0; k < RJ__N; k++) {
            buf_append_str(o, "shade_rollout_judgements_total{rollout=\"");
            metrics_put_label(o, ro->cfg->name);
            buf_printf(o, "\",outcome=\"%s\"} %llu\n", rj_names[k], (unsigned long long)LD(ro->jcnt[k]));
        }
    }
}

static void rollout_metrics(const struct gateway *gw, struct buf *o)
{
    if (!gw->nrollouts)
        return;
    buf_append_str(o, "# HELP shade_rollout_share Percent of units on the candidate.\n"
                      "# TYPE shade_rollout_share gauge\n");
    for (size_t i = 0; i < gw->nrollouts; i++) {
        buf_append_str(o, "shade_rollout_share{rollout=\"");
        metrics_put_label(o, gw->rollouts[i].cfg->name);
        buf_printf(o, "\"} %.6g\n", LD(gw->rollouts[i].share_bp) / 100.0);
    }
    buf_append_str(o, "# HELP shade_rollout_state Phase of each rollout (1 for the phase it is in).\n"
                      "# TYPE shade_rollout_state gauge\n");
    for (size_t i = 0; i < gw->nrollouts; i++)
        for (int ph = 0; ph <= CP_SHADOW; ph++) {
            buf_append_str(o, "shade_rollout_state{rollout=\"");
            metrics_put_label(o, gw->rollouts[i].cfg->name);
            buf_printf(o, "\",state=\"%s\"} %d\n", canary_phase_names[ph], LD(gw->rollouts[i].phase) == ph);
        }
    buf_append_str(o, "# HELP shade_rollout_requests_total Finished requests of a rollout's model by arm and outcome.\n"
                      "# TYPE shade_rollout_requests_total counter\n");
    for (size_t i = 0; i < gw->nrollouts; i++) {
        const struct rollout_rt *ro = &gw->rollouts[i];
        uint64_t v[4] = { LD(ro->cnt[RC_BASE_REQ]) - LD(ro->cnt[RC_BASE_FAIL]), LD(ro->cnt[RC_BASE_FAIL]),
                          LD(ro->cnt[RC_CAN_REQ]) - LD(ro->cnt[RC_CAN_FAIL]), LD(ro->cnt[RC_CAN_FAIL]) };
        for (int k = 0; k < 4; k++) {
            buf_append_str(o, "shade_rollout_requests_total{rollout=\"");
            metrics_put_label(o, ro->cfg->name);
            buf_printf(o, "\",variant=\"%s\",outcome=\"%s\"} %llu\n", k < 2 ? "baseline" : "canary",
                       k % 2 ? "error" : "ok", (unsigned long long)v[k]);
        }
    }
    buf_append_str(o, "# HELP shade_rollout_decisions_total Decisions of the rollout controller by action.\n"
                      "# TYPE shade_rollout_decisions_total counter\n");
    for (size_t i = 0; i < gw->nrollouts; i++)
        for (int a = CA_ADVANCE; a <= CA_FREEZE; a++) {
            buf_append_str(o, "shade_rollout_decisions_total{rollout=\"");
            metrics_put_label(o, gw->rollouts[i].cfg->name);
            buf_printf(o, "\",action=\"%s\"} %llu\n", canary_action_names[a],
                       (unsigned long long)LD(gw->rollouts[i].decisions[a]));
        }
    rollout_metrics_judge(gw, o);
}

static const struct route rollout_routes[] = {
    { ROUTE_ANY, "/admin/rollouts", true, true, rollout_admin },
};

const struct pl_module mod_rollout = {
    .name = "rollout",
    .phase = PH_ROUTE,
    .ctx_size = sizeof(struct ro_ctx),
    .on_request = rollout_request,
    .on_sent = rollout_sent,
    .on_event = rollout_event,
    .on_finish = rollout_finish,
    .on_head = rollout_head,
    .routes = rollout_routes,
    .nroutes = sizeof rollout_routes / sizeof rollout_routes[0],
    .metrics_render = rollout_metrics,
};

/* ================================================================ shade rollout */

static const char usage_rollout[] =
    "usage: shade rollout status --db FILE [--rollout NAME]\n"
    "       shade rollout replay --db FILE [--rollout NAME]\n"
    "\n"
    "status: each rollout's stored state and its decisions.\n"
    "replay: recompute every decision from the stored checks (the counts each\n"
    "check was given, in order) with the same code the gateway runs, and\n"
    "compare with what was decided; exit status 1 on a difference.\n";

static int replay_one(sqlite3 *db, const char *name, bool print)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT ts, fingerprint, counts, action, share, phase, reason FROM rollout_checks "
                           "WHERE rollout = ?1 ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "shade rollout: %s\n", sqlite3_errmsg(db));
        return -1;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    struct canary_rules rules;
    struct canary_state s;
    int on_failure = 0;
    bool with_shadow = false;
    char fp[1024] = "";
    bool have = false;
    int diffs = 0;
    uint64_t rows = 0, decisions = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        double ts = sqlite3_column_double(st, 0);
        const char *f = (const char *)sqlite3_column_text(st, 1);
        const char *counts = (const char *)sqlite3_column_text(st, 2);
        const char *action = (const char *)sqlite3_column_text(st, 3);
        double share = sqlite3_column_double(st, 4);
        const char *reason = (const char *)sqlite3_column_text(st, 6);
        rows++;
        if (!f || !counts)
            continue;
        if (!have || strcmp(f, fp) != 0 || (action && strcmp(action, "start") == 0)) {
            if (rules_of_fingerprint(f, &rules, &on_failure, &with_shadow) < 0) {
                fprintf(stderr, "shade rollout: %s: unreadable rules in the store\n", name);
                sqlite3_finalize(st);
                return -1;
            }
            snprintf(fp, sizeof fp, "%s", f);
            canary_init(&s, ts);
            if (with_shadow)
                s.phase = CP_SHADOW;
            have = true;
            if (print)
                printf("%s  %.3f  start at %.4g%%\n", name, ts, canary_share(&s, &rules));
            if (action && strcmp(action, "start") == 0)
                continue;
        }
        uint64_t c[RC_COUNTS];
        struct canary_counts d;
        if (counts_parse(counts, c) < 0)
            continue;
        to_counts(c, &d);
        canary_add(&s, &d);
        const char *got = NULL;
        char act[32];
        if (action && strcmp(action, "held") == 0) {
            /* the confirm hook held a step up: recomputed, not applied */
            struct canary_state trial = s;
            struct canary_decision dec;
            canary_check(&trial, &rules, ts, &dec);
            got = dec.action == CA_ADVANCE || dec.action == CA_PROMOTE ? "held" : canary_action_names[dec.action];
        } else if (action && strcmp(action, "shadow_ready") == 0 && s.phase == CP_SHADOW) {
            canary_begin(&s, ts);
            got = action;
        } else if (action && strcmp(action, "shadow_failed") == 0 && s.phase == CP_SHADOW) {
            s.phase = CP_ROLLED_BACK;
            got = action;
        } else if (s.phase == CP_SHADOW) {
            got = NULL; /* waiting for the shadow: nothing to recompute */
        } else if (action && strncmp(action, "manual_", 7) == 0) {
            int cmd = CMD_NONE;
            for (int k = CMD_PAUSE; k <= CMD_ROLLBACK; k++)
                if (strcmp(action + 7, cmd_names[k]) == 0)
                    cmd = k;
            if (apply_cmd(&s, cmd, ts)) {
                snprintf(act, sizeof act, "%s", action);
                got = act;
            }
        } else {
            struct canary_decision dec;
            canary_check(&s, &rules, ts, &dec);
            apply_failure_policy(&s, on_failure, &dec);
            got = dec.action != CA_NONE ? canary_action_names[dec.action] : NULL;
        }
        double my_share = canary_share(&s, &rules);
        bool same = (!got && !action) || (got && action && strcmp(got, action) == 0);
        same = same && fabs(my_share - share) < 1e-9;
        if (got)
            decisions++;
        if (!same) {
            diffs++;
            printf("%s  %.3f  DIFFERS: stored %s at %.4g%%, recomputed %s at %.4g%%\n", name, ts,
                   action ? action : "-", share, got ? got : "-", my_share);
        } else if (print && got) {
            printf("%s  %.3f  %s -> %s at %.4g%%: %s\n", name, ts, got, canary_phase_names[s.phase], my_share,
                   reason ? reason : "");
        }
    }
    sqlite3_finalize(st);
    printf("%s: %llu checks, %llu decisions, %s\n", name, (unsigned long long)rows, (unsigned long long)decisions,
           diffs ? "DIFFERENT from the stored ones" : "every decision recomputed the same");
    return diffs ? 1 : 0;
}

int rollout_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(usage_rollout, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1], *db_path = NULL, *only = NULL;
    if (strcmp(cmd, "status") != 0 && strcmp(cmd, "replay") != 0) {
        fprintf(stderr, "shade rollout: unknown command '%s'\n%s", cmd, usage_rollout);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--db") == 0)
            db_path = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--rollout") == 0)
            only = argv[++i];
        else {
            fprintf(stderr, "shade rollout: bad or unknown option '%s'\n%s", argv[i], usage_rollout);
            return 2;
        }
    }
    if (!db_path) {
        fprintf(stderr, "shade rollout: missing --db FILE\n%s", usage_rollout);
        return 2;
    }
    struct stat sb;
    if (stat(db_path, &sb) < 0) {
        fprintf(stderr, "shade rollout: %s: %s\n", db_path, strerror(errno));
        return 1;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "shade rollout: %s: cannot open\n", db_path);
        sqlite3_close(db);
        return 1;
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT rollout, ts, state FROM rollout_state ORDER BY rollout", -1, &st, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "shade rollout: %s: no rollouts in this store (%s)\n", db_path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return 1;
    }
    int rc = 0;
    bool found = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        if (!name || (only && strcmp(name, only) != 0))
            continue;
        found = true;
        if (strcmp(cmd, "status") == 0) {
            struct canary_state s;
            const char *js = (const char *)sqlite3_column_text(st, 2);
            if (js && state_parse(js, &s) == 0)
                printf("%s: %s, step %zu, %llu checks; canary %llu requests (%llu failed), baseline %llu (%llu "
                       "failed)\n",
                       name, canary_phase_names[s.phase], s.step + 1, (unsigned long long)s.checks,
                       (unsigned long long)s.total.can_req, (unsigned long long)s.total.can_fail,
                       (unsigned long long)s.total.base_req, (unsigned long long)s.total.base_fail);
            if (replay_one(db, name, true) < 0)
                rc = 1;
        } else {
            int r = replay_one(db, name, false);
            if (r != 0)
                rc = 1;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (only && !found) {
        fprintf(stderr, "shade rollout: no rollout named '%s' in %s\n", only, db_path);
        return 1;
    }
    return rc;
}
