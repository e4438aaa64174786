/* modules.c — THE table of modules.  A feature is one file with a
 * `const struct pl_module` and a row here; nothing else in the core knows
 * it exists (doc/modules.md).
 *
 * The order of the rows is the policy.  Within a phase, modules run top to
 * bottom (keys before limits, limits before the cache: a cached answer
 * still counts against a key).  At finish, observers run top to bottom
 * too: metrics first (cheapest, never blocks), then the request span and
 * the access line, which read the same outcome, then shadowing, which hands
 * the primary's answer to the pair store.
 */
#include "config.h"
#include "module.h"

extern const struct pl_module mod_auth, mod_keys, mod_limit, mod_rollout, mod_experiment, mod_set, mod_usage, mod_backend_header,
    mod_metrics, mod_trace, mod_accesslog, mod_shadow, mod_shadow_admin;

const struct pl_module *const pl_modules[] = {
    &mod_auth,               /* auth: API keys, lockout (auth.c) */
    &mod_keys,               /* virtual keys: /admin/keys…, per-key metrics (keys_admin.c) */
    &mod_limit,              /* limit: requests, tokens, concurrency, budgets per key (limit.c) */
    /* request phases: guard, cache — none yet */
    &mod_rollout,            /* route, first: the arm of a rollout (the candidate serves as its own model) */
    &mod_experiment,         /* route, after rollouts: the arm of an experiment (an arm's model serves it) */
    &mod_set,                /* route: the serving model's forced parameters */
    &mod_usage,              /* route, after set: exact usage for streams (a response transform) */
    &mod_backend_header,     /* response head: x-shade-backend when exposed */
    &mod_metrics,
    &mod_trace,
    &mod_accesslog,
    &mod_shadow,
    &mod_shadow_admin,       /* /admin/shadows…, the shadow and judge metrics */
};
const size_t pl_nmodules = sizeof pl_modules / sizeof pl_modules[0];

/* The gateway's config: the core's sections and those the table's modules
 * bring (pl_module.config). */
int config_load(const char *file, struct config **out, char *err, size_t errlen)
{
    const struct section *secs[PL_MAX_MODULES];
    size_t n = 0;
    for (size_t i = 0; i < pl_nmodules && n < PL_MAX_MODULES; i++)
        if (pl_modules[i]->config)
            secs[n++] = pl_modules[i]->config;
    return config_load_with(file, secs, n, out, err, errlen);
}
