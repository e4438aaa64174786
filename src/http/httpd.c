/* httpd.c — HTTP/1.1 server connections; requests are framed by h1.c.
 *
 * A connection moves through these states:
 *
 *   IDLE ──first byte──▶ HEAD ──headers──▶ BODY ──complete──▶ HANDLER
 *     ▲                                                          │
 *     └──────────── response ended, next pipelined request ◀─────┘
 *
 * Parsing stops after every complete request, so at most one request per
 * connection is with the handler; later pipelined bytes wait in `in`.
 * Requests are dispatched and resumed from deferred callbacks, never from
 * inside a parser callback, so a handler may answer synchronously.
 */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"
#include "rand.h"

#define READ_CHUNK       16384
#define MAX_PIPELINE_BUF (1024u * 1024u) /* stop reading ahead past this */
#define LINGER_MS        2000
#define SHUTDOWN_IDLE_GRACE_MS 200

enum conn_state { C_IDLE, C_HEAD, C_BODY, C_HANDLER, C_LINGER };

struct conn {
    ev_io io;
    ev_timer timer;
    ev_defer resume;     /* continue parsing after a response ended */
    ev_defer flush;      /* coalesce writes made during one event batch */
    struct httpd *srv;
    struct conn *prev, *next;
    enum conn_state state;
    struct buf in, out;

    /* request being parsed */
    size_t head_scan;         /* how far h1_head_end has looked */
    struct buf hbuf;          /* the request head, headers point into it */
    struct h1_request rq;
    struct h1_body bd;        /* body framing state */
    struct buf body;
    http_req req;
    struct http_hdr *hdrs;
    size_t caphdrs;

    /* response */
    bool req_active;          /* handler owns req */
    bool resp_chunked, resp_close_delim, resp_head_only;
    bool keep_alive;          /* for the current request */
    bool close_after;         /* close once `out` drains */
    bool closed;
    bool over_high;           /* out was above high water: tell on_drain */
    uint32_t nreq;            /* requests dispatched on this connection */
    uint64_t last_send_progress;
};

struct httpd {
    loop_t *loop;
    struct httpd_limits lim;
    httpd_handler handler;
    void *arg;
    ev_io *listeners;
    size_t nlisteners;
    struct conn *conns;       /* doubly linked list of live connections */
    size_t nconns;
    bool shutting_down;
    uint64_t rid_state;
    ev_timer accept_retry;    /* listeners paused after EMFILE */
};

static void conn_close(struct conn *c);
static void conn_parse(struct conn *c);
static void conn_flush_now(struct conn *c);
static void queue_flush(struct conn *c);
static void send_error_and_close(struct conn *c, int status, const char *msg);

/* ---------- status and error helpers ---------- */

const char *http_status_text(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return s < 300 ? "OK" : s < 500 ? "Client Error" : "Server Error";
    }
}

static long put_json_str_or_null(char *out, size_t cap, const char *s)
{
    if (!s) {
        if (cap < 5)
            return -1;
        memcpy(out, "null", 4);
        return 4;
    }
    return json_escape(s, strlen(s), out, cap);
}

size_t http_error_json(char *out, size_t cap, const char *type, const char *code,
                       const char *param, const char *message)
{
    /* {"error":{"message":M,"type":T,"param":P,"code":C}}\n */
    static const char *keys[] = { "{\"error\":{\"message\":", ",\"type\":", ",\"param\":", ",\"code\":" };
    const char *vals[] = { message, type, param, code };
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        size_t kl = strlen(keys[i]);
        if (n + kl >= cap)
            return 0;
        memcpy(out + n, keys[i], kl);
        n += kl;
        long w = put_json_str_or_null(out + n, cap - n, vals[i]);
        if (w < 0)
            return 0;
        n += (size_t)w;
    }
    if (n + 4 > cap)
        return 0;
    memcpy(out + n, "}}\n", 3);
    n += 3;
    out[n] = '\0';
    return n;
}

/* ---------- request ids ---------- */

static bool reqid_ok(const char *v, size_t n)
{
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (!(ch >= 0x21 && ch <= 0x7e) || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

static void set_reqid(struct conn *c)
{
    http_req *r = &c->req;
    const struct http_hdr *h = http_req_header(r, "x-request-id");
    if (h && reqid_ok(h->value, h->value_len)) {
        memcpy(r->reqid, h->value, h->value_len);
        r->reqid_len = h->value_len;
    } else {
        static const char hex[] = "0123456789abcdef";
        uint64_t v[2] = { rnd_splitmix64_next(&c->srv->rid_state), rnd_splitmix64_next(&c->srv->rid_state) };
        for (int i = 0; i < 32; i++)
            r->reqid[i] = hex[(v[i / 16] >> (60 - 4 * (i % 16))) & 0xf];
        r->reqid_len = 32;
    }
    r->reqid[r->reqid_len] = '\0';
}

/* ---------- header access ---------- */

bool http_hdr_is(const struct http_hdr *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

const struct http_hdr *http_req_header(const http_req *r, const char *name)
{
    for (size_t i = 0; i < r->nhdrs; i++)
        if (http_hdr_is(&r->hdrs[i], name))
            return &r->hdrs[i];
    return NULL;
}

bool http_hdr_has_token_n(const struct http_hdr *h, const char *tok, size_t tl)
{
    const char *p = h->value, *e = h->value + h->value_len;
    while (p < e) {
        while (p < e && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *s = p;
        while (p < e && *p != ',')
            p++;
        const char *t = p;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - s) == tl && strncasecmp(s, tok, tl) == 0)
            return true;
    }
    return false;
}

bool http_hdr_has_token(const struct http_hdr *h, const char *tok)
{
    return http_hdr_has_token_n(h, tok, strlen(tok));
}

/* ---------- request parsing (framing rules in h1.h) ---------- */

static enum http_method_id method_id(const char *m, size_t n)
{
#define M(s, id) if (n == sizeof(s) - 1 && memcmp(m, s, n) == 0) return id
    M("GET", HTTP_M_GET);
    M("POST", HTTP_M_POST);
    M("HEAD", HTTP_M_HEAD);
    M("PUT", HTTP_M_PUT);
    M("DELETE", HTTP_M_DELETE);
    M("OPTIONS", HTTP_M_OPTIONS);
#undef M
    return HTTP_M_OTHER;
}

/* The first byte of a request (after empty lines): reset, start the clock. */
static void begin_message(struct conn *c)
{
    c->state = C_HEAD;
    c->head_scan = 0;
    buf_reset(&c->hbuf);
    buf_reset(&c->body);
    c->req.nhdrs = 0;
    c->req.reqid_len = 0;
    c->req.t_start_ns = mono_ns();
    ev_timer_start(c->srv->loop, &c->timer, c->srv->lim.header_timeout_ms);
}

/* Fill the request from the parsed head (pointers into hbuf). */
static void build_request(struct conn *c)
{
    http_req *r = &c->req;
    r->hdrs = c->hdrs;
    r->nhdrs = c->rq.nhdrs;
    r->method_name = c->rq.method;
    r->method_len = c->rq.method_len;
    r->method = method_id(r->method_name, r->method_len);
    r->url = c->rq.target;
    r->url_len = c->rq.target_len;
    r->path = r->url;
    r->path_len = r->url_len;
    /* absolute-form ("GET http://host/v1/models"): route on the path part */
    if (r->url_len > 8 && (strncasecmp(r->url, "http://", 7) == 0 || strncasecmp(r->url, "https://", 8) == 0)) {
        const char *auth = (const char *)memchr(r->url, ':', r->url_len) + 3;
        const char *slash = memchr(auth, '/', (size_t)(r->url + r->url_len - auth));
        r->path = slash ? slash : r->url + r->url_len;
        r->path_len = (size_t)(r->url + r->url_len - r->path);
    }
    const char *q = memchr(r->path, '?', r->path_len);
    if (q)
        r->path_len = (size_t)(q - r->path);
    r->http_minor = c->rq.minor;
}

/* A complete head of hl bytes at the start of `in`: move it to hbuf, parse
 * it, decide the body's framing.  0, or a status to answer with *msg. */
static int take_head(struct conn *c, size_t hl, const char **msg)
{
    struct httpd *s = c->srv;
    if (hl > s->lim.max_header_bytes) {
        *msg = "request headers are too large";
        return 431;
    }
    if (buf_append(&c->hbuf, buf_data(&c->in), hl) < 0) {
        *msg = "out of memory";
        return 500;
    }
    buf_consume(&c->in, hl);
    const char *head = buf_data(&c->hbuf);
    /* every line but the request line and the empty one may be a header */
    size_t lines = h1_count_lines(head, hl);
    size_t maxh = lines > 2 ? lines - 2 : 0;
    if (maxh > s->lim.max_headers)
        maxh = s->lim.max_headers;
    if (maxh > c->caphdrs) {
        struct http_hdr *h = realloc(c->hdrs, maxh * sizeof *h);
        if (!h) {
            *msg = "out of memory";
            return 500;
        }
        c->hdrs = h;
        c->caphdrs = maxh;
    }
    int st = h1_parse_request(head, hl, &c->rq, c->hdrs, maxh, msg);
    if (st)
        return st;
    build_request(c);
    c->keep_alive = c->rq.keep_alive && !s->shutting_down;
    bool has_body = c->rq.framing != H1_NO_BODY;
    if (c->rq.framing == H1_LENGTH && c->rq.content_length > s->lim.max_body_bytes) {
        *msg = "request body is too large";
        return 413;
    }
    const struct http_hdr *ex = http_req_header(&c->req, "expect");
    if (ex) {
        if (!(ex->value_len == 12 && strncasecmp(ex->value, "100-continue", 12) == 0)) {
            *msg = "unsupported Expect header";
            return 417;
        }
        /* Only worth it if a body follows; HTTP/1.0 clients do not know 100. */
        if (c->rq.minor >= 1 && has_body) {
            buf_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            queue_flush(c);
        }
    }
    if (c->rq.framing == H1_LENGTH && !buf_reserve(&c->body, (size_t)c->rq.content_length)) {
        *msg = "request body is too large";
        return 413;
    }
    h1_body_init(&c->bd, c->rq.framing, c->rq.content_length);
    c->state = C_BODY;
    ev_timer_start(s->loop, &c->timer, s->lim.body_timeout_ms);
    return 0;
}

static int body_sink(void *arg, const char *at, size_t len, const char **msg)
{
    struct conn *c = arg;
    if (buf_used(&c->body) + len > c->srv->lim.max_body_bytes) {
        *msg = "request body is too large";
        return 413;
    }
    if (buf_append(&c->body, at, len) < 0) {
        *msg = "out of memory";
        return 500;
    }
    return 0;
}

/* ---------- output ---------- */

static void conn_flush_now(struct conn *c)
{
    while (buf_used(&c->out)) {
        ssize_t n = send(c->io.fd, buf_data(&c->out), buf_used(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            c->last_send_progress = loop_now(c->srv->loop);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_set(c->srv->loop, &c->io, c->io.mask | EV_WRITE);
            return;
        }
        /* peer gone: nothing more can be delivered */
        conn_close(c);
        return;
    }
    if (c->closed)
        return;
    unsigned want = c->io.mask & ~EV_WRITE;
    ev_io_set(c->srv->loop, &c->io, want);
    if (c->close_after && !c->req_active) {
        if (c->state == C_LINGER)
            return;
        /* lingering close: stop sending, drain what the client still sends
         * so our response is not destroyed by a reset */
        shutdown(c->io.fd, SHUT_WR);
        c->state = C_LINGER;
        ev_io_set(c->srv->loop, &c->io, EV_READ);
        ev_timer_start(c->srv->loop, &c->timer, LINGER_MS);
    }
}

static void flush_cb(loop_t *l, ev_defer *d)
{
    struct conn *c = d->data;
    if (c->closed)
        return;
    conn_flush_now(c);
    /* the buffer can empty right here, with no write event to follow:
     * tell on_drain now, or a handler waiting for it waits forever */
    if (!c->closed && c->over_high && buf_used(&c->out) < HTTP_OUT_LOW_WATER) {
        c->over_high = false;
        if (c->req_active && c->req.on_drain)
            c->req.on_drain(&c->req);
    }
}

static void queue_flush(struct conn *c)
{
    ev_defer_post(c->srv->loop, &c->flush);
}

size_t http_out_pending(const http_req *r)
{
    const struct conn *c = r->conn;
    return buf_used(&c->out);
}

static void put_hdr(struct buf *b, const char *name, size_t nl, const char *val, size_t vl)
{
    char *w = buf_reserve(b, nl + vl + 4);
    if (!w)
        return;
    memcpy(w, name, nl);
    w[nl] = ':';
    w[nl + 1] = ' ';
    memcpy(w + nl + 2, val, vl);
    w[nl + 2 + vl] = '\r';
    w[nl + 3 + vl] = '\n';
    b->len += nl + vl + 4;
}

void http_start(http_req *r, int status, const struct http_hdr *hdrs, size_t n, int64_t content_length)
{
    struct conn *c = r->conn;
    if (r->started)
        return;
    r->started = true;
    r->status = status;
    if (c->srv->shutting_down)
        c->keep_alive = false;
    c->resp_head_only = r->method == HTTP_M_HEAD;
    c->resp_chunked = false;
    c->resp_close_delim = false;
    if (content_length < 0) {
        if (r->http_minor >= 1) {
            c->resp_chunked = true;
        } else {
            c->resp_close_delim = true;
            c->keep_alive = false;
        }
    }
    struct buf *b = &c->out;
    buf_append(b, "HTTP/1.1 ", 9);
    buf_append_uint(b, (unsigned)status);
    buf_append(b, " ", 1);
    buf_append_str(b, http_status_text(status));
    buf_append(b, "\r\ndate: ", 8);
    buf_append_str(b, loop_http_date(c->srv->loop));
    buf_append(b, "\r\n", 2);
    for (size_t i = 0; i < n; i++)
        put_hdr(b, hdrs[i].name, hdrs[i].name_len, hdrs[i].value, hdrs[i].value_len);
    if (content_length >= 0) {
        buf_append(b, "content-length: ", 16);
        buf_append_uint(b, (unsigned long long)content_length);
        buf_append(b, "\r\n", 2);
    }
    else if (c->resp_chunked)
        buf_append_str(b, "transfer-encoding: chunked\r\n");
    if (!c->keep_alive)
        buf_append_str(b, "connection: close\r\n");
    else if (r->http_minor == 0)
        buf_append_str(b, "connection: keep-alive\r\n");
    put_hdr(b, "x-request-id", 12, r->reqid, r->reqid_len);
    buf_append(b, "\r\n", 2);
    queue_flush(c);
}

void http_write(http_req *r, const void *data, size_t len)
{
    struct conn *c = r->conn;
    if (len == 0 || c->resp_head_only)
        return;
    r->resp_body_bytes += len;
    if (c->resp_chunked) {
        char *w = buf_reserve(&c->out, len + 24);
        if (!w)
            return;
        int hl = snprintf(w, 24, "%zx\r\n", len);
        memcpy(w + hl, data, len);
        memcpy(w + hl + len, "\r\n", 2);
        c->out.len += (size_t)hl + len + 2;
    } else {
        buf_append(&c->out, data, len);
    }
    if (buf_used(&c->out) > HTTP_OUT_HIGH_WATER)
        c->over_high = true;
    queue_flush(c);
}

static void request_done(struct conn *c)
{
    c->req_active = false;
    c->req.on_abort = NULL;
    c->req.on_drain = NULL;
    c->req.ctx = NULL;
    if (!c->keep_alive)
        c->close_after = true;
    ev_defer_post(c->srv->loop, &c->resume);
}

void http_end(http_req *r)
{
    struct conn *c = r->conn;
    if (!r->started)
        http_start(r, r->status ? r->status : 200, NULL, 0, 0);
    if (c->resp_chunked && !c->resp_head_only)
        buf_append(&c->out, "0\r\n\r\n", 5);
    if (c->resp_close_delim)
        c->close_after = true;
    queue_flush(c);
    request_done(c);
}

void http_abort(http_req *r)
{
    struct conn *c = r->conn;
    c->keep_alive = false;
    c->close_after = true;
    if (!r->started) {
        /* nothing sent yet: a plain close reads as a reset to the client */
        request_done(c);
        conn_close(c);
        return;
    }
    queue_flush(c);
    request_done(c);
}

int http_respond_buf(http_req *r, int status, const char *content_type, struct buf *b)
{
    if (!buf_data(b)) {
        http_respond_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return 500;
    }
    http_respond(r, status, content_type, buf_data(b), buf_used(b));
    buf_free(b);
    return status;
}

void http_respond(http_req *r, int status, const char *content_type, const void *body, size_t len)
{
    struct http_hdr h = { "content-type", 12, content_type, strlen(content_type) };
    http_start(r, status, &h, 1, (int64_t)len);
    http_write(r, body, len);
    http_end(r);
}

void http_respond_error(http_req *r, int status, const char *type, const char *code,
                        const char *param, const char *fmt, ...)
{
    char msg[1024], body[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = http_error_json(body, sizeof body, type, code, param, msg);
    http_respond(r, status, "application/json", body, n);
}

/* ---------- connection life ---------- */

static void conn_free(void *p)
{
    struct conn *c = p;
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->hbuf);
    buf_free(&c->body);
    free(c->hdrs);
    free(c);
}

static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct httpd *s = c->srv;
    if (c->req_active) {
        c->req_active = false;
        void (*cb)(http_req *) = c->req.on_abort;
        c->req.on_abort = NULL;
        if (cb)
            cb(&c->req);
    }
    int fd = c->io.fd;
    ev_io_stop(s->loop, &c->io);
    if (fd >= 0)
        close(fd);
    ev_timer_stop(s->loop, &c->timer);
    ev_defer_cancel(s->loop, &c->resume);
    ev_defer_cancel(s->loop, &c->flush);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    loop_defer_free(s->loop, c, conn_free);
}

static void send_error_and_close(struct conn *c, int status, const char *msg)
{
    /* errors found before a handler saw the request: answer, then close */
    char body[1024];
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    const char *code = status == 413 ? "request_too_large"
                     : status == 431 ? "request_headers_too_large"
                     : status == 408 ? "request_timeout" : NULL;
    size_t n = http_error_json(body, sizeof body, type, code, NULL, msg);
    c->keep_alive = false;
    http_req *r = &c->req;
    if (r->reqid_len == 0)
        set_reqid(c);
    r->started = false;
    r->http_minor = 1;
    r->method = HTTP_M_OTHER;
    c->state = C_HANDLER;
    c->req_active = true; /* so http_end's bookkeeping applies */
    http_respond(r, status, "application/json", body, n);
}

static void dispatch(struct conn *c)
{
    http_req *r = &c->req;
    struct httpd *s = c->srv;
    ev_timer_stop(s->loop, &c->timer);
    c->nreq++;
    r->t_ready_ns = mono_ns();
    r->status = 0;
    r->started = false;
    r->resp_body_bytes = 0;
    r->ctx = NULL;
    r->on_abort = NULL;
    r->on_drain = NULL;
    set_reqid(c);
    c->req_active = true;
    c->over_high = false;
    c->last_send_progress = loop_now(s->loop);
    /* send stalls are bounded by the same timer while the handler works */
    ev_timer_start(s->loop, &c->timer, s->lim.body_timeout_ms);
    s->handler(r, s->arg);
}

static void conn_parse(struct conn *c)
{
    if (c->closed || c->req_active || c->close_after || c->state == C_LINGER)
        return;
    int status = 0;
    const char *msg = NULL;
    if (c->state == C_IDLE) {
        /* RFC 9112 2.2: empty lines before a request line are ignored */
        buf_consume(&c->in, h1_skip_empty_lines(buf_data(&c->in), buf_used(&c->in)));
        size_t avail = buf_used(&c->in);
        if (avail == 0 || (avail == 1 && buf_data(&c->in)[0] == '\r'))
            return;
        begin_message(c);
    }
    if (c->state == C_HEAD) {
        size_t hl = h1_head_end(buf_data(&c->in), buf_used(&c->in), &c->head_scan);
        if (hl == 0) {
            if (buf_used(&c->in) >= c->srv->lim.max_header_bytes) {
                status = 431;
                msg = "request headers are too large";
                goto error;
            }
            return;
        }
        if ((status = take_head(c, hl, &msg)) != 0)
            goto error;
    }
    if (c->state == C_BODY) {
        long used = h1_body_feed(&c->bd, buf_data(&c->in), buf_used(&c->in), body_sink, c, &status, &msg);
        if (used < 0)
            goto error;
        buf_consume(&c->in, (size_t)used);
        if (!c->bd.done)
            return;
        c->req.body = buf_data(&c->body);
        c->req.body_len = buf_used(&c->body);
        c->state = C_HANDLER;
        dispatch(c);
    }
    return;
error:
    /* protocol error or limit: answer and close; nothing after it is read */
    buf_reset(&c->in);
    if (c->state != C_BODY)
        c->req.nhdrs = 0; /* header pointers are only built once the head parsed */
    c->req.reqid_len = 0;
    send_error_and_close(c, status, msg);
}

static void resume_cb(loop_t *l, ev_defer *d)
{
    struct conn *c = d->data;
    if (c->closed)
        return;
    struct httpd *s = c->srv;
    if (c->close_after) {
        conn_flush_now(c);
        return;
    }
    c->state = C_IDLE;
    buf_trim(&c->body, 1u << 20);
    buf_trim(&c->hbuf, 1u << 16);
    /* reading may have been paused while the handler worked */
    ev_io_set(l, &c->io, (c->io.mask | EV_READ));
    ev_timer_start(l, &c->timer, s->lim.keepalive_timeout_ms);
    if (buf_used(&c->in))
        conn_parse(c);
}

static void timer_cb(loop_t *l, ev_timer *t)
{
    struct conn *c = (struct conn *)((char *)t - offsetof(struct conn, timer));
    struct httpd *s = c->srv;
    switch (c->state) {
    case C_IDLE:
        conn_close(c);
        return;
    case C_HEAD:
    case C_BODY:
        if (c->state == C_HEAD)
            c->req.nhdrs = 0;
        c->req.reqid_len = 0;
        send_error_and_close(c, 408, c->state == C_HEAD ? "timed out reading request headers"
                                                        : "timed out reading request body");
        return;
    case C_HANDLER:
        /* the client is not reading what we send: a stalled send */
        if (buf_used(&c->out) && loop_now(l) - c->last_send_progress >= s->lim.body_timeout_ms) {
            conn_close(c);
            return;
        }
        ev_timer_start(l, &c->timer, s->lim.body_timeout_ms);
        return;
    case C_LINGER:
        conn_close(c);
        return;
    }
}

static void conn_read(struct conn *c)
{
    struct httpd *s = c->srv;
    for (int rounds = 0; rounds < 4; rounds++) {
        char *w = buf_reserve(&c->in, READ_CHUNK);
        if (!w) {
            conn_close(c);
            return;
        }
        ssize_t n = recv(c->io.fd, w, c->in.cap - c->in.len, 0);
        if (n > 0) {
            if (c->state == C_LINGER) {
                buf_reset(&c->in);
                continue;
            }
            c->in.len += (size_t)n;
            if ((size_t)n < READ_CHUNK)
                break;
            continue;
        }
        if (n == 0) {
            /* EOF: nothing more will come; a request the handler owns is
             * abandoned by its client (nginx's 499) */
            conn_close(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        conn_close(c);
        return;
    }
    if (c->state == C_LINGER)
        return;
    if (c->req_active) {
        /* pipelined bytes wait; stop reading if a client pushes too far ahead */
        if (buf_used(&c->in) > MAX_PIPELINE_BUF)
            ev_io_set(s->loop, &c->io, c->io.mask & ~EV_READ);
        return;
    }
    conn_parse(c);
}

static void conn_io_cb(loop_t *l, ev_io *io, unsigned ev)
{
    struct conn *c = io->data;
    if (ev & EV_WRITE) {
        conn_flush_now(c);
        if (c->closed)
            return;
        if (c->over_high && buf_used(&c->out) < HTTP_OUT_LOW_WATER) {
            c->over_high = false;
            if (c->req_active && c->req.on_drain)
                c->req.on_drain(&c->req);
            if (c->closed)
                return;
        }
    }
    if (ev & (EV_READ | EV_HUP))
        conn_read(c);
}

static void accept_cb(loop_t *l, ev_io *io, unsigned ev)
{
    struct httpd *s = io->data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: the listener stays readable, so stop
                 * watching it for a moment instead of spinning (nginx does
                 * the same) */
                for (size_t k = 0; k < s->nlisteners; k++)
                    ev_io_set(l, &s->listeners[k], 0);
                ev_timer_start(l, &s->accept_retry, 100);
            }
            return;
        }
        if (s->nconns >= s->lim.max_connections || s->shutting_down) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (httpd_adopt(s, fd, &ss) < 0)
            close(fd);
    }
}

int httpd_adopt(struct httpd *s, int fd, const struct sockaddr_storage *ss)
{
    loop_t *l = s->loop;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->srv = s;
    c->req.conn = c;
    c->req.loop = l;
    if (ss && ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        snprintf(c->req.peer, sizeof c->req.peer, "%s:%u", ip, ntohs(a->sin_port));
    } else if (ss && ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        snprintf(c->req.peer, sizeof c->req.peer, "[%s]:%u", ip, ntohs(a->sin6_port));
    }
    ev_io_init(&c->io, conn_io_cb, c);
    ev_timer_init(&c->timer, timer_cb, c);
    ev_defer_init(&c->resume, resume_cb, c);
    ev_defer_init(&c->flush, flush_cb, c);
    if (ev_io_start(l, &c->io, fd, EV_READ) < 0) {
        free(c);
        return -1;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    c->state = C_IDLE;
    /* a fresh connection must send its first request within the header timeout */
    ev_timer_start(l, &c->timer, s->lim.header_timeout_ms);
    return 0;
}

/* ---------- server ---------- */

static void accept_retry_cb(loop_t *l, ev_timer *t)
{
    struct httpd *s = t->data;
    if (s->shutting_down)
        return;
    for (size_t k = 0; k < s->nlisteners; k++)
        ev_io_set(l, &s->listeners[k], EV_READ);
}

struct httpd *httpd_new(loop_t *l, const struct httpd_limits *lim, httpd_handler h, void *arg)
{
    struct httpd *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = l;
    s->lim = *lim;
    s->handler = h;
    s->arg = arg;
    ev_timer_init(&s->accept_retry, accept_retry_cb, s);
    if (getrandom(&s->rid_state, sizeof s->rid_state, 0) != (ssize_t)sizeof s->rid_state)
        s->rid_state = mono_ns() ^ (uint64_t)(uintptr_t)s;
    return s;
}

int httpd_listen(struct httpd *s, int fd)
{
    ev_io *ls = realloc(s->listeners, (s->nlisteners + 1) * sizeof *ls);
    if (!ls)
        return -ENOMEM;
    s->listeners = ls;
    ev_io *io = &s->listeners[s->nlisteners];
    ev_io_init(io, accept_cb, s);
    int rc = ev_io_start(s->loop, io, fd, EV_READ);
    if (rc < 0)
        return rc;
    s->nlisteners++;
    return 0;
}

void httpd_shutdown(struct httpd *s)
{
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    for (size_t i = 0; i < s->nlisteners; i++) {
        int fd = s->listeners[i].fd;
        ev_io_stop(s->loop, &s->listeners[i]);
        if (fd >= 0)
            close(fd);
    }
    struct conn *c = s->conns;
    while (c) {
        struct conn *next = c->next;
        c->keep_alive = false; /* every response from now on says connection: close */
        if (!c->req_active && c->state == C_IDLE && buf_used(&c->in) == 0 && buf_used(&c->out) == 0 &&
            c->nreq > 0) {
            /* an idle keep-alive connection: a request may already be on
             * the wire, so close after a short grace rather than at once */
            ev_timer_start(s->loop, &c->timer, SHUTDOWN_IDLE_GRACE_MS);
        }
        /* a connection accepted but silent so far will send its request:
         * it is served (with connection: close) within the header timeout;
         * one mid-request or busy finishes its current request, then closes */
        c = next;
    }
}

void httpd_close_all(struct httpd *s)
{
    ev_timer_stop(s->loop, &s->accept_retry);
    while (s->conns)
        conn_close(s->conns);
}

size_t httpd_connections(const struct httpd *s) { return s->nconns; }

void httpd_free(struct httpd *s)
{
    if (!s)
        return;
    httpd_close_all(s);
    for (size_t i = 0; i < s->nlisteners; i++) {
        int fd = s->listeners[i].fd;
        ev_io_stop(s->loop, &s->listeners[i]);
        if (fd >= 0)
            close(fd);
    }
    free(s->listeners);
    free(s);
}
