/* auth.h — API keys and brute-force lockout (auth.c, doc/keys.md): the
 * module mod_auth and its config section `auth:`. */
#ifndef SHADE_AUTH_H
#define SHADE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;

struct config_auth_key {
    char *name;                /* shown in logs and errors; never the secret */
    char *key_env;             /* the environment variable holding the secret */
    unsigned char digest[32];  /* SHA-256 of the secret, read at load */
    char **models;             /* allowed models; none listed = all */
    size_t nmodels;
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
};

/* The loaded `auth:` section, or NULL when the config was loaded without
 * this module. */
const struct config_auth *auth_config(const struct config *cfg);

/* The listener is reachable from outside the machine (not a loopback
 * address) and no key is required: anyone who reaches it may call every
 * model.  `shade check` and the serving process warn. */
bool auth_listener_open(const struct config *cfg);

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
