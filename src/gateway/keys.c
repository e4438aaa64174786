/* keys.c — key records (keys.h): references and lookups.  The virtual
 * keys are in keys_spec.c (what a key is made of), keys_store.c (the
 * store), keys_table.c (a serving process's table, the spend ledger),
 * keys_admin.c (/admin/keys…) and keys_cli.c (`shade keys`); doc/keys.md. */
#include "keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


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

void key_period_days(int period, int64_t day, int64_t *first, int64_t *next)
{
    if (period == KEY_PERIOD_WEEK) { /* 1970-01-01 was a Thursday */
        *first = day - (day + 3) % 7;
        *next = *first + 7;
    } else if (period == KEY_PERIOD_MONTH) {
        time_t t = (time_t)(day * 86400);
        struct tm tm;
        gmtime_r(&t, &tm);
        *first = day - (tm.tm_mday - 1);
        struct tm nx = { .tm_year = tm.tm_mon == 11 ? tm.tm_year + 1 : tm.tm_year, .tm_mon = (tm.tm_mon + 1) % 12,
                         .tm_mday = 1 };
        *next = (int64_t)timegm(&nx) / 86400;
    } else {
        *first = day;
        *next = day + 1;
    }
}

const struct key_limits *key_model_limits(const struct key_rec *k, const char *model)
{
    for (size_t i = 0; k && model && i < k->nmlim; i++)
        if (strcmp(k->mlim[i].model, model) == 0)
            return &k->mlim[i].lim;
    return NULL;
}
