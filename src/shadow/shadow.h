/* shadow.h — mirroring live traffic to candidate models (doc/shadow.md).
 *
 * The pipeline, per request of a model that has shadows:
 *
 *   select   (worker, in the request's decode phase) state, endpoint,
 *            opt-out header, selection mode and sample, tool results.
 *            Selected = "mirrored": from here on the request ends as a
 *            stored pair or as a drop counted with its reason.
 *   admit    the shadow's concurrency cap and hourly budget; over either,
 *            the pair is dropped (counted), never queued.
 *   legs     a shadow leg (and, for aa_percent of pairs, an A/A leg to the
 *            primary model again) starts on the same worker loop, with its
 *            own copy of the body, its own deadline timer and no link to
 *            the client connection: the user's response and the next
 *            request on the connection never wait for it.
 *   primary  the user's own request is observed beside its stream (text,
 *            finish reason, tool calls, usage, TTFT, inter-token gaps).
 *   pair     when the primary and every leg are done, the pair goes to the
 *            recorder's bounded queue (recorder.c); a full queue drops it
 *            (counted).  The recorder writes SQLite, compares, analyses.
 *
 * Memory: a pair is owned by its legs and the primary (a plain count: all
 * of them run on one worker loop); the last one to finish hands it to the
 * recorder, which frees it after writing.
 */
#ifndef SHADE_SHADOW_H
#define SHADE_SHADOW_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "answer.h"
#include "buf.h"
#include "config.h"
#include "httpd.h"
#include "json.h"
#include "metrics.h"
#include "trace.h"
#include "upstream.h"

struct gateway;
struct worker;
struct model_rt;

#define SHADOWS_PER_REQUEST 4 /* shadows of one model that may mirror one request */
/* Redaction runs on the writer over the kept prefix of a prompt: this much
 * beyond prompt_max_bytes is kept so that a match that starts before the cut
 * is still seen whole (a secret across the cut is redacted, not half kept). */
#define SHADOW_PROMPT_SLACK (16u << 10)
/* The most of a non-streamed shadow / A/A answer read for the pair store; a
 * larger answer is not parsed and its leg is stored with error too_large. */
#define SHADOW_LEG_CAPTURE_MAX (4u << 20)

/* why a request of a shadowed model was not mirrored */
enum shadow_skip {
    SKIP_PAUSED = 0, SKIP_STOPPED, SKIP_ENDPOINT, SKIP_OPT_OUT, SKIP_NOT_SELECTED, SKIP_SAMPLED_OUT,
    SKIP_NO_USER_KEY, SKIP_TOOL_RESULTS, SKIP__COUNT
};
/* why a mirrored request did not become a stored pair */
enum shadow_drop {
    DROP_CAP = 0, DROP_BUDGET, DROP_QUEUE_FULL, DROP_SHUTDOWN, DROP_DB_ERROR, DROP_NOMEM, DROP__COUNT
};
enum shadow_leg_kind { LEG_PRIMARY = 0, LEG_SHADOW, LEG_AA, LEG__COUNT };
/* how a shadow or A/A leg ended (metrics) */
enum shadow_outcome { OUT_OK = 0, OUT_ERROR, OUT_TIMEOUT, OUT_DEADLINE, OUT_CANCELLED, OUT__COUNT };

extern const char *const shadow_skip_names[SKIP__COUNT];
extern const char *const shadow_drop_names[DROP__COUNT];
extern const char *const shadow_leg_names[LEG__COUNT];
extern const char *const shadow_outcome_names[OUT__COUNT];
extern const char *const shadow_state_names_rt[3];

struct shadow_rt {
    const struct config_shadow *cfg;
    int index;
    const struct model_rt *model;    /* mirrored */
    const struct model_rt *target;   /* candidate */
    _Atomic int state;               /* enum shadow_state */
    _Atomic int inflight;            /* shadow + A/A legs in flight, all workers */
    _Atomic uint64_t budget_hour;    /* unix hour of the budget window */
    _Atomic uint64_t budget_tokens, budget_micro_usd;
    /* counters, all workers (relaxed atomics) */
    _Atomic uint64_t mirrored, stored;
    _Atomic uint64_t skipped[SKIP__COUNT], dropped[DROP__COUNT];
    _Atomic uint64_t legs[LEG__COUNT][OUT__COUNT];
    /* the recorder's latest analysis and why the state last changed */
    pthread_mutex_t lock;
    char *live_json, *live_text;     /* NULL until the first analysis */
    double live_at;                  /* unix s */
    char reason[256];
};

struct shadow_leg_result {
    bool present;                    /* the leg ran (A/A legs are optional) */
    bool streamed;
    int status;                      /* 0 = no HTTP status */
    const char *error;               /* store.h error kind, NULL = success */
    const char *target, *backend, *upstream_model; /* config strings */
    double latency_ms, ttft_ms;      /* ttft < 0: none */
    double price_in, price_out;      /* USD per 1M tokens of the leg's model */
    struct shadow_answer ans;
};

struct shadow_pair {
    struct shadow_rt *sh;
    struct shadow_pair *next;        /* recorder queue */
    int refs;                        /* primary + running legs (one worker loop) */
    struct shadow_leg *legs[LEG__COUNT]; /* running legs, to cancel */
    char reqid[132];
    double ts;                       /* unix s */
    bool chat;                       /* chat (else completions) */
    struct trace_ctx primary_tc;     /* the user's request span: legs link to it */
    /* The prompt (the body's messages / prompt JSON) as far as the store can
     * use it: the legs are built from the client's body when they start, so
     * the pair never holds the whole body while it waits for the writer. */
    char *prompt;                    /* its first prompt_max_bytes + SHADOW_PROMPT_SLACK bytes, owned */
    size_t prompt_len;
    bool prompt_cut;                 /* the prompt is longer than what is kept */
    char prompt_hash[65];            /* SHA-256 hex of the whole unredacted prompt */
    size_t prompt_bytes;             /* length of the whole prompt (token estimates) */
    size_t weight;                   /* bytes it holds (recorder's queue bound) */
    struct shadow_leg_result leg[LEG__COUNT];
};

/* What the proxy keeps for a mirrored request (NULL when not mirrored). */
struct shadow_primary {
    struct shadow_pair *pairs[SHADOWS_PER_REQUEST];
    int npairs;
    struct shadow_answer ans;
    bool chat;
    bool json_read;                  /* a non-streamed answer was parsed */
};

/* gateway set-up (server.c): shadow runtimes and the model → shadows index */
int shadow_gateway_init(struct gateway *gw, char *err, size_t errlen);
void shadow_gateway_free(struct gateway *gw);
const struct shadow_rt *shadow_find(const struct gateway *gw, const char *name, size_t len);

/* proxy.c, decode phase: choose the shadows that mirror this request and
 * start their legs.  Returns NULL when none does. */
struct shadow_primary *shadow_mirror(struct worker *w, const struct model_rt *m, http_req *r,
                                     const struct json_span *root, enum met_endpoint ep, bool stream,
                                     uint64_t est_tokens, const struct trace_ctx *primary);
/* the store's error kind of an upstream failure */
const char *shadow_err_kind(enum up_err e);
/* proxy.c: observe the primary's answer beside the stream / at the end */
/* (root: the event / body the proxy has already validated) */
void shadow_primary_sse(struct shadow_primary *sp, const struct json_span *root);
void shadow_primary_json(struct shadow_primary *sp, const struct json_span *root);
/* an event of the primary's stream was lost (larger than its SSE reader
 * takes): the answer is kept up to there, flagged truncated */
void shadow_primary_gap(struct shadow_primary *sp);
/* the primary's non-streamed answer (bytes long) was larger than the proxy
 * reads: not parsed; stored with error too_large, tokens estimated */
void shadow_primary_too_large(struct shadow_primary *sp, uint64_t bytes);
/* proxy.c, when the user's request ends: hand the primary's result to the
 * pairs and let go of sp.  error = store.h kind or NULL. */
void shadow_primary_done(struct worker *w, struct shadow_primary *sp, int status, const char *error,
                         const char *backend, const char *target, bool streamed, uint64_t t_start_ns,
                         uint64_t t_first_ns, int64_t usage_in, int64_t usage_out, bool client_gone);

/* worker life (server.c): legs alive on this worker; cancel them all */
size_t shadow_worker_legs(const struct worker *w);
void shadow_worker_cancel_all(struct worker *w);

/* state changes (admin API, auto-stop): logged, recorded as events of
 * `kind` (NULL: "start" | "pause" | "stop" after the new state) */
void shadow_set_state(struct shadow_rt *sh, int state, const char *kind, const char *why);

/* /admin/shadows... (proxy.c routes every /admin/shadows path here);
 * returns the status it answered with */
int shadow_admin(struct worker *w, http_req *r);
/* /metrics: the shadow families */
void shadow_metrics_render(const struct gateway *gw, struct buf *o);

/* a leg's tokens in and out: its usage, or estimated (the same rule for the
 * budget and the pair store) */
void shadow_leg_tokens(const struct shadow_leg_result *res, size_t prompt_bytes, int64_t *in, int64_t *out);
/* the pair's memory, and how many bytes of it the pair holds */
void shadow_pair_free(struct shadow_pair *p);
size_t shadow_pair_bytes(const struct shadow_pair *p);

#endif
