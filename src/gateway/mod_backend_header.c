/* mod_backend_header.c — `x-shade-backend: NAME` on responses, when
 * server.expose_backend_header is on.  Off by default: a backend's name
 * defaults to its host:port, an internal address clients must not see. */
#include <string.h>

#include "gateway.h"
#include "module.h"

static void backend_header_head(struct pl_req *q, void *ctx, const struct pl_head *h)
{
    if (!q->w->gw->cfg->server.expose_backend_header || !h->be)
        return;
    const char *bn = h->be->cfg->name;
    pl_head_add(h, "x-shade-backend", bn, strlen(bn));
}

const struct pl_module mod_backend_header = {
    .name = "backend_header",
    .phase = PH_NONE,
    .on_head = backend_header_head,
};
