/* mod_trace.c — the request's own span (SERVER kind) when it ends; the
 * upstream attempts' spans are the core's (proxy.c attempt_end), as they
 * follow attempts, not the request (doc/observability.md). */
#include "mod_trace.h"

#include <stdio.h>
#include <string.h>

#include "config_schema.h"
#include "gateway.h"
#include "module.h"

/* tracing.endpoint: plain http (OTLP/HTTP); a collector on the host or
 * next to it.  The host is resolved by the exporter when it starts. */
static int check_tracing_endpoint(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    const char *v = *(char **)((char *)base + f->offset);
    char sb[CONFIG_SHOW_BYTES];
    if (strncmp(v, "http://", 7) != 0 || !v[7] || v[7] == '/')
        return config_fail(ld, at, "\"endpoint\": must be http://host[:port]/path (got \"%s\")",
                           config_show(sb, v, strlen(v)));
    return 0;
}

#define S struct config_tracing
static const struct field tracing_fields[] = {
    STR(S, "endpoint", endpoint, F_TOKEN, 8, 2048, check_tracing_endpoint, NULL),
    NUM(S, "sample", sample, 0, 1, "1"),
    STR(S, "service_name", service_name, 0, 1, 128, NULL, "shade"),
    UINT(S, "queue_size", queue_size, 16, 10000000, "4096"),
    UINT(S, "batch_size", batch_size, 1, 100000, "512"),
    DUR(S, "interval", interval_ms, "1s"),
};
static const struct section tracing_section = SECTION("tracing", "in tracing", tracing_fields, S, NULL, NULL);
#undef S

const struct config_tracing *tracing_config(const struct config *cfg)
{
    /* a config loaded without this module: the defaults, no export */
    static const struct config_tracing off = { .sample = 1, .queue_size = 4096, .batch_size = 512,
                                               .interval_ms = 1000 };
    const struct config_tracing *c = pl_config(cfg, &mod_trace);
    return c ? c : &off;
}

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
    if (q->key_name) /* the key's name: never its secret */
        span_attr_str(&sp, "shade.key", q->key_name, strlen(q->key_name));
    if (q->rollout)
        span_attr_str(&sp, "shade.rollout", q->rollout, strlen(q->rollout));
    if (q->experiment)
        span_attr_str(&sp, "shade.experiment", q->experiment, strlen(q->experiment));
    if (q->variant)
        span_attr_str(&sp, "shade.variant", q->variant, strlen(q->variant));
    if (o->err_kind)
        span_attr_str(&sp, "error.type", o->err_kind, strlen(o->err_kind));
    sp.status = o->status >= 500 ? SPAN_STATUS_ERROR : SPAN_STATUS_UNSET;
    tracer_submit(q->w->gw->tracer, &sp);
}

const struct pl_module mod_trace = {
    .name = "trace",
    .phase = PH_NONE,
    .on_finish = trace_finish,
    .config = &tracing_section,
};
