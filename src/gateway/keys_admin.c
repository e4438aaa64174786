/* keys_admin.c — the module mod_keys: /admin/keys… (behind the admin key)
 * and the keys' metrics (doc/keys.md).
 *
 *   POST   /admin/keys               create: 201 with the secret, shown only here
 *   GET    /admin/keys               every key (never a secret or a digest)
 *   GET    /admin/keys/ID            one key
 *   POST   /admin/keys/ID/revoke     (also DELETE /admin/keys/ID)
 *   POST   /admin/keys/ID/rotate     a new secret for the same key: 200 with it
 *   GET    /admin/keys/ID/usage      the ledger per day and model (?days=N, default 30)
 *
 * A write is one small SQLite transaction on the worker (admin operations
 * are rare; a busy timeout bounds it), which bumps key_meta.version; the
 * key is then put in this process's table at once, and every other serving
 * process sees the version move within its next poll.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "buf.h"
#include "config.h"
#include "gateway.h"
#include "httpd.h"
#include "keys.h"
#include "keys_spec.h"
#include "keys_store.h"
#include "module.h"
#include "router.h"

#define ADMIN_BUSY_MS 2000   /* the longest a write waits for another writer */

static int error(http_req *r, int status, const char *code, const char *param, const char *msg)
{
    http_respond_error(r, status, status >= 500 ? "server_error" : "invalid_request_error", code, param, "%s", msg);
    return status;
}

static int not_allowed(http_req *r, const char *allowed)
{
    char msg[160];
    snprintf(msg, sizeof msg, "Method %.*s is not allowed here (allowed: %s).", (int)r->method_len, r->method_name,
             allowed);
    return error(r, 405, "method_not_allowed", NULL, msg);
}

static int store_error(http_req *r, sqlite3 *db)
{
    char msg[300];
    snprintf(msg, sizeof msg, "The key store could not be used: %s.", ks_errmsg(db));
    return error(r, 500, "store_error", NULL, msg);
}

static sqlite3 *open_store(struct worker *w, http_req *r, int *status)
{
    sqlite3 *db = NULL;
    char err[512];
    if (ks_open(w->gw->cfg->store.path, ADMIN_BUSY_MS, false, &db, err, sizeof err) < 0) {
        *status = error(r, 500, "store_error", NULL, err);
        return NULL;
    }
    return db;
}

static bool json_content(const http_req *r)
{
    const struct http_hdr *h = http_req_header(r, "content-type");
    if (!h)
        return true; /* none said: read as JSON */
    size_t n = h->value_len;
    while (n && (h->value[n - 1] == ' ' || h->value[n - 1] == '\t'))
        n--;
    if (n < 16 || strncasecmp(h->value, "application/json", 16) != 0)
        return false;
    return n == 16 || h->value[16] == ';' || h->value[16] == ' ';
}

static bool config_key_named(const struct config *cfg, const char *name)
{
    const struct config_auth *a = auth_config(cfg);
    for (size_t i = 0; a && i < a->nkeys; i++)
        if (strcmp(a->keys[i].name, name) == 0)
            return true;
    return false;
}

static int respond_key(http_req *r, int status, const struct ks_key *k, const char *secret)
{
    struct buf b = { 0 };
    ks_key_json(&b, k, (int64_t)time(NULL), secret);
    buf_append_str(&b, "\n");
    return http_respond_buf(r, status, "application/json", &b);
}

static int create(struct worker *w, http_req *r)
{
    if (!json_content(r))
        return error(r, 415, "unsupported_media_type", NULL,
                     "The body must be JSON: send 'Content-Type: application/json'.");
    if (r->body_len > KS_BODY_MAX)
        return error(r, 413, "request_too_large", NULL, "The body is over 64 KiB.");
    int64_t now = (int64_t)time(NULL);
    struct key_spec spec;
    struct key_spec_error e;
    if (key_spec_parse(r->body, r->body_len, now, &spec, &e) < 0) {
        http_respond_error(r, 400, "invalid_request_error", e.code, e.param[0] ? e.param : NULL, "%s", e.message);
        return 400;
    }
    if (config_key_named(w->gw->cfg, spec.name)) {
        char msg[300];
        snprintf(msg, sizeof msg, "A key in the configuration (auth.keys) is named '%s'; choose another name.",
                 spec.name);
        key_spec_free(&spec);
        return error(r, 409, "key_name_taken", "name", msg);
    }
    int status = 0;
    sqlite3 *db = open_store(w, r, &status);
    if (!db) {
        key_spec_free(&spec);
        return status;
    }
    struct ks_key k;
    char secret[KS_SECRET_LEN + 1];
    int rc = ks_create(db, &spec, now, &k, secret);
    if (rc == KS_CONFLICT) {
        char msg[300];
        snprintf(msg, sizeof msg, "A live key is already named '%s': rotate it, or revoke it first.", spec.name);
        status = error(r, 409, "key_name_taken", "name", msg);
    } else if (rc != KS_OK) {
        status = store_error(r, db);
    } else {
        status = respond_key(r, 201, &k, secret);
        keys_apply(&k);
    }
    memset(secret, 0, sizeof secret);
    ks_key_free(&k);
    key_spec_free(&spec);
    ks_close(db);
    return status;
}

struct list_ctx {
    struct buf *b;
    int64_t now;
    size_t n;
};

static int list_one(struct ks_key *k, void *arg)
{
    struct list_ctx *c = arg;
    if (c->n++)
        buf_append_str(c->b, ",");
    ks_key_json(c->b, k, c->now, NULL);
    return 0;
}

static int list(struct worker *w, http_req *r)
{
    int status = 0;
    sqlite3 *db = open_store(w, r, &status);
    if (!db)
        return status;
    struct buf b = { 0 };
    struct list_ctx c = { &b, (int64_t)time(NULL), 0 };
    buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    if (ks_each(db, 0, list_one, &c) < 0) {
        buf_free(&b);
        status = store_error(r, db);
    } else {
        buf_append_str(&b, "]}\n");
        status = http_respond_buf(r, 200, "application/json", &b);
    }
    ks_close(db);
    return status;
}

/* ?days=N (1..366), default 30; -1 when malformed. */
static int days_param(const http_req *r)
{
    const char *q = r->path + r->path_len, *end = r->url + r->url_len;
    int days = 30;
    while (q < end) {
        q++; /* '?' or '&' */
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *seg = amp ? amp : end;
        if (seg - q > 5 && memcmp(q, "days=", 5) == 0) {
            int v = 0;
            for (const char *p = q + 5; p < seg; p++) {
                if (*p < '0' || *p > '9' || v > 1000)
                    return -1;
                v = v * 10 + (*p - '0');
            }
            if (v < 1 || v > 366)
                return -1;
            days = v;
        }
        q = seg;
    }
    return days;
}

struct usage_ctx {
    struct buf *b;
    struct ks_usage t;
};

static int usage_row(const struct ks_spend *s, void *arg)
{
    struct usage_ctx *c = arg;
    ks_usage_row(c->b, &c->t, s);
    return 0;
}

static int usage(http_req *r, sqlite3 *db, const char *id, const char *name, const struct key_budget *budget)
{
    int days = days_param(r);
    if (days < 0)
        return error(r, 400, "invalid_value", "days", "Invalid 'days': expected an integer from 1 to 366.");
    int64_t now = (int64_t)time(NULL), from = now / 86400 - (days - 1);
    char d0[11];
    ks_day_str(from, d0);
    struct buf b = { 0 };
    buf_printf(&b, "{\"object\":\"key_usage\",\"id\":");
    json_buf_str(&b, id);
    buf_append_str(&b, ",\"name\":");
    json_buf_str(&b, name);
    buf_printf(&b, ",\"days\":%d,\"from\":\"%s\",\"data\":[", days, d0);
    struct usage_ctx c = { .b = &b };
    if (ks_spend_each(db, id, from, usage_row, &c) < 0) {
        buf_free(&b);
        return store_error(r, db);
    }
    buf_append_str(&b, "],");
    ks_usage_total(&b, &c.t);
    /* the budget's period as this process counts it (the ledger plus what it
     * has not written yet) */
    struct key_rec probe = { .id = (char *)id, .budget = *budget };
    buf_printf(&b, ",\"budget\":{\"period\":\"%s\",\"usd\":%.9g,\"soft_usd\":%.9g,\"spent_usd\":%.9g}}\n",
               key_period_names[budget->period % 3], budget->usd, budget->soft_usd,
               keys_period_spend(&probe, now));
    return http_respond_buf(r, 200, "application/json", &b);
}

/* A config key's usage: "cfg:NAME". */
static int config_usage(struct worker *w, http_req *r, sqlite3 *db, const char *id)
{
    const struct config_auth *a = auth_config(w->gw->cfg);
    for (size_t i = 0; a && i < a->nkeys; i++)
        if (strcmp(a->keys[i].name, id + 4) == 0)
            return usage(r, db, id, a->keys[i].name, &a->keys[i].budget);
    return 0;
}

static int keys_admin(struct worker *w, http_req *r)
{
    bool get = r->method == HTTP_M_GET || r->method == HTTP_M_HEAD, post = r->method == HTTP_M_POST,
         del = r->method == HTTP_M_DELETE;
    /* with virtual keys off, the ledger may still run (every key's spend):
     * only a config key's usage is answered then */
    const struct config_auth *ac = auth_config(w->gw->cfg);
    bool vk = keys_running() && ac && ac->virtual_keys;
    static const char off[] = "Virtual keys are off in this gateway: set auth.virtual_keys: true in its configuration.";
    if (!keys_running())
        return error(r, 404, "virtual_keys_off", NULL, off);
    const char *p, *action;
    size_t nl, al;
    int below = route_below(r, sizeof "/admin/keys" - 1, &p, &nl, &action, &al);
    if (below == 0 && !vk)
        return error(r, 404, "virtual_keys_off", NULL, off);
    if (below == 0)
        return get ? list(w, r) : post ? create(w, r) : not_allowed(r, "GET, HEAD, POST");
    char id[64];
    if (below < 0 || nl == 0 || nl >= sizeof id || memchr(p, 0, nl)) {
        http_respond_error(r, 404, "invalid_request_error", "unknown_url", NULL, "Invalid URL (%.*s %.*s)",
                           (int)r->method_len, r->method_name, (int)(r->path_len > 200 ? 200 : r->path_len),
                           r->path);
        return 404;
    }
    memcpy(id, p, nl);
    id[nl] = 0;
    enum { SHOW, REVOKE, ROTATE, USAGE } op;
    if (al == 0) {
        if (!get && !del)
            return not_allowed(r, "GET, HEAD, DELETE");
        op = del ? REVOKE : SHOW;
    } else if (al == 6 && memcmp(action, "revoke", 6) == 0) {
        if (!post)
            return not_allowed(r, "POST");
        op = REVOKE;
    } else if (al == 6 && memcmp(action, "rotate", 6) == 0) {
        if (!post)
            return not_allowed(r, "POST");
        op = ROTATE;
    } else if (al == 5 && memcmp(action, "usage", 5) == 0) {
        if (!get)
            return not_allowed(r, "GET, HEAD");
        op = USAGE;
    } else {
        http_respond_error(r, 404, "invalid_request_error", "unknown_url", NULL, "Invalid URL (%.*s %.*s)",
                           (int)r->method_len, r->method_name, (int)(r->path_len > 200 ? 200 : r->path_len),
                           r->path);
        return 404;
    }
    if (!vk && !(op == USAGE && strncmp(id, "cfg:", 4) == 0))
        return error(r, 404, "virtual_keys_off", NULL, off);
    int status = 0;
    sqlite3 *db = open_store(w, r, &status);
    if (!db)
        return status;
    if (op == USAGE && strncmp(id, "cfg:", 4) == 0 && (status = config_usage(w, r, db, id)) != 0) {
        ks_close(db);
        return status;
    }
    struct ks_key k;
    char secret[KS_SECRET_LEN + 1] = "";
    int64_t now = (int64_t)time(NULL);
    int rc = op == REVOKE ? ks_revoke(db, id, now, &k)
             : op == ROTATE ? ks_rotate(db, id, now, &k, secret)
                            : ks_get(db, id, &k);
    if (rc == KS_NOT_FOUND) {
        char msg[120];
        snprintf(msg, sizeof msg, "No key has the id '%.64s'.", id);
        status = error(r, 404, "key_not_found", NULL, msg);
    } else if (rc == KS_CONFLICT) {
        status = error(r, 409, "key_revoked", NULL, "The key is revoked: it cannot be rotated.");
    } else if (rc != KS_OK) {
        status = store_error(r, db);
    } else if (op == USAGE) {
        status = usage(r, db, k.id, k.spec.name, &k.spec.budget);
    } else {
        status = respond_key(r, 200, &k, op == ROTATE ? secret : NULL);
        if (op != SHOW)
            keys_apply(&k);
    }
    memset(secret, 0, sizeof secret);
    if (rc == KS_OK)
        ks_key_free(&k);
    ks_close(db);
    return status;
}

static void keys_metrics(const struct gateway *gw, struct buf *o)
{
    if (auth_on(auth_config(gw->cfg)))
        keys_render_metrics(o);
}

static const struct route keys_routes[] = {
    { ROUTE_ANY, "/admin/keys", true, true, keys_admin },
};

const struct pl_module mod_keys = {
    .name = "keys",
    .phase = PH_NONE,
    .routes = keys_routes,
    .nroutes = sizeof keys_routes / sizeof keys_routes[0],
    .metrics_render = keys_metrics,
};
