/* mod_usage.c — a model's `stream_usage: inject` (doc/config.md): a
 * streaming request whose client did not ask for usage is sent upstream
 * with "stream_options":{"include_usage":true}, so its tokens are counted
 * exactly instead of estimated, and its response is transformed back into
 * what the client would have received without it: the usage-only chunk is
 * dropped and the "usage" member other chunks carry is removed. */
#include <stdlib.h>

#include "buf.h"
#include "gateway.h"
#include "module.h"

extern const struct pl_module mod_usage;

static bool is_include_usage(const struct json_span *key, void *arg) { return json_str_eq(key, "include_usage"); }

/* Copy stream_options' members, include_usage replaced by true. */
static void merge_options(struct buf *out, const struct json_span *so)
{
    buf_append(out, "{", 1);
    size_t kept = so && so->type == JSON_OBJECT ? pl_write_members(out, so, is_include_usage, NULL) : 0;
    buf_append_str(out, kept ? ",\"include_usage\":true}" : "\"include_usage\":true}");
}

static enum pl_rc usage_request(struct pl_req *q, void *ctx)
{
    if (!q->stream || q->m->cfg->stream_usage != STREAM_USAGE_INJECT || (q->ep != EP_CHAT && q->ep != EP_COMPLETIONS))
        return PL_NEXT;
    struct json_span so, iu;
    bool has = json_get(&q->root, "stream_options", &so);
    if (has && so.type == JSON_OBJECT && json_get(&so, "include_usage", &iu) && json_is_true(&iu))
        return PL_NEXT; /* the client asked for usage: it gets it as it is */
    if (has && so.type != JSON_OBJECT && so.type != JSON_NULL)
        return PL_NEXT; /* not ours to repair: the upstream answers it */
    /* the client's bytes are kept; only the stream_options value is
     * replaced, or the member added before the closing brace */
    const char *b = q->body;
    const char *at = has ? so.p : q->root.p + q->root.len - 1;
    const char *rest = has ? so.p + so.len : at;
    struct buf out = { 0 };
    buf_append(&out, b, (size_t)(at - b));
    if (!has)
        buf_append_str(&out, json_count(&q->root) ? ",\"stream_options\":" : "\"stream_options\":");
    merge_options(&out, has ? &so : NULL);
    buf_append(&out, rest, (size_t)(b + q->body_len - rest));
    if (pl_take_body(q, &out) != PL_NEXT)
        return PL_ERROR;
    pl_transform(q, &mod_usage);
    return PL_NEXT;
}

/* Remove what include_usage added to an event: the usage-only chunk (empty
 * choices) is dropped, a "usage" member of any other chunk cut out with its
 * comma, every other byte kept. */
static bool usage_rewrite(struct pl_req *q, void *ctx, const struct pl_payload *in, struct buf *out)
{
    if (in->is_body || !in->root)
        return false;
    struct json_span key, val, ch, k2, v2;
    if (!json_get(in->root, "usage", &val))
        return false;
    size_t ci = 0;
    if (json_get(in->root, "choices", &ch) && ch.type == JSON_ARRAY && !json_next(&ch, &ci, &k2, &v2))
        return true; /* nothing but the usage: dropped */
    size_t it = 0;
    const char *prev_end = NULL;
    while (json_next(in->root, &it, &key, &val)) {
        if (!json_str_eq(&key, "usage")) {
            prev_end = val.p + val.len;
            continue;
        }
        /* after another member: from that member's end; first: up to the next key */
        const char *cut0 = prev_end ? prev_end : key.p;
        const char *cut1 = val.p + val.len;
        if (!prev_end && json_next(in->root, &it, &k2, &v2))
            cut1 = k2.p;
        const char *end = in->data + in->len;
        if (buf_append(out, in->data, (size_t)(cut0 - in->data)) < 0 ||
            buf_append(out, cut1, (size_t)(end - cut1)) < 0) {
            buf_reset(out);
            return false; /* out of memory: the event goes as it came */
        }
        return true;
    }
    return false;
}

const struct pl_module mod_usage = {
    .name = "usage",
    .phase = PH_ROUTE,
    .on_request = usage_request,
    .rewrite = usage_rewrite,
};
