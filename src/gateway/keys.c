/* keys.c — key records (keys.h) and the virtual keys: the store's table,
 * the serving process's copy of it, /admin/keys…, `shade keys`, the spend
 * ledger (doc/keys.md). */
#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

void key_hold(const struct key_rec *k)
{
    if (k && !k->pinned)
        atomic_fetch_add(&((struct key_rec *)k)->refs, 1);
}

static void key_free(struct key_rec *k)
{
    for (size_t i = 0; i < k->nmodels; i++)
        free(k->models[i]);
    free(k->models);
    for (size_t i = 0; i < k->nmlim; i++)
        free(k->mlim[i].model);
    free(k->mlim);
    free(k->id);
    free(k->name);
    free(k->prefix);
    free(k);
}

void key_release(const struct key_rec *k)
{
    if (k && !k->pinned && atomic_fetch_sub(&((struct key_rec *)k)->refs, 1) == 1)
        key_free((struct key_rec *)k);
}

const struct key_limits *key_model_limits(const struct key_rec *k, const char *model)
{
    for (size_t i = 0; k && model && i < k->nmlim; i++)
        if (strcmp(k->mlim[i].model, model) == 0)
            return &k->mlim[i].lim;
    return NULL;
}

/* ---- virtual keys: not built yet (issue 13) ---- */

int keys_start(const struct config *cfg, char *err, size_t errlen)
{
    (void)cfg, (void)err, (void)errlen;
    return 0;
}

void keys_stop(void) {}

const struct key_rec *keys_acquire(const unsigned char digest[32])
{
    (void)digest;
    return NULL;
}

void keys_record_usage(const struct key_rec *k, const char *model, int64_t tokens_in, int64_t tokens_out,
                       double cost_usd)
{
    (void)k, (void)model, (void)tokens_in, (void)tokens_out, (void)cost_usd;
}

double keys_period_spend(const struct key_rec *k, int64_t now_unix)
{
    (void)k, (void)now_unix;
    return 0;
}

int keys_cli(const char *config_path, int argc, char **argv)
{
    (void)config_path, (void)argc, (void)argv;
    fprintf(stderr, "shade keys: not built yet\n");
    return 2;
}

const struct pl_module mod_keys = {
    .name = "keys",
    .phase = PH_NONE,
};
