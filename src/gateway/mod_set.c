/* mod_set.c — a model's `set:` parameters (doc/config.md), forced on every
 * request routed to it: each replaces the client's member of that name, or
 * is added.  The request's body is replaced (pl_set_body), so the upstream,
 * the shadow legs, the access log and the token estimates all see the
 * parameters the model was really asked with. */
#include <stdlib.h>

#include "buf.h"
#include "gateway.h"
#include "module.h"

static enum pl_rc set_request(struct pl_req *q, void *ctx)
{
    const struct config_model *mc = q->m->cfg;
    if (!mc->nset)
        return PL_NEXT;
    struct buf out = { 0 };
    buf_append(&out, "{", 1);
    struct json_span key, val;
    size_t it = 0;
    bool first = true;
    while (json_next(&q->root, &it, &key, &val)) {
        bool replaced = false;
        for (size_t i = 0; i < mc->nset && !replaced; i++)
            replaced = json_str_eq(&key, mc->set[i].key);
        if (replaced)
            continue;
        if (!first)
            buf_append(&out, ",", 1);
        first = false;
        buf_append(&out, key.p, key.len);
        buf_append(&out, ":", 1);
        buf_append(&out, val.p, val.len);
    }
    for (size_t i = 0; i < mc->nset; i++) {
        buf_printf(&out, "%s\"%s\":%s", first ? "" : ",", mc->set[i].key, mc->set[i].json);
        first = false;
    }
    buf_append(&out, "}", 1);
    if (!buf_data(&out)) {
        buf_free(&out);
        pl_set_error(q, 500, "server_error", NULL, NULL, "out of memory");
        return PL_ERROR;
    }
    /* the request owns the bytes from here (a buf's data starts at p) */
    return pl_set_body(q, out.p, buf_used(&out)) ? PL_ERROR : PL_NEXT;
}

const struct pl_module mod_set = {
    .name = "set",
    .phase = PH_ROUTE,
    .on_request = set_request,
};
