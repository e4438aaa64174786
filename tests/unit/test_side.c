/* test_side.c — side calls (side.c) on a real worker loop against a fake
 * backend on loopback.
 *
 * The gateway runtime comes from a YAML config through gateway_init, as the
 * server builds it; the worker is the part of one that a side call uses (a
 * loop, metrics shard, upstream pools, balancer cursors).  The fake backend
 * is a thread with a listening socket that records each request and answers
 * with a canned reply (then closes: each reply says connection: close, or
 * the pool would keep a dead connection), or holds the request unanswered
 * until the client goes.  Checked: the head side.c builds (path joined to
 * base_path, key, caller's headers), the body from on_pick, the JSON and SSE
 * taps and the capture bound, the deadline, cancel and cancel-all, a down
 * backend and no backend — on_end exactly once every time, the balancer's
 * reservation given back, and the worker's count of calls.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "gateway.h"
#include "log.h"
#include "loopback.h"
#include "server.h"
#include "side.h"
#include "unit.h"

/* ---------- the fake backend ---------- */

struct backend_fake {
    int lfd, port;
    pthread_t th;
    atomic_bool stop;
    const char *_Atomic reply;   /* NULL: never answer, wait for the client to close */
    atomic_int served;
    pthread_mutex_t mu;
    char req[8192];              /* the last request, NUL-terminated */
};

/* Read one request (head and content-length body) from c into f->req. */
static void fake_read_request(struct backend_fake *f, int c)
{
    char in[sizeof f->req];
    size_t n = 0;
    while (n < sizeof in - 1) {
        ssize_t r = recv(c, in + n, sizeof in - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        in[n] = '\0';
        const char *end = strstr(in, "\r\n\r\n");
        const char *cl = strcasestr(in, "content-length:");
        if (end && cl && n >= (size_t)(end + 4 - in) + strtoul(cl + 15, NULL, 10))
            break;
    }
    in[n] = '\0';
    pthread_mutex_lock(&f->mu);
    memcpy(f->req, in, n + 1);
    pthread_mutex_unlock(&f->mu);
}

static void *fake_run(void *arg)
{
    struct backend_fake *f = arg;
    int c;
    while ((c = loopback_accept(f->lfd, &f->stop)) >= 0) {
        fake_read_request(f, c);
        atomic_fetch_add(&f->served, 1);
        const char *reply = atomic_load(&f->reply);
        if (reply)
            send(c, reply, strlen(reply), MSG_NOSIGNAL);
        else /* until the side call lets go (EOF) or the test ends */
            loopback_hold(c, &f->stop);
        close(c);
    }
    return NULL;
}

static bool fake_up(struct backend_fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = loopback_listen(&f->port);
    return f->lfd >= 0 && pthread_create(&f->th, NULL, fake_run, f) == 0;
}

static void fake_down(struct backend_fake *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    close(f->lfd);
    pthread_mutex_destroy(&f->mu);
}

/* ---------- a worker, as far as side calls go ---------- */

static struct config *cfg;
static struct gateway gw;
static struct worker wk;

static bool setup(int port, int dead_port)
{
    char path[] = "/tmp/shade_test_side_XXXXXX";
    char yaml[1024], err[512] = "";
    setenv("SHADE_TEST_SIDE_KEY", "sk-side", 1);
    int fd = mkstemp(path);
    if (fd < 0)
        return false;
    int len = snprintf(yaml, sizeof yaml,
                       "models:\n"
                       "  - name: m\n"
                       "    backends:\n"
                       "      - url: http://127.0.0.1:%d/v1\n"
                       "        api_key_env: SHADE_TEST_SIDE_KEY\n"
                       "  - name: down\n"
                       "    backends:\n"
                       "      - url: http://127.0.0.1:%d\n",
                       port, dead_port);
    bool ok = write(fd, yaml, (size_t)len) == len && config_load(path, &cfg, err, sizeof err) == 0;
    close(fd);
    unlink(path);
    if (!ok || gateway_init(&gw, cfg, err, sizeof err) < 0) {
        fprintf(stderr, "setup: %s\n", err);
        return false;
    }
    wk.gw = &gw;
    wk.loop = loop_new();
    wk.met = metrics_shard_new(&gw.lay);
    wk.pools = calloc(gw.nbackends, sizeof *wk.pools);
    wk.rr = calloc(gw.nmodels, sizeof *wk.rr);
    wk.wrr = calloc(gw.nbackends, sizeof *wk.wrr);
    if (!wk.loop || !wk.met || !wk.pools || !wk.rr || !wk.wrr)
        return false;
    for (size_t i = 0; i < gw.nbackends; i++)
        if (!(wk.pools[i] = up_pool_new(wk.loop, &gw.backends[i])))
            return false;
    return true;
}

static void teardown(void)
{
    for (size_t i = 0; i < gw.nbackends; i++)
        up_pool_free(wk.pools[i]);
    free(wk.pools);
    free(wk.rr);
    free(wk.wrr);
    metrics_shard_free(wk.met);
    loop_free(wk.loop);
    gateway_free(&gw);
    config_free(cfg);
}

/* ---------- a caller ---------- */

struct caller {
    int ends;                    /* on_end calls: must be exactly 1 */
    int heads;
    struct side_result r;        /* a copy of what on_end was given */
    char body[4096];             /* the captured body, copied */
    char events[1024];           /* the SSE events' data, '|'-separated */
    bool gap;
    const struct backend *picked;
};

static int c_pick(void *arg, const struct backend *be, struct buf *body)
{
    struct caller *c = arg;
    c->picked = be;
    return buf_printf(body, "{\"model\":\"%s\",\"input\":\"x\"}", be->cfg->name);
}

static void c_head(void *arg, int status, const struct http_hdr *h, size_t n)
{
    struct caller *c = arg;
    (void)status, (void)h, (void)n;
    c->heads++;
}

static void c_event(void *arg, const char *data, size_t len, bool gap)
{
    struct caller *c = arg;
    size_t used = strlen(c->events);
    snprintf(c->events + used, sizeof c->events - used, "%.*s|", (int)len, data);
    c->gap |= gap;
}

static void c_end(void *arg, const struct side_result *r)
{
    struct caller *c = arg;
    c->ends++;
    c->r = *r;
    if (r->body)
        snprintf(c->body, sizeof c->body, "%.*s", (int)r->body_len, r->body);
    c->r.body = NULL; /* not ours after on_end */
}

static const struct side_ops ops = { c_pick, c_head, c_event, c_end };

static const struct model_rt *model(const char *name)
{
    return gateway_find_model(&gw, name, strlen(name));
}

static struct side_request request(uint32_t deadline_ms, size_t capture_max)
{
    static const struct http_hdr hdrs[] = { { "x-purpose", 9, "classify", 8 } };
    return (struct side_request){ .path = "/v1/embeddings", .hdrs = hdrs, .nhdrs = 1,
                                  .hint = { 0, 16 }, .deadline_ms = deadline_ms, .capture_max = capture_max };
}

/* Run the loop until every call of the worker has ended (or 5 s). */
static void run_until_idle(void)
{
    for (int i = 0; i < 500 && side_count(&wk) > 0; i++)
        loop_run_once(wk.loop, 10);
}

/* ---------- tests ---------- */

static void test_json(struct backend_fake *f)
{
    atomic_store(&f->reply, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\n"
                            "content-length: 11\r\n\r\n"
                            "{\"data\":[]}");
    struct caller c = { 0 };
    struct side_request rq = request(2000, 1024);
    struct side_call *call = side_start(&wk, model("m"), &rq, &ops, &c);
    CHECK(call != NULL);
    CHECK_EQ_INT(side_count(&wk), 1);
    CHECK_EQ_INT(c.ends, 0); /* never inside side_start when it returns the call */
    CHECK_EQ_INT(atomic_load(&gw.backends[0].inflight), 1);
    run_until_idle();
    CHECK_EQ_INT(c.ends, 1);
    CHECK_EQ_INT(c.heads, 1);
    CHECK_EQ_INT(c.r.end, SIDE_DONE);
    CHECK_EQ_INT(c.r.status, 200);
    CHECK(c.r.be == &gw.backends[0] && c.picked == c.r.be);
    CHECK(!c.r.sse && !c.r.too_large);
    CHECK_EQ_STR(c.body, "{\"data\":[]}");
    CHECK_EQ_INT(c.r.body_bytes, 11);
    CHECK(c.r.t_end_ns >= c.r.t_start_ns);
    CHECK_EQ_INT(side_count(&wk), 0);
    CHECK_EQ_INT(atomic_load(&gw.backends[0].inflight), 0); /* the reservation given back */
    pthread_mutex_lock(&f->mu);
    /* base_path /v1 and path /v1/... are joined without doubling /v1 */
    CHECK(strncmp(f->req, "POST /v1/embeddings HTTP/1.1\r\n", 30) == 0);
    CHECK(strstr(f->req, "\r\nauthorization: Bearer sk-side\r\n") != NULL);
    CHECK(strstr(f->req, "\r\ncontent-type: application/json\r\n") != NULL);
    CHECK(strstr(f->req, "\r\nx-purpose: classify\r\n") != NULL);
    CHECK(strstr(f->req, "\r\n\r\n{\"model\":\"") != NULL); /* on_pick's body */
    pthread_mutex_unlock(&f->mu);
}

static void test_sse(struct backend_fake *f)
{
    atomic_store(&f->reply, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/event-stream\r\n\r\n"
                            "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n");
    struct caller c = { 0 };
    struct side_request rq = request(2000, 1024);
    CHECK(side_start(&wk, model("m"), &rq, &ops, &c) != NULL);
    run_until_idle();
    CHECK_EQ_INT(c.ends, 1);
    CHECK_EQ_INT(c.r.end, SIDE_DONE);
    CHECK(c.r.sse && !c.gap);
    CHECK_EQ_STR(c.events, "{\"a\":1}|{\"a\":2}|[DONE]|");
    CHECK_EQ_STR(c.body, ""); /* events are not captured */

    /* an event over the bound is lost; the next one says so */
    atomic_store(&f->reply, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/event-stream\r\n\r\n"
                            "data: 0123456789abcdef0123456789\n\ndata: ok\n\n");
    struct caller d = { 0 };
    rq.sse_event_max = 16;
    CHECK(side_start(&wk, model("m"), &rq, &ops, &d) != NULL);
    run_until_idle();
    CHECK_EQ_INT(d.ends, 1);
    CHECK_EQ_STR(d.events, "ok|");
    CHECK(d.gap);
    CHECK_EQ_INT(d.r.sse_skipped, 1);
}

static void test_bounds_and_status(struct backend_fake *f)
{
    atomic_store(&f->reply, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: application/json\r\n"
                            "content-length: 20\r\n\r\n"
                            "{\"x\":\"0123456789ab\"}");
    struct caller c = { 0 };
    struct side_request rq = request(2000, 8);
    CHECK(side_start(&wk, model("m"), &rq, &ops, &c) != NULL);
    run_until_idle();
    CHECK_EQ_INT(c.ends, 1);
    CHECK_EQ_INT(c.r.end, SIDE_DONE);
    CHECK(c.r.too_large);
    CHECK_EQ_STR(c.body, ""); /* nothing kept over the bound */
    CHECK_EQ_INT(c.r.body_bytes, 20); /* but all of it read */

    /* an error status is the caller's to judge; its body is not captured */
    atomic_store(&f->reply, "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno");
    struct caller d = { 0 };
    rq.capture_max = 1024;
    CHECK(side_start(&wk, model("m"), &rq, &ops, &d) != NULL);
    run_until_idle();
    CHECK_EQ_INT(d.ends, 1);
    CHECK_EQ_INT(d.r.end, SIDE_DONE);
    CHECK_EQ_INT(d.r.status, 400);
    CHECK_EQ_STR(d.body, "");
    CHECK(backend_is_up(&gw.backends[0], loop_now(wk.loop)));
}

static void test_deadline_and_cancel(struct backend_fake *f)
{
    atomic_store(&f->reply, NULL); /* never answers */
    struct caller c = { 0 };
    struct side_request rq = request(100, 1024);
    uint64_t t0 = mono_ns();
    CHECK(side_start(&wk, model("m"), &rq, &ops, &c) != NULL);
    run_until_idle();
    CHECK_EQ_INT(c.ends, 1);
    CHECK_EQ_INT(c.r.end, SIDE_DEADLINE);
    CHECK_EQ_INT(c.r.status, 0);
    CHECK(mono_ns() - t0 >= 90u * 1000000u);
    CHECK_EQ_INT(atomic_load(&gw.backends[0].inflight), 0);

    /* cancel: on_end at once, inside side_cancel, and never again */
    struct caller d = { 0 };
    rq.deadline_ms = 5000;
    struct side_call *call = side_start(&wk, model("m"), &rq, &ops, &d);
    CHECK(call != NULL);
    for (int i = 0; i < 5; i++)
        loop_run_once(wk.loop, 10);
    side_cancel(call);
    CHECK_EQ_INT(d.ends, 1);
    CHECK_EQ_INT(d.r.end, SIDE_CANCELLED);
    CHECK_EQ_INT(side_count(&wk), 0);
    for (int i = 0; i < 5; i++)
        loop_run_once(wk.loop, 10);
    CHECK_EQ_INT(d.ends, 1);

    /* shutdown: every call ends, each once */
    struct caller e[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        CHECK(side_start(&wk, model("m"), &rq, &ops, &e[i]) != NULL);
    CHECK_EQ_INT(side_count(&wk), 3);
    side_cancel_all(&wk);
    CHECK_EQ_INT(side_count(&wk), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(e[i].ends, 1);
        CHECK_EQ_INT(e[i].r.end, SIDE_SHUTDOWN);
    }
    CHECK_EQ_INT(atomic_load(&gw.backends[0].inflight), 0);
}

/* on_end may start the next call (a retry, a second step): the worker's
 * list is consistent while it runs */
static struct caller chained;
static void chain_end(void *arg, const struct side_result *r)
{
    c_end(arg, r);
    struct side_request rq = request(2000, 1024);
    side_start(&wk, model("m"), &rq, &ops, &chained);
}

static void test_chain(struct backend_fake *f)
{
    atomic_store(&f->reply, "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}");
    static const struct side_ops chain_ops = { c_pick, NULL, NULL, chain_end };
    struct caller c = { 0 };
    struct side_request rq = request(2000, 1024);
    CHECK(side_start(&wk, model("m"), &rq, &chain_ops, &c) != NULL);
    run_until_idle();
    CHECK_EQ_INT(c.ends, 1);
    CHECK_EQ_INT(chained.ends, 1);
    CHECK_EQ_INT(chained.r.end, SIDE_DONE);
    CHECK_EQ_STR(chained.body, "{}");
}

static void test_down(void)
{
    /* nothing listens: the exchange fails, the backend is marked down
     * (max_fails 1), and the next call finds no backend at once */
    struct caller c = { 0 };
    struct side_request rq = request(2000, 1024);
    rq.body = "{}";
    rq.body_len = 2;
    static const struct side_ops plain = { NULL, NULL, NULL, c_end };
    CHECK(side_start(&wk, model("down"), &rq, &plain, &c) != NULL);
    run_until_idle();
    CHECK_EQ_INT(c.ends, 1);
    CHECK_EQ_INT(c.r.end, SIDE_FAILED);
    CHECK_EQ_INT(c.r.err, UP_ECONNECT);
    CHECK(!backend_is_up(&gw.backends[1], loop_now(wk.loop)));
    CHECK(wk.met->up_errors[1][UP_ECONNECT] == 1);

    struct caller d = { 0 };
    CHECK(side_start(&wk, model("down"), &rq, &plain, &d) == NULL);
    CHECK_EQ_INT(d.ends, 1); /* inside side_start */
    CHECK_EQ_INT(d.r.end, SIDE_NO_BACKEND);
    CHECK(d.r.be == NULL);
    CHECK_EQ_INT(side_count(&wk), 0);
}

int main(void)
{
    log_set_level("error");
    struct backend_fake f;
    int dead = -1;
    int dfd = loopback_listen(&dead); /* a port nobody listens on: bound, then closed */
    if (dfd >= 0)
        close(dfd);
    CHECK(dfd >= 0);
    bool up = fake_up(&f);
    CHECK(up);
    if (!up || dead <= 0 || !setup(f.port, dead)) {
        CHECK(!"set-up failed");
        UNIT_DONE();
    }
    test_json(&f);
    test_sse(&f);
    test_bounds_and_status(&f);
    test_deadline_and_cancel(&f);
    test_chain(&f);
    test_down();
    teardown();
    fake_down(&f);
    UNIT_DONE();
}
