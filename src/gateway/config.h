/* config.h — the gateway's configuration, loaded once from one YAML file.
 *
 * A loaded config is immutable: workers read it without locks.  Everything
 * that changes at run time (backend health, in-flight counts) lives in
 * runtime structures that point at the config, never in it.
 */
#ifndef SHADE_CONFIG_H
#define SHADE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum balance_kind {
    BALANCE_ROUND_ROBIN = 0, /* "round_robin": rotate, ignoring weights            */
    BALANCE_WEIGHTED,        /* "weighted": smooth weighted round robin (nginx's)   */
    BALANCE_LEAST_OUTSTANDING,/* "least_outstanding": fewest in-flight requests     */
    BALANCE_P2C_EWMA,        /* "p2c_ewma": power of two choices on peak-EWMA latency */
    BALANCE_LEAST_TOKENS,    /* "least_tokens": fewest estimated tokens in flight  */
    BALANCE_PREFIX_AFFINITY  /* "prefix_affinity": consistent hashing with bounded
                                load on a session header or the prompt prefix     */
};

/* health_check: active probes of one backend (health.c) */
struct config_health_check {
    bool enabled;                 /* the key is present (a mapping, even {}) */
    char *path;                   /* GET target on the backend's host; default "/health" */
    uint32_t interval_ms;         /* default 5000 */
    uint32_t timeout_ms;          /* default 2000 */
    uint32_t healthy_threshold;   /* successes to come back; default 2 */
    uint32_t unhealthy_threshold; /* failures to go down; default 3 */
};

/* outlier: passive ejection on consecutive errors (health.c) */
struct config_outlier {
    bool enabled;                 /* the key is present (a mapping, even {}) */
    uint32_t consecutive_errors;  /* default 5 */
    uint32_t base_ejection_ms;    /* default 10000 */
    uint32_t max_ejection_ms;     /* default 300000 */
    uint32_t max_ejected_percent; /* of the model's backends; default 50 */
};

struct config_backend {
    char *url;            /* as written, e.g. "https://api.example.com/v1" */
    bool tls;             /* https:// */
    char *host;           /* host part, for Host:, SNI and certificate check */
    uint16_t port;        /* explicit or 80/443 */
    char *base_path;      /* path prefix with no trailing '/', "" when none.
                             The API path ("/v1/chat/completions") is appended
                             after stripping a leading "/v1" when base_path
                             already ends in "/v1". */
    struct sockaddr_storage addr; /* resolved once at load time */
    socklen_t addrlen;
    char *name;           /* label in metrics and logs; default "host:port" */
    char *model;          /* upstream model name; NULL = same as public name */
    char *api_key_env;    /* NULL or env var name */
    char *api_key;        /* value read from the environment at load; NULL if none */
    bool pass_client_key; /* with auth on, still send the client's key here; default false */
    uint32_t weight;      /* 1..1000, default 1 */
    uint32_t max_concurrent;      /* 0 = unlimited */
    uint32_t connect_timeout_ms;  /* default 5000 */
    uint32_t first_byte_timeout_ms;/* response headers; default 120000 */
    uint32_t idle_timeout_ms;     /* between response reads; default 60000 */
    uint32_t total_timeout_ms;    /* whole exchange; default 600000 */
    uint32_t max_fails;           /* connect failures before marked down; default 1 */
    uint32_t fail_timeout_ms;     /* how long down lasts; default 10000 */
    uint32_t keepalive_idle_ms;   /* idle upstream connection kept; default 60000 */
    uint32_t max_idle_conns;      /* per worker; default 64 */
    bool tls_verify;              /* default true */
    char *ca_file;                /* NULL = system store */
    struct config_health_check health_check;
    struct config_outlier outlier;
};

struct config_model {
    char *name;                   /* public model name */
    enum balance_kind balance;    /* default round_robin */
    struct config_backend *backends;
    size_t nbackends;             /* >= 1 */
    /* price per 1M tokens, for cost metrics; 0 = unknown */
    double input_price_per_mtok;
    double output_price_per_mtok;
    /* prefix_affinity: the header naming a session (NULL = none: hash the
     * first affinity_prefix_bytes of the messages / prompt instead), and the
     * bounded-load factor (a backend takes at most load_factor × the mean
     * load before the key spills to the next one on the ring) */
    char *affinity_header;
    uint32_t affinity_prefix_bytes;   /* default 512 */
    double load_factor;               /* default 1.25, 1.0..10 */
    /* retries and fallbacks (proxy.c) — only while nothing reached the client */
    uint32_t retry_attempts;          /* attempts per request incl. the first; default 3, 1..10 */
    bool retry_on_5xx;                /* retry a 5xx answer elsewhere; default true */
    bool retry_on_429;                /* retry a 429 answer elsewhere; default true */
    bool retry_on_timeout;            /* retry a first-byte timeout; default false */
    uint32_t retry_budget_percent;    /* retries at most this % of requests; default 20 */
    uint32_t retry_after_max_ms;      /* longest Retry-After waited for; default 2000 */
    char **fallbacks;                 /* models tried, in order, when this pool is exhausted */
    size_t nfallbacks;
    uint32_t stream_keepalive_ms;     /* SSE comment every N ms while a stream waits for
                                         its first byte; 0 = off; default 15000 */
    /* admission control (proxy.c) */
    uint32_t max_in_flight;           /* requests of this model in flight; 0 = unlimited */
    uint32_t queue_size;              /* per worker; 0 = no queue: shed at once */
    uint32_t queue_timeout_ms;        /* longest wait in the queue; default 10000 */
    char *queue_priority_header;      /* header with a priority 0..9 (9 first); NULL = none */
    uint32_t queue_shed_status;       /* 429 or 503 (default) */
    int stream_usage;                 /* enum stream_usage: exact usage for streams (mod_usage.c) */
    /* parameters forced on every request of this model (mod_set.c) */
    struct config_override *set;
    size_t nset;
    /* set by the loader for a shadow's inline backend pool: not routable
     * by clients, not listed in /v1/models, not counted by /readyz */
    bool hidden;
};

/* stream_usage: off (default), or inject include_usage for streams that did
 * not ask for it and hide it from the client again */
enum stream_usage { STREAM_USAGE_OFF = 0, STREAM_USAGE_INJECT };

/* A parameter override (a shadow leg's or a model's set:): "key": value, value as JSON text. */
struct config_override {
    char *key;
    char *json;
};

enum shadow_select {
    SHADOW_SELECT_ALL = 0,   /* "all": sample % of every request */
    SHADOW_SELECT_HEADER,    /* "header": only requests carrying select_header */
    SHADOW_SELECT_KEY,       /* "key": only requests whose bearer key is in keys */
    SHADOW_SELECT_HASH       /* "hash": a stable sample % of users (hash of a user key) */
};
enum shadow_stream { SHADOW_STREAM_AUTO = 0, SHADOW_STREAM_ON, SHADOW_STREAM_OFF };
enum shadow_state { SHADOW_RUNNING = 0, SHADOW_PAUSED, SHADOW_STOPPED };

/* rollouts: move a public model's traffic to a candidate step by step,
 * deciding with anytime-valid tests (rollout.c, canary.h) */
enum rollout_unit { ROLLOUT_UNIT_USER, ROLLOUT_UNIT_HEADER, ROLLOUT_UNIT_KEY };
enum rollout_on_failure { ROLLOUT_ON_FAILURE_ROLLBACK, ROLLOUT_ON_FAILURE_PAUSE };
struct config_rollout_step {
    double percent;               /* of units on the candidate, 0 < percent < 100, increasing */
    uint32_t min_duration_ms;     /* default 60s */
    uint32_t min_requests;        /* candidate requests; default 300 */
};
struct config_rollout {
    char *name;                   /* unique */
    char *model;                  /* the public model whose traffic moves */
    char *candidate;              /* a configured model: serves the canary arm */
    int unit;                     /* enum rollout_unit: what keeps a client on one arm; default user */
    char *unit_header;            /* unit: header */
    char *salt;                   /* default: the name */
    struct config_rollout_step *steps;
    size_t nsteps;                /* 1..16 */
    uint32_t check_interval_ms;   /* default 10s */
    double alpha;                 /* rollback; default 0.05 */
    double alpha_promote;         /* default 0.01 */
    double latency_margin;        /* default 1.2 */
    double latency_ratio_max;     /* default 1.5 */
    double cost_margin;           /* default 1.25: rollback when shown costlier per request */
    double success_min;           /* default 0.95 */
    double srm_alpha;             /* default 0.001 */
    int on_failure;               /* enum rollout_on_failure; default rollback */
    bool variant_header;          /* x-shade-variant on responses; default false */
    char *shadow;                 /* a shadow of model to candidate: the stage before step 1 */
    char *webhook;                /* http:// URL: every decision POSTed there */
    char *confirm_url;            /* http:// URL: asked before an advance or a promotion */
    uint32_t webhook_timeout_ms;  /* default 2s */
    bool refusals;                /* the refusal gate; default true */
    char **refusal_patterns;      /* case-insensitive substrings; none: compare.c's defaults */
    size_t nrefusal;
    /* the quality gate: quality_sample_percent of canary requests are also
     * sent twice to the baseline (side calls) and compared; 0 = off */
    double quality_sample_percent;
    double quality_margin;        /* default 0.10 */
    uint32_t quality_max_concurrent; /* baseline legs in flight, all workers; default 16 */
    uint32_t quality_deadline_ms; /* per baseline leg; default 60s */
    /* the judge gate: a configured model that judges quality pairs in both
     * orders (judge.c); NULL = no judge; needs the quality gate */
    char *quality_judge;
    double quality_judge_sample;  /* percent of quality pairs judged; default 100 */
    size_t model_index, candidate_index, shadow_index; /* resolved */
};

/* experiments: fixed shares of a public model's traffic between two or
 * more arms, compared with anytime-valid tests (experiment.c, abtest.h) */
#define EXPERIMENT_MAX_ARMS 8
struct config_experiment_arm {
    char *name;                   /* unique in the experiment; the first arm is the control */
    char *model;                  /* a configured model serving the arm (may be the public model) */
    double share;                 /* percent of units, > 0; the arms' shares sum to 100 */
    size_t model_index;           /* resolved */
};
struct config_experiment {
    char *name;                   /* unique */
    char *model;                  /* the public model whose traffic is split */
    struct config_experiment_arm *arms;
    size_t narms;                 /* 2..8 */
    int unit;                     /* enum rollout_unit; default user */
    char *unit_header;            /* unit: header */
    char *salt;                   /* default: the name */
    double alpha;                 /* every comparison together; default 0.05 */
    bool variant_header;          /* x-shade-variant: <arm> on responses; default false */
    uint32_t feedback_ttl_ms;     /* how long a request id can receive feedback; default 1h */
    uint32_t check_interval_ms;   /* counts written to the store; default 10s */
    /* judge preference: judge_sample_percent of the non-control arms'
     * requests are also sent to the control's model (a side call) and the
     * two answers judged in both orders by judge_model; NULL = no judge */
    char *judge_model;
    double judge_sample_percent;  /* default 10, above 0 */
    uint32_t judge_max_concurrent;/* control legs in flight, all workers; default 16 */
    uint32_t judge_deadline_ms;   /* per control leg; default 60s */
    size_t model_index;           /* resolved */
};

/* shadows: mirror a public model's traffic to a candidate (shadow.c) */
struct config_shadow {
    char *name;                   /* unique; metrics label and key in the pair store */
    char *model;                  /* public model whose requests are mirrored */
    char *target;                 /* the candidate: a configured model, or ... */
    struct config_model pool;     /* ... inline backends (+ balance, price): becomes a hidden model */
    size_t model_index, target_index; /* resolved into config.models */
    double sample_percent;        /* 0..100; default 100 */
    int select;                   /* enum shadow_select */
    char *select_header;          /* select: header */
    char **keys; size_t nkeys;    /* select: key */
    char *hash_header;            /* select: hash — header naming the user; else body "user", else the key */
    char *upstream_model;         /* model name sent to the candidate; NULL = its backends' own */
    struct config_override *set;  /* parameter overrides of the shadow leg */
    size_t nset;
    int stream;                   /* enum shadow_stream; default auto (as the client asked) */
    uint32_t deadline_ms;         /* a shadow leg is cut after this; default 60s */
    uint32_t max_concurrent;      /* shadow legs in flight, all workers; default 32 */
    uint64_t budget_tokens_per_hour; /* 0 = no budget */
    double budget_usd_per_hour;   /* 0 = no budget */
    bool skip_tool_results;       /* don't mirror requests carrying tool results; default true */
    char *opt_out_header;         /* a request with this header is never mirrored */
    double aa_percent;            /* of mirrored requests also sent to the primary again; default 10 */
    bool cancel_on_client_abort;  /* default false: a shadow leg outlives its client */
    int initial_state;            /* enum shadow_state: "running" (default) | "paused" */
    char **refusal_patterns; size_t nrefusal; /* case-insensitive; none = built-in defaults */
    char *judge_model;            /* configured model used as judge; NULL = no judge */
    double judge_sample_percent;  /* of eligible pairs; default 10 */
    uint32_t analysis_interval_ms;/* live analysis and auto-stop; default 10s */
    uint32_t autostop_min_pairs;  /* never stop on fewer pairs since start; default 20 */
    double autostop_success_min;  /* CUSUM: H0 "success >= this"; default 0.90, 0 = off */
    double autostop_alpha;        /* false-stop bound within autostop_horizon; default 0.05 */
    double autostop_horizon;      /* pairs; default 100000 */
    double rec_success_min;       /* ready: success shown above this; default 0.95 */
    double rec_latency_ratio_max; /* ready: faster than this x the primary; default 1.5 */
    uint32_t rec_min_pairs;       /* ready: not on fewer pairs; default 30 */
    double rec_alpha;             /* every readiness test, and the alarms together; 0.05 */
    double rec_latency_margin;    /* alarm: slower than this x the primary; default 1.2 */
    double rec_quality_margin;    /* ready: no comparator worse than this; default 0.10 */
};

/* shadow_store: the pair store (recorder.c), one SQLite file for all shadows */
struct config_store {
    char *path;                   /* default "shade-shadow.db" */
    uint32_t queue_size;          /* pairs waiting for the writer; default 10000 */
    uint64_t queue_max_bytes;     /* bytes those pairs hold (and the batch being written); default 256MiB */
    uint32_t prompt_max_bytes;    /* default 32KiB */
    uint32_t response_max_bytes;  /* default 32KiB */
    char **redact; size_t nredact;/* POSIX extended regexes, matches become [REDACTED] */
    uint32_t retention_days;      /* pairs older than this are deleted; 0 = kept forever */
    int synchronous;              /* 0 "normal" (default: survives a crash of shade), 1 "full"
                                     (also survives power loss, slower) */
};

/* admin: the /admin/ endpoints */
struct config_admin {
    char *key_env;                /* environment variable holding the admin key */
    char *key;                    /* its value; NULL = /admin/ is open (keep the listener private) */
};

struct config_server {
    char *listen;                 /* "127.0.0.1:8080" as written */
    struct sockaddr_storage addr; socklen_t addrlen;
    uint32_t workers;             /* 0 = one per core */
    uint32_t max_connections;     /* per worker, default 10000 */
    uint32_t max_header_bytes;    /* default 32768, 1024..1048576 */
    uint32_t max_headers;         /* default 100, 8..1000 */
    uint64_t max_body_bytes;      /* default 16 MiB, 1 KiB..1 GiB */
    uint32_t header_timeout_ms;   /* default 10000 */
    uint32_t body_timeout_ms;     /* default 60000 (between body reads) */
    uint32_t keepalive_timeout_ms;/* default 75000 */
    uint32_t shutdown_timeout_ms; /* default 30000 */
    char *log_level;              /* "debug" | "info" | "warn" | "error"; default info */
    bool expose_backend_header;   /* x-shade-backend on responses; default false:
                                     backend names default to host:port */
};

struct config {
    char *path;
    struct config_server server;
    struct config_model *models;
    size_t nmodels;
    struct config_shadow *shadows;
    size_t nshadows;
    struct config_rollout *rollouts;
    size_t nrollouts;
    struct config_experiment *experiments;
    size_t nexperiments;
    struct config_store store;
    struct config_admin admin;
    /* the top-level sections modules bring (pl_module.config), each parsed
     * into a blob of its own; a module reads its blob with pl_config() */
    const struct section **mod_sec;    /* [nmod_conf] their tables (config_schema.h) */
    void **mod_conf;                   /* [nmod_conf] the parsed blobs */
    size_t nmod_conf;
};

struct section;

/* Load and validate FILE: the core's sections, and the section each module
 * of the gateway's table brings (modules.c).  On error returns -1 and
 * writes one message of the form "FILE:LINE:COLUMN: message" into err
 * (NUL-terminated, truncated to errlen).  On success returns 0 and *out
 * owns all its memory. */
int config_load(const char *file, struct config **out, char *err, size_t errlen);
/* The same with these module sections (tests, fuzzers; NULL, 0: none). */
int config_load_with(const char *file, const struct section *const *sections, size_t n, struct config **out,
                     char *err, size_t errlen);
void config_free(struct config *c);

/* Find a model by public name (exact, case-sensitive); NULL if absent. */
const struct config_model *config_find_model(const struct config *c, const char *name, size_t len);

/* Parse a duration such as "250ms", "10s", "2m", "1h" into milliseconds.
 * Returns 0 on success, -1 on a malformed value. */
int config_parse_duration(const char *s, uint64_t *ms);

/* Parse "host:port" / "[v6]:port" listen addresses (numeric hosts, or
 * "localhost").  Returns 0 on success. */
int config_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#endif
