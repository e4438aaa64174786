/* proxy.c — the request core of the gateway.
 *
 *   decode    validate the JSON body once; find model, stream, usage flags
 *   phases    the modules' request phases (pipeline.c: auth, limit, guard,
 *             cache, route — table order in modules.c), possibly waiting
 *   admit     the model's max_in_flight, or its queue
 *   select    public model → pool → backend (balance.c), in-flight reserved
 *   proxy     build the upstream request (body forwarded byte for byte, only
 *             the model value spliced when the backend names it differently),
 *             stream the response back as it arrives; modules' on_sent once
 *             the first attempt is on the wire
 *   observe   beside the stream: TTFT, token usage, status; each event or
 *             the JSON body parsed once, to the modules' on_event
 *   rewrite   only when a module opted the request in (pl_transform): the
 *             events / the held JSON body re-emitted after its transforms
 *   finish    release the backend slot, settle one outcome, the modules'
 *             on_finish exactly once (metrics, span, access log, shadow)
 *
 * A request that fails before any byte reached the client may be retried on
 * another backend of the pool; after that, failures end the response.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

#include "proxy.h"
#include "keys.h"

#include "balance.h"
#include "buf.h"
#include "gateway.h"
#include "accesslog.h"
#include "json.h"
#include "mod_trace.h"
#include "module.h"
#include "shadow.h"
#include "rand.h"
#include "trace.h"
#include "sse.h"

#define CAPTURE_MAX (8u * 1024u * 1024u) /* non-streamed bodies kept for usage */

struct pctx {
    struct pl_req pl;             /* what modules see (module.h); first member */
    struct json_span model_val;   /* the "model" value in the client's body */
    struct pick_hint hint;        /* what the balancer needs to know */
    uint64_t t_attempt;           /* when the current attempt started (ns) */
    struct backend *be;           /* current/last backend, NULL before selection */
    bool reserved;                /* holds an in-flight slot on be */
    struct up_conn *up;
    uint64_t tried;               /* backends of p->pl.m tried by this request */
    int attempts;                 /* upstream attempts so far, all models */
    bool race_retried;
    size_t fallback_pos;          /* next entry of m0's fallback chain */
    ev_timer retry_timer;         /* next attempt (Retry-After, or at once) */
    ev_timer ka_timer;            /* SSE keep-alive comments before the first byte */
    bool committed;               /* a 200 SSE head went out before any upstream byte */
    bool upstream_fwd;            /* an upstream byte was forwarded: no more retries */
    bool error_in_stream;         /* committed, then the upstream failed: report in-band */
    bool gauged;                  /* counted in m0's in-flight gauge */
    /* admission */
    bool model_slot;              /* holds one of m0's max_in_flight slots */
    bool queued;                  /* waiting in the worker's queue of m0 */
    int prio;                     /* 0..9, 9 first */
    uint64_t queued_at;           /* loop ms */
    struct pctx *qnext, *qprev;
    struct buf head;              /* upstream request head, rebuilt per attempt */
    /* response */
    int status;
    bool is_sse, is_json, paused;
    /* a module transforms this response (pl_transform): SSE events are
     * re-emitted after the transforms, a JSON body is held until complete */
    bool xform, hold;
    struct buf xbuf[2];           /* the transforms' scratch, reused per event */
    struct buf xout;              /* re-emitted events of one upstream read: one write */
    struct sse_reader sse;
    bool sse_init;
    struct buf capture;
    bool capture_over;            /* the body outgrew the capture: dropped, not read */
    bool body_too_large;          /* ... and the answer completed: a 2xx too large to read */
    uint64_t body_seen;           /* bytes of a non-streamed body (estimates when over) */
    uint64_t t_first_token, t_last_token;
    int64_t usage_in, usage_out;
    bool usage_exact;
    int64_t chunks_out;
    const char *err_kind;         /* store.h error kind of a failure, NULL = by status */
    /* tracing: the current attempt's span (the request's is mod_trace's) */
    bool attempt_open;
    uint8_t attempt_span[8];
    uint64_t attempt_unix_ns;
};

/* the engine over modules.c's table, built once (proxy_engine_init) */
static struct pl_engine engine;

static const struct up_handlers up_cbs;

/* ---------- bookkeeping ---------- */

static bool traced(const struct pctx *p)
{
    return p->pl.w->gw->tracer && (p->pl.tc.flags & TRACE_FLAG_SAMPLED);
}

/* The current upstream attempt's span ends (status 0 = no answer). */
static void attempt_end(struct pctx *p, int status, const char *error)
{
    if (!p->attempt_open)
        return;
    p->attempt_open = false;
    if (!traced(p))
        return;
    struct span sp;
    memset(&sp, 0, sizeof sp);
    memcpy(sp.trace_id, p->pl.tc.trace_id, 16);
    memcpy(sp.span_id, p->attempt_span, 8);
    memcpy(sp.parent_span_id, p->pl.tc.span_id, 8);
    sp.has_parent = true;
    sp.kind = SPAN_CLIENT;
    snprintf(sp.name, sizeof sp.name, "upstream %s", p->be ? p->be->cfg->name : "?");
    sp.start_unix_ns = p->attempt_unix_ns;
    sp.end_unix_ns = trace_unix_ns();
    if (p->be) {
        span_attr_str(&sp, "shade.backend", p->be->cfg->name, strlen(p->be->cfg->name));
        span_attr_str(&sp, "server.address", p->be->cfg->host, strlen(p->be->cfg->host));
        span_attr_int(&sp, "server.port", p->be->cfg->port);
    }
    span_attr_int(&sp, "shade.attempt", p->attempts);
    if (status)
        span_attr_int(&sp, "http.response.status_code", status);
    if (error)
        span_attr_str(&sp, "error.type", error, strlen(error));
    sp.status = error || status >= 500 || status == 429 ? SPAN_STATUS_ERROR : SPAN_STATUS_UNSET;
    tracer_submit(p->pl.w->gw->tracer, &sp);
}


/* Overhead segments: shade's own work on the request, between waits. */
static void ovh_begin(struct pctx *p) { pl_ovh_begin(&p->pl); }
static void ovh_end(struct pctx *p) { pl_ovh_end(&p->pl); }

/* The outcome every module reads at finish: the usage settled once.  No
 * usage from upstream: count output chunks (one token each on vLLM,
 * llama.cpp, OpenAI) and estimate the prompt at 4 bytes/token; a body too
 * large to be read: 4 bytes of it per token. */
static void settle(struct pctx *p, int status, struct pl_outcome *o)
{
    *o = (struct pl_outcome){
        .status = status,
        .err_kind = p->err_kind,
        .aborted = status == 499,
        .be = p->be,
        .attempts = p->attempts,
        .is_sse = p->is_sse,
        .t_first_token = p->t_first_token,
        .t_last_token = p->t_last_token,
        .chunks_out = p->chunks_out,
        .tokens_in = -1,
        .tokens_out = -1,
        .cost_usd = -1,
        .answer_gap = p->sse_init && p->sse.skipped,
        .body_too_large = p->body_too_large,
        .body_bytes = p->body_seen,
    };
    if (!p->pl.m || !p->be || status < 100 || status >= 400)
        return;
    int64_t in = p->usage_in, out = p->usage_out;
    if (!p->usage_exact) {
        in = (int64_t)(p->pl.prompt_bytes / 4);
        out = p->capture_over ? (int64_t)(p->body_seen / 4) : p->chunks_out;
    }
    const struct config_model *mc = p->pl.m->cfg;
    double cost = (double)(in > 0 ? in : 0) * mc->input_price_per_mtok +
                  (double)(out > 0 ? out : 0) * mc->output_price_per_mtok; /* micro-USD */
    o->tokens_in = in;
    o->tokens_out = out;
    o->tokens_estimated = !p->usage_exact;
    o->cost_usd = cost / 1e6;
}

static void release_backend(struct pctx *p)
{
    if (p->reserved) {
        balance_release(p->be, &p->hint);
        p->reserved = false;
    }
}

static void pctx_free(struct pctx *p)
{
    ev_timer_stop(p->pl.w->loop, &p->retry_timer);
    ev_timer_stop(p->pl.w->loop, &p->ka_timer);
    if (p->gauged)
        met_gauge_add(&p->pl.w->met->inflight[p->pl.m0->index], -1);
    free(p->pl.owned_body);
    buf_free(&p->head);
    buf_free(&p->capture);
    buf_free(&p->xbuf[0]);
    buf_free(&p->xbuf[1]);
    buf_free(&p->xout);
    if (p->sse_init)
        sse_reader_free(&p->sse);
    free(p);
}

/* The response is complete (or failed): record and let go of everything. */
static void queue_unlink(struct pctx *p);

static void finish(struct pctx *p, int status)
{
    bool freed = p->reserved || p->model_slot;
    release_backend(p);
    if (p->model_slot) {
        atomic_fetch_sub_explicit(&((struct model_rt *)p->pl.m0)->inflight, 1, memory_order_relaxed);
        p->model_slot = false;
    }
    if (p->queued)
        queue_unlink(p);
    if (freed)
        ev_defer_post(p->pl.w->loop, &p->pl.w->queue_kick);
    ovh_end(p);
    attempt_end(p, p->up ? 0 : status, p->err_kind);
    struct pl_outcome o;
    settle(p, status, &o);
    pl_finish(&p->pl, &o);
    p->pl.http->ctx = NULL;
    p->pl.http->on_abort = NULL;
    p->pl.http->on_drain = NULL;
    pctx_free(p);
}

static void end_committed_with_error(struct pctx *p, int status, const char *code, const char *msg);

/* Answer with an error object — or, when keep-alive comments already
 * committed a 200 event stream, end that stream with an in-band error. */
static void fail(struct pctx *p, int status, const char *type, const char *code, const char *param,
                 const char *msg)
{
    if (p->committed) {
        end_committed_with_error(p, status, code, msg);
        return;
    }
    http_req *r = p->pl.http;
    finish(p, status);
    http_respond_error(r, status, type, code, param, "%s", msg);
}

/* ---------- observing the response beside the stream ---------- */

static void read_usage(struct pctx *p, const struct json_span *root)
{
    struct json_span u, v;
    if (!json_get(root, "usage", &u) || u.type != JSON_OBJECT)
        return;
    int64_t x;
    if (json_get(&u, "prompt_tokens", &v) && json_to_i64(&v, &x))
        p->usage_in = x;
    if (json_get(&u, "completion_tokens", &v) && json_to_i64(&v, &x))
        p->usage_out = x;
    p->usage_exact = true;
}

static bool has_output(const struct json_span *choice)
{
    struct json_span d, v;
    if (json_get(choice, "delta", &d) && d.type == JSON_OBJECT) {
        if (json_get(&d, "content", &v) && v.type == JSON_STRING && v.len > 2)
            return true;
        if (json_get(&d, "tool_calls", &v) && v.type == JSON_ARRAY)
            return true;
        if (json_get(&d, "reasoning_content", &v) && v.type == JSON_STRING && v.len > 2)
            return true;
        if (json_get(&d, "refusal", &v) && v.type == JSON_STRING && v.len > 2)
            return true;
        return false;
    }
    return json_get(choice, "text", &v) && v.type == JSON_STRING && v.len > 2;
}

/* One event's data as SSE: a data: line per line of it, then a blank line. */
static void frame_sse_data(struct buf *b, const char *d, size_t n)
{
    for (;;) {
        const char *nl = memchr(d, '\n', n);
        size_t l = nl ? (size_t)(nl - d) : n;
        buf_append(b, "data: ", 6);
        buf_append(b, d, l);
        buf_append(b, "\n", 1);
        if (!nl)
            break;
        d += l + 1;
        n -= l + 1;
    }
    buf_append(b, "\n", 1);
}

/* A transformed stream: the event goes out after the transforms (observers
 * have seen the upstream's version already). */
static void emit_event(struct pctx *p, const char *data, size_t len, const struct json_span *root)
{
    struct pl_payload in = { .data = data, .len = len, .root = root, .status = p->status };
    const char *o;
    size_t ol;
    if (pl_rewrite(&p->pl, &in, p->xbuf, &o, &ol))
        frame_sse_data(&p->xout, o, ol);
}

static void observe_event(struct pctx *p, const struct json_span *root);

static void on_sse_event(void *arg, const char *data, size_t len)
{
    struct pctx *p = arg;
    struct json_span root;
    bool obj = !(len == 6 && memcmp(data, "[DONE]", 6) == 0) && json_validate(data, len, &root, NULL) == 0 &&
               root.type == JSON_OBJECT;
    if (obj)
        observe_event(p, &root);
    if (p->xform)
        emit_event(p, data, len, obj ? &root : NULL);
}

/* What the upstream said, beside the stream: TTFT, output chunks, usage,
 * and the modules' on_event. */
static void observe_event(struct pctx *p, const struct json_span *root_)
{
    struct json_span root = *root_, choices, c0;
    if (json_get(&root, "choices", &choices) && choices.type == JSON_ARRAY) {
        size_t i = 0;
        struct json_span key;
        bool out = false;
        while (json_next(&choices, &i, &key, &c0))
            if (c0.type == JSON_OBJECT && has_output(&c0))
                out = true;
        if (out) {
            p->chunks_out++;
            p->t_last_token = mono_ns();
            if (!p->t_first_token)
                p->t_first_token = p->t_last_token;
        }
    }
    read_usage(p, &root);
    if (pl_wants_events(&engine)) {
        struct pl_event ev = { .root = &root, .status = p->status, .gap = p->sse.skipped > 0 };
        pl_event(&p->pl, &ev);
    }
}

/* ---------- upstream callbacks ---------- */

struct hname { const char *name; size_t len; };
#define HN(s) { s, sizeof(s) - 1 }

static bool name_in(const struct http_hdr *h, const struct hname *set)
{
    for (; set->name; set++)
        if (h->name_len == set->len && strncasecmp(h->name, set->name, set->len) == 0)
            return true;
    return false;
}

/* Is h's name one of the comma-separated options of a Connection header
 * (RFC 9110 §7.6.1)?  Length-based, so no name is too long to be matched. */
static bool conn_option(const struct http_hdr *conn, const struct http_hdr *h)
{
    return http_hdr_has_token_n(conn, h->name, h->name_len);
}

/* Where the message's Connection headers start (n when it has none): most
 * messages have none, and then nothing below costs more than this scan. */
static size_t first_connection(const struct http_hdr *hdrs, size_t n)
{
    size_t i = 0;
    while (i < n && !http_hdr_is(&hdrs[i], "connection"))
        i++;
    return i;
}

/* Named in any of the message's Connection headers (a sender may split the
 * list over several fields; conn = first_connection()): then it belongs to
 * the hop, not the message. */
static bool named_in_connection(const struct http_hdr *h, const struct http_hdr *hdrs, size_t n, size_t conn)
{
    for (size_t i = conn; i < n; i++)
        if (http_hdr_is(&hdrs[i], "connection") && conn_option(&hdrs[i], h))
            return true;
    return false;
}

/* response headers that describe the upstream hop, not the response (and
 * those httpd writes itself for the client's hop) */
static bool hop_by_hop(const struct http_hdr *h, const struct http_hdr *hdrs, size_t n, size_t conn)
{
    static const struct hname names[] = { HN("connection"), HN("keep-alive"), HN("transfer-encoding"),
                                          HN("te"), HN("trailer"), HN("upgrade"), HN("proxy-connection"),
                                          HN("proxy-authenticate"), HN("proxy-authentication-info"),
                                          HN("content-length"), HN("date"), HN("server"), HN("x-request-id"),
                                          { NULL, 0 } };
    return name_in(h, names) || named_in_connection(h, hdrs, n, conn);
}

static void start_attempt(struct pctx *p);
static bool retry_possible(struct pctx *p, bool budgeted);
static void schedule_retry(struct pctx *p, uint64_t delay_ms);

static bool retryable_status(const struct pctx *p, int status)
{
    const struct config_model *mc = p->pl.m->cfg;
    return (status == 429 && mc->retry_on_429) || (status >= 500 && mc->retry_on_5xx);
}

/* Retry-After in seconds (the HTTP-date form is not worth parsing here:
 * treated as absent); -1 when absent or unusable. */
static int64_t retry_after_ms(const struct http_hdr *hdrs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!http_hdr_is(&hdrs[i], "retry-after"))
            continue;
        int64_t v = 0;
        if (hdrs[i].value_len == 0 || hdrs[i].value_len > 6)
            return -1;
        for (size_t k = 0; k < hdrs[i].value_len; k++) {
            char ch = hdrs[i].value[k];
            if (ch < '0' || ch > '9')
                return -1;
            v = v * 10 + (ch - '0');
        }
        return v * 1000;
    }
    return -1;
}

static void up_on_head(void *ctx, int status, const struct http_hdr *hdrs, size_t n, int64_t cl)
{
    struct pctx *p = ctx;
    ovh_begin(p);
    struct http_hdr out[73];
    char ovh[24];
    size_t k = 0;
    uint64_t now = loop_now(p->pl.w->loop);
    p->status = status;
    balance_observe(p->be, (mono_ns() - p->t_attempt) / 1000u, now);
    if (retryable_status(p, status)) {
        /* nothing reached the client from an upstream yet: this answer may
         * be replaced by another backend's.  Honour Retry-After: a backend
         * that asked for a pause is not asked again before it ends, and a
         * pause longer than retry_after_max is not waited for at all. */
        int64_t ra = retry_after_ms(hdrs, n);
        bool others = retry_possible(p, true);
        bool same_later = !others && ra >= 0 && (uint64_t)ra <= p->pl.m->cfg->retry_after_max_ms &&
                          (uint32_t)p->attempts < p->pl.m0->cfg->retry_attempts &&
                          p->pl.w->retry_tokens[p->pl.m0->index] >= 1.0;
        if (others || same_later) {
            met_add(&p->pl.w->met->up_errors[p->be->id][status == 429 ? UP_E429 : UP_E5XX], 1);
            backend_report(p->be, status == 429 ? BE_429 : BE_5XX, now);
            attempt_end(p, status, status == 429 ? "http_429" : "http_5xx");
            up_cancel(p->up);
            p->up = NULL;
            release_backend(p);
            if (same_later)
                p->tried &= ~(1ull << p->be->index);
            met_add(&p->pl.w->met->retries[p->pl.m0->index], 1);
            p->pl.w->retry_tokens[p->pl.m0->index] -= 1.0;
            schedule_retry(p, same_later ? (uint64_t)ra : 0);
            ovh_end(p);
            return;
        }
    }
    ev_timer_stop(p->pl.w->loop, &p->ka_timer);
    p->upstream_fwd = true;
    size_t conn = first_connection(hdrs, n);
    for (size_t i = 0; i < n && k < 68; i++) {
        /* the body is what the type says, even if the type is not passed on */
        if (http_hdr_is(&hdrs[i], "content-type")) {
            p->is_sse = hdrs[i].value_len >= 17 && strncasecmp(hdrs[i].value, "text/event-stream", 17) == 0;
            p->is_json = hdrs[i].value_len >= 16 && strncasecmp(hdrs[i].value, "application/json", 16) == 0;
        }
        if (!hop_by_hop(&hdrs[i], hdrs, n, conn))
            out[k++] = hdrs[i];
    }
    if (p->committed) {
        /* the client already has a 200 event-stream head: a stream is
         * forwarded as it comes; anything else becomes an in-band error */
        if (!(status == 200 && p->is_sse)) {
            p->error_in_stream = true;
            p->is_sse = false;
            p->is_json = true; /* capture the error body for the event */
        } else {
            p->xform = pl_transforming(&p->pl);
            sse_reader_init(&p->sse, on_sse_event, p, p->xform ? CAPTURE_MAX : 1u << 20);
            p->sse_init = true;
        }
        ovh_end(p);
        return;
    }
    /* the modules' headers (mod_backend_header: x-shade-backend) */
    struct pl_head head = { status, p->be, out, &k, sizeof out / sizeof out[0] - 2 };
    pl_head(&p->pl, &head);
    if (p->pl.m != p->pl.m0) {
        const char *fm = p->pl.m->cfg->name;
        out[k++] = (struct http_hdr){ "x-shade-fallback", 16, fm, strlen(fm) };
    }
    /* a transformed answer (2xx SSE or JSON) is re-emitted, so its length is
     * not the upstream's: the client gets it chunked (close-delimited on
     * HTTP/1.0); an error answer is never transformed */
    p->xform = pl_transforming(&p->pl) && status >= 200 && status < 300 && (p->is_sse || p->is_json);
    p->hold = p->xform && !p->is_sse;
    if (p->xform)
        cl = -1;
    if (p->is_sse) {
        /* re-emitted events must not be lost for their size: the bound of
         * a held body then */
        sse_reader_init(&p->sse, on_sse_event, p, p->xform ? CAPTURE_MAX : 1u << 20);
        p->sse_init = true;
    }
    /* the gateway's own time on this request so far (doc/observability.md) */
    int ol = snprintf(ovh, sizeof ovh, "%llu",
                      (unsigned long long)((p->pl.ovh_ns + (mono_ns() - p->pl.seg_start)) / 1000u));
    out[k++] = (struct http_hdr){ "x-shade-overhead-us", 19, ovh, (size_t)ol };
    http_start(p->pl.http, status, out, k, cl);
    ovh_end(p);
}

/* Keep a copy of a JSON body to read when it ends.  A body over max is not
 * read at all: a cut document does not parse, and skipping a piece that does
 * not fit while keeping later ones would splice bytes that were never
 * adjacent (and could parse, with a usage that is not the answer's). */
static void capture_body(struct pctx *p, const char *data, size_t len, size_t max)
{
    p->body_seen += len;
    if (p->capture_over)
        return;
    if (buf_used(&p->capture) + len <= max) {
        buf_append(&p->capture, data, len);
        return;
    }
    p->capture_over = true;
    buf_free(&p->capture);
}

static void up_on_body(void *ctx, const char *data, size_t len)
{
    struct pctx *p = ctx;
    ovh_begin(p);
    if (p->error_in_stream) {
        ovh_end(p);
        capture_body(p, data, len, 65536);
        return;
    }
    if (p->hold) {
        /* a JSON body to transform: held until complete */
        if (buf_used(&p->capture) + len <= CAPTURE_MAX) {
            p->body_seen += len;
            buf_append(&p->capture, data, len);
            ovh_end(p);
            return;
        }
        /* too large to transform: what was held goes out as it came, and
         * the rest is forwarded (and counted, not read) as without one */
        p->hold = false;
        http_write(p->pl.http, buf_data(&p->capture), buf_used(&p->capture));
        buf_free(&p->capture);
        p->capture_over = true;
    }
    /* forward first, look second: observation never delays the stream;
     * a transformed stream is written by on_sse_event, event by event */
    if (!p->xform || !p->is_sse)
        http_write(p->pl.http, data, len);
    if (p->is_sse) {
        sse_reader_feed(&p->sse, data, len);
        if (p->xform && buf_used(&p->xout)) {
            /* the events this read completed, in one write (one chunk) */
            http_write(p->pl.http, buf_data(&p->xout), buf_used(&p->xout));
            buf_reset(&p->xout);
        }
    } else if (p->is_json && p->status < 300)
        capture_body(p, data, len, CAPTURE_MAX);
    if (!p->paused && http_out_pending(p->pl.http) > HTTP_OUT_HIGH_WATER) {
        p->paused = true;
        up_pause(p->up, true);
    }
    ovh_end(p);
}

static int err_status(enum up_err e)
{
    return up_err_is_timeout(e) ? 504 : 502;
}

/* One SSE event carrying an OpenAI error object (the SDKs raise it). */
static void write_error_event(http_req *r, const char *json, size_t n)
{
    while (n > 0 && (json[n - 1] == '\n' || json[n - 1] == '\r' || json[n - 1] == ' '))
        n--;
    http_write(r, "data: ", 6);
    http_write(r, json, n);
    http_write(r, "\n\n", 2);
}

/* A stream whose head was committed by keep-alive comments ends with an
 * in-band error and a proper end of stream. */
static void end_committed_with_error(struct pctx *p, int status, const char *code, const char *msg)
{
    http_req *r = p->pl.http;
    struct json_span root, e;
    if (buf_used(&p->capture) && json_validate(buf_data(&p->capture), buf_used(&p->capture), &root, NULL) == 0 &&
        root.type == JSON_OBJECT && json_get(&root, "error", &e)) {
        write_error_event(r, buf_data(&p->capture), buf_used(&p->capture));
    } else {
        char body[600];
        size_t n = http_error_json(body, sizeof body, "server_error", code, NULL, msg);
        write_error_event(r, body, n);
    }
    finish(p, status);
    http_end(r);
}

/* A held JSON body goes out after the transforms (observers have read the
 * upstream's). */
static void emit_body(struct pctx *p, const struct json_span *root)
{
    struct pl_payload in = { .data = buf_data(&p->capture), .len = buf_used(&p->capture), .root = root,
                             .status = p->status, .is_body = true };
    const char *o;
    size_t ol;
    if (pl_rewrite(&p->pl, &in, p->xbuf, &o, &ol))
        http_write(p->pl.http, o, ol);
}

static void up_on_done(void *ctx, enum up_err err)
{
    struct pctx *p = ctx;
    ovh_begin(p); /* closed by finish(), or by the retry below */
    struct met_shard *met = p->pl.w->met;
    uint64_t now = loop_now(p->pl.w->loop);
    p->up = NULL;
    if (err == UP_OK) {
        attempt_end(p, p->status, NULL);
        backend_report(p->be, p->status == 429 ? BE_429 : p->status >= 500 ? BE_5XX : BE_OK, now);
        if (p->status == 429 || p->status >= 500)
            met_add(&met->up_errors[p->be->id][p->status == 429 ? UP_E429 : UP_E5XX], 1);
        if (p->error_in_stream) {
            end_committed_with_error(p, p->status, "upstream_error", "the upstream answered with an error");
            return;
        }
        if (p->is_json && buf_used(&p->capture)) {
            struct json_span root;
            if (json_validate(buf_data(&p->capture), buf_used(&p->capture), &root, NULL) == 0 &&
                root.type == JSON_OBJECT) {
                read_usage(p, &root);
                struct pl_event ev = { .root = &root, .status = p->status, .is_body = true };
                pl_event(&p->pl, &ev);
                if (p->hold)
                    emit_body(p, &root);
            } else if (p->hold) {
                emit_body(p, NULL);
            }
        }
        p->body_too_large = p->capture_over && p->status < 300;
        http_req *r = p->pl.http;
        finish(p, p->status);
        http_end(r);
        return;
    }
    met_add(&met->up_errors[p->be->id][err], 1);
    p->err_kind = shadow_err_kind(err);
    attempt_end(p, p->upstream_fwd ? p->status : 0, p->err_kind);
    bool connect_failure = err == UP_ECONNECT || err == UP_ECONNECT_TIMEOUT || err == UP_ETLS;
    bool race = err == UP_ECLOSED && !p->upstream_fwd && !p->race_retried;
    if (!p->upstream_fwd)
        balance_observe(p->be, (mono_ns() - p->t_attempt) / 1000u, now);
    if (!race)
        backend_report(p->be, connect_failure ? BE_CONNECT_FAIL : up_err_is_timeout(err) ? BE_TIMEOUT : BE_5XX, now);
    if (!p->upstream_fwd) {
        /* nothing from an upstream reached the client: the request may go elsewhere */
        if (race) {
            /* a kept-alive connection closed under us before answering:
             * the request never ran there; try again on a fresh one */
            p->race_retried = true;
            met_add(&met->retries[p->pl.m0->index], 1);
            release_backend(p);
            p->tried &= ~(1ull << p->be->index);
            start_attempt(p);
            return;
        }
        /* connection failures cost the backend nothing: outside the budget;
         * a timeout (when enabled) or a connection that broke before the
         * answer (a server going away: treated like a 5xx) is budgeted */
        bool budgeted_retry = (err == UP_EFIRSTBYTE_TIMEOUT && p->pl.m->cfg->retry_on_timeout) ||
                              ((err == UP_ECLOSED || err == UP_EPROTO) && p->pl.m->cfg->retry_on_5xx);
        if ((connect_failure && retry_possible(p, false)) || (budgeted_retry && retry_possible(p, true))) {
            release_backend(p);
            met_add(&met->retries[p->pl.m0->index], 1);
            if (budgeted_retry)
                p->pl.w->retry_tokens[p->pl.m0->index] -= 1.0;
            start_attempt(p);
            return;
        }
        /* the backend's name stays in the log, metrics and traces: it
         * defaults to host:port, an internal address clients must not see */
        char msg[256];
        snprintf(msg, sizeof msg, "the upstream request failed: %s", up_err_name(err));
        const char *code = up_err_is_timeout(err) ? "upstream_timeout" : connect_failure ? "upstream_unreachable"
                                                                                        : "upstream_error";
        fail(p, err_status(err), "server_error", code, NULL, msg);
        return;
    }
    /* mid-response: tell an SSE client in-band, then cut the response so
     * that an HTTP client sees it was truncated */
    http_req *r = p->pl.http;
    if (p->is_sse) {
        char body[512];
        size_t n = http_error_json(body, sizeof body, "server_error",
                                   up_err_is_timeout(err) ? "upstream_timeout" : "upstream_error", NULL,
                                   "the upstream response was interrupted");
        write_error_event(r, body, n);
    }
    finish(p, err_status(err));
    http_abort(r);
}

static const struct up_handlers up_cbs = { up_on_head, up_on_body, up_on_done };

/* ---------- client side callbacks ---------- */

static void on_client_abort(http_req *r)
{
    struct pctx *p = r->ctx;
    if (!p)
        return;
    if (p->up) {
        up_cancel(p->up);
        p->up = NULL;
    }
    p->err_kind = "aborted";
    finish(p, 499);
}

static void on_client_drain(http_req *r)
{
    struct pctx *p = r->ctx;
    if (p && p->paused && p->up) {
        p->paused = false;
        up_pause(p->up, false);
    }
}

/* ---------- building the upstream request ---------- */

/* have_key: the backend has a key of its own (its Authorization replaces
 * the client's); client_key_stays: shade checked the client's key, which
 * goes nowhere (in any of the headers SDKs send it in) */
static bool skip_request_header(const struct http_hdr *h, bool have_key, bool client_key_stays)
{
    static const struct hname names[] = { HN("host"), HN("connection"), HN("keep-alive"),
                                          HN("proxy-connection"), HN("transfer-encoding"), HN("te"),
                                          HN("trailer"), HN("upgrade"), HN("content-length"), HN("expect"),
                                          HN("accept-encoding"), HN("x-request-id"), HN("traceparent"),
                                          HN("proxy-authorization"), { NULL, 0 } };
    static const struct hname auth[] = { HN("authorization"), { NULL, 0 } };
    static const struct hname keys[] = { HN("authorization"), HN("api-key"), HN("x-api-key"), { NULL, 0 } };
    return name_in(h, names) || (have_key && name_in(h, auth)) || (client_key_stays && name_in(h, keys));
}

static void build_head(struct pctx *p, size_t body_len)
{
    http_req *r = p->pl.http;
    const struct config_backend *bc = p->be->cfg;
    struct buf *b = &p->head;
    buf_reset(b);
    /* origin-form, query included */
    up_head_begin(b, p->be, r->method_name, r->method_len, r->path, (size_t)(r->url + r->url_len - r->path));
    buf_append(b, "content-length: ", 16);
    buf_append_uint(b, body_len);
    buf_append(b, "\r\n", 2);
    size_t conn = first_connection(r->hdrs, r->nhdrs);
    for (size_t i = 0; i < r->nhdrs; i++) {
        const struct http_hdr *h = &r->hdrs[i];
        /* headers named in Connection are hop-by-hop too */
        if (skip_request_header(h, bc->api_key != NULL, p->pl.key_auth && !bc->pass_client_key) ||
            named_in_connection(h, r->hdrs, r->nhdrs, conn))
            continue;
        up_head_header(b, h->name, h->name_len, h->value, h->value_len);
    }
    up_head_auth(b, p->be);
    buf_append(b, "x-request-id: ", 14);
    buf_append(b, r->reqid, r->reqid_len);
    /* the trace goes on: the attempt's span is the upstream's parent */
    struct trace_ctx up = p->pl.tc;
    char tp[TRACE_PARENT_LEN + 1];
    memcpy(up.span_id, p->attempt_span, sizeof up.span_id);
    trace_format(&up, tp);
    buf_append(b, "\r\ntraceparent: ", 15);
    buf_append(b, tp, TRACE_PARENT_LEN);
    buf_append(b, "\r\n\r\n", 4);
}

/* Is there somewhere to send this request again: attempts left, the budget
 * (when it applies), and an untried backend that is up in this model or a
 * model further down its fallback chain? */
static bool retry_possible(struct pctx *p, bool budgeted)
{
    const struct config_model *mc = p->pl.m0->cfg;
    if ((uint32_t)p->attempts >= mc->retry_attempts)
        return false;
    uint64_t now = loop_now(p->pl.w->loop);
    bool candidate = false;
    for (size_t i = 0; i < p->pl.m->n && !candidate; i++)
        candidate = !(p->tried & (1ull << i)) && backend_is_up(p->pl.m->backends[i], now);
    for (size_t f = p->fallback_pos; f < p->pl.m0->nfallbacks && !candidate; f++) {
        const struct model_rt *fm = p->pl.m0->fallbacks[f];
        for (size_t i = 0; i < fm->n && !candidate; i++)
            candidate = backend_is_up(fm->backends[i], now);
    }
    if (candidate && budgeted && p->pl.w->retry_tokens[p->pl.m0->index] < 1.0) {
        met_add(&p->pl.w->met->retries_denied[p->pl.m0->index], 1);
        return false;
    }
    return candidate;
}

static void retry_timer_cb(loop_t *l, ev_timer *t)
{
    start_attempt(t->data);
}

static void schedule_retry(struct pctx *p, uint64_t delay_ms)
{
    /* never from inside the upstream's callbacks: a timer, even for "now" */
    ev_timer_start(p->pl.w->loop, &p->retry_timer, delay_ms);
}

static void ka_timer_cb(loop_t *l, ev_timer *t)
{
    struct pctx *p = t->data;
    if (p->upstream_fwd)
        return;
    if (!p->committed) {
        /* a stream still waiting for its first byte: commit to 200 and an
         * event stream now, so idle timeouts of proxies in between (and
         * clients) see bytes; retries stay possible behind the comments */
        static const struct http_hdr h[] = { { "content-type", 12, "text/event-stream", 17 },
                                             { "cache-control", 13, "no-cache", 8 } };
        p->committed = true;
        http_start(p->pl.http, 200, h, 2, -1);
    }
    http_write(p->pl.http, ": keep-alive\n\n", 14);
    ev_timer_start(l, t, p->pl.m0->cfg->stream_keepalive_ms);
}

static void no_backend(struct pctx *p, int idx)
{
    char msg[200];
    int status = 503;
    const char *code = "no_healthy_backend";
    if (p->attempts > 0) {
        status = 502;
        code = "upstream_unreachable";
        snprintf(msg, sizeof msg, "no backend of model '%s' could be reached", p->pl.m0->cfg->name);
    } else if (idx == -2) {
        code = "backend_at_capacity";
        snprintf(msg, sizeof msg, "every backend of model '%s' is at its concurrency limit", p->pl.m0->cfg->name);
    } else {
        snprintf(msg, sizeof msg, "no healthy backend for model '%s'", p->pl.m0->cfg->name);
    }
    fail(p, status, "server_error", code, NULL, msg);
}

/* ---------- admission control ----------
 *
 * A request that finds no capacity (every backend of its model at
 * max_concurrent, or the model at max_in_flight) waits in its worker's
 * queue for that model: ten FIFO lists, priority 9 first, oldest first
 * within a priority.  Capacity freed on this worker kicks the queue at
 * once; capacity freed on other workers is noticed by a 10 ms timer that
 * runs only while something waits (workers share no queue, so a request
 * never waits behind another worker's lock).  A full queue or a wait past
 * queue.timeout is answered with queue.shed_status and Retry-After. */

#define QUEUE_PRIOS 10

struct admit_queue {
    struct pctx *head[QUEUE_PRIOS], *tail[QUEUE_PRIOS];
    uint32_t n;
};

static bool model_has_room(const struct model_rt *m)
{
    uint32_t cap = m->cfg->max_in_flight;
    return !cap || (uint32_t)atomic_load_explicit(&((struct model_rt *)m)->inflight, memory_order_relaxed) < cap;
}

/* Cheap look: could a pick succeed now?  (balance_pick decides for real.) */
static bool backends_have_room(const struct model_rt *m, uint64_t now)
{
    for (size_t i = 0; i < m->n; i++) {
        struct backend *be = m->backends[i];
        uint32_t cap = be->cfg->max_concurrent;
        if (backend_is_up(be, now) &&
            (!cap || (uint32_t)atomic_load_explicit(&be->inflight, memory_order_relaxed) < cap))
            return true;
    }
    return false;
}

static void queue_unlink(struct pctx *p)
{
    struct admit_queue *q = &p->pl.w->queues[p->pl.m0->index];
    met_observe(&p->pl.w->met->queue_wait[p->pl.m0->index], (loop_now(p->pl.w->loop) - p->queued_at) * 1000u);
    if (p->qprev)
        p->qprev->qnext = p->qnext;
    else
        q->head[p->prio] = p->qnext;
    if (p->qnext)
        p->qnext->qprev = p->qprev;
    else
        q->tail[p->prio] = p->qprev;
    p->qnext = p->qprev = NULL;
    p->queued = false;
    q->n--;
    met_gauge_add(&p->pl.w->met->queue_depth[p->pl.m0->index], -1);
}

static void shed(struct pctx *p, int reason)
{
    const struct config_model *mc = p->pl.m0->cfg;
    http_req *r = p->pl.http;
    int status = (int)mc->queue_shed_status;
    char body[400], ra[24];
    size_t n = http_error_json(body, sizeof body, status == 429 ? "rate_limit_error" : "server_error",
                               reason ? "queue_timeout" : "queue_full", NULL,
                               reason ? "the request waited too long for a free backend"
                                      : "too many requests are waiting for this model");
    /* come back after about one queue timeout */
    int ral = snprintf(ra, sizeof ra, "%u", (mc->queue_timeout_ms + 999) / 1000);
    struct http_hdr h[2] = { { "content-type", 12, "application/json", 16 }, { "retry-after", 11, ra, (size_t)ral } };
    met_add(&p->pl.w->met->shed[p->pl.m0->index][reason], 1);
    if (p->committed) {
        /* keep-alive comments already went out while it waited */
        end_committed_with_error(p, status, reason ? "queue_timeout" : "queue_full",
                                 "the request waited too long for a free backend");
        return;
    }
    finish(p, status);
    http_start(r, status, h, 2, (int64_t)n);
    http_write(r, body, n);
    http_end(r);
}

static void enqueue_or_shed(struct pctx *p)
{
    struct worker *w = p->pl.w;
    struct admit_queue *q = &w->queues[p->pl.m0->index];
    if (q->n >= p->pl.m0->cfg->queue_size) {
        shed(p, 0);
        return;
    }
    ovh_end(p); /* waiting in the queue is not shade's work */
    p->queued = true;
    p->queued_at = loop_now(w->loop);
    p->qnext = NULL;
    p->qprev = q->tail[p->prio];
    if (q->tail[p->prio])
        q->tail[p->prio]->qnext = p;
    else
        q->head[p->prio] = p;
    q->tail[p->prio] = p;
    q->n++;
    met_gauge_add(&w->met->queue_depth[p->pl.m0->index], 1);
    if (!ev_timer_active(&w->queue_timer))
        ev_timer_start(w->loop, &w->queue_timer, 10);
}

static void start_attempt(struct pctx *p);

/* Start waiting requests while there is room; shed those past their time. */
static void queue_run(struct worker *w)
{
    uint64_t now = loop_now(w->loop);
    bool waiting = false;
    for (size_t m = 0; m < w->gw->nmodels; m++) {
        struct admit_queue *q = &w->queues[m];
        const struct model_rt *mr = &w->gw->models[m];
        for (int prio = QUEUE_PRIOS - 1; prio >= 0; prio--) {
            for (struct pctx *p = q->head[prio], *next; p; p = next) {
                next = p->qnext;
                if (now - p->queued_at >= mr->cfg->queue_timeout_ms)
                    shed(p, 1);
            }
        }
        /* bounded: a request that loses a race for the slot goes back to
         * the end of its list and is looked at on the next run */
        for (uint32_t budget = q->n; budget && q->n && model_has_room(mr) && backends_have_room(mr, now);
             budget--) {
            struct pctx *p = NULL;
            for (int prio = QUEUE_PRIOS - 1; prio >= 0 && !p; prio--)
                p = q->head[prio];
            queue_unlink(p);
            start_attempt(p); /* may finish and free p, or queue it again */
        }
        waiting |= q->n > 0;
    }
    if (waiting && !ev_timer_active(&w->queue_timer))
        ev_timer_start(w->loop, &w->queue_timer, 10);
}

static void queue_timer_cb(loop_t *l, ev_timer *t)
{
    queue_run(t->data);
}

static void queue_kick_cb(loop_t *l, ev_defer *d)
{
    queue_run(d->data);
}

/* ---------- the engine's view of the core ---------- */

static void admit(struct pctx *p);

static void core_proceed(struct pl_req *q) { admit((struct pctx *)q); }

static void core_answered(struct pl_req *q)
{
    /* the module wrote the whole response itself */
    finish((struct pctx *)q, q->http->status);
}

static void core_failed(struct pl_req *q)
{
    /* fail() frees the request before it writes the answer: keep the text */
    char msg[sizeof q->error.message];
    memcpy(msg, q->error.message, sizeof msg);
    fail((struct pctx *)q, q->error.status, q->error.type, q->error.code, q->error.param, msg);
}

static int core_rebody(struct pl_req *q);
static const struct pl_core core_ops = { core_proceed, core_answered, core_failed, core_rebody };
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static int engine_rc;

static void engine_setup(void)
{
    engine_rc = pl_engine_init(&engine, pl_modules, pl_nmodules, &core_ops, sizeof(struct pctx));
}

int proxy_worker_init(struct worker *w)
{
    pthread_once(&engine_once, engine_setup);
    if (engine_rc < 0)
        return -1;
    w->queues = calloc(w->gw->nmodels ? w->gw->nmodels : 1, sizeof *w->queues);
    if (!w->queues)
        return -1;
    ev_timer_init(&w->queue_timer, queue_timer_cb, w);
    ev_defer_init(&w->queue_kick, queue_kick_cb, w);
    return 0;
}

void proxy_worker_free(struct worker *w)
{
    /* the loop is gone by now: memory only (every request has finished) */
    free(w->queues);
    w->queues = NULL;
}

static void start_attempt(struct pctx *p)
{
    struct worker *w = p->pl.w;
    ovh_begin(p);
    uint64_t now = loop_now(w->loop);
    int idx = balance_pick(w, p->pl.m, p->tried, now, &p->hint);
    /* pool exhausted: walk the fallback chain of the requested model */
    int first = idx;
    while (idx < 0 && p->fallback_pos < p->pl.m0->nfallbacks) {
        p->pl.m = p->pl.m0->fallbacks[p->fallback_pos++];
        p->tried = 0;
        idx = balance_pick(w, p->pl.m, p->tried, now, &p->hint);
    }
    if (idx < 0) {
        if (first == -2 && p->attempts == 0 && !p->committed && p->pl.m0->cfg->queue_size) {
            p->pl.m = p->pl.m0;
            p->tried = 0;
            p->fallback_pos = 0;
            enqueue_or_shed(p);
            return;
        }
        p->err_kind = "no_backend";
        no_backend(p, first);
        return;
    }
    if (p->pl.m != p->pl.m0 && p->tried == 0)
        met_add(&w->met->fallbacks[(size_t)p->pl.m0->index * w->gw->nmodels + (size_t)p->pl.m->index], 1);
    if (p->attempts == 0 && !p->model_slot) {
        p->model_slot = true;
        atomic_fetch_add_explicit(&((struct model_rt *)p->pl.m0)->inflight, 1, memory_order_relaxed);
    }
    p->attempts++;
    p->err_kind = NULL; /* a failure of an earlier attempt is not this one's */
    trace_new_span_id(&w->rng, p->attempt_span);
    p->attempt_open = true;
    p->attempt_unix_ns = traced(p) ? trace_unix_ns() : 0;
    p->be = p->pl.m->backends[idx];
    p->reserved = true;
    p->t_attempt = mono_ns();
    p->tried |= 1ull << idx;
    p->status = 0;
    p->is_sse = p->is_json = false;
    p->xform = p->hold = false;
    buf_reset(&p->capture);
    p->capture_over = false;
    p->body_seen = 0;
    const char *body = p->pl.body;
    size_t body_len = p->pl.body_len;
    struct iovec iov[4];
    int n = 0;
    /* the upstream's model name: the backend's own, or the public name of
     * the model serving the request (differs from the body's on fallback) */
    const char *um = p->be->cfg->model                             ? p->be->cfg->model
                     : p->pl.m != p->pl.m0 || p->pl.renamed ? p->pl.m->cfg->name
                                                              : NULL;
    char esc[600];
    long el = -1;
    if (um && p->model_val.p)
        el = json_escape(um, strlen(um), esc, sizeof esc);
    if (el > 0) {
        size_t pre = (size_t)(p->model_val.p - body);
        size_t post_off = pre + p->model_val.len;
        build_head(p, pre + (size_t)el + (body_len - post_off));
        iov[n++] = (struct iovec){ buf_data(&p->head), buf_used(&p->head) };
        iov[n++] = (struct iovec){ (void *)body, pre };
        iov[n++] = (struct iovec){ esc, (size_t)el };
        iov[n++] = (struct iovec){ (void *)(body + post_off), body_len - post_off };
    } else {
        build_head(p, body_len);
        iov[n++] = (struct iovec){ buf_data(&p->head), buf_used(&p->head) };
        iov[n++] = (struct iovec){ (void *)body, body_len };
    }
    /* the segment ends here: connecting and sending are the kernel's and
     * the upstream's time, not shade's */
    ovh_end(p);
    p->up = up_start(w->pools[p->be->id], iov, n, &up_cbs, p);
    if (!p->up) {
        fail(p, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    /* modules that act once the user's own request is on its way (the
     * shadow legs: their set-up never delays it) */
    pl_sent(&p->pl);
}

/* ---------- what the balancer is told ---------- */

static uint64_t affinity_hash(const char *s, size_t n)
{
    uint64_t h = rnd_fnv1a64(RND_FNV1A64_INIT, s, n);
    return h ? h : 1; /* 0 means "no affinity" */
}

/* Affinity key: the session header when the model names one and the client
 * sent it; otherwise the first bytes of the prompt (system prompt and the
 * start of the conversation), so requests sharing a prefix land where their
 * KV cache is.  Token estimate: prompt bytes / 4 plus the requested output. */
static void compute_hint(struct pctx *p, const struct json_span *prompt, int64_t max_tokens)
{
    const struct config_model *mc = p->pl.m->cfg;
    p->hint.est_tokens = (uint32_t)(prompt->len / 4 + (size_t)(max_tokens >= 0 ? max_tokens : 256));
    if (mc->balance != BALANCE_PREFIX_AFFINITY)
        return;
    const struct http_hdr *h = mc->affinity_header ? http_req_header(p->pl.http, mc->affinity_header) : NULL;
    if (h && h->value_len)
        p->hint.affinity = affinity_hash(h->value, h->value_len);
    else
        p->hint.affinity = affinity_hash(prompt->p, prompt->len < mc->affinity_prefix_bytes ? prompt->len
                                                                                       : mc->affinity_prefix_bytes);
}

/* ---------- endpoints ---------- */

/* Top-level members that shade itself reads, here (routing, splicing,
 * limits, the balancer's estimate), in shadow.c (selection, the legs'
 * rewrite) and in the pair store (the prompt) — plus "n", which multiplies
 * what a request costs upstream.  JSON parsers disagree on
 * duplicates — some keep the first, most the last — so a duplicate of one
 * of these would let the upstream act on a value the gateway never routed,
 * limited or billed: such bodies are refused (doc/request-lifecycle.md).
 * Members shade does not read pass as they are, duplicates included. */
static const char *const interpreted_keys[] = {
    "model", "messages", "prompt", "input", "stream", "stream_options", "max_tokens",
    "max_completion_tokens", "user", "n",
};
_Static_assert(sizeof interpreted_keys / sizeof interpreted_keys[0] <= 32, "seen is a 32-bit mask");

/* Mark key as seen when it is one of interpreted_keys; returns its index
 * when it had been seen before (a duplicate, however it is escaped), else -1. */
static int interpreted_key(const struct json_span *key, uint32_t *seen)
{
    for (size_t i = 0; i < sizeof interpreted_keys / sizeof interpreted_keys[0]; i++) {
        if (!json_str_eq(key, interpreted_keys[i]))
            continue;
        if (*seen & (1u << i))
            return (int)i;
        *seen |= 1u << i;
        return -1;
    }
    return -1;
}

/* A decoding error: what the core answers (400 / 404 with an error object). */
static int decode_error(struct pctx *p, int status, const char *type, const char *code, const char *param,
                        const char *msg)
{
    pl_set_error(&p->pl, status, type, code, param, "%s", msg);
    return status;
}

/* Validate the request's current body once and derive what the core and
 * the modules need from it: the model (and the span of its value, for
 * splicing), the prompt, stream, max_tokens, the balancer's hint.  Run
 * again when a phase replaces the body (pl_set_body).  0, or an error
 * status with p->pl.error set. */
static int decode(struct pctx *p)
{
    enum met_endpoint ep = p->pl.ep;
    p->model_val = (struct json_span){ 0 };
    p->pl.stream = false;
    struct json_span root;
    struct json_error je;
    if (p->pl.body_len == 0) {
        return decode_error(p, 400, "invalid_request_error", NULL, NULL,
                            "We could not parse the JSON body of your request: the body is empty.");
    }
    if (json_validate(p->pl.body, p->pl.body_len, &root, &je) < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "We could not parse the JSON body of your request: %s at byte %zu.",
                 je.message, je.offset);
        return decode_error(p, 400, "invalid_request_error", NULL, NULL, msg);
    }
    if (root.type != JSON_OBJECT) {
        return decode_error(p, 400, "invalid_request_error", NULL, NULL, "The request body must be a JSON object.");
    }
    p->pl.root = root;
    /* one pass over the top-level members (a json_get per field would walk
     * the whole messages array each time) */
    const char *need = ep == EP_CHAT ? "messages" : ep == EP_COMPLETIONS ? "prompt" : "input";
    struct json_span key, val, required = { 0 }, stream = { 0 }, max_tok = { 0 };
    size_t it = 0;
    uint32_t seen = 0;
    while (json_next(&root, &it, &key, &val)) {
        int dup = interpreted_key(&key, &seen);
        if (dup >= 0) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "Duplicate parameter: '%s' appears more than once in the request body; send it once.",
                     interpreted_keys[dup]);
            return decode_error(p, 400, "invalid_request_error", "duplicate_parameter", interpreted_keys[dup], msg);
        }
        if (json_str_eq(&key, "model"))
            p->model_val = val;
        else if (json_str_eq(&key, need))
            required = val;
        else if (json_str_eq(&key, "stream"))
            stream = val;
        else if (json_str_eq(&key, "max_tokens") || json_str_eq(&key, "max_completion_tokens"))
            max_tok = val;
    }
    if (!p->model_val.p) {
        return decode_error(p, 400, "invalid_request_error", "missing_required_parameter", "model",
                            "Missing required parameter: 'model'.");
    }
    if (p->model_val.type != JSON_STRING) {
        return decode_error(p, 400, "invalid_request_error", "invalid_type", "model",
                            "Invalid type for 'model': expected a string.");
    }
    if (!required.p) {
        char msg[128];
        snprintf(msg, sizeof msg, "Missing required parameter: '%s'.", need);
        return decode_error(p, 400, "invalid_request_error", "missing_required_parameter", need, msg);
    }
    p->pl.prompt_bytes = required.len;
    if (ep == EP_CHAT && required.type != JSON_ARRAY) {
        return decode_error(p, 400, "invalid_request_error", "invalid_type", "messages",
                            "Invalid type for 'messages': expected an array.");
    }
    if (stream.p) {
        if (stream.type != JSON_TRUE && stream.type != JSON_FALSE && stream.type != JSON_NULL) {
            return decode_error(p, 400, "invalid_request_error", "invalid_type", "stream",
                            "Invalid type for 'stream': expected a boolean.");
        }
        p->pl.stream = stream.type == JSON_TRUE;
    }
    int64_t max_tokens = -1;
    if (max_tok.p && json_to_i64(&max_tok, &max_tokens) && max_tokens < 0)
        max_tokens = -1;
    char name[512];
    long nl = json_str_unescape(&p->model_val, name, sizeof name);
    p->pl.m = nl < 0 ? NULL : gateway_find_model(p->pl.w->gw, name, (size_t)nl);
    p->pl.m0 = p->pl.m;
    if (!p->pl.m) {
        char msg[700];
        snprintf(msg, sizeof msg, "The model `%s` does not exist or you do not have access to it.",
                 nl < 0 ? "(too long)" : name);
        return decode_error(p, 404, "invalid_request_error", "model_not_found", "model", msg);
    }
    compute_hint(p, &required, max_tokens);
    p->pl.max_tokens = max_tokens;
    p->pl.est_tokens = p->hint.est_tokens;
    return 0;
}

static int core_rebody(struct pl_req *q) { return decode((struct pctx *)q); }

void api_request(struct worker *w, http_req *r, enum met_endpoint ep)
{
    struct pctx *p = (struct pctx *)pl_req_alloc(&engine);
    if (!p) {
        http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return;
    }
    p->pl.w = w;
    p->pl.http = r;
    p->pl.ep = ep;
    p->pl.seg_start = r->t_ready_ns; /* shade's work starts when the request is read */
    p->pl.start_unix_ns = trace_unix_ns() - (mono_ns() - r->t_start_ns);
    /* W3C trace context: continue the client's trace, or start one */
    const struct http_hdr *tph = http_req_header(r, "traceparent");
    struct trace_ctx parent;
    if (tph && trace_parse(tph->value, tph->value_len, &parent) == 0) {
        memcpy(p->pl.tc.trace_id, parent.trace_id, 16);
        memcpy(p->pl.parent_span, parent.span_id, 8);
        p->pl.tc.flags = parent.flags & TRACE_FLAG_SAMPLED; /* parent-based sampling */
        p->pl.has_parent = true;
    } else {
        trace_new_trace_id(&w->rng, p->pl.tc.trace_id);
        p->pl.tc.flags = trace_ratio_sampled(p->pl.tc.trace_id, tracing_config(w->gw->cfg)->sample) ? TRACE_FLAG_SAMPLED : 0;
    }
    trace_new_span_id(&w->rng, p->pl.tc.span_id);
    p->pl.body = r->body;
    p->pl.body_len = r->body_len;
    ev_timer_init(&p->retry_timer, retry_timer_cb, p);
    ev_timer_init(&p->ka_timer, ka_timer_cb, p);
    /* modules that look at the head first (a key before the body is read
     * back to the client), then the body */
    if (!pl_arrival(&p->pl))
        return;
    if (decode(p)) {
        core_failed(&p->pl);
        return;
    }
    r->ctx = p;
    r->on_abort = on_client_abort;
    r->on_drain = on_client_drain;
    /* the request phases of the modules (auth, limits, guard, cache, route),
     * then admit() — now, or after a phase waited */
    pl_run(&p->pl);
}

/* Admission: a slot of the model's max_in_flight, or the queue, or 503. */
static void admit(struct pctx *p)
{
    /* the model is final now (a phase may have changed the body) */
    met_gauge_add(&p->pl.w->met->inflight[p->pl.m->index], 1);
    p->gauged = true;
    /* every request pays into its model's retry budget */
    double *tok = &p->pl.w->retry_tokens[p->pl.m->index];
    *tok += p->pl.m->cfg->retry_budget_percent / 100.0;
    if (*tok > RETRY_TOKENS_MAX)
        *tok = RETRY_TOKENS_MAX;
    if (p->pl.stream && p->pl.m->cfg->stream_keepalive_ms)
        ev_timer_start(p->pl.w->loop, &p->ka_timer, p->pl.m->cfg->stream_keepalive_ms);
    if (p->pl.key && p->pl.key->priority >= 0) { /* the key's priority: a client cannot raise its own */
        p->prio = p->pl.key->priority;
    } else if (p->pl.m->cfg->queue_priority_header) {
        const struct http_hdr *ph = http_req_header(p->pl.http, p->pl.m->cfg->queue_priority_header);
        if (ph && ph->value_len == 1 && ph->value[0] >= '0' && ph->value[0] <= '9')
            p->prio = ph->value[0] - '0';
        else
            p->prio = 5;
    }
    if (!model_has_room(p->pl.m)) {
        /* the model is at max_in_flight: wait (or be shed) before any pick */
        if (p->pl.m->cfg->queue_size)
            enqueue_or_shed(p);
        else
            fail(p, 503, "server_error", "model_at_capacity", NULL,
                 "this model is at its limit of requests in flight");
        return;
    }
    start_attempt(p);
}
