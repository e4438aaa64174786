/* balance.h — choosing a backend of a model: round robin, smooth weighted
 * round robin, least outstanding, least tokens, p2c over peak-EWMA, prefix
 * affinity (bounded-load consistent hashing); concurrency caps.  The
 * per-worker cursors live in struct worker, the shared per-backend state in
 * struct backend (doc/routing.md). */
#ifndef SHADE_BALANCE_H
#define SHADE_BALANCE_H

#include <stdint.h>

struct backend;
struct model_rt;
struct worker;

/* What the request tells the balancer, computed once by the proxy. */
struct pick_hint {
    uint64_t affinity;    /* hash of the session header or of the prompt prefix
                             (first system/user content); 0 = none */
    uint32_t est_tokens;  /* prompt bytes / 4 + max_tokens (or a default of 256) */
};

/* Choose a backend of model m that is up, not in `tried`, and under its
 * concurrency cap; reserves an in-flight slot on it (and the hint's
 * tokens).  Returns the backend's index in the model, -1 when none is up,
 * -2 when all that are up are at capacity. */
int balance_pick(struct worker *w, const struct model_rt *m, uint64_t tried, uint64_t now_ms,
                 const struct pick_hint *hint);
/* Build / free model m's prefix_affinity ring (no-op for other
 * strategies).  Called once at start-up, before any worker runs. */
int balance_model_init(struct model_rt *m);
void balance_model_free(struct model_rt *m);
/* Give back what balance_pick reserved. */
void balance_release(struct backend *be, const struct pick_hint *hint);
/* Feed the latency model: time from sending the request to the response
 * head (or to the failure), in µs. */
void balance_observe(struct backend *be, uint64_t latency_us, uint64_t now_ms);

#endif
