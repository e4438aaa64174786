/* module.h — what a feature module is, and the engine that runs a request
 * through the table of modules (pipeline.c; the table is in modules.c).
 *
 * A module is a descriptor with optional hooks: a NULL hook costs nothing
 * (the engine keeps, per hook, the list of modules that have it).  The
 * request path calls the engine at fixed points, and the engine calls the
 * modules in the order of the table:
 *
 *   on_arrival, before decoding: the request's head only (no model, no
 *     validated body yet) — a key is checked before the body says anything
 *     back; PL_NEXT, PL_DONE or PL_ERROR (no waiting)
 *   decode (proxy.c: the body validated once, model found)
 *     └─ phases, in enum pl_phase order; within a phase, table order
 *        on_request → PL_NEXT      next module
 *                     PL_DONE      the module answered the client itself
 *                     PL_WAIT      it waits for I/O; it calls pl_resume()
 *                     PL_ERROR     it set q->error; the core answers it
 *   admission, balancing, upstream attempts (proxy.c)
 *     ├─ on_sent     once, when the first attempt is on the wire
 *     ├─ on_head     the response head the client gets (not for a retried
 *                    answer, nor behind keep-alive comments already sent):
 *                    a module may add headers
 *     ├─ on_event    each SSE event, or the JSON body, parsed once
 *     ├─ rewrite     then, only for a request a module opted into with
 *                    pl_transform: each SSE event's data / the whole JSON
 *                    body, in table order, before it goes to the client
 *   finish (proxy.c computes one struct pl_outcome)
 *     └─ on_finish   exactly once per request, on every path: answered,
 *                    failed, shed, or the client gone (also while a phase
 *                    waits: outcome->aborted, and the waiting module must
 *                    cancel its I/O and never call pl_resume afterwards)
 *
 * Per-request state: a module declares ctx_size; the engine lays all of
 * them out after the core's own request struct, so a request is ONE
 * allocation (pl_req_alloc), zeroed, and pl_ctx() finds a module's part.
 *
 * Config: a module may bring a top-level config section (config, a table
 * of config_schema.h); each loaded config holds one parsed blob per module
 * (a reload is a new config, so new blobs), read with pl_config().
 * Per-worker state: worker_init fills the module's slot in the worker,
 * worker_free empties it; pl_slot() finds it.
 */
#ifndef SHADE_MODULE_H
#define SHADE_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "httpd.h"
#include "json.h"
#include "metrics.h"
#include "trace.h"

struct worker;
struct route;
struct config_override;
struct gateway;
struct buf;
struct model_rt;
struct backend;
struct pl_head;
struct config;
struct section;
struct key_rec;

/* Request phases after decoding.  The order of this enum, then the order of
 * the table in modules.c, is the policy: a key is known before its limits
 * are checked, limits are charged before a cache may answer. */
enum pl_phase { PH_AUTH, PH_LIMIT, PH_GUARD, PH_CACHE, PH_ROUTE, PH__COUNT, PH_NONE = PH__COUNT };

enum pl_rc { PL_NEXT, PL_DONE, PL_WAIT, PL_ERROR };

/* The request as modules see it.  The core (proxy.c) embeds it as the first
 * member of its own per-request struct and keeps it current. */
struct pl_req {
    const struct pl_engine *eng;
    struct worker *w;
    http_req *http;
    enum met_endpoint ep;
    const struct model_rt *m0;         /* the model the client asked for */
    const struct model_rt *m;          /* the model serving it (a fallback after m0) */
    /* the current body: the client's, until a phase replaces it
     * (pl_set_body); everything below is derived from it, and the upstream,
     * the shadow legs and the access log all read these bytes */
    const char *body;
    size_t body_len;
    struct json_span root;             /* the validated body */
    bool stream;
    size_t prompt_bytes;
    int64_t est_tokens;                /* prompt + requested output, estimated */
    struct trace_ctx tc;               /* the request's trace context */
    uint8_t parent_span[8];            /* the client's traceparent, when has_parent */
    bool has_parent;
    uint64_t start_unix_ns;            /* first byte of the request, wall clock */
    int mirrored;                      /* pairs this request is the primary of (shadow) */
    bool renamed;                      /* a route module chose m0 (a rollout's candidate): upstream it is
                                          named as m0, not as the client named it */
    /* the arm a route module put the request on, for the span: a rollout's
     * or an experiment's name and the arm (baseline | canary, or the
     * experiment arm's name); NULL when none */
    const char *rollout, *experiment, *variant;
    bool key_auth;                     /* shade checked the client's key: it is not sent upstream
                                          (unless the backend sets pass_client_key) */
    const char *key_name;              /* the key's name (logs), NULL when none */
    const struct key_rec *key;         /* the client's key (keys.h), held (key_hold) by the module that set it;
                                          the engine releases it after the last on_finish */
    int64_t max_tokens;                /* the request's max_tokens (or max_completion_tokens), -1 = none */
    /* gateway overhead: time in shade's code, in segments; a wait ends one */
    uint64_t ovh_ns, seg_start;
    /* a phase's error, answered by the core (PL_ERROR) */
    struct { int status; const char *type, *code, *param; char message[256]; } error;
    /* engine state */
    uint8_t phase, next;               /* where the phases are; next module index in it */
    bool waiting, finished, sent;
    uint32_t xform;                    /* modules that transform this response (pl_transform), by index */
    char *owned_body;                  /* a body a phase set, freed with the request */
};

/* One SSE event, or the whole JSON body of a non-streamed answer. */
struct pl_event {
    const struct json_span *root;
    int status;                        /* the upstream's */
    bool is_body;                      /* the JSON body (else an SSE event) */
    bool gap;                          /* an earlier event was too large to read: lost */
};

/* What a transform (rewrite hook) is given: one SSE event's data (its
 * data: lines joined by '\n', without the framing), or the whole JSON body
 * of a non-streamed 2xx answer. */
struct pl_payload {
    const char *data;
    size_t len;
    const struct json_span *root;      /* data parsed, when it is a JSON object; else NULL ([DONE]) */
    int status;                        /* the upstream's */
    bool is_body;                      /* the JSON body (else an SSE event) */
};

/* What happened to the request, computed once at finish. */
struct pl_outcome {
    int status;                        /* sent to the client (499: it left first) */
    const char *err_kind;              /* store.h error kind, NULL = by status */
    bool aborted;                      /* the client left before the end */
    const struct backend *be;          /* last backend, NULL if none was picked */
    int attempts;
    bool is_sse;
    uint64_t t_first_token;            /* mono ns, 0 = none */
    uint64_t t_last_token;
    int64_t chunks_out;                /* SSE events that carried output */
    int64_t tokens_in, tokens_out;     /* -1 = not settled (failures) */
    bool tokens_estimated;
    double cost_usd;                   /* -1 = not settled */
    bool answer_gap;                   /* the last SSE event was too large to read */
    bool body_too_large;               /* a 2xx JSON body over the capture bound */
    uint64_t body_bytes;               /* its size, for estimates */
};

struct pl_module {
    const char *name;
    enum pl_phase phase;               /* PH_NONE: no on_request */
    size_t ctx_size;                   /* per-request state, zeroed */
    enum pl_rc (*on_request)(struct pl_req *q, void *ctx);
    void (*on_sent)(struct pl_req *q, void *ctx);
    /* Before decoding (see above): headers only; no PL_WAIT. */
    enum pl_rc (*on_arrival)(struct pl_req *q, void *ctx);
    void (*on_event)(struct pl_req *q, void *ctx, const struct pl_event *ev);
    void (*on_finish)(struct pl_req *q, void *ctx, const struct pl_outcome *o);
    /* A response transform, called only for requests the module opted into
     * (pl_transform).  Return false to pass the payload on unchanged, or
     * true with the replacement written into out (empty: drop the event). */
    bool (*rewrite)(struct pl_req *q, void *ctx, const struct pl_payload *in, struct buf *out);
    /* The response head about to go to the client: add headers with
     * pl_head_add (names and values must live until the hook returns). */
    void (*on_head)(struct pl_req *q, void *ctx, const struct pl_head *h);
    /* What a module brings besides hooks: endpoints (rows the router checks
     * after its own, in table order) and /metrics families (rendered after
     * the core's, in table order). */
    const struct route *routes;
    size_t nroutes;
    void (*metrics_render)(const struct gateway *gw, struct buf *out);
    /* Its own top-level config section (config_schema.h): section->name is
     * the key, section->size the blob's size, the fields' defaults and the
     * section's finish hook its defaults and checks.  Read: pl_config(). */
    const struct section *config;
    /* Per-worker state, when the worker is set up: put it in *slot (or
     * leave it NULL) and return 0, or -1 to fail the worker's start.
     * worker_free gets the slot back once, when the worker goes (only after
     * a worker_init that returned 0), before the worker's loop is freed. */
    int (*worker_init)(struct worker *w, void **slot);
    void (*worker_free)(struct worker *w, void *slot);
};

/* A response head being built (on_head). */
struct pl_head {
    int status;                        /* the upstream's, forwarded */
    const struct backend *be;          /* who answered */
    struct http_hdr *hdrs;             /* what goes to the client so far */
    size_t *n, cap;
};

/* Add a header to the head; false when there is no room (it is dropped). */
static inline bool pl_head_add(const struct pl_head *h, const char *name, const char *value, size_t value_len)
{
    if (*h->n >= h->cap)
        return false;
    size_t nl = 0;
    while (name[nl])
        nl++;
    h->hdrs[(*h->n)++] = (struct http_hdr){ name, nl, value, value_len };
    return true;
}

/* What the engine asks of the core that embeds it. */
struct pl_core {
    void (*proceed)(struct pl_req *q);              /* every phase passed */
    void (*answered)(struct pl_req *q);             /* a module answered (PL_DONE) */
    void (*failed)(struct pl_req *q);               /* PL_ERROR: answer q->error */
    /* q->body was replaced: validate it and derive everything again (model,
     * prompt, stream, estimates); 0, or an error status with q->error set */
    int (*rebody)(struct pl_req *q);
};

#define PL_MAX_MODULES 32

/* A module's parsed config section in cfg (pl_module.config), or NULL when
 * the module brings none or cfg was loaded without it. */
const void *pl_config(const struct config *cfg, const struct pl_module *m);

/* Each module's per-worker state, by table index (struct worker.mods). */
struct pl_slots {
    const struct pl_module *const *mods;
    size_t n;
    void *slot[PL_MAX_MODULES];
    uint32_t live;                     /* worker_init returned 0: worker_free is owed */
};
/* Run each module's worker_init, in table order.  0, or -1 when one failed
 * (pl_worker_free then frees those that succeeded). */
int pl_worker_init(struct pl_slots *s, const struct pl_module *const *mods, size_t n, struct worker *w);
/* Each live module's worker_free, in reverse table order; again: nothing. */
void pl_worker_free(struct pl_slots *s, struct worker *w);
/* Module m's per-worker state, or NULL. */
void *pl_slot(const struct pl_slots *s, const struct pl_module *m);

struct pl_engine {
    const struct pl_module *const *mods;
    size_t n;
    const struct pl_core *core;
    size_t core_size;                  /* the core's struct, rounded up */
    size_t ctx_off[PL_MAX_MODULES];    /* from the start of the allocation */
    size_t total;                      /* bytes per request */
    /* per phase and per hook: the modules that have it, in table order */
    uint8_t phase_mods[PH__COUNT][PL_MAX_MODULES];
    uint8_t nphase[PH__COUNT];
    uint8_t sent_mods[PL_MAX_MODULES], nsent;
    uint8_t event_mods[PL_MAX_MODULES], nevent;
    uint8_t xform_mods[PL_MAX_MODULES], nxform;
    uint8_t finish_mods[PL_MAX_MODULES], nfinish;
    uint8_t head_mods[PL_MAX_MODULES], nhead;
    uint8_t arrival_mods[PL_MAX_MODULES], narrival;
};

/* Build an engine over a table (done once per gateway).  core_size is the
 * size of the core's request struct, which starts with a struct pl_req.
 * Returns 0, or -1 when the table has more than PL_MAX_MODULES rows. */
int pl_engine_init(struct pl_engine *e, const struct pl_module *const *mods, size_t n, const struct pl_core *core,
                   size_t core_size);
/* One zeroed allocation: the core's struct and every module's ctx. */
struct pl_req *pl_req_alloc(const struct pl_engine *e);
void *pl_ctx(struct pl_req *q, size_t module_index);
/* Does the engine have a module with this hook (so the core can skip work
 * that only feeds it)? */
static inline bool pl_wants_events(const struct pl_engine *e) { return e->nevent > 0; }

/* Run the phases from the first; ends in core->proceed, ->answered or
 * ->failed, now or after waits. */
void pl_run(struct pl_req *q);
/* The on_arrival hooks, before decoding: true to go on; false when a
 * module answered or refused the request (the core has been told). */
bool pl_arrival(struct pl_req *q);
/* A waiting module is ready: rc as on_request would have returned it. */
void pl_resume(struct pl_req *q, enum pl_rc rc);
/* Set q->error for PL_ERROR (an OpenAI error object: type, code, param). */
void pl_set_error(struct pl_req *q, int status, const char *type, const char *code, const char *param,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* A phase replaces the request's body (body: malloc'd, the request owns it
 * from now on).  The core re-validates it and recomputes what it derived
 * (model, prompt span, stream flag, token estimate, affinity hash), so the
 * upstream, the shadow copy, the access log and a cache key all see the new
 * bytes.  0, or an error status with q->error set: return PL_ERROR then. */
int pl_set_body(struct pl_req *q, char *body, size_t len);

/* From a module's on_request: transform this request's response with the
 * module's rewrite hook (self: the module's own descriptor).  Only then does
 * the core hold and re-emit the response (the upstream Content-Length is
 * dropped); a request nobody opted into is forwarded as it arrives. */
void pl_transform(struct pl_req *q, const struct pl_module *self);
static inline bool pl_transforming(const struct pl_req *q) { return q->xform != 0; }
/* Run the request's transforms, in table order, over one payload.  false:
 * a transform dropped it.  true: send out and out_len — in->data itself, or
 * bytes in one of the two scratch buffers (the caller's, reused per call).
 * A transform's output is parsed again for the next one. */
bool pl_rewrite(struct pl_req *q, const struct pl_payload *in, struct buf scratch[2], const char **out,
                size_t *out_len);

/* pl_set_body with a body a module built in b (taken over: b is left
 * empty).  PL_NEXT, or PL_ERROR with q->error set (out of memory, or the
 * new body refused). */
enum pl_rc pl_take_body(struct pl_req *q, struct buf *b);

/* Helpers for modules that rewrite a JSON object (the request body, a
 * shadow leg's body, a nested object): write obj's members to out as
 * `"key":value` pairs, comma-separated, bytes as the client sent them,
 * leaving out those drop() names (drop NULL: none); no braces.  Returns
 * how many were written. */
size_t pl_write_members(struct buf *out, const struct json_span *obj,
                        bool (*drop)(const struct json_span *key, void *arg), void *arg);
/* Is key one of the overrides' names (a `set:` mapping)? */
bool pl_override_named(const struct config_override *set, size_t n, const struct json_span *key);
/* Append the overrides as `"key":json` pairs, after a comma when comma. */
void pl_write_overrides(struct buf *out, const struct config_override *set, size_t n, bool comma);

void pl_sent(struct pl_req *q);
void pl_head(struct pl_req *q, const struct pl_head *h);
void pl_event(struct pl_req *q, const struct pl_event *ev);
/* Exactly once: later calls do nothing.  The core frees the request after. */
void pl_finish(struct pl_req *q, const struct pl_outcome *o);

/* Overhead segments (shade's own work on the request, between waits). */
void pl_ovh_begin(struct pl_req *q);
void pl_ovh_end(struct pl_req *q);

/* modules.c: the gateway's table and its engine set-up */
extern const struct pl_module *const pl_modules[];
extern const size_t pl_nmodules;

#endif
