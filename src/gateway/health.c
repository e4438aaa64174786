/* health.c — active health checks and passive outlier ejection.
 *
 * Active checks run on one dedicated thread with its own event loop and its
 * own upstream pools (one per checked backend), so a backend gets exactly one
 * probe per interval whatever the number of workers, and a busy worker never
 * delays a probe (nor does a probe ever sit in front of a client request).
 *
 * Verdicts are published in struct backend (check_ok, down_until) with
 * relaxed atomics; backend_is_up() reads them without locks.  The only lock
 * is the per-pool mutex taken when an outlier ejection is decided, so that
 * two workers cannot both eject "the last allowed" backend at once.
 */
#include "health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "json.h"
#include "log.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define ST(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

static _Atomic(struct health *) g_health;

/* backend_report's hook: the outcome goes to whichever instance is installed */
static void report_to_current(struct backend *be, enum be_outcome o, uint64_t now_ms)
{
    health_report(health_current(), be, o, now_ms);
}

void health_install(struct health *h)
{
    atomic_store(&g_health, h);
    backend_on_outcome(report_to_current);
}
struct health *health_current(void) { return atomic_load_explicit(&g_health, memory_order_acquire); }

/* ---------- state ---------- */

int health_init(struct health *h, struct backend *backends, size_t nbackends,
                const struct model_rt *models, size_t nmodels)
{
    memset(h, 0, sizeof *h);
    h->backends = backends;
    h->nbackends = nbackends;
    h->hb = calloc(nbackends ? nbackends : 1, sizeof *h->hb);
    h->pools = calloc(nmodels ? nmodels : 1, sizeof *h->pools);
    if (!h->hb || !h->pools) {
        free(h->hb);
        free(h->pools);
        h->hb = NULL;
        h->pools = NULL;
        return -1;
    }
    for (size_t i = 0; i < nbackends; i++) {
        ST(h->hb[i].last_check, -1);
        ST(backends[i].check_ok, HEALTH_CHECK_NONE);
        ST(backends[i].check_streak, 0);
        ST(backends[i].ejections, 0);
    }
    for (size_t m = 0; m < nmodels; m++) {
        struct health_pool *p = &h->pools[m];
        p->be = models[m].backends;
        p->n = models[m].n;
        pthread_mutex_init(&p->mu, NULL);
        h->npools++;
        for (size_t b = 0; b < p->n; b++)
            if (p->be[b]->id < nbackends)
                h->hb[p->be[b]->id].pool = p;
    }
    return 0;
}

void health_free(struct health *h)
{
    if (health_current() == h)
        health_install(NULL);
    for (size_t m = 0; m < h->npools; m++)
        pthread_mutex_destroy(&h->pools[m].mu);
    free(h->pools);
    free(h->hb);
    h->pools = NULL;
    h->hb = NULL;
}

const char *health_state(struct backend *be, uint64_t now_ms)
{
    if (LD(be->check_ok) == HEALTH_CHECK_DOWN)
        return "unhealthy";
    if (LD(be->down_until) > now_ms)
        return "ejected";
    return "up";
}

/* ---------- passive: outlier ejection ---------- */

static uint64_t ejection_ms(const struct config_outlier *oc, uint32_t n)
{
    uint64_t d = oc->base_ejection_ms;
    for (uint32_t i = 1; i < n && d < oc->max_ejection_ms; i++)
        d *= 2;
    return d < oc->max_ejection_ms ? d : oc->max_ejection_ms;
}

/* Called with the pool's lock held. */
static bool may_eject(const struct health_pool *p, const struct backend *be, uint32_t pct, uint64_t now_ms)
{
    size_t out = 0, others_in = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct backend *o = p->be[i];
        bool up = backend_is_up(o, now_ms);
        if (!up)
            out++;
        else if (o != be)
            others_in++;
    }
    /* a shadow's own pool serves no user: its last backend may go too, so
     * legs to a dead candidate end at once instead of piling up */
    if (be->model->hidden)
        return true;
    if (others_in == 0)
        return false;          /* the last backend taking traffic stays in */
    return (out + 1) * 100 <= (size_t)pct * p->n;
}

static void try_eject(struct health *h, struct backend *be, uint64_t now_ms)
{
    struct health_be *hb = &h->hb[be->id];
    const struct config_outlier *oc = &be->cfg->outlier;
    struct health_pool *p = hb->pool;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    if (LD(hb->ejected_until) <= now_ms && may_eject(p, be, oc->max_ejected_percent, now_ms)) {
        uint32_t n = LD(be->ejections) + 1;
        uint64_t d = ejection_ms(oc, n), until = now_ms + d;
        ST(be->ejections, n);
        ST(hb->eject_ms, d);
        ST(hb->ejected_until, until);
        if (LD(be->down_until) < until)
            ST(be->down_until, until);
        ST(hb->consec_errors, 0);
        atomic_fetch_add_explicit(&hb->ejections_total, 1, memory_order_relaxed);
        log_warn("backend %s of model %s ejected for %llu ms (ejection %u)", be->cfg->name, be->model->name,
                 (unsigned long long)d, n);
    }
    pthread_mutex_unlock(&p->mu);
}

void health_report(struct health *h, struct backend *be, enum be_outcome o, uint64_t now_ms)
{
    const struct config_outlier *oc = &be->cfg->outlier;
    if (!h || !oc->enabled || be->id >= h->nbackends)
        return;
    struct health_be *hb = &h->hb[be->id];
    switch (o) {
    case BE_OK:
        if (LD(hb->consec_errors))
            ST(hb->consec_errors, 0);
        /* a healthy period as long as the last ejection forgets the backoff */
        if (LD(be->ejections) && now_ms >= LD(hb->ejected_until) + LD(hb->eject_ms))
            ST(be->ejections, 0);
        return;
    case BE_429:
        return;   /* alive but busy: neither an error nor proof of health */
    case BE_CONNECT_FAIL:
    case BE_TIMEOUT:
    case BE_5XX:
        break;
    }
    if (LD(hb->ejected_until) > now_ms)
        return;   /* late results of requests sent before the ejection */
    uint32_t f = atomic_fetch_add_explicit(&hb->consec_errors, 1, memory_order_relaxed) + 1;
    if (f >= oc->consecutive_errors)
        try_eject(h, be, now_ms);
}

/* ---------- active: the check verdict ---------- */

void health_check_result(struct health *h, struct backend *be, bool ok, int status, uint64_t now_ms)
{
    const struct config_health_check *hc = &be->cfg->health_check;
    if (h && be->id < h->nbackends) {
        struct health_be *hb = &h->hb[be->id];
        atomic_fetch_add_explicit(ok ? &hb->checks_ok : &hb->checks_fail, 1, memory_order_relaxed);
        ST(hb->last_check, ok ? 1 : 0);
        ST(hb->last_status, status);
    }
    int cur = LD(be->check_ok);
    bool down = cur == HEALTH_CHECK_DOWN;
    if (ok != down) {
        /* agrees with the current verdict */
        ST(be->check_streak, 0);
        if (ok && cur == HEALTH_CHECK_NONE)
            ST(be->check_ok, HEALTH_CHECK_UP);
        return;
    }
    uint32_t s = LD(be->check_streak) + 1;
    if (ok && s >= hc->healthy_threshold) {
        ST(be->check_ok, HEALTH_CHECK_UP);
        ST(be->check_streak, 0);
        log_warn("backend %s of model %s passes its health check again", be->cfg->name, be->model->name);
    } else if (!ok && s >= hc->unhealthy_threshold) {
        ST(be->check_ok, HEALTH_CHECK_DOWN);
        ST(be->check_streak, 0);
        log_warn("backend %s of model %s fails its health check (status %d): taken out", be->cfg->name,
                 be->model->name, status);
    } else {
        ST(be->check_streak, s);
    }
}

/* ---------- the checker thread ---------- */

struct probe {
    struct health *h;
    struct backend *be;
    struct up_pool *pool;
    ev_timer tick, deadline;
    struct up_conn *conn;      /* the probe in flight, or NULL */
    int status;
    char req[1400];
    size_t reqlen;
};

static void probe_done(struct probe *pr, bool ok)
{
    ev_timer_stop(pr->h->loop, &pr->deadline);
    pr->conn = NULL;
    loop_update_time(pr->h->loop);
    health_check_result(pr->h, pr->be, ok, pr->status, loop_now(pr->h->loop));
}

static void probe_on_head(void *ctx, int status, const struct http_hdr *hdrs, size_t n, int64_t cl)
{
    struct probe *pr = ctx;
    pr->status = status;
}

static void probe_on_body(void *ctx, const char *p, size_t n) {}

static void probe_on_done(void *ctx, enum up_err err)
{
    struct probe *pr = ctx;
    probe_done(pr, err == UP_OK && pr->status >= 200 && pr->status < 300);
}

static const struct up_handlers probe_cbs = { probe_on_head, probe_on_body, probe_on_done };

static void probe_deadline_cb(loop_t *l, ev_timer *t)
{
    struct probe *pr = t->data;
    if (pr->conn) {
        up_cancel(pr->conn);
        pr->status = 0;
        probe_done(pr, false);
    }
}

static void probe_tick_cb(loop_t *l, ev_timer *t)
{
    struct probe *pr = t->data;
    ev_timer_start(l, &pr->tick, pr->be->cfg->health_check.interval_ms);
    if (pr->conn)
        return;   /* the previous probe is still within its timeout */
    pr->status = 0;
    struct iovec iov = { pr->req, pr->reqlen };
    pr->conn = up_start(pr->pool, &iov, 1, &probe_cbs, pr);
    if (!pr->conn) {
        health_check_result(pr->h, pr->be, false, 0, loop_now(l));
        return;
    }
    ev_timer_start(l, &pr->deadline, pr->be->cfg->health_check.timeout_ms);
}

static void stop_cb(loop_t *l, ev_async *a)
{
    struct health *h = a->data;
    for (size_t i = 0; i < h->nbackends; i++) {
        struct probe *pr = &h->probes[i];
        if (!pr->pool)
            continue;
        ev_timer_stop(l, &pr->tick);
        ev_timer_stop(l, &pr->deadline);
        if (pr->conn) {
            up_cancel(pr->conn);
            pr->conn = NULL;
        }
    }
    loop_stop(l);
}

static void *checker_main(void *arg)
{
    struct health *h = arg;
    loop_run(h->loop);
    return NULL;
}

static void checker_free(struct health *h)
{
    if (h->probes) {
        for (size_t i = 0; i < h->nbackends; i++)
            up_pool_free(h->probes[i].pool);
        free(h->probes);
        h->probes = NULL;
    }
    if (h->loop) {
        ev_async_close(h->loop, &h->stop);
        loop_free(h->loop);
        h->loop = NULL;
    }
}

static int checker_start(struct health *h)
{
    size_t nchecked = 0;
    for (size_t i = 0; i < h->nbackends; i++)
        nchecked += h->backends[i].cfg->health_check.enabled;
    if (!nchecked)
        return 0;
    h->loop = loop_new();
    h->probes = calloc(h->nbackends, sizeof *h->probes);
    if (!h->loop || !h->probes)
        goto fail;
    if (ev_async_init(h->loop, &h->stop, stop_cb, h) < 0) {
        loop_free(h->loop);
        h->loop = NULL;
        goto fail;
    }
    for (size_t i = 0; i < h->nbackends; i++) {
        struct backend *be = &h->backends[i];
        const struct config_health_check *hc = &be->cfg->health_check;
        if (!hc->enabled)
            continue;
        struct probe *pr = &h->probes[i];
        pr->h = h;
        pr->be = be;
        int n = snprintf(pr->req, sizeof pr->req,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: shade/" SHADE_VERSION
                         " health-check\r\nAccept: */*\r\n\r\n",
                         hc->path, be->host_header);
        if (n < 0 || (size_t)n >= sizeof pr->req) {
            log_error("backend %s: health_check path too long", be->cfg->name);
            goto fail;
        }
        pr->reqlen = (size_t)n;
        if (!(pr->pool = up_pool_new(h->loop, be)))
            goto fail;
        ev_timer_init(&pr->tick, probe_tick_cb, pr);
        ev_timer_init(&pr->deadline, probe_deadline_cb, pr);
        /* spread the first probes a little over the first interval */
        ev_timer_start(h->loop, &pr->tick, (uint64_t)(i * 7) % (hc->interval_ms < 1000 ? hc->interval_ms : 1000));
    }
    if (pthread_create(&h->thread, NULL, checker_main, h) != 0)
        goto fail;
    h->running = true;
    return 0;
fail:
    checker_free(h);
    return -1;
}

static struct health g_instance;

int health_start(struct gateway *gw)
{
    if (health_init(&g_instance, gw->backends, gw->nbackends, gw->models, gw->nmodels) < 0)
        return -1;
    health_install(&g_instance);
    if (checker_start(&g_instance) < 0) {
        health_free(&g_instance);
        return -1;
    }
    return 0;
}

void health_stop(void)
{
    struct health *h = &g_instance;
    if (h->running) {
        ev_async_send(&h->stop);
        pthread_join(h->thread, NULL);
        h->running = false;
    }
    checker_free(h);
    if (h->hb)
        health_free(h);
}

/* ---------- GET /admin/backends ---------- */

static void put_str(struct buf *o, const char *s)
{
    char esc[2200];
    long n = json_escape(s, strlen(s), esc, sizeof esc);
    if (n < 0)
        buf_append_str(o, "\"\"");
    else
        buf_append(o, esc, (size_t)n);
}

void health_render_admin(const struct gateway *gw, struct buf *o, uint64_t now_ms)
{
    struct health *h = health_current();
    buf_append_str(o, "{\"models\":[");
    for (size_t m = 0; m < gw->nmodels; m++) {
        const struct model_rt *mr = &gw->models[m];
        buf_append_str(o, m ? ",{\"name\":" : "{\"name\":");
        put_str(o, mr->cfg->name);
        buf_append_str(o, ",\"backends\":[");
        for (size_t b = 0; b < mr->n; b++) {
            struct backend *be = mr->backends[b];
            const struct health_be *hb = h && be->id < h->nbackends ? &h->hb[be->id] : NULL;
            buf_append_str(o, b ? ",{\"name\":" : "{\"name\":");
            put_str(o, be->cfg->name);
            buf_append_str(o, ",\"url\":");
            put_str(o, be->cfg->url);
            uint64_t until = LD(be->down_until);
            int last = hb ? LD(hb->last_check) : -1;
            buf_printf(o,
                       ",\"state\":\"%s\",\"inflight\":%d,\"consecutive_failures\":%u,"
                       "\"connect_failures\":%u,\"ejections\":%u,\"ejections_total\":%llu,"
                       "\"readmit_in_s\":%.3f,\"health_check\":%s,\"last_check\":%s,\"last_check_status\":%d}",
                       health_state(be, now_ms), LD(be->inflight), hb ? LD(hb->consec_errors) : 0u, LD(be->fails),
                       LD(be->ejections), hb ? (unsigned long long)LD(hb->ejections_total) : 0ull,
                       until > now_ms ? (double)(until - now_ms) / 1000.0 : 0.0,
                       be->cfg->health_check.enabled ? "true" : "false",
                       last < 0 ? "null" : last ? "\"ok\"" : "\"fail\"", hb ? LD(hb->last_status) : 0);
        }
        buf_append_str(o, "]}");
    }
    buf_append_str(o, "]}\n");
}
