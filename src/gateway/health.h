/* health.h — backend health beyond today's connect-failure marking:
 *
 *   - active checks: one checker thread for the whole process probes every
 *     backend that has a health_check (GET path, 2xx = success) and flips
 *     the backend's verdict after unhealthy_threshold / healthy_threshold
 *     consecutive results;
 *   - passive outlier ejection: consecutive 5xx / timeout / connect errors
 *     (from backend_report) eject a backend for base_ejection × 2^(n-1),
 *     capped at max_ejection, never beyond max_ejected_percent of its pool
 *     and never the last backend of a pool that is taking traffic.
 *
 * What the balancer reads stays in struct backend (down_until, check_ok) so
 * backend_is_up() is two relaxed loads.  Counters for /metrics and
 * /admin/backends live here, one struct health_be per backend id.
 */
#ifndef SHADE_HEALTH_H
#define SHADE_HEALTH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "upstream.h"

struct gateway;
struct model_rt;

/* check_ok values (struct backend) */
#define HEALTH_CHECK_DOWN (-1)  /* failed unhealthy_threshold checks in a row */
#define HEALTH_CHECK_NONE 0     /* no verdict yet: taken as up */
#define HEALTH_CHECK_UP 1

struct health_pool {             /* one model's backends */
    struct backend **be;
    size_t n;
    pthread_mutex_t mu;          /* serialises ejection decisions only */
};

struct health_be {
    struct health_pool *pool;
    _Atomic uint32_t consec_errors;   /* outlier: consecutive 5xx/timeout/connect */
    _Atomic uint64_t ejected_until;   /* outlier ejection end, monotonic ms (0 = never) */
    _Atomic uint64_t eject_ms;        /* length of the last ejection */
    _Atomic uint64_t ejections_total;
    _Atomic uint64_t checks_ok, checks_fail;
    _Atomic int last_check;           /* -1 none yet, 0 failed, 1 passed */
    _Atomic int last_status;          /* HTTP status of the last probe, 0 = none */
};

struct probe;

struct health {
    struct backend *backends;    /* by id */
    size_t nbackends;
    struct health_be *hb;        /* [nbackends] */
    struct health_pool *pools;   /* [npools] */
    size_t npools;
    /* the checker thread (only when some backend has a health_check) */
    bool running;
    pthread_t thread;
    loop_t *loop;
    ev_async stop;
    struct probe *probes;        /* [nbackends] */
};

/* Set up state for these backends and models (no thread, no global). */
int health_init(struct health *h, struct backend *backends, size_t nbackends,
                const struct model_rt *models, size_t nmodels);
void health_free(struct health *h);

/* The outlier state machine: one attempt's outcome (called by
 * backend_report through the installed instance). */
void health_report(struct health *h, struct backend *be, enum be_outcome o, uint64_t now_ms);
/* The active-check state machine: one probe's result. */
void health_check_result(struct health *h, struct backend *be, bool ok, int status, uint64_t now_ms);

/* The process's instance, used by /metrics and /admin; installing one also
 * hooks it into backend_report (backend_on_outcome). */
void health_install(struct health *h);
struct health *health_current(void);

/* server.c: init + install + start the checker thread; stop and free. */
int health_start(struct gateway *gw);
void health_stop(void);

/* "up" | "ejected" | "unhealthy" */
const char *health_state(struct backend *be, uint64_t now_ms);
/* GET /admin/backends body. */
void health_render_admin(const struct gateway *gw, struct buf *o, uint64_t now_ms);

#endif
