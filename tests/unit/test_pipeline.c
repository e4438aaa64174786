/* test_pipeline.c — the module engine (pipeline.c) with fake modules: hook
 * order by phase then table order, pass / answered / wait-and-resume /
 * error, a client leaving while a phase waits, finish exactly once, one
 * zeroed allocation with every module's context; response transforms
 * (opt-in per request, chained in table order, drop, pass-through);
 * per-worker module state (worker_init / worker_free, once per worker). */
#include "gateway.h"
#include "module.h"
#include "unit.h"

static char trace_log[1024];

static void note(const char *s)
{
    strncat(trace_log, s, sizeof trace_log - strlen(trace_log) - 1);
    strncat(trace_log, " ", sizeof trace_log - strlen(trace_log) - 1);
}

/* the core embedding the engine */
struct fake_req {
    struct pl_req pl;
    int answered, proceeded, failed;
};

static void core_proceed(struct pl_req *q) { ((struct fake_req *)q)->proceeded++; note("PROCEED"); }
static void core_answered(struct pl_req *q) { ((struct fake_req *)q)->answered++; note("ANSWERED"); }
static void core_failed(struct pl_req *q)
{
    ((struct fake_req *)q)->failed++;
    char b[64];
    snprintf(b, sizeof b, "FAILED:%d:%s", q->error.status, q->error.code ? q->error.code : "-");
    note(b);
}
static int core_rebody(struct pl_req *q)
{
    char b[64];
    snprintf(b, sizeof b, "REBODY:%.*s", (int)q->body_len, q->body);
    note(b);
    if (q->body_len && q->body[0] == '{')
        return 0;
    pl_set_error(q, 400, "invalid_request_error", NULL, NULL, "not an object");
    return 400;
}
static const struct pl_core core = { core_proceed, core_answered, core_failed, core_rebody };

/* what each fake module answers, set per test */
static enum pl_rc rc_auth, rc_limit, rc_cache;

struct mctx { int requests, sent, events, finished, aborted; uint64_t canary; };

#define FAKE(nm, ph, rcvar)                                                                   \
    static enum pl_rc nm##_req(struct pl_req *q, void *ctx)                                   \
    {                                                                                           \
        struct mctx *c = ctx;                                                                   \
        c->requests++;                                                                          \
        note(#nm);                                                                            \
        if ((rcvar) == PL_ERROR)                                                                \
            pl_set_error(q, 429, "rate_limit_error", #nm, NULL, "%s says no", #nm);        \
        return rcvar;                                                                           \
    }                                                                                           \
    static void nm##_sent(struct pl_req *q, void *ctx) { ((struct mctx *)ctx)->sent++; note(#nm ".sent"); } \
    static void nm##_event(struct pl_req *q, void *ctx, const struct pl_event *ev)            \
    {                                                                                           \
        ((struct mctx *)ctx)->events++;                                                         \
        note(#nm ".event");                                                                   \
    }                                                                                           \
    static void nm##_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o)          \
    {                                                                                           \
        struct mctx *c = ctx;                                                                   \
        c->finished++;                                                                          \
        c->aborted += o->aborted;                                                               \
        note(#nm ".finish");                                                                  \
    }                                                                                           \
    static const struct pl_module nm = { .name = #nm, .phase = ph, .ctx_size = sizeof(struct mctx),       \
                                           .on_request = nm##_req, .on_sent = nm##_sent,                \
                                           .on_event = nm##_event, .on_finish = nm##_finish };

/* declared in table order below, phases deliberately out of order */
FAKE(cache, PH_CACHE, rc_cache)
FAKE(auth, PH_AUTH, rc_auth)
FAKE(limit, PH_LIMIT, rc_limit)

/* an observer with no request hook, no context */
static void obs_finish(struct pl_req *q, void *ctx, const struct pl_outcome *o) { note("obs.finish"); }
static const struct pl_module observer = { .name = "obs", .phase = PH_NONE, .on_finish = obs_finish };

/* fails without saying why */
static enum pl_rc bare_req(struct pl_req *q, void *ctx) { return PL_ERROR; }
static const struct pl_module bare = { .name = "bare", .phase = PH_GUARD, .on_request = bare_req };

static const struct pl_module *const table[] = { &cache, &observer, &auth, &limit };
static struct pl_engine eng;

static struct fake_req *new_req(void)
{
    trace_log[0] = '\0';
    struct fake_req *r = (struct fake_req *)pl_req_alloc(&eng);
    CHECK(r != NULL);
    return r;
}

static struct mctx *ctx_of(struct fake_req *r, size_t i) { return pl_ctx(&r->pl, i); }

static void finish(struct fake_req *r, int status)
{
    struct pl_outcome o = { .status = status, .aborted = status == 499, .tokens_in = -1, .tokens_out = -1,
                            .cost_usd = -1 };
    pl_finish(&r->pl, &o);
}

static void test_layout(void)
{
    CHECK_EQ_INT(pl_engine_init(&eng, table, 4, &core, sizeof(struct fake_req)), 0);
    /* per-hook lists keep only modules that have the hook, in table order */
    CHECK_EQ_INT(eng.nphase[PH_AUTH], 1);
    CHECK_EQ_INT(eng.nphase[PH_GUARD], 0);
    CHECK_EQ_INT(eng.nsent, 3);
    CHECK_EQ_INT(eng.nfinish, 4);
    CHECK_EQ_INT(eng.finish_mods[1], 1);
    /* contexts: after the core struct, aligned, disjoint, zeroed */
    struct fake_req *r = new_req();
    char *base = (char *)r;
    CHECK((char *)pl_ctx(&r->pl, 0) >= base + sizeof *r);
    CHECK((size_t)((char *)pl_ctx(&r->pl, 0) - base) % 16 == 0);
    CHECK((char *)pl_ctx(&r->pl, 2) >= (char *)pl_ctx(&r->pl, 0) + sizeof(struct mctx));
    CHECK((char *)pl_ctx(&r->pl, 3) + sizeof(struct mctx) <= base + eng.total);
    CHECK(ctx_of(r, 3)->canary == 0 && ctx_of(r, 0)->requests == 0);
    free(r);
    const struct pl_module *many[PL_MAX_MODULES + 1];
    for (size_t i = 0; i <= PL_MAX_MODULES; i++)
        many[i] = &observer;
    struct pl_engine big;
    CHECK_EQ_INT(pl_engine_init(&big, many, PL_MAX_MODULES + 1, &core, 8), -1);
}

static void test_all_pass(void)
{
    rc_auth = rc_limit = rc_cache = PL_NEXT;
    struct fake_req *r = new_req();
    pl_run(&r->pl);
    /* phase order, not table order: auth, limit, cache */
    CHECK_EQ_STR(trace_log, "auth limit cache PROCEED ");
    CHECK_EQ_INT(r->proceeded, 1);
    trace_log[0] = '\0';
    pl_sent(&r->pl);
    pl_sent(&r->pl); /* once */
    struct json_span root = { 0 };
    struct pl_event ev = { .root = &root };
    pl_event(&r->pl, &ev);
    finish(r, 200);
    finish(r, 200); /* exactly once */
    CHECK_EQ_STR(trace_log, "cache.sent auth.sent limit.sent cache.event auth.event limit.event "
                            "cache.finish obs.finish auth.finish limit.finish ");
    for (size_t i = 0; i < 4; i++)
        if (i != 1)
            CHECK(ctx_of(r, i)->finished == 1 && ctx_of(r, i)->sent == 1 && ctx_of(r, i)->aborted == 0);
    /* after finish nothing more is delivered */
    trace_log[0] = '\0';
    pl_sent(&r->pl);
    CHECK_EQ_STR(trace_log, "");
    free(r);
}

static void test_answered_and_error(void)
{
    /* the cache answers: later phases and admission never run */
    rc_auth = rc_limit = PL_NEXT;
    rc_cache = PL_DONE;
    struct fake_req *r = new_req();
    pl_run(&r->pl);
    CHECK_EQ_STR(trace_log, "auth limit cache ANSWERED ");
    CHECK(r->proceeded == 0 && r->answered == 1);
    finish(r, 200);
    CHECK(ctx_of(r, 0)->finished == 1 && ctx_of(r, 0)->sent == 0);
    free(r);
    /* limits refuse: the core answers the module's error */
    rc_limit = PL_ERROR;
    r = new_req();
    pl_run(&r->pl);
    CHECK_EQ_STR(trace_log, "auth limit FAILED:429:limit ");
    CHECK_EQ_STR(r->pl.error.message, "limit says no");
    CHECK(ctx_of(r, 0)->requests == 0);
    free(r);
    /* an error without a status becomes a 500 */
    struct pl_engine e2;
    static const struct pl_module *const t2[] = { &bare };
    CHECK_EQ_INT(pl_engine_init(&e2, t2, 1, &core, sizeof(struct fake_req)), 0);
    trace_log[0] = '\0';
    r = (struct fake_req *)pl_req_alloc(&e2);
    pl_run(&r->pl);
    CHECK_EQ_STR(trace_log, "FAILED:500:- ");
    free(r);
}

/* on_arrival, before decoding: in table order; an error or an answer
 * there stops the request before pl_run (and its phases) would start; a
 * wait is refused as an internal error */
static enum pl_rc rc_arrive;
static enum pl_rc arrive_hook(struct pl_req *q, void *ctx)
{
    note("arrive");
    if (rc_arrive == PL_ERROR)
        pl_set_error(q, 401, "invalid_request_error", "invalid_api_key", NULL, "no key");
    return rc_arrive;
}
static const struct pl_module arriving = { .name = "arriving", .phase = PH_NONE, .on_arrival = arrive_hook };

static void test_arrival(void)
{
    struct pl_engine e3;
    static const struct pl_module *const t3[] = { &auth, &arriving };
    CHECK_EQ_INT(pl_engine_init(&e3, t3, 2, &core, sizeof(struct fake_req)), 0);
    rc_auth = PL_NEXT;
    rc_arrive = PL_NEXT;
    trace_log[0] = '\0';
    struct fake_req *r = (struct fake_req *)pl_req_alloc(&e3);
    CHECK(pl_arrival(&r->pl));
    pl_run(&r->pl);
    CHECK_EQ_STR(trace_log, "arrive auth PROCEED ");
    free(r);
    rc_arrive = PL_ERROR;
    trace_log[0] = '\0';
    r = (struct fake_req *)pl_req_alloc(&e3);
    CHECK(!pl_arrival(&r->pl));
    CHECK_EQ_STR(trace_log, "arrive FAILED:401:invalid_api_key ");
    CHECK(r->failed == 1 && r->proceeded == 0);
    free(r);
    rc_arrive = PL_WAIT;
    trace_log[0] = '\0';
    r = (struct fake_req *)pl_req_alloc(&e3);
    CHECK(!pl_arrival(&r->pl));
    CHECK_EQ_STR(trace_log, "arrive FAILED:500:- ");
    CHECK(!r->pl.waiting);
    free(r);
}

/* limit waits (say, a Redis round trip); resumed with each outcome */
static void test_wait_resume(void)
{
    rc_auth = rc_cache = PL_NEXT;
    rc_limit = PL_WAIT;
    struct fake_req *r = new_req();
    r->pl.seg_start = mono_ns();
    pl_run(&r->pl);
    CHECK_EQ_STR(trace_log, "auth limit ");
    CHECK(r->pl.waiting && r->proceeded == 0);
    CHECK(r->pl.seg_start == 0); /* the wait is not counted as shade's overhead */
    pl_resume(&r->pl, PL_NEXT);
    CHECK_EQ_STR(trace_log, "auth limit cache PROCEED ");
    CHECK(!r->pl.waiting && r->pl.seg_start != 0);
    pl_resume(&r->pl, PL_NEXT); /* not waiting: ignored */
    CHECK_EQ_INT(r->proceeded, 1);
    finish(r, 200);
    free(r);
    /* resumed with an error */
    r = new_req();
    pl_run(&r->pl);
    pl_set_error(&r->pl, 503, "server_error", "limit_store_down", NULL, "down");
    pl_resume(&r->pl, PL_ERROR);
    CHECK_EQ_STR(trace_log, "auth limit FAILED:503:limit_store_down ");
    free(r);
    /* resumed with an answer */
    r = new_req();
    pl_run(&r->pl);
    pl_resume(&r->pl, PL_DONE);
    CHECK_EQ_STR(trace_log, "auth limit ANSWERED ");
    free(r);
    /* waits twice in a row (two modules) */
    rc_cache = PL_WAIT;
    r = new_req();
    pl_run(&r->pl);
    pl_resume(&r->pl, PL_NEXT);
    CHECK_EQ_STR(trace_log, "auth limit cache ");
    pl_resume(&r->pl, PL_NEXT);
    CHECK_EQ_STR(trace_log, "auth limit cache PROCEED ");
    free(r);
}

static void test_abort_while_waiting(void)
{
    rc_auth = rc_cache = PL_NEXT;
    rc_limit = PL_WAIT;
    struct fake_req *r = new_req();
    pl_run(&r->pl);
    /* the client leaves: the core finishes with 499 */
    finish(r, 499);
    CHECK(ctx_of(r, 3)->finished == 1 && ctx_of(r, 3)->aborted == 1); /* the waiting module is told */
    CHECK(ctx_of(r, 2)->finished == 1 && ctx_of(r, 0)->finished == 1);
    /* a late resume (before the core frees) runs nothing */
    trace_log[0] = '\0';
    pl_resume(&r->pl, PL_NEXT);
    CHECK_EQ_STR(trace_log, "");
    CHECK(r->proceeded == 0);
    free(r);
}

/* a phase replaces the body: the core re-derives, the request owns it */
static void test_set_body(void)
{
    struct fake_req *r = new_req();
    r->pl.body = "{\"a\":1}";
    r->pl.body_len = 7;
    char *b1 = strdup("{\"b\":2}");
    CHECK_EQ_INT(pl_set_body(&r->pl, b1, strlen(b1)), 0);
    CHECK(r->pl.body == b1 && r->pl.body_len == 7 && r->pl.owned_body == b1);
    char *b2 = strdup("[]");
    CHECK_EQ_INT(pl_set_body(&r->pl, b2, 2), 400); /* b1 freed: ASan would see a leak otherwise */
    CHECK_EQ_STR(r->pl.error.message, "not an object");
    CHECK_EQ_STR(trace_log, "REBODY:{\"b\":2} REBODY:[] ");
    free(r->pl.owned_body);
    free(r);
}

/* transforms: "upper" rewrites "a" into "A" (a JSON object into a marker),
 * "drop" drops "x", "seer" records what it is given */
static char seen[256];

static bool upper_rw(struct pl_req *q, void *ctx, const struct pl_payload *in, struct buf *out)
{
    if (in->len == 1 && in->data[0] == 'a')
        return buf_append(out, "{\"A\":1}", 7) == 0;
    return false;
}
static bool drop_rw(struct pl_req *q, void *ctx, const struct pl_payload *in, struct buf *out)
{
    return in->len == 1 && in->data[0] == 'x';
}
static bool seer_rw(struct pl_req *q, void *ctx, const struct pl_payload *in, struct buf *out)
{
    snprintf(seen, sizeof seen, "%.*s:%s:%s", (int)in->len, in->data, in->root ? "obj" : "-",
             in->is_body ? "body" : "event");
    /* rewrite a body, to check the chain's two buffers take turns */
    if (in->is_body)
        return buf_append(out, "[1]", 3) == 0;
    return false;
}
static enum pl_rc opt_in_req(struct pl_req *q, void *ctx);
static const struct pl_module upper = { .name = "upper", .phase = PH_ROUTE, .on_request = opt_in_req,
                                        .rewrite = upper_rw };
static const struct pl_module dropper = { .name = "drop", .phase = PH_NONE, .rewrite = drop_rw };
static const struct pl_module seer = { .name = "seer", .phase = PH_NONE, .rewrite = seer_rw };
static bool opt_in;
static enum pl_rc opt_in_req(struct pl_req *q, void *ctx)
{
    if (opt_in)
        pl_transform(q, &upper);
    return PL_NEXT;
}

static void test_transform(void)
{
    static const struct pl_module *const t[] = { &observer, &upper, &dropper, &seer };
    struct pl_engine e;
    CHECK_EQ_INT(pl_engine_init(&e, t, 4, &core, sizeof(struct fake_req)), 0);
    CHECK_EQ_INT(e.nxform, 3);
    struct buf scratch[2] = { { 0 }, { 0 } };
    const char *o;
    size_t ol;
    /* nobody opted in: nothing to do, the core keeps its direct path */
    opt_in = false;
    struct fake_req *r = (struct fake_req *)pl_req_alloc(&e);
    pl_run(&r->pl);
    CHECK(!pl_transforming(&r->pl));
    free(r);
    /* upper opts in from its request hook; a module without a rewrite hook
     * cannot (it would never be called) */
    opt_in = true;
    r = (struct fake_req *)pl_req_alloc(&e);
    pl_run(&r->pl);
    CHECK(pl_transforming(&r->pl) && r->pl.xform == 1u << 1);
    pl_transform(&r->pl, &observer);
    CHECK(r->pl.xform == 1u << 1);
    /* only opted-in modules run: the seer did not opt in */
    seen[0] = '\0';
    struct pl_payload in = { .data = "a", .len = 1 };
    CHECK(pl_rewrite(&r->pl, &in, scratch, &o, &ol));
    CHECK(ol == 7 && memcmp(o, "{\"A\":1}", 7) == 0 && o == buf_data(&scratch[0]));
    CHECK_EQ_STR(seen, "");
    /* unchanged: the input itself, no copy */
    in.data = "b";
    CHECK(pl_rewrite(&r->pl, &in, scratch, &o, &ol) && o == in.data && ol == 1);
    /* chained in table order: upper's output, parsed again, is what the seer gets */
    pl_transform(&r->pl, &dropper);
    pl_transform(&r->pl, &seer);
    in.data = "a";
    CHECK(pl_rewrite(&r->pl, &in, scratch, &o, &ol));
    CHECK_EQ_STR(seen, "{\"A\":1}:obj:event");
    CHECK(o == buf_data(&scratch[0]));
    /* dropped: later transforms are not asked */
    seen[0] = '\0';
    in.data = "x";
    CHECK(!pl_rewrite(&r->pl, &in, scratch, &o, &ol));
    CHECK_EQ_STR(seen, "");
    /* a body rewritten twice: the second output lands in the other buffer */
    in = (struct pl_payload){ .data = "a", .len = 1, .is_body = true };
    CHECK(pl_rewrite(&r->pl, &in, scratch, &o, &ol));
    CHECK_EQ_STR(seen, "{\"A\":1}:obj:body");
    CHECK(ol == 3 && memcmp(o, "[1]", 3) == 0 && o == buf_data(&scratch[1]));
    free(r);
    buf_free(&scratch[0]);
    buf_free(&scratch[1]);
}

/* on_head: modules add response headers in table order, within the room */
static void head_a(struct pl_req *q, void *ctx, const struct pl_head *h) { pl_head_add(h, "x-a", "1", 1); }
static void head_b(struct pl_req *q, void *ctx, const struct pl_head *h)
{
    char b[32];
    snprintf(b, sizeof b, "x-b:%d", h->status);
    note(b);
    pl_head_add(h, "x-b", "2", 1);
}

static void test_head(void)
{
    static const struct pl_module ma = { .name = "a", .phase = PH_NONE, .on_head = head_a };
    static const struct pl_module mb = { .name = "b", .phase = PH_NONE, .on_head = head_b };
    static const struct pl_module *const t[] = { &mb, &observer, &ma };
    struct pl_engine e;
    CHECK_EQ_INT(pl_engine_init(&e, t, 3, &core, sizeof(struct fake_req)), 0);
    CHECK_EQ_INT(e.nhead, 2);
    trace_log[0] = '\0';
    struct pl_req *q = pl_req_alloc(&e);
    struct http_hdr out[3] = { { "content-type", 12, "text/plain", 10 } };
    size_t n = 1;
    struct pl_head h = { 200, NULL, out, &n, 3 };
    pl_head(q, &h);
    CHECK_EQ_INT(n, 3);
    CHECK(out[1].name_len == 3 && memcmp(out[1].name, "x-b", 3) == 0); /* table order */
    CHECK(out[2].name_len == 3 && memcmp(out[2].name, "x-a", 3) == 0);
    CHECK_EQ_STR(trace_log, "x-b:200 ");
    /* no room: dropped, nothing overwritten */
    n = 3;
    pl_head(q, &h);
    CHECK_EQ_INT(n, 3);
    free(q);
}

/* ---- per-worker state: a slot per module, init and free once per worker ---- */

static int winit_a, wfree_a, winit_b, wfree_b, fail_b;

static int a_worker_init(struct worker *w, void **slot)
{
    winit_a++;
    int *st = malloc(sizeof *st);
    if (!st)
        return -1;
    *st = w->id;
    *slot = st;
    return 0;
}
static void a_worker_free(struct worker *w, void *slot)
{
    wfree_a++;
    CHECK(slot && *(int *)slot == w->id); /* its own worker's state comes back */
    free(slot);
}
static int b_worker_init(struct worker *w, void **slot)
{
    winit_b++;
    if (fail_b)
        return -1;
    *slot = w; /* any pointer: the module's business */
    return 0;
}
static void b_worker_free(struct worker *w, void *slot)
{
    wfree_b++;
    CHECK(slot == w);
}

static const struct pl_module wmod_a = { .name = "wa", .phase = PH_NONE, .worker_init = a_worker_init,
                                         .worker_free = a_worker_free };
static const struct pl_module wmod_plain = { .name = "wplain", .phase = PH_NONE };
static const struct pl_module wmod_b = { .name = "wb", .phase = PH_NONE, .worker_init = b_worker_init,
                                         .worker_free = b_worker_free };
static const struct pl_module *const wtable[] = { &wmod_a, &wmod_plain, &wmod_b };

static void test_worker_slots(void)
{
    struct worker w1 = { .id = 1 }, w2 = { .id = 2 };
    CHECK_EQ_INT(pl_worker_init(&w1.mods, wtable, 3, &w1), 0);
    CHECK_EQ_INT(pl_worker_init(&w2.mods, wtable, 3, &w2), 0);
    CHECK_EQ_INT(winit_a, 2);
    CHECK_EQ_INT(winit_b, 2);
    int *s1 = pl_slot(&w1.mods, &wmod_a), *s2 = pl_slot(&w2.mods, &wmod_a);
    CHECK(s1 && s2 && s1 != s2);
    CHECK_EQ_INT(s1 ? *s1 : 0, 1);
    CHECK_EQ_INT(s2 ? *s2 : 0, 2);
    CHECK(pl_slot(&w1.mods, &wmod_b) == &w1);
    CHECK(pl_slot(&w1.mods, &wmod_plain) == NULL); /* no hooks: no state */
    CHECK(pl_slot(&w1.mods, &observer) == NULL);     /* not in the table */
    pl_worker_free(&w1.mods, &w1);
    pl_worker_free(&w2.mods, &w2);
    CHECK_EQ_INT(wfree_a, 2);
    CHECK_EQ_INT(wfree_b, 2);
    CHECK(pl_slot(&w1.mods, &wmod_a) == NULL);
    pl_worker_free(&w1.mods, &w1); /* again: nothing */
    CHECK_EQ_INT(wfree_a, 2);

    /* a module's init fails: the worker does not start; only those whose
     * init succeeded are freed, once */
    struct worker w3 = { .id = 3 };
    fail_b = 1;
    CHECK_EQ_INT(pl_worker_init(&w3.mods, wtable, 3, &w3), -1);
    pl_worker_free(&w3.mods, &w3);
    pl_worker_free(&w3.mods, &w3);
    CHECK_EQ_INT(winit_a, 3);
    CHECK_EQ_INT(wfree_a, 3);
    CHECK_EQ_INT(winit_b, 3);
    CHECK_EQ_INT(wfree_b, 2);
    fail_b = 0;

    /* a worker that never ran init (set-up failed earlier): nothing to free */
    struct worker w4 = { .id = 4 };
    pl_worker_free(&w4.mods, &w4);
    CHECK_EQ_INT(wfree_a, 3);
}

int main(void)
{
    test_arrival();
    test_layout();
    test_set_body();
    test_all_pass();
    test_answered_and_error();
    test_wait_resume();
    test_abort_while_waiting();
    test_transform();
    test_head();
    test_worker_slots();
    UNIT_DONE();
}
