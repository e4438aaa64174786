/* upstream.h — the client side: HTTP/1.1 to model servers on the worker's own
 * loop, with per-worker keep-alive pools and optional TLS (OpenSSL).
 *
 * One exchange per connection at a time.  The caller hands over the request
 * bytes (copied), then receives the response head, body pieces (de-chunked,
 * in arrival order, never buffered here) and exactly one on_done — unless it
 * calls up_cancel() first.  After on_done the connection is no longer the
 * caller's: it goes back to the pool (response complete, keep-alive) or is
 * closed.
 */
#ifndef SHADE_UPSTREAM_H
#define SHADE_UPSTREAM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"
#include "config.h"
#include "httpd.h"
#include "loop.h"

/* Shared by all workers: one per configured backend. */
struct backend {
    const struct config_backend *cfg;
    const struct config_model *model;
    uint32_t id;                  /* global index, for metrics arrays */
    uint32_t index;               /* position in its model */
    char host_header[300];        /* "host" or "host:port" */
    struct ssl_ctx_st *ssl_ctx;   /* NULL for http:// */
    _Atomic int inflight;         /* requests in flight, all workers */
    _Atomic uint64_t down_until;  /* monotonic ms; backend skipped until then */
    _Atomic uint32_t fails;       /* consecutive failures counted for ejection */

    /* balance.c's state (least_tokens, p2c_ewma) */
    _Atomic uint64_t outstanding_tokens; /* estimated tokens in flight */
    _Atomic uint64_t ewma_us;            /* peak-EWMA of time to first byte, µs */
    _Atomic uint64_t ewma_stamp_ms;      /* when ewma_us was last updated */

    /* health.c's state (active checks, outlier ejection) */
    _Atomic uint32_t ejections;          /* consecutive ejections, for backoff */
    _Atomic int check_ok;                /* active check verdict: 1 passing, 0 none yet,
                                            -1 failing (down) */
    _Atomic uint32_t check_streak;       /* consecutive results in one direction */
};

int backend_init_tls(struct backend *be, char *err, size_t errlen);
void backend_free_tls(struct backend *be);
bool backend_is_up(struct backend *be, uint64_t now_ms);

/* What one attempt on a backend came to, as far as its health goes. */
enum be_outcome {
    BE_OK = 0,         /* a response (any status below 500, except 429) */
    BE_CONNECT_FAIL,   /* refused, unreachable, connect timeout, TLS failure */
    BE_TIMEOUT,        /* first-byte, idle or total timeout */
    BE_5XX,            /* answered 5xx, or broke the protocol / closed mid-response */
    BE_429,            /* answered 429 */
};
void backend_report(struct backend *be, enum be_outcome o, uint64_t now_ms);
/* What else hears of each outcome of a backend with outlier detection on:
 * health.c registers its ejection logic here at start-up, so the client
 * below it never calls up into health policy.  NULL: nobody. */
typedef void (*backend_outcome_fn)(struct backend *be, enum be_outcome o, uint64_t now_ms);
void backend_on_outcome(backend_outcome_fn fn);

enum up_err {
    UP_OK = 0,
    UP_ECONNECT,          /* refused, unreachable, reset while connecting */
    UP_ECONNECT_TIMEOUT,
    UP_ETLS,              /* handshake or certificate failure */
    UP_EFIRSTBYTE_TIMEOUT,/* no response head in time */
    UP_EIDLE_TIMEOUT,     /* too long between response reads */
    UP_ETOTAL_TIMEOUT,
    UP_ECLOSED,           /* connection closed before the response ended */
    UP_EPROTO,            /* unparseable response */
    UP_ENOMEM,
    UP_E5XX,              /* not transport errors: upstream answers counted */
    UP_E429,              /* as failed attempts in metrics and for retries */
    UP__COUNT
};
const char *up_err_name(enum up_err e);       /* "connect", "timeout", ... */
bool up_err_is_timeout(enum up_err e);

struct up_handlers {
    /* content_length < 0 when unknown (chunked or close-delimited) */
    void (*on_head)(void *ctx, int status, const struct http_hdr *hdrs, size_t n, int64_t content_length);
    void (*on_body)(void *ctx, const char *p, size_t n);
    void (*on_done)(void *ctx, enum up_err err);
};

struct up_pool;   /* per worker, per backend */
struct up_conn;

struct up_pool *up_pool_new(loop_t *l, struct backend *be);
void up_pool_free(struct up_pool *p);   /* closes idle connections */
size_t up_pool_idle(const struct up_pool *p);

/* Start an exchange.  The request bytes (iov) are copied.  Failures are
 * reported through on_done, never synchronously.  Returns NULL only when out
 * of memory. */
struct up_conn *up_start(struct up_pool *p, const struct iovec *iov, int iovcnt,
                         const struct up_handlers *h, void *ctx);
/* Abandon the exchange: no more callbacks; the connection is closed unless
 * its response had already completed. */
void up_cancel(struct up_conn *c);
/* Back-pressure: stop / resume reading the response. */
void up_pause(struct up_conn *c, bool paused);
/* Did this exchange run on a kept-alive connection, and has any response
 * byte arrived?  (A reused connection that fails before any byte is the
 * classic keep-alive race and is safe to retry.) */
bool up_reused(const struct up_conn *c);
bool up_got_bytes(const struct up_conn *c);

/* The one upstream request head builder, shared by the proxy's attempts and
 * side calls, so both join base_path and authenticate the same way.  A head
 * is up_head_begin, then any up_head_header / up_head_auth, then "\r\n". */
/* "METHOD base_path+path HTTP/1.1\r\nhost: ...\r\n" (a base_path ending
 * in /v1 and a path starting with /v1 do not double it) */
void up_head_begin(struct buf *b, const struct backend *be, const char *method, size_t method_len, const char *path,
                   size_t path_len);
void up_head_header(struct buf *b, const char *name, size_t name_len, const char *value, size_t value_len);
/* "authorization: Bearer <key>\r\n" when the backend has an api_key */
void up_head_auth(struct buf *b, const struct backend *be);

#endif
