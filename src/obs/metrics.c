/* metrics.c — the per-worker counters and histograms, their layout and
 * label escaping; prometheus.c renders them. */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"

const double met_buckets[MET_NBUCKETS] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,  2.5,
                                           5,     10,   20,    30,   60,  120,  300, 600 };

const double met_buckets_tpot[MET_NBUCKETS] = { 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                                                0.075, 0.1,    0.15,  0.2,    0.3,  0.5,   1,    2 };
const double met_buckets_overhead[MET_NBUCKETS] = { 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025,
                                                    0.0005,   0.001,   0.0025,   0.005,   0.01,   0.025,
                                                    0.05,     0.1,     0.25,     0.5,     1 };
const double met_buckets_tokens[MET_NBUCKETS] = { 64,    128,   256,    512,    1024,   2048,    4096,    8192,   16384,
                                                  32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304 };
const char *const met_variant_names[VAR__COUNT] = { "primary", "fallback", "shadow", "aa", "canary" };

void met_observe_in(struct met_hist *h, uint64_t v, const double *bounds, double scale)
{
    double s = (double)v * scale;
    size_t i = 0;
    while (i < MET_NBUCKETS && s > bounds[i])
        i++;
    met_add(&h->b[i], 1);
    met_add(&h->count, 1);
    met_add(&h->sum_us, v);
}

int metrics_layout_init(struct met_layout *lay, const struct config *cfg)
{
    lay->nmodels = cfg->nmodels;
    lay->nbackends = 0;
    lay->key_base = calloc(cfg->nmodels ? cfg->nmodels : 1, sizeof *lay->key_base);
    if (!lay->key_base)
        return -1;
    size_t k = 0;
    for (size_t m = 0; m < cfg->nmodels; m++) {
        lay->key_base[m] = k;
        k += 1 + cfg->models[m].nbackends;
        lay->nbackends += cfg->models[m].nbackends;
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
    size_t nv = lay->nkeys * VAR__COUNT;
    s->requests = calloc(nv, sizeof *s->requests);
    s->duration = calloc(nv, sizeof *s->duration);
    s->ttft = calloc(nv, sizeof *s->ttft);
    s->tpot = calloc(nv, sizeof *s->tpot);
    s->tokens_in = calloc(nv, sizeof *s->tokens_in);
    s->tokens_out = calloc(nv, sizeof *s->tokens_out);
    s->tokens_estimated = calloc(nv, sizeof *s->tokens_estimated);
    s->overhead = calloc(nm, sizeof *s->overhead);
    s->queue_wait = calloc(nm, sizeof *s->queue_wait);
    s->input_tokens = calloc(nm, sizeof *s->input_tokens);
    s->cost_micro_usd = calloc(nm, sizeof *s->cost_micro_usd);
    s->retries = calloc(nm, sizeof *s->retries);
    s->fallbacks = calloc(nm * nm, sizeof *s->fallbacks);
    s->retries_denied = calloc(nm, sizeof *s->retries_denied);
    s->queue_depth = calloc(nm, sizeof *s->queue_depth);
    s->shed = calloc(nm, sizeof *s->shed);
    s->up_errors = calloc(nb, sizeof *s->up_errors);
    s->inflight = calloc(nm, sizeof *s->inflight);
    if (!s->requests || !s->duration || !s->ttft || !s->tpot || !s->tokens_in || !s->tokens_out ||
        !s->overhead || !s->queue_wait || !s->input_tokens ||
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
    free(s->tpot);
    free(s->overhead);
    free(s->queue_wait);
    free(s->input_tokens);
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

/* label values come from the config (validated: no control characters);
 * escape what the exposition format requires anyway */
void metrics_put_label(struct buf *o, const char *v)
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
