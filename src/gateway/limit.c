/* limit.c — per-key limits and budgets: the module mod_limit (phase LIMIT,
 * after the key is known; doc/keys.md).
 *
 * A key (keys.h) may have, for all its traffic and per model:
 *
 *   rpm          requests per minute       a token bucket refilled evenly
 *   tpm          tokens per minute         the same, prompt + completion
 *   concurrency  requests in flight        a gauge
 *   budget       USD per day/week/month    a window, at the model's prices
 *
 * Reserve, then settle.  At admission every bucket that applies is charged
 * the request's worst case, all or nothing, in the shared state (state.h:
 * the same buckets for every worker and every serving process, kept across
 * reloads): 1 request, the prompt estimate + max_tokens (or
 * auth.default_max_tokens) tokens, that many tokens' cost.  At finish the
 * reservation is settled with the real usage, streamed or not: the unused
 * part goes back, an overage is taken.  So whatever the concurrency, a
 * limit is overshot by at most one request's error of estimate.
 *
 * Refused: 429 with the OpenAI error object (type requests / tokens /
 * insufficient_quota, code rate_limit_exceeded / insufficient_quota),
 * Retry-After, and the x-ratelimit-* headers, which every answer of a key
 * with rpm or tpm limits carries too.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "gateway.h"
#include "keys.h"
#include "log.h"
#include "module.h"
#include "rand.h"
#include "state.h"

extern const struct pl_module mod_auth, mod_limit;

enum { R_RPM, R_TPM, R_CONC, R_BUDGET, R_TOO_LARGE, R__N };
static const char *const rule_names[R__N] = { "rpm", "tpm", "concurrency", "budget", "too_large" };

static struct {
    _Atomic uint64_t refused[R__N];
    _Atomic uint64_t soft_alerts, state_full;
} M;

struct limit_ctx {
    struct st_bucket b[ST_MAX_BUCKETS];
    int64_t amount[ST_MAX_BUCKETS];
    uint8_t rule[ST_MAX_BUCKETS];
    uint8_t n;
    bool reserved;
    bool waiting;            /* a reservation's answer is pending (a remote backend) */
    struct pl_req *q;
    struct st_pending pend;
    /* for the x-ratelimit-* headers: the tightest scope of each kind */
    int64_t lim_req, rem_req, reset_req, lim_tok, rem_tok, reset_tok;
    char hv[6][24];
};

/* ---------------------------------------------------------------- buckets */

static void derive(uint64_t out[2], const uint64_t base[2], uint64_t tag)
{
    out[0] = rnd_mix64(base[0] ^ tag * 0x9e3779b97f4a7c15ull);
    out[1] = rnd_mix64(base[1] + tag) | 1;
}

static void add(struct limit_ctx *c, int rule, const uint64_t base[2], uint64_t tag, enum st_kind kind, int64_t cap,
                int64_t period_ms, int64_t amount)
{
    if (c->n >= ST_MAX_BUCKETS)
        return;
    struct st_bucket *b = &c->b[c->n];
    *b = (struct st_bucket){ .capacity = cap, .period_ms = period_ms, .kind = kind };
    derive(b->id, base, tag);
    c->amount[c->n] = amount;
    c->rule[c->n] = (uint8_t)rule;
    c->n++;
}

static void add_scope(struct limit_ctx *c, const struct key_limits *l, const uint64_t base[2], int64_t tokens)
{
    if (l->rpm)
        add(c, R_RPM, base, 1, ST_REFILL, l->rpm, 60000, 1);
    if (l->tpm)
        add(c, R_TPM, base, 2, ST_REFILL, l->tpm, 60000, tokens);
    if (l->concurrency)
        add(c, R_CONC, base, 3, ST_GAUGE, l->concurrency, 0, 1);
}

/* The budget's window containing now: its first day (the window's id) and
 * what is left of it. */
static void budget_window(int period, int64_t *window, int64_t *left_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, day = 86400000, next;
    key_period_days(period, now_ms / day, window, &next);
    *left_ms = next * day - now_ms;
}

static int64_t nano_usd(double usd)
{
    return usd <= 0 ? 0 : usd >= 9e9 ? (int64_t)9e18 : (int64_t)llround(usd * 1e9);
}

/* ---------------------------------------------------------------- headers */

/* Decimal digits of v >= 0 at p; returns the end (no snprintf: these run
 * for every answer of a limited key). */
static char *put_int(char *p, int64_t v)
{
    char t[24];
    int n = 0;
    if (v < 0)
        v = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (n)
        *p++ = t[--n];
    return p;
}

/* "6m0s", "1.5s", "20ms", as OpenAI writes the reset times. */
static void duration(char *out, int64_t ms)
{
    char *p = out;
    if (ms < 0)
        ms = 0;
    if (ms < 1000) {
        p = put_int(p, ms);
        *p++ = 'm';
    } else if (ms < 60000) {
        p = put_int(p, ms / 1000);
        int frac = (int)(ms % 1000);
        if (frac) {
            *p++ = '.';
            *p++ = (char)('0' + frac / 100);
            if (frac % 100) {
                *p++ = (char)('0' + frac / 10 % 10);
                if (frac % 10)
                    *p++ = (char)('0' + frac % 10);
            }
        }
    } else {
        p = put_int(p, ms / 60000);
        *p++ = 'm';
        p = put_int(p, ms % 60000 / 1000);
    }
    *p++ = 's';
    *p = 0;
}

static void note_headers(struct limit_ctx *c, const struct st_result *r)
{
    c->lim_req = c->lim_tok = -1;
    for (size_t i = 0; i < c->n; i++) {
        int rule = c->rule[i];
        if (rule != R_RPM && rule != R_TPM)
            continue;
        int64_t *lim = rule == R_RPM ? &c->lim_req : &c->lim_tok;
        int64_t *rem = rule == R_RPM ? &c->rem_req : &c->rem_tok;
        int64_t *rst = rule == R_RPM ? &c->reset_req : &c->reset_tok;
        if (*lim < 0 || r->remaining[i] < *rem) { /* the tightest scope speaks */
            *lim = c->b[i].capacity;
            *rem = r->remaining[i];
            *rst = r->reset_ms[i];
        }
    }
}

/* Fill hdrs with the x-ratelimit-* headers (values in c->hv); returns how many. */
static size_t rate_headers(struct limit_ctx *c, struct http_hdr *h)
{
    size_t n = 0;
    static const char *const names[6] = { "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                                          "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                                          "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens" };
    for (int k = 0; k < 2; k++) {
        int64_t lim = k ? c->lim_tok : c->lim_req;
        if (lim < 0)
            continue;
        *put_int(c->hv[3 * k], lim) = 0;
        *put_int(c->hv[3 * k + 1], k ? c->rem_tok : c->rem_req) = 0;
        duration(c->hv[3 * k + 2], k ? c->reset_tok : c->reset_req);
        for (int j = 0; j < 3; j++)
            h[n++] = (struct http_hdr){ names[3 * k + j], strlen(names[3 * k + j]), c->hv[3 * k + j],
                                        strlen(c->hv[3 * k + j]) };
    }
    return n;
}

/* ---------------------------------------------------------------- the phase */

static enum pl_rc refuse(struct pl_req *q, struct limit_ctx *c, const struct st_result *r)
{
    int i = r->failed, rule = c->rule[i];
    const struct st_bucket *b = &c->b[i];
    bool never = r->retry_ms < 0;
    atomic_fetch_add(&M.refused[never ? R_TOO_LARGE : rule], 1);
    char msg[320];
    const char *type = "requests", *code = "rate_limit_exceeded";
    switch (rule) {
    case R_RPM:
        snprintf(msg, sizeof msg,
                 "Rate limit reached for key '%.64s' on requests per min (RPM): Limit %lld. Please try again in "
                 "%.1fs.",
                 q->key->name, (long long)b->capacity, r->retry_ms / 1000.0);
        break;
    case R_TPM:
        type = "tokens";
        if (never)
            snprintf(msg, sizeof msg,
                     "Request too large for key '%.64s' on tokens per min (TPM): Limit %lld, Requested %lld "
                     "(the prompt estimate + max_tokens). Lower max_tokens or the prompt.",
                     q->key->name, (long long)b->capacity, (long long)c->amount[i]);
        else
            snprintf(msg, sizeof msg,
                     "Rate limit reached for key '%.64s' on tokens per min (TPM): Limit %lld, Remaining %lld, "
                     "Requested %lld. Please try again in %.1fs.",
                     q->key->name, (long long)b->capacity, (long long)r->remaining[i], (long long)c->amount[i],
                     r->retry_ms / 1000.0);
        break;
    case R_CONC:
        snprintf(msg, sizeof msg, "Too many requests in flight for key '%.64s': Limit %lld concurrent requests.",
                 q->key->name, (long long)b->capacity);
        break;
    default:
        type = "insufficient_quota";
        code = "insufficient_quota";
        snprintf(msg, sizeof msg,
                 "Key '%.64s' has used its budget of $%.2f for this %s%s. It resets in %.0f minutes.",
                 q->key->name, b->capacity / 1e9,
                 q->key->budget.period == KEY_PERIOD_DAY    ? "day"
                 : q->key->budget.period == KEY_PERIOD_WEEK ? "week"
                                                            : "month",
                 never ? " (this request alone could cost more)" : "", ceil(r->retry_ms / 60000.0));
        break;
    }
    struct http_hdr h[8];
    size_t n = rate_headers(c, h);
    char ra[24];
    if (!never) {
        snprintf(ra, sizeof ra, "%lld", (long long)(r->retry_ms + 999) / 1000);
        h[n++] = (struct http_hdr){ "retry-after", 11, ra, strlen(ra) };
    }
    char body[640];
    size_t bl = http_error_json(body, sizeof body, type, code, NULL, msg);
    http_start(q->http, 429, h, n, (int64_t)bl);
    http_write(q->http, body, bl);
    http_end(q->http);
    return PL_DONE;
}

/* What the reservation's answer means for the request. */
static enum pl_rc decide(struct pl_req *q, struct limit_ctx *c, const struct st_result *r)
{
    if (r->error) { /* the table is full: fail open, counted (a limit is not worth an outage) */
        atomic_fetch_add(&M.state_full, 1);
        c->n = 0;
        return PL_NEXT;
    }
    note_headers(c, r);
    if (!r->ok)
        return refuse(q, c, r);
    c->reserved = true;
    return PL_NEXT;
}

/* The answer of a pending reservation, on the worker loop. */
static void reserved_later(void *arg, const struct st_result *r)
{
    struct limit_ctx *c = arg;
    c->waiting = false;
    pl_resume(c->q, decide(c->q, c, r));
}

static enum pl_rc limit_request(struct pl_req *q, void *ctx)
{
    struct limit_ctx *c = ctx;
    const struct key_rec *k = q->key;
    c->lim_req = c->lim_tok = -1;
    if (!k || !q->m0)
        return PL_NEXT;
    const struct key_limits *ml = key_model_limits(k, q->m0->cfg->name);
    bool any = k->lim.rpm || k->lim.tpm || k->lim.concurrency || k->budget.usd > 0 ||
               (ml && (ml->rpm || ml->tpm || ml->concurrency));
    if (!any)
        return PL_NEXT;
    const struct config_auth *a = auth_config(q->w->gw->cfg);
    int64_t out = q->max_tokens >= 0 ? q->max_tokens : (a ? a->default_max_tokens : 1024);
    int64_t prompt = (int64_t)(q->prompt_bytes + 3) / 4;
    int64_t tokens = prompt + out;
    uint64_t base[2];
    st_id(base, "key", k->id, strlen(k->id));
    add_scope(c, &k->lim, base, tokens);
    if (ml) {
        uint64_t mb[2];
        const char *mn = q->m0->cfg->name;
        mb[0] = rnd_mix64(rnd_fnv1a64(base[0], mn, strlen(mn)));
        mb[1] = rnd_mix64(rnd_fnv1a64(base[1], mn, strlen(mn)));
        add_scope(c, ml, mb, tokens);
    }
    if (k->budget.usd > 0) {
        const struct config_model *mc = q->m0->cfg; /* the model asked for: its prices */
        double worst = ((double)prompt * mc->input_price_per_mtok + (double)out * mc->output_price_per_mtok) / 1e6;
        add(c, R_BUDGET, base, 4 + (uint64_t)k->budget.period, ST_WINDOW, nano_usd(k->budget.usd), 0,
            nano_usd(worst));
        struct st_bucket *b = &c->b[c->n - 1];
        budget_window(k->budget.period, &b->window, &b->window_left_ms);
        b->fresh_used = nano_usd(keys_period_spend(k, (int64_t)time(NULL)));
    }
    struct st_result r;
    c->q = q;
    if (st_reserve_on(q->w->loop, c->b, c->n, c->amount, &r, &c->pend, reserved_later, c) == ST_PENDING) {
        c->waiting = true;
        return PL_WAIT;
    }
    return decide(q, c, &r);
}

static void limit_head(struct pl_req *q, void *ctx, const struct pl_head *h)
{
    struct limit_ctx *c = ctx;
    if (!c->reserved)
        return;
    struct http_hdr hd[6];
    size_t n = rate_headers(c, hd);
    for (size_t i = 0; i < n; i++)
        pl_head_add(h, hd[i].name, hd[i].value, hd[i].value_len);
}

/* Soft budget: once per key and window, across every process. */
static int64_t soft_once(int64_t v[4], bool fresh, int64_t now, void *arg)
{
    (void)now;
    *(bool *)arg = fresh || !v[0];
    v[0] = 1;
    return 40 * 86400000LL;
}

static void limit_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct limit_ctx *c = ctx;
    if (c->waiting) { /* the client left while the reservation was pending: given back whole */
        st_cancel(&c->pend);
        c->waiting = false;
    }
    const struct key_rec *k = q->key;
    if (k && q->m) {
        double cost = o->cost_usd;
        int64_t tin = o->tokens_in, tout = o->tokens_out;
        if (tin < 0 && o->aborted && o->be) { /* the client left mid-answer: what was made is charged */
            tin = (int64_t)(q->prompt_bytes + 3) / 4;
            tout = o->chunks_out;
            const struct config_model *mc = q->m->cfg;
            cost = ((double)tin * mc->input_price_per_mtok + (double)tout * mc->output_price_per_mtok) / 1e6;
        }
        if (tin >= 0)
            keys_record_usage(k, q->m0 ? q->m0->cfg->name : q->m->cfg->name, tin, tout, cost);
        if (c->reserved) {
            int64_t used[ST_MAX_BUCKETS];
            for (size_t i = 0; i < c->n; i++) {
                switch (c->rule[i]) {
                case R_RPM: used[i] = 1; break;
                case R_TPM: used[i] = tin >= 0 ? tin + (tout > 0 ? tout : 0) : 0; break;
                case R_CONC: used[i] = 0; break;
                default: used[i] = cost > 0 ? nano_usd(cost) : 0; break;
                }
            }
            /* only the buckets that change: a request is a request (rpm) */
            struct st_bucket sb[ST_MAX_BUCKETS];
            int64_t sr[ST_MAX_BUCKETS], su[ST_MAX_BUCKETS];
            size_t ns = 0;
            for (size_t i = 0; i < c->n; i++) {
                if (c->rule[i] != R_CONC && used[i] == c->amount[i])
                    continue;
                sb[ns] = c->b[i];
                sr[ns] = c->amount[i];
                su[ns++] = used[i];
            }
            if (ns)
                st_settle(sb, ns, sr, su);
            for (size_t i = 0; i < c->n; i++) {
                if (c->rule[i] != R_BUDGET || k->budget.soft_usd <= 0)
                    continue;
                int64_t left = st_peek(&c->b[i]);
                if (c->b[i].capacity - left >= nano_usd(k->budget.soft_usd)) {
                    uint64_t id[2];
                    derive(id, c->b[i].id, (uint64_t)c->b[i].window);
                    bool first = false;
                    st_update(id, soft_once, &first);
                    if (first) {
                        atomic_fetch_add(&M.soft_alerts, 1);
                        log_warn("key '%s' has spent $%.2f of its $%.2f budget (soft limit $%.2f)", k->name,
                                 (c->b[i].capacity - left) / 1e9, c->b[i].capacity / 1e9, k->budget.soft_usd);
                    }
                }
            }
            c->reserved = false;
        }
    }
}

static void limit_metrics(const struct gateway *gw, struct buf *o)
{
    if (!auth_on(auth_config(gw->cfg)))
        return;
    buf_append_str(o, "# HELP shade_limit_refused_total API requests refused by a key's limit "
                      "(too_large: it could never fit the tpm limit).\n"
                      "# TYPE shade_limit_refused_total counter\n");
    for (int i = 0; i < R__N; i++)
        buf_printf(o, "shade_limit_refused_total{limit=\"%s\"} %llu\n", rule_names[i],
                   (unsigned long long)atomic_load(&M.refused[i]));
    struct st_stats s;
    st_stats(&s);
    buf_printf(o,
               "# HELP shade_budget_soft_alerts_total Keys that passed their soft budget in a period.\n"
               "# TYPE shade_budget_soft_alerts_total counter\nshade_budget_soft_alerts_total %llu\n"
               "# HELP shade_state_slots_used Entries in use in the shared state (limits, lockouts).\n"
               "# TYPE shade_state_slots_used gauge\nshade_state_slots_used %llu\n"
               "# HELP shade_state_slots Entries the shared state holds.\n"
               "# TYPE shade_state_slots gauge\nshade_state_slots %llu\n"
               "# HELP shade_state_errors_total Operations on the shared state that found no room "
               "(the request was let through).\n"
               "# TYPE shade_state_errors_total counter\nshade_state_errors_total{reason=\"full\"} %llu\n",
               (unsigned long long)atomic_load(&M.soft_alerts), (unsigned long long)s.used,
               (unsigned long long)s.slots, (unsigned long long)s.full_errors);
}

const struct pl_module mod_limit = {
    .name = "limit",
    .phase = PH_LIMIT,
    .ctx_size = sizeof(struct limit_ctx),
    .on_request = limit_request,
    .on_head = limit_head,
    .on_finish = limit_finish,
    .metrics_render = limit_metrics,
};
