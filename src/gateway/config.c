/* config.c — load and validate the YAML configuration.
 *
 * The file is parsed with libyaml's document API, so every node carries the
 * line and column it came from, and then walked against static schema
 * tables: one table per section (server, model, backend, ...), one row per
 * key giving its type, where it lives in the C struct, its bounds and its
 * default (written exactly as it would be in the file, and parsed by the
 * same code).  The generic walker rejects unknown and duplicate keys, wrong
 * types and out-of-range values, applies defaults, and frees everything
 * again in config_free().  Per-key "check" hooks handle what a table cannot
 * express (listen addresses, backend URLs, environment variables, files).
 *
 * Adding a section = a struct in config.h, a field table and a struct
 * section here, and one MAP() or LIST() row in the parent's table.  A
 * module brings its own top-level section instead (pl_module.config, with
 * the same machinery from config_schema.h): config_load_with() adds a row
 * for it to the top level and parses it into a blob the config owns.
 */
#include "config.h"
#include "hclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config_schema.h"
#include "json.h"

#define CONFIG_MAX_FILE_BYTES (16u << 20)

/* ---------------------------------------------------------------- schema */

static int check_listen(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base);
static int check_url(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base);
static int check_api_key_env(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                             void *base);
static int check_ca_file(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base);
static int check_http_token(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base);
static int finish_backend(struct loader *ld, const yaml_node_t *map, void *base);
static int finish_top(struct loader *ld, const yaml_node_t *map, void *base);
static int finish_queue(struct loader *ld, const yaml_node_t *map, void *base);
static void release_backend(void *base);
static int check_health_path(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                             void *base);
static int finish_health_check(struct loader *ld, const yaml_node_t *map, void *base);
static int finish_outlier(struct loader *ld, const yaml_node_t *map, void *base);
static int finish_shadow(struct loader *ld, const yaml_node_t *map, void *base);
static int check_admin_key_env(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                               void *base);

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const balance_names[] = {
    [BALANCE_ROUND_ROBIN] = "round_robin",
    [BALANCE_WEIGHTED] = "weighted",
    [BALANCE_LEAST_OUTSTANDING] = "least_outstanding",
    [BALANCE_P2C_EWMA] = "p2c_ewma",
    [BALANCE_LEAST_TOKENS] = "least_tokens",
    [BALANCE_PREFIX_AFFINITY] = "prefix_affinity",
    NULL,
};

#define S struct config_health_check
static const struct field health_check_fields[] = {
    STR(S, "path", path, F_TOKEN, 1, 1024, check_health_path, "/health"),
    DUR(S, "interval", interval_ms, "5s"),
    DUR(S, "timeout", timeout_ms, "2s"),
    UINT(S, "healthy_threshold", healthy_threshold, 1, 1000, "2"),
    UINT(S, "unhealthy_threshold", unhealthy_threshold, 1, 1000, "3"),
};
static const struct section health_check_section = SECTION(
    "health_check", "in health_check", health_check_fields, S, finish_health_check, NULL);
#undef S

#define S struct config_outlier
static const struct field outlier_fields[] = {
    UINT(S, "consecutive_errors", consecutive_errors, 1, 1000, "5"),
    DUR(S, "base_ejection", base_ejection_ms, "10s"),
    DUR(S, "max_ejection", max_ejection_ms, "300s"),
    UINT(S, "max_ejected_percent", max_ejected_percent, 0, 100, "50"),
};
static const struct section outlier_section =
    SECTION("outlier", "in outlier", outlier_fields, S, finish_outlier, NULL);
#undef S

#define S struct config_backend
static const struct field backend_fields[] = {
    STR(S, "url", url, F_REQUIRED | F_TOKEN, 1, 2048, check_url, NULL),
    STR(S, "name", name, F_UNIQUE | F_TOKEN, 1, 256, NULL, NULL), /* default: finish_backend */
    STR(S, "model", model, F_TOKEN, 1, 256, NULL, NULL),
    STR(S, "api_key_env", api_key_env, F_TOKEN, 1, 256, check_api_key_env, NULL),
    BOOL(S, "pass_client_key", pass_client_key, "false"),
    UINT(S, "weight", weight, 1, 1000, "1"),
    UINT(S, "max_concurrent", max_concurrent, 0, 1000000, "0"),
    DUR(S, "connect_timeout", connect_timeout_ms, "5s"),
    DUR(S, "first_byte_timeout", first_byte_timeout_ms, "120s"),
    DUR(S, "idle_timeout", idle_timeout_ms, "60s"),
    DUR(S, "total_timeout", total_timeout_ms, "600s"),
    UINT(S, "max_fails", max_fails, 1, 1000, "1"),
    DUR(S, "fail_timeout", fail_timeout_ms, "10s"),
    DUR(S, "keepalive_idle", keepalive_idle_ms, "60s"),
    UINT(S, "max_idle_conns", max_idle_conns, 0, 10000, "64"),
    BOOL(S, "tls_verify", tls_verify, "true"),
    STR(S, "ca_file", ca_file, 0, 1, 4096, check_ca_file, NULL),
    MAP(S, "health_check", health_check, health_check_section),
    MAP(S, "outlier", outlier, outlier_section),
};
static const struct section backend_section =
    SECTION("backend", "in backend", backend_fields, S, finish_backend, release_backend);
#undef S

static const char *const stream_usage_names[] = {"off", "inject", NULL};
_Static_assert(sizeof(enum stream_usage) == sizeof(int), "T_ENUM stores an int");

#define S struct config_model
static const struct field price_fields[] = {
    NUM(S, "input", input_price_per_mtok, 0, 1000000, "0"),
    NUM(S, "output", output_price_per_mtok, 0, 1000000, "0"),
};
static const struct section price_section = SECTION("price", "in price", price_fields, S, NULL, NULL);

static const struct field retry_fields[] = {
    UINT(S, "attempts", retry_attempts, 1, 10, "3"),
    BOOL(S, "on_5xx", retry_on_5xx, "true"),
    BOOL(S, "on_429", retry_on_429, "true"),
    BOOL(S, "on_timeout", retry_on_timeout, "false"),
    UINT(S, "budget_percent", retry_budget_percent, 0, 100, "20"),
    { .name = "retry_after_max", .type = T_DURATION, AT(S, retry_after_max_ms), .min = 0, .max = 60000,
      .def = "2s" },
};
static const struct section retry_section = SECTION("retry", "in retry", retry_fields, S, NULL, NULL);

static const struct field queue_fields[] = {
    UINT(S, "size", queue_size, 0, 1000000, "0"),
    DUR(S, "timeout", queue_timeout_ms, "10s"),
    STR(S, "priority_header", queue_priority_header, F_TOKEN, 1, 256, check_http_token, NULL),
    UINT(S, "shed_status", queue_shed_status, 429, 503, "503"),
};
static const struct section queue_section = SECTION("queue", "in queue", queue_fields, S, finish_queue, NULL);

static const struct field model_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 256, NULL, NULL),
    ENUM(S, "balance", balance, balance_names, "round_robin"),
    STR(S, "affinity_header", affinity_header, F_TOKEN, 1, 256, check_http_token, NULL),
    SIZE(S, "affinity_prefix_bytes", affinity_prefix_bytes, 16, 65536, "512"),
    NUM(S, "load_factor", load_factor, 1, 10, "1.25"),
    FLAT("price", price_section),
    FLAT("retry", retry_section),
    UINT(S, "max_in_flight", max_in_flight, 0, 10000000, "0"),
    FLAT("queue", queue_section),
    STRLIST(S, "fallback", fallbacks, nfallbacks, 256),
    { .name = "stream_keepalive", .type = T_DURATION, AT(S, stream_keepalive_ms), .min = 0,
      .max = 24 * MS_1H, .def = "15s" },
    ENUM(S, "stream_usage", stream_usage, stream_usage_names, "off"),
    KVMAP(S, "set", set, nset),
    LIST(S, "backends", backends, nbackends, F_REQUIRED, 1, backend_section),
};
static const struct section model_section = SECTION("model", "in model", model_fields, S, NULL, NULL);
#undef S

static const char *const select_names[] = {"all", "header", "key", "hash", NULL};
static const char *const shadow_stream_names[] = {"auto", "true", "false", NULL};
static const char *const shadow_state_names[] = {"running", "paused", NULL};
static const char *const sync_names[] = {"normal", "full", NULL};

#define S struct config_shadow
static const struct field budget_fields[] = {
    UINT(S, "tokens_per_hour", budget_tokens_per_hour, 0, 1000000000000ull, "0"),
    NUM(S, "usd_per_hour", budget_usd_per_hour, 0, 1000000, "0"),
};
static const struct section budget_section = SECTION("budget", "in budget", budget_fields, S, NULL, NULL);

static const struct field judge_fields[] = {
    STR(S, "model", judge_model, F_TOKEN, 1, 256, NULL, NULL), /* absent: no judge */
    NUM(S, "sample", judge_sample_percent, 0, 100, "10"),
};
static const struct section judge_section = SECTION("judge", "in judge", judge_fields, S, NULL, NULL);

static const struct field analysis_fields[] = {
    DUR(S, "interval", analysis_interval_ms, "10s"),
    UINT(S, "min_pairs", autostop_min_pairs, 1, 1000000, "20"),
    NUM(S, "stop_below", autostop_success_min, 0, 1, "0.90"), /* < 1: finish_shadow */
    NUM(S, "stop_alpha", autostop_alpha, 0, 1, "0.05"),        /* (0, 0.5]: finish_shadow */
    NUM(S, "stop_horizon", autostop_horizon, 1, 1e12, "100000"),
};
static const struct section analysis_section =
    SECTION("analysis", "in analysis", analysis_fields, S, NULL, NULL);

static const struct field recommend_fields[] = {
    NUM(S, "success_min", rec_success_min, 0, 1, "0.95"),
    NUM(S, "latency_ratio_max", rec_latency_ratio_max, 1, 1000, "1.5"),
    UINT(S, "min_pairs", rec_min_pairs, 1, 100000000, "30"),
    NUM(S, "alpha", rec_alpha, 0, 1, "0.05"),                   /* (0, 0.5]: finish_shadow */
    NUM(S, "latency_margin", rec_latency_margin, 1, 1000, "1.2"),
    NUM(S, "quality_margin", rec_quality_margin, 0, 1, "0.10"), /* (0, 1): finish_shadow */
};
static const struct section recommend_section =
    SECTION("recommend", "in recommend", recommend_fields, S, NULL, NULL);

static const struct field shadow_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "model", model, F_REQUIRED | F_TOKEN, 1, 256, NULL, NULL),
    STR(S, "target", target, F_TOKEN, 1, 256, NULL, NULL),
    LIST(S, "backends", pool.backends, pool.nbackends, 0, 0, backend_section),
    ENUM(S, "balance", pool.balance, balance_names, "round_robin"),
    MAP(S, "price", pool, price_section),
    NUM(S, "sample", sample_percent, 0, 100, "100"),
    ENUM(S, "select", select, select_names, "all"),
    STR(S, "select_header", select_header, F_TOKEN, 1, 256, check_http_token, NULL),
    TEXTLIST(S, "keys", keys, nkeys, 4096),
    STR(S, "hash_header", hash_header, F_TOKEN, 1, 256, check_http_token, NULL),
    STR(S, "upstream_model", upstream_model, F_TOKEN, 1, 256, NULL, NULL),
    KVMAP(S, "set", set, nset),
    ENUM(S, "stream", stream, shadow_stream_names, "auto"),
    DUR(S, "deadline", deadline_ms, "60s"),
    UINT(S, "max_concurrent", max_concurrent, 1, 1000000, "32"),
    FLAT("budget", budget_section),
    BOOL(S, "skip_tool_results", skip_tool_results, "true"),
    STR(S, "opt_out_header", opt_out_header, F_TOKEN, 1, 256, check_http_token, "x-shade-no-shadow"),
    NUM(S, "aa_percent", aa_percent, 0, 100, "10"),
    BOOL(S, "cancel_on_client_abort", cancel_on_client_abort, "false"),
    ENUM(S, "state", initial_state, shadow_state_names, "running"),
    TEXTLIST(S, "refusal_patterns", refusal_patterns, nrefusal, 256),
    FLAT("judge", judge_section),
    FLAT("analysis", analysis_section),
    FLAT("recommend", recommend_section),
};
static const struct section shadow_section =
    SECTION("shadow", "in shadow", shadow_fields, S, finish_shadow, NULL);
#undef S

#define S struct config_store
static const struct field store_fields[] = {
    STR(S, "path", path, 0, 1, 4096, NULL, "shade-shadow.db"),
    UINT(S, "queue_size", queue_size, 1, 10000000, "10000"),
    SIZE(S, "queue_max_bytes", queue_max_bytes, 65536, 1099511627776ull, "256MiB"),
    SIZE(S, "prompt_max_bytes", prompt_max_bytes, 256, 16777216, "32KiB"),
    SIZE(S, "response_max_bytes", response_max_bytes, 256, 16777216, "32KiB"),
    TEXTLIST(S, "redact", redact, nredact, 1024),
    UINT(S, "retention_days", retention_days, 0, 36500, "0"),
    ENUM(S, "synchronous", synchronous, sync_names, "normal"),
};
static const struct section store_section =
    SECTION("shadow_store", "in shadow_store", store_fields, S, NULL, NULL);
#undef S

#define S struct config_admin
static const struct field admin_fields[] = {
    STR(S, "key_env", key_env, F_TOKEN, 1, 256, check_admin_key_env, NULL),
};
static void release_admin(void *base)
{
    struct config_admin *a = base;
    if (a->key) explicit_bzero(a->key, strlen(a->key));
    free(a->key);
}
static const struct section admin_section = SECTION("admin", "in admin", admin_fields, S, NULL, release_admin);
#undef S

#define S struct config_server
static const struct field server_fields[] = {
    STR(S, "listen", listen, F_TOKEN, 1, 256, check_listen, "127.0.0.1:8080"),
    UINT(S, "workers", workers, 0, 256, "0"),
    UINT(S, "max_connections", max_connections, 1, 1000000, "10000"),
    SIZE(S, "max_header_bytes", max_header_bytes, 1024, 1048576, "32KiB"),
    UINT(S, "max_headers", max_headers, 8, 1000, "100"),
    SIZE(S, "max_body_bytes", max_body_bytes, 1024, 1073741824, "16MiB"),
    DUR(S, "header_timeout", header_timeout_ms, "10s"),
    DUR(S, "body_timeout", body_timeout_ms, "60s"),
    DUR(S, "keepalive_timeout", keepalive_timeout_ms, "75s"),
    DUR(S, "shutdown_timeout", shutdown_timeout_ms, "30s"),
    CHOICE(S, "log_level", log_level, log_levels, "info"),
    BOOL(S, "expose_backend_header", expose_backend_header, "false"),
};
static const struct section server_section = SECTION("server", "in server", server_fields, S, NULL, NULL);
#undef S

static const char *const rollout_unit_names[] = {"user", "header", "key", NULL};

static int check_http_url(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base);
static const char *const rollout_failure_names[] = {"rollback", "pause", NULL};

#define S struct config_rollout_step
static const struct field rollout_step_fields[] = {
    /* 0 < percent < 100, increasing: finish_rollouts */
    { .name = "percent", .type = T_DOUBLE, AT(S, percent), .flags = F_REQUIRED, .min = 0, .max = 100 },
    DUR(S, "min_duration", min_duration_ms, "60s"),
    UINT(S, "min_requests", min_requests, 0, 100000000, "300"),
};
static const struct section rollout_step_section =
    SECTION("step", "in step", rollout_step_fields, S, NULL, NULL);
#undef S

#define S struct config_rollout
static const struct field rollout_quality_fields[] = {
    NUM(S, "sample_percent", quality_sample_percent, 0, 100, "0"),
    UINT(S, "max_concurrent", quality_max_concurrent, 2, 1000000, "16"),
    DUR(S, "deadline", quality_deadline_ms, "60s"),
    STR(S, "judge", quality_judge, F_TOKEN, 1, 256, NULL, NULL), /* absent: no judge; checked in finish_rollouts */
    NUM(S, "judge_sample", quality_judge_sample, 0, 100, "100"),
};
static const struct section rollout_quality_section =
    SECTION("quality", "in quality", rollout_quality_fields, S, NULL, NULL);

static const struct field rollout_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "model", model, F_REQUIRED | F_TOKEN, 1, 256, NULL, NULL),
    STR(S, "candidate", candidate, F_REQUIRED | F_TOKEN, 1, 256, NULL, NULL),
    ENUM(S, "unit", unit, rollout_unit_names, "user"),
    STR(S, "unit_header", unit_header, F_TOKEN, 1, 256, check_http_token, NULL),
    STR(S, "salt", salt, 0, 1, 256, NULL, NULL),
    LIST(S, "steps", steps, nsteps, F_REQUIRED, 1, rollout_step_section),
    DUR(S, "check_interval", check_interval_ms, "10s"),
    NUM(S, "alpha", alpha, 0, 1, "0.05"),                 /* (0, 0.5]: finish_rollouts */
    NUM(S, "alpha_promote", alpha_promote, 0, 1, "0.01"), /* (0, 0.5] */
    NUM(S, "latency_margin", latency_margin, 1, 1000, "1.2"),
    NUM(S, "latency_ratio_max", latency_ratio_max, 1, 1000, "1.5"),
    NUM(S, "cost_margin", cost_margin, 1, 1000, "1.25"),
    NUM(S, "success_min", success_min, 0, 1, "0.95"),
    NUM(S, "srm_alpha", srm_alpha, 0, 1, "0.001"),         /* (0, 0.5] */
    ENUM(S, "on_failure", on_failure, rollout_failure_names, "rollback"),
    BOOL(S, "variant_header", variant_header, "false"),
    STR(S, "shadow", shadow, F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "webhook", webhook, F_TOKEN, 8, 2048, check_http_url, NULL),
    STR(S, "confirm_url", confirm_url, F_TOKEN, 8, 2048, check_http_url, NULL),
    DUR(S, "webhook_timeout", webhook_timeout_ms, "2s"),
    BOOL(S, "refusals", refusals, "true"),
    TEXTLIST(S, "refusal_patterns", refusal_patterns, nrefusal, 256),
    NUM(S, "quality_margin", quality_margin, 0, 1, "0.10"), /* (0, 1): finish_rollouts */
    FLAT("quality", rollout_quality_section),
};
static const struct section rollout_section =
    SECTION("rollout", "in rollout", rollout_fields, S, NULL, NULL);
#undef S

#define S struct config_experiment_arm
static const struct field experiment_arm_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "model", model, F_REQUIRED | F_TOKEN, 1, 256, NULL, NULL),
    /* > 0, summing to 100 over the arms: finish_experiments */
    { .name = "share", .type = T_DOUBLE, AT(S, share), .flags = F_REQUIRED, .min = 0, .max = 100 },
};
static const struct section experiment_arm_section =
    SECTION("arm", "in arm", experiment_arm_fields, S, NULL, NULL);
#undef S

#define S struct config_experiment
static const struct field experiment_judge_fields[] = {
    STR(S, "model", judge_model, F_TOKEN, 1, 256, NULL, NULL), /* absent: no judge; finish_experiments */
    NUM(S, "sample_percent", judge_sample_percent, 0, 100, "10"), /* above 0: finish_experiments */
    UINT(S, "max_concurrent", judge_max_concurrent, 1, 1000000, "16"),
    DUR(S, "deadline", judge_deadline_ms, "60s"),
};
static const struct section experiment_judge_section =
    SECTION("judge", "in judge", experiment_judge_fields, S, NULL, NULL);

static const struct field experiment_fields[] = {
    STR(S, "name", name, F_REQUIRED | F_UNIQUE | F_TOKEN, 1, 128, NULL, NULL),
    STR(S, "model", model, F_REQUIRED | F_TOKEN, 1, 256, NULL, NULL),
    LIST(S, "arms", arms, narms, F_REQUIRED, 1, experiment_arm_section), /* 2..8: finish_experiments */
    ENUM(S, "unit", unit, rollout_unit_names, "user"),
    STR(S, "unit_header", unit_header, F_TOKEN, 1, 256, check_http_token, NULL),
    STR(S, "salt", salt, 0, 1, 256, NULL, NULL),
    NUM(S, "alpha", alpha, 0, 1, "0.05"), /* (0, 0.5]: finish_experiments */
    BOOL(S, "variant_header", variant_header, "false"),
    DUR(S, "feedback_ttl", feedback_ttl_ms, "1h"),
    DUR(S, "check_interval", check_interval_ms, "10s"),
    FLAT("judge", experiment_judge_section),
};
static const struct section experiment_section =
    SECTION("experiment", "in experiment", experiment_fields, S, NULL, NULL);
#undef S

#define S struct config
static const struct field top_fields[] = {
    MAP(S, "server", server, server_section),
    LIST(S, "models", models, nmodels, F_REQUIRED, 1, model_section),
    LIST(S, "shadows", shadows, nshadows, 0, 0, shadow_section),
    LIST(S, "rollouts", rollouts, nrollouts, 0, 0, rollout_section),
    LIST(S, "experiments", experiments, nexperiments, 0, 0, experiment_section),
    MAP(S, "shadow_store", store, store_section),
    MAP(S, "admin", admin, admin_section),
};
static const struct section top_section =
    SECTION("configuration", "at top level", top_fields, S, finish_top, NULL);
#undef S

_Static_assert(NFIELDS(backend_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(health_check_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(outlier_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(price_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(retry_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(queue_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(model_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(server_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(top_fields) + CONFIG_MAX_MODULE_SECTIONS <= 64, "too many fields for the seen-mask");
_Static_assert(NFIELDS(shadow_fields) <= 64, "too many fields for the seen-mask");
_Static_assert(sizeof(enum shadow_select) == sizeof(int), "T_ENUM stores an int");
_Static_assert(sizeof(enum balance_kind) == sizeof(int), "T_ENUM stores an int");

/* ---------------------------------------------------------------- errors */

struct loader {
    const char *file;
    char *err;
    size_t errlen;
    yaml_document_t *doc;
};

__attribute__((format(printf, 2, 3))) static int fail_file(struct loader *ld, const char *fmt, ...)
{
    if (!ld->err || ld->errlen == 0) return -1;
    int n = snprintf(ld->err, ld->errlen, "%s: ", ld->file);
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* "FILE:LINE:COLUMN: message"; marks are 0-based, messages 1-based.  A NULL
 * mark means 1:1. */
__attribute__((format(printf, 3, 0))) static int vfail(struct loader *ld, const yaml_mark_t *m,
                                                       const char *fmt, va_list ap)
{
    if (!ld->err || ld->errlen == 0) return -1;
    size_t line = m ? m->line + 1 : 1, col = m ? m->column + 1 : 1;
    int n = snprintf(ld->err, ld->errlen, "%s:%zu:%zu: ", ld->file, line, col);
    if (n >= 0 && (size_t)n < ld->errlen) vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    return -1;
}

__attribute__((format(printf, 3, 4))) static int fail(struct loader *ld, const yaml_mark_t *m,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, m, fmt, ap);
    va_end(ap);
    return -1;
}

int config_fail(struct loader *ld, const yaml_mark_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, at, fmt, ap);
    va_end(ap);
    return -1;
}

/* A user-supplied string made safe to quote in a message: control bytes
 * become '?', long strings are cut with "...". */
#define SHOW_MAX 64
struct showbuf {
    char s[SHOW_MAX + 4];
};

static const char *show(struct showbuf *b, const char *s, size_t len)
{
    size_t o = 0, i;
    for (i = 0; i < len && o < SHOW_MAX; i++) {
        unsigned char ch = (unsigned char)s[i];
        b->s[o++] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    if (i < len) {
        while (o > 0 && ((unsigned char)b->s[o - 1] & 0x80)) o--; /* no half UTF-8 char */
        memcpy(b->s + o, "...", 3);
        o += 3;
    }
    b->s[o] = '\0';
    return b->s;
}

_Static_assert(sizeof(struct showbuf) == CONFIG_SHOW_BYTES, "config_show's buffer");
const char *config_show(char buf[CONFIG_SHOW_BYTES], const char *s, size_t len)
{
    struct showbuf sb;
    memcpy(buf, show(&sb, s, len), sizeof sb.s);
    return buf;
}

static char *dupn(struct loader *ld, const yaml_mark_t *at, const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (!p) {
        fail(ld, at, "out of memory");
        return NULL;
    }
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* ---------------------------------------------------------------- value syntax */

enum { PARSE_OK = 0, PARSE_BAD = -1, PARSE_RANGE = -2 };

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Leading decimal digits of s[0..len) into *v; returns how many there were.
 * *over is set when the value does not fit in 64 bits. */
static size_t take_digits(const char *s, size_t len, uint64_t *v, bool *over)
{
    uint64_t n = 0;
    size_t i = 0;
    *over = false;
    for (; i < len && is_digit(s[i]); i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (n > (UINT64_MAX - d) / 10) *over = true;
        else n = n * 10 + d;
    }
    *v = n;
    return i;
}

/* A decimal integer: digits only, no sign, no leading zeros ("010" would be
 * octal in YAML 1.1).  "-5" and overflow are range errors, not garbage. */
static int parse_uint(const char *s, size_t len, uint64_t *v)
{
    bool over;
    if (len > 1 && s[0] == '-' && take_digits(s + 1, len - 1, v, &over) == len - 1)
        return PARSE_RANGE;
    size_t n = take_digits(s, len, v, &over);
    if (n == 0 || n != len || (len > 1 && s[0] == '0')) return PARSE_BAD;
    return over ? PARSE_RANGE : PARSE_OK;
}

/* digits followed by one of units (or nothing, unless unit_required) */
static int parse_scaled(const char *s, size_t len, uint64_t *v, const char *const *units,
                        const uint64_t *mult, bool unit_required)
{
    bool over;
    size_t n = take_digits(s, len, v, &over);
    if (n == 0) return PARSE_BAD;
    const char *u = s + n;
    size_t ulen = len - n;
    uint64_t m = 0;
    if (ulen == 0 && !unit_required) m = 1;
    for (size_t i = 0; units[i] && !m; i++)
        if (strlen(units[i]) == ulen && memcmp(units[i], u, ulen) == 0) m = mult[i];
    if (!m) return PARSE_BAD;
    if (over || *v > UINT64_MAX / m) return PARSE_RANGE;
    *v *= m;
    return PARSE_OK;
}

static const char *const duration_units[] = {"ms", "s", "m", "h", NULL};
static const uint64_t duration_mult[] = {1, 1000, 60000, 3600000};
static const char *const size_units[] = {"KiB", "MiB", "GiB", NULL};
static const uint64_t size_mult[] = {1ull << 10, 1ull << 20, 1ull << 30};

static int parse_duration(const char *s, size_t len, uint64_t *ms)
{
    return parse_scaled(s, len, ms, duration_units, duration_mult, true);
}

static int parse_size(const char *s, size_t len, uint64_t *bytes)
{
    if (len > 1 && s[0] == '0' && is_digit(s[1])) return PARSE_BAD;
    return parse_scaled(s, len, bytes, size_units, size_mult, false);
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t v;
    if (!s || parse_duration(s, strlen(s), &v) != PARSE_OK) return -1;
    *ms = v;
    return 0;
}

/* [-]digits[.digits][e[+-]digits]: no hex, inf, nan or leading '+'.  The
 * value is NUL-terminated at s[len] (libyaml scalars and defaults are). */
static int parse_double(const char *s, size_t len, double *v)
{
    size_t i = 0, digits = 0;
    if (i < len && s[i] == '-') i++;
    for (; i < len && is_digit(s[i]); i++) digits++;
    if (i < len && s[i] == '.')
        for (i++; i < len && is_digit(s[i]); i++) digits++;
    if (digits == 0) return PARSE_BAD;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) i++;
        if (i == len || !is_digit(s[i])) return PARSE_BAD;
        while (i < len && is_digit(s[i])) i++;
    }
    if (i != len) return PARSE_BAD;
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end != s + len) return PARSE_BAD;
    if (errno == ERANGE || !isfinite(d)) return PARSE_RANGE;
    *v = d == 0 ? 0 : d; /* no -0 */
    return PARSE_OK;
}

static bool has_ctl(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < ' ' || c == 0x7f) return true;
    }
    return false;
}

static bool has_space_or_ctl(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7f) return true;
    }
    return false;
}

/* ---------------------------------------------------------------- addresses */

/* Split "host", "host:port", "[v6]" or "[v6]:port".  *port is NULL when
 * there is no ':'.  A bare IPv6 address (two or more colons) is rejected. */
static int split_hostport(const char *s, size_t len, const char **host, size_t *hostlen,
                          bool *bracketed, const char **port, size_t *portlen)
{
    const char *rest;
    *port = NULL;
    *portlen = 0;
    *bracketed = false;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close) return -1;
        *host = s + 1;
        *hostlen = (size_t)(close - s) - 1;
        *bracketed = true;
        rest = close + 1;
        if (rest < s + len && *rest != ':') return -1;
    } else {
        const char *colon = memchr(s, ':', len);
        *host = s;
        *hostlen = colon ? (size_t)(colon - s) : len;
        rest = colon ? colon : s + len;
        if (colon && memchr(colon + 1, ':', len - (size_t)(colon + 1 - s))) return -1;
    }
    if (*hostlen == 0) return -1;
    if (rest < s + len) { /* *rest == ':' */
        *port = rest + 1;
        *portlen = (size_t)(s + len - *port);
    }
    return 0;
}

static int parse_port(const char *s, size_t len, uint16_t *port)
{
    uint64_t v;
    bool over;
    if (len == 0 || len > 5 || take_digits(s, len, &v, &over) != len || v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* A numeric address of the given family into ss; hostlen < 64. */
static int numeric_addr(int family, const char *host, size_t hostlen, uint16_t port,
                        struct sockaddr_storage *ss, socklen_t *sslen)
{
    char buf[64];
    if (hostlen >= sizeof buf) return -1;
    memcpy(buf, host, hostlen);
    buf[hostlen] = '\0';
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
        if (inet_pton(AF_INET, buf, &sin.sin_addr) != 1) return -1;
        memcpy(ss, &sin, sizeof sin);
        *sslen = sizeof sin;
    } else {
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        if (inet_pton(AF_INET6, buf, &sin6.sin6_addr) != 1) return -1;
        memcpy(ss, &sin6, sizeof sin6);
        *sslen = sizeof sin6;
    }
    return 0;
}

int config_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *host, *port;
    size_t hostlen, portlen;
    bool bracketed;
    uint16_t p;
    if (!s || split_hostport(s, strlen(s), &host, &hostlen, &bracketed, &port, &portlen) < 0 ||
        !port || parse_port(port, portlen, &p) < 0)
        return -1;
    if (bracketed) return numeric_addr(AF_INET6, host, hostlen, p, ss, len);
    if (hostlen == 9 && memcmp(host, "localhost", 9) == 0)
        return numeric_addr(AF_INET, "127.0.0.1", 9, p, ss, len);
    return numeric_addr(AF_INET, host, hostlen, p, ss, len);
}

/* ---------------------------------------------------------------- check hooks */

static int check_listen(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    struct config_server *s = base;
    struct showbuf sb;
    if (config_parse_listen(s->listen, &s->addr, &s->addrlen) < 0)
        return fail(ld, at,
                    "\"listen\": invalid address \"%s\" (expected IPv4:port, [IPv6]:port or "
                    "localhost:port; port 1..65535)",
                    show(&sb, s->listen, strlen(s->listen)));
    return 0;
}

static bool valid_hostname(const char *h, size_t len)
{
    if (len == 0 || len > 253) return false;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' ||
              c == '.' || c == '_'))
            return false;
    }
    return true;
}

/* Numeric first, then the system resolver; IPv4 preferred.  Once, at load
 * time: the gateway never resolves again while running. */
static int resolve_backend(struct loader *ld, const yaml_mark_t *at, struct config_backend *b)
{
    size_t hl = strlen(b->host);
    if (numeric_addr(AF_INET, b->host, hl, b->port, &b->addr, &b->addrlen) == 0) return 0;
    if (numeric_addr(AF_INET6, b->host, hl, b->port, &b->addr, &b->addrlen) == 0) return 0;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    struct showbuf sb;
    int rc = getaddrinfo(b->host, NULL, &hints, &res);
    if (rc != 0)
        return fail(ld, at, "cannot resolve host \"%s\": %s", show(&sb, b->host, hl),
                    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) pick = ai;
    for (const struct addrinfo *ai = res; ai && !pick; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6) pick = ai;
    if (!pick || pick->ai_addrlen < (pick->ai_family == AF_INET ? sizeof(struct sockaddr_in)
                                                             : sizeof(struct sockaddr_in6))) {
        freeaddrinfo(res);
        return fail(ld, at, "cannot resolve host \"%s\": no IPv4 or IPv6 address",
                    show(&sb, b->host, hl));
    }
    memset(&b->addr, 0, sizeof b->addr);
    if (pick->ai_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, pick->ai_addr, sizeof sin);
        sin.sin_port = htons(b->port);
        memcpy(&b->addr, &sin, sizeof sin);
        b->addrlen = sizeof sin;
    } else {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, pick->ai_addr, sizeof sin6);
        sin6.sin6_port = htons(b->port);
        memcpy(&b->addr, &sin6, sizeof sin6);
        b->addrlen = sizeof sin6;
    }
    freeaddrinfo(res);
    return 0;
}

/* http[s]://host[:port][/path]: fills tls, host, port, base_path, addr. */
static int check_url(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    struct config_backend *b = base;
    const char *u = b->url, *rest;
    struct showbuf sb;
    if (strncasecmp(u, "http://", 7) == 0) {
        b->tls = false;
        rest = u + 7;
    } else if (strncasecmp(u, "https://", 8) == 0) {
        b->tls = true;
        rest = u + 8;
    } else {
        return fail(ld, at, "\"url\": expected http://HOST[:PORT][/PATH] or https://..., got \"%s\"",
                    show(&sb, u, strlen(u)));
    }
    if (strpbrk(rest, "?#")) return fail(ld, at, "\"url\": a query or fragment is not allowed");
    const char *slash = strchr(rest, '/');
    size_t authlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (memchr(rest, '@', authlen)) return fail(ld, at, "\"url\": user information is not allowed");

    const char *host, *port;
    size_t hostlen, portlen;
    bool bracketed;
    if (split_hostport(rest, authlen, &host, &hostlen, &bracketed, &port, &portlen) < 0)
        return fail(ld, at, "\"url\": invalid host in \"%s\"", show(&sb, u, strlen(u)));
    if (bracketed) {
        struct sockaddr_storage tmp;
        socklen_t tmplen;
        if (numeric_addr(AF_INET6, host, hostlen, 0, &tmp, &tmplen) < 0)
            return fail(ld, at, "\"url\": invalid IPv6 address in \"%s\"", show(&sb, u, strlen(u)));
    } else if (!valid_hostname(host, hostlen)) {
        return fail(ld, at, "\"url\": invalid host in \"%s\"", show(&sb, u, strlen(u)));
    }
    b->port = b->tls ? 443 : 80;
    if (port && parse_port(port, portlen, &b->port) < 0)
        return fail(ld, at, "\"url\": port must be 1..65535 in \"%s\"", show(&sb, u, strlen(u)));

    size_t pathlen = slash ? strlen(slash) : 0;
    while (pathlen > 0 && slash[pathlen - 1] == '/') pathlen--;
    if (!(b->host = dupn(ld, at, host, hostlen))) return -1;
    if (!(b->base_path = dupn(ld, at, slash ? slash : "", pathlen))) return -1;
    return resolve_backend(ld, at, b);
}

/* The value of the environment variable named by string field f into *out. */
static int read_env_field(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                          const char *n, char **out)
{
    struct showbuf sb;
    bool ok = !is_digit(n[0]);
    for (size_t i = 0; n[i] && ok; i++)
        ok = n[i] == '_' || is_digit(n[i]) || (n[i] >= 'A' && n[i] <= 'Z') ||
             (n[i] >= 'a' && n[i] <= 'z');
    if (!ok)
        return fail(ld, at, "\"%s\": invalid environment variable name \"%s\"", f->name,
                    show(&sb, n, strlen(n)));
    const char *v = getenv(n);
    if (!v || !*v)
        return fail(ld, at, "\"%s\": environment variable %s is not set or empty", f->name,
                    show(&sb, n, strlen(n)));
    *out = dupn(ld, at, v, strlen(v));
    return *out ? 0 : -1;
}

int config_env(struct loader *ld, const struct field *f, const yaml_mark_t *at, const char *name, char **out)
{
    return read_env_field(ld, f, at, name, out);
}

static int check_api_key_env(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                             void *base)
{
    struct config_backend *b = base;
    return read_env_field(ld, f, at, b->api_key_env, &b->api_key);
}

static int check_admin_key_env(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                               void *base)
{
    struct config_admin *a = base;
    return read_env_field(ld, f, at, a->key_env, &a->key);
}

/* an http:// endpoint the gateway calls (hclient.h says which) */
static int check_http_url(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    const char *v = *(char **)((char *)base + f->offset);
    struct hc_url u;
    const char *why;
    if (hc_url_parse(v, &u, &why) < 0) {
        struct showbuf sb;
        return fail(ld, at, "\"%s\": %s (got %s)", f->name, why, show(&sb, v, strlen(v)));
    }
    hc_url_free(&u);
    return 0;
}

/* an HTTP header name: RFC 9110 token characters only */
static int check_http_token(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    const char *v = *(char **)((char *)base + f->offset);
    struct showbuf sb;
    for (size_t i = 0; v[i]; i++) {
        char c = v[i];
        bool ok = is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  (c && strchr("!#$%&'*+-.^_`|~", c));
        if (!ok)
            return fail(ld, at, "\"%s\": not a valid HTTP header name \"%s\"", f->name,
                        show(&sb, v, strlen(v)));
    }
    return 0;
}

static int check_ca_file(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    struct config_backend *b = base;
    struct showbuf sb;
    struct stat st;
    int fd = open(b->ca_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(ld, at, "\"ca_file\": cannot open \"%s\": %s",
                    show(&sb, b->ca_file, strlen(b->ca_file)), strerror(errno));
    int rc = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? 0 : -1;
    close(fd);
    if (rc < 0)
        return fail(ld, at, "\"ca_file\": \"%s\" is not a regular file",
                    show(&sb, b->ca_file, strlen(b->ca_file)));
    return 0;
}

/* health_check / outlier: present (as a mapping, even an empty one) = on */
static int finish_health_check(struct loader *ld, const yaml_node_t *map, void *base)
{
    struct config_health_check *h = base;
    h->enabled = map != NULL;
    return 0;
}

static int finish_outlier(struct loader *ld, const yaml_node_t *map, void *base)
{
    struct config_outlier *o = base;
    o->enabled = map != NULL;
    if (o->enabled && o->max_ejection_ms < o->base_ejection_ms)
        return fail(ld, &map->start_mark, "\"max_ejection\" is shorter than \"base_ejection\" in outlier");
    return 0;
}

static int check_health_path(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    const char *p = *(char **)((char *)base + f->offset);
    if (p[0] != '/')
        return fail(ld, at, "\"%s\" must start with '/' in health_check", f->name);
    return 0;
}

static int finish_backend(struct loader *ld, const yaml_node_t *map, void *base)
{
    struct config_backend *b = base;
    if (b->name) return 0;
    bool v6 = strchr(b->host, ':') != NULL;
    char buf[300];
    int n = snprintf(buf, sizeof buf, v6 ? "[%s]:%u" : "%s:%u", b->host, (unsigned)b->port);
    if (n < 0 || (size_t)n >= sizeof buf) return fail(ld, map ? &map->start_mark : NULL, "host too long");
    b->name = dupn(ld, map ? &map->start_mark : NULL, buf, (size_t)n);
    return b->name ? 0 : -1;
}

static void release_backend(void *base)
{
    struct config_backend *b = base;
    free(b->host);
    free(b->base_path);
    if (b->api_key) explicit_bzero(b->api_key, strlen(b->api_key));
    free(b->api_key);
}

/* ---------------------------------------------------------------- generic walker */

static yaml_node_t *node_at(struct loader *ld, int i) { return yaml_document_get_node(ld->doc, i); }

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;
    return len == 0 || (len == 1 && s[0] == '~') ||
           (len == 4 && (!memcmp(s, "null", 4) || !memcmp(s, "Null", 4) || !memcmp(s, "NULL", 4)));
}

static bool is_quoted(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
}

static const char *expected(const struct field *f, char *buf, size_t cap)
{
    if (f->choices) {
        size_t o = (size_t)snprintf(buf, cap, "one of");
        for (size_t i = 0; f->choices[i] && o < cap; i++)
            o += (size_t)snprintf(buf + o, cap - o, "%s %s", i ? "," : "", f->choices[i]);
        return buf;
    }
    switch (f->type) {
    case T_STR: return "a string";
    case T_UINT: return "a decimal integer";
    case T_SIZE: return "a size such as 1048576, 512KiB, 16MiB or 1GiB";
    case T_DURATION: return "a duration such as 250ms, 10s, 2m or 1h";
    case T_BOOL: return "true or false";
    case T_DOUBLE: return "a number";
    case T_MAP:
    case T_MODULE: return "a mapping";
    case T_LIST: return "a sequence";
    case T_STRLIST: return (f->flags & F_SPACES) ? "a sequence of strings" : "a sequence of names";
    case T_KVMAP: return "a mapping of names to values";
    case T_ENUM: break;
    }
    return "a value";
}

static const char *got(const yaml_node_t *v, char *buf, size_t cap)
{
    struct showbuf sb;
    if (v->type == YAML_MAPPING_NODE) return "a mapping";
    if (v->type == YAML_SEQUENCE_NODE) return "a sequence";
    if (is_null(v)) return "an empty value";
    snprintf(buf, cap, "%s\"%s\"", is_quoted(v) ? "quoted string " : "",
             show(&sb, (const char *)v->data.scalar.value, v->data.scalar.length));
    return buf;
}

static int type_error(struct loader *ld, const struct field *f, const yaml_node_t *v)
{
    char e[160], g[SHOW_MAX + 40];
    return fail(ld, &v->start_mark, "\"%s\": expected %s, got %s", f->name,
                expected(f, e, sizeof e), got(v, g, sizeof g));
}

/* a malformed value from the file, or a malformed default in a table */
static int bad_value(struct loader *ld, const struct field *f, const yaml_node_t *v)
{
    if (v) return type_error(ld, f, v);
    return fail(ld, NULL, "internal error: bad default \"%s\" for \"%s\"", f->def, f->name);
}

static const char *fmt_bound(const struct field *f, uint64_t v, char *buf, size_t cap)
{
    const char *const *units = NULL;
    const uint64_t *mult = NULL;
    size_t nunits = 0;
    if (f->type == T_DURATION) {
        units = duration_units, mult = duration_mult, nunits = 4;
    } else if (f->type == T_SIZE) {
        units = size_units, mult = size_mult, nunits = 3;
    }
    for (size_t i = nunits; i-- > 0;) {
        if (v >= mult[i] && v % mult[i] == 0) {
            snprintf(buf, cap, "%llu%s", (unsigned long long)(v / mult[i]), units[i]);
            return buf;
        }
    }
    snprintf(buf, cap, "%llu", (unsigned long long)v);
    return buf;
}

static int range_error(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                       const char *s, size_t len)
{
    struct showbuf sb;
    char lo[32], hi[32];
    return fail(ld, at, "\"%s\": %s is out of range (%s..%s)", f->name, show(&sb, s, len),
                fmt_bound(f, f->min, lo, sizeof lo), fmt_bound(f, f->max, hi, sizeof hi));
}

static int store_uint(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *p,
                      uint64_t v)
{
    switch (f->width) {
    case sizeof(uint16_t): *(uint16_t *)p = (uint16_t)v; return 0;
    case sizeof(uint32_t): *(uint32_t *)p = (uint32_t)v; return 0;
    case sizeof(uint64_t): *(uint64_t *)p = v; return 0;
    default: return fail(ld, at, "internal error: bad width for \"%s\"", f->name);
    }
}

static int match_choice(const struct field *f, const char *s, size_t len)
{
    for (int i = 0; f->choices[i]; i++)
        if (strlen(f->choices[i]) == len && memcmp(f->choices[i], s, len) == 0) return i;
    return -1;
}

/* One scalar value (from the file, or a default with v == NULL) into base.
 * s is NUL-terminated at s[len] and contains no NUL. */
static int parse_scalar(struct loader *ld, const struct field *f, const yaml_node_t *v,
                        const char *s, size_t len, void *base)
{
    const yaml_mark_t *at = v ? &v->start_mark : NULL;
    void *p = (char *)base + f->offset;
    bool quoted = v && is_quoted(v);
    uint64_t u = 0;
    int rc;

    switch (f->type) {
    case T_STR:
        if (len == 0) return fail(ld, at, "\"%s\": must not be empty", f->name);
        if (len < f->min || len > f->max)
            return fail(ld, at, "\"%s\": length must be %llu..%llu characters", f->name,
                        (unsigned long long)f->min, (unsigned long long)f->max);
        if ((f->flags & F_TOKEN) && has_space_or_ctl(s, len))
            return fail(ld, at, "\"%s\": must not contain whitespace or control characters",
                        f->name);
        if (f->choices && match_choice(f, s, len) < 0) return bad_value(ld, f, v);
        if (!(*(char **)p = dupn(ld, at, s, len))) return -1;
        return f->check ? f->check(ld, f, at, base) : 0;
    case T_UINT:
    case T_SIZE:
    case T_DURATION:
        if (quoted && f->type == T_UINT) return type_error(ld, f, v);
        rc = f->type == T_UINT   ? parse_uint(s, len, &u)
             : f->type == T_SIZE ? parse_size(s, len, &u)
                                 : parse_duration(s, len, &u);
        if (rc == PARSE_BAD) return bad_value(ld, f, v);
        if (rc == PARSE_RANGE || u < f->min || u > f->max) return range_error(ld, f, at, s, len);
        return store_uint(ld, f, at, p, u);
    case T_BOOL:
        if (quoted || !((len == 4 && !memcmp(s, "true", 4)) || (len == 5 && !memcmp(s, "false", 5))))
            return bad_value(ld, f, v);
        *(bool *)p = len == 4;
        return 0;
    case T_DOUBLE: {
        double d = 0;
        if (quoted) return type_error(ld, f, v);
        rc = parse_double(s, len, &d);
        if (rc == PARSE_BAD) return bad_value(ld, f, v);
        if (rc == PARSE_RANGE || d < (double)f->min || d > (double)f->max)
            return range_error(ld, f, at, s, len);
        *(double *)p = d;
        return 0;
    }
    case T_ENUM:
        if ((rc = match_choice(f, s, len)) < 0) return bad_value(ld, f, v);
        *(int *)p = rc;
        return 0;
    case T_MAP:
    case T_MODULE:
    case T_LIST:
    case T_STRLIST:
    case T_KVMAP: break;
    }
    return fail(ld, at, "internal error: \"%s\" is not a scalar field", f->name);
}

static const struct field *find_field(const struct section *sec, const char *k, size_t len)
{
    for (size_t i = 0; i < sec->nfields; i++)
        if (strlen(sec->fields[i].name) == len && memcmp(sec->fields[i].name, k, len) == 0)
            return &sec->fields[i];
    return NULL;
}

/* Optimal string alignment distance (Levenshtein plus transpositions). */
#define DYM_MAX 40
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t rows[3][DYM_MAX + 1], *pp = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++) prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1], best = prev[j - 1] + cost;
            if (prev[j] + 1 < best) best = prev[j] + 1;
            if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < best)
                best = pp[j - 2] + 1;
            cur[j] = best;
        }
        size_t *t = pp;
        pp = prev, prev = cur, cur = t;
    }
    return prev[lb];
}

static int unknown_key(struct loader *ld, const struct section *sec, const yaml_node_t *k)
{
    const char *key = (const char *)k->data.scalar.value;
    size_t klen = k->data.scalar.length, best = SIZE_MAX;
    const char *guess = NULL;
    struct showbuf sb;
    for (size_t i = 0; klen <= DYM_MAX && i < sec->nfields; i++) {
        const char *n = sec->fields[i].name;
        size_t nl = strlen(n);
        if (nl > DYM_MAX) continue;
        size_t d = edit_distance(key, klen, n, nl), limit = nl / 3 < 1 ? 1 : nl / 3 > 2 ? 2 : nl / 3;
        if (d <= limit && d < best) best = d, guess = n;
    }
    if (guess)
        return fail(ld, &k->start_mark, "unknown key \"%s\" %s (did you mean \"%s\"?)",
                    show(&sb, key, klen), sec->where, guess);
    return fail(ld, &k->start_mark, "unknown key \"%s\" %s", show(&sb, key, klen), sec->where);
}

static const yaml_node_t *find_value(struct loader *ld, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    size_t len = strlen(key);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = node_at(ld, p->key);
        if (k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == len &&
            memcmp(k->data.scalar.value, key, len) == 0)
            return node_at(ld, p->value);
    }
    return NULL;
}

static int parse_section(struct loader *ld, const struct section *sec, const yaml_node_t *map,
                         const yaml_mark_t *at, void *base);

static int finish_queue(struct loader *ld, const yaml_node_t *map, void *base)
{
    const struct config_model *m = base;
    if (m->queue_shed_status != 429 && m->queue_shed_status != 503) {
        const yaml_node_t *v = find_value(ld, map, "shed_status");
        return fail(ld, v ? &v->start_mark : map ? &map->start_mark : NULL,
                    "\"shed_status\": must be 429 or 503");
    }
    return 0;
}

/* A shadow names either a configured model (target) or its own backends,
 * and what its selection mode needs. */
static int finish_shadow(struct loader *ld, const yaml_node_t *map, void *base)
{
    struct config_shadow *sh = base;
    const yaml_mark_t *at = map ? &map->start_mark : NULL;
    if (!sh->target == !sh->pool.nbackends)
        return fail(ld, at, "shadow \"%s\": give either \"target\" (a configured model) or \"backends\"",
                    sh->name);
    if (sh->select == SHADOW_SELECT_HEADER && !sh->select_header)
        return fail(ld, at, "shadow \"%s\": select: header needs \"select_header\"", sh->name);
    if (sh->select == SHADOW_SELECT_KEY && !sh->nkeys)
        return fail(ld, at, "shadow \"%s\": select: key needs \"keys\"", sh->name);
    /* the bounds the field table cannot say (it bounds numbers by integers) */
    if (!(sh->autostop_success_min < 1))
        return fail(ld, at, "shadow \"%s\": analysis.stop_below must be below 1 (0 turns auto-stop off)",
                    sh->name);
    if (!(sh->autostop_alpha > 0 && sh->autostop_alpha <= 0.5))
        return fail(ld, at, "shadow \"%s\": analysis.stop_alpha must be in (0, 0.5]", sh->name);
    if (!(sh->rec_alpha > 0 && sh->rec_alpha <= 0.5))
        return fail(ld, at, "shadow \"%s\": recommend.alpha must be in (0, 0.5]", sh->name);
    if (!(sh->rec_quality_margin > 0 && sh->rec_quality_margin < 1))
        return fail(ld, at, "shadow \"%s\": recommend.quality_margin must be in (0, 1)", sh->name);
    return 0;
}

/* The node of list `key`'s element i (for error positions), or NULL. */
static const yaml_node_t *list_item(struct loader *ld, const yaml_node_t *map, const char *key, size_t i)
{
    const yaml_node_t *seq = find_value(ld, map, key);
    if (!seq || seq->type != YAML_SEQUENCE_NODE) return NULL;
    return node_at(ld, seq->data.sequence.items.start[i]);
}

/* Shadows: resolve model names; a shadow with its own backends gets a
 * hidden model of its name, so the pool is balanced, health-checked and
 * measured like any other. */
static int finish_shadows(struct loader *ld, const yaml_node_t *map, struct config *c)
{
    size_t inline_pools = 0, nvisible = c->nmodels;
    for (size_t i = 0; i < c->nshadows; i++) {
        struct config_shadow *sh = &c->shadows[i];
        const yaml_node_t *item = list_item(ld, map, "shadows", i);
        const yaml_mark_t *at = item ? &item->start_mark : NULL;
        const struct config_model *m = config_find_model(c, sh->model, strlen(sh->model));
        if (!m) return fail(ld, at, "shadow \"%s\": no model named \"%s\"", sh->name, sh->model);
        sh->model_index = (size_t)(m - c->models);
        if (sh->target) {
            const struct config_model *t = config_find_model(c, sh->target, strlen(sh->target));
            if (!t) return fail(ld, at, "shadow \"%s\": no target model named \"%s\"", sh->name, sh->target);
            if (t == m) return fail(ld, at, "shadow \"%s\": the target is the mirrored model itself", sh->name);
            sh->target_index = (size_t)(t - c->models);
        } else {
            if (config_find_model(c, sh->name, strlen(sh->name)))
                return fail(ld, at, "shadow \"%s\": a model has the same name (a shadow with backends "
                            "needs a name of its own)", sh->name);
            inline_pools++;
        }
        if (sh->judge_model && !config_find_model(c, sh->judge_model, strlen(sh->judge_model)))
            return fail(ld, at, "shadow \"%s\": no judge model named \"%s\"", sh->name, sh->judge_model);
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->shadows[j].model, sh->model) == 0 && c->shadows[j].target && sh->target &&
                strcmp(c->shadows[j].target, sh->target) == 0)
                return fail(ld, at, "shadow \"%s\": shadow \"%s\" already mirrors %s to %s", sh->name,
                            c->shadows[j].name, sh->model, sh->target);
    }
    if (!inline_pools) return 0;
    struct config_model *nm = realloc(c->models, (nvisible + inline_pools) * sizeof *nm);
    if (!nm) return fail(ld, NULL, "out of memory");
    c->models = nm;
    for (size_t i = 0; i < c->nshadows; i++) {
        struct config_shadow *sh = &c->shadows[i];
        if (sh->target) continue;
        struct config_model *m = &c->models[c->nmodels];
        *m = sh->pool;
        memset(&sh->pool, 0, sizeof sh->pool); /* the model owns the backends now */
        c->nmodels++;
        m->hidden = true;
        m->retry_attempts = 1;
        m->load_factor = 1.25;
        m->affinity_prefix_bytes = 512;
        m->queue_shed_status = 503;
        if (!(m->name = dupn(ld, NULL, sh->name, strlen(sh->name)))) return -1;
        sh->target_index = c->nmodels - 1;
    }
    return 0;
}

/* Rollouts: resolve the models, check the steps and the bounds the field
 * table cannot say; one rollout per public model at a time. */
static int finish_rollouts(struct loader *ld, const yaml_node_t *map, struct config *c)
{
    for (size_t i = 0; i < c->nrollouts; i++) {
        struct config_rollout *ro = &c->rollouts[i];
        const yaml_node_t *item = list_item(ld, map, "rollouts", i);
        const yaml_mark_t *at = item ? &item->start_mark : NULL;
        const struct config_model *m = config_find_model(c, ro->model, strlen(ro->model));
        if (!m || m->hidden) return fail(ld, at, "rollout \"%s\": no model named \"%s\"", ro->name, ro->model);
        const struct config_model *k = config_find_model(c, ro->candidate, strlen(ro->candidate));
        if (!k) return fail(ld, at, "rollout \"%s\": no candidate model named \"%s\"", ro->name, ro->candidate);
        if (k == m) return fail(ld, at, "rollout \"%s\": the candidate is the model itself", ro->name);
        ro->model_index = (size_t)(m - c->models);
        ro->candidate_index = (size_t)(k - c->models);
        for (size_t j = 0; j < i; j++)
            if (c->rollouts[j].model_index == ro->model_index)
                return fail(ld, at, "rollout \"%s\": rollout \"%s\" already moves model \"%s\"", ro->name,
                            c->rollouts[j].name, ro->model);
        if (ro->unit == ROLLOUT_UNIT_HEADER && !ro->unit_header)
            return fail(ld, at, "rollout \"%s\": unit: header needs \"unit_header\"", ro->name);
        if (ro->nsteps > 16) return fail(ld, at, "rollout \"%s\": at most 16 steps", ro->name);
        double prev = 0;
        for (size_t j = 0; j < ro->nsteps; j++) {
            double pc = ro->steps[j].percent;
            if (!(pc > prev && pc < 100))
                return fail(ld, at, "rollout \"%s\": step %zu: percent must be above the previous step's "
                            "(%g) and below 100 (promotion takes it to 100)", ro->name, j + 1, prev);
            prev = pc;
        }
        double *alphas[] = { &ro->alpha, &ro->alpha_promote, &ro->srm_alpha };
        const char *names[] = { "alpha", "alpha_promote", "srm_alpha" };
        for (int a = 0; a < 3; a++)
            if (!(*alphas[a] > 0 && *alphas[a] <= 0.5))
                return fail(ld, at, "rollout \"%s\": %s must be in (0, 0.5]", ro->name, names[a]);
        if (!(ro->success_min < 1)) return fail(ld, at, "rollout \"%s\": success_min must be below 1", ro->name);
        if (!(ro->quality_margin > 0 && ro->quality_margin < 1))
            return fail(ld, at, "rollout \"%s\": quality_margin must be in (0, 1)", ro->name);
        if (ro->quality_judge) {
            const yaml_node_t *q = item ? find_value(ld, item, "quality") : NULL;
            const yaml_node_t *jn = q ? find_value(ld, q, "judge") : NULL;
            const yaml_mark_t *jat = jn ? &jn->start_mark : at;
            const struct config_model *jm = config_find_model(c, ro->quality_judge, strlen(ro->quality_judge));
            if (!jm || jm->hidden)
                return fail(ld, jat, "rollout \"%s\": no judge model named \"%s\"", ro->name, ro->quality_judge);
            if (jm == m || jm == k)
                return fail(ld, jat, "rollout \"%s\": the judge must be neither the model nor the candidate "
                            "(its calls would be split by the rollout)", ro->name);
            if (!(ro->quality_sample_percent > 0))
                return fail(ld, jat, "rollout \"%s\": quality.judge needs quality.sample_percent above 0 (the "
                            "judge judges the quality gate's pairs)", ro->name);
        }
        if (!ro->salt && !(ro->salt = dupn(ld, NULL, ro->name, strlen(ro->name)))) return -1;
        if (ro->shadow) {
            size_t s = 0;
            while (s < c->nshadows && strcmp(c->shadows[s].name, ro->shadow) != 0) s++;
            if (s == c->nshadows)
                return fail(ld, at, "rollout \"%s\": no shadow named \"%s\"", ro->name, ro->shadow);
            if (c->shadows[s].model_index != ro->model_index || c->shadows[s].target_index != ro->candidate_index)
                return fail(ld, at, "rollout \"%s\": shadow \"%s\" must mirror %s to %s", ro->name, ro->shadow,
                            ro->model, ro->candidate);
            ro->shadow_index = s;
        }
    }
    return 0;
}

/* Experiments: resolve the models, check the arms and shares; a public
 * model is split by at most one experiment and is not also in a rollout. */
static int finish_experiments(struct loader *ld, const yaml_node_t *map, struct config *c)
{
    for (size_t i = 0; i < c->nexperiments; i++) {
        struct config_experiment *ex = &c->experiments[i];
        const yaml_node_t *item = list_item(ld, map, "experiments", i);
        const yaml_mark_t *at = item ? &item->start_mark : NULL;
        const struct config_model *m = config_find_model(c, ex->model, strlen(ex->model));
        if (!m || m->hidden) return fail(ld, at, "experiment \"%s\": no model named \"%s\"", ex->name, ex->model);
        ex->model_index = (size_t)(m - c->models);
        for (size_t j = 0; j < c->nrollouts; j++)
            if (c->rollouts[j].model_index == ex->model_index)
                return fail(ld, at, "experiment \"%s\": model \"%s\" is already moved by rollout \"%s\"", ex->name,
                            ex->model, c->rollouts[j].name);
        for (size_t j = 0; j < i; j++)
            if (c->experiments[j].model_index == ex->model_index)
                return fail(ld, at, "experiment \"%s\": experiment \"%s\" already splits model \"%s\"", ex->name,
                            c->experiments[j].name, ex->model);
        if (ex->narms < 2)
            return fail(ld, at, "experiment \"%s\": at least 2 arms (the control first, then the others)",
                        ex->name);
        if (ex->narms > EXPERIMENT_MAX_ARMS)
            return fail(ld, at, "experiment \"%s\": at most %d arms (it has %zu)", ex->name, EXPERIMENT_MAX_ARMS,
                        ex->narms);
        if (ex->unit == ROLLOUT_UNIT_HEADER && !ex->unit_header)
            return fail(ld, at, "experiment \"%s\": unit: header needs \"unit_header\"", ex->name);
        if (!(ex->alpha > 0 && ex->alpha <= 0.5))
            return fail(ld, at, "experiment \"%s\": alpha must be in (0, 0.5]", ex->name);
        const yaml_node_t *arms = item ? find_value(ld, item, "arms") : NULL;
        double sum = 0;
        for (size_t j = 0; j < ex->narms; j++) {
            struct config_experiment_arm *a = &ex->arms[j];
            const yaml_node_t *an = arms && arms->type == YAML_SEQUENCE_NODE
                                        ? node_at(ld, arms->data.sequence.items.start[j]) : NULL;
            const yaml_mark_t *aat = an ? &an->start_mark : at;
            const struct config_model *am = config_find_model(c, a->model, strlen(a->model));
            if (!am || am->hidden)
                return fail(ld, aat, "experiment \"%s\": arm \"%s\": no model named \"%s\"", ex->name, a->name,
                            a->model);
            a->model_index = (size_t)(am - c->models);
            if (!(a->share > 0))
                return fail(ld, aat, "experiment \"%s\": arm \"%s\": share must be above 0", ex->name, a->name);
            sum += a->share;
        }
        if (fabs(sum - 100) > 1e-6)
            return fail(ld, arms ? &arms->start_mark : at,
                        "experiment \"%s\": the arms' shares sum to %g, not 100", ex->name, sum);
        if (ex->judge_model) {
            const yaml_node_t *jn = item ? find_value(ld, item, "judge") : NULL;
            const yaml_node_t *jm_node = jn ? find_value(ld, jn, "model") : NULL;
            const yaml_mark_t *jat = jm_node ? &jm_node->start_mark : jn ? &jn->start_mark : at;
            const struct config_model *jm = config_find_model(c, ex->judge_model, strlen(ex->judge_model));
            if (!jm || jm->hidden)
                return fail(ld, jat, "experiment \"%s\": no judge model named \"%s\"", ex->name, ex->judge_model);
            bool arm_model = jm == m;
            for (size_t j = 0; j < ex->narms; j++)
                arm_model = arm_model || (size_t)(jm - c->models) == ex->arms[j].model_index;
            if (arm_model)
                return fail(ld, jat, "experiment \"%s\": the judge must be neither the experiment's model nor an "
                            "arm's (its calls would be split by the experiment or judged by an arm)", ex->name);
            if (!(ex->judge_sample_percent > 0))
                return fail(ld, jn ? &jn->start_mark : at,
                            "experiment \"%s\": judge.sample_percent must be above 0", ex->name);
        }
        if (!ex->salt && !(ex->salt = dupn(ld, NULL, ex->name, strlen(ex->name)))) return -1;
    }
    return 0;
}

/* Cross-model checks, once every model is parsed: a fallback must name
 * another configured model. */
static int finish_top(struct loader *ld, const yaml_node_t *map, void *base)
{
    struct config *c = base;
    const yaml_node_t *models = find_value(ld, map, "models");
    for (size_t i = 0; i < c->nmodels; i++) {
        const struct config_model *m = &c->models[i];
        for (size_t j = 0; j < m->nfallbacks; j++) {
            const char *fb = m->fallbacks[j];
            bool ok = strcmp(fb, m->name) != 0 && config_find_model(c, fb, strlen(fb)) != NULL;
            if (ok)
                continue;
            const yaml_mark_t *at = NULL;
            if (models && models->type == YAML_SEQUENCE_NODE) {
                const yaml_node_t *item = node_at(ld, models->data.sequence.items.start[i]);
                const yaml_node_t *seq = find_value(ld, item, "fallback");
                const yaml_node_t *e = seq && seq->type == YAML_SEQUENCE_NODE
                                           ? node_at(ld, seq->data.sequence.items.start[j]) : NULL;
                at = e ? &e->start_mark : item ? &item->start_mark : NULL;
            }
            return fail(ld, at, strcmp(fb, m->name) == 0 ? "\"fallback\": model \"%s\" cannot fall back to itself"
                                                         : "\"fallback\": no model named \"%s\"",
                        fb);
        }
    }
    if (finish_shadows(ld, map, c) < 0) return -1;
    if (finish_rollouts(ld, map, c) < 0) return -1;
    return finish_experiments(ld, map, c);
}

/* After element i of a list is parsed: its F_UNIQUE strings must differ
 * from those of elements 0..i-1. */
static int check_unique(struct loader *ld, const struct field *lf, const yaml_node_t *seq,
                        char *arr, size_t i)
{
    const struct section *sub = lf->sub;
    for (size_t fi = 0; fi < sub->nfields; fi++) {
        const struct field *f = &sub->fields[fi];
        if (!(f->flags & F_UNIQUE)) continue;
        const char *mine = *(char **)(arr + i * sub->size + f->offset);
        for (size_t j = 0; mine && j < i; j++) {
            const char *theirs = *(char **)(arr + j * sub->size + f->offset);
            if (!theirs || strcmp(mine, theirs) != 0) continue;
            const yaml_node_t *ei = node_at(ld, seq->data.sequence.items.start[i]);
            const yaml_node_t *ej = node_at(ld, seq->data.sequence.items.start[j]);
            const yaml_node_t *vi = find_value(ld, ei, f->name), *vj = find_value(ld, ej, f->name);
            struct showbuf sb;
            return fail(ld, vi ? &vi->start_mark : &ei->start_mark,
                        "duplicate %s %s \"%s\" (first at line %zu)", sub->name, f->name,
                        show(&sb, mine, strlen(mine)), (vj ? vj : ej)->start_mark.line + 1);
        }
    }
    return 0;
}

static int parse_list(struct loader *ld, const struct field *f, const yaml_node_t *v, void *base)
{
    const struct section *sub = f->sub;
    if (v->type != YAML_SEQUENCE_NODE) return type_error(ld, f, v);
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n < f->min) return fail(ld, &v->start_mark, "\"%s\": must not be empty", f->name);
    if (n > f->max) return fail(ld, &v->start_mark, "\"%s\": too many entries", f->name);
    if (n == 0) return 0;
    char *arr = calloc(n, sub->size);
    if (!arr) return fail(ld, &v->start_mark, "out of memory");
    memcpy((char *)base + f->offset, &arr, sizeof arr);
    memcpy((char *)base + f->count_offset, &n, sizeof n); /* zeroed: safe to free as is */
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = node_at(ld, v->data.sequence.items.start[i]);
        char g[SHOW_MAX + 40];
        if (!item) return fail(ld, &v->start_mark, "internal error: missing node");
        if (item->type != YAML_MAPPING_NODE)
            return fail(ld, &item->start_mark, "\"%s\": each entry must be a mapping, got %s",
                        f->name, got(item, g, sizeof g));
        if (parse_section(ld, sub, item, &item->start_mark, arr + i * sub->size) < 0) return -1;
        if (check_unique(ld, f, v, arr, i) < 0) return -1;
    }
    return 0;
}

static int parse_strlist(struct loader *ld, const struct field *f, const yaml_node_t *v, void *base)
{
    if (v->type != YAML_SEQUENCE_NODE) return type_error(ld, f, v);
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n == 0) return 0;
    char **arr = calloc(n, sizeof *arr);
    if (!arr) return fail(ld, &v->start_mark, "out of memory");
    memcpy((char *)base + f->offset, &arr, sizeof arr);
    memcpy((char *)base + f->count_offset, &n, sizeof n); /* zeroed: safe to free as is */
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = node_at(ld, v->data.sequence.items.start[i]);
        if (!item) return fail(ld, &v->start_mark, "internal error: missing node");
        if (item->type != YAML_SCALAR_NODE || is_null(item)) return type_error(ld, f, item);
        const char *str = (const char *)item->data.scalar.value;
        size_t len = item->data.scalar.length;
        if ((f->flags & F_SPACES) && len > 0 && len <= f->max && !memchr(str, '\0', len) && !has_ctl(str, len))
            ;
        else if (len == 0 || len > f->max || memchr(str, '\0', len) || has_space_or_ctl(str, len))
            return fail(ld, &item->start_mark, "\"%s\": each entry must be %s of 1..%llu characters%s",
                        f->name, (f->flags & F_SPACES) ? "a string" : "a name", (unsigned long long)f->max,
                        (f->flags & F_SPACES) ? " without control characters" : " without whitespace");
        for (size_t j = 0; j < i; j++)
            if (strlen(arr[j]) == len && memcmp(arr[j], str, len) == 0)
                return fail(ld, &item->start_mark, "\"%s\": \"%s\" is listed twice", f->name, arr[j]);
        if (!(arr[i] = dupn(ld, &item->start_mark, str, len))) return -1;
    }
    return 0;
}

/* "set: {temperature: 0, top_p: 0.9, user: shadow}" — each value becomes
 * JSON text: plain true/false/null and numbers stay as written, anything
 * else (including quoted scalars) becomes a JSON string. */
static int parse_kvmap(struct loader *ld, const struct field *f, const yaml_node_t *v, void *base)
{
    static const char *const reserved[] = {"model", "messages", "prompt", "stream", "stream_options", NULL};
    if (v->type != YAML_MAPPING_NODE) return type_error(ld, f, v);
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    if (n == 0) return 0;
    struct config_override *arr = calloc(n, sizeof *arr);
    if (!arr) return fail(ld, &v->start_mark, "out of memory");
    memcpy((char *)base + f->offset, &arr, sizeof arr);
    memcpy((char *)base + f->count_offset, &n, sizeof n);
    struct showbuf sb;
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
        const yaml_node_t *k = node_at(ld, p->key), *val = node_at(ld, p->value);
        if (!k || !val) return fail(ld, &v->start_mark, "internal error: missing node");
        const char *key = (const char *)k->data.scalar.value;
        size_t klen = k->type == YAML_SCALAR_NODE ? k->data.scalar.length : 0;
        if (klen == 0 || klen > 64 || has_space_or_ctl(key, klen) || memchr(key, '"', klen) ||
            memchr(key, '\\', klen))
            return fail(ld, &k->start_mark, "\"%s\": keys must be parameter names of 1..64 characters", f->name);
        for (size_t r = 0; reserved[r]; r++)
            if (strlen(reserved[r]) == klen && memcmp(reserved[r], key, klen) == 0)
                return fail(ld, &k->start_mark, "\"%s\": \"%s\" cannot be overridden here%s", f->name,
                            reserved[r], r == 0 ? " (use upstream_model)" : r >= 3 ? " (use stream)" : "");
        for (size_t j = 0; j < i; j++)
            if (strlen(arr[j].key) == klen && memcmp(arr[j].key, key, klen) == 0)
                return fail(ld, &k->start_mark, "duplicate key \"%s\" in %s", show(&sb, key, klen), f->name);
        if (val->type != YAML_SCALAR_NODE)
            return fail(ld, &val->start_mark, "\"%s\": values must be scalars (numbers, booleans, strings)",
                        f->name);
        const char *vs = (const char *)val->data.scalar.value;
        size_t vlen = val->data.scalar.length;
        if (memchr(vs, '\0', vlen)) return fail(ld, &val->start_mark, "\"%s\": contains a NUL byte", f->name);
        if (!(arr[i].key = dupn(ld, &k->start_mark, key, klen))) return -1;
        double d;
        bool raw = !is_quoted(val) && (is_null(val) || (vlen == 4 && !memcmp(vs, "true", 4)) ||
                                       (vlen == 5 && !memcmp(vs, "false", 5)) ||
                                       parse_double(vs, vlen, &d) == PARSE_OK);
        if (raw) {
            arr[i].json = is_null(val) ? dupn(ld, &val->start_mark, "null", 4) : dupn(ld, &val->start_mark, vs, vlen);
        } else {
            size_t cap = vlen * 6 + 4;
            char *j = malloc(cap);
            long jl = j ? json_escape(vs, vlen, j, cap - 1) : -1;
            if (jl < 0) {
                free(j);
                return fail(ld, &val->start_mark, "\"%s\": value is not valid UTF-8", f->name);
            }
            j[jl] = '\0';
            arr[i].json = j;
        }
        if (!arr[i].json) return -1;
    }
    return 0;
}

/* Where a T_MAP or T_MODULE field's section is stored: inside base, or (a
 * module's, at the top level: base is the config) in the module's blob. */
static void *sub_base(const struct field *f, void *base)
{
    if (f->type == T_MODULE) return ((struct config *)base)->mod_conf[f->offset];
    return (char *)base + f->offset;
}

static int parse_value(struct loader *ld, const struct field *f, const yaml_node_t *v, void *base)
{
    switch (f->type) {
    case T_MAP:
    case T_MODULE:
        if (is_null(v)) /* "server:" with everything commented out */
            return parse_section(ld, f->sub, NULL, &v->start_mark, sub_base(f, base));
        if (v->type != YAML_MAPPING_NODE) return type_error(ld, f, v);
        return parse_section(ld, f->sub, v, &v->start_mark, sub_base(f, base));
    case T_LIST: return parse_list(ld, f, v, base);
    case T_STRLIST: return parse_strlist(ld, f, v, base);
    case T_KVMAP: return parse_kvmap(ld, f, v, base);
    default: break;
    }
    if (v->type != YAML_SCALAR_NODE || is_null(v)) return type_error(ld, f, v);
    const char *s = (const char *)v->data.scalar.value;
    size_t len = v->data.scalar.length;
    if (memchr(s, '\0', len)) return fail(ld, &v->start_mark, "\"%s\": contains a NUL byte", f->name);
    return parse_scalar(ld, f, v, s, len, base);
}

static int apply_default(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    if (f->type == T_MAP || f->type == T_MODULE) return parse_section(ld, f->sub, NULL, at, sub_base(f, base));
    if (!f->def || f->type == T_LIST || f->type == T_STRLIST || f->type == T_KVMAP) return 0;
    return parse_scalar(ld, f, NULL, f->def, strlen(f->def), base);
}

/* map: a mapping node, or NULL for an absent/empty section (all defaults).
 * at: where to report a missing required key. */
static int parse_section(struct loader *ld, const struct section *sec, const yaml_node_t *map,
                         const yaml_mark_t *at, void *base)
{
    uint64_t seen = 0;
    struct showbuf sb;
    if (map) {
        yaml_node_pair_t *start = map->data.mapping.pairs.start;
        for (yaml_node_pair_t *p = start; p < map->data.mapping.pairs.top; p++) {
            const yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
            if (!k || !v) return fail(ld, &map->start_mark, "internal error: missing node");
            if (k->type != YAML_SCALAR_NODE)
                return fail(ld, &k->start_mark, "keys %s must be plain names", sec->where);
            const char *key = (const char *)k->data.scalar.value;
            size_t klen = k->data.scalar.length;
            for (yaml_node_pair_t *q = start; q < p; q++) {
                const yaml_node_t *prev = node_at(ld, q->key);
                if (prev && prev->type == YAML_SCALAR_NODE && prev->data.scalar.length == klen &&
                    memcmp(prev->data.scalar.value, key, klen) == 0)
                    return fail(ld, &k->start_mark, "duplicate key \"%s\" %s (first at line %zu)",
                                show(&sb, key, klen), sec->where, prev->start_mark.line + 1);
            }
            const struct field *f = find_field(sec, key, klen);
            if (!f) return unknown_key(ld, sec, k);
            seen |= 1ull << (f - sec->fields);
            if (parse_value(ld, f, v, base) < 0) return -1;
        }
    }
    for (size_t i = 0; i < sec->nfields; i++) {
        const struct field *f = &sec->fields[i];
        if (seen & (1ull << i)) continue;
        if (f->flags & F_REQUIRED)
            return fail(ld, at, "missing required key \"%s\" %s", f->name, sec->where);
        if (apply_default(ld, f, at, base) < 0) return -1;
    }
    return sec->finish ? sec->finish(ld, map, base) : 0;
}

static void free_section(const struct section *sec, void *base)
{
    /* first: what a hook allocated may hang off the table's fields (auth's
     * key records off its keys list), which are freed below */
    if (sec->release) sec->release(base);
    for (size_t i = 0; i < sec->nfields; i++) {
        const struct field *f = &sec->fields[i];
        char *p = (char *)base + f->offset;
        switch (f->type) {
        case T_STR: free(*(char **)p); break;
        case T_MAP: free_section(f->sub, p); break;
        case T_LIST: {
            char *arr;
            size_t n;
            memcpy(&arr, p, sizeof arr);
            memcpy(&n, (char *)base + f->count_offset, sizeof n);
            for (size_t j = 0; arr && j < n; j++) free_section(f->sub, arr + j * f->sub->size);
            free(arr);
            break;
        }
        case T_STRLIST: {
            char **arr;
            size_t n;
            memcpy(&arr, p, sizeof arr);
            memcpy(&n, (char *)base + f->count_offset, sizeof n);
            for (size_t j = 0; arr && j < n; j++) free(arr[j]);
            free(arr);
            break;
        }
        case T_KVMAP: {
            struct config_override *arr;
            size_t n;
            memcpy(&arr, p, sizeof arr);
            memcpy(&n, (char *)base + f->count_offset, sizeof n);
            for (size_t j = 0; arr && j < n; j++) free(arr[j].key), free(arr[j].json);
            free(arr);
            break;
        }
        default: break;
        }
    }
}

/* ---------------------------------------------------------------- loading */

static int read_whole_file(struct loader *ld, char **out, size_t *outlen)
{
    int fd = open(ld->file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail_file(ld, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return fail_file(ld, "cannot open: %s", strerror(EISDIR));
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            close(fd);
            return fail_file(ld, "out of memory");
        }
        if (len == cap) {
            if (cap >= CONFIG_MAX_FILE_BYTES) {
                free(buf);
                close(fd);
                return fail_file(ld, "file too large (limit %u bytes)", CONFIG_MAX_FILE_BYTES);
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
            continue;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return fail_file(ld, "cannot read: %s", strerror(e));
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    *out = buf;
    *outlen = len;
    return 0;
}

static int syntax_error(struct loader *ld, const yaml_parser_t *p, const char *text, size_t len)
{
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_MEMORY_ERROR) return fail(ld, NULL, "out of memory while parsing YAML");
    if (p->error == YAML_READER_ERROR) { /* only an offset: count lines ourselves */
        yaml_mark_t m = {0, 0, 0};
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (text[i] == '\n') m.line++, m.column = 0;
            else if (((unsigned char)text[i] & 0xC0) != 0x80) m.column++;
        }
        if (p->problem_value != -1)
            return fail(ld, &m, "%s (byte 0x%02X)", problem, (unsigned)p->problem_value);
        return fail(ld, &m, "%s", problem);
    }
    if (p->context)
        return fail(ld, &p->problem_mark, "%s (%s at line %zu, column %zu)", problem, p->context,
                    p->context_mark.line + 1, p->context_mark.column + 1);
    return fail(ld, &p->problem_mark, "%s", problem);
}

/* The top level: the core's keys, then a row for each module's section,
 * whose blob is allocated here (zeroed, so it is safe to free as is). */
static int module_sections(struct loader *ld, struct config *c, const struct section *const *secs, size_t n,
                           struct field *top, struct section *sec)
{
    *sec = top_section;
    sec->fields = top;
    memcpy(top, top_fields, sizeof top_fields);
    size_t nt = NFIELDS(top_fields);
    if (n > CONFIG_MAX_MODULE_SECTIONS)
        return fail_file(ld, "internal error: more than %d module sections", CONFIG_MAX_MODULE_SECTIONS);
    if (n && (!(c->mod_sec = calloc(n, sizeof *c->mod_sec)) || !(c->mod_conf = calloc(n, sizeof *c->mod_conf))))
        return fail_file(ld, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const struct section *ms = secs[i];
        for (size_t j = 0; j < nt; j++)
            if (strcmp(top[j].name, ms->name) == 0)
                return fail_file(ld, "internal error: two sections \"%s\"", ms->name);
        if (!(c->mod_conf[i] = calloc(1, ms->size ? ms->size : 1))) return fail_file(ld, "out of memory");
        c->mod_sec[i] = ms;
        c->nmod_conf = i + 1;
        top[nt++] = (struct field){ .name = ms->name, .type = T_MODULE, .offset = i, .sub = ms };
    }
    sec->nfields = nt;
    return 0;
}

int config_load_with(const char *file, const struct section *const *sections, size_t n, struct config **out,
                     char *err, size_t errlen)
{
    struct loader ld = {.file = file ? file : "(null)", .err = err, .errlen = errlen};
    char *text = NULL;
    size_t len = 0;
    if (out) *out = NULL;
    if (err && errlen) err[0] = '\0';
    if (!file || !out) return fail_file(&ld, "invalid arguments");
    if (read_whole_file(&ld, &text, &len) < 0) return -1;

    struct config *c = calloc(1, sizeof *c);
    struct field top[NFIELDS(top_fields) + CONFIG_MAX_MODULE_SECTIONS];
    struct section top_sec;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_doc = false;
    int rc = -1;
    if (!c || !(c->path = strdup(file))) {
        fail_file(&ld, "out of memory");
        goto out_text;
    }
    if (module_sections(&ld, c, sections, n, top, &top_sec) < 0) goto out_text;
    if (!yaml_parser_initialize(&parser)) {
        fail_file(&ld, "out of memory");
        goto out_text;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&ld, &parser, text, len);
        goto out_parser;
    }
    have_doc = true;
    ld.doc = &doc;

    /* the whole stream must be well-formed and hold one document */
    if (!yaml_parser_load(&parser, &extra)) {
        syntax_error(&ld, &parser, text, len);
        goto out_parser;
    }
    bool extra_root = yaml_document_get_root_node(&extra) != NULL;
    yaml_mark_t extra_mark = extra.start_mark;
    yaml_document_delete(&extra);
    if (extra_root) {
        fail(&ld, &extra_mark, "only one YAML document is allowed");
        goto out_parser;
    }

    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root)
        fail(&ld, NULL, "empty configuration (expected a mapping with at least \"models\")");
    else if (root->type != YAML_MAPPING_NODE)
        fail(&ld, NULL, "the top level must be a mapping (server:, models:)");
    else
        rc = parse_section(&ld, &top_sec, root, &root->start_mark, c);

out_parser:
    if (have_doc) yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
out_text:
    free(text);
    if (rc < 0) config_free(c);
    else *out = c;
    return rc;
}

void config_free(struct config *c)
{
    if (!c) return;
    free_section(&top_section, c);
    for (size_t i = 0; i < c->nmod_conf; i++) {
        free_section(c->mod_sec[i], c->mod_conf[i]);
        free(c->mod_conf[i]);
    }
    free(c->mod_conf);
    free(c->mod_sec);
    free(c->path);
    free(c);
}

const struct config_model *config_find_model(const struct config *c, const char *name, size_t len)
{
    if (!c || !name) return NULL;
    for (size_t i = 0; i < c->nmodels; i++) {
        const char *n = c->models[i].name;
        if (n && strnlen(n, len + 1) == len && memcmp(n, name, len) == 0) return &c->models[i];
    }
    return NULL;
}
