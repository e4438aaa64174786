/* server.c — process life: gateway set-up, worker threads, signals, drain.
 *
 * SIGTERM / SIGINT: every worker closes its listener and idle connections;
 * requests and streams in flight run to completion (new requests on those
 * connections are refused by closing after the current response).  When all
 * connections are gone, or server.shutdown_timeout passes, the process exits.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "state.h"
#include "keys.h"

#include "balance.h"
#include "gateway.h"
#include "health.h"
#include "json.h"
#include "accesslog.h"
#include "judge.h"
#include "trace.h"
#include "log.h"
#include "mod_accesslog.h"
#include "mod_trace.h"
#include "module.h"
#include "proxy.h"
#include "auth.h"
#include "recorder.h"
#include "experiment.h"
#include "rollout.h"
#include "router.h"
#include "shadow.h"
#include "side.h"

/* ---------- gateway ---------- */

static int build_models_json(struct gateway *gw)
{
    struct buf b = { 0 };
    buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    bool first = true;
    for (size_t i = 0; i < gw->nmodels; i++) {
        char esc[1100];
        const char *n = gw->models[i].cfg->name;
        if (gw->models[i].cfg->hidden)
            continue;
        long el = json_escape(n, strlen(n), esc, sizeof esc);
        if (el < 0)
            el = 0;
        buf_printf(&b, "%s{\"id\":%.*s,\"object\":\"model\",\"created\":%llu,\"owned_by\":\"shade\"}",
                   first ? "" : ",", (int)el, esc, (unsigned long long)gw->started_unix);
        first = false;
    }
    buf_append_str(&b, "]}\n");
    gw->models_json = b.p;
    gw->models_json_len = buf_used(&b);
    return b.p ? 0 : -1;
}

int gateway_init(struct gateway *gw, struct config *cfg, char *err, size_t errlen)
{
    memset(gw, 0, sizeof *gw);
    gw->cfg = cfg;
    gw->started_unix = (uint64_t)time(NULL);
    size_t nb = 0;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        if (cfg->models[i].nbackends > MAX_BACKENDS_PER_MODEL) {
            snprintf(err, errlen, "%s: model %s has more than %d backends", cfg->path, cfg->models[i].name,
                     MAX_BACKENDS_PER_MODEL);
            return -1;
        }
        nb += cfg->models[i].nbackends;
    }
    gw->backends = calloc(nb ? nb : 1, sizeof *gw->backends);
    gw->models = calloc(cfg->nmodels ? cfg->nmodels : 1, sizeof *gw->models);
    if (!gw->backends || !gw->models)
        goto nomem;
    gw->nmodels = cfg->nmodels;
    size_t id = 0;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        struct model_rt *m = &gw->models[i];
        m->cfg = &cfg->models[i];
        m->index = (int)i;
        m->n = m->cfg->nbackends;
        m->backends = calloc(m->n, sizeof *m->backends);
        if (!m->backends)
            goto nomem;
        for (size_t b = 0; b < m->n; b++) {
            struct backend *be = &gw->backends[id];
            be->cfg = &m->cfg->backends[b];
            be->model = m->cfg;
            be->id = (uint32_t)id;
            be->index = (uint32_t)b;
            bool default_port = be->cfg->port == (be->cfg->tls ? 443 : 80);
            bool v6 = strchr(be->cfg->host, ':') != NULL;
            if (default_port)
                snprintf(be->host_header, sizeof be->host_header, v6 ? "[%s]" : "%s", be->cfg->host);
            else
                snprintf(be->host_header, sizeof be->host_header, v6 ? "[%s]:%u" : "%s:%u", be->cfg->host,
                         be->cfg->port);
            gw->nbackends = ++id;
            if (backend_init_tls(be, err, errlen) < 0)
                return -1;
            m->backends[b] = be;
        }
        if (balance_model_init(m) < 0)
            goto nomem;
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        struct model_rt *m = &gw->models[i];
        m->fallbacks = calloc(m->cfg->nfallbacks ? m->cfg->nfallbacks : 1, sizeof *m->fallbacks);
        if (!m->fallbacks)
            goto nomem;
        for (size_t f = 0; f < m->cfg->nfallbacks; f++) {
            const char *fn = m->cfg->fallbacks[f];
            const struct model_rt *fm = gateway_find_model(gw, fn, strlen(fn));
            if (!fm || fm == m) {
                snprintf(err, errlen, "%s: model %s: fallback '%s' is not another configured model", cfg->path,
                         m->cfg->name, fn);
                return -1;
            }
            m->fallbacks[m->nfallbacks++] = fm;
        }
    }
    if (metrics_layout_init(&gw->lay, cfg) < 0 || build_models_json(gw) < 0)
        goto nomem;
    return shadow_gateway_init(gw, err, errlen);
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

void gateway_free(struct gateway *gw)
{
    shadow_gateway_free(gw);
    for (size_t i = 0; i < gw->nbackends; i++)
        backend_free_tls(&gw->backends[i]);
    for (size_t i = 0; i < gw->nmodels; i++) {
        balance_model_free(&gw->models[i]);
        free(gw->models[i].backends);
        free(gw->models[i].fallbacks);
    }
    free(gw->models);
    free(gw->backends);
    free(gw->models_json);
    metrics_layout_free(&gw->lay);
}

/* ---------- workers ---------- */

static void drain_check_cb(loop_t *l, ev_timer *t)
{
    struct worker *w = t->data;
    /* side calls (shadow legs) end by their deadline (or are cut at
     * shutdown_timeout) */
    if (httpd_connections(w->httpd) == 0 && side_count(w) == 0) {
        loop_stop(l);
        return;
    }
    ev_timer_start(l, t, 20);
}

static void wake_cb(loop_t *l, ev_async *a)
{
    struct worker *w = a->data;
    int cmd = atomic_load(&w->command);
    if (cmd == WORKER_DRAIN) {
        httpd_shutdown(w->httpd);
        ev_timer_start(l, &w->drain_timer, 0);
    } else if (cmd == WORKER_STOP) {
        httpd_shutdown(w->httpd);
        httpd_close_all(w->httpd);
        side_cancel_all(w);
        loop_stop(l);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    loop_run(w->loop);
    return NULL;
}

static void worker_free(struct worker *w)
{
    if (!w)
        return;
    if (w->httpd)
        httpd_free(w->httpd);
    side_cancel_all(w); /* shadow legs: their pairs go to the recorder as they are */
    pl_worker_free(&w->mods, w); /* modules' worker state (the access log's last lines), before the loop goes */
    if (w->pools) {
        for (size_t i = 0; i < w->gw->nbackends; i++)
            up_pool_free(w->pools[i]);
        free(w->pools);
    }
    if (w->loop) {
        ev_async_close(w->loop, &w->wake);
        loop_free(w->loop); /* runs deferred frees */
    }
    metrics_shard_free(w->met);
    free(w->rr);
    free(w->wrr);
    free(w->retry_tokens);
    proxy_worker_free(w);
    free(w);
}

static struct worker *worker_new(struct gateway *gw, int id, int lfd)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->gw = gw;
    w->id = id;
    w->listen_fd = lfd;
    w->loop = loop_new();
    w->met = metrics_shard_new(&gw->lay);
    w->pools = calloc(gw->nbackends ? gw->nbackends : 1, sizeof *w->pools);
    w->rr = calloc(gw->nmodels ? gw->nmodels : 1, sizeof *w->rr);
    w->wrr = calloc(gw->nbackends ? gw->nbackends : 1, sizeof *w->wrr);
    w->retry_tokens = calloc(gw->nmodels ? gw->nmodels : 1, sizeof *w->retry_tokens);
    if (!w->loop || !w->met || !w->pools || !w->rr || !w->wrr || !w->retry_tokens)
        goto fail;
    /* a few retries are always possible, even before traffic has paid for them */
    for (size_t i = 0; i < gw->nmodels; i++)
        w->retry_tokens[i] = RETRY_TOKENS_MIN;
    /* different starting points so workers do not all hit backend 0 first */
    for (size_t i = 0; i < gw->nmodels; i++)
        w->rr[i] = (uint32_t)id;
    w->rng = trace_rng_seed() ^ ((uint64_t)id + 1) * 0x9E3779B97F4A7C15ull; /* trace ids, samples, p2c */
    for (size_t i = 0; i < gw->nbackends; i++)
        if (!(w->pools[i] = up_pool_new(w->loop, &gw->backends[i])))
            goto fail;
    const struct config_server *s = &gw->cfg->server;
    struct httpd_limits lim = {
        .max_header_bytes = s->max_header_bytes,
        .max_headers = s->max_headers,
        .max_body_bytes = s->max_body_bytes,
        .header_timeout_ms = s->header_timeout_ms,
        .body_timeout_ms = s->body_timeout_ms,
        .keepalive_timeout_ms = s->keepalive_timeout_ms,
        .max_connections = s->max_connections,
    };
    if (pl_worker_init(&w->mods, pl_modules, pl_nmodules, w) < 0)
        goto fail;
    w->httpd = httpd_new(w->loop, &lim, route_handle, w);
    if (!w->httpd || ev_async_init(w->loop, &w->wake, wake_cb, w) < 0)
        goto fail;
    ev_timer_init(&w->drain_timer, drain_check_cb, w);
    if (proxy_worker_init(w) < 0)
        goto fail;
    if (httpd_listen(w->httpd, lfd) < 0)
        goto fail;
    return w;
fail:
    worker_free(w);
    return NULL;
}

static void tell_workers(struct gateway *gw, int cmd)
{
    for (size_t i = 0; i < gw->nworkers; i++) {
        atomic_store(&gw->workers[i]->command, cmd);
        ev_async_send(&gw->workers[i]->wake);
    }
}

/* The access log and the span exporter, when configured. */
static int start_telemetry(struct gateway *gw, char *err, size_t errlen)
{
    const struct config_access_log *al = accesslog_config(gw->cfg);
    const struct config_tracing *tr = tracing_config(gw->cfg);
    if (al->path) {
        struct accesslog_opts ao = { .path = al->path, .prompts = al->prompts, .buffer_bytes = al->buffer_bytes,
                                     .flush_ms = al->flush_ms };
        if (!(gw->alog = accesslog_open(&ao, err, errlen)))
            return -1;
    }
    if (tr->endpoint) {
        struct tracer_opts to = { .endpoint = tr->endpoint, .service_name = tr->service_name,
                                  .queue_size = tr->queue_size, .batch_size = tr->batch_size,
                                  .interval_ms = tr->interval_ms };
        if (!(gw->tracer = tracer_start(&to, err, errlen)))
            return -1;
    }
    return 0;
}

/* SIGUSR1: log rotation (the master passes it on). */
static void reopen_logs(struct gateway *gw)
{
    if (!gw->alog)
        return;
    if (accesslog_reopen(gw->alog) < 0)
        log_error("access log %s: cannot reopen: %s", accesslog_config(gw->cfg)->path, strerror(errno));
    else
        log_info("access log %s reopened", accesslog_config(gw->cfg)->path);
}

/* The judge calls the judge model through this gateway's own listener. */
static int start_judge(struct gateway *gw, char *err, size_t errlen)
{
    const struct config *cfg = gw->cfg;
    struct judge_shadow js[64];
    size_t n = 0;
    for (size_t i = 0; i < cfg->nshadows && n < 64; i++)
        if (cfg->shadows[i].judge_model)
            js[n++] = (struct judge_shadow){ cfg->shadows[i].name, cfg->shadows[i].judge_model,
                                             cfg->shadows[i].judge_sample_percent / 100.0 };
    /* and the rollouts whose quality gate has a judge */
    struct judge_rollout jr[64];
    size_t nr = 0;
    for (size_t i = 0; i < cfg->nrollouts && nr < 64; i++)
        if (cfg->rollouts[i].quality_judge)
            jr[nr++] = (struct judge_rollout){ cfg->rollouts[i].name, cfg->rollouts[i].quality_judge,
                                               cfg->rollouts[i].quality_judge_sample / 100.0 };
    /* and the experiments with a judge */
    struct judge_experiment je[64];
    size_t ne = 0;
    for (size_t i = 0; i < cfg->nexperiments && ne < 64; i++)
        if (cfg->experiments[i].judge_model)
            je[ne++] = (struct judge_experiment){ cfg->experiments[i].name, cfg->experiments[i].judge_model };
    if (!n && !nr && !ne)
        return 0;
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    const struct sockaddr_storage *ss = &cfg->server.addr;
    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }
    struct judge_opts o = { .db_path = cfg->store.path, .host = host, .port = port, .shadows = js, .nshadows = n,
                            .rollouts = jr, .nrollouts = nr, .experiments = je, .nexperiments = ne };
    gw->judge = judge_start(&o, err, errlen);
    return gw->judge ? 0 : -1;
}

int server_run(struct config *cfg)
{
    struct gateway gw;
    char err[512];
    int rc = 1;
    log_set_level(cfg->server.log_level);
    /* the master's shared state (limits, lockouts), before any module needs it */
    if (st_attach() < 0) {
        log_error("cannot map the shared state");
        return 1;
    }
    if (gateway_init(&gw, cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        gateway_free(&gw);
        return 1;
    }
    /* health state and the one process-wide checker thread (health.c) */
    if (health_start(&gw) < 0) {
        log_error("cannot start health checks");
        gateway_free(&gw);
        return 1;
    }
    /* the pair store's writer (recorder.c), when there are shadows, and the
     * judge (judge.c), when a shadow, a rollout or an experiment names a judge model */
    if (recorder_start(&gw, err, sizeof err) < 0 || start_judge(&gw, err, sizeof err) < 0 ||
        start_telemetry(&gw, err, sizeof err) < 0 || rollout_start(&gw, err, sizeof err) < 0 ||
        experiment_start(&gw, err, sizeof err) < 0 || keys_start(cfg, err, sizeof err) < 0) {
        log_error("%s", err);
        keys_stop();
        experiment_stop(&gw);
        rollout_stop(&gw);
        judge_stop(gw.judge);
        recorder_stop();
        tracer_stop(gw.tracer);
        accesslog_close(gw.alog);
        health_stop();
        gateway_free(&gw);
        return 1;
    }
    if (auth_listener_open(cfg))
        log_warn("%s is reachable from outside this machine and no API key is required (auth:): anyone who "
                 "reaches it may call every model", cfg->server.listen);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nw = cfg->server.workers ? cfg->server.workers : (size_t)(ncpu > 0 ? ncpu : 1);
    gw.workers = calloc(nw, sizeof *gw.workers);
    if (!gw.workers)
        goto out;

    /* signals are taken by the main thread only, with sigtimedwait */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* listening sockets: inherited from the master (fds 3..3+n-1), each
     * worker with its own descriptor for one of them */
    int ninherit = getenv("SHADE_LISTEN_FDS") ? atoi(getenv("SHADE_LISTEN_FDS")) : 0;
    if (ninherit < 1 || ninherit > 256) {
        log_error("no listening sockets from the master (SHADE_LISTEN_FDS)");
        goto stop;
    }
    for (size_t i = 0; i < nw; i++) {
        int fd = fcntl(3 + (int)(i % (size_t)ninherit), F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            log_error("listening socket %zu: %s", i, strerror(errno));
            goto stop;
        }
        struct worker *w = worker_new(&gw, (int)i, fd);
        if (!w) {
            close(fd);
            log_error("cannot start worker %zu", i);
            goto stop;
        }
        gw.workers[gw.nworkers++] = w;
    }
    /* more inherited sockets than workers: the extra ones are shared out */
    for (int j = (int)nw; j < ninherit; j++) {
        int fd = fcntl(3 + j, F_DUPFD_CLOEXEC, 0);
        if (fd >= 0 && httpd_listen(gw.workers[(size_t)j % nw]->httpd, fd) < 0)
            close(fd);
    }
    for (int j = 0; j < ninherit; j++)
        close(3 + j);
    for (size_t i = 0; i < gw.nworkers; i++) {
        if (pthread_create(&gw.workers[i]->thread, NULL, worker_main, gw.workers[i]) != 0) {
            log_error("cannot create worker thread");
            /* workers already started are stopped below */
            gw.nworkers = i;
            goto stop;
        }
    }
    log_info("shade %s listening on %s with %zu worker%s, %zu model%s (pid %d)", SHADE_VERSION,
             cfg->server.listen, gw.nworkers, gw.nworkers == 1 ? "" : "s", gw.nmodels,
             gw.nmodels == 1 ? "" : "s", (int)getpid());
    /* tell the master we serve: it may now retire the previous process */
    const char *rfd = getenv("SHADE_READY_FD");
    if (rfd) {
        int fd = atoi(rfd);
        if (fd > 2) {
            ssize_t wr = write(fd, "R", 1);
            (void)wr;
            close(fd);
        }
        unsetenv("SHADE_READY_FD");
    }
    unsetenv("SHADE_LISTEN_FDS");

    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        if (sig == SIGHUP)
            log_info("SIGHUP goes to the master process (pid %d), which reloads; ignored here", (int)getppid());
        if (sig == SIGUSR1)
            reopen_logs(&gw);
    }
    judge_stop(gw.judge); /* its calls go through the listener that is closing */
    gw.judge = NULL;
    log_info("draining: no new connections; waiting up to %u ms for requests in flight",
             cfg->server.shutdown_timeout_ms);
    atomic_store(&gw.draining, true);
    tell_workers(&gw, WORKER_DRAIN);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += cfg->server.shutdown_timeout_ms / 1000;
    deadline.tv_nsec += (long)(cfg->server.shutdown_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (size_t i = 0; i < gw.nworkers; i++) {
        if (pthread_timedjoin_np(gw.workers[i]->thread, NULL, &deadline) != 0) {
            log_warn("shutdown timeout: closing the connections still open");
            tell_workers(&gw, WORKER_STOP);
            for (size_t j = i; j < gw.nworkers; j++)
                pthread_join(gw.workers[j]->thread, NULL);
            break;
        }
    }
    log_info("stopped");
    rc = 0;
    goto out;
stop:
    tell_workers(&gw, WORKER_STOP);
    for (size_t i = 0; i < gw.nworkers; i++)
        if (gw.workers[i]->thread)
            pthread_join(gw.workers[i]->thread, NULL);
out:
    judge_stop(gw.judge);
    gw.judge = NULL;
    health_stop();
    for (size_t i = 0; i < gw.nworkers; i++)
        worker_free(gw.workers[i]);
    rollout_stop(&gw); /* every request is counted now: the last check, the state written */
    experiment_stop(&gw); /* and the experiments' last counts */
    keys_stop(); /* the spend ledger's last rows */
    recorder_stop(); /* every pair is in its queue now: write them, close the file */
    tracer_stop(gw.tracer); /* after the workers: their last spans are queued */
    accesslog_close(gw.alog);
    free(gw.workers);
    gateway_free(&gw);
    return rc;
}
