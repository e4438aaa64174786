/* gateway.c — lookups over the running gateway; its set-up is server.c's. */
#include "gateway.h"

#include <string.h>

const struct model_rt *gateway_find_model(const struct gateway *gw, const char *name, size_t len)
{
    for (size_t i = 0; i < gw->nmodels; i++) {
        const char *n = gw->models[i].cfg->name;
        if (!gw->models[i].cfg->hidden && strlen(n) == len && memcmp(n, name, len) == 0)
            return &gw->models[i];
    }
    return NULL;
}

bool gateway_ready(const struct gateway *gw, uint64_t now_ms)
{
    for (size_t i = 0; i < gw->nmodels; i++) {
        bool any = gw->models[i].cfg->hidden; /* a shadow's pool never makes the gateway unready */
        for (size_t b = 0; b < gw->models[i].n && !any; b++)
            any = backend_is_up(gw->models[i].backends[b], now_ms);
        if (!any)
            return false;
    }
    return true;
}
