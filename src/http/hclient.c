/* hclient.c — one blocking HTTP/1.1 client for background threads (hclient.h).
 *
 * A non-blocking socket whose every wait is a poll() on it and on the
 * caller's cancel fd, bounded by the call's deadline.  The response head is
 * gathered in a buffer until h1_head_end finds its end, parsed in place by
 * h1_parse_response (interim 1xx heads are dropped and the next one read),
 * then the body goes through h1_body_feed into the response's buffer — the
 * same steps as upstream.c's parse_bytes, without the event loop.
 */
#include "hclient.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "h1.h"

#define HC_MAX_HEAD    65536 /* as upstream.c: a longer head is not a server we want */
#define HC_MAX_HEADERS 64
#define HC_READ_CHUNK  16384

uint64_t hc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *hc_err_str(enum hc_err e)
{
    switch (e) {
    case HC_OK: return "ok";
    case HC_ECONNECT: return "cannot connect";
    case HC_ESEND: return "cannot send the request";
    case HC_ETIMEOUT: return "timed out";
    case HC_ECLOSED: return "connection closed";
    case HC_EPROTO: return "bad HTTP response";
    case HC_ETOOBIG: return "response too large";
    case HC_ENOMEM: return "out of memory";
    case HC_ESTOPPED: return "stopped";
    }
    return "unknown error";
}

int hc_resolve(const char *host, const char *port, struct hc_addrs *out, const char **why)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(host, port, &hints, &ai);
    out->n = 0;
    if (gai != 0) {
        *why = gai_strerror(gai);
        return -1;
    }
    for (struct addrinfo *p = ai; p && out->n < HC_MAX_ADDRS; p = p->ai_next) {
        if (p->ai_addrlen > sizeof out->addr[0])
            continue;
        memcpy(&out->addr[out->n], p->ai_addr, p->ai_addrlen);
        out->len[out->n++] = p->ai_addrlen;
    }
    freeaddrinfo(ai);
    if (out->n == 0) {
        *why = "no usable address";
        return -1;
    }
    return 0;
}

/* 1: fd ready; 0: the deadline passed; -1: cancelled (or poll failed).
 * The cancel fd is looked at before the deadline, so a stopping caller is
 * told it stopped even when its deadline has passed too. */
static int wait_fd(const struct hc_request *rq, int fd, short ev)
{
    for (;;) {
        uint64_t now = hc_now_ms();
        uint64_t left = rq->deadline_ms > now ? rq->deadline_ms - now : 0;
        struct pollfd p[2] = { { fd, ev, 0 }, { rq->cancel_fd, POLLIN, 0 } };
        int rc = poll(p, rq->cancel_fd >= 0 ? 2 : 1, left > INT_MAX ? INT_MAX : (int)left);
        if (rc < 0 && errno != EINTR)
            return -1;
        if (rc > 0 && rq->cancel_fd >= 0 && p[1].revents)
            return -1;
        if (rc > 0 && p[0].revents)
            return 1;
        if (left == 0)
            return 0;
    }
}

/* A connected socket, or -1 with *err set. */
static int connect_any(const struct hc_request *rq, enum hc_err *err)
{
    for (int i = 0; rq->addrs && i < rq->addrs->n; i++) {
        const struct sockaddr *sa = (const struct sockaddr *)&rq->addrs->addr[i];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, sa, rq->addrs->len[i]) == 0)
            return fd;
        int w = errno == EINPROGRESS ? wait_fd(rq, fd, POLLOUT) : 0;
        int so = 0;
        socklen_t sl = sizeof so;
        if (w > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0)
            return fd;
        close(fd);
        if (w < 0) {
            *err = HC_ESTOPPED;
            return -1;
        }
    }
    *err = HC_ECONNECT;
    return -1;
}

static enum hc_err send_all(const struct hc_request *rq, int fd, const char *p, size_t n, int flags)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | flags);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            int rc = wait_fd(rq, fd, POLLOUT);
            if (rc <= 0)
                return rc < 0 ? HC_ESTOPPED : HC_ESEND;
        } else {
            return HC_ESEND;
        }
    }
    return HC_OK;
}

/* ---------- the response ---------- */

struct reader {
    const struct hc_request *rq;
    struct hc_response *rs;
    struct buf head;    /* the head as it arrives */
    size_t head_scan;   /* how far h1_head_end has looked */
    bool in_body;
    struct h1_body bd;
};

/* Body bytes into rs->body: what fits under max_response is kept, then the
 * call fails (413 is only a code between here and feed()). */
static int body_sink(void *arg, const char *data, size_t len, const char **msg)
{
    struct reader *r = arg;
    size_t used = buf_used(&r->rs->body), room = r->rq->max_response - used;
    size_t take = len < room ? len : room;
    if (take && buf_append(&r->rs->body, data, take) < 0) {
        *msg = "out of memory";
        return 507;
    }
    if (take < len) {
        *msg = "too large";
        return 413;
    }
    return 0;
}

/* A complete head of hl bytes: an interim one is dropped, a final one
 * sets the status and the body framing. */
static enum hc_err take_head(struct reader *r, size_t hl)
{
    struct http_hdr hdrs[HC_MAX_HEADERS];
    struct h1_response h;
    const char *msg;
    if (h1_parse_response(buf_data(&r->head), hl, &h, hdrs, HC_MAX_HEADERS, &msg) < 0 || h.status == 101)
        return HC_EPROTO; /* 101: we never ask to upgrade */
    if (h.status < 200)
        return HC_OK;     /* 100 Continue and friends: the real answer follows */
    r->rs->status = h.status;
    if (h.framing == H1_LENGTH && h.content_length > r->rq->max_response)
        return HC_ETOOBIG; /* no point reading what cannot be kept */
    h1_body_init(&r->bd, h.framing, h.content_length);
    r->in_body = true;
    return HC_OK;
}

/* Parse n bytes.  *done once the response is complete (bytes after it are
 * ignored: the connection is closed anyway). */
static enum hc_err feed(struct reader *r, const char *p, size_t n, bool *done)
{
    while (n && !r->in_body) {
        size_t used;
        long hl = h1_head_gather(&r->head, &r->head_scan, HC_MAX_HEAD, p, n, &used);
        if (hl <= 0)
            return hl == 0 ? HC_OK : hl == -2 ? HC_ENOMEM : HC_EPROTO;
        p += used;
        n -= used;
        enum hc_err e = take_head(r, (size_t)hl);
        buf_reset(&r->head);
        r->head_scan = 0;
        if (e != HC_OK)
            return e;
    }
    if (r->in_body && !r->bd.done) {
        int st = 0;
        const char *msg;
        if (h1_body_feed(&r->bd, p, n, body_sink, r, &st, &msg) < 0)
            return st == 413 ? HC_ETOOBIG : st == 507 ? HC_ENOMEM : HC_EPROTO;
    }
    *done = r->in_body && r->bd.done;
    return HC_OK;
}

static enum hc_err read_response(const struct hc_request *rq, int fd, struct reader *r)
{
    char chunk[HC_READ_CHUNK];
    for (;;) {
        ssize_t k = recv(fd, chunk, sizeof chunk, 0);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            int w = wait_fd(rq, fd, POLLIN);
            if (w <= 0)
                return w < 0 ? HC_ESTOPPED : HC_ETIMEOUT;
            continue;
        }
        if (k == 0 && r->in_body && r->bd.framing == H1_UNTIL_CLOSE)
            return HC_OK; /* the close ends this body */
        if (k <= 0)
            return HC_ECLOSED; /* cut short (EOF or reset) */
        bool done = false;
        enum hc_err e = feed(r, chunk, (size_t)k, &done);
        if (e != HC_OK || done)
            return e;
        /* a peer that never lets recv wait still meets the deadline */
        if (hc_now_ms() >= rq->deadline_ms)
            return HC_ETIMEOUT;
    }
}

enum hc_err hc_call(const struct hc_request *rq, struct hc_response *rs)
{
    rs->status = 0;
    enum hc_err e = HC_OK;
    int fd = connect_any(rq, &e);
    if (fd < 0)
        return e;
    struct buf head = { 0 };
    if (buf_printf(&head, "%s %s HTTP/1.1\r\nHost: %s\r\n", rq->method, rq->path, rq->authority) < 0 ||
        (rq->content_type && buf_printf(&head, "Content-Type: %s\r\n", rq->content_type) < 0) ||
        buf_printf(&head, "Content-Length: %zu\r\nConnection: close\r\n%s\r\n", rq->body_len,
                   rq->headers ? rq->headers : "") < 0)
        e = HC_ENOMEM;
    if (e == HC_OK)
        e = send_all(rq, fd, buf_data(&head), buf_used(&head), rq->body_len ? MSG_MORE : 0);
    buf_free(&head);
    if (e == HC_OK && rq->body_len)
        e = send_all(rq, fd, rq->body, rq->body_len, 0);
    if (e == HC_OK) {
        struct reader r = { .rq = rq, .rs = rs };
        e = read_response(rq, fd, &r);
        buf_free(&r.head);
    }
    close(fd);
    return e;
}

int hc_url_parse(const char *url, struct hc_url *u, const char **why)
{
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, "https://", 8) == 0) {
        *why = "https is not supported (no TLS here); send to a local collector or relay over http://";
        return -1;
    }
    if (strncasecmp(url, "http://", 7) != 0) {
        *why = "expected http://host:port/path";
        return -1;
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            *why = "spaces or control characters";
            return -1;
        }
    const char *a = url + 7, *ae = a + strcspn(a, "/?#");
    const char *h = a, *he, *colon;
    if (*h == '[') {
        he = memchr(h, ']', (size_t)(ae - h));
        colon = he && he + 1 < ae ? he + 1 : NULL;
        h++;
        if (!he || (colon && *colon != ':'))
            he = h = NULL;
    } else {
        colon = memchr(h, ':', (size_t)(ae - h));
        he = colon ? colon : ae;
    }
    long pn = 80;
    if (colon) {
        char *end = NULL;
        pn = colon + 1 < ae && colon[1] >= '0' && colon[1] <= '9' ? strtol(colon + 1, &end, 10) : 0;
        if (pn <= 0 || pn > 65535 || end != ae)
            pn = 0;
    }
    if (!h || he == h || (size_t)(he - h) >= sizeof u->host || memchr(a, '@', (size_t)(ae - a)) || pn == 0) {
        *why = "expected http://host:port/path (no user, a port 1-65535)";
        return -1;
    }
    memcpy(u->host, h, (size_t)(he - h));
    u->host[he - h] = '\0';
    snprintf(u->port, sizeof u->port, "%ld", pn);
    size_t pl = strcspn(ae, "#");
    u->authority = strndup(a, (size_t)(ae - a));
    u->path = malloc(pl + 2);
    if (u->path)
        snprintf(u->path, pl + 2, "%s%.*s", *ae == '/' ? "" : "/", (int)pl, ae);
    if (!u->authority || !u->path) {
        hc_url_free(u);
        *why = "out of memory";
        return -1;
    }
    return 0;
}

void hc_url_free(struct hc_url *u)
{
    free(u->authority);
    free(u->path);
    u->authority = u->path = NULL;
}
