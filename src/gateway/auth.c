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

#define S struct config_auth_key
static const struct field key_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "key_env", key_env, F_REQUIRED | F_TOKEN, 1, 256, check_key_env, NULL),
    STRLIST(S, "models", models, nmodels, 256),
};
static const struct section key_section = SECTION("key", "in key", key_fields, S, NULL, NULL);
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
};
static void release_auth(void *base)
{
    struct config_auth *a = base;
    free(a->trusted);
    a->trusted = NULL;
}

static const struct section auth_section = SECTION("auth", "in auth", auth_fields, S, finish_auth, release_auth);
#undef S

const struct config_auth *auth_config(const struct config *cfg)
{
    return pl_config(cfg, &mod_auth);
}

bool auth_listener_open(const struct config *cfg)
{
    const struct config_auth *a = auth_config(cfg);
    if (a && a->enabled && a->nkeys)
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

/* ---------------------------------------------------------------- lockout */

#define BANS 8192 /* addresses tracked per serving process; the oldest entry is reused when full */

struct ban {
    uint64_t h;           /* address hash, 0 = empty */
    uint32_t fails;       /* in the current window */
    uint32_t level;       /* bans so far: the next lasts ban x 2^level */
    double window_start, until;
};

static struct {
    pthread_mutex_t lock;
    struct ban t[BANS];
    _Atomic uint64_t failures[3], lockouts, refused;
} L = { .lock = PTHREAD_MUTEX_INITIALIZER };

static const char *const fail_names[3] = { "missing", "invalid", "model" };

static uint64_t addr_hash(const unsigned char a[16], bool v6)
{
    return rnd_mix64(rnd_fnv1a64(v6 ? 1 : 2, a, 16)) | 1;
}

static struct ban *ban_find(uint64_t h, bool create)
{
    size_t i = (size_t)(h % BANS), oldest = i;
    for (size_t k = 0; k < 16; k++, i = (i + 1) % BANS) {
        if (L.t[i].h == h)
            return &L.t[i];
        if (!L.t[i].h) {
            if (!create)
                return NULL;
            L.t[i] = (struct ban){ .h = h };
            return &L.t[i];
        }
        if (L.t[i].window_start < L.t[oldest].window_start)
            oldest = i;
    }
    if (!create)
        return NULL;
    L.t[oldest] = (struct ban){ .h = h };
    return &L.t[oldest];
}

/* Seconds left of a ban, 0 when not banned. */
static double banned(uint64_t h, double now)
{
    pthread_mutex_lock(&L.lock);
    struct ban *b = ban_find(h, false);
    double left = b && b->until > now ? b->until - now : 0;
    pthread_mutex_unlock(&L.lock);
    return left;
}

static void count_failure(const struct config_auth *a, uint64_t h, double now)
{
    if (!a->lockout_failures)
        return;
    pthread_mutex_lock(&L.lock);
    struct ban *b = ban_find(h, true);
    if (now - b->window_start > a->window_ms / 1000.0) {
        b->window_start = now;
        b->fails = 0;
    }
    if (++b->fails >= a->lockout_failures) {
        double d = a->ban_ms / 1000.0 * pow(2, b->level < 30 ? b->level : 30);
        if (d > a->ban_max_ms / 1000.0)
            d = a->ban_max_ms / 1000.0;
        b->until = now + d;
        b->level++;
        b->fails = 0;
        b->window_start = now;
        atomic_fetch_add(&L.lockouts, 1);
    }
    pthread_mutex_unlock(&L.lock);
}

/* ---------------------------------------------------------------- module */

struct auth_ctx {
    int key; /* index of the key, -1 none */
};

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
    struct auth_ctx *c = ctx;
    c->key = -1;
    const struct config_auth *a = auth_config(q->w->gw->cfg);
    if (!a || !a->enabled || !a->nkeys)
        return PL_NEXT;
    q->key_auth = true; /* whatever happens, the client's key stays here */
    double now = unix_now();
    unsigned char addr[16];
    bool v6 = false;
    const struct http_hdr *xff = http_req_header(q->http, "x-forwarded-for");
    uint64_t h = auth_client_addr(a, q->http->peer, xff ? xff->value : NULL, xff ? xff->value_len : 0, addr, &v6) == 0
                     ? addr_hash(addr, v6)
                     : rnd_mix64(rnd_fnv1a64(RND_FNV1A64_INIT, q->http->peer, strlen(q->http->peer))) | 1;
    double left = banned(h, now);
    if (left > 0) {
        atomic_fetch_add(&L.refused, 1);
        char ra[24];
        snprintf(ra, sizeof ra, "%.0f", ceil(left));
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
        count_failure(a, h, now);
        return refuse(q, 401, "invalid_request_error", "invalid_api_key",
                      "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.");
    }
    unsigned char d[32];
    unsigned int dl = 0;
    if (!EVP_Digest(k, n, d, &dl, EVP_sha256(), NULL) || dl != 32)
        return refuse(q, 500, "server_error", NULL, "cannot check the key");
    int found = -1;
    for (size_t i = 0; i < a->nkeys; i++) /* every key compared: no early exit */
        if (CRYPTO_memcmp(d, a->keys[i].digest, 32) == 0)
            found = (int)i;
    if (found < 0) {
        atomic_fetch_add(&L.failures[1], 1);
        count_failure(a, h, now);
        return refuse(q, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided.");
    }
    c->key = found;
    q->key_name = a->keys[found].name;
    return PL_NEXT;
}

/* After decoding: may the key use the model it asked for? */
static enum pl_rc auth_request(struct pl_req *q, void *ctx)
{
    struct auth_ctx *c = ctx;
    const struct config_auth *a = auth_config(q->w->gw->cfg);
    if (c->key < 0 || !a || (size_t)c->key >= a->nkeys)
        return PL_NEXT;
    const struct config_auth_key *key = &a->keys[c->key];
    if (!key->nmodels)
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
    if (!a || !a->enabled || !a->nkeys)
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
    .ctx_size = sizeof(struct auth_ctx),
    .on_arrival = auth_arrival,
    .on_request = auth_request,
    .metrics_render = auth_metrics,
    .config = &auth_section,
};
