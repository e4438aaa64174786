/* auth.c — API keys and brute-force lockout: the module mod_auth (phase
 * AUTH), with its own config section `auth:` (doc/keys.md).
 *
 *   keys       from the config, each from an environment variable; kept
 *              only as SHA-256 digests, compared in constant time.  A
 *              client sends `Authorization: Bearer KEY`, `api-key` or
 *              `x-api-key` (as the SDKs do).  A key may be limited to some
 *              models.  Once auth is on, the client's key is never sent
 *              upstream (a backend gets its own `api_key_env`, or nothing,
 *              unless it sets `pass_client_key`).
 *   lockout    per client IP: `failures` failed authentications within
 *              `window` ban the address for `ban`, doubled at each new ban
 *              up to `ban_max`; a success never clears the count.  The
 *              address is the peer's, or — only when the peer is in
 *              `trusted_proxies` — the nearest untrusted address of
 *              X-Forwarded-For.
 *
 * Errors are OpenAI objects: 401 invalid_api_key (no key, or an unknown
 * one), 403 model_not_allowed, 429 too_many_auth_failures with Retry-After
 * while banned.
 */
#include "auth.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "config_schema.h"
#include "gateway.h"
#include "loop.h"
#include "metrics.h"
#include "module.h"
#include "rand.h"
#include "state.h"

extern const struct pl_module mod_auth;

/* ---------------------------------------------------------------- config */

static int check_key_env(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    struct config_auth_key *k = base;
    char *secret = NULL;
    if (config_env(ld, f, at, k->key_env, &secret) < 0)
        return -1;
    unsigned int len = 0;
    int ok = EVP_Digest(secret, strlen(secret), k->digest, &len, EVP_sha256(), NULL) && len == 32;
    OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
    return ok ? 0 : config_fail(ld, at, "\"key_env\": cannot hash the key");
}

#define S struct key_limits
static const struct field limit_fields[] = {
    UINT(S, "rpm", rpm, 0, 100000000, NULL),
    UINT(S, "tpm", tpm, 0, 2000000000, NULL),
    UINT(S, "concurrency", concurrency, 0, 1000000, NULL),
};
static const struct section limit_section = SECTION("limits", "in limits", limit_fields, S, NULL, NULL);
#undef S

#define S struct key_model_limits
static const struct field mlimit_fields[] = {
    STR(S, "model", model, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 256, NULL, NULL),
    UINT(S, "rpm", lim.rpm, 0, 100000000, NULL),
    UINT(S, "tpm", lim.tpm, 0, 2000000000, NULL),
    UINT(S, "concurrency", lim.concurrency, 0, 1000000, NULL),
};
static const struct section mlimit_section = SECTION("model limit", "in model_limits", mlimit_fields, S, NULL, NULL);
#undef S

static const char *const period_names[] = { "day", "week", "month", NULL };
#define S struct key_budget
static const struct field budget_fields[] = {
    NUM(S, "usd", usd, 0, 1e9, NULL),
    NUM(S, "soft_usd", soft_usd, 0, 1e9, NULL),
    ENUM(S, "period", period, period_names, "day"),
};
static const struct section budget_section = SECTION("budget", "in budget", budget_fields, S, NULL, NULL);
#undef S

static const char *const priority_names[] = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", NULL };
#define S struct config_auth_key
static const struct field key_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "key_env", key_env, F_REQUIRED | F_TOKEN, 1, 256, check_key_env, NULL),
    STRLIST(S, "models", models, nmodels, 256),
    MAP(S, "limits", limits, limit_section),
    LIST(S, "model_limits", model_limits, nmodel_limits, 0, 0, mlimit_section),
    MAP(S, "budget", budget, budget_section),
    CHOICE(S, "priority", priority, priority_names, NULL),
    BOOL(S, "metrics", metrics, "false"),
};
static void release_key(void *base)
{
    struct config_auth_key *k = base;
    free(k->rec);
    k->rec = NULL;
}
static const struct section key_section = SECTION("key", "in key", key_fields, S, NULL, release_key);
#undef S

static int finish_auth(struct loader *ld, const yaml_node_t *map, void *base)
{
    struct config_auth *a = base;
    const yaml_mark_t *at = map ? &map->start_mark : NULL;
    for (size_t i = 0; i < a->nkeys; i++)
        for (size_t j = 0; j < i; j++)
            if (CRYPTO_memcmp(a->keys[i].digest, a->keys[j].digest, 32) == 0)
                return config_fail(ld, at, "keys \"%s\" and \"%s\" have the same secret", a->keys[j].name,
                                   a->keys[i].name);
    a->trusted = a->ntrusted ? calloc(a->ntrusted, sizeof *a->trusted) : NULL;
    if (a->ntrusted && !a->trusted)
        return config_fail(ld, at, "out of memory");
    for (size_t i = 0; i < a->ntrusted; i++) {
        if (auth_cidr_parse(a->trusted_proxies[i], &a->trusted[i]) < 0) {
            char sb[CONFIG_SHOW_BYTES];
            return config_fail(ld, at, "\"trusted_proxies\": not an address or CIDR: %s",
                               config_show(sb, a->trusted_proxies[i], strlen(a->trusted_proxies[i])));
        }
    }
    if (a->ban_max_ms < a->ban_ms)
        return config_fail(ld, at, "\"lockout_ban_max\" is shorter than \"lockout_ban\"");
    for (size_t i = 0; i < a->nkeys; i++) {
        struct config_auth_key *k = &a->keys[i];
        if (k->budget.soft_usd && k->budget.usd && k->budget.soft_usd > k->budget.usd)
            return config_fail(ld, at, "key \"%s\": budget \"soft_usd\" is above \"usd\"", k->name);
        /* what a request holds: the config's own strings, never freed by a release */
        struct key_rec *r = calloc(1, sizeof *r + strlen(k->name) + 5);
        if (!r)
            return config_fail(ld, at, "out of memory");
        r->pinned = true;
        r->id = (char *)(r + 1);
        sprintf(r->id, "cfg:%s", k->name);
        r->name = k->name;
        memcpy(r->digest, k->digest, 32);
        r->models = k->models;
        r->nmodels = k->nmodels;
        r->lim = k->limits;
        r->mlim = k->model_limits;
        r->nmlim = k->nmodel_limits;
        r->budget = k->budget;
        r->priority = k->priority ? k->priority[0] - '0' : -1;
        r->metrics = k->metrics;
        k->rec = r;
    }
    return 0;
}

#define S struct config_auth
static const struct field auth_fields[] = {
    BOOL(S, "enabled", enabled, "true"),
    LIST(S, "keys", keys, nkeys, 0, 0, key_section),
    UINT(S, "lockout_failures", lockout_failures, 0, 1000000, "10"),
    DUR(S, "lockout_window", window_ms, "60s"),
    DUR(S, "lockout_ban", ban_ms, "60s"),
    DUR(S, "lockout_ban_max", ban_max_ms, "1h"),
    STRLIST(S, "trusted_proxies", trusted_proxies, ntrusted, 64),
    UINT(S, "default_max_tokens", default_max_tokens, 1, 10000000, "1024"),
    BOOL(S, "virtual_keys", virtual_keys, "false"),
};
static void release_auth(void *base)
{
    struct config_auth *a = base;
    free(a->trusted);
    a->trusted = NULL;
}

static const struct section auth_section = SECTION("auth", "in auth", auth_fields, S, finish_auth, release_auth);
#undef S

bool auth_on(const struct config_auth *a)
{
    return a && a->enabled && (a->nkeys || a->virtual_keys);
}

const struct config_auth *auth_config(const struct config *cfg)
{
    return pl_config(cfg, &mod_auth);
}

bool auth_listener_open(const struct config *cfg)
{
    const struct config_auth *a = auth_config(cfg);
    if (auth_on(a))
        return false;
    const struct sockaddr_storage *ss = &cfg->server.addr;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) != 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        return !IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

/* ---------------------------------------------------------------- addresses */

int auth_cidr_parse(const char *s, struct auth_cidr *c)
{
    char host[64];
    const char *slash = strchr(s, '/');
    size_t hl = slash ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, s, hl);
    host[hl] = 0;
    memset(c, 0, sizeof *c);
    int max;
    if (inet_pton(AF_INET, host, c->addr) == 1) {
        c->v6 = false;
        max = 32;
    } else if (inet_pton(AF_INET6, host, c->addr) == 1) {
        c->v6 = true;
        max = 128;
    } else {
        return -1;
    }
    c->bits = max;
    if (slash) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || b < 0 || b > max)
            return -1;
        c->bits = (int)b;
    }
    return 0;
}

/* An address as a peer or a forwarded hop writes it — "1.2.3.4",
 * "1.2.3.4:5678", "::1", "[::1]:5678" — into 16 bytes; *v6 says which. */
static bool addr_parse(const char *s, size_t n, unsigned char out[16], bool *v6)
{
    char host[64];
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    size_t colons = 0;
    for (size_t i = 0; i < n; i++)
        colons += s[i] == ':';
    if (n && s[0] == '[') { /* [v6] or [v6]:port */
        const char *e = memchr(s, ']', n);
        if (!e)
            return false;
        n = (size_t)(e - s) - 1;
        s++;
    } else if (colons == 1) { /* v4:port */
        n = (size_t)((const char *)memchr(s, ':', n) - s);
    }
    if (!n || n >= sizeof host)
        return false;
    memcpy(host, s, n);
    host[n] = 0;
    memset(out, 0, 16);
    if (inet_pton(AF_INET, host, out) == 1) {
        *v6 = false;
        return true;
    }
    if (inet_pton(AF_INET6, host, out) == 1) {
        *v6 = true;
        return true;
    }
    return false;
}

static bool cidr_has(const struct auth_cidr *c, const unsigned char a[16], bool v6)
{
    if (c->v6 != v6)
        return false;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a[full] & mask);
}

static bool trusted(const struct config_auth *a, const unsigned char addr[16], bool v6)
{
    for (size_t i = 0; a->trusted && i < a->ntrusted; i++)
        if (cidr_has(&a->trusted[i], addr, v6))
            return true;
    return false;
}

int auth_client_addr(const struct config_auth *a, const char *peer, const char *xff, size_t xff_len,
                     unsigned char out[16], bool *v6)
{
    if (!addr_parse(peer, strlen(peer), out, v6))
        return -1;
    if (!xff || !a->ntrusted || !trusted(a, out, *v6))
        return 0;
    /* from the right: the nearest address that is not a trusted proxy */
    size_t end = xff_len;
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        unsigned char x[16];
        bool xv6;
        if (!addr_parse(xff + start, end - start, x, &xv6))
            return 0; /* a malformed hop: stop at the last good one */
        memcpy(out, x, 16);
        *v6 = xv6;
        if (!trusted(a, x, xv6))
            return 0;
        end = start ? start - 1 : 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- lockout
 *
 * One record per address in the shared state (state.h), so every worker
 * and every serving process counts the same failures, and a reload neither
 * unbans an address nor forgets its count: v[0] failures in the window,
 * v[1] the window's start, v[2] bans so far, v[3] the ban's end (ms). */

static struct {
    _Atomic uint64_t failures[3], lockouts, refused;
} L;

static const char *const fail_names[3] = { "missing", "invalid", "model" };

static void addr_id(uint64_t id[2], const unsigned char a[16], bool v6)
{
    unsigned char b[17];
    memcpy(b, a, 16);
    b[16] = v6;
    st_id(id, "ban", b, sizeof b);
}

struct ban_op {
    const struct config_auth *a;
    bool fail;          /* count a failure (else only look) */
    int64_t left_ms;    /* out: the ban's time left */
    bool banned_now;    /* out: this failure started a ban */
};

static int64_t ban_update(int64_t v[4], bool fresh, int64_t now, void *arg)
{
    struct ban_op *op = arg;
    const struct config_auth *a = op->a;
    if (fresh)
        memset(v, 0, 4 * sizeof *v);
    op->left_ms = v[3] > now ? v[3] - now : 0;
    if (op->fail && !op->left_ms) {
        if (now - v[1] > (int64_t)a->window_ms) {
            v[1] = now;
            v[0] = 0;
        }
        if (++v[0] >= (int64_t)a->lockout_failures) {
            double d = a->ban_ms * pow(2, v[2] < 30 ? (double)v[2] : 30);
            if (d > a->ban_max_ms)
                d = a->ban_max_ms;
            v[3] = now + (int64_t)d;
            v[2]++;
            v[0] = 0;
            v[1] = now;
            op->banned_now = true;
            op->left_ms = (int64_t)d;
        }
    }
    /* kept while banned or counting, then as long as the longest ban, so a
     * returning address's next ban is longer */
    int64_t keep = (v[3] > now ? v[3] - now : 0) + (int64_t)a->window_ms;
    return v[2] ? keep + (int64_t)a->ban_max_ms : keep;
}

/* ms left of the address's ban (0: not banned); with fail, a failure is
 * counted first. */
static int64_t ban_check(const struct config_auth *a, const uint64_t id[2], bool fail)
{
    if (!a->lockout_failures)
        return 0;
    if (!fail) { /* a look: no record is made for an address that never failed */
        int64_t v[4];
        int64_t now = st_now_ms();
        return st_get(id, v) && v[3] > now ? v[3] - now : 0;
    }
    struct ban_op op = { .a = a, .fail = fail };
    if (!st_update(id, ban_update, &op))
        return 0; /* no room: counted by the state; never locks anyone out by mistake */
    if (op.banned_now)
        atomic_fetch_add(&L.lockouts, 1);
    return fail ? 0 : op.left_ms;
}

/* ---------------------------------------------------------------- module */

/* SHA-256 of a client's key, on every API request: the digest fetched once
 * and a context per thread, reused (EVP_Digest looks the algorithm up and
 * makes a context each time: most of its cost for a short key). */
static struct {
    pthread_once_t once;
    EVP_MD *md;
    pthread_key_t ctx;   /* the thread's EVP_MD_CTX, freed when the thread ends */
    bool ok;
} H = { .once = PTHREAD_ONCE_INIT };

static void free_ctx(void *c)
{
    EVP_MD_CTX_free(c);
}

static void sha_init(void)
{
    H.md = EVP_MD_fetch(NULL, "SHA256", NULL);
    H.ok = H.md && pthread_key_create(&H.ctx, free_ctx) == 0;
}

bool auth_sha256(const void *p, size_t n, unsigned char out[32])
{
    pthread_once(&H.once, sha_init);
    EVP_MD_CTX *c = H.ok ? pthread_getspecific(H.ctx) : NULL;
    if (H.ok && !c && (c = EVP_MD_CTX_new()) && pthread_setspecific(H.ctx, c) != 0) {
        EVP_MD_CTX_free(c);
        c = NULL;
    }
    unsigned int len = 0;
    if (!c) /* the slow way */
        return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) && len == 32;
    return EVP_DigestInit_ex2(c, H.md, NULL) && EVP_DigestUpdate(c, p, n) && EVP_DigestFinal_ex(c, out, &len) &&
           len == 32;
}

static bool client_key(const http_req *r, const char **k, size_t *n)
{
    const struct http_hdr *h = http_req_header(r, "authorization");
    if (h && h->value_len > 7 && strncasecmp(h->value, "bearer ", 7) == 0) {
        *k = h->value + 7;
        *n = h->value_len - 7;
        while (*n && **k == ' ')
            (*k)++, (*n)--;
        return *n > 0;
    }
    static const char *const alt[] = { "api-key", "x-api-key" };
    for (int i = 0; i < 2; i++)
        if ((h = http_req_header(r, alt[i])) && h->value_len) {
            *k = h->value;
            *n = h->value_len;
            return true;
        }
    return false;
}

static enum pl_rc refuse(struct pl_req *q, int status, const char *type, const char *code, const char *msg)
{
    q->error.status = status;
    q->error.type = type;
    q->error.code = code;
    q->error.param = NULL;
    snprintf(q->error.message, sizeof q->error.message, "%.200s", msg);
    return PL_ERROR;
}

/* Before decoding: the address's ban, then the key. */
static enum pl_rc auth_arrival(struct pl_req *q, void *ctx)
{
    (void)ctx;
    const struct config_auth *a = auth_config(q->w->gw->cfg);
    if (!auth_on(a))
        return PL_NEXT;
    q->key_auth = true; /* whatever happens, the client's key stays here */
    unsigned char addr[16];
    bool v6 = false;
    const struct http_hdr *xff = http_req_header(q->http, "x-forwarded-for");
    uint64_t h[2];
    if (auth_client_addr(a, q->http->peer, xff ? xff->value : NULL, xff ? xff->value_len : 0, addr, &v6) == 0)
        addr_id(h, addr, v6);
    else
        st_id(h, "ban-peer", q->http->peer, strlen(q->http->peer));
    int64_t left = ban_check(a, h, false);
    if (left > 0) {
        atomic_fetch_add(&L.refused, 1);
        char ra[24];
        snprintf(ra, sizeof ra, "%lld", (long long)(left + 999) / 1000);
        const struct http_hdr hd[] = { { "retry-after", 11, ra, strlen(ra) } };
        char body[512];
        size_t bl = http_error_json(body, sizeof body, "rate_limit_error", "too_many_auth_failures", NULL,
                                    "Too many failed authentications from this address; try again later.");
        http_start(q->http, 429, hd, 1, (int64_t)bl);
        http_write(q->http, body, bl);
        http_end(q->http);
        return PL_DONE;
    }
    const char *k;
    size_t n;
    if (!client_key(q->http, &k, &n)) {
        atomic_fetch_add(&L.failures[0], 1);
        ban_check(a, h, true);
        return refuse(q, 401, "invalid_request_error", "invalid_api_key",
                      "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.");
    }
    unsigned char d[32];
    if (!auth_sha256(k, n, d))
        return refuse(q, 500, "server_error", NULL, "cannot check the key");
    int found = -1;
    for (size_t i = 0; i < a->nkeys; i++) /* every key compared: no early exit */
        if (CRYPTO_memcmp(d, a->keys[i].digest, 32) == 0)
            found = (int)i;
    const struct key_rec *rec = found >= 0 ? a->keys[found].rec : a->virtual_keys ? keys_acquire(d) : NULL;
    if (!rec) {
        atomic_fetch_add(&L.failures[1], 1);
        ban_check(a, h, true);
        return refuse(q, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.");
    }
    if (rec->expires_unix && rec->expires_unix <= (int64_t)unix_now()) {
        key_release(rec);
        atomic_fetch_add(&L.failures[1], 1);
        ban_check(a, h, true);
        return refuse(q, 401, "invalid_request_error", "invalid_api_key", "The API key has expired.");
    }
    if (found >= 0)
        key_hold(rec);
    q->key = rec; /* released by the engine after the request's finish */
    q->key_name = rec->name;
    return PL_NEXT;
}

/* After decoding: may the key use the model it asked for? */
static enum pl_rc auth_request(struct pl_req *q, void *ctx)
{
    (void)ctx;
    const struct key_rec *key = q->key;
    if (!key || !key->nmodels)
        return PL_NEXT;
    for (size_t i = 0; i < key->nmodels; i++)
        if (q->m0 && strcmp(key->models[i], q->m0->cfg->name) == 0)
            return PL_NEXT;
    atomic_fetch_add(&L.failures[2], 1);
    char msg[200];
    snprintf(msg, sizeof msg, "The key '%.64s' may not use the model `%.64s`.", key->name,
             q->m0 ? q->m0->cfg->name : "");
    return refuse(q, 403, "invalid_request_error", "model_not_allowed", msg);
}

static void auth_metrics(const struct gateway *gw, struct buf *o)
{
    const struct config_auth *a = auth_config(gw->cfg);
    if (!auth_on(a))
        return;
    buf_append_str(o, "# HELP shade_auth_failures_total API requests refused for their key, by reason "
                      "(missing, invalid, model: a model the key may not use).\n"
                      "# TYPE shade_auth_failures_total counter\n");
    for (int i = 0; i < 3; i++)
        buf_printf(o, "shade_auth_failures_total{reason=\"%s\"} %llu\n", fail_names[i],
                   (unsigned long long)atomic_load(&L.failures[i]));
    buf_printf(o, "# HELP shade_auth_lockouts_total Client addresses banned for failed authentications.\n"
                  "# TYPE shade_auth_lockouts_total counter\nshade_auth_lockouts_total %llu\n"
                  "# HELP shade_auth_locked_out_total Requests refused because their address is banned.\n"
                  "# TYPE shade_auth_locked_out_total counter\nshade_auth_locked_out_total %llu\n",
               (unsigned long long)atomic_load(&L.lockouts), (unsigned long long)atomic_load(&L.refused));
}

const struct pl_module mod_auth = {
    .name = "auth",
    .phase = PH_AUTH,
    .on_arrival = auth_arrival,
    .on_request = auth_request,
    .metrics_render = auth_metrics,
    .config = &auth_section,
};
