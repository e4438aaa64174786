/* h1_driver.h — drive h1.c the way httpd.c does (skip empty lines, find the
 * head, parse it, decode the body, next pipelined request), over input fed
 * in arbitrary pieces, and log what was framed.  Shared by test_h1.c and
 * fuzz/fuzz_h1.c: whatever the pieces, the log must be the same. */
#ifndef SHADE_H1_DRIVER_H
#define SHADE_H1_DRIVER_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1.h"

#define DRV_MAX_HEAD  8192
#define DRV_MAX_HDRS  64
#define DRV_MAX_BODY  (64u * 1024u)

struct drv {
    char *in; size_t in_len, in_cap;      /* unparsed input */
    int state;                            /* 0 idle, 1 head, 2 body, 3 failed */
    size_t scan;
    struct h1_request rq;
    struct http_hdr hdrs[DRV_MAX_HDRS];
    char head[DRV_MAX_HEAD];
    struct h1_body bd;
    size_t body_len;
    char *log; size_t log_len, log_cap;
};

static void drv_log(struct drv *d, const char *p, size_t n)
{
    if (d->log_len + n + 1 > d->log_cap) {
        size_t cap = d->log_cap ? d->log_cap * 2 : 1024;
        while (cap < d->log_len + n + 1)
            cap *= 2;
        char *nl = realloc(d->log, cap);
        if (!nl)
            abort();
        d->log = nl;
        d->log_cap = cap;
    }
    memcpy(d->log + d->log_len, p, n);
    d->log_len += n;
    d->log[d->log_len] = '\0';
}

static void drv_logf(struct drv *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void drv_logf(struct drv *d, const char *fmt, ...)
{
    char b[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    drv_log(d, b, n < 0 ? 0 : (size_t)n >= sizeof b ? sizeof b - 1 : (size_t)n);
}

static int drv_sink(void *arg, const char *p, size_t n, const char **msg)
{
    struct drv *d = arg;
    if (d->body_len + n > DRV_MAX_BODY) {
        *msg = "too large";
        return 413;
    }
    d->body_len += n;
    drv_log(d, p, n);
    return 0;
}

static void drv_consume(struct drv *d, size_t n)
{
    memmove(d->in, d->in + n, d->in_len - n);
    d->in_len -= n;
}

static void drv_fail(struct drv *d, int status)
{
    drv_logf(d, "ERR %d\n", status);
    d->state = 3;
}

/* Parse as much of the buffered input as possible. */
static void drv_run(struct drv *d)
{
    for (;;) {
        if (d->state == 3)
            return;
        if (d->state == 0) {
            drv_consume(d, h1_skip_empty_lines(d->in, d->in_len));
            if (d->in_len == 0 || (d->in_len == 1 && d->in[0] == '\r'))
                return;
            d->state = 1;
            d->scan = 0;
        }
        if (d->state == 1) {
            size_t hl = h1_head_end(d->in, d->in_len, &d->scan);
            if (hl == 0) {
                if (d->in_len >= DRV_MAX_HEAD)
                    drv_fail(d, 431);
                return;
            }
            if (hl > DRV_MAX_HEAD) {
                drv_fail(d, 431);
                return;
            }
            memcpy(d->head, d->in, hl);
            drv_consume(d, hl);
            const char *msg = NULL;
            int st = h1_parse_request(d->head, hl, &d->rq, d->hdrs, DRV_MAX_HDRS, &msg);
            if (st) {
                drv_fail(d, st);
                return;
            }
            drv_logf(d, "REQ %.*s %.*s 1.%d ka=%d fr=%d cl=%llu\n", (int)d->rq.method_len, d->rq.method,
                     (int)d->rq.target_len, d->rq.target, d->rq.minor, d->rq.keep_alive, (int)d->rq.framing,
                     (unsigned long long)d->rq.content_length);
            for (size_t i = 0; i < d->rq.nhdrs; i++) {
                drv_log(d, " H[", 3);
                drv_log(d, d->hdrs[i].name, d->hdrs[i].name_len);
                drv_log(d, "]=[", 3);
                drv_log(d, d->hdrs[i].value, d->hdrs[i].value_len);
                drv_log(d, "]\n", 2);
            }
            if (d->rq.framing == H1_LENGTH && d->rq.content_length > DRV_MAX_BODY) {
                drv_fail(d, 413);
                return;
            }
            h1_body_init(&d->bd, d->rq.framing, d->rq.content_length);
            d->body_len = 0;
            drv_log(d, " B[", 3);
            d->state = 2;
        }
        if (d->state == 2) {
            int st = 0;
            const char *msg = NULL;
            long used = h1_body_feed(&d->bd, d->in, d->in_len, drv_sink, d, &st, &msg);
            if (used < 0) {
                drv_log(d, "]\n", 2);
                drv_fail(d, st);
                return;
            }
            if ((size_t)used > d->in_len)
                abort(); /* consumed more than it was given */
            drv_consume(d, (size_t)used);
            if (!d->bd.done)
                return;
            drv_log(d, "]\n", 2);
            d->state = 0;
        }
    }
}

static void drv_feed(struct drv *d, const char *p, size_t n)
{
    if (d->in_len + n > d->in_cap) {
        size_t cap = d->in_cap ? d->in_cap : 256;
        while (cap < d->in_len + n)
            cap *= 2;
        char *ni = realloc(d->in, cap);
        if (!ni)
            abort();
        d->in = ni;
        d->in_cap = cap;
    }
    memcpy(d->in + d->in_len, p, n);
    d->in_len += n;
    drv_run(d);
}

/* The log for input fed in pieces whose sizes come from cuts[] (cycled;
 * NULL: all at once); the caller frees it. */
static char *drv_frame(const char *p, size_t n, const size_t *cuts, size_t ncuts)
{
    struct drv *d = calloc(1, sizeof *d);
    if (!d)
        abort();
    size_t off = 0, k = 0;
    while (off < n) {
        size_t step = cuts && ncuts ? cuts[k++ % ncuts] : n;
        if (step == 0)
            step = 1;
        if (step > n - off)
            step = n - off;
        drv_feed(d, p + off, step);
        off += step;
    }
    if (d->state == 1 || d->state == 2)
        drv_logf(d, "INCOMPLETE %d\n", d->state);
    drv_log(d, "", 0);
    char *log = d->log ? d->log : strdup("");
    free(d->in);
    free(d);
    return log;
}

#endif
