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

struct model_rt {
    const struct config_model *cfg;
    int index;
    struct backend **backends;   /* [n], into gateway.backends */
    size_t n;
};

struct worker;

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
};

enum { WORKER_RUN = 0, WORKER_DRAIN, WORKER_STOP };

int gateway_init(struct gateway *gw, struct config *cfg, char *err, size_t errlen);
void gateway_free(struct gateway *gw);
const struct model_rt *gateway_find_model(const struct gateway *gw, const char *name, size_t len);
bool gateway_ready(const struct gateway *gw, uint64_t now_ms);

/* balance.c: choose a backend of model m that is up, not in `tried`, and
 * under its concurrency cap; reserves an in-flight slot on it.  Returns the
 * backend's index in the model, -1 when none is up, -2 when all that are up
 * are at capacity. */
int balance_pick(struct worker *w, const struct model_rt *m, uint64_t tried, uint64_t now_ms);
void balance_release(struct backend *be);

/* proxy.c: the request handler installed on every worker's httpd. */
void proxy_handle(http_req *r, void *arg);

/* server.c */
int server_run(struct config *cfg);

#endif
