/* gateway.h — the running gateway: config, backends, workers — the runtime
 * types every module of the serving process shares, and lookups over them
 * (gateway.c).  Set-up is server.h; each module's API is in its own header.
 *
 * Threads: the main thread loads the config, binds, starts one worker per
 * core and then only waits for signals.  Each worker owns an epoll loop, its
 * own SO_REUSEPORT listening socket, its own upstream connection pools and
 * its own metrics shard: workers share nothing mutable except the per-backend
 * atomics (in-flight count, health).
 */
#ifndef SHADE_GATEWAY_H
#define SHADE_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "httpd.h"
#include "loop.h"
#include "metrics.h"
#include "module.h"
#include "upstream.h"

#define MAX_BACKENDS_PER_MODEL 64
/* retry budget per worker and model: starts with, and never falls below
 * being able to refill to, this many retries; capped at RETRY_TOKENS_MAX */
#define RETRY_TOKENS_MIN 10.0
#define RETRY_TOKENS_MAX 100.0

struct model_rt {
    const struct config_model *cfg;
    int index;
    struct backend **backends;   /* [n], into gateway.backends */
    size_t n;
    struct balance_ring *ring;   /* prefix_affinity's hash ring, else NULL */
    const struct model_rt **fallbacks; /* resolved config fallbacks, in order */
    size_t nfallbacks;
    _Atomic int inflight;        /* admitted requests, all workers (max_in_flight) */
    struct shadow_rt **shadows;  /* shadows mirroring this model (shadow.c) */
    size_t nshadows;
    struct rollout_rt *rollout;  /* the rollout moving this model's traffic (rollout.c), or NULL */
    const struct model_rt *canary_of; /* the public model this one is a rollout's candidate for */
    struct experiment_rt *experiment; /* the experiment splitting this model's traffic (experiment.c), or NULL */
};

struct worker;
struct shadow_rt;
struct rollout_rt;
struct experiment_rt;
struct side_call;
struct judge;
struct tracer;
struct accesslog;

struct gateway {
    struct config *cfg;
    struct backend *backends;    /* all models' backends, by id */
    size_t nbackends;
    struct model_rt *models;
    size_t nmodels;
    struct met_layout lay;
    struct worker **workers;
    size_t nworkers;
    _Atomic bool draining;
    uint64_t started_unix;
    struct shadow_rt *shadows;   /* [nshadows] (shadow.c) */
    size_t nshadows;
    struct rollout_rt *rollouts; /* [nrollouts] (rollout.c) */
    size_t nrollouts;
    struct experiment_rt *experiments; /* [nexperiments] (experiment.c) */
    size_t nexperiments;
    struct judge *judge;         /* the judge thread (judge.c), NULL when no shadow has a judge */
    struct tracer *tracer;       /* OTLP span exporter (trace.c), NULL when tracing is off */
    struct accesslog *alog;      /* the access log (accesslog.c), NULL when off */
    char *models_json;           /* GET /v1/models body, built once */
    size_t models_json_len;
};

struct worker {
    struct gateway *gw;
    int id;
    pthread_t thread;
    loop_t *loop;
    struct httpd *httpd;
    int listen_fd;
    struct up_pool **pools;      /* [gw->nbackends] */
    struct met_shard *met;
    ev_async wake;               /* main → worker: drain or stop */
    _Atomic int command;         /* WORKER_DRAIN, WORKER_STOP */
    ev_timer drain_timer;
    uint32_t *rr;                /* [nmodels] round-robin cursors */
    int64_t *wrr;                /* [nbackends] smooth-weighted current weights */
    double *retry_tokens;        /* [nmodels] retry budget: +budget% per request, -1 per retry */
    struct admit_queue *queues;  /* [nmodels] requests waiting for capacity (proxy.c) */
    ev_timer queue_timer;        /* while anything waits: timeouts, capacity freed elsewhere */
    ev_defer queue_kick;         /* capacity freed here: look at the queues */
    uint64_t rng;                /* balance.c's PRNG state (p2c_ewma); 0 = unseeded */
    struct pl_slots mods;        /* each module's own per-worker state (module.h) */
    struct side_call *side_calls; /* side calls running on this worker (side.c): shadow legs, ... */
    size_t side_ncalls;
};

enum { WORKER_RUN = 0, WORKER_DRAIN, WORKER_STOP };

/* gateway.c: the model a client may name (not a shadow's hidden pool), or NULL */
const struct model_rt *gateway_find_model(const struct gateway *gw, const char *name, size_t len);
/* every visible model has a backend that is up (GET /readyz) */
bool gateway_ready(const struct gateway *gw, uint64_t now_ms);

#endif
