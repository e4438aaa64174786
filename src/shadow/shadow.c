/* shadow.c — mirroring live requests to candidate models (see shadow.h for
 * the pipeline, doc/shadow.md for the whole picture).
 *
 * Everything here that runs per request runs on the request's worker loop;
 * what is shared between workers (state, in-flight count, budget, counters)
 * is atomics in struct shadow_rt.  Nothing on the user's path ever waits
 * for a shadow leg: legs are upstream exchanges of their own, with their
 * own deadline, and the pair they belong to is finished by whichever of the
 * user's request and the legs ends last.
 */
#include "shadow.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "balance.h"
#include "gateway.h"
#include "log.h"
#include "module.h"
#include "recorder.h"
#include "rand.h"
#include "side.h"

/* A leg is a side call (side.c owns the exchange) plus what is shadow's:
 * the pair it belongs to, its answer (captured into the pair), its metrics
 * and span. */
struct shadow_leg {
    struct worker *w;
    struct shadow_pair *pair;
    int kind;                      /* LEG_SHADOW or LEG_AA */
    struct shadow_rt *sh;
    const struct model_rt *m;
    struct backend *be;            /* once picked */
    struct side_call *call;        /* NULL until side_start returned it */
    int stream;                    /* -1: as the client's body */
    const char *cbody;             /* the client's body, only during leg_start */
    size_t cbody_len;
    uint64_t t_start;
    struct trace_ctx tc;           /* the leg's own trace (linked to the primary's) */
    uint64_t start_unix_ns;
};

static void count(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

static void answer_move(struct shadow_answer *dst, struct shadow_answer *src)
{
    *dst = *src;
    memset(src, 0, sizeof *src);
}

static void answer_copy(struct shadow_answer *dst, const struct shadow_answer *src)
{
    shadow_answer_init(dst, src->text_max);
    buf_append(&dst->text, buf_data(&src->text), buf_used(&src->text));
    buf_append(&dst->tools, buf_data(&src->tools), buf_used(&src->tools));
    dst->text_truncated = src->text_truncated;
    dst->tools_truncated = src->tools_truncated;
    dst->tools_full = src->tools_full;
    dst->too_large = src->too_large;
    dst->body_bytes = src->body_bytes;
    memcpy(dst->finish, src->finish, sizeof dst->finish);
    dst->usage_in = src->usage_in;
    dst->usage_out = src->usage_out;
    dst->events_out = src->events_out;
    dst->t_first_ns = src->t_first_ns;
    dst->t_last_ns = src->t_last_ns;
    dst->itl_sum_ms = src->itl_sum_ms;
    dst->itl_max_ms = src->itl_max_ms;
    dst->itl_n = src->itl_n;
}

/* ---------------------------------------------------------------- pairs */

static void pair_unref(struct shadow_pair *p)
{
    if (--p->refs > 0)
        return;
    recorder_submit(p); /* owns it now: stored, or dropped and counted */
}

/* ---------------------------------------------------------------- legs */

static void budget_window(struct shadow_rt *sh)
{
    uint64_t hour = (uint64_t)time(NULL) / 3600;
    uint64_t cur = atomic_load_explicit(&sh->budget_hour, memory_order_relaxed);
    if (cur != hour && atomic_compare_exchange_strong(&sh->budget_hour, &cur, hour)) {
        atomic_store(&sh->budget_tokens, 0);
        atomic_store(&sh->budget_micro_usd, 0);
    }
}

/* The leg in the request families, as variant "shadow" or "aa" of the
 * model that served it: dashboards compare candidates with the primary. */
static void leg_metrics(struct shadow_leg *leg, const struct shadow_leg_result *res, const char *error, uint64_t now,
                        int64_t tin, int64_t tout)
{
    struct met_shard *met = leg->w->met;
    const struct met_layout *lay = &leg->w->gw->lay;
    int code = res->status;
    if (code < 100 || code > 599)
        code = !error ? 599
               : (!strcmp(error, "timeout") || !strcmp(error, "deadline")) ? 504
               : (!strcmp(error, "aborted") || !strcmp(error, "shutdown")) ? 499
                                                                          : 502;
    /* counted under the mirrored model's name (no backend): dashboards and
     * alerts compare variant="shadow" with variant="primary" per model */
    size_t key = metrics_vkey(lay, leg->kind == LEG_SHADOW ? VAR_SHADOW : VAR_AA,
                              metrics_key(lay, leg->sh->model->index, -1));
    met_add(&met->requests[key][code - 100], 1);
    met_observe(&met->duration[key], (now - leg->t_start) / 1000u);
    const struct shadow_answer *a = &res->ans;
    if (res->streamed && a->t_first_ns) {
        met_observe(&met->ttft[key], (a->t_first_ns - leg->t_start) / 1000u);
        if (a->events_out > 1 && a->t_last_ns > a->t_first_ns)
            met_observe_in(&met->tpot[key], (a->t_last_ns - a->t_first_ns) / 1000u / (uint64_t)(a->events_out - 1),
                           met_buckets_tpot, 1e-6);
    }
    if (!error && leg->be) {
        met_add(&met->tokens_in[key], (uint64_t)(tin > 0 ? tin : 0));
        met_add(&met->tokens_out[key], (uint64_t)(tout > 0 ? tout : 0));
    }
}

/* The leg's span: a trace of its own (a slow candidate must not stretch
 * the user's trace), linked to the user's request span. */
static void leg_span(struct shadow_leg *leg, const struct shadow_leg_result *res, const char *error)
{
    struct tracer *t = leg->w->gw->tracer;
    if (!t || !(leg->tc.flags & TRACE_FLAG_SAMPLED))
        return;
    struct span sp;
    memset(&sp, 0, sizeof sp);
    memcpy(sp.trace_id, leg->tc.trace_id, 16);
    memcpy(sp.span_id, leg->tc.span_id, 8);
    sp.kind = SPAN_CLIENT;
    snprintf(sp.name, sizeof sp.name, "%s %s", leg->kind == LEG_SHADOW ? "shadow" : "aa", leg->sh->cfg->name);
    sp.start_unix_ns = leg->start_unix_ns;
    sp.end_unix_ns = trace_unix_ns();
    span_add_link(&sp, leg->pair->primary_tc.trace_id, leg->pair->primary_tc.span_id);
    span_attr_str(&sp, "shade.shadow", leg->sh->cfg->name, strlen(leg->sh->cfg->name));
    span_attr_str(&sp, "shade.leg", shadow_leg_names[leg->kind], strlen(shadow_leg_names[leg->kind]));
    span_attr_str(&sp, "gen_ai.request.model", leg->m->cfg->name, strlen(leg->m->cfg->name));
    span_attr_str(&sp, "shade.request_id", leg->pair->reqid, strlen(leg->pair->reqid));
    if (leg->be)
        span_attr_str(&sp, "shade.backend", leg->be->cfg->name, strlen(leg->be->cfg->name));
    if (res->status)
        span_attr_int(&sp, "http.response.status_code", res->status);
    if (res->ttft_ms >= 0)
        span_attr_double(&sp, "shade.ttft_ms", res->ttft_ms);
    if (error) {
        span_attr_str(&sp, "error.type", error, strlen(error));
        sp.status = SPAN_STATUS_ERROR;
    }
    tracer_submit(t, &sp);
}

/* The leg is over (any way): fill its result, free it, let go of the pair. */
static void leg_end(struct shadow_leg *leg, const struct side_result *r, const char *error, int outcome)
{
    struct shadow_pair *pair = leg->pair;
    struct shadow_leg_result *res = &pair->leg[leg->kind];
    struct shadow_rt *sh = leg->sh;
    uint64_t now = r->t_end_ns;
    atomic_fetch_sub_explicit(&sh->inflight, 1, memory_order_relaxed);
    if (r->sse) {
        if (r->sse_skipped) /* an event at the very end was lost */
            shadow_answer_gap(&res->ans);
        shadow_answer_finish_stream(&res->ans);
    } else if (!error && r->status >= 200 && r->status < 300) {
        /* a 2xx answer that cannot be read is not a success with an empty
         * answer: too large to be read, or not a JSON object (protocol) */
        struct json_span root;
        if (r->too_large) {
            res->ans.too_large = true;
            res->ans.body_bytes = r->body_bytes;
            error = "too_large";
        } else if (json_validate(r->body ? r->body : "", r->body_len, &root, NULL) == 0 &&
                   root.type == JSON_OBJECT) {
            shadow_answer_json_root(&res->ans, &root);
        } else {
            error = "protocol";
        }
        if (error)
            outcome = OUT_ERROR;
    }
    res->status = r->status;
    res->error = error;
    res->latency_ms = (double)(now - leg->t_start) / 1e6;
    res->ttft_ms = res->ans.t_first_ns ? (double)(res->ans.t_first_ns - leg->t_start) / 1e6 : -1;
    if (!res->streamed)
        res->ttft_ms = -1;
    /* the budget pays for what the leg consumed */
    int64_t tin, tout;
    shadow_leg_tokens(res, pair->prompt_bytes, &tin, &tout);
    budget_window(sh);
    atomic_fetch_add_explicit(&sh->budget_tokens, (uint64_t)(tin + tout), memory_order_relaxed);
    double usd = ((double)tin * res->price_in + (double)tout * res->price_out) / 1e6;
    atomic_fetch_add_explicit(&sh->budget_micro_usd, (uint64_t)llround(usd * 1e6), memory_order_relaxed);
    count(&sh->legs[leg->kind][outcome]);
    leg_metrics(leg, res, error, now, tin, tout);
    leg_span(leg, res, error);
    pair->legs[leg->kind] = NULL;
    free(leg);
    pair_unref(pair);
}

static void leg_on_event(void *arg, const char *data, size_t len, bool gap)
{
    struct shadow_leg *leg = arg;
    struct shadow_answer *a = &leg->pair->leg[leg->kind].ans;
    if (gap) /* an earlier event was lost: keep the prefix before it */
        shadow_answer_gap(a);
    shadow_answer_sse(a, data, len, mono_ns());
}

const char *shadow_err_kind(enum up_err e)
{
    switch (e) {
    case UP_OK: return NULL;
    case UP_ECONNECT:
    case UP_ECONNECT_TIMEOUT:
    case UP_ETLS: return "connect";
    case UP_EFIRSTBYTE_TIMEOUT:
    case UP_EIDLE_TIMEOUT:
    case UP_ETOTAL_TIMEOUT: return "timeout";
    case UP_ECLOSED: return "closed";
    case UP_EPROTO: return "protocol";
    case UP_E5XX: return "http_5xx";
    case UP_E429: return "http_429";
    case UP_ENOMEM:
    case UP__COUNT: break;
    }
    return "protocol";
}

static const char *status_kind(int status)
{
    if (status >= 200 && status < 300)
        return NULL;
    if (status == 429)
        return "http_429";
    if (status >= 500)
        return "http_5xx";
    if (status >= 400)
        return "http_4xx";
    return "protocol";
}

/* How the exchange ended, in the store's error kinds and the legs' outcomes. */
static void leg_on_end(void *arg, const struct side_result *r)
{
    struct shadow_leg *leg = arg;
    const char *k = NULL;
    int outcome = OUT_ERROR;
    switch (r->end) {
    case SIDE_DONE:
        k = status_kind(r->status);
        outcome = k ? OUT_ERROR : OUT_OK;
        break;
    case SIDE_FAILED:
        k = shadow_err_kind(r->err);
        outcome = up_err_is_timeout(r->err) ? OUT_TIMEOUT : OUT_ERROR;
        break;
    case SIDE_DEADLINE: k = "deadline", outcome = OUT_DEADLINE; break;
    case SIDE_NO_BACKEND: k = "no_backend"; break;
    case SIDE_NOMEM: k = "aborted"; break;
    case SIDE_CANCELLED: k = "aborted", outcome = OUT_CANCELLED; break;
    case SIDE_SHUTDOWN: k = "shutdown", outcome = OUT_CANCELLED; break;
    }
    leg_end(leg, r, k, outcome);
}

/* What a leg sets itself, so the client's copies are left out. */
struct leg_drop {
    bool model, stream;
    const struct config_override *set;
    size_t nset;
};

static bool leg_sets(const struct json_span *key, void *arg)
{
    const struct leg_drop *d = arg;
    return (d->model && json_str_eq(key, "model")) ||
           (d->stream && (json_str_eq(key, "stream") || json_str_eq(key, "stream_options"))) ||
           pl_override_named(d->set, d->nset, key);
}

/* The leg's body: the client's members minus those the leg sets, then the
 * leg's own (model, stream, overrides).  stream: -1 = as the client's.
 * Every copy of a member the leg sets is dropped, so the candidate never
 * sees two values for one (the proxy already refused bodies repeating a
 * member it reads, model among them: proxy.c, interpreted_keys). */
static int build_body(struct buf *out, const char *body, size_t len, const char *model, int stream,
                      const struct config_override *set, size_t nset)
{
    struct json_span root;
    if (json_validate(body, len, &root, NULL) < 0 || root.type != JSON_OBJECT)
        return -1;
    buf_append(out, "{", 1);
    struct leg_drop drop = { model != NULL, stream >= 0, set, nset };
    bool first = pl_write_members(out, &root, leg_sets, &drop) == 0;
    if (model) {
        char esc[600];
        long el = json_escape(model, strlen(model), esc, sizeof esc);
        if (el < 0)
            return -1;
        buf_append_str(out, first ? "\"model\":" : ",\"model\":");
        buf_append(out, esc, (size_t)el);
        first = false;
    }
    if (stream >= 0) {
        buf_append_str(out, first ? "" : ",");
        buf_append_str(out, stream ? "\"stream\":true,\"stream_options\":{\"include_usage\":true}"
                                   : "\"stream\":false");
        first = false;
    }
    pl_write_overrides(out, set, nset, !first);
    buf_append(out, "}", 1);
    return buf_data(out) ? 0 : -1;
}

/* The backend is picked: the leg's body for it.  The model name upstream:
 * the shadow's upstream_model, else the backend's own, else the target's
 * public name (an inline pool keeps the client's); the A/A leg the
 * backend's own. */
static int leg_on_pick(void *arg, const struct backend *be, struct buf *body)
{
    struct shadow_leg *leg = arg;
    struct shadow_rt *sh = leg->sh;
    struct shadow_leg_result *res = &leg->pair->leg[leg->kind];
    const char *um = NULL;
    leg->be = (struct backend *)be;
    res->backend = be->cfg->name;
    if (leg->kind == LEG_SHADOW)
        um = sh->cfg->upstream_model ? sh->cfg->upstream_model
             : be->cfg->model        ? be->cfg->model
             : leg->m->cfg->hidden   ? NULL
                                     : leg->m->cfg->name;
    else
        um = be->cfg->model;
    res->upstream_model = um;
    res->streamed = leg->stream == 1;
    bool own = leg->kind == LEG_SHADOW;
    return build_body(body, leg->cbody, leg->cbody_len, um, leg->stream, own ? sh->cfg->set : NULL,
                      own ? sh->cfg->nset : 0);
}

static const struct side_ops leg_ops = {
    .on_pick = leg_on_pick,
    .on_event = leg_on_event,
    .on_end = leg_on_end,
};

/* Start one leg of pair on model m (kind LEG_SHADOW or LEG_AA), built from
 * the client's body (only read here: the upstream connection keeps its own
 * copy while the leg is in flight).  The caller has taken the leg's
 * in-flight slot.  Never fails: a leg that cannot start ends at once with
 * its reason. */
static void leg_start(struct worker *w, struct shadow_pair *pair, int kind, const struct model_rt *m,
                      int stream, const struct pick_hint *hint, const char *cbody, size_t cbody_len)
{
    struct shadow_rt *sh = pair->sh;
    struct shadow_leg_result *res = &pair->leg[kind];
    struct shadow_leg *leg = calloc(1, sizeof *leg);
    res->present = true;
    res->target = m->cfg->name;
    res->price_in = m->cfg->input_price_per_mtok;
    res->price_out = m->cfg->output_price_per_mtok;
    res->ttft_ms = -1;
    shadow_answer_init(&res->ans, w->gw->cfg->store.response_max_bytes);
    if (!leg) {
        atomic_fetch_sub_explicit(&sh->inflight, 1, memory_order_relaxed);
        res->error = "aborted";
        count(&sh->legs[kind][OUT_ERROR]);
        return;
    }
    pair->refs++;
    pair->legs[kind] = leg;
    leg->w = w;
    leg->pair = pair;
    leg->kind = kind;
    leg->sh = sh;
    leg->m = m;
    leg->stream = stream;
    leg->cbody = cbody;
    leg->cbody_len = cbody_len;
    leg->t_start = mono_ns();
    leg->start_unix_ns = trace_unix_ns();
    trace_new_trace_id(&w->rng, leg->tc.trace_id);
    trace_new_span_id(&w->rng, leg->tc.span_id);
    leg->tc.flags = pair->primary_tc.flags; /* traced when the user's request is */

    char tp[TRACE_PARENT_LEN + 1];
    trace_format(&leg->tc, tp);
    const char *tag = kind == LEG_SHADOW ? sh->cfg->name : "aa";
    const struct http_hdr hdrs[] = {
        { "x-request-id", 12, pair->reqid, strlen(pair->reqid) },
        { "x-shade-shadow", 14, tag, strlen(tag) },
        { "traceparent", 11, tp, TRACE_PARENT_LEN },
    };
    struct side_request rq = {
        .path = pair->chat ? "/v1/chat/completions" : "/v1/completions",
        .hdrs = hdrs,
        .nhdrs = sizeof hdrs / sizeof hdrs[0],
        .hint = *hint,
        .deadline_ms = sh->cfg->deadline_ms,
        .capture_max = SHADOW_LEG_CAPTURE_MAX,
    };
    /* NULL: the leg has ended already (and is freed) */
    struct side_call *c = side_start(w, m, &rq, &leg_ops, leg);
    if (c) {
        leg->call = c;
        leg->cbody = NULL; /* the client's body may go before the leg ends */
    }
}

/* ---------------------------------------------------------------- selection */

static uint64_t next_rand(struct worker *w)
{
    return rnd_xorshift64s(&w->rng); /* the worker's own state (seeded by server.c) */
}

static bool sampled(struct worker *w, double percent)
{
    if (percent >= 100)
        return true;
    return (double)(next_rand(w) >> 11) * (1.0 / 9007199254740992.0) * 100.0 < percent;
}

static bool bearer(const http_req *r, const char **key, size_t *len)
{
    const struct http_hdr *h = http_req_header(r, "authorization");
    if (!h || h->value_len <= 7 || strncasecmp(h->value, "bearer ", 7) != 0)
        return false;
    *key = h->value + 7;
    *len = h->value_len - 7;
    return true;
}

static bool has_tool_results(const struct json_span *root)
{
    struct json_span msgs, msg, key, role;
    if (!json_get(root, "messages", &msgs) || msgs.type != JSON_ARRAY)
        return false;
    size_t it = 0;
    while (json_next(&msgs, &it, &key, &msg))
        if (msg.type == JSON_OBJECT && json_get(&msg, "role", &role) &&
            (json_str_eq(&role, "tool") || json_str_eq(&role, "function")))
            return true;
    return false;
}

/* Is this request for this shadow?  SKIP__COUNT = yes. */
static int select_request(struct worker *w, struct shadow_rt *sh, http_req *r, const struct json_span *root,
                          const char *key_name)
{
    const struct config_shadow *c = sh->cfg;
    int st = atomic_load_explicit(&sh->state, memory_order_relaxed);
    if (st != SHADOW_RUNNING)
        return st == SHADOW_PAUSED ? SKIP_PAUSED : SKIP_STOPPED;
    if (http_req_header(r, c->opt_out_header))
        return SKIP_OPT_OUT;
    const char *k = NULL;
    size_t kl = 0;
    switch (c->select) {
    case SHADOW_SELECT_HEADER: {
        const struct http_hdr *h = http_req_header(r, c->select_header);
        if (!h || h->value_len == 0 || (h->value_len == 1 && h->value[0] == '0') ||
            (h->value_len == 5 && strncasecmp(h->value, "false", 5) == 0))
            return SKIP_NOT_SELECTED;
        break;
    }
    case SHADOW_SELECT_KEY: {
        bool in = false;
        /* the name of the key auth checked (so no secret is in the config), or the raw key */
        for (size_t i = 0; key_name && i < c->nkeys && !in; i++)
            in = strcmp(c->keys[i], key_name) == 0;
        if (!in && bearer(r, &k, &kl))
            for (size_t i = 0; i < c->nkeys && !in; i++)
                in = strlen(c->keys[i]) == kl && memcmp(c->keys[i], k, kl) == 0;
        if (!in)
            return SKIP_NOT_SELECTED;
        break;
    }
    case SHADOW_SELECT_HASH: {
        /* the same users, every time: a stable hash of the user's key */
        char user[256];
        const struct http_hdr *h = c->hash_header ? http_req_header(r, c->hash_header) : NULL;
        struct json_span u;
        if (h && h->value_len) {
            k = h->value;
            kl = h->value_len;
        } else if (json_get(root, "user", &u) && u.type == JSON_STRING && u.len > 2) {
            long n = json_str_unescape(&u, user, sizeof user);
            if (n > 0) {
                k = user;
                kl = (size_t)n;
            }
        }
        if (!k && key_name) { /* the key auth checked: its name, which a rotation keeps */
            k = key_name;
            kl = strlen(key_name);
        }
        if (!k && !bearer(r, &k, &kl))
            return SKIP_NO_USER_KEY;
        uint64_t hv = rnd_fnv1a64(rnd_fnv1a64(RND_FNV1A64_INIT, c->name, strlen(c->name)), k, kl);
        if ((double)(hv % 10000) >= c->sample_percent * 100.0)
            return SKIP_SAMPLED_OUT;
        return c->skip_tool_results && has_tool_results(root) ? SKIP_TOOL_RESULTS : SKIP__COUNT;
    }
    default: break;
    }
    if (!sampled(w, c->sample_percent))
        return SKIP_SAMPLED_OUT;
    if (c->skip_tool_results && has_tool_results(root))
        return SKIP_TOOL_RESULTS;
    return SKIP__COUNT;
}

static void sha256_hex(const char *s, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    if (!EVP_Digest(s, n, md, &len, EVP_sha256(), NULL) || len != 32) {
        snprintf(out, 65, "unknown");
        return;
    }
    for (int i = 0; i < 32; i++)
        snprintf(out + i * 2, 3, "%02x", md[i]);
}

/* What the pair keeps of the prompt: the bounded prefix the store can use
 * and the hash of the whole.  The hash is taken here, on the worker (about
 * 0.7 ms per MB of prompt on a CPU with SHA extensions, a few ms without —
 * beside the body's own JSON validation), so that the pair need not keep
 * the whole body until the writer runs. */
static int keep_prompt(struct shadow_pair *pair, const struct json_span *pr, size_t max, const char *hash)
{
    size_t keep = pr->len;
    if (keep > (size_t)max + SHADOW_PROMPT_SLACK) {
        keep = (size_t)max + SHADOW_PROMPT_SLACK;
        while (keep > 0 && ((unsigned char)pr->p[keep] & 0xC0) == 0x80)
            keep--; /* never cut a UTF-8 character */
    }
    pair->prompt = malloc(keep ? keep : 1);
    if (!pair->prompt)
        return -1;
    if (keep)
        memcpy(pair->prompt, pr->p, keep);
    pair->prompt_len = keep;
    pair->prompt_cut = keep < pr->len;
    pair->prompt_bytes = pr->len;
    memcpy(pair->prompt_hash, hash, sizeof pair->prompt_hash);
    return 0;
}

/* Over its cap or its hourly budget, a shadow drops the pair. */
static int admit(struct shadow_rt *sh)
{
    const struct config_shadow *c = sh->cfg;
    budget_window(sh);
    if ((c->budget_tokens_per_hour && atomic_load(&sh->budget_tokens) >= c->budget_tokens_per_hour) ||
        (c->budget_usd_per_hour > 0 && (double)atomic_load(&sh->budget_micro_usd) >= c->budget_usd_per_hour * 1e6))
        return DROP_BUDGET;
    if (atomic_fetch_add_explicit(&sh->inflight, 1, memory_order_relaxed) >= (int)c->max_concurrent) {
        atomic_fetch_sub_explicit(&sh->inflight, 1, memory_order_relaxed);
        return DROP_CAP;
    }
    return -1;
}

struct shadow_primary *shadow_mirror(struct worker *w, const struct model_rt *m, http_req *r,
                                     const char *body, size_t body_len, const struct json_span *root,
                                     enum met_endpoint ep, bool stream,
                                     uint64_t est_tokens, const struct trace_ctx *primary, const char *key_name)
{
    struct shadow_primary *sp = NULL;
    bool chat = ep == EP_CHAT;
    bool ok = ep == EP_CHAT || ep == EP_COMPLETIONS; /* root: the proxy validated the body once */
    struct json_span pr = { 0 };
    char hash[65] = "";
    if (ok && !json_get(root, chat ? "messages" : "prompt", &pr))
        memset(&pr, 0, sizeof pr); /* no prompt: stored empty, hashed as "" */
    for (size_t i = 0; i < m->nshadows; i++) {
        struct shadow_rt *sh = m->shadows[i];
        int skip = ok ? select_request(w, sh, r, root, key_name) : SKIP_ENDPOINT;
        if (skip != SKIP__COUNT) {
            count(&sh->skipped[skip]);
            continue;
        }
        count(&sh->mirrored);
        int drop = admit(sh);
        if (drop >= 0) {
            recorder_drop(sh, drop);
            continue;
        }
        struct shadow_pair *pair = calloc(1, sizeof *pair);
        if (!sp && pair) {
            sp = calloc(1, sizeof *sp);
            if (sp) {
                shadow_answer_init(&sp->ans, w->gw->cfg->store.response_max_bytes);
                sp->chat = chat;
            }
        }
        if (pair && !hash[0])
            sha256_hex(pr.p ? pr.p : "", pr.len, hash); /* once for all the request's pairs */
        if (!pair || !sp || keep_prompt(pair, &pr, w->gw->cfg->store.prompt_max_bytes, hash) < 0 ||
            sp->npairs == SHADOWS_PER_REQUEST) {
            atomic_fetch_sub_explicit(&sh->inflight, 1, memory_order_relaxed);
            shadow_pair_free(pair);
            recorder_drop(sh, DROP_NOMEM);
            continue;
        }
        if (!pr.p)
            pair->prompt_bytes = body_len; /* token estimates: the whole body then */
        pair->sh = sh;
        pair->refs = 1; /* the primary */
        pair->chat = chat;
        pair->ts = unix_now();
        pair->primary_tc = *primary;
        snprintf(pair->reqid, sizeof pair->reqid, "%.*s", (int)r->reqid_len, r->reqid);
        sp->pairs[sp->npairs++] = pair;
        struct pick_hint hint = { 0, (uint32_t)est_tokens };
        int sstream = sh->cfg->stream == SHADOW_STREAM_ON ? 1 : sh->cfg->stream == SHADOW_STREAM_OFF ? 0
                                                                                                        : stream;
        leg_start(w, pair, LEG_SHADOW, sh->target, sstream, &hint, body, body_len);
        /* the noise floor: the same request to the primary again, when
         * there is room under the cap (best effort: never dropped for it) */
        if (sh->cfg->aa_percent > 0 && sampled(w, sh->cfg->aa_percent)) {
            if (atomic_fetch_add_explicit(&sh->inflight, 1, memory_order_relaxed) < (int)sh->cfg->max_concurrent)
                leg_start(w, pair, LEG_AA, sh->model, -1, &hint, body, body_len);
            else
                atomic_fetch_sub_explicit(&sh->inflight, 1, memory_order_relaxed);
        }
    }
    if (sp && sp->npairs == 0) {
        shadow_answer_free(&sp->ans);
        free(sp);
        sp = NULL;
    }
    return sp;
}

void shadow_primary_sse(struct shadow_primary *sp, const struct json_span *root)
{
    shadow_answer_sse_root(&sp->ans, root, mono_ns());
}

void shadow_primary_json(struct shadow_primary *sp, const struct json_span *root)
{
    sp->json_read = true;
    shadow_answer_json_root(&sp->ans, root);
}

void shadow_primary_gap(struct shadow_primary *sp) { shadow_answer_gap(&sp->ans); }

void shadow_primary_too_large(struct shadow_primary *sp, uint64_t bytes)
{
    sp->ans.too_large = true;
    sp->ans.body_bytes = bytes;
}

void shadow_primary_done(struct worker *w, struct shadow_primary *sp, int status, const char *error,
                         const char *backend, const char *target, bool streamed, uint64_t t_start_ns,
                         uint64_t t_first_ns, int64_t usage_in, int64_t usage_out, bool client_gone)
{
    uint64_t now = mono_ns();
    shadow_answer_finish_stream(&sp->ans);
    if (usage_in >= 0)
        sp->ans.usage_in = usage_in;
    if (usage_out >= 0)
        sp->ans.usage_out = usage_out;
    for (int i = 0; i < sp->npairs; i++) {
        struct shadow_pair *pair = sp->pairs[i];
        struct shadow_leg_result *res = &pair->leg[LEG_PRIMARY];
        const struct model_rt *pm = pair->sh->model;
        res->present = true;
        res->streamed = streamed;
        res->status = status;
        res->error = error ? error : status_kind(status);
        /* a 2xx answer the proxy could not read is not a success with an
         * empty answer (as for the legs, leg_end) */
        if (!res->error && !streamed)
            res->error = sp->ans.too_large ? "too_large" : !sp->json_read ? "protocol" : NULL;
        res->backend = backend;
        res->target = target ? target : pm->cfg->name;
        res->price_in = pm->cfg->input_price_per_mtok;
        res->price_out = pm->cfg->output_price_per_mtok;
        res->latency_ms = (double)(now - t_start_ns) / 1e6;
        res->ttft_ms = streamed && t_first_ns ? (double)(t_first_ns - t_start_ns) / 1e6 : -1;
        if (i == sp->npairs - 1)
            answer_move(&res->ans, &sp->ans);
        else
            answer_copy(&res->ans, &sp->ans);
        count(&pair->sh->legs[LEG_PRIMARY][res->error ? OUT_ERROR : OUT_OK]);
        if (client_gone && pair->sh->cfg->cancel_on_client_abort) {
            pair->refs++; /* the pair outlives the cancellations below */
            for (int k = LEG_SHADOW; k < LEG__COUNT; k++)
                if (pair->legs[k])
                    side_cancel(pair->legs[k]->call); /* ends as "aborted" */
            pair->refs--;
        }
        pair_unref(pair);
    }
    shadow_answer_free(&sp->ans);
    free(sp);
    (void)w;
}

/* ---------------------------------------------------------------- set-up */

const struct shadow_rt *shadow_find(const struct gateway *gw, const char *name, size_t len)
{
    for (size_t i = 0; i < gw->nshadows; i++)
        if (strlen(gw->shadows[i].cfg->name) == len && memcmp(gw->shadows[i].cfg->name, name, len) == 0)
            return &gw->shadows[i];
    return NULL;
}

int shadow_gateway_init(struct gateway *gw, char *err, size_t errlen)
{
    const struct config *cfg = gw->cfg;
    if (!cfg->nshadows)
        return 0;
    gw->shadows = calloc(cfg->nshadows, sizeof *gw->shadows);
    if (!gw->shadows)
        goto nomem;
    gw->nshadows = cfg->nshadows;
    for (size_t i = 0; i < cfg->nshadows; i++) {
        struct shadow_rt *sh = &gw->shadows[i];
        sh->cfg = &cfg->shadows[i];
        sh->index = (int)i;
        sh->model = &gw->models[sh->cfg->model_index];
        sh->target = &gw->models[sh->cfg->target_index];
        atomic_init(&sh->state, sh->cfg->initial_state);
        pthread_mutex_init(&sh->lock, NULL);
        snprintf(sh->reason, sizeof sh->reason, "configuration");
        struct model_rt *m = (struct model_rt *)sh->model;
        if (m->nshadows == SHADOWS_PER_REQUEST) {
            snprintf(err, errlen, "%s: model %s has more than %d shadows", cfg->path, m->cfg->name,
                     SHADOWS_PER_REQUEST);
            return -1;
        }
        struct shadow_rt **ns = realloc(m->shadows, (m->nshadows + 1) * sizeof *ns);
        if (!ns)
            goto nomem;
        m->shadows = ns;
        m->shadows[m->nshadows++] = sh;
    }
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

void shadow_gateway_free(struct gateway *gw)
{
    for (size_t i = 0; i < gw->nmodels; i++) {
        free(gw->models[i].shadows);
        gw->models[i].shadows = NULL;
        gw->models[i].nshadows = 0;
    }
    for (size_t i = 0; i < gw->nshadows; i++) {
        pthread_mutex_destroy(&gw->shadows[i].lock);
        free(gw->shadows[i].live_json);
        free(gw->shadows[i].live_text);
    }
    free(gw->shadows);
    gw->shadows = NULL;
    gw->nshadows = 0;
}

/* ---------- the shadow module (modules.c) ---------- */

struct shadow_req {
    struct shadow_primary *sp;   /* the pairs this request is the primary of */
};

/* Mirrored once admitted and routed (a request shed under overload is not
 * doubled by its shadows), and only after the user's own request is on its
 * way: the legs' set-up never delays it. */
static void shadow_on_sent(struct pl_req *q, void *ctx)
{
    struct shadow_req *s = ctx;
    if (!q->m0->nshadows)
        return;
    s->sp = shadow_mirror(q->w, q->m0, q->http, q->body, q->body_len, &q->root, q->ep, q->stream, q->est_tokens,
                          &q->tc, q->key_name);
    q->mirrored = s->sp ? s->sp->npairs : 0;
}

static void shadow_on_event(struct pl_req *q, void *ctx, const struct pl_event *ev)
{
    struct shadow_req *s = ctx;
    if (!s->sp)
        return;
    if (ev->is_body) {
        if (ev->status < 300)
            shadow_primary_json(s->sp, ev->root);
        return;
    }
    if (ev->gap) /* an earlier event was lost: the answer ends before it */
        shadow_primary_gap(s->sp);
    shadow_primary_sse(s->sp, ev->root);
}

static void shadow_on_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct shadow_req *s = ctx;
    if (!s->sp)
        return;
    if (o->body_too_large)
        shadow_primary_too_large(s->sp, o->body_bytes);
    if (o->answer_gap)
        shadow_primary_gap(s->sp); /* the stream's last event was lost */
    shadow_primary_done(q->w, s->sp, o->status, o->err_kind, o->be ? o->be->cfg->name : NULL,
                        q->m ? q->m->cfg->name : NULL, o->is_sse, q->http->t_ready_ns, o->t_first_token, -1, -1,
                        o->aborted);
    s->sp = NULL;
}

const struct pl_module mod_shadow = {
    .name = "shadow",
    .phase = PH_NONE,
    .ctx_size = sizeof(struct shadow_req),
    .on_sent = shadow_on_sent,
    .on_event = shadow_on_event,
    .on_finish = shadow_on_finish,
};
