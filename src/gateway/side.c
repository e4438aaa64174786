/* side.c — side calls (see side.h for the contract).
 *
 * Extracted from the shadow legs: what any exchange with no client behind
 * it needs — a backend from the balancer with its in-flight reservation, the
 * request head from the one head builder (upstream.h), a tap that reads SSE
 * events or keeps a bounded body, a deadline of its own, and the backend's
 * health and latency reported as for an attempt of the proxy — and the one
 * place where it ends.  What the answer means is the caller's.
 */
#include "side.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>

#include "sse.h"

struct side_call {
    struct worker *w;
    const struct side_ops *ops;
    void *arg;
    size_t capture_max;
    struct pick_hint hint;
    struct backend *be;
    bool reserved;               /* the balancer's in-flight slot is ours */
    struct up_conn *up;
    ev_timer deadline;
    uint64_t t_start;
    int status;
    bool is_sse;
    struct sse_reader sse;
    bool sse_init;
    size_t sse_event_max;
    struct buf capture;          /* a non-streamed 2xx answer, up to capture_max */
    bool capture_over;           /* it was larger: capture dropped, nothing more kept */
    uint64_t body_bytes;
    struct side_call *next, *prev; /* the worker's live calls */
};

/* The one way out: give back what was taken, tell the caller, free. */
static void side_end(struct side_call *c, enum side_end how, enum up_err err)
{
    struct worker *w = c->w;
    ev_timer_stop(w->loop, &c->deadline);
    if (c->up) {
        up_cancel(c->up);
        c->up = NULL;
    }
    if (c->reserved) {
        balance_release(c->be, &c->hint);
        c->reserved = false;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->side_calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->side_ncalls--;
    struct side_result r = {
        .end = how,
        .err = err,
        .status = c->status,
        .be = c->be,
        .t_start_ns = c->t_start,
        .t_end_ns = mono_ns(),
        .sse = c->is_sse,
        .sse_skipped = c->sse_init ? c->sse.skipped : 0,
        .body = buf_data(&c->capture),
        .body_len = buf_used(&c->capture),
        .too_large = c->capture_over,
        .body_bytes = c->body_bytes,
    };
    c->ops->on_end(c->arg, &r);
    if (c->sse_init)
        sse_reader_free(&c->sse);
    buf_free(&c->capture);
    free(c);
}

static void on_sse(void *arg, const char *data, size_t len)
{
    struct side_call *c = arg;
    if (c->ops->on_event)
        c->ops->on_event(c->arg, data, len, c->sse.skipped != 0);
}

static void on_head(void *ctx, int status, const struct http_hdr *hdrs, size_t n, int64_t cl)
{
    struct side_call *c = ctx;
    (void)cl;
    c->status = status;
    for (size_t i = 0; i < n; i++)
        if (http_hdr_is(&hdrs[i], "content-type"))
            c->is_sse = hdrs[i].value_len >= 17 && strncasecmp(hdrs[i].value, "text/event-stream", 17) == 0;
    if (c->is_sse && status >= 200 && status < 300) {
        sse_reader_init(&c->sse, on_sse, c, c->sse_event_max);
        c->sse_init = true;
    } else {
        c->is_sse = false;
    }
    balance_observe(c->be, (mono_ns() - c->t_start) / 1000u, loop_now(c->w->loop));
    if (c->ops->on_head)
        c->ops->on_head(c->arg, status, hdrs, n);
}

static void on_body(void *ctx, const char *data, size_t len)
{
    struct side_call *c = ctx;
    c->body_bytes += len;
    if (c->sse_init) {
        sse_reader_feed(&c->sse, data, len);
    } else if (!c->capture_over && c->status >= 200 && c->status < 300) {
        /* A cut JSON document cannot be parsed, and skipping a piece that
         * does not fit while keeping later ones would splice non-adjacent
         * bytes: over the bound the capture is dropped.  The rest is still
         * read (and discarded) so the latency is the answer's and the
         * connection can be reused. */
        if (buf_used(&c->capture) + len <= c->capture_max) {
            buf_append(&c->capture, data, len);
        } else {
            c->capture_over = true;
            buf_free(&c->capture);
        }
    }
}

static void on_done(void *ctx, enum up_err err)
{
    struct side_call *c = ctx;
    uint64_t now = loop_now(c->w->loop);
    c->up = NULL;
    if (err == UP_OK) {
        backend_report(c->be, c->status == 429 ? BE_429 : c->status >= 500 ? BE_5XX : BE_OK, now);
        side_end(c, SIDE_DONE, UP_OK);
        return;
    }
    bool connect = err == UP_ECONNECT || err == UP_ECONNECT_TIMEOUT || err == UP_ETLS;
    backend_report(c->be, connect ? BE_CONNECT_FAIL : up_err_is_timeout(err) ? BE_TIMEOUT : BE_5XX, now);
    met_add(&c->w->met->up_errors[c->be->id][err], 1);
    side_end(c, SIDE_FAILED, err);
}

static const struct up_handlers side_cbs = { on_head, on_body, on_done };

static void on_deadline(loop_t *l, ev_timer *t)
{
    struct side_call *c = t->data;
    /* a backend that holds calls to their deadline is timing out: passive
     * health and outlier ejection take it out, so later calls end at once
     * (no backend) instead of each holding a connection to it */
    if (c->be)
        backend_report(c->be, BE_TIMEOUT, loop_now(l));
    side_end(c, SIDE_DEADLINE, UP_OK);
}

/* The head: the request line and host, content-type and -length, the
 * backend's key, then the caller's headers. */
static int build_head(struct buf *head, const struct backend *be, const struct side_request *rq, size_t body_len)
{
    const char *method = rq->method ? rq->method : "POST";
    const char *ct = rq->content_type ? rq->content_type : "application/json";
    up_head_begin(head, be, method, strlen(method), rq->path, strlen(rq->path));
    up_head_header(head, "content-type", 12, ct, strlen(ct));
    buf_append(head, "content-length: ", 16);
    buf_append_uint(head, body_len);
    buf_append(head, "\r\n", 2);
    up_head_auth(head, be);
    for (size_t i = 0; i < rq->nhdrs; i++)
        up_head_header(head, rq->hdrs[i].name, rq->hdrs[i].name_len, rq->hdrs[i].value, rq->hdrs[i].value_len);
    buf_append(head, "\r\n", 2);
    return buf_data(head) ? 0 : -1;
}

struct side_call *side_start(struct worker *w, const struct model_rt *m, const struct side_request *rq,
                             const struct side_ops *ops, void *arg)
{
    struct side_call *c = calloc(1, sizeof *c);
    if (!c) {
        struct side_result r = { .end = SIDE_NOMEM, .t_start_ns = mono_ns() };
        r.t_end_ns = r.t_start_ns;
        ops->on_end(arg, &r);
        return NULL;
    }
    c->w = w;
    c->ops = ops;
    c->arg = arg;
    c->capture_max = rq->capture_max;
    c->sse_event_max = rq->sse_event_max ? rq->sse_event_max : 1u << 20;
    c->hint = rq->hint;
    c->t_start = mono_ns();
    ev_timer_init(&c->deadline, on_deadline, c);
    c->next = w->side_calls;
    if (w->side_calls)
        w->side_calls->prev = c;
    w->side_calls = c;
    w->side_ncalls++;

    int idx = balance_pick(w, m, 0, loop_now(w->loop), &c->hint);
    if (idx < 0) {
        side_end(c, SIDE_NO_BACKEND, UP_OK);
        return NULL;
    }
    c->be = m->backends[idx];
    c->reserved = true;
    struct buf built = { 0 }, head = { 0 };
    const char *body = rq->body;
    size_t body_len = rq->body_len;
    int rc = 0;
    if (ops->on_pick) {
        rc = ops->on_pick(arg, c->be, &built);
        body = buf_data(&built) ? buf_data(&built) : "";
        body_len = buf_used(&built);
    }
    if (rc == 0)
        rc = build_head(&head, c->be, rq, body_len);
    if (rc == 0) {
        struct iovec iov[2] = { { buf_data(&head), buf_used(&head) }, { (void *)body, body_len } };
        c->up = up_start(w->pools[c->be->id], iov, body_len ? 2 : 1, &side_cbs, c);
    }
    if (head.p)
        explicit_bzero(head.p, head.cap); /* may hold the backend's key */
    buf_free(&head);
    buf_free(&built);
    if (!c->up) {
        side_end(c, SIDE_NOMEM, UP_OK);
        return NULL;
    }
    if (rq->deadline_ms)
        ev_timer_start(w->loop, &c->deadline, rq->deadline_ms);
    return c;
}

void side_cancel(struct side_call *c) { side_end(c, SIDE_CANCELLED, UP_OK); }

void side_cancel_all(struct worker *w)
{
    while (w->side_calls)
        side_end(w->side_calls, SIDE_SHUTDOWN, UP_OK);
}

size_t side_count(const struct worker *w) { return w->side_ncalls; }
