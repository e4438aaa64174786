/* upstream.c — HTTP/1.1 client connections to backends.
 *
 *   CONNECT ─▶ (TLS) ─▶ SEND ─▶ WAIT_HEAD ─▶ BODY ─▶ done ─▶ IDLE (pool) ─▶ reused
 *
 * One timer per connection carries whichever deadline is next (connect,
 * first byte, idle read, total).  The idle deadline is checked lazily: reads
 * only record their time, the timer re-arms itself when it fires early, so
 * a streaming response costs no timer-heap work per chunk.
 */
#include "upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "h1.h"

#define UP_READ_CHUNK 16384

enum up_state { S_CONNECT, S_TLS, S_SEND, S_WAIT_HEAD, S_BODY, S_IDLE, S_DEAD };

struct up_conn {
    ev_io io;
    ev_timer timer;
    ev_defer fail_later;
    struct up_pool *pool;
    struct up_conn *next;     /* idle list */
    struct up_conn *all_next, *all_prev; /* every live connection of the pool */
    enum up_state state;
    SSL *ssl;
    bool ssl_want_write;      /* an SSL read needs the socket writable */
    struct buf out;
    struct buf hbuf;          /* the response head as it arrives */
    size_t head_scan;         /* how far h1_head_end has looked into hbuf */
    struct h1_body bd;        /* body framing (h1.c, as for requests) */
    bool reused, got_bytes, paused, msg_done, keep_alive;
    bool in_start;            /* inside up_start: report failures later */
    enum up_err pending_err;
    int status;
    uint64_t t_start, t_last_read;
    const struct up_handlers *h;
    void *ctx;
};

struct up_pool {
    loop_t *loop;
    struct backend *be;
    struct up_conn *idle;
    size_t nidle;
    struct up_conn *all;      /* every connection not yet destroyed: the pool owns them */
};

static void conn_destroy(struct up_conn *c);
static void conn_fail(struct up_conn *c, enum up_err e);
static void conn_io_cb(loop_t *l, ev_io *io, unsigned ev);
static void conn_arm(struct up_conn *c);
static void do_read(struct up_conn *c);

/* ---------- names ---------- */

const char *up_err_name(enum up_err e)
{
    switch (e) {
    case UP_OK: return "ok";
    case UP_ECONNECT: return "connect";
    case UP_ECONNECT_TIMEOUT: return "connect_timeout";
    case UP_ETLS: return "tls";
    case UP_EFIRSTBYTE_TIMEOUT: return "first_byte_timeout";
    case UP_EIDLE_TIMEOUT: return "idle_timeout";
    case UP_ETOTAL_TIMEOUT: return "total_timeout";
    case UP_ECLOSED: return "closed";
    case UP_EPROTO: return "protocol";
    case UP_ENOMEM: return "nomem";
    case UP_E5XX: return "5xx";
    case UP_E429: return "429";
    default: return "unknown";
    }
}

bool up_err_is_timeout(enum up_err e)
{
    return e == UP_ECONNECT_TIMEOUT || e == UP_EFIRSTBYTE_TIMEOUT || e == UP_EIDLE_TIMEOUT ||
           e == UP_ETOTAL_TIMEOUT;
}

/* ---------- backend health (shared, lock-free) ---------- */

bool backend_is_up(struct backend *be, uint64_t now_ms)
{
    /* down_until: max_fails marking and outlier ejection; check_ok: the
     * active check's verdict (health.c: negative = failing) */
    return atomic_load_explicit(&be->down_until, memory_order_relaxed) <= now_ms &&
           atomic_load_explicit(&be->check_ok, memory_order_relaxed) >= 0;
}

static _Atomic(backend_outcome_fn) outcome_hook;

void backend_on_outcome(backend_outcome_fn fn) { atomic_store(&outcome_hook, fn); }

void backend_report(struct backend *be, enum be_outcome o, uint64_t now_ms)
{
    /* passive outlier ejection (health.c's hook), when configured */
    if (be->cfg->outlier.enabled) {
        backend_outcome_fn fn = atomic_load_explicit(&outcome_hook, memory_order_acquire);
        if (fn)
            fn(be, o, now_ms);
    }
    if (o != BE_CONNECT_FAIL) {
        /* only connection failures count towards marking a backend down */
        if (atomic_load_explicit(&be->fails, memory_order_relaxed))
            atomic_store_explicit(&be->fails, 0, memory_order_relaxed);
        return;
    }
    uint32_t f = atomic_fetch_add_explicit(&be->fails, 1, memory_order_relaxed) + 1;
    if (f >= be->cfg->max_fails) {
        atomic_store_explicit(&be->down_until, now_ms + be->cfg->fail_timeout_ms, memory_order_relaxed);
        atomic_store_explicit(&be->fails, 0, memory_order_relaxed);
    }
}

int backend_init_tls(struct backend *be, char *err, size_t errlen)
{
    if (!be->cfg->tls)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    static const unsigned char alpn[] = { 8, 'h', 't', 't', 'p', '/', '1', '.', '1' };
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    if (be->cfg->tls_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = be->cfg->ca_file ? SSL_CTX_load_verify_locations(ctx, be->cfg->ca_file, NULL)
                                  : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1)
            goto fail_ctx;
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    be->ssl_ctx = ctx;
    return 0;
fail_ctx:
    SSL_CTX_free(ctx);
fail:
    snprintf(err, errlen, "backend %s: TLS setup failed: %s", be->cfg->url,
             ERR_reason_error_string(ERR_get_error()) ? ERR_reason_error_string(ERR_get_error()) : "unknown");
    return -1;
}

void backend_free_tls(struct backend *be)
{
    if (be->ssl_ctx)
        SSL_CTX_free(be->ssl_ctx);
    be->ssl_ctx = NULL;
}

/* ---------- pool ---------- */

struct up_pool *up_pool_new(loop_t *l, struct backend *be)
{
    struct up_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = l;
    p->be = be;
    return p;
}

size_t up_pool_idle(const struct up_pool *p) { return p->nidle; }

static void pool_remove(struct up_pool *p, struct up_conn *c)
{
    for (struct up_conn **pp = &p->idle; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            c->next = NULL;
            p->nidle--;
            return;
        }
    }
}

void up_pool_free(struct up_pool *p)
{
    if (!p)
        return;
    while (p->idle) {
        struct up_conn *c = p->idle;
        pool_remove(p, c);
        conn_destroy(c);
    }
    /* an exchange nobody finished or cancelled (its owner is gone too):
     * the pool owns every connection, so none outlives it */
    while (p->all) {
        struct up_conn *c = p->all;
        c->h = NULL;
        c->ctx = NULL;
        conn_destroy(c);
    }
    free(p);
}

/* ---------- response parsing (framing rules in h1.h) ---------- */

#define UP_MAX_HEAD    65536
#define UP_MAX_HEADERS 64     /* an upstream sending more is not a model server */

static int body_sink(void *arg, const char *at, size_t len, const char **msg)
{
    struct up_conn *c = arg;
    if (c->h && c->h->on_body)
        c->h->on_body(c->ctx, at, len);
    return 0;
}

/* A complete head of hl bytes in hbuf: interim responses are dropped; a
 * final one is handed to on_head and its body framing set up.  0, or -1
 * when the response is unusable. */
static int take_head(struct up_conn *c, size_t hl)
{
    struct http_hdr hdrs[UP_MAX_HEADERS];
    struct h1_response rs;
    const char *msg;
    if (h1_parse_response(buf_data(&c->hbuf), hl, &rs, hdrs, UP_MAX_HEADERS, &msg) < 0)
        return -1;
    if (rs.status == 101)
        return -1; /* we never ask to upgrade */
    if (rs.status < 200) {
        /* interim response (100 Continue): the real one follows */
        buf_consume(&c->hbuf, hl);
        c->head_scan = 0;
        return 0;
    }
    c->status = rs.status;
    c->state = S_BODY;
    c->keep_alive = rs.keep_alive;
    h1_body_init(&c->bd, rs.framing, rs.content_length);
    int64_t cl = rs.framing == H1_NO_BODY ? 0 : rs.framing == H1_LENGTH ? (int64_t)rs.content_length : -1;
    if (c->h && c->h->on_head)
        c->h->on_head(c->ctx, c->status, hdrs, rs.nhdrs, cl);
    return 0;
}

/* Parse n response bytes.  0 to read on, 1 when the response is complete
 * (*extra: bytes followed it), -1 when it is unusable. */
static int parse_bytes(struct up_conn *c, const char *p, size_t n, bool *extra)
{
    while (n && c->state != S_DEAD) {
        if (c->state == S_WAIT_HEAD || c->state == S_SEND) {
            /* the head is gathered in hbuf (it may come in pieces), then
             * what follows it in this read is body */
            size_t used;
            long hl = h1_head_gather(&c->hbuf, &c->head_scan, UP_MAX_HEAD, p, n, &used);
            if (hl <= 0)
                return hl < 0 ? -1 : 0;
            p += used;
            n -= used;
            if (take_head(c, (size_t)hl) < 0)
                return -1;
            if (c->state != S_BODY)
                continue; /* an interim response: the next head follows */
        }
        if (c->bd.done)
            break;
        int st = 0;
        const char *msg;
        long used = h1_body_feed(&c->bd, p, n, body_sink, c, &st, &msg);
        if (used < 0)
            return -1;
        p += used;
        n -= (size_t)used;
        if (c->bd.done)
            break;
    }
    if (c->state == S_BODY && c->bd.done) {
        *extra = n > 0;
        return 1;
    }
    return 0;
}

/* ---------- connection ---------- */

static void conn_free_cb(void *p)
{
    struct up_conn *c = p;
    buf_free(&c->out);
    buf_free(&c->hbuf);
    free(c);
}

static void conn_destroy(struct up_conn *c)
{
    loop_t *l = c->pool->loop;
    if (c->state == S_DEAD)
        return;
    c->state = S_DEAD;
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        c->pool->all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    int fd = c->io.fd;
    ev_io_stop(l, &c->io);
    ev_timer_stop(l, &c->timer);
    ev_defer_cancel(l, &c->fail_later);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (fd >= 0)
        close(fd);
    loop_defer_free(l, c, conn_free_cb);
}

static void idle_timer_cb(loop_t *l, ev_timer *t)
{
    struct up_conn *c = t->data;
    pool_remove(c->pool, c);
    conn_destroy(c);
}

static void conn_release(struct up_conn *c)
{
    /* response complete: back to the pool if it can carry another one */
    struct up_pool *p = c->pool;
    c->h = NULL;
    c->ctx = NULL;
    if (!c->keep_alive || p->nidle >= p->be->cfg->max_idle_conns || c->paused ||
        p->be->cfg->keepalive_idle_ms == 0) {
        conn_destroy(c);
        return;
    }
    c->state = S_IDLE;
    buf_reset(&c->out);
    /* an idle connection must not pin the last request's body (megabytes
     * for a long prompt, per pooled connection) */
    buf_trim(&c->out, 65536);
    buf_trim(&c->hbuf, 16384);
    ev_io_set(p->loop, &c->io, EV_READ);
    c->timer.cb = idle_timer_cb;
    ev_timer_start(p->loop, &c->timer, p->be->cfg->keepalive_idle_ms);
    c->next = p->idle;
    p->idle = c;
    p->nidle++;
}

static void conn_finish(struct up_conn *c, enum up_err e)
{
    const struct up_handlers *h = c->h;
    void *ctx = c->ctx;
    c->h = NULL;
    if (e == UP_OK) {
        conn_release(c);
    } else {
        /* a kept-alive connection found dead before any answer: the server
         * went away, and its other idle connections are as dead — drop
         * them so a retry connects afresh */
        if (e == UP_ECLOSED && c->reused && !c->got_bytes) {
            struct up_pool *p = c->pool;
            while (p->idle) {
                struct up_conn *i = p->idle;
                pool_remove(p, i);
                conn_destroy(i);
            }
        }
        conn_destroy(c);
    }
    if (h && h->on_done)
        h->on_done(ctx, e);
}

static void conn_fail(struct up_conn *c, enum up_err e)
{
    if (c->in_start) {
        /* the caller is still inside up_start: never call back synchronously */
        c->pending_err = e;
        ev_defer_post(c->pool->loop, &c->fail_later);
        return;
    }
    conn_finish(c, e);
}

static void fail_later_cb(loop_t *l, ev_defer *d)
{
    struct up_conn *c = d->data;
    if (c->pending_err == UP_OK) {
        /* not a failure: resume reading data TLS already decrypted */
        if (c->state == S_WAIT_HEAD || c->state == S_BODY)
            do_read(c);
        return;
    }
    conn_finish(c, c->pending_err);
}

/* Timer while an exchange runs: decide which deadline fired. */
static void exchange_timer_cb(loop_t *l, ev_timer *t)
{
    struct up_conn *c = t->data;
    const struct config_backend *cfg = c->pool->be->cfg;
    uint64_t now = loop_now(l);
    if (now - c->t_start >= cfg->total_timeout_ms) {
        conn_fail(c, c->state <= S_TLS ? UP_ECONNECT_TIMEOUT : UP_ETOTAL_TIMEOUT);
        return;
    }
    switch (c->state) {
    case S_CONNECT:
    case S_TLS:
        conn_fail(c, UP_ECONNECT_TIMEOUT);
        return;
    case S_SEND:
    case S_WAIT_HEAD:
        if (now - c->t_start >= cfg->first_byte_timeout_ms) {
            conn_fail(c, UP_EFIRSTBYTE_TIMEOUT);
            return;
        }
        break;
    case S_BODY:
        if (!c->paused && now - c->t_last_read >= cfg->idle_timeout_ms) {
            conn_fail(c, UP_EIDLE_TIMEOUT);
            return;
        }
        break;
    default:
        return;
    }
    conn_arm(c);
}

/* Arm the timer at the nearest deadline for the current state. */
static void conn_arm(struct up_conn *c)
{
    const struct config_backend *cfg = c->pool->be->cfg;
    loop_t *l = c->pool->loop;
    uint64_t now = loop_now(l);
    uint64_t total = c->t_start + cfg->total_timeout_ms;
    uint64_t next = total;
    switch (c->state) {
    case S_CONNECT:
    case S_TLS:
        if (c->t_start + cfg->connect_timeout_ms < next)
            next = c->t_start + cfg->connect_timeout_ms;
        break;
    case S_SEND:
    case S_WAIT_HEAD:
        if (c->t_start + cfg->first_byte_timeout_ms < next)
            next = c->t_start + cfg->first_byte_timeout_ms;
        break;
    case S_BODY:
        if (!c->paused && c->t_last_read + cfg->idle_timeout_ms < next)
            next = c->t_last_read + cfg->idle_timeout_ms;
        break;
    default:
        return;
    }
    c->timer.cb = exchange_timer_cb;
    ev_timer_start(l, &c->timer, next > now ? next - now : 0);
}

/* ---------- I/O with or without TLS ---------- */

/* >0 bytes, 0 EOF, -1 would block, -2 error */
static ssize_t conn_recv(struct up_conn *c, char *p, size_t n)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t r = recv(c->io.fd, p, n, 0);
            if (r >= 0)
                return r;
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
        }
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, p, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return -1;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->ssl_want_write = true;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    /* SSL_ERROR_SYSCALL with no error queue: peer closed without close_notify,
     * which HTTP servers routinely do — treat as EOF */
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return 0;
    return -2;
}

static ssize_t conn_send(struct up_conn *c, const char *p, size_t n)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t r = send(c->io.fd, p, n, MSG_NOSIGNAL);
            if (r >= 0)
                return r;
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : -2;
        }
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, p, (int)n);
    if (r > 0)
        return r;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return -1;
    return -2;
}

static void conn_update_mask(struct up_conn *c)
{
    unsigned m = 0;
    switch (c->state) {
    case S_CONNECT:
        m = EV_WRITE;
        break;
    case S_TLS:
        m = c->ssl_want_write ? EV_WRITE : EV_READ;
        break;
    case S_SEND:
        m = EV_WRITE | EV_READ;
        break;
    case S_WAIT_HEAD:
    case S_BODY:
        m = c->paused ? 0 : EV_READ;
        if (c->ssl_want_write)
            m |= EV_WRITE;
        break;
    case S_IDLE:
        m = EV_READ;
        break;
    case S_DEAD:
        return;
    }
    ev_io_set(c->pool->loop, &c->io, m);
}

static void do_send(struct up_conn *c)
{
    while (buf_used(&c->out)) {
        ssize_t n = conn_send(c, buf_data(&c->out), buf_used(&c->out));
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n == -1) {
            conn_update_mask(c);
            return;
        }
        /* write failed: on a reused connection this is the keep-alive race */
        conn_fail(c, c->reused ? UP_ECLOSED : UP_ECONNECT);
        return;
    }
    /* the request is on the wire: its copy (megabytes for a long prompt)
     * is not held while the answer is awaited — a slow shadow candidate
     * would otherwise pin one per leg in flight */
    buf_trim(&c->out, 65536);
    c->state = S_WAIT_HEAD;
    conn_update_mask(c);
}

static void do_read(struct up_conn *c)
{
    char buf[UP_READ_CHUNK];
    for (int rounds = 0; rounds < 8 && c->state != S_DEAD && !c->paused; rounds++) {
        c->ssl_want_write = false;
        ssize_t n = conn_recv(c, buf, sizeof buf);
        if (n == -1) {
            conn_update_mask(c);
            return;
        }
        if (n == -2) {
            conn_fail(c, UP_ECLOSED);
            return;
        }
        if (n == 0) {
            /* EOF: ends a close-delimited body, otherwise the response is cut */
            if (c->state == S_BODY && c->bd.framing == H1_UNTIL_CLOSE) {
                c->msg_done = true;
                c->keep_alive = false;
                conn_finish(c, UP_OK);
                return;
            }
            conn_fail(c, UP_ECLOSED);
            return;
        }
        c->got_bytes = true;
        c->t_last_read = loop_now(c->pool->loop);
        enum up_state before = c->state;
        bool extra = false;
        int rc = parse_bytes(c, buf, (size_t)n, &extra);
        if (c->state == S_DEAD)
            return;
        if (rc > 0) {
            c->msg_done = true;
            /* bytes after the response on a connection we did not pipeline
             * on mean the server is confused: do not reuse it */
            if (extra)
                c->keep_alive = false;
            /* an early answer (e.g. 413) before our request was fully sent:
             * the connection is mid-request and cannot carry another */
            if (buf_used(&c->out))
                c->keep_alive = false;
            conn_finish(c, UP_OK);
            return;
        }
        if (rc < 0) {
            conn_fail(c, UP_EPROTO);
            return;
        }
        if (before != c->state && c->state == S_BODY)
            conn_arm(c); /* first byte arrived: switch to the idle deadline */
        if ((size_t)n < sizeof buf)
            break;
    }
}

static void do_tls(struct up_conn *c)
{
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        c->ssl_want_write = false;
        c->state = S_SEND;
        conn_arm(c); /* connected: the first-byte deadline applies now */
        do_send(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->ssl_want_write = e == SSL_ERROR_WANT_WRITE;
        conn_update_mask(c);
        return;
    }
    conn_fail(c, UP_ETLS);
}

static void start_tls(struct up_conn *c)
{
    struct backend *be = c->pool->be;
    c->ssl = SSL_new(be->ssl_ctx);
    if (!c->ssl) {
        conn_fail(c, UP_ETLS);
        return;
    }
    SSL_set_fd(c->ssl, c->io.fd);
    /* an IP literal is checked against the certificate's IP SANs and is
     * never sent as SNI (RFC 6066 allows host names only) */
    struct in6_addr tmp6;
    struct in_addr tmp4;
    bool is_ip = inet_pton(AF_INET, be->cfg->host, &tmp4) == 1 || inet_pton(AF_INET6, be->cfg->host, &tmp6) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(c->ssl, be->cfg->host);
    if (be->cfg->tls_verify) {
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), be->cfg->host);
        else
            SSL_set1_host(c->ssl, be->cfg->host);
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    c->state = S_TLS;
    do_tls(c);
}

static void conn_io_cb(loop_t *l, ev_io *io, unsigned ev)
{
    struct up_conn *c = io->data;
    switch (c->state) {
    case S_CONNECT: {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
            conn_fail(c, UP_ECONNECT);
            return;
        }
        if (c->pool->be->ssl_ctx) {
            start_tls(c);
        } else {
            c->state = S_SEND;
            conn_arm(c); /* connected: the first-byte deadline applies now */
            do_send(c);
        }
        return;
    }
    case S_TLS:
        do_tls(c);
        return;
    case S_SEND:
        if (ev & EV_WRITE)
            do_send(c);
        if (c->state != S_DEAD && (ev & (EV_READ | EV_HUP)))
            do_read(c); /* an early answer (e.g. 413) or a close */
        return;
    case S_WAIT_HEAD:
    case S_BODY:
        do_read(c);
        return;
    case S_IDLE: {
        /* an idle connection that becomes readable was closed (or the
         * server misbehaves): drop it */
        struct up_pool *p = c->pool;
        pool_remove(p, c);
        conn_destroy(c);
        return;
    }
    case S_DEAD:
        return;
    }
}

static struct up_conn *conn_new(struct up_pool *p)
{
    struct up_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pool = p;
    c->all_next = p->all;
    if (p->all)
        p->all->all_prev = c;
    p->all = c;
    ev_io_init(&c->io, conn_io_cb, c);
    ev_timer_init(&c->timer, exchange_timer_cb, c);
    ev_defer_init(&c->fail_later, fail_later_cb, c);
    return c;
}

static void begin_exchange(struct up_conn *c, const struct iovec *iov, int iovcnt,
                           const struct up_handlers *h, void *ctx)
{
    loop_t *l = c->pool->loop;
    c->h = h;
    c->ctx = ctx;
    c->got_bytes = false;
    c->paused = false;
    c->msg_done = false;
    c->keep_alive = false;
    c->status = 0;
    c->t_start = c->t_last_read = loop_now(l);
    buf_reset(&c->out);
    for (int i = 0; i < iovcnt; i++) {
        if (buf_append(&c->out, iov[i].iov_base, iov[i].iov_len) < 0) {
            c->pending_err = UP_ENOMEM;
            ev_defer_post(l, &c->fail_later);
            return;
        }
    }
    buf_reset(&c->hbuf);
    c->head_scan = 0;
}

struct up_conn *up_start(struct up_pool *p, const struct iovec *iov, int iovcnt,
                         const struct up_handlers *h, void *ctx)
{
    loop_t *l = p->loop;
    /* most recently used idle connection first: the warmest, least likely closed */
    struct up_conn *c = p->idle;
    if (c) {
        pool_remove(p, c);
        ev_timer_stop(l, &c->timer);
        c->reused = true;
        begin_exchange(c, iov, iovcnt, h, ctx);
        if (c->fail_later.queued)
            return c;
        c->state = S_SEND;
        conn_arm(c);
        c->in_start = true;
        do_send(c);
        c->in_start = false;
        return c;
    }
    c = conn_new(p);
    if (!c)
        return NULL;
    begin_exchange(c, iov, iovcnt, h, ctx);
    if (c->fail_later.queued)
        return c;
    const struct config_backend *cfg = p->be->cfg;
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->state = S_CONNECT;
    if (fd < 0) {
        c->pending_err = UP_ECONNECT;
        ev_defer_post(l, &c->fail_later);
        return c;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        close(fd);
        c->pending_err = UP_ECONNECT;
        ev_defer_post(l, &c->fail_later);
        return c;
    }
    if (ev_io_start(l, &c->io, fd, EV_WRITE) < 0) {
        close(fd);
        c->pending_err = UP_ECONNECT;
        ev_defer_post(l, &c->fail_later);
        return c;
    }
    conn_arm(c);
    return c;
}

void up_cancel(struct up_conn *c)
{
    if (!c || c->state == S_DEAD)
        return;
    c->h = NULL;
    c->ctx = NULL;
    conn_destroy(c);
}

void up_pause(struct up_conn *c, bool paused)
{
    if (c->state == S_DEAD || c->paused == paused)
        return;
    c->paused = paused;
    if (!paused)
        c->t_last_read = loop_now(c->pool->loop);
    conn_update_mask(c);
    if (!paused) {
        conn_arm(c);
        if (c->ssl && SSL_pending(c->ssl) > 0) {
            c->pending_err = UP_OK;
            ev_defer_post(c->pool->loop, &c->fail_later);
        }
    }
}

bool up_reused(const struct up_conn *c) { return c->reused; }
bool up_got_bytes(const struct up_conn *c) { return c->got_bytes; }

/* ---------- request heads ---------- */

void up_head_begin(struct buf *b, const struct backend *be, const char *method, size_t method_len, const char *path,
                   size_t path_len)
{
    const char *base = be->cfg->base_path;
    size_t bl = strlen(base);
    /* base_path "/v1" + "/v1/chat/completions" must not double the /v1 */
    if (bl >= 3 && memcmp(base + bl - 3, "/v1", 3) == 0 && path_len >= 3 && memcmp(path, "/v1", 3) == 0) {
        path += 3;
        path_len -= 3;
    }
    buf_append(b, method, method_len);
    buf_append(b, " ", 1);
    buf_append(b, base, bl);
    buf_append(b, path, path_len);
    buf_append(b, " HTTP/1.1\r\nhost: ", 17);
    buf_append_str(b, be->host_header);
    buf_append(b, "\r\n", 2);
}

void up_head_header(struct buf *b, const char *name, size_t name_len, const char *value, size_t value_len)
{
    buf_append(b, name, name_len);
    buf_append(b, ": ", 2);
    buf_append(b, value, value_len);
    buf_append(b, "\r\n", 2);
}

void up_head_auth(struct buf *b, const struct backend *be)
{
    if (!be->cfg->api_key)
        return;
    buf_append(b, "authorization: Bearer ", 22);
    buf_append_str(b, be->cfg->api_key);
    buf_append(b, "\r\n", 2);
}
