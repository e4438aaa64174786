/* mod_set.c — a model's `set:` parameters (doc/config.md), forced on every
 * request routed to it: each replaces the client's member of that name, or
 * is added.  The request's body is replaced (pl_set_body), so the upstream,
 * the shadow legs, the access log and the token estimates all see the
 * parameters the model was really asked with. */
#include "buf.h"
#include "gateway.h"
#include "module.h"

static bool forced(const struct json_span *key, void *arg)
{
    const struct config_model *mc = arg;
    return pl_override_named(mc->set, mc->nset, key);
}

static enum pl_rc set_request(struct pl_req *q, void *ctx)
{
    const struct config_model *mc = q->m->cfg;
    if (!mc->nset)
        return PL_NEXT;
    struct buf out = { 0 };
    buf_append(&out, "{", 1);
    size_t kept = pl_write_members(&out, &q->root, forced, (void *)mc);
    pl_write_overrides(&out, mc->set, mc->nset, kept > 0);
    buf_append(&out, "}", 1);
    return pl_take_body(q, &out);
}

const struct pl_module mod_set = {
    .name = "set",
    .phase = PH_ROUTE,
    .on_request = set_request,
};
