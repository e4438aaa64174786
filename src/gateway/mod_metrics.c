/* mod_metrics.c — the request families of /metrics (doc/metrics.md): one
 * count per request by model, backend, variant and status, its duration,
 * time to first token, time per output token, overhead, tokens and cost.
 * Everything comes from the outcome the core settled at finish. */
#include "gateway.h"
#include "module.h"

static void metrics_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct met_shard *met = q->w->met;
    const struct met_layout *lay = &q->w->gw->lay;
    int status = o->status < 100 || o->status > 599 ? 599 : o->status;
    enum met_variant var = q->m && q->m0 && q->m != q->m0 ? VAR_FALLBACK
                           : q->renamed && q->m0 && q->m0->canary_of ? VAR_CANARY
                                                                     : VAR_PRIMARY;
    size_t key = metrics_vkey(lay, var, metrics_key(lay, q->m ? q->m->index : -1, o->be ? (int)o->be->index : -1));
    met_add(&met->requests[key][status - 100], 1);
    if (!q->m)
        return;
    uint64_t now = mono_ns();
    met_observe(&met->duration[key], (now - q->http->t_start_ns) / 1000u);
    if (o->t_first_token)
        met_observe(&met->ttft[key], (o->t_first_token - q->http->t_ready_ns) / 1000u);
    if (o->t_first_token && o->chunks_out > 1 && o->t_last_token > o->t_first_token)
        met_observe_in(&met->tpot[key], (o->t_last_token - o->t_first_token) / 1000u / (uint64_t)(o->chunks_out - 1),
                       met_buckets_tpot, 1e-6);
    met_observe_in(&met->overhead[q->m0 ? q->m0->index : q->m->index], q->ovh_ns / 1000u, met_buckets_overhead, 1e-6);
    if (o->cost_usd < 0)
        return; /* usage not settled: a failure */
    if (o->tokens_estimated)
        met_add(&met->tokens_estimated[key], 1);
    if (o->tokens_in > 0)
        met_add(&met->tokens_in[key], (uint64_t)o->tokens_in);
    met_observe_in(&met->input_tokens[q->m->index], o->tokens_in > 0 ? (uint64_t)o->tokens_in : 0, met_buckets_tokens,
                   1.0);
    if (o->tokens_out > 0)
        met_add(&met->tokens_out[key], (uint64_t)o->tokens_out);
    double micro = o->cost_usd * 1e6;
    if (micro > 0)
        met_add(&met->cost_micro_usd[q->m->index], (uint64_t)(micro + 0.5));
}

const struct pl_module mod_metrics = {
    .name = "metrics",
    .phase = PH_NONE,
    .on_finish = metrics_finish,
};
