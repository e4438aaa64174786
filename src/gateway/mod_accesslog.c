/* mod_accesslog.c — one JSON access-log line per API request
 * (doc/observability.md lists the fields). */
#include "accesslog.h"
#include "gateway.h"
#include "module.h"

static void accesslog_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct alog_worker *al = q->w->alog;
    if (!al)
        return;
    http_req *r = q->http;
    char tid[33];
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        tid[i * 2] = hex[q->tc.trace_id[i] >> 4];
        tid[i * 2 + 1] = hex[q->tc.trace_id[i] & 15];
    }
    tid[32] = '\0';
    uint64_t now = mono_ns();
    struct access_record a = {
        .ts = (double)q->start_unix_ns / 1e9,
        .request_id = r->reqid, .request_id_len = r->reqid_len,
        .method = r->method_name, .method_len = r->method_len,
        .path = r->path, .path_len = r->path_len,
        .client = r->peer,
        .model = q->m0 ? q->m0->cfg->name : NULL,
        .served_model = q->m ? q->m->cfg->name : NULL,
        .variant = q->m && q->m0 ? (q->m != q->m0 ? "fallback" : "primary") : NULL,
        .backend = o->be ? o->be->cfg->name : NULL,
        .status = o->status,
        .stream = q->stream,
        .latency_ms = (double)(now - r->t_start_ns) / 1e6,
        .ttft_ms = o->t_first_token ? (double)(o->t_first_token - r->t_ready_ns) / 1e6 : -1,
        .overhead_us = (double)q->ovh_ns / 1e3,
        .tokens_in = o->tokens_in, .tokens_out = o->tokens_out, .tokens_estimated = o->tokens_estimated,
        .cost_usd = o->cost_usd,
        .attempts = o->attempts,
        .error = o->err_kind,
        .shadowed = q->mirrored,
        .trace_id = q->tc.flags || q->has_parent || q->w->gw->tracer ? tid : NULL,
        .prompt = q->body, .prompt_len = q->body_len,
    };
    accesslog_write(al, &a);
}

const struct pl_module mod_accesslog = {
    .name = "accesslog",
    .phase = PH_NONE,
    .on_finish = accesslog_finish,
};
