/* pipeline.c — the engine that runs a request through the table of modules
 * (module.h explains the hooks; modules.c holds the table). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "loop.h"
#include "module.h"
#include "keys.h"

#define ALIGN16(x) (((x) + 15u) & ~(size_t)15u)

int pl_engine_init(struct pl_engine *e, const struct pl_module *const *mods, size_t n, const struct pl_core *core,
                   size_t core_size)
{
    memset(e, 0, sizeof *e);
    if (n > PL_MAX_MODULES)
        return -1;
    e->mods = mods;
    e->n = n;
    e->core = core;
    e->core_size = ALIGN16(core_size);
    size_t off = e->core_size;
    for (size_t i = 0; i < n; i++) {
        const struct pl_module *m = mods[i];
        e->ctx_off[i] = off;
        off += ALIGN16(m->ctx_size);
        if (m->on_request && m->phase < PH__COUNT)
            e->phase_mods[m->phase][e->nphase[m->phase]++] = (uint8_t)i;
        if (m->on_sent)
            e->sent_mods[e->nsent++] = (uint8_t)i;
        if (m->on_event)
            e->event_mods[e->nevent++] = (uint8_t)i;
        if (m->rewrite)
            e->xform_mods[e->nxform++] = (uint8_t)i;
        if (m->on_finish)
            e->finish_mods[e->nfinish++] = (uint8_t)i;
        if (m->on_head)
            e->head_mods[e->nhead++] = (uint8_t)i;
        if (m->on_arrival)
            e->arrival_mods[e->narrival++] = (uint8_t)i;
    }
    e->total = off;
    return 0;
}

struct pl_req *pl_req_alloc(const struct pl_engine *e)
{
    struct pl_req *q = calloc(1, e->total);
    if (q)
        q->eng = e;
    return q;
}

void *pl_ctx(struct pl_req *q, size_t i) { return (char *)q + q->eng->ctx_off[i]; }

void pl_ovh_begin(struct pl_req *q)
{
    if (!q->seg_start)
        q->seg_start = mono_ns();
}

void pl_ovh_end(struct pl_req *q)
{
    if (q->seg_start) {
        q->ovh_ns += mono_ns() - q->seg_start;
        q->seg_start = 0;
    }
}

void pl_set_error(struct pl_req *q, int status, const char *type, const char *code, const char *param,
                  const char *fmt, ...)
{
    q->error.status = status;
    q->error.type = type;
    q->error.code = code;
    q->error.param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->error.message, sizeof q->error.message, fmt, ap);
    va_end(ap);
}

/* Act on a module's answer; true when the phases go on. */
static bool settle(struct pl_req *q, enum pl_rc rc)
{
    const struct pl_core *core = q->eng->core;
    switch (rc) {
    case PL_NEXT:
        return true;
    case PL_WAIT:
        /* the wait is the I/O's time, not shade's */
        q->waiting = true;
        pl_ovh_end(q);
        return false;
    case PL_DONE:
        core->answered(q);
        return false;
    case PL_ERROR:
    default:
        if (!q->error.status)
            pl_set_error(q, 500, "server_error", NULL, NULL, "internal error in a request phase");
        core->failed(q);
        return false;
    }
}

void pl_run(struct pl_req *q)
{
    const struct pl_engine *e = q->eng;
    while (q->phase < PH__COUNT) {
        while (q->next < e->nphase[q->phase]) {
            size_t i = e->phase_mods[q->phase][q->next++];
            if (!settle(q, e->mods[i]->on_request(q, pl_ctx(q, i))))
                return;
        }
        q->phase++;
        q->next = 0;
    }
    e->core->proceed(q);
}

bool pl_arrival(struct pl_req *q)
{
    const struct pl_engine *e = q->eng;
    for (size_t k = 0; k < e->narrival; k++) {
        size_t i = e->arrival_mods[k];
        enum pl_rc rc = e->mods[i]->on_arrival(q, pl_ctx(q, i));
        if (rc == PL_WAIT) { /* not allowed here: a bug in the module */
            pl_set_error(q, 500, "server_error", NULL, NULL, "internal error before decoding");
            rc = PL_ERROR;
        }
        if (!settle(q, rc))
            return false;
    }
    return true;
}

void pl_resume(struct pl_req *q, enum pl_rc rc)
{
    /* a module that was told of the end (on_finish) must not resume; the
     * engine cannot check that after the request is freed, so this guards
     * only a resume that comes while the request still exists */
    if (!q->waiting || q->finished)
        return;
    q->waiting = false;
    pl_ovh_begin(q);
    if (settle(q, rc))
        pl_run(q);
}

int pl_set_body(struct pl_req *q, char *body, size_t len)
{
    free(q->owned_body);
    q->owned_body = body;
    q->body = body;
    q->body_len = len;
    return q->eng->core->rebody(q);
}

void pl_transform(struct pl_req *q, const struct pl_module *self)
{
    const struct pl_engine *e = q->eng;
    for (size_t i = 0; i < e->n; i++)
        if (e->mods[i] == self && self->rewrite)
            q->xform |= 1u << i;
}

bool pl_rewrite(struct pl_req *q, const struct pl_payload *in, struct buf scratch[2], const char **out,
                size_t *out_len)
{
    const struct pl_engine *e = q->eng;
    struct pl_payload cur = *in;
    struct json_span root;
    int k = 0;
    for (size_t j = 0; j < e->nxform; j++) {
        size_t i = e->xform_mods[j];
        if (!(q->xform & (1u << i)))
            continue;
        struct buf *b = &scratch[k];
        buf_reset(b);
        if (!e->mods[i]->rewrite(q, pl_ctx(q, i), &cur, b))
            continue;
        if (!buf_used(b))
            return false;
        cur.data = buf_data(b);
        cur.len = buf_used(b);
        /* the next transform reads what this one wrote, parsed */
        cur.root = json_validate(cur.data, cur.len, &root, NULL) == 0 && root.type == JSON_OBJECT ? &root : NULL;
        /* the other buffer is free now: the input lives in this one */
        k ^= 1;
    }
    *out = cur.data;
    *out_len = cur.len;
    return true;
}

enum pl_rc pl_take_body(struct pl_req *q, struct buf *b)
{
    if (!buf_data(b)) {
        buf_free(b);
        pl_set_error(q, 500, "server_error", NULL, NULL, "out of memory");
        return PL_ERROR;
    }
    /* the request frees the allocation itself, so the data must start it */
    char *body = b->p;
    size_t len = buf_used(b);
    if (b->off)
        memmove(body, body + b->off, len);
    *b = (struct buf){ 0 };
    return pl_set_body(q, body, len) ? PL_ERROR : PL_NEXT;
}

size_t pl_write_members(struct buf *out, const struct json_span *obj,
                        bool (*drop)(const struct json_span *key, void *arg), void *arg)
{
    struct json_span key, val;
    size_t it = 0, n = 0;
    while (json_next(obj, &it, &key, &val)) {
        if (drop && drop(&key, arg))
            continue;
        if (n++)
            buf_append(out, ",", 1);
        buf_append(out, key.p, key.len);
        buf_append(out, ":", 1);
        buf_append(out, val.p, val.len);
    }
    return n;
}

bool pl_override_named(const struct config_override *set, size_t n, const struct json_span *key)
{
    for (size_t i = 0; i < n; i++)
        if (json_str_eq(key, set[i].key))
            return true;
    return false;
}

void pl_write_overrides(struct buf *out, const struct config_override *set, size_t n, bool comma)
{
    for (size_t i = 0; i < n; i++) {
        buf_printf(out, "%s\"%s\":%s", comma ? "," : "", set[i].key, set[i].json);
        comma = true;
    }
}

const void *pl_config(const struct config *cfg, const struct pl_module *m)
{
    /* a module's section table is its own: it names the blob */
    for (size_t i = 0; cfg && m->config && i < cfg->nmod_conf; i++)
        if (cfg->mod_sec[i] == m->config)
            return cfg->mod_conf[i];
    return NULL;
}

int pl_worker_init(struct pl_slots *s, const struct pl_module *const *mods, size_t n, struct worker *w)
{
    memset(s, 0, sizeof *s);
    if (n > PL_MAX_MODULES)
        return -1;
    s->mods = mods;
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        if (!mods[i]->worker_init)
            continue;
        if (mods[i]->worker_init(w, &s->slot[i]) < 0) {
            s->slot[i] = NULL;
            return -1;
        }
        s->live |= 1u << i;
    }
    return 0;
}

void pl_worker_free(struct pl_slots *s, struct worker *w)
{
    for (size_t i = s->n; i-- > 0;) {
        if (!(s->live & (1u << i)))
            continue;
        s->live &= ~(1u << i);
        if (s->mods[i]->worker_free)
            s->mods[i]->worker_free(w, s->slot[i]);
        s->slot[i] = NULL;
    }
}

void *pl_slot(const struct pl_slots *s, const struct pl_module *m)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->mods[i] == m)
            return s->slot[i];
    return NULL;
}

void pl_sent(struct pl_req *q)
{
    if (q->sent || q->finished)
        return;
    q->sent = true;
    const struct pl_engine *e = q->eng;
    for (size_t k = 0; k < e->nsent; k++)
        e->mods[e->sent_mods[k]]->on_sent(q, pl_ctx(q, e->sent_mods[k]));
}

void pl_head(struct pl_req *q, const struct pl_head *h)
{
    const struct pl_engine *e = q->eng;
    for (size_t k = 0; k < e->nhead; k++)
        e->mods[e->head_mods[k]]->on_head(q, pl_ctx(q, e->head_mods[k]), h);
}

void pl_event(struct pl_req *q, const struct pl_event *ev)
{
    const struct pl_engine *e = q->eng;
    for (size_t k = 0; k < e->nevent; k++)
        e->mods[e->event_mods[k]]->on_event(q, pl_ctx(q, e->event_mods[k]), ev);
}

void pl_finish(struct pl_req *q, const struct pl_outcome *o)
{
    if (q->finished)
        return;
    q->finished = true;
    q->waiting = false;
    const struct pl_engine *e = q->eng;
    for (size_t k = 0; k < e->nfinish; k++)
        e->mods[e->finish_mods[k]]->on_finish(q, pl_ctx(q, e->finish_mods[k]), o);
    /* the request's hold on its key, taken by the module that authenticated it */
    if (q->key) {
        key_release(q->key);
        q->key = NULL;
    }
}
