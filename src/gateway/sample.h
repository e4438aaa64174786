/* sample.h — side samples: a request served by one model is, for a sample
 * of requests, also sent to a reference model as side calls (side.h) so
 * that the answers can be compared.  Shared by the rollout's quality gate
 * (two legs to the baseline: the reference and its noise floor) and the
 * experiments' judge preference (one leg to the control's model).
 *
 * The client never waits for a leg and never sees one: the legs start once
 * the client's request is on the wire, at most max_concurrent legs are in
 * flight per sampler (a sample without room is dropped, counted, never
 * queued), a leg is cut at deadline_ms.  A sample is owned by the client's
 * request and its running legs (a plain count: they all run on the
 * request's worker); the last to finish puts it on the sampler's queue
 * when every answer is there, else drops it, counted: a failed or cut leg,
 * a failed client request, a client that left (its legs are cancelled), a
 * full queue.  The owner takes the queue on its own thread
 * (side_sample_take) and frees each sample.
 *
 * A leg's body is the client's body as it came (before the serving model's
 * `set:`), named for the reference's backend, with the reference's `set:`.
 */
#ifndef SHADE_SAMPLE_H
#define SHADE_SAMPLE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "answer.h"

struct pl_req;
struct pl_event;
struct model_rt;
struct worker;
struct side_call;

/* what became of the samples (ss_names: "sampled", "paired", "dropped_cap",
 * "dropped_reference_failed", "dropped_served_failed", "dropped_queue_full";
 * the owner may name them its own way) */
enum { SS_SAMPLED, SS_PAIRED, SS_DROP_CAP, SS_DROP_REF, SS_DROP_SERVED, SS_DROP_QUEUE, SS__N };

#define SS_MAX_LEGS 2     /* reference legs per sample */
#define SS_QUEUE    1024  /* complete samples waiting for the owner */

struct side_sample;

/* One per rollout / experiment, set up by its owner (side_sampler_init). */
struct side_sampler {
    const struct model_rt *ref;     /* where the legs go */
    const char *tag_header, *tag;   /* a header naming the owner on the legs (x-shade-rollout: NAME) */
    int nlegs;                      /* 1 or 2 */
    uint32_t max_concurrent;        /* legs in flight, all workers */
    uint32_t deadline_ms;           /* per leg */
    size_t prompt_max, answer_max;  /* bytes of the prompt and of each answer kept */
    _Atomic int inflight;
    _Atomic uint64_t cnt[SS__N];    /* SS_PAIRED is the owner's to count */
    pthread_mutex_t lock;           /* the queue */
    struct side_sample *head, *tail;
    size_t n;
};

/* a leg's back pointer */
struct side_sample_leg { struct side_sample *s; int k; };

struct side_sample {
    struct side_sampler *sp;
    struct side_sample *next;                 /* the queue */
    int refs;
    bool chat, started;
    uint16_t tag;                             /* the owner's (an experiment's arm) */
    bool failed[1 + SS_MAX_LEGS];
    struct shadow_answer ans[1 + SS_MAX_LEGS]; /* [0] the served answer (the client's), [1..nlegs] the reference's */
    struct side_call *call[1 + SS_MAX_LEGS];  /* running legs */
    struct side_sample_leg leg[1 + SS_MAX_LEGS];
    const char *cbody;                        /* the client's body, only while the legs start */
    size_t cbody_len;
    char reqid[132];
    double ts;
    char *prompt;                             /* messages (chat) or prompt as JSON, bounded; NULL: none */
    size_t prompt_len;
};

struct redactor;
/* Apply the store's redaction patterns to the sample's prompt and answers,
 * in place, before they are written (the writer's thread, after any
 * comparison made on the texts as answered). */
void side_sample_redact(struct side_sample *s, const struct redactor *r);

void side_sampler_init(struct side_sampler *sp);
/* Frees the samples still queued. */
void side_sampler_destroy(struct side_sampler *sp);

/* Whether this request is in a sample of percent % (the worker's rng). */
bool side_sample_pick(struct worker *w, double percent);
/* A request of chat or completions is sampled (counted): a new sample
 * with room for its legs under the cap, or NULL (dropped, counted). */
struct side_sample *side_sample_admit(struct side_sampler *sp, struct pl_req *q, uint16_t tag);
/* The client's request is on the wire: start the legs (on_sent). */
void side_sample_start(struct pl_req *q, struct side_sample *s);
/* The client's request is over: ans is its answer (moved into the sample
 * and freed) when it was answered, else NULL; aborted: the client left
 * (its legs are cancelled). */
void side_sample_finish(struct side_sample *s, struct shadow_answer *ans, bool aborted);
/* The queue, oldest first (the owner's thread; free each with side_sample_free). */
struct side_sample *side_sample_take(struct side_sampler *sp);
void side_sample_free(struct side_sample *s);

/* A served answer as it streams (on_event): the JSON body or an SSE event. */
void side_sample_event(struct shadow_answer *ans, const struct pl_event *ev);

#endif
