/* mod_accesslog.c — one JSON access-log line per API request
 * (doc/observability.md lists the fields): its config section (access_log:),
 * its per-worker buffer, its line at finish. */
#include "mod_accesslog.h"

#include "accesslog.h"
#include "config_schema.h"
#include "gateway.h"
#include "module.h"

#define S struct config_access_log
static const struct field access_log_fields[] = {
    STR(S, "path", path, 0, 1, 4096, NULL, NULL),
    BOOL(S, "prompts", prompts, "false"),
    SIZE(S, "buffer", buffer_bytes, 0, 16777216, "32KiB"),
    DUR(S, "flush", flush_ms, "1s"),
};
static const struct section access_log_section =
    SECTION("access_log", "in access_log", access_log_fields, S, NULL, NULL);
#undef S

const struct config_access_log *accesslog_config(const struct config *cfg)
{
    static const struct config_access_log off; /* a config loaded without this module */
    const struct config_access_log *c = pl_config(cfg, &mod_accesslog);
    return c ? c : &off;
}

struct alog_worker *accesslog_worker(const struct worker *w) { return pl_slot(&w->mods, &mod_accesslog); }

/* the worker's buffer, when the serving process opened the log */
static int accesslog_worker_init(struct worker *w, void **slot)
{
    if (!w->gw->alog)
        return 0;
    *slot = accesslog_worker_new(w->gw->alog, w->loop);
    return *slot ? 0 : -1;
}

/* the last lines, before the worker's loop goes */
static void accesslog_worker_done(struct worker *w, void *slot) { accesslog_worker_free(slot); }

static void accesslog_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)
{
    struct alog_worker *al = accesslog_worker(q->w);
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
        .model = !q->m0 ? NULL : q->renamed && q->m0->canary_of ? q->m0->canary_of->cfg->name : q->m0->cfg->name,
        .served_model = q->m ? q->m->cfg->name : NULL,
        .variant = q->m && q->m0 ? (q->m != q->m0                          ? "fallback"
                                    : q->renamed && q->m0->canary_of ? "canary"
                                    : q->experiment && q->variant    ? q->variant /* the arm's name */
                                                                     : "primary")
                                 : NULL,
        .backend = o->be ? o->be->cfg->name : NULL,
        .key = q->key_name,
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
    .config = &access_log_section,
    .worker_init = accesslog_worker_init,
    .worker_free = accesslog_worker_done,
};
