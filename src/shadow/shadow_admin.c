/* shadow_admin.c — the shadows' admin API and metrics.
 *
 *   GET  /admin/shadows                    every shadow: state, counters, latest analysis
 *   GET  /admin/shadows/NAME               one shadow
 *   GET  /admin/shadows/NAME/report        the latest analysis (?format=json|text)
 *   POST /admin/shadows/NAME/start|pause|stop
 *
 * The analysis itself runs on the recorder's thread every
 * analysis.interval; these handlers only copy its latest result, so they
 * never touch the database from a worker's loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shadow_admin.h"

#include "gateway.h"
#include "judge.h"
#include "metrics.h"
#include "module.h"
#include "router.h"
#include "recorder.h"
#include "shadow.h"

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)


static void render_one(struct buf *b, struct shadow_rt *sh, bool with_analysis)
{
    const struct config_shadow *c = sh->cfg;
    int st = atomic_load(&sh->state);
    buf_append_str(b, "{\"name\":");
    json_buf_str(b, c->name);
    buf_append_str(b, ",\"model\":");
    json_buf_str(b, sh->model->cfg->name);
    buf_append_str(b, ",\"target\":");
    json_buf_str(b, sh->target->cfg->name);
    buf_printf(b, ",\"state\":\"%s\",\"reason\":", shadow_state_names_rt[st]);
    pthread_mutex_lock(&sh->lock);
    json_buf_str(b, sh->reason);
    char *live = with_analysis && sh->live_json ? strdup(sh->live_json) : NULL;
    double at = sh->live_at;
    pthread_mutex_unlock(&sh->lock);
    buf_printf(b, ",\"sample_percent\":%g,\"aa_percent\":%g,\"max_concurrent\":%u,\"in_flight\":%d", c->sample_percent,
               c->aa_percent, c->max_concurrent, atomic_load(&sh->inflight));
    uint64_t dropped = 0;
    for (int d = 0; d < DROP__COUNT; d++)
        dropped += LD(sh->dropped[d]);
    buf_printf(b, ",\"counters\":{\"mirrored\":%llu,\"stored\":%llu,\"dropped\":%llu,\"dropped_by_reason\":{",
               (unsigned long long)LD(sh->mirrored), (unsigned long long)LD(sh->stored), (unsigned long long)dropped);
    for (int d = 0; d < DROP__COUNT; d++)
        buf_printf(b, "%s\"%s\":%llu", d ? "," : "", shadow_drop_names[d], (unsigned long long)LD(sh->dropped[d]));
    buf_append_str(b, "},\"skipped_by_reason\":{");
    for (int k = 0; k < SKIP__COUNT; k++)
        buf_printf(b, "%s\"%s\":%llu", k ? "," : "", shadow_skip_names[k], (unsigned long long)LD(sh->skipped[k]));
    buf_append_str(b, "},\"legs\":{");
    for (int l = 0; l < LEG__COUNT; l++) {
        buf_printf(b, "%s\"%s\":{", l ? "," : "", shadow_leg_names[l]);
        for (int o = 0; o < OUT__COUNT; o++)
            buf_printf(b, "%s\"%s\":%llu", o ? "," : "", shadow_outcome_names[o],
                       (unsigned long long)LD(sh->legs[l][o]));
        buf_append_str(b, "}");
    }
    buf_append_str(b, "}}");
    if (with_analysis) {
        if (live) {
            size_t n = strlen(live);
            while (n && (live[n - 1] == '\n' || live[n - 1] == ' '))
                n--;
            buf_printf(b, ",\"analysis_at\":%.3f,\"analysis\":", at);
            buf_append(b, live, n);
        } else {
            buf_append_str(b, ",\"analysis_at\":null,\"analysis\":null");
        }
    }
    free(live);
    buf_append_str(b, "}");
}

/* Does the query string hold exactly the parameter kv ("format=json")? */
static bool query_has(const http_req *r, const char *kv)
{
    const char *q = r->path + r->path_len, *end = r->url + r->url_len;
    size_t n = strlen(kv);
    while (q < end) {
        q++; /* '?' or '&' */
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *seg_end = amp ? amp : end;
        if ((size_t)(seg_end - q) == n && memcmp(q, kv, n) == 0)
            return true;
        q = seg_end;
    }
    return false;
}

int shadow_admin(struct worker *w, http_req *r)
{
    struct gateway *gw = w->gw;
    bool get = r->method == HTTP_M_GET || r->method == HTTP_M_HEAD, post = r->method == HTTP_M_POST;
    struct buf b = { 0 };
    const char *p, *action;
    size_t nl, al;
    int below = route_below(r, sizeof "/admin/shadows" - 1, &p, &nl, &action, &al);
    if (below == 0) {
        if (!get) {
            http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                               "Method not allowed on /admin/shadows (allowed: GET, HEAD).");
            return 405;
        }
        buf_printf(&b, "{\"recorder_queue\":%zu,\"recorder_queue_bytes\":%llu,\"store\":", recorder_queue_depth(),
                   (unsigned long long)recorder_queue_bytes());
        json_buf_str(&b, gw->cfg->store.path);
        buf_append_str(&b, ",\"shadows\":[");
        for (size_t i = 0; i < gw->nshadows; i++) {
            if (i)
                buf_append_str(&b, ",");
            render_one(&b, &gw->shadows[i], false);
        }
        buf_append_str(&b, "]}\n");
        return http_respond_buf(r, 200, "application/json", &b);
    }
    if (below < 0)
        goto not_found;
    struct shadow_rt *sh = (struct shadow_rt *)shadow_find(gw, p, nl);
    if (!sh) {
        http_respond_error(r, 404, "invalid_request_error", "shadow_not_found", NULL, "No shadow named '%.*s'.",
                           (int)(nl > 200 ? 200 : nl), p);
        return 404;
    }
    if (al == 0) {
        if (!get)
            goto not_allowed_get;
        render_one(&b, sh, true);
        buf_append_str(&b, "\n");
        return http_respond_buf(r, 200, "application/json", &b);
    }
    if (al == 6 && memcmp(action, "report", 6) == 0) {
        if (!get)
            goto not_allowed_get;
        bool text = query_has(r, "format=text");
        if (query_has(r, "format=html")) {
            http_respond_error(r, 400, "invalid_request_error", "unsupported_format", "format",
                               "The live report is json or text; `shade report --format html` renders HTML.");
            return 400;
        }
        pthread_mutex_lock(&sh->lock);
        const char *src = text ? sh->live_text : sh->live_json;
        if (src)
            buf_append_str(&b, src);
        pthread_mutex_unlock(&sh->lock);
        if (!buf_used(&b)) {
            static const struct http_hdr ra[] = { { "retry-after", 11, "5", 1 } };
            char body[400];
            size_t bl = http_error_json(body, sizeof body, "server_error", "analysis_pending", NULL,
                                        "No analysis yet: the first one runs one analysis.interval after start.");
            http_start(r, 503, ra, 1, (int64_t)bl);
            http_write(r, body, bl);
            http_end(r);
            return 503;
        }
        return http_respond_buf(r, 200, text ? "text/plain; charset=utf-8" : "application/json", &b);
    }
    static const char *const verbs[] = { "start", "pause", "stop" };
    for (int s = 0; s < 3; s++) {
        if (al != strlen(verbs[s]) || memcmp(action, verbs[s], al) != 0)
            continue;
        if (!post) {
            http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                               "Method not allowed here (allowed: POST).");
            return 405;
        }
        recorder_set_state(sh, s, NULL, "admin API");
        render_one(&b, sh, false);
        buf_append_str(&b, "\n");
        return http_respond_buf(r, 200, "application/json", &b);
    }
not_found:
    http_respond_error(r, 404, "invalid_request_error", "unknown_url", NULL, "Invalid URL (%.*s %.*s)",
                       (int)r->method_len, r->method_name, (int)r->path_len, r->path);
    return 404;
not_allowed_get:
    http_respond_error(r, 405, "invalid_request_error", "method_not_allowed", NULL,
                       "Method not allowed here (allowed: GET, HEAD).");
    return 405;
}

/* ---------------------------------------------------------------- metrics */

/* One series: NAME{shadow="S"EXTRA} V (EXTRA: more labels, ",k=\"v\"") */
static void series(struct buf *o, const char *name, const struct shadow_rt *sh, const char *extra, uint64_t v)
{
    buf_printf(o, "%s{shadow=\"", name);
    metrics_put_label(o, sh->cfg->name);
    buf_printf(o, "\"%s} %llu\n", extra, (unsigned long long)v);
}

static void family(struct buf *o, const char *name, const char *type, const char *help)
{
    buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void shadow_metrics_render(const struct gateway *gw, struct buf *o)
{
    char ex[96];
    if (!gw->nshadows)
        return;
    family(o, "shade_shadow_mirrored_total", "counter",
           "Requests selected for shadowing; each ends as a stored pair or a drop.");
    for (size_t i = 0; i < gw->nshadows; i++)
        series(o, "shade_shadow_mirrored_total", &gw->shadows[i], "", LD(gw->shadows[i].mirrored));
    family(o, "shade_shadow_pairs_stored_total", "counter", "Pairs written to the pair store.");
    for (size_t i = 0; i < gw->nshadows; i++)
        series(o, "shade_shadow_pairs_stored_total", &gw->shadows[i], "", LD(gw->shadows[i].stored));
    family(o, "shade_shadow_dropped_total", "counter",
           "Mirrored requests that did not become a stored pair, by reason.");
    for (size_t i = 0; i < gw->nshadows; i++)
        for (int d = 0; d < DROP__COUNT; d++) {
            snprintf(ex, sizeof ex, ",reason=\"%s\"", shadow_drop_names[d]);
            series(o, "shade_shadow_dropped_total", &gw->shadows[i], ex, LD(gw->shadows[i].dropped[d]));
        }
    family(o, "shade_shadow_skipped_total", "counter", "Requests of a shadowed model not mirrored, by reason.");
    for (size_t i = 0; i < gw->nshadows; i++)
        for (int k = 0; k < SKIP__COUNT; k++) {
            snprintf(ex, sizeof ex, ",reason=\"%s\"", shadow_skip_names[k]);
            series(o, "shade_shadow_skipped_total", &gw->shadows[i], ex, LD(gw->shadows[i].skipped[k]));
        }
    family(o, "shade_shadow_legs_total", "counter",
           "Legs of mirrored requests by leg (primary, shadow, aa) and outcome.");
    for (size_t i = 0; i < gw->nshadows; i++)
        for (int l = 0; l < LEG__COUNT; l++)
            for (int k = 0; k < OUT__COUNT; k++) {
                snprintf(ex, sizeof ex, ",leg=\"%s\",outcome=\"%s\"", shadow_leg_names[l], shadow_outcome_names[k]);
                series(o, "shade_shadow_legs_total", &gw->shadows[i], ex, LD(gw->shadows[i].legs[l][k]));
            }
    family(o, "shade_shadow_in_flight", "gauge", "Shadow and A/A legs in flight.");
    for (size_t i = 0; i < gw->nshadows; i++) {
        int n = atomic_load(&gw->shadows[i].inflight);
        series(o, "shade_shadow_in_flight", &gw->shadows[i], "", n > 0 ? (uint64_t)n : 0);
    }
    family(o, "shade_shadow_state", "gauge", "Current state of each shadow (1 for the state it is in).");
    for (size_t i = 0; i < gw->nshadows; i++)
        for (int st = 0; st < 3; st++) {
            snprintf(ex, sizeof ex, ",state=\"%s\"", shadow_state_names_rt[st]);
            series(o, "shade_shadow_state", &gw->shadows[i], ex, atomic_load(&gw->shadows[i].state) == st);
        }
    if (gw->judge) {
        struct judge_stats js;
        judge_get_stats(gw->judge, &js);
        buf_printf(o, "# HELP shade_judge_calls_total Calls to judge models.\n# TYPE shade_judge_calls_total counter\n"
                      "shade_judge_calls_total %llu\n"
                      "# HELP shade_judge_judgements_total Pairs judged (both orders), any outcome.\n"
                      "# TYPE shade_judge_judgements_total counter\nshade_judge_judgements_total %llu\n"
                      "# HELP shade_judge_errors_total Judge calls that failed or gave no valid verdict.\n"
                      "# TYPE shade_judge_errors_total counter\nshade_judge_errors_total %llu\n",
                   (unsigned long long)js.calls, (unsigned long long)js.judged, (unsigned long long)js.errors);
    }
    buf_printf(o, "# HELP shade_shadow_recorder_queue Pairs waiting for the pair store's writer.\n"
                  "# TYPE shade_shadow_recorder_queue gauge\nshade_shadow_recorder_queue %zu\n"
                  "# HELP shade_shadow_recorder_queue_bytes Bytes held by pairs waiting for or being written by the "
                  "pair store's writer.\n"
                  "# TYPE shade_shadow_recorder_queue_bytes gauge\nshade_shadow_recorder_queue_bytes %llu\n",
               recorder_queue_depth(), (unsigned long long)recorder_queue_bytes());
}

/* ---------- the module (modules.c): its endpoints and metrics ---------- */

static const struct route shadow_admin_routes[] = {
    { ROUTE_ANY, "/admin/shadows", true, true, shadow_admin },
};

const struct pl_module mod_shadow_admin = {
    .name = "shadow_admin",
    .phase = PH_NONE,
    .routes = shadow_admin_routes,
    .nroutes = sizeof shadow_admin_routes / sizeof shadow_admin_routes[0],
    .metrics_render = shadow_metrics_render,
};
