/* metrics.c — Prometheus text exposition (format 0.0.4), written by hand:
 * there is no C client library in Debian, and the format is simple. */
#include "metrics.h"
#include "shadow.h"

#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "health.h"

const double met_buckets[MET_NBUCKETS] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                           5,     10,   20,    30,   60,  120,  300, 600 };

void met_observe(struct met_hist *h, uint64_t us)
{
    double s = (double)us / 1e6;
    size_t i = 0;
    while (i < MET_NBUCKETS && s > met_buckets[i])
        i++;
    met_add(&h->b[i], 1);
    met_add(&h->count, 1);
    met_add(&h->sum_us, us);
}

int metrics_layout_init(struct met_layout *lay, const struct gateway *gw)
{
    lay->nmodels = gw->nmodels;
    lay->nbackends = gw->nbackends;
    lay->key_base = calloc(gw->nmodels ? gw->nmodels : 1, sizeof *lay->key_base);
    if (!lay->key_base)
        return -1;
    size_t k = 0;
    for (size_t m = 0; m < gw->nmodels; m++) {
        lay->key_base[m] = k;
        k += 1 + gw->models[m].n;
    }
    lay->nkeys = k + 1;
    return 0;
}

void metrics_layout_free(struct met_layout *lay) { free(lay->key_base); }

struct met_shard *metrics_shard_new(const struct met_layout *lay)
{
    struct met_shard *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    size_t nm = lay->nmodels ? lay->nmodels : 1, nb = lay->nbackends ? lay->nbackends : 1;
    s->requests = calloc(lay->nkeys, sizeof *s->requests);
    s->duration = calloc(lay->nkeys, sizeof *s->duration);
    s->ttft = calloc(lay->nkeys, sizeof *s->ttft);
    s->tokens_in = calloc(lay->nkeys, sizeof *s->tokens_in);
    s->tokens_out = calloc(lay->nkeys, sizeof *s->tokens_out);
    s->tokens_estimated = calloc(lay->nkeys, sizeof *s->tokens_estimated);
    s->cost_micro_usd = calloc(nm, sizeof *s->cost_micro_usd);
    s->retries = calloc(nm, sizeof *s->retries);
    s->fallbacks = calloc(nm * nm, sizeof *s->fallbacks);
    s->retries_denied = calloc(nm, sizeof *s->retries_denied);
    s->queue_depth = calloc(nm, sizeof *s->queue_depth);
    s->shed = calloc(nm, sizeof *s->shed);
    s->up_errors = calloc(nb, sizeof *s->up_errors);
    s->inflight = calloc(nm, sizeof *s->inflight);
    if (!s->requests || !s->duration || !s->ttft || !s->tokens_in || !s->tokens_out ||
        !s->tokens_estimated || !s->cost_micro_usd || !s->retries || !s->fallbacks || !s->retries_denied || !s->queue_depth || !s->shed || !s->up_errors || !s->inflight) {
        metrics_shard_free(s);
        return NULL;
    }
    return s;
}

void metrics_shard_free(struct met_shard *s)
{
    if (!s)
        return;
    free(s->requests);
    free(s->duration);
    free(s->ttft);
    free(s->tokens_in);
    free(s->tokens_out);
    free(s->tokens_estimated);
    free(s->cost_micro_usd);
    free(s->retries);
    free(s->fallbacks);
    free(s->retries_denied);
    free(s->queue_depth);
    free(s->shed);
    free(s->up_errors);
    free(s->inflight);
    free(s);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

/* label values come from the config (validated: no control characters);
 * escape what the exposition format requires anyway */
static void put_label(struct buf *o, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            buf_append(o, "\\", 1);
        if (*p == '\n') {
            buf_append(o, "\\n", 2);
            continue;
        }
        buf_append(o, p, 1);
    }
}

struct key_labels { const char *model; const char *backend; };

static struct key_labels key_labels(const struct gateway *gw, size_t key)
{
    for (size_t m = 0; m < gw->nmodels; m++) {
        size_t base = gw->lay.key_base[m];
        if (key >= base && key <= base + gw->models[m].n) {
            struct key_labels kl = { gw->models[m].cfg->name, "" };
            if (key > base)
                kl.backend = gw->models[m].backends[key - base - 1]->cfg->name;
            return kl;
        }
    }
    return (struct key_labels){ "", "" };
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
    put_label(o, kl->model);
    buf_append_str(o, "\",backend=\"");
    put_label(o, kl->backend);
    buf_append_str(o, "\"");
}

static void render_hist(const struct gateway *gw, struct buf *o, const char *name, const char *help,
                        size_t off)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (size_t k = 0; k < gw->lay.nkeys; k++) {
        uint64_t b[MET_NBUCKETS + 1] = { 0 }, count = 0, sum = 0;
        for (size_t w = 0; w < gw->nworkers; w++) {
            struct met_hist *h = &(*(struct met_hist **)((char *)gw->workers[w]->met + off))[k];
            for (size_t i = 0; i <= MET_NBUCKETS; i++)
                b[i] += LD(h->b[i]);
            count += LD(h->count);
            sum += LD(h->sum_us);
        }
        struct key_labels kl = key_labels(gw, k);
        /* a series exists for every model/backend pair; the "no backend"
         * pairs only once something was observed there */
        if (!count && !*kl.backend)
            continue;
        uint64_t cum = 0;
        for (size_t i = 0; i <= MET_NBUCKETS; i++) {
            cum += b[i];
            buf_printf(o, "%s_bucket{", name);
            put_key_labels(o, &kl);
            if (i < MET_NBUCKETS)
                buf_printf(o, ",le=\"%g\"} %llu\n", met_buckets[i], (unsigned long long)cum);
            else
                buf_printf(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        buf_printf(o, "%s_sum{", name);
        put_key_labels(o, &kl);
        buf_printf(o, "} %.6f\n%s_count{", (double)sum / 1e6, name);
        put_key_labels(o, &kl);
        buf_printf(o, "} %llu\n", (unsigned long long)count);
    }
}

static void render_key_counter(const struct gateway *gw, struct buf *o, const char *name,
                               const char *help, size_t off, const char *extra)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (size_t k = 0; k + 1 < gw->lay.nkeys; k++) {
        struct key_labels kl = key_labels(gw, k);
        if (!*kl.backend)
            continue;
        buf_printf(o, "%s{model=\"", name);
        put_label(o, kl.model);
        buf_append_str(o, "\",backend=\"");
        put_label(o, kl.backend);
        buf_printf(o, "\"%s} %llu\n", extra, (unsigned long long)sum_key(gw, off, k));
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
        put_label(o, gw->models[m].cfg->name);
        if (scale != 1.0)
            buf_printf(o, "\"} %.6f\n", v * scale);
        else
            buf_printf(o, "\"} %.0f\n", v);
    }
}

void metrics_render(const struct gateway *gw, struct buf *o)
{
    buf_printf(o, "# HELP shade_build_info Build information.\n# TYPE shade_build_info gauge\n"
                  "shade_build_info{version=\"%s\"} 1\n", SHADE_VERSION);

    buf_append_str(o, "# HELP shade_requests_total Requests answered, by model, backend and HTTP status.\n"
                      "# TYPE shade_requests_total counter\n");
    for (size_t k = 0; k < gw->lay.nkeys; k++) {
        struct key_labels kl = key_labels(gw, k);
        for (int st = 0; st < 500; st++) {
            uint64_t v = 0;
            for (size_t w = 0; w < gw->nworkers; w++)
                v += LD(gw->workers[w]->met->requests[k][st]);
            if (!v)
                continue;
            buf_append_str(o, "shade_requests_total{model=\"");
            put_label(o, kl.model);
            buf_append_str(o, "\",backend=\"");
            put_label(o, kl.backend);
            buf_printf(o, "\",code=\"%d\"} %llu\n", st + 100, (unsigned long long)v);
        }
    }

    render_hist(gw, o, "shade_request_duration_seconds",
                "Time from the first byte of a request to the end of its response.",
                offsetof(struct met_shard, duration));
    render_hist(gw, o, "shade_time_to_first_token_seconds",
                "Streaming requests: time from the complete request to the first output token forwarded.",
                offsetof(struct met_shard, ttft));
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
            put_label(o, gw->models[m].cfg->name);
            buf_append_str(o, "\",to=\"");
            put_label(o, gw->models[t].cfg->name);
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
            put_label(o, gw->models[m].cfg->name);
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
            put_label(o, gw->backends[b].model->name);
            buf_append_str(o, "\",backend=\"");
            put_label(o, gw->backends[b].cfg->name);
            buf_printf(o, "\",kind=\"%s\"} %llu\n", up_err_name((enum up_err)e), (unsigned long long)v);
        }
    }
    buf_append_str(o, "# HELP shade_backend_up Whether a backend is taking traffic (1) or marked down (0).\n"
                      "# TYPE shade_backend_up gauge\n");
    uint64_t now = mono_ns() / 1000000u;
    for (size_t b = 0; b < gw->nbackends; b++) {
        buf_append_str(o, "shade_backend_up{model=\"");
        put_label(o, gw->backends[b].model->name);
        buf_append_str(o, "\",backend=\"");
        put_label(o, gw->backends[b].cfg->name);
        buf_printf(o, "\"} %d\n", backend_is_up(&gw->backends[b], now) ? 1 : 0);
    }
    buf_append_str(o, "# HELP shade_backend_in_flight Requests in flight to a backend.\n"
                      "# TYPE shade_backend_in_flight gauge\n");
    for (size_t b = 0; b < gw->nbackends; b++) {
        buf_append_str(o, "shade_backend_in_flight{model=\"");
        put_label(o, gw->backends[b].model->name);
        buf_append_str(o, "\",backend=\"");
        put_label(o, gw->backends[b].cfg->name);
        buf_printf(o, "\"} %d\n", atomic_load_explicit(&gw->backends[b].inflight, memory_order_relaxed));
    }
    struct health *hl = health_current();
    if (hl && hl->nbackends == gw->nbackends) {
        buf_append_str(o, "# HELP shade_backend_ejections_total Outlier ejections of a backend.\n"
                          "# TYPE shade_backend_ejections_total counter\n");
        for (size_t b = 0; b < gw->nbackends; b++) {
            buf_append_str(o, "shade_backend_ejections_total{model=\"");
            put_label(o, gw->backends[b].model->name);
            buf_append_str(o, "\",backend=\"");
            put_label(o, gw->backends[b].cfg->name);
            buf_printf(o, "\"} %llu\n", (unsigned long long)LD(hl->hb[b].ejections_total));
        }
        buf_append_str(o, "# HELP shade_health_checks_total Active health check probes, by result.\n"
                          "# TYPE shade_health_checks_total counter\n");
        for (size_t b = 0; b < gw->nbackends; b++) {
            if (!gw->backends[b].cfg->health_check.enabled)
                continue;
            for (int ok = 1; ok >= 0; ok--) {
                buf_append_str(o, "shade_health_checks_total{model=\"");
                put_label(o, gw->backends[b].model->name);
                buf_append_str(o, "\",backend=\"");
                put_label(o, gw->backends[b].cfg->name);
                buf_printf(o, "\",result=\"%s\"} %llu\n", ok ? "success" : "failure",
                           (unsigned long long)(ok ? LD(hl->hb[b].checks_ok) : LD(hl->hb[b].checks_fail)));
            }
        }
    }
    shadow_metrics_render(gw, o);
}
