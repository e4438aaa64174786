/* auth.h — API keys and brute-force lockout (auth.c, doc/keys.md): the
 * module mod_auth and its config section `auth:`. */
#ifndef SHADE_AUTH_H
#define SHADE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

struct config;

struct config_auth_key {
    char *name;                /* shown in logs and errors; never the secret */
    char *key_env;             /* the environment variable holding the secret */
    unsigned char digest[32];  /* SHA-256 of the secret, read at load */
    char **models;             /* allowed models; none listed = all */
    size_t nmodels;
    struct key_limits limits;  /* rpm, tpm, concurrency (0 = none) */
    struct key_model_limits *model_limits; /* the same for one model */
    size_t nmodel_limits;
    struct key_budget budget;  /* USD per day, week or month */
    char *priority;            /* "0".."9" for the admission queue, NULL = the request's own */
    bool metrics;              /* its own label in the per-key metrics */
    struct key_rec *rec;       /* what a request holds (pinned), built at load */
};

struct auth_cidr;

struct config_auth {
    bool enabled;              /* default true: on once keys are configured */
    struct config_auth_key *keys;
    size_t nkeys;
    uint32_t lockout_failures; /* per client address within window; 0 = no lockout; default 10 */
    uint32_t window_ms;        /* default 60s */
    uint32_t ban_ms;           /* the first ban; default 60s, doubled at each new one */
    uint32_t ban_max_ms;       /* default 1h */
    char **trusted_proxies;    /* addresses or CIDRs whose X-Forwarded-For is believed */
    size_t ntrusted;
    struct auth_cidr *trusted; /* [ntrusted] the same, parsed at load */
    uint32_t default_max_tokens; /* reserved for the answer when a request names no max_tokens */
    bool virtual_keys;         /* keys created with the admin API / `shade keys` are accepted too */
};

/* Keys are required: enabled, and keys in the config or virtual keys. */
bool auth_on(const struct config_auth *a);

/* The loaded `auth:` section, or NULL when the config was loaded without
 * this module. */
const struct config_auth *auth_config(const struct config *cfg);

/* The listener is reachable from outside the machine (not a loopback
 * address) and no key is required: anyone who reaches it may call every
 * model.  `shade check` and the serving process warn. */
bool auth_listener_open(const struct config *cfg);

/* SHA-256 (a key's digest), fast on a hot path: false when it failed. */
bool auth_sha256(const void *p, size_t n, unsigned char out[32]);

/* An address or CIDR ("10.0.0.0/8", "::1"). */
struct auth_cidr {
    unsigned char addr[16];
    int bits;
    bool v6;
};
int auth_cidr_parse(const char *s, struct auth_cidr *c);

/* The client's address: the peer ("ip:port", "[v6]:port"), or, when the
 * peer is a trusted proxy, the nearest address of X-Forwarded-For (from the
 * right) that is not one.  0, or -1 when the peer is unreadable. */
int auth_client_addr(const struct config_auth *a, const char *peer, const char *xff, size_t xff_len,
                     unsigned char out[16], bool *v6);

#endif
