/* keys.h — what a key is once it is known (a key from the config's
 * `auth.keys`, or a virtual key created with the admin API or `shade keys`
 * and kept in the store), and the virtual keys' table (keys.c,
 * doc/keys.md).
 *
 * A request that authenticated holds its key record (pl_req.key) until it
 * finishes; records are immutable and reference-counted, so a key revoked
 * or changed meanwhile is replaced in the table while requests in flight
 * keep the version they started with.
 */
#ifndef SHADE_KEYS_H
#define SHADE_KEYS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct config;
struct route;

/* Limits of one scope (0 = none). */
struct key_limits {
    uint32_t rpm;          /* requests per minute */
    uint32_t tpm;          /* tokens per minute: prompt + completion */
    uint32_t concurrency;  /* requests in flight */
};

/* Limits for one model within a key. */
struct key_model_limits {
    char *model;
    struct key_limits lim;
};

enum key_period { KEY_PERIOD_DAY, KEY_PERIOD_WEEK, KEY_PERIOD_MONTH };

struct key_budget {
    double usd;            /* hard: refused once spent in the period; 0 = none */
    double soft_usd;       /* soft: an alert (metric, log) once spent; 0 = none */
    int period;            /* enum key_period, in UTC */
};

struct key_rec {
    _Atomic int refs;      /* the table's reference + one per request holding it */
    bool pinned;           /* a config key: lives as long as its config, never freed by release */
    char *id;              /* stable and public: "cfg:NAME", or a virtual key's id */
    char *name;            /* the team or app; in logs, metrics and errors (never the secret) */
    char *prefix;          /* the public start of the secret, for display; NULL for config keys */
    unsigned char digest[32]; /* SHA-256 of the secret */
    char **models;         /* allowed models; none = all */
    size_t nmodels;
    struct key_limits lim;
    struct key_model_limits *mlim;
    size_t nmlim;
    struct key_budget budget;
    int64_t expires_unix;  /* 0 = never */
    int priority;          /* 0-9 for the admission queue; -1 = the request's own */
    bool metrics;          /* its own label in the per-key metrics */
};

/* The budget period (enum key_period, UTC) that contains day (days since
 * 1970-01-01): its first day and the first day of the next.  Weeks start
 * on Monday.  The one definition of a period: the budget's bucket
 * (limit.c) and the ledger's sum (keys_table.c) both use it. */
void key_period_days(int period, int64_t day, int64_t *first, int64_t *next);

/* Take one more reference / drop one (pinned records: nothing). */
void key_hold(const struct key_rec *k);
void key_release(const struct key_rec *k);
/* The limits that apply to model (NULL: none of its own). */
const struct key_limits *key_model_limits(const struct key_rec *k, const char *model);

/* ---- the virtual keys (keys.c) ---- */

/* Start the table for this serving process: load the keys from the store
 * and keep them current (a change by any process or by `shade keys` is
 * seen within a second).  0, or -1 with err set. */
int keys_start(const struct config *cfg, char *err, size_t errlen);
void keys_stop(void);
/* The live virtual key with this digest, held for the caller (release it
 * with key_release), or NULL: unknown, revoked or expired. */
const struct key_rec *keys_acquire(const unsigned char digest[32]);
/* Spend: what a finished request used, added to the key's ledger in the
 * store (per key, model and UTC day), written in the background. */
void keys_record_usage(const struct key_rec *k, const char *model, int64_t tokens_in, int64_t tokens_out,
                       double cost_usd);
/* What the ledger holds for the key in the period that contains now_unix,
 * in USD (the budget's starting point after a restart of the master). */
double keys_period_spend(const struct key_rec *k, int64_t now_unix);

/* `shade keys create|list|revoke|rotate|usage ...`: exit status
 * (keys_cli.c). */
int keys_cli(const char *config_path, int argc, char **argv);

/* ---- between the table (keys_table.c) and the admin API (keys_admin.c) ---- */

struct ks_key;
struct buf;
/* The table is running in this process (auth.virtual_keys). */
bool keys_running(void);
/* A key this process just wrote to the store (created, rotated, revoked):
 * put in (or taken out of) this process's table at once, ahead of the
 * poll that every other process relies on.  Its spec's lists are taken. */
void keys_apply(struct ks_key *k);
/* shade_keys_live, and the counters of the keys with metrics: true. */
void keys_render_metrics(struct buf *out);

#endif
