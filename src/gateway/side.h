/* side.h — side calls: an upstream exchange with no client behind it.
 *
 * A side call picks a backend of a model through the balancer (reserving
 * it in flight), sends one request with the worker's upstream pools, taps
 * the answer (SSE events, or a bounded JSON body), reports the backend's
 * health and latency like any attempt, and ends exactly once: done, failed,
 * deadline, cancelled or shutdown.  The shadow legs are side calls; judges,
 * embeddings and classifiers that run on a worker loop are meant to be.
 *
 * Everything runs on the worker's loop; nothing here is thread-safe.
 *
 * Ownership.  The worker owns a side call from side_start until its on_end
 * returns; the call is freed right after on_end, so the pointer side_start
 * returned must not be used once on_end has run.  The caller owns arg
 * (never touched here beyond handing it to the callbacks).  The request's
 * path, headers and body are only read during side_start (the upstream
 * connection keeps its own copy).
 *
 * on_end runs exactly once for every side_start that was called:
 *  - inside side_start, when the call cannot begin (no backend up, out of
 *    memory); side_start then returns NULL;
 *  - otherwise later, from the loop: the answer is complete (SIDE_DONE, any
 *    status), the exchange failed (SIDE_FAILED), the deadline fired
 *    (SIDE_DEADLINE);
 *  - or inside side_cancel (SIDE_CANCELLED) / side_cancel_all (SIDE_SHUTDOWN).
 * No other callback runs after on_end, nor during it.  on_end may start new
 * side calls; it must not cancel the one that is ending.
 */
#ifndef SHADE_SIDE_H
#define SHADE_SIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "balance.h"
#include "buf.h"
#include "gateway.h"
#include "upstream.h"

struct side_call;

enum side_end {
    SIDE_DONE = 0,    /* the whole answer was read (any status: look at status) */
    SIDE_FAILED,      /* the exchange broke: result.err says how */
    SIDE_DEADLINE,    /* the deadline fired first */
    SIDE_NO_BACKEND,  /* no backend of the model was up */
    SIDE_NOMEM,       /* could not be built or sent: out of memory */
    SIDE_CANCELLED,   /* side_cancel */
    SIDE_SHUTDOWN,    /* side_cancel_all: the worker is going away */
};

struct side_result {
    enum side_end end;
    enum up_err err;            /* SIDE_FAILED: the transport's reason; else UP_OK */
    int status;                 /* the answer's status, 0 before its head */
    struct backend *be;         /* the backend picked, NULL when none was */
    uint64_t t_start_ns;        /* mono_ns() at side_start */
    uint64_t t_end_ns;          /* mono_ns() as it ended */
    bool sse;                   /* a 2xx text/event-stream: events went to on_event */
    uint64_t sse_skipped;       /* events lost for their size (or memory) */
    /* not SSE, 2xx: the body as read, up to side_request.capture_max (NULL
     * when empty); over it, nothing is kept and too_large is set (a cut JSON
     * document cannot be parsed) */
    const char *body;
    size_t body_len;
    bool too_large;
    uint64_t body_bytes;        /* of the answer, read so far (any status) */
};

struct side_ops {
    /* The backend is picked: write the request body for it into body (the
     * upstream model name may be the backend's own).  Return -1 to give up
     * (the call ends SIDE_NOMEM).  NULL: the request's body is sent as is. */
    int (*on_pick)(void *arg, const struct backend *be, struct buf *body);
    /* optional: the response head */
    void (*on_head)(void *arg, int status, const struct http_hdr *h, size_t n);
    /* optional: one SSE event's data (2xx text/event-stream only); gap: an
     * earlier event was lost (too large), so this one does not follow on */
    void (*on_event)(void *arg, const char *data, size_t len, bool gap);
    /* exactly once, see above; r is valid only during the call */
    void (*on_end)(void *arg, const struct side_result *r);
};

struct side_request {
    const char *method;             /* NULL: "POST" */
    const char *path;               /* e.g. "/v1/chat/completions" (joined to base_path) */
    const struct http_hdr *hdrs;    /* extra headers (x-request-id, traceparent, ...) */
    size_t nhdrs;
    const char *content_type;       /* NULL: "application/json" */
    const char *body;               /* sent when ops->on_pick is NULL */
    size_t body_len;
    struct pick_hint hint;          /* for the balancer (affinity, token estimate) */
    uint32_t deadline_ms;           /* the whole exchange; 0: none (the upstream's timeouts) */
    size_t capture_max;             /* bound on a non-SSE answer kept for on_end */
    size_t sse_event_max;           /* bound on one SSE event; 0: 1 MiB */
};

/* Start a side call on model m.  Returns the call, or NULL when it has
 * already ended (on_end ran inside). */
struct side_call *side_start(struct worker *w, const struct model_rt *m, const struct side_request *rq,
                             const struct side_ops *ops, void *arg);
/* Abandon a call that has not ended: on_end runs at once with SIDE_CANCELLED. */
void side_cancel(struct side_call *c);
/* At shutdown: every call of the worker ends with SIDE_SHUTDOWN. */
void side_cancel_all(struct worker *w);
/* Calls running on the worker (a draining worker waits for them). */
size_t side_count(const struct worker *w);

#endif
