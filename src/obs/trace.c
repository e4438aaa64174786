/* trace.c — W3C Trace Context and the OTLP/HTTP span exporter (trace.h).
 *
 * traceparent.  Parsed by position, as Trace Context §3.2 lays it out:
 * "vv-" at 0, the trace id at 3, '-' at 35, the parent id at 36, '-' at 52,
 * the flags at 53.  Version 00 is exactly 55 bytes; a higher version (not
 * ff) may continue after the flags with '-' and fields we do not read
 * (§3.2.4).  Formatting always writes version 00.
 *
 * The queue.  A ring of queue_size span slots allocated once; head and
 * count are guarded by one mutex.  tracer_submit copies the span into the
 * slot after the last one (about 3 KB of memcpy under the lock) or, when
 * the ring is full, counts a drop; it signals the exporter when count
 * reaches batch_size.  The exporter takes up to batch_size slots from the
 * head, encodes them to JSON *without* the lock (producers only write slots
 * outside [head, head + count), so the slots it reads cannot change), then
 * frees them under the lock before any I/O: the queue keeps accepting
 * spans while a POST is in flight or hung.
 *
 * The exporter thread.  It exports when batch_size spans wait, or when any
 * wait and interval_ms has passed since the last export.  A failed export
 * counts the batch's spans as failed (no retry) and holds the next export
 * back for interval_ms even if a batch fills meanwhile (the queue then
 * fills up and drops), so a dead collector costs one attempt per interval.
 * Failures are logged once, then not again until an export succeeds.
 *
 * Export.  One blocking HTTP/1.1 POST per batch on a fresh connection
 * (Connection: close) to the address resolved at start: non-blocking
 * socket, every wait a poll() bounded by the export's deadline (timeout_ms
 * from its start).  Any 2xx is success; an OTLP partialSuccess in the body
 * moves its rejectedSpans from exported to failed.  The response is read
 * by hclient.c until it is complete, the peer closes or the deadline
 * passes; once the status line and headers are in, the status decides.
 *
 * Stopping.  tracer_stop sets a flag and a deadline (now + timeout_ms); the
 * exporter finishes the export in flight (its own deadline is earlier),
 * then sends what is queued, batch after batch, until the queue is empty,
 * an export fails or the deadline passes; whatever is left counts as
 * failed.  So tracer_stop returns within about timeout_ms, and at once when
 * the collector refuses connections.
 */
#include "trace.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "hclient.h"
#include "json.h"
#include "log.h"
#include "rand.h"

#define QUEUE_MAX (1u << 16)    /* spans: about 210 MB of slots */
#define MAX_RESPONSE (64u << 10) /* response body bytes looked at */

/* ------------------------------------------------------------ trace context */

static const char hexdig[] = "0123456789abcdef";

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase too: the spec's HEXDIGLC */
}

static bool unhex(const char *p, size_t nbytes, uint8_t *out)
{
    for (size_t i = 0; i < nbytes; i++) {
        int hi = hexval((unsigned char)p[2 * i]), lo = hexval((unsigned char)p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static char *tohex(char *w, const uint8_t *p, size_t nbytes)
{
    for (size_t i = 0; i < nbytes; i++) {
        *w++ = hexdig[p[i] >> 4];
        *w++ = hexdig[p[i] & 15];
    }
    return w;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int trace_parse(const char *v, size_t n, struct trace_ctx *out)
{
    uint8_t version;
    if (!v || n < TRACE_PARENT_LEN || !unhex(v, 1, &version) || version == 0xff)
        return -1;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return -1;
    if (version == 0 ? n != TRACE_PARENT_LEN : n > TRACE_PARENT_LEN && v[TRACE_PARENT_LEN] != '-')
        return -1;
    struct trace_ctx c;
    if (!unhex(v + 3, 16, c.trace_id) || !unhex(v + 36, 8, c.span_id) || !unhex(v + 53, 1, &c.flags))
        return -1;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return -1;
    if (version != 0)
        c.flags &= TRACE_FLAG_SAMPLED; /* §3.2.4: only the sampled bit is known */
    *out = c;
    return 0;
}

void trace_format(const struct trace_ctx *c, char out[TRACE_PARENT_LEN + 1])
{
    char *w = out;
    *w++ = '0';
    *w++ = '0';
    *w++ = '-';
    w = tohex(w, c->trace_id, 16);
    *w++ = '-';
    w = tohex(w, c->span_id, 8);
    *w++ = '-';
    w = tohex(w, &c->flags, 1);
    *w = '\0';
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

void trace_new_trace_id(uint64_t *rng, uint8_t out[16])
{
    do {
        put_be64(out, rnd_xorshift64s(rng));
        put_be64(out + 8, rnd_xorshift64s(rng));
    } while (all_zero(out, 16));
}

void trace_new_span_id(uint64_t *rng, uint8_t out[8])
{
    do
        put_be64(out, rnd_xorshift64s(rng));
    while (all_zero(out, 8));
}

uint64_t trace_rng_seed(void)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 32 ^ (uint64_t)getpid() << 16 ^ (uint64_t)(uintptr_t)&v;
    }
    v = rnd_splitmix64(v); /* spreads a weak fallback */
    return v ? v : RND_GOLDEN;
}

bool trace_ratio_sampled(const uint8_t trace_id[16], double ratio)
{
    if (!(ratio > 0))
        return false;
    if (ratio >= 1)
        return true;
    uint64_t x = 0;
    for (int i = 8; i < 16; i++)
        x = x << 8 | trace_id[i];
    return (x >> 1) < (uint64_t)(ratio * 0x1p63);
}

uint64_t trace_unix_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* -------------------------------------------------------------------- spans */

static struct span_attr *attr_add(struct span *s, const char *key, int type)
{
    if (s->nattrs < 0 || s->nattrs >= SPAN_ATTRS_MAX) {
        s->dropped_attrs++;
        return NULL;
    }
    struct span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->type = type;
    a->s[0] = '\0';
    return a;
}

void span_attr_str(struct span *s, const char *key, const char *v, size_t n)
{
    struct span_attr *a = attr_add(s, key, SPAN_ATTR_STR);
    if (!a)
        return;
    if (!v)
        n = 0;
    const char *nul = n ? memchr(v, '\0', n) : NULL;
    if (nul)
        n = (size_t)(nul - v);
    if (n > SPAN_STR_MAX - 1) {
        /* cut before the character that does not fit: back over at most 3
         * continuation bytes (more is not UTF-8, and is replaced anyway) */
        size_t cut = SPAN_STR_MAX - 1;
        for (int k = 0; k < 3 && cut > 0 && ((unsigned char)v[cut] & 0xC0) == 0x80; k++)
            cut--;
        if (((unsigned char)v[cut] & 0xC0) == 0x80)
            cut = SPAN_STR_MAX - 1;
        n = cut;
    }
    if (n)
        memcpy(a->s, v, n);
    a->s[n] = '\0';
}

void span_attr_int(struct span *s, const char *key, int64_t v)
{
    struct span_attr *a = attr_add(s, key, SPAN_ATTR_INT);
    if (a)
        a->v.i = v;
}

void span_attr_double(struct span *s, const char *key, double v)
{
    struct span_attr *a = attr_add(s, key, SPAN_ATTR_DOUBLE);
    if (a)
        a->v.d = v;
}

void span_attr_bool(struct span *s, const char *key, bool v)
{
    struct span_attr *a = attr_add(s, key, SPAN_ATTR_BOOL);
    if (a)
        a->v.b = v;
}

void span_add_link(struct span *s, const uint8_t trace_id[16], const uint8_t span_id[8])
{
    if (s->nlinks < 0 || s->nlinks >= SPAN_LINKS_MAX)
        return;
    memcpy(s->links[s->nlinks].trace_id, trace_id, 16);
    memcpy(s->links[s->nlinks].span_id, span_id, 8);
    s->nlinks++;
}

/* ------------------------------------------------------------ OTLP/JSON */

/* An encoder: appends to b and remembers an allocation failure. */
struct enc {
    struct buf *b;
    int err;
};

static void put_raw(struct enc *e, const char *s, size_t n)
{
    if (!e->err && buf_append(e->b, s, n) < 0)
        e->err = -1;
}

static void put_lit(struct enc *e, const char *s) { put_raw(e, s, strlen(s)); }

static void put_str(struct enc *e, const char *s, size_t n)
{
    size_t cap = 6 * n + 3; /* worst case: every byte a \u00XX escape */
    char *w = e->err ? NULL : buf_reserve(e->b, cap);
    long k = w ? json_escape(s, n, w, cap) : -1;
    if (k < 0)
        e->err = -1;
    else
        e->b->len += (size_t)k;
}

static void put_hex(struct enc *e, const uint8_t *p, size_t nbytes)
{
    char tmp[34];
    tmp[0] = '"';
    char *w = tohex(tmp + 1, p, nbytes);
    *w++ = '"';
    put_raw(e, tmp, (size_t)(w - tmp));
}

/* a uint64 as a JSON string (proto3 JSON maps 64-bit integers to strings) */
static void put_u64str(struct enc *e, uint64_t v, bool negative)
{
    char tmp[24];
    size_t i = sizeof tmp;
    tmp[--i] = '"';
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (negative)
        tmp[--i] = '-';
    tmp[--i] = '"';
    put_raw(e, tmp + i, sizeof tmp - i);
}

static void put_i64str(struct enc *e, int64_t v)
{
    put_u64str(e, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0);
}

/* shortest of %.15g / %.17g that reads back the same; NaN and infinities
 * as the strings proto3 JSON uses */
static void put_double(struct enc *e, double d)
{
    char tmp[40];
    if (isnan(d)) {
        put_lit(e, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        put_lit(e, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    int n = snprintf(tmp, sizeof tmp, "%.15g", d);
    if (strtod(tmp, NULL) != d)
        n = snprintf(tmp, sizeof tmp, "%.17g", d);
    put_raw(e, tmp, (size_t)n);
}

static void put_attr(struct enc *e, const struct span_attr *a)
{
    const char *key = a->key ? a->key : "";
    put_lit(e, "{\"key\":");
    put_str(e, key, strlen(key));
    switch (a->type) {
    case SPAN_ATTR_INT:
        put_lit(e, ",\"value\":{\"intValue\":");
        put_i64str(e, a->v.i);
        break;
    case SPAN_ATTR_DOUBLE:
        put_lit(e, ",\"value\":{\"doubleValue\":");
        put_double(e, a->v.d);
        break;
    case SPAN_ATTR_BOOL:
        put_lit(e, a->v.b ? ",\"value\":{\"boolValue\":true" : ",\"value\":{\"boolValue\":false");
        break;
    default:
        put_lit(e, ",\"value\":{\"stringValue\":");
        put_str(e, a->s, strnlen(a->s, sizeof a->s));
        break;
    }
    put_lit(e, "}}");
}

static void put_span(struct enc *e, const struct span *s)
{
    put_lit(e, "{\"traceId\":");
    put_hex(e, s->trace_id, 16);
    put_lit(e, ",\"spanId\":");
    put_hex(e, s->span_id, 8);
    if (s->has_parent) {
        put_lit(e, ",\"parentSpanId\":");
        put_hex(e, s->parent_span_id, 8);
    }
    put_lit(e, ",\"name\":");
    put_str(e, s->name, strnlen(s->name, sizeof s->name));
    int kind = s->kind >= 0 && s->kind <= 5 ? s->kind : 0; /* OTLP SpanKind; else UNSPECIFIED */
    char tmp[16];
    snprintf(tmp, sizeof tmp, ",\"kind\":%d", kind);
    put_lit(e, tmp);
    put_lit(e, ",\"startTimeUnixNano\":");
    put_u64str(e, s->start_unix_ns, false);
    put_lit(e, ",\"endTimeUnixNano\":");
    put_u64str(e, s->end_unix_ns, false);
    put_lit(e, ",\"attributes\":[");
    int na = s->nattrs < 0 ? 0 : s->nattrs > SPAN_ATTRS_MAX ? SPAN_ATTRS_MAX : s->nattrs;
    for (int i = 0; i < na; i++) {
        if (i)
            put_lit(e, ",");
        put_attr(e, &s->attrs[i]);
    }
    put_lit(e, "]");
    if (s->dropped_attrs) {
        snprintf(tmp, sizeof tmp, "%u", s->dropped_attrs);
        put_lit(e, ",\"droppedAttributesCount\":");
        put_lit(e, tmp);
    }
    int nl = s->nlinks < 0 ? 0 : s->nlinks > SPAN_LINKS_MAX ? SPAN_LINKS_MAX : s->nlinks;
    if (nl) {
        put_lit(e, ",\"links\":[");
        for (int i = 0; i < nl; i++) {
            put_lit(e, i ? ",{\"traceId\":" : "{\"traceId\":");
            put_hex(e, s->links[i].trace_id, 16);
            put_lit(e, ",\"spanId\":");
            put_hex(e, s->links[i].span_id, 8);
            put_lit(e, "}");
        }
        put_lit(e, "]");
    }
    if (s->status == SPAN_STATUS_OK || s->status == SPAN_STATUS_ERROR) {
        put_lit(e, s->status == SPAN_STATUS_OK ? ",\"status\":{\"code\":1" : ",\"status\":{\"code\":2");
        size_t ml = strnlen(s->status_message, sizeof s->status_message);
        if (ml) {
            put_lit(e, ",\"message\":");
            put_str(e, s->status_message, ml);
        }
        put_lit(e, "}");
    }
    put_lit(e, "}");
}

/* the spans of a ring are up to two runs: a[0..na) then b[0..nb) */
static int encode(const char *service, const struct span *a, size_t na, const struct span *b, size_t nb,
                  struct buf *out)
{
    struct enc e = { out, 0 };
    if (!service)
        service = "shade";
    put_lit(&e, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
                "{\"stringValue\":");
    put_str(&e, service, strlen(service));
    put_lit(&e, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"shade\",\"version\":\"" SHADE_VERSION "\"},"
                "\"spans\":[");
    for (size_t i = 0; i < na + nb; i++) {
        if (i)
            put_lit(&e, ",");
        put_span(&e, i < na ? &a[i] : &b[i - na]);
    }
    put_lit(&e, "]}]}]}");
    return e.err;
}

int trace_encode_otlp_json(const char *service_name, const struct span *s, size_t n, struct buf *out)
{
    return encode(service_name, s, n, NULL, 0, out);
}

/* ------------------------------------------------------------------- tracer */

struct tracer {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    pthread_t thread;
    struct span *ring;
    uint32_t cap, head, count; /* under lock */
    bool stop;                 /* under lock */
    uint64_t stop_deadline;    /* under lock, ms */
    uint32_t batch, interval_ms, timeout_ms;
    char *service, *endpoint, *authority, *path;
    struct hc_addrs addrs; /* resolved once, at start */
    struct buf body; /* the exporter's */
    bool warned;         /* a failure was logged; quiet until a success */
    bool warned_partial; /* a partial success was logged; quiet until a full one */
    atomic_uint_fast64_t exported, dropped, failed, batches;
};

static void add(atomic_uint_fast64_t *c, uint64_t n) { atomic_fetch_add_explicit(c, n, memory_order_relaxed); }

/* ---------- the POST (hclient.c) ---------- */

/* POST the body; fills r (status 0: no final answer) and returns a reason
 * on failure or NULL.  Once the status line and headers are in, the status
 * decides: a body cut short or longer than MAX_RESPONSE is only not looked
 * at for a partial success. */
static const char *post(struct tracer *t, const struct buf *body, uint64_t deadline, struct hc_response *r)
{
    struct hc_request rq = { .addrs = &t->addrs, .method = "POST", .path = t->path, .authority = t->authority,
                             .headers = "User-Agent: shade/" SHADE_VERSION "\r\n",
                             .content_type = "application/json", .body = buf_data(body),
                             .body_len = buf_used(body), .deadline_ms = deadline, .max_response = MAX_RESPONSE,
                             .cancel_fd = -1 };
    enum hc_err e = hc_call(&rq, r);
    return r->status ? NULL : hc_err_str(e);
}

/* rejectedSpans of an OTLP partialSuccess ({"partialSuccess":{"rejectedSpans":"2",...}}) */
static uint64_t rejected_spans(const struct buf *body, char *msg, size_t msglen)
{
    struct json_span root, ps, v;
    msg[0] = '\0';
    if (json_validate(buf_data(body), buf_used(body), &root, NULL) != 0 || root.type != JSON_OBJECT ||
        !json_get(&root, "partialSuccess", &ps) || ps.type != JSON_OBJECT)
        return 0;
    if (json_get(&ps, "errorMessage", &v) && v.type == JSON_STRING && json_str_unescape(&v, msg, msglen) < 0)
        msg[0] = '\0';
    int64_t n = 0;
    char num[24];
    if (!json_get(&ps, "rejectedSpans", &v))
        return 0;
    if (v.type == JSON_STRING && json_str_unescape(&v, num, sizeof num) > 0) {
        char *end;
        n = strtoll(num, &end, 10);
        if (*end)
            n = 0;
    } else if (!json_to_i64(&v, &n)) {
        n = 0;
    }
    return n > 0 ? (uint64_t)n : 0;
}

/* ---------- the exporter thread ---------- */

/* Export up to batch_size spans from the head.  Called and returns with
 * the lock held; drops it while encoding and sending.  true: accepted. */
static bool export_batch(struct tracer *t, uint64_t deadline)
{
    uint32_t k = t->count < t->batch ? t->count : t->batch, start = t->head;
    uint32_t n1 = k < t->cap - start ? k : t->cap - start;
    pthread_mutex_unlock(&t->lock);

    buf_reset(&t->body);
    int enc_rc = encode(t->service, t->ring + start, n1, t->ring, k - n1, &t->body);

    pthread_mutex_lock(&t->lock);
    t->head = (start + k) % t->cap;
    t->count -= k;
    pthread_mutex_unlock(&t->lock);

    struct hc_response r = { 0 };
    const char *why = "out of memory";
    char msg[256] = "";
    uint64_t rejected = 0;
    if (enc_rc == 0) {
        add(&t->batches, 1);
        why = post(t, &t->body, deadline, &r);
    }
    bool ok = !why && r.status >= 200 && r.status <= 299;
    if (ok) {
        rejected = rejected_spans(&r.body, msg, sizeof msg);
        if (rejected > k)
            rejected = k;
        add(&t->exported, k - rejected);
        add(&t->failed, rejected);
        if (rejected && !t->warned_partial) {
            t->warned_partial = true;
            log_warn("tracing: the collector at %s rejected %llu of %u spans%s%s (not logged again until an "
                     "export is accepted in full)", t->endpoint, (unsigned long long)rejected, k,
                     msg[0] ? ": " : "", msg);
        }
        t->warned = false;
        t->warned_partial = rejected != 0 && t->warned_partial;
    } else {
        add(&t->failed, k);
        if (!t->warned) {
            t->warned = true;
            char st[32] = "";
            if (!why)
                snprintf(st, sizeof st, "HTTP %d", r.status);
            log_warn("tracing: export of %u spans to %s failed: %s (dropped; further failures are not logged "
                     "until an export succeeds)", k, t->endpoint, why ? why : st);
        }
    }
    buf_free(&r.body);
    buf_trim(&t->body, 1u << 20);
    pthread_mutex_lock(&t->lock);
    return ok;
}

static void wait_until(struct tracer *t, uint64_t deadline_ms)
{
    struct timespec ts = { (time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000L };
    pthread_cond_timedwait(&t->cond, &t->lock, &ts);
}

static void *exporter_main(void *arg)
{
    struct tracer *t = arg;
    pthread_mutex_lock(&t->lock);
    uint64_t next = hc_now_ms() + t->interval_ms; /* the next export by time */
    bool backoff = false;                       /* the last export failed: wait for `next` */
    while (!t->stop) {
        uint64_t now = hc_now_ms();
        if (t->count > 0 && (now >= next || (!backoff && t->count >= t->batch))) {
            backoff = !export_batch(t, now + t->timeout_ms);
            if (backoff || t->count < t->batch)
                next = hc_now_ms() + t->interval_ms;
            continue;
        }
        if (now >= next)
            next = now + t->interval_ms;
        wait_until(t, next);
    }
    /* stopping: what is queued, until a failure or the deadline */
    while (t->count > 0 && hc_now_ms() < t->stop_deadline && export_batch(t, t->stop_deadline))
        ;
    add(&t->failed, t->count);
    t->count = 0;
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

/* ---------- start, submit, stop ---------- */

static void free_tracer(struct tracer *t)
{
    free(t->ring);
    free(t->service);
    free(t->endpoint);
    free(t->authority);
    free(t->path);
    buf_free(&t->body);
    free(t);
}

struct tracer *tracer_start(const struct tracer_opts *o, char *err, size_t errlen)
{
    if (!o || !o->endpoint || !*o->endpoint) {
        snprintf(err, errlen, "tracing: no endpoint (expected http://host:port/v1/traces)");
        return NULL;
    }
    if (o->queue_size > QUEUE_MAX) {
        snprintf(err, errlen, "tracing: queue_size at most %u", QUEUE_MAX);
        return NULL;
    }
    struct tracer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "tracing: out of memory");
        return NULL;
    }
    struct hc_url u;
    const char *why;
    if (hc_url_parse(o->endpoint, &u, &why) < 0) {
        snprintf(err, errlen, "tracing: endpoint %s: %s", o->endpoint, why);
        free_tracer(t);
        return NULL;
    }
    t->authority = u.authority;
    t->path = u.path;
    if (hc_resolve(u.host, u.port, &t->addrs, &why) < 0) {
        snprintf(err, errlen, "tracing: endpoint %s: cannot resolve %s: %s", o->endpoint, u.host, why);
        free_tracer(t);
        return NULL;
    }

    t->cap = o->queue_size ? o->queue_size : 4096;
    t->batch = o->batch_size ? o->batch_size : 512;
    if (t->batch > t->cap)
        t->batch = t->cap;
    t->interval_ms = o->interval_ms ? o->interval_ms : 1000;
    t->timeout_ms = o->timeout_ms ? o->timeout_ms : 5000;
    t->ring = calloc(t->cap, sizeof *t->ring);
    t->service = strdup(o->service_name && *o->service_name ? o->service_name : "shade");
    t->endpoint = strdup(o->endpoint);
    if (!t->ring || !t->service || !t->endpoint) {
        snprintf(err, errlen, "tracing: out of memory");
        free_tracer(t);
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&t->lock, NULL);
    /* the thread takes no signals: they belong to the serving process's main thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&t->thread, NULL, exporter_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "tracing: cannot start the exporter thread: %s", strerror(rc));
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->lock);
        free_tracer(t);
        return NULL;
    }
    return t;
}

void tracer_submit(struct tracer *t, const struct span *s)
{
    if (!t || !s)
        return;
    pthread_mutex_lock(&t->lock);
    if (t->count == t->cap || t->stop) {
        pthread_mutex_unlock(&t->lock);
        add(&t->dropped, 1);
        return;
    }
    uint32_t i = t->head + t->count;
    t->ring[i >= t->cap ? i - t->cap : i] = *s;
    if (++t->count == t->batch)
        pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
}

void tracer_stop(struct tracer *t) { tracer_stop_stats(t, NULL); }

void tracer_stop_stats(struct tracer *t, struct tracer_stats *final)
{
    if (final)
        memset(final, 0, sizeof *final);
    if (!t)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = true;
    t->stop_deadline = hc_now_ms() + t->timeout_ms;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    if (final)
        tracer_get_stats(t, final);
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free_tracer(t);
}

void tracer_get_stats(struct tracer *t, struct tracer_stats *s)
{
    memset(s, 0, sizeof *s);
    if (!t)
        return;
    s->exported = atomic_load_explicit(&t->exported, memory_order_relaxed);
    s->dropped = atomic_load_explicit(&t->dropped, memory_order_relaxed);
    s->failed = atomic_load_explicit(&t->failed, memory_order_relaxed);
    s->batches = atomic_load_explicit(&t->batches, memory_order_relaxed);
}
