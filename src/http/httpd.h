/* httpd.h — the server side of HTTP/1.1: accept, parse, limits, timeouts,
 * responses (whole or streamed), keep-alive and pipelining.
 *
 * One httpd per worker loop.  The handler receives a request once its whole
 * body has arrived and owns it until it calls http_end() / http_respond*() /
 * http_abort().  If the client goes away first, req->on_abort (when set) is
 * called and the handler must drop every pointer to the request: it is freed
 * by httpd when on_abort returns.  The request (headers, body) lives in
 * connection buffers that stay valid until then.
 */
#ifndef SHADE_HTTPD_H
#define SHADE_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "h1.h"
#include "loop.h"

struct httpd_limits {
    uint32_t max_header_bytes;     /* request line + headers; over → 431 */
    uint32_t max_headers;          /* header count; over → 431 */
    uint64_t max_body_bytes;       /* over → 413 */
    uint32_t header_timeout_ms;    /* first byte → end of headers; → 408 */
    uint32_t body_timeout_ms;      /* between body reads, and send stalls; → 408 */
    uint32_t keepalive_timeout_ms; /* idle between requests; closes silently */
    uint32_t max_connections;      /* per httpd */
};

enum http_method_id { HTTP_M_OTHER = 0, HTTP_M_GET, HTTP_M_HEAD, HTTP_M_POST, HTTP_M_PUT, HTTP_M_DELETE, HTTP_M_OPTIONS };

typedef struct http_req http_req;
struct http_req {
    void *conn;                 /* private */
    loop_t *loop;
    enum http_method_id method;
    const char *method_name; size_t method_len;
    const char *url; size_t url_len;      /* as sent */
    const char *path; size_t path_len;    /* url without query */
    int http_minor;                       /* 1.0 or 1.1 */
    struct http_hdr *hdrs; size_t nhdrs;
    const char *body; size_t body_len;
    char reqid[130]; size_t reqid_len;    /* from x-request-id or generated */
    char peer[64];                        /* client address "ip:port" */
    uint64_t t_start_ns;                  /* first byte of the request */
    uint64_t t_ready_ns;                  /* body complete, handler called */

    /* for the handler */
    void *ctx;
    void (*on_abort)(http_req *r);
    void (*on_drain)(http_req *r);

    /* response state, read-only for the handler */
    int status;
    bool started;
    uint64_t resp_body_bytes;
};

typedef void (*httpd_handler)(http_req *r, void *arg);

struct httpd;
struct httpd *httpd_new(loop_t *l, const struct httpd_limits *lim, httpd_handler h, void *arg);
/* Start accepting on a listening, non-blocking socket (httpd owns it). */
int httpd_listen(struct httpd *s, int fd);
/* Serve an already-connected, non-blocking socket (accept() uses this; so do
 * tests and fuzzers with a socketpair).  ss may be NULL.  httpd owns fd on
 * success. */
struct sockaddr_storage;
int httpd_adopt(struct httpd *s, int fd, const struct sockaddr_storage *ss);
/* Graceful stop: close listeners and idle connections; busy connections get
 * "Connection: close" and close after their current response. */
void httpd_shutdown(struct httpd *s);
/* Close everything now (aborting requests in flight). */
void httpd_close_all(struct httpd *s);
size_t httpd_connections(const struct httpd *s);
void httpd_free(struct httpd *s);

/* Case-insensitive header lookup; NULL when absent. */
const struct http_hdr *http_req_header(const http_req *r, const char *name);
bool http_hdr_is(const struct http_hdr *h, const char *name);
/* Does a comma-separated header value contain this token (case-insensitive)? */
bool http_hdr_has_token(const struct http_hdr *h, const char *tok);
bool http_hdr_has_token_n(const struct http_hdr *h, const char *tok, size_t tok_len);

/* Responses.  Extra headers are written as given (names must be valid);
 * httpd adds date, content-length / transfer-encoding, connection and
 * x-request-id itself.  content_length < 0 streams: chunked for HTTP/1.1,
 * close-delimited for HTTP/1.0. */
void http_start(http_req *r, int status, const struct http_hdr *hdrs, size_t n, int64_t content_length);
void http_write(http_req *r, const void *data, size_t len);
void http_end(http_req *r);
/* End a response that cannot be completed properly (upstream broke mid-way):
 * flush what is queued, then close without a proper end of message, so the
 * client can tell the response is truncated. */
void http_abort(http_req *r);
/* Whole response in one call. */
void http_respond(http_req *r, int status, const char *content_type, const void *body, size_t len);
/* The same with a body built in b, which is freed; a buffer whose building
 * ran out of memory (no data) is answered 500.  Returns the status sent. */
struct buf;
int http_respond_buf(http_req *r, int status, const char *content_type, struct buf *b);
/* An OpenAI-style error object: {"error":{"message","type","param","code"}}.
 * param and code may be NULL (written as null). */
void http_respond_error(http_req *r, int status, const char *type, const char *code,
                        const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Bytes queued for the client and not yet written (for back-pressure). */
size_t http_out_pending(const http_req *r);
#define HTTP_OUT_HIGH_WATER (256u * 1024u)
#define HTTP_OUT_LOW_WATER  (64u * 1024u)

const char *http_status_text(int status);
/* Build an OpenAI error object into out; returns its length. */
size_t http_error_json(char *out, size_t cap, const char *type, const char *code,
                       const char *param, const char *message);

#endif
