/* mod_trace.c — the request's own span (SERVER kind) when it ends; the
 * upstream attempts' spans are the core's (proxy.c attempt_end), as they
 * follow attempts, not the request (doc/observability.md). */
#include <stdio.h>
#include <string.h>

#include "gateway.h"
#include "module.h"

static const char *op_name(enum met_endpoint ep)
{
    return ep == EP_CHAT ? "chat" : ep == EP_COMPLETIONS ? "text_completion" : "embeddings";
}

static void trace_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    if (!q->w->gw->tracer || !(q->tc.flags & TRACE_FLAG_SAMPLED))
        return;
    struct span sp;
    memset(&sp, 0, sizeof sp);
    memcpy(sp.trace_id, q->tc.trace_id, 16);
    memcpy(sp.span_id, q->tc.span_id, 8);
    if (q->has_parent) {
        memcpy(sp.parent_span_id, q->parent_span, 8);
        sp.has_parent = true;
    }
    sp.kind = SPAN_SERVER;
    const char *model = q->m0 ? q->m0->cfg->name : "";
    snprintf(sp.name, sizeof sp.name, "%s %s", op_name(q->ep), model);
    sp.start_unix_ns = q->start_unix_ns;
    sp.end_unix_ns = trace_unix_ns();
    span_attr_str(&sp, "gen_ai.operation.name", op_name(q->ep), strlen(op_name(q->ep)));
    if (q->m0)
        span_attr_str(&sp, "gen_ai.request.model", model, strlen(model));
    if (q->m && q->m != q->m0)
        span_attr_str(&sp, "shade.fallback", q->m->cfg->name, strlen(q->m->cfg->name));
    span_attr_int(&sp, "http.response.status_code", o->status);
    span_attr_str(&sp, "shade.request_id", q->http->reqid, q->http->reqid_len);
    if (o->be)
        span_attr_str(&sp, "shade.backend", o->be->cfg->name, strlen(o->be->cfg->name));
    span_attr_int(&sp, "shade.attempts", o->attempts);
    span_attr_bool(&sp, "gen_ai.request.stream", q->stream);
    if (o->tokens_in >= 0)
        span_attr_int(&sp, "gen_ai.usage.input_tokens", o->tokens_in);
    if (o->tokens_out >= 0)
        span_attr_int(&sp, "gen_ai.usage.output_tokens", o->tokens_out);
    if (o->t_first_token)
        span_attr_double(&sp, "shade.ttft_ms", (double)(o->t_first_token - q->http->t_ready_ns) / 1e6);
    span_attr_double(&sp, "shade.overhead_us", (double)q->ovh_ns / 1e3);
    span_attr_int(&sp, "shade.shadowed", q->mirrored ? 1 : 0);
    if (o->err_kind)
        span_attr_str(&sp, "error.type", o->err_kind, strlen(o->err_kind));
    sp.status = o->status >= 500 ? SPAN_STATUS_ERROR : SPAN_STATUS_UNSET;
    tracer_submit(q->w->gw->tracer, &sp);
}

const struct pl_module mod_trace = {
    .name = "trace",
    .phase = PH_NONE,
    .on_finish = trace_finish,
};
