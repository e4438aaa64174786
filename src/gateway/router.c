/* router.c — the endpoint table, and the small endpoints that are not a
 * pipeline: models, health, readiness, metrics, backends, reload.  The API
 * pipeline is proxy.c; modules bring their own rows (pl_module.routes: the
 * shadows' admin API is shadow_admin.c's).
 *
 * Order of checks, the same for every row: path (404), admin key (401),
 * method (405) — so a wrong key learns nothing about which methods a path
 * takes.  Every /admin/ path needs the key, even one that does not exist.
 */
#include "router.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "accesslog.h"
#include "buf.h"
#include "config.h"
#include "gateway.h"
#include "health.h"
#include "metrics.h"
#include "mod_accesslog.h"
#include "prometheus.h"
#include "proxy.h"
#include "module.h"
#include "trace.h"

/* A response shade made itself (no model): metrics and the access log. */
static void count_local(struct worker *w, http_req *r, int status)
{
    size_t key = metrics_key(&w->gw->lay, -1, -1);
    met_add(&w->met->requests[key][status - 100], 1);
    struct alog_worker *al = accesslog_worker(w);
    if (!al)
        return;
    struct access_record a = {
        .ts = (double)(trace_unix_ns() - (mono_ns() - r->t_start_ns)) / 1e9,
        .request_id = r->reqid, .request_id_len = r->reqid_len,
        .method = r->method_name, .method_len = r->method_len,
        .path = r->path, .path_len = r->path_len,
        .client = r->peer,
        .status = status,
        .latency_ms = (double)(mono_ns() - r->t_start_ns) / 1e6,
        .ttft_ms = -1, .overhead_us = -1, .tokens_in = -1, .tokens_out = -1, .cost_usd = -1,
    };
    accesslog_write(al, &a);
}

/* ---------- endpoints ---------- */

static int chat(struct worker *w, http_req *r)
{
    api_request(w, r, EP_CHAT);
    return 0;
}

static int completions(struct worker *w, http_req *r)
{
    api_request(w, r, EP_COMPLETIONS);
    return 0;
}

static int embeddings(struct worker *w, http_req *r)
{
    api_request(w, r, EP_EMBEDDINGS);
    return 0;
}

static int models(struct worker *w, http_req *r)
{
    count_local(w, r, 200);
    http_respond(r, 200, "application/json", w->gw->models_json, w->gw->models_json_len);
    return 0;
}

static int healthz(struct worker *w, http_req *r)
{
    count_local(w, r, 200);
    http_respond(r, 200, "application/json", "{\"status\":\"ok\"}\n", 16);
    return 0;
}

static int readyz(struct worker *w, http_req *r)
{
    bool ok = !atomic_load(&w->gw->draining) && gateway_ready(w->gw, loop_now(w->loop));
    count_local(w, r, ok ? 200 : 503);
    if (ok)
        http_respond(r, 200, "application/json", "{\"status\":\"ready\"}\n", 19);
    else
        http_respond(r, 503, "application/json", "{\"status\":\"not ready\"}\n", 23);
    return 0;
}

static int metrics(struct worker *w, http_req *r)
{
    count_local(w, r, 200);
    struct buf b = { 0 };
    prometheus_render(w->gw, &b);
    http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf_data(&b), buf_used(&b));
    buf_free(&b);
    return 0;
}

static int admin_backends(struct worker *w, http_req *r)
{
    struct buf b = { 0 };
    health_render_admin(w->gw, &b, loop_now(w->loop));
    count_local(w, r, 200);
    http_respond(r, 200, "application/json", buf_data(&b), buf_used(&b));
    buf_free(&b);
    return 0;
}

/* POST /admin/reload: check the file now, so the caller learns of an error
 * (this reads the file and resolves host names on the worker's loop: an
 * admin action, not a request path), then ask the master to reload. */
static int admin_reload(struct worker *w, http_req *r)
{
    struct config *cfg = NULL;
    char err[1024];
    if (config_load(w->gw->cfg->path, &cfg, err, sizeof err) < 0) {
        count_local(w, r, 400);
        http_respond_error(r, 400, "invalid_request_error", "invalid_config", NULL, "%s", err);
        return 0;
    }
    config_free(cfg);
    if (getppid() <= 1 || kill(getppid(), SIGHUP) < 0) {
        count_local(w, r, 500);
        http_respond_error(r, 500, "server_error", NULL, NULL, "no master process to reload");
        return 0;
    }
    count_local(w, r, 202);
    http_respond(r, 202, "application/json", "{\"status\":\"reloading\"}\n", 23);
    return 0;
}

static int unknown_url(struct worker *w, http_req *r)
{
    count_local(w, r, 404);
    http_respond_error(r, 404, "invalid_request_error", "unknown_url", NULL, "Invalid URL (%.*s %.*s)",
                       (int)r->method_len, r->method_name, (int)r->path_len, r->path);
    return 0;
}

/* ---------- the table ---------- */

#define GET_HEAD (ROUTE_GET | ROUTE_HEAD)

/* First match wins; rows are disjoint except the /admin/ catch-all, last. */
static const struct route routes[] = {
    /* methods     path                     prefix admin  handler */
    { ROUTE_POST,  "/v1/chat/completions",  false, false, chat },
    { ROUTE_POST,  "/v1/completions",       false, false, completions },
    { ROUTE_POST,  "/v1/embeddings",        false, false, embeddings },
    { GET_HEAD,    "/v1/models",            false, false, models },
    { GET_HEAD,    "/healthz",              false, false, healthz },
    { GET_HEAD,    "/readyz",               false, false, readyz },
    { GET_HEAD,    "/metrics",              false, false, metrics },
    { GET_HEAD,    "/admin/backends",       false, true,  admin_backends },
    { ROUTE_POST,  "/admin/reload",         false, true,  admin_reload },
};
/* after the modules' rows (modules.c): every other /admin/ path needs the
 * key too, so a wrong key learns nothing about which ones exist */
static const struct route admin_catch_all = { ROUTE_ANY, "/admin/", true, true, unknown_url };

/* ---------- dispatch ---------- */

static bool matches(const struct route *rt, const http_req *r)
{
    size_t n = strlen(rt->path);
    if (r->path_len < n || memcmp(r->path, rt->path, n) != 0)
        return false;
    if (r->path_len == n)
        return true;
    return rt->prefix && (rt->path[n - 1] == '/' || r->path[n] == '/');
}

static unsigned method_bit(const http_req *r)
{
    switch (r->method) {
    case HTTP_M_GET: return ROUTE_GET;
    case HTTP_M_HEAD: return ROUTE_HEAD;
    case HTTP_M_POST: return ROUTE_POST;
    default: return 0;
    }
}

static void not_allowed(struct worker *w, http_req *r, unsigned methods)
{
    static const struct { unsigned bit; const char *name; } names[] = {
        { ROUTE_GET, "GET" }, { ROUTE_HEAD, "HEAD" }, { ROUTE_POST, "POST" },
    };
    char allow[32] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (methods & names[i].bit)
            snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s", allow[0] ? ", " : "",
                     names[i].name);
    count_local(w, r, 405);
    char msg[200];
    snprintf(msg, sizeof msg, "Method %.*s is not allowed on %.*s (allowed: %s).", (int)r->method_len,
             r->method_name, (int)r->path_len, r->path, allow);
    /* RFC 9110 15.5.6: a 405 names the methods the resource supports */
    char body[1024];
    size_t n = http_error_json(body, sizeof body, "invalid_request_error", "method_not_allowed", NULL, msg);
    struct http_hdr h[2] = { { "content-type", 12, "application/json", 16 }, { "allow", 5, allow, strlen(allow) } };
    http_start(r, 405, h, 2, (int64_t)n);
    http_write(r, body, n);
    http_end(r);
}

/* With admin.key_env set, /admin/ needs the key: "Authorization: Bearer
 * KEY" or "x-shade-admin-key: KEY" (compared in constant time). */
static bool admin_allowed(struct worker *w, http_req *r)
{
    const char *key = w->gw->cfg->admin.key;
    if (!key)
        return true;
    const struct http_hdr *h = http_req_header(r, "x-shade-admin-key");
    const char *v = h ? h->value : NULL;
    size_t vl = h ? h->value_len : 0;
    if (!h && (h = http_req_header(r, "authorization")) && h->value_len > 7 &&
        strncasecmp(h->value, "bearer ", 7) == 0) {
        v = h->value + 7;
        vl = h->value_len - 7;
    }
    size_t kl = strlen(key);
    unsigned char diff = v && vl == kl ? 0 : 1;
    for (size_t i = 0; v && i < kl && vl == kl; i++)
        diff |= (unsigned char)(v[i] ^ key[i]);
    if (!diff)
        return true;
    met_add(&w->met->admin_auth_failures, 1);
    count_local(w, r, 401);
    http_respond_error(r, 401, "invalid_request_error", v ? "invalid_admin_key" : "admin_key_required", NULL,
                       v ? "The admin key is not valid." :
                           "This endpoint needs the admin key (Authorization: Bearer KEY or x-shade-admin-key).");
    return false;
}

int route_below(const http_req *r, size_t prefix_len, const char **name, size_t *nl, const char **action,
                size_t *al)
{
    const char *p = r->path + prefix_len;
    size_t n = r->path_len - prefix_len;
    if (n == 0 || (n == 1 && p[0] == '/'))
        return 0;
    if (p[0] != '/')
        return -1;
    p++, n--;
    const char *slash = memchr(p, '/', n);
    *name = p;
    *nl = slash ? (size_t)(slash - p) : n;
    *action = slash ? slash + 1 : "";
    *al = slash ? n - *nl - 1 : 0;
    return 1;
}

void route_handle(http_req *r, void *arg)
{
    struct worker *w = arg;
    const struct route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && !rt; i++)
        if (matches(&routes[i], r))
            rt = &routes[i];
    for (size_t m = 0; m < pl_nmodules && !rt; m++)
        for (size_t i = 0; i < pl_modules[m]->nroutes && !rt; i++)
            if (matches(&pl_modules[m]->routes[i], r))
                rt = &pl_modules[m]->routes[i];
    if (!rt && matches(&admin_catch_all, r))
        rt = &admin_catch_all;
    if (!rt) {
        unknown_url(w, r);
        return;
    }
    if (rt->admin && !admin_allowed(w, r))
        return;
    if (rt->methods != ROUTE_ANY && !(rt->methods & method_bit(r))) {
        not_allowed(w, r, rt->methods);
        return;
    }
    int status = rt->handler(w, r);
    if (status)
        count_local(w, r, status);
}
