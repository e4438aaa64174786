/* pair.h — what a shadow pair is, and the shadow it belongs to: the record
 * that travels from the workers (shadow.c: selection, legs, the primary's
 * answer) to the pair store's writer (recorder.c) and is read by the admin
 * API (shadow_admin.c).  It sits below all three so that the writer needs
 * nothing of the worker side, and the worker side only hands pairs over.
 */
#ifndef SHADE_PAIR_H
#define SHADE_PAIR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "answer.h"
#include "config.h"
#include "trace.h"

struct model_rt;
struct shadow_leg;

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
    /* the live decision, for a rollout's shadow stage: 0 none yet, else
     * 1 + enum verdict_action; live_rule its rule (under lock) */
    _Atomic int live_action;
    char live_rule[32];
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

/* a leg's tokens in and out: its usage, or estimated (the same rule for the
 * budget and the pair store) */
void shadow_leg_tokens(const struct shadow_leg_result *res, size_t prompt_bytes, int64_t *in, int64_t *out);
/* the pair's memory, and how many bytes of it the pair holds */
void shadow_pair_free(struct shadow_pair *p);
size_t shadow_pair_bytes(const struct shadow_pair *p);

#endif
