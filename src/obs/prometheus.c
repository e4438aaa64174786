/* prometheus.c — the Prometheus text exposition (format 0.0.4) of the whole
 * gateway, written by hand: there is no C client library in Debian, and the
 * format is simple.  It reads every worker's shard (metrics.c) and the
 * state of health checks, tracing, the access log and shadows, so it sits
 * above all of them in the module graph. */
#include "prometheus.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "gateway.h"
#include "health.h"
#include "metrics.h"
#include "module.h"
#include "trace.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

struct key_labels { const char *model; const char *variant; const char *backend; };

/* the labels of a vkey (variant * nkeys + key) */
static struct key_labels key_labels(const struct gateway *gw, size_t vkey)
{
    size_t key = vkey % gw->lay.nkeys;
    const char *variant = met_variant_names[vkey / gw->lay.nkeys];
    for (size_t m = 0; m < gw->nmodels; m++) {
        size_t base = gw->lay.key_base[m];
        if (key >= base && key <= base + gw->models[m].n) {
            /* a canary series is named by the public model it serves */
            const struct model_rt *named = vkey / gw->lay.nkeys == VAR_CANARY && gw->models[m].canary_of
                                               ? gw->models[m].canary_of
                                               : &gw->models[m];
            struct key_labels kl = { named->cfg->name, variant, "" };
            if (key > base)
                kl.backend = gw->models[m].backends[key - base - 1]->cfg->name;
            return kl;
        }
    }
    return (struct key_labels){ "", variant, "" };
}

static uint64_t sum_key(const struct gateway *gw, size_t off_in_shard, size_t idx)
{
    uint64_t v = 0;
    for (size_t w = 0; w < gw->nworkers; w++) {
        _Atomic uint64_t *arr = *(_Atomic uint64_t **)((char *)gw->workers[w]->met + off_in_shard);
        v += LD(arr[idx]);
    }
    return v;
}

static void put_key_labels(struct buf *o, const struct key_labels *kl)
{
    buf_append_str(o, "model=\"");
    metrics_put_label(o, kl->model);
    buf_append_str(o, "\",variant=\"");
    buf_append_str(o, kl->variant);
    buf_append_str(o, "\",backend=\"");
    metrics_put_label(o, kl->backend);
    buf_append_str(o, "\"");
}

/* One histogram: per vkey (per_model false) or per model (true). */
static void put_hist_labels(struct buf *o, const struct key_labels *kl)
{
    if (kl->variant) {
        put_key_labels(o, kl);
        return;
    }
    buf_append_str(o, "model=\"");
    metrics_put_label(o, kl->model);
    buf_append_str(o, "\"");
}

static void render_hist_in(const struct gateway *gw, struct buf *o, const char *name, const char *help, size_t off,
                           const double *bounds, double scale, bool per_model)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    size_t n = per_model ? gw->nmodels : gw->lay.nkeys * VAR__COUNT;
    for (size_t k = 0; k < n; k++) {
        uint64_t b[MET_NBUCKETS + 1] = { 0 }, count = 0, sum = 0;
        for (size_t w = 0; w < gw->nworkers; w++) {
            struct met_hist *h = &(*(struct met_hist **)((char *)gw->workers[w]->met + off))[k];
            for (size_t i = 0; i <= MET_NBUCKETS; i++)
                b[i] += LD(h->b[i]);
            count += LD(h->count);
            sum += LD(h->sum_us);
        }
        struct key_labels kl = per_model ? (struct key_labels){ gw->models[k].cfg->name, NULL, NULL }
                                         : key_labels(gw, k);
        /* a primary series exists for every model/backend pair; the "no
         * backend" pairs and other variants only once observed */
        if (!count && !per_model && (!*kl.backend || k >= gw->lay.nkeys))
            continue;
        uint64_t cum = 0;
        for (size_t i = 0; i <= MET_NBUCKETS; i++) {
            cum += b[i];
            buf_printf(o, "%s_bucket{", name);
            put_hist_labels(o, &kl);
            if (i < MET_NBUCKETS)
                buf_printf(o, ",le=\"%g\"} %llu\n", bounds[i], (unsigned long long)cum);
            else
                buf_printf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        buf_printf(o, "%s_sum{", name);
        put_hist_labels(o, &kl);
        buf_printf(o, "} %.6f\n%s_count{", (double)sum * scale, name);
        put_hist_labels(o, &kl);
        buf_printf(o, "} %llu\n", (unsigned long long)count);
    }
}

static void render_hist(const struct gateway *gw, struct buf *o, const char *name, const char *help, size_t off)
{
    render_hist_in(gw, o, name, help, off, met_buckets, 1e-6, false);
}

static void render_key_counter(const struct gateway *gw, struct buf *o, const char *name,
                               const char *help, size_t off, const char *extra)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t k = 0; k < gw->lay.nkeys * VAR__COUNT; k++) {
        struct key_labels kl = key_labels(gw, k);
        uint64_t v = sum_key(gw, off, k);
        /* every primary model/backend pair; the rest once counted */
        if (!v && (!*kl.backend || k >= gw->lay.nkeys))
            continue;
        buf_printf(o, "%s{", name);
        put_key_labels(o, &kl);
        buf_printf(o, "%s} %llu\n", extra, (unsigned long long)v);
    }
}

/* One series per model from a per-model array of each shard: counters
 * (uint64, multiplied by scale when printed) or gauges (int64). */
static void render_model_series(const struct gateway *gw, struct buf *o, const char *name, const char *help,
                                bool gauge, size_t off, double scale)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, gauge ? "gauge" : "counter");
    for (size_t m = 0; m < gw->nmodels; m++) {
        double v = 0;
        for (size_t w = 0; w < gw->nworkers; w++) {
            const char *shard = (const char *)gw->workers[w]->met + off;
            if (gauge)
                v += (double)LD((*(_Atomic int64_t *const *)shard)[m]);
            else
                v += (double)LD((*(_Atomic uint64_t *const *)shard)[m]);
        }
        buf_printf(o, "%s{model=\"", name);
        metrics_put_label(o, gw->models[m].cfg->name);
        if (scale != 1.0)
            buf_printf(o, "\"} %.6f\n", v * scale);
        else
            buf_printf(o, "\"} %.0f\n", v);
    }
}

void prometheus_render(const struct gateway *gw, struct buf *o)
{
    buf_printf(o, "# HELP shade_build_info Build information.\n# TYPE shade_build_info gauge\n"
                  "shade_build_info{version=\"%s\"} 1\n", SHADE_VERSION);

    buf_append_str(o, "# HELP shade_requests_total Requests answered (and shadow / A/A legs), by model, variant, "
                      "backend, HTTP status and status class.\n"
                      "# TYPE shade_requests_total counter\n");
    for (size_t k = 0; k < gw->lay.nkeys * VAR__COUNT; k++) {
        struct key_labels kl = key_labels(gw, k);
        for (int st = 0; st < 500; st++) {
            uint64_t v = 0;
            for (size_t w = 0; w < gw->nworkers; w++)
                v += LD(gw->workers[w]->met->requests[k][st]);
            if (!v)
                continue;
            buf_append_str(o, "shade_requests_total{");
            put_key_labels(o, &kl);
            buf_printf(o, ",code=\"%d\",class=\"%dxx\"} %llu\n", st + 100, (st + 100) / 100, (unsigned long long)v);
        }
    }

    render_hist(gw, o, "shade_request_duration_seconds",
                "Time from the first byte of a request to the end of its response.",
                offsetof(struct met_shard, duration));
    render_hist(gw, o, "shade_time_to_first_token_seconds",
                "Streaming requests: time from the complete request to the first output token forwarded.",
                offsetof(struct met_shard, ttft));
    render_hist_in(gw, o, "shade_time_per_output_token_seconds",
                   "Streams: time between the first and the last output token / (output events - 1).",
                   offsetof(struct met_shard, tpot), met_buckets_tpot, 1e-6, false);
    render_hist_in(gw, o, "shade_gateway_overhead_seconds",
                   "Time spent inside shade on a request, not waiting for the upstream, the client or the queue "
                   "(doc/observability.md).",
                   offsetof(struct met_shard, overhead), met_buckets_overhead, 1e-6, true);
    render_hist_in(gw, o, "shade_queue_wait_seconds", "Time requests waited in the admission queue.",
                   offsetof(struct met_shard, queue_wait), met_buckets, 1e-6, true);
    render_hist_in(gw, o, "shade_request_input_tokens", "Input tokens per request (from usage, or estimated).",
                   offsetof(struct met_shard, input_tokens), met_buckets_tokens, 1.0, true);
    {
        uint64_t v = 0;
        for (size_t w = 0; w < gw->nworkers; w++)
            v += LD(gw->workers[w]->met->admin_auth_failures);
        buf_printf(o, "# HELP shade_admin_auth_failures_total Admin requests refused for a missing or wrong admin key.\n"
                      "# TYPE shade_admin_auth_failures_total counter\nshade_admin_auth_failures_total %llu\n",
                   (unsigned long long)v);
    }
    render_key_counter(gw, o, "shade_input_tokens_total", "Prompt tokens, from upstream usage or estimated.",
                       offsetof(struct met_shard, tokens_in), "");
    render_key_counter(gw, o, "shade_output_tokens_total", "Completion tokens, from upstream usage or counted chunks.",
                       offsetof(struct met_shard, tokens_out), "");
    render_key_counter(gw, o, "shade_usage_estimated_total",
                       "Responses whose token usage was estimated (the upstream reported none).",
                       offsetof(struct met_shard, tokens_estimated), "");

    render_model_series(gw, o, "shade_cost_usd_total", "Cost of tokens at the configured prices.", false,
                        offsetof(struct met_shard, cost_micro_usd), 1e-6);
    render_model_series(gw, o, "shade_retries_total", "Upstream attempts beyond the first.", false,
                        offsetof(struct met_shard, retries), 1.0);
    render_model_series(gw, o, "shade_retries_denied_total", "Retries refused by the retry budget.", false,
                        offsetof(struct met_shard, retries_denied), 1.0);
    buf_append_str(o, "# HELP shade_fallbacks_total Requests served by a fallback model, by requested and serving model.\n"
                      "# TYPE shade_fallbacks_total counter\n");
    for (size_t m = 0; m < gw->nmodels; m++) {
        for (size_t t = 0; t < gw->nmodels; t++) {
            uint64_t v = 0;
            for (size_t w = 0; w < gw->nworkers; w++)
                v += LD(gw->workers[w]->met->fallbacks[m * gw->nmodels + t]);
            if (!v)
                continue;
            buf_append_str(o, "shade_fallbacks_total{model=\"");
            metrics_put_label(o, gw->models[m].cfg->name);
            buf_append_str(o, "\",to=\"");
            metrics_put_label(o, gw->models[t].cfg->name);
            buf_printf(o, "\"} %llu\n", (unsigned long long)v);
        }
    }
    render_model_series(gw, o, "shade_queue_depth", "Requests waiting for capacity.", true,
                        offsetof(struct met_shard, queue_depth), 1.0);
    buf_append_str(o, "# HELP shade_shed_total Requests refused by admission control, by reason.\n"
                      "# TYPE shade_shed_total counter\n");
    for (size_t m = 0; m < gw->nmodels; m++) {
        static const char *const reasons[2] = { "queue_full", "queue_timeout" };
        for (int k = 0; k < 2; k++) {
            uint64_t v = 0;
            for (size_t w = 0; w < gw->nworkers; w++)
                v += LD(gw->workers[w]->met->shed[m][k]);
            buf_append_str(o, "shade_shed_total{model=\"");
            metrics_put_label(o, gw->models[m].cfg->name);
            buf_printf(o, "\",reason=\"%s\"} %llu\n", reasons[k], (unsigned long long)v);
        }
    }
    render_model_series(gw, o, "shade_requests_in_flight", "Requests being handled.", true,
                        offsetof(struct met_shard, inflight), 1.0);
    buf_append_str(o, "# HELP shade_upstream_errors_total Failed upstream attempts, by backend and kind.\n"
                      "# TYPE shade_upstream_errors_total counter\n");
    for (size_t b = 0; b < gw->nbackends; b++) {
        for (int e = 1; e < UP__COUNT; e++) {
            uint64_t v = 0;
            for (size_t w = 0; w < gw->nworkers; w++)
                v += LD(gw->workers[w]->met->up_errors[b][e]);
            if (!v)
                continue;
            buf_append_str(o, "shade_upstream_errors_total{model=\"");
            metrics_put_label(o, gw->backends[b].model->name);
            buf_append_str(o, "\",backend=\"");
            metrics_put_label(o, gw->backends[b].cfg->name);
            buf_printf(o, "\",kind=\"%s\"} %llu\n", up_err_name((enum up_err)e), (unsigned long long)v);
        }
    }
    buf_append_str(o, "# HELP shade_backend_up Whether a backend is taking traffic (1) or marked down (0).\n"
                      "# TYPE shade_backend_up gauge\n");
    uint64_t now = mono_ns() / 1000000u;
    for (size_t b = 0; b < gw->nbackends; b++) {
        buf_append_str(o, "shade_backend_up{model=\"");
        metrics_put_label(o, gw->backends[b].model->name);
        buf_append_str(o, "\",backend=\"");
        metrics_put_label(o, gw->backends[b].cfg->name);
        buf_printf(o, "\"} %d\n", backend_is_up(&gw->backends[b], now) ? 1 : 0);
    }
    buf_append_str(o, "# HELP shade_backend_in_flight Requests in flight to a backend.\n"
                      "# TYPE shade_backend_in_flight gauge\n");
    for (size_t b = 0; b < gw->nbackends; b++) {
        buf_append_str(o, "shade_backend_in_flight{model=\"");
        metrics_put_label(o, gw->backends[b].model->name);
        buf_append_str(o, "\",backend=\"");
        metrics_put_label(o, gw->backends[b].cfg->name);
        buf_printf(o, "\"} %d\n", atomic_load_explicit(&gw->backends[b].inflight, memory_order_relaxed));
    }
    struct health *hl = health_current();
    if (hl && hl->nbackends == gw->nbackends) {
        buf_append_str(o, "# HELP shade_backend_ejections_total Outlier ejections of a backend.\n"
                          "# TYPE shade_backend_ejections_total counter\n");
        for (size_t b = 0; b < gw->nbackends; b++) {
            buf_append_str(o, "shade_backend_ejections_total{model=\"");
            metrics_put_label(o, gw->backends[b].model->name);
            buf_append_str(o, "\",backend=\"");
            metrics_put_label(o, gw->backends[b].cfg->name);
            buf_printf(o, "\"} %llu\n", (unsigned long long)LD(hl->hb[b].ejections_total));
        }
        buf_append_str(o, "# HELP shade_health_checks_total Active health check probes, by result.\n"
                          "# TYPE shade_health_checks_total counter\n");
        for (size_t b = 0; b < gw->nbackends; b++) {
            if (!gw->backends[b].cfg->health_check.enabled)
                continue;
            for (int ok = 1; ok >= 0; ok--) {
                buf_append_str(o, "shade_health_checks_total{model=\"");
                metrics_put_label(o, gw->backends[b].model->name);
                buf_append_str(o, "\",backend=\"");
                metrics_put_label(o, gw->backends[b].cfg->name);
                buf_printf(o, "\",result=\"%s\"} %llu\n", ok ? "success" : "failure",
                           (unsigned long long)(ok ? LD(hl->hb[b].checks_ok) : LD(hl->hb[b].checks_fail)));
            }
        }
    }
    if (gw->tracer) {
        struct tracer_stats ts;
        tracer_get_stats(gw->tracer, &ts);
        buf_printf(o, "# HELP shade_trace_spans_total Spans by what became of them: exported, dropped (queue full), "
                      "failed (export failed).\n# TYPE shade_trace_spans_total counter\n"
                      "shade_trace_spans_total{result=\"exported\"} %llu\nshade_trace_spans_total{result=\"dropped\"} %llu\n"
                      "shade_trace_spans_total{result=\"failed\"} %llu\n",
                   (unsigned long long)ts.exported, (unsigned long long)ts.dropped, (unsigned long long)ts.failed);
    }
    if (gw->alog) {
        struct accesslog_stats as;
        accesslog_get_stats(gw->alog, &as);
        buf_printf(o, "# HELP shade_access_log_lines_total Access log lines written, or dropped (back-pressure, "
                      "write errors).\n# TYPE shade_access_log_lines_total counter\n"
                      "shade_access_log_lines_total{result=\"written\"} %llu\n"
                      "shade_access_log_lines_total{result=\"dropped\"} %llu\n",
                   (unsigned long long)as.lines, (unsigned long long)as.dropped);
    }
    /* the modules' own families (the shadows' and the judge's, …) */
    for (size_t m = 0; m < pl_nmodules; m++)
        if (pl_modules[m]->metrics_render)
            pl_modules[m]->metrics_render(gw, o);
}
