/* trace.h — W3C Trace Context and span export over OTLP/HTTP (JSON).
 *
 * Three parts:
 *   - traceparent parsing and formatting, id generation and the
 *     TraceIdRatioBased sampling decision (pure functions);
 *   - struct span, a fixed-size span record filled by the caller;
 *   - the tracer: a bounded queue of spans and one exporter thread that
 *     POSTs them in batches to an OTLP/HTTP collector
 *     (`http://host:port/v1/traces`, content-type application/json).
 *
 * Only sampled spans should be submitted: the sampling decision is the
 * caller's (e.g. parent-based: follow the incoming traceparent's sampled
 * flag when there is one, else trace_ratio_sampled() on the new trace id).
 */
#ifndef SHADE_TRACE_H
#define SHADE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* ------------------------------------------------------------ trace context */

#define TRACE_FLAG_SAMPLED 0x01u
#define TRACE_PARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags; /* bit 0 = sampled */
};

/* Parse a traceparent value (already stripped of surrounding whitespace, as
 * the HTTP parser hands it over): "vv-<32 hex>-<16 hex>-<2 hex>", lowercase
 * hex only, trace and parent ids not all zero, version ff invalid.  Version
 * 00 must be exactly 55 characters and keeps every flag bit.  A higher
 * version is read as W3C Trace Context §3.2.4 says: at least 55 characters,
 * the three fields in the 00 positions, and the flags followed by the end or
 * by '-' (what follows is not looked at); only its sampled bit is kept.
 * Returns 0 and fills *out, or -1 (and *out is untouched). */
int trace_parse(const char *v, size_t n, struct trace_ctx *out);
/* Writes the version-00 form: 55 characters and a NUL. */
void trace_format(const struct trace_ctx *c, char out[TRACE_PARENT_LEN + 1]);

/* Random ids from a caller-owned xorshift64* state (0 is replaced by a fixed
 * seed); never all-zero.  The state must differ between processes for ids
 * to be unique: seed it with trace_rng_seed(). */
void trace_new_trace_id(uint64_t *rng, uint8_t out[16]);
void trace_new_span_id(uint64_t *rng, uint8_t out[8]);
uint64_t trace_rng_seed(void); /* getrandom(), with a time/address fallback; never 0 */

/* OpenTelemetry's TraceIdRatioBased: the trace id's lower 8 bytes, big
 * endian, shifted right by one, below ratio * 2^63.  Deterministic, so every
 * service sampling at the same ratio keeps the same traces.  ratio <= 0 (or
 * NaN) never samples, >= 1 always does. */
bool trace_ratio_sampled(const uint8_t trace_id[16], double ratio);

/* Wall clock in nanoseconds since the Unix epoch (span timestamps). */
uint64_t trace_unix_ns(void);

/* -------------------------------------------------------------------- spans */

enum span_kind { SPAN_INTERNAL = 1, SPAN_SERVER = 2, SPAN_CLIENT = 3 };
enum span_attr_type { SPAN_ATTR_STR = 0, SPAN_ATTR_INT, SPAN_ATTR_DOUBLE, SPAN_ATTR_BOOL };
enum span_status { SPAN_STATUS_UNSET = 0, SPAN_STATUS_OK = 1, SPAN_STATUS_ERROR = 2 };
enum { SPAN_ATTRS_MAX = 24, SPAN_LINKS_MAX = 2, SPAN_STR_MAX = 160 };

struct span_attr {
    const char *key; /* a static string (the span is copied, the key is not) */
    int type;        /* enum span_attr_type */
    union {
        int64_t i;
        double d;
        bool b;
    } v;
    char s[SPAN_STR_MAX]; /* SPAN_ATTR_STR: NUL-terminated */
};

/* A span is plain data: fill it (zero it first), then tracer_submit() copies
 * it.  name and status_message are NUL-terminated (cut at the array size if
 * not).  The OTLP encoder escapes every string and replaces invalid UTF-8. */
struct span {
    uint8_t trace_id[16], span_id[8], parent_span_id[8];
    bool has_parent;
    char name[64];
    int kind; /* enum span_kind */
    uint64_t start_unix_ns, end_unix_ns;
    int status; /* enum span_status */
    char status_message[96];
    struct span_attr attrs[SPAN_ATTRS_MAX];
    int nattrs;
    uint32_t dropped_attrs; /* set by span_attr_* when attrs is full; exported as droppedAttributesCount */
    struct {
        uint8_t trace_id[16], span_id[8];
    } links[SPAN_LINKS_MAX];
    int nlinks;
};

/* Add an attribute; when SPAN_ATTRS_MAX are there already it is counted in
 * dropped_attrs instead.  span_attr_str copies at most SPAN_STR_MAX - 1
 * bytes, cut at a UTF-8 character boundary (and at an embedded NUL). */
void span_attr_str(struct span *s, const char *key, const char *v, size_t n);
void span_attr_int(struct span *s, const char *key, int64_t v);
void span_attr_double(struct span *s, const char *key, double v);
void span_attr_bool(struct span *s, const char *key, bool v);
/* Add a link (ignored when SPAN_LINKS_MAX are there already). */
void span_add_link(struct span *s, const uint8_t trace_id[16], const uint8_t span_id[8]);

/* ------------------------------------------------------------------- tracer */

struct tracer_opts {
    const char *endpoint;     /* "http://host[:port][/path]", e.g. http://127.0.0.1:4318/v1/traces;
                                 port defaults to 80, path to "/"; https is refused */
    const char *service_name; /* resource service.name (default "shade") */
    uint32_t queue_size;      /* spans held for export (default 4096, at most 65536); 3.2 KB each */
    uint32_t batch_size;      /* spans per POST (default 512, at most queue_size) */
    uint32_t interval_ms;     /* export at least this often when spans wait (default 1000) */
    uint32_t timeout_ms;      /* per export, connect to response (default 5000); also bounds tracer_stop */
};

struct tracer;

/* Checks the endpoint, resolves its host once (the addresses are kept) and
 * starts the exporter thread.  NULL and a message in err on failure. */
struct tracer *tracer_start(const struct tracer_opts *o, char *err, size_t errlen);
/* Copy a span into the queue: a short mutex, no I/O; when the queue is full
 * the span is dropped and counted.  NULL t: nothing. */
void tracer_submit(struct tracer *t, const struct span *s);
/* Export what is queued (within timeout_ms in all), join the thread, free.
 * Every tracer_submit must have returned, and none may follow.  NULL ok. */
void tracer_stop(struct tracer *t);

struct tracer_stats {
    uint64_t exported; /* spans the collector accepted */
    uint64_t dropped;  /* spans refused by tracer_submit: queue full */
    uint64_t failed;   /* spans lost to a failed export (or rejected by the collector, or left at stop) */
    uint64_t batches;  /* POSTs attempted */
};
void tracer_get_stats(struct tracer *t, struct tracer_stats *s); /* NULL t: zeros */
/* tracer_stop, and the counters as they are at the end (final may be NULL) */
void tracer_stop_stats(struct tracer *t, struct tracer_stats *final);

/* The OTLP/JSON ExportTraceServiceRequest for n spans, appended to out.
 * Exposed for tests.  0, or -1 when out of memory (out is then incomplete). */
int trace_encode_otlp_json(const char *service_name, const struct span *s, size_t n, struct buf *out);

#endif
