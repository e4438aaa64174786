/* gateway.h — the running gateway: config, backends, workers.
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
};

struct worker;
struct shadow_rt;
struct shadow_leg;
struct judge;
struct tracer;
struct accesslog;
struct alog_worker;

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
    struct alog_worker *alog;    /* this worker's access log buffer, NULL when off */
    struct shadow_leg *shadow_legs; /* shadow / A/A legs running on this worker */
    size_t shadow_nlegs;
};

enum { WORKER_RUN = 0, WORKER_DRAIN, WORKER_STOP };

int gateway_init(struct gateway *gw, struct config *cfg, char *err, size_t errlen);
void gateway_free(struct gateway *gw);
const struct model_rt *gateway_find_model(const struct gateway *gw, const char *name, size_t len);
bool gateway_ready(const struct gateway *gw, uint64_t now_ms);

/* What the request tells the balancer, computed once by the proxy. */
struct pick_hint {
    uint64_t affinity;    /* hash of the session header or of the prompt prefix
                             (first system/user content); 0 = none */
    uint32_t est_tokens;  /* prompt bytes / 4 + max_tokens (or a default of 256) */
};

/* balance.c: choose a backend of model m that is up, not in `tried`, and
 * under its concurrency cap; reserves an in-flight slot on it (and the
 * hint's tokens).  Returns the backend's index in the model, -1 when none is
 * up, -2 when all that are up are at capacity. */
int balance_pick(struct worker *w, const struct model_rt *m, uint64_t tried, uint64_t now_ms,
                 const struct pick_hint *hint);
/* balance.c: build / free model m's prefix_affinity ring (no-op for other
 * strategies).  Called once at start-up, before any worker runs. */
int balance_model_init(struct model_rt *m);
void balance_model_free(struct model_rt *m);
/* Give back what balance_pick reserved. */
void balance_release(struct backend *be, const struct pick_hint *hint);
/* Feed the latency model: time from sending the request to the response
 * head (or to the failure), in µs. */
void balance_observe(struct backend *be, uint64_t latency_us, uint64_t now_ms);

/* proxy.c: the request handler installed on every worker's httpd. */
void proxy_handle(http_req *r, void *arg);
/* proxy.c: per-worker admission queues (server.c sets them up). */
int proxy_worker_init(struct worker *w);
void proxy_worker_free(struct worker *w);

/* server.c: the serving process (listening sockets inherited from the
 * master through SHADE_LISTEN_FDS, readiness reported on SHADE_READY_FD) */
int server_run(struct config *cfg);
/* master.c: `shade serve` — owns the sockets, starts and replaces serving
 * processes (SIGHUP reload, SIGUSR2 binary upgrade). */
int master_run(const char *config_path, char **argv, struct config *cfg);

#endif
