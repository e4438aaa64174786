/* sample.c — side samples (sample.h): moved out of rollout.c's quality
 * gate so that experiments send their judge samples the same way. */
#include "sample.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "gateway.h"
#include "json.h"
#include "loop.h"
#include "module.h"
#include "redact.h"
#include "pair.h"
#include "rand.h"
#include "router.h"
#include "side.h"

#define ADD(x, n) atomic_fetch_add_explicit(&(x), (n), memory_order_relaxed)
#define SUB(x, n) atomic_fetch_sub_explicit(&(x), (n), memory_order_relaxed)

void side_sampler_init(struct side_sampler *sp) { pthread_mutex_init(&sp->lock, NULL); }

void side_sampler_destroy(struct side_sampler *sp)
{
    for (struct side_sample *s = sp->head, *n; s; s = n) {
        n = s->next;
        side_sample_free(s);
    }
    sp->head = sp->tail = NULL;
    sp->n = 0;
    pthread_mutex_destroy(&sp->lock);
}

bool side_sample_pick(struct worker *w, double percent)
{
    if (percent >= 100)
        return true;
    return (double)(rnd_xorshift64s(&w->rng) >> 11) * (1.0 / 9007199254740992.0) * 100.0 < percent;
}

struct side_sample *side_sample_admit(struct side_sampler *sp, struct pl_req *q, uint16_t tag)
{
    int legs = sp->nlegs;
    ADD(sp->cnt[SS_SAMPLED], 1);
    if (ADD(sp->inflight, legs) + legs > (int)sp->max_concurrent) {
        SUB(sp->inflight, legs);
        ADD(sp->cnt[SS_DROP_CAP], 1);
        return NULL;
    }
    struct side_sample *s = calloc(1, sizeof *s);
    if (!s) {
        SUB(sp->inflight, legs);
        ADD(sp->cnt[SS_DROP_CAP], 1);
        return NULL;
    }
    s->sp = sp;
    s->tag = tag;
    s->refs = 1; /* the client's request */
    s->chat = q->ep == EP_CHAT;
    s->ts = unix_now();
    snprintf(s->reqid, sizeof s->reqid, "%.*s", (int)q->http->reqid_len, q->http->reqid);
    /* the prompt, for the judge: bounded like a shadow pair's */
    struct json_span pr;
    if (json_get(&q->root, s->chat ? "messages" : "prompt", &pr) && pr.len) {
        size_t keep = pr.len;
        if (keep > sp->prompt_max) {
            keep = sp->prompt_max;
            while (keep > 0 && ((unsigned char)pr.p[keep] & 0xC0) == 0x80)
                keep--; /* never cut a UTF-8 character */
        }
        if ((s->prompt = malloc(keep + 1))) {
            memcpy(s->prompt, pr.p, keep);
            s->prompt[keep] = 0;
            s->prompt_len = keep;
        }
    }
    for (int k = 0; k <= legs; k++) {
        shadow_answer_init(&s->ans[k], sp->answer_max);
        s->leg[k] = (struct side_sample_leg){ s, k };
    }
    return s;
}

void side_sample_free(struct side_sample *s)
{
    for (int k = 0; k <= s->sp->nlegs; k++)
        shadow_answer_free(&s->ans[k]);
    free(s->prompt);
    free(s);
}

/* The client's request and every leg are done: to the queue when all
 * answered, else dropped and counted. */
static void unref(struct side_sample *s)
{
    if (--s->refs > 0)
        return;
    struct side_sampler *sp = s->sp;
    int drop = s->failed[0] || !s->started ? SS_DROP_SERVED : -1;
    for (int k = 1; drop < 0 && k <= sp->nlegs; k++)
        if (s->failed[k])
            drop = SS_DROP_REF;
    if (drop < 0) {
        pthread_mutex_lock(&sp->lock);
        if (sp->n < SS_QUEUE) {
            s->next = NULL;
            if (sp->tail)
                sp->tail->next = s;
            else
                sp->head = s;
            sp->tail = s;
            sp->n++;
            s = NULL;
        }
        pthread_mutex_unlock(&sp->lock);
        if (s)
            drop = SS_DROP_QUEUE;
    }
    if (drop >= 0) {
        ADD(sp->cnt[drop], 1);
        side_sample_free(s);
    }
}

struct side_sample *side_sample_take(struct side_sampler *sp)
{
    pthread_mutex_lock(&sp->lock);
    struct side_sample *s = sp->head;
    sp->head = sp->tail = NULL;
    sp->n = 0;
    pthread_mutex_unlock(&sp->lock);
    return s;
}

/* The leg's body: the client's, named for the reference's backend, with
 * the reference's `set:`. */
struct ldrop { const struct config_model *m; };
static bool leg_drops(const struct json_span *key, void *arg)
{
    const struct ldrop *d = arg;
    return json_str_eq(key, "model") || pl_override_named(d->m->set, d->m->nset, key);
}

static int leg_pick(void *arg, const struct backend *be, struct buf *body)
{
    struct side_sample_leg *l = arg;
    struct side_sample *s = l->s;
    const struct config_model *m = s->sp->ref->cfg;
    const char *um = be->cfg->model ? be->cfg->model : m->name;
    struct json_span root;
    if (!s->cbody || json_validate(s->cbody, s->cbody_len, &root, NULL) < 0 || root.type != JSON_OBJECT)
        return -1;
    struct ldrop d = { m };
    buf_append(body, "{", 1);
    pl_write_members(body, &root, leg_drops, &d);
    char esc[600];
    long el = json_escape(um, strlen(um), esc, sizeof esc);
    if (el < 0)
        return -1;
    buf_append_str(body, buf_used(body) > 1 ? ",\"model\":" : "\"model\":");
    buf_append(body, esc, (size_t)el);
    pl_write_overrides(body, m->set, m->nset, true);
    buf_append(body, "}", 1);
    return buf_data(body) ? 0 : -1;
}

static void leg_event(void *arg, const char *data, size_t len, bool gap)
{
    struct side_sample_leg *l = arg;
    struct shadow_answer *a = &l->s->ans[l->k];
    if (gap)
        shadow_answer_gap(a);
    shadow_answer_sse(a, data, len, mono_ns());
}

static void leg_end(void *arg, const struct side_result *r)
{
    struct side_sample_leg *l = arg;
    struct side_sample *s = l->s;
    struct shadow_answer *a = &s->ans[l->k];
    bool ok = r->end == SIDE_DONE && r->status >= 200 && r->status < 300;
    if (r->sse) {
        shadow_answer_finish_stream(a);
        ok = ok && !r->sse_skipped;
    } else if (ok) {
        struct json_span root;
        ok = !r->too_large && json_validate(r->body ? r->body : "", r->body_len, &root, NULL) == 0 &&
             root.type == JSON_OBJECT;
        if (ok)
            shadow_answer_json_root(a, &root);
    }
    s->failed[l->k] = !ok;
    s->call[l->k] = NULL;
    SUB(s->sp->inflight, 1);
    unref(s);
}

static const struct side_ops leg_ops = { .on_pick = leg_pick, .on_event = leg_event, .on_end = leg_end };

void side_sample_start(struct pl_req *q, struct side_sample *s)
{
    struct side_sampler *sp = s->sp;
    s->started = true;
    s->cbody = q->http->body ? q->http->body : "";
    s->cbody_len = q->http->body ? q->http->body_len : 0;
    const struct http_hdr hdrs[] = {
        { "x-request-id", 12, s->reqid, strlen(s->reqid) },
        { sp->tag_header, strlen(sp->tag_header), sp->tag, strlen(sp->tag) },
    };
    struct side_request rq = {
        .path = s->chat ? "/v1/chat/completions" : "/v1/completions",
        .hdrs = hdrs,
        .nhdrs = sizeof hdrs / sizeof hdrs[0],
        .hint = { 0, (uint32_t)q->est_tokens },
        .deadline_ms = sp->deadline_ms,
        .capture_max = SHADOW_LEG_CAPTURE_MAX,
    };
    for (int k = 1; k <= sp->nlegs; k++) {
        s->refs++;
        struct side_call *call = side_start(q->w, sp->ref, &rq, &leg_ops, &s->leg[k]);
        if (call) /* NULL: it has ended already */
            s->call[k] = call;
    }
    s->cbody = NULL;
}

void side_sample_finish(struct side_sample *s, struct shadow_answer *ans, bool aborted)
{
    if (ans) {
        s->ans[0] = *ans; /* moved */
        free(ans);
    } else {
        s->failed[0] = true;
    }
    if (!s->started) {
        /* never on the wire: the legs never started, their slots go back */
        SUB(s->sp->inflight, s->sp->nlegs);
        s->failed[0] = true;
    } else if (aborted) {
        s->refs++; /* the sample outlives the cancellations */
        for (int k = 1; k <= s->sp->nlegs; k++)
            if (s->call[k])
                side_cancel(s->call[k]);
        s->refs--;
    }
    unref(s);
}

void side_sample_event(struct shadow_answer *ans, const struct pl_event *ev)
{
    if (!ans || !ev->root)
        return;
    if (ev->is_body) {
        if (ev->status < 300)
            shadow_answer_json_root(ans, ev->root);
        return;
    }
    if (ev->gap)
        shadow_answer_gap(ans);
    shadow_answer_sse_root(ans, ev->root, mono_ns());
}

void side_sample_redact(struct side_sample *s, const struct redactor *r)
{
    if (!r || !r->n)
        return;
    for (size_t k = 0; k < 1 + SS_MAX_LEGS; k++) {
        struct buf *t = &s->ans[k].text;
        if (!buf_used(t))
            continue;
        struct buf out = { 0 };
        redactor_apply(r, &out, buf_data(t), buf_used(t));
        buf_free(t);
        *t = out;
    }
    if (s->prompt) {
        struct buf out = { 0 };
        redactor_apply(r, &out, s->prompt, s->prompt_len);
        char *p = malloc(buf_used(&out) + 1);
        if (p) {
            memcpy(p, buf_data(&out) ? buf_data(&out) : "", buf_used(&out));
            p[buf_used(&out)] = 0;
            free(s->prompt);
            s->prompt = p;
            s->prompt_len = buf_used(&out);
        }
        buf_free(&out);
    }
}
