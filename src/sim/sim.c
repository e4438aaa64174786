/* sim.c — `shade sim`: a simulated OpenAI-compatible model server.
 *
 * It answers chat completions, legacy completions, embeddings and model
 * listings with made-up but deterministic content (see sim_text.c), paced
 * like a real model (time to first token, tokens per second) and with
 * injected faults (500s, 429s, hangs) at chosen rates.  It exists for demos,
 * tests and benchmarks of the gateway; it is not a model.
 *
 * With --judge it plays a judge model instead: a chat completion's last user
 * message holds two answers ("[Answer A]" … "[Answer B]" … "[End]", the
 * format judge.c sends) and the reply names the one with more distinct
 * words ("… VERDICT: A"), or a position-biased choice with --judge-bias.
 * The reply is a fixed text, stored in the job and cut into word tokens,
 * so it streams and paces like any other.  --quality garbles a share of the
 * words of ordinary replies, to make a controllably worse candidate.
 *
 * Every worker thread runs its own event loop and httpd on its own
 * SO_REUSEPORT socket.  A request that cannot be answered at once becomes a
 * `job` (one allocation) with one timer; streams emit every token that is due
 * at each wake-up in one write, and pause while the client is not reading.
 * The main thread only waits for SIGINT / SIGTERM and tells the workers.
 */
#include "sim.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "httpd.h"
#include "json.h"
#include "loop.h"
#include "rand.h"
#include "sim_text.h"

#define MAX_OUTPUT_TOKENS   1000000u
#define MAX_EMBEDDING_DIM   65536u
#define STREAM_BATCH_BYTES  (32u * 1024u)   /* one write per wake-up at most this */
#define STOP_POLL_MS        20u
#define SCRATCH_KEEP        (4u << 20)
/* the reply to a request drawn by --refuse-rate (a default refusal pattern
 * of compare.c matches it) */
#define SIM_REFUSAL "I'm sorry, but I can't help with that."

/* ---------- configuration (read-only once workers start) ---------- */

struct sim_cfg {
    const char *listen;
    uint64_t seed;
    uint64_t ttft_ms, ttft_jitter_ms;
    double tps, tps_jitter;
    uint64_t max_tokens;
    double vary, error_rate, rate_limit_rate, hang_rate;
    double refuse_rate; /* share of replies that are a refusal */
    double vary_word;   /* per-word replacement probability, from vary */
    double quality;     /* share of words kept; the rest become filler words */
    double garble;      /* 1 - quality */
    bool judge;         /* act as a judge model (chat completions) */
    enum sim_bias judge_bias;
    double judge_margin;
    const char *judge_bias_name;
    const char *model;
    uint64_t workers;
    uint64_t embedding_dim;
    uint64_t grace_ms;
    /* derived */
    char *model_json; size_t model_json_len;   /* model name as a JSON string */
    char *models_body; size_t models_len;      /* GET /v1/models */
    char *model_obj; size_t model_obj_len;     /* GET /v1/models/{model} */
};

static struct sim_cfg cfg;
static atomic_uint_fast64_t req_counter;     /* one draw per model request */
static atomic_int stop_level;                /* 1 = graceful, 2 = now */
static atomic_int workers_exited;

/* ---------- workers and jobs ---------- */

enum job_kind { K_CHAT, K_COMPLETION, K_EMBEDDING };
enum job_mode { M_HANG, M_DELAYED, M_STREAM };

struct worker;

struct job {
    struct job *prev, *next;
    struct worker *w;
    http_req *r;
    ev_timer timer;
    ev_defer defer;          /* continue after a flush (batch cap, pause) */
    enum job_kind kind;
    enum job_mode mode;
    bool include_usage, started, paused;
    struct sim_text text;
    const char *fixed;       /* a fixed reply (the judge's) instead of text's words */
    uint32_t fixed_off;      /* next unsent byte of fixed */
    uint32_t next_tok;
    uint32_t prompt_tokens;
    double due_us;           /* when token next_tok is due, loop µs */
    double interval_us;      /* 1e6 / tps, 0 when instant */
    uint64_t rng;            /* per-token jitter */
    size_t len;              /* bytes in data: SSE chunk head, or delayed body */
    char data[];
};

struct worker {
    int idx;
    loop_t *loop;
    struct httpd *httpd;
    int lfd;
    pthread_t th;
    ev_async wake;
    ev_timer stop_timer;
    uint64_t stop_deadline;
    bool stopping;
    bool wake_ok;
    struct job *jobs;
    size_t njobs;
    struct buf scratch;      /* response bodies and stream batches */
    uint64_t id_state;
};

static const struct http_hdr json_hdr[] = { { "content-type", 12, "application/json", 16 } };
static const struct http_hdr sse_hdrs[] = {
    { "content-type", 12, "text/event-stream", 17 },
    { "cache-control", 13, "no-cache", 8 },
};

/* ---------- small output helpers ---------- */

static void put(struct buf *b, const void *p, size_t n)
{
    /* scratch space is reserved up front where it matters; on allocation
     * failure the body is short and the response still well-framed */
    (void)buf_append(b, p, n);
}
#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    put(b, tmp, sim_u64_dec(v, tmp));
}

static void make_id(struct worker *w, char *out)
{
    /* 29 base-62 characters, as OpenAI's ids */
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint64_t x = 0;
    for (int i = 0; i < 29; i++) {
        if (i % 10 == 0)
            x = rnd_splitmix64(w->id_state++);
        out[i] = alpha[x % 62];
        x /= 62;
    }
}

static uint64_t now_unix(void) { return (uint64_t)time(NULL); }

/* ---------- errors ---------- */

static void respond_error_hdrs(http_req *r, int status, const struct http_hdr *extra, size_t nextra,
                               const char *type, const char *code, const char *param, const char *msg)
{
    char body[2048];
    size_t n = http_error_json(body, sizeof body, type, code, param, msg);
    struct http_hdr h[3] = { json_hdr[0] };
    for (size_t i = 0; i < nextra && i < 2; i++)
        h[1 + i] = extra[i];
    http_start(r, status, h, 1 + (nextra < 2 ? nextra : 2), (int64_t)n);
    http_write(r, body, n);
    http_end(r);
}

static void bad_request(http_req *r, const char *param, const char *msg)
{
    respond_error_hdrs(r, 400, NULL, 0, "invalid_request_error", NULL, param, msg);
}

static void method_not_allowed(http_req *r, const char *allow)
{
    char msg[256];
    snprintf(msg, sizeof msg, "Method %.*s is not allowed for %.*s (use %s).", (int)r->method_len,
             r->method_name, (int)(r->path_len > 128 ? 128 : r->path_len), r->path, allow);
    struct http_hdr h = { "allow", 5, allow, strlen(allow) };
    respond_error_hdrs(r, 405, &h, 1, "invalid_request_error", NULL, NULL, msg);
}

/* ---------- job bookkeeping ---------- */

static struct job *job_new(struct worker *w, http_req *r, enum job_mode mode, size_t extra);
static void job_free(struct job *j);
static void job_abort_cb(http_req *r);
static void stream_emit(struct job *j);

static void job_timer_cb(loop_t *l, ev_timer *t)
{
    struct job *j = t->data;
    if (j->mode == M_DELAYED) {
        http_req *r = j->r;
        http_start(r, 200, json_hdr, 1, (int64_t)j->len);
        http_write(r, j->data, j->len);
        http_end(r);
        job_free(j);
        return;
    }
    stream_emit(j);
}

static void job_defer_cb(loop_t *l, ev_defer *d)
{
    struct job *j = d->data;
    if (j->paused) {
        /* re-check once our writes were flushed: if they all went out there
         * will be no write event, hence no on_drain */
        if (http_out_pending(j->r) >= HTTP_OUT_LOW_WATER)
            return; /* still blocked: on_drain will come */
        j->paused = false;
    }
    stream_emit(j);
}

static void job_drain_cb(http_req *r)
{
    struct job *j = r->ctx;
    if (!j || !j->paused)
        return;
    j->paused = false;
    ev_defer_cancel(j->w->loop, &j->defer);
    stream_emit(j);
}

static struct job *job_new(struct worker *w, http_req *r, enum job_mode mode, size_t extra)
{
    struct job *j = malloc(sizeof *j + extra);
    if (!j)
        return NULL;
    memset(j, 0, sizeof *j);
    j->w = w;
    j->r = r;
    j->mode = mode;
    ev_timer_init(&j->timer, job_timer_cb, j);
    ev_defer_init(&j->defer, job_defer_cb, j);
    j->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = j;
    w->jobs = j;
    w->njobs++;
    r->ctx = j;
    r->on_abort = job_abort_cb;
    return j;
}

static void job_free(struct job *j)
{
    struct worker *w = j->w;
    ev_timer_stop(w->loop, &j->timer);
    ev_defer_cancel(w->loop, &j->defer);
    if (j->prev)
        j->prev->next = j->next;
    else
        w->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    w->njobs--;
    free(j);
}

static void job_abort_cb(http_req *r)
{
    /* the client left: drop everything, never touch r again */
    struct job *j = r->ctx;
    if (j)
        job_free(j);
}

/* ---------- streaming ---------- */

/* Next token of a fixed reply: a word and the spaces after it, at most
 * SIM_TOKEN_MAX bytes.  The text needs no JSON escaping (judge_reply). */
static size_t fixed_token(const char *s, uint32_t *off, char *out)
{
    const char *p = s + *off;
    size_t n = 0;
    while (p[n] && p[n] != ' ' && n < SIM_TOKEN_MAX)
        n++;
    while (p[n] == ' ' && n < SIM_TOKEN_MAX)
        n++;
    memcpy(out, p, n);
    *off += (uint32_t)n;
    return n;
}

static uint32_t fixed_tokens(const char *s)
{
    uint32_t off = 0, n = 0;
    char tok[SIM_TOKEN_MAX];
    while (s[off]) {
        fixed_token(s, &off, tok);
        n++;
    }
    return n;
}

static size_t next_token(const struct sim_text *t, const char *fixed, uint32_t *off, uint32_t i, char *out)
{
    return fixed ? fixed_token(fixed, off, out) : sim_token_garbled(t, cfg.garble, i, out);
}

static const char *finish_reason(const struct sim_text *t) { return t->n < t->natural ? "length" : "stop"; }

static void put_tail(struct buf *b, const struct job *j)
{
    if (j->include_usage)
        PUTS(b, "],\"usage\":null}\n\n");
    else
        PUTS(b, "]}\n\n");
}

static void put_usage(struct buf *b, uint32_t prompt, uint32_t completion)
{
    PUTS(b, "{\"prompt_tokens\":");
    put_u64(b, prompt);
    PUTS(b, ",\"completion_tokens\":");
    put_u64(b, completion);
    PUTS(b, ",\"total_tokens\":");
    put_u64(b, (uint64_t)prompt + completion);
    PUTS(b, "}");
}

static void stream_emit(struct job *j)
{
    struct worker *w = j->w;
    http_req *r = j->r;
    struct buf *b = &w->scratch;
    double now_us = (double)loop_now(w->loop) * 1000.0;
    buf_reset(b);
    if (!j->started) {
        http_start(r, 200, sse_hdrs, 2, -1);
        j->started = true;
        if (j->kind == K_CHAT) {
            put(b, j->data, j->len);
            PUTS(b, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                    "\"finish_reason\":null}");
            put_tail(b, j);
        }
    }
    char tok[SIM_TOKEN_MAX];
    while (j->next_tok < j->text.n && j->due_us <= now_us && buf_used(b) < STREAM_BATCH_BYTES) {
        size_t tl = next_token(&j->text, j->fixed, &j->fixed_off, j->next_tok, tok);
        put(b, j->data, j->len);
        if (j->kind == K_CHAT) {
            PUTS(b, "{\"index\":0,\"delta\":{\"content\":\"");
            put(b, tok, tl);
            PUTS(b, "\"},\"logprobs\":null,\"finish_reason\":null}");
        } else {
            PUTS(b, "{\"text\":\"");
            put(b, tok, tl);
            PUTS(b, "\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}");
        }
        put_tail(b, j);
        j->next_tok++;
        double step = j->interval_us;
        if (step > 0 && cfg.tps_jitter > 0)
            step *= 1.0 + cfg.tps_jitter * (2.0 * sim_unit(rnd_splitmix64(j->rng++)) - 1.0);
        j->due_us += step;
    }
    if (j->next_tok == j->text.n) {
        const char *fr = finish_reason(&j->text);
        put(b, j->data, j->len);
        if (j->kind == K_CHAT)
            PUTS(b, "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"");
        else
            PUTS(b, "{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"");
        put(b, fr, strlen(fr));
        PUTS(b, "\"}");
        put_tail(b, j);
        if (j->include_usage) {
            put(b, j->data, j->len);
            PUTS(b, "],\"usage\":");
            put_usage(b, j->prompt_tokens, j->text.n);
            PUTS(b, "}\n\n");
        }
        PUTS(b, "data: [DONE]\n\n");
        http_write(r, buf_data(b), buf_used(b));
        http_end(r);
        job_free(j);
        return;
    }
    http_write(r, buf_data(b), buf_used(b));
    if (http_out_pending(r) > HTTP_OUT_HIGH_WATER) {
        /* the client is not keeping up: wait for on_drain (or for the
         * deferred re-check, if the flush empties the buffer at once) */
        j->paused = true;
        ev_defer_post(w->loop, &j->defer);
        return;
    }
    if (j->due_us <= now_us) {
        ev_defer_post(w->loop, &j->defer); /* batch cap hit: more is due now */
        return;
    }
    double wait = (j->due_us - now_us) / 1000.0;
    uint64_t ms = (uint64_t)wait;
    if ((double)ms < wait)
        ms++;
    ev_timer_start(w->loop, &j->timer, ms);
}

/* ---------- request parsing ---------- */

/* What a model request asked for, after validation. */
struct mreq {
    struct json_span root;
    const char *model; size_t model_len;   /* JSON string, quotes included */
    const char *prompt; size_t prompt_len; /* bytes hashed for the reply */
    uint32_t prompt_tokens;
    int64_t max_tokens;                    /* 0 = not given */
    bool stream, include_usage;
};

static size_t count_tokens_value(const struct json_span *v)
{
    /* a string: its words; an array: strings' words, numbers one each,
     * nested arrays recursively (token arrays) */
    if (v->type == JSON_STRING)
        return sim_count_words_json(v->p, v->len);
    if (v->type == JSON_NUMBER)
        return 1;
    if (v->type != JSON_ARRAY)
        return 0;
    size_t it = 0, n = 0;
    struct json_span k, e;
    while (json_next(v, &it, &k, &e)) {
        if (e.type == JSON_ARRAY) {
            size_t it2 = 0;
            struct json_span k2, e2;
            while (json_next(&e, &it2, &k2, &e2))
                n += e2.type == JSON_STRING ? sim_count_words_json(e2.p, e2.len) : 1;
        } else {
            n += count_tokens_value(&e);
        }
    }
    return n;
}

static size_t count_message_tokens(const struct json_span *messages)
{
    size_t it = 0, n = 0;
    struct json_span k, m;
    while (json_next(messages, &it, &k, &m)) {
        struct json_span c;
        if (m.type != JSON_OBJECT || !json_get(&m, "content", &c))
            continue;
        if (c.type == JSON_STRING) {
            n += sim_count_words_json(c.p, c.len);
        } else if (c.type == JSON_ARRAY) {
            size_t it2 = 0;
            struct json_span k2, part, text;
            while (json_next(&c, &it2, &k2, &part))
                if (part.type == JSON_OBJECT && json_get(&part, "text", &text) && text.type == JSON_STRING)
                    n += sim_count_words_json(text.p, text.len);
        }
    }
    return n;
}

static bool get_present(const struct json_span *obj, const char *key, struct json_span *out)
{
    return json_get(obj, key, out) && out->type != JSON_NULL;
}

/* Returns false after answering with an error. */
static bool parse_common(http_req *r, struct mreq *q)
{
    memset(q, 0, sizeof *q);
    struct json_error err;
    if (json_validate(r->body, r->body_len, &q->root, &err) < 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "We could not parse the JSON body of your request: %s at byte offset %zu.",
                 err.message ? err.message : "invalid JSON", err.offset);
        bad_request(r, NULL, msg);
        return false;
    }
    if (q->root.type != JSON_OBJECT) {
        bad_request(r, NULL, "The request body must be a JSON object.");
        return false;
    }
    struct json_span v;
    if (get_present(&q->root, "model", &v)) {
        if (v.type != JSON_STRING) {
            bad_request(r, "model", "Invalid type for 'model': expected a string.");
            return false;
        }
        q->model = v.p;
        q->model_len = v.len;
    } else {
        q->model = cfg.model_json;
        q->model_len = cfg.model_json_len;
    }
    if (get_present(&q->root, "stream", &v)) {
        if (v.type != JSON_TRUE && v.type != JSON_FALSE) {
            bad_request(r, "stream", "Invalid type for 'stream': expected a boolean.");
            return false;
        }
        q->stream = v.type == JSON_TRUE;
    }
    if (get_present(&q->root, "stream_options", &v)) {
        struct json_span u;
        if (v.type != JSON_OBJECT) {
            bad_request(r, "stream_options", "Invalid type for 'stream_options': expected an object.");
            return false;
        }
        if (json_get(&v, "include_usage", &u))
            q->include_usage = json_is_true(&u);
    }
    return true;
}

static bool parse_max_tokens(http_req *r, struct mreq *q, const char *key)
{
    struct json_span v;
    if (!get_present(&q->root, key, &v))
        return true;
    int64_t n;
    if (v.type != JSON_NUMBER || !json_to_i64(&v, &n) || n < 1) {
        char msg[128];
        snprintf(msg, sizeof msg, "Invalid '%s': expected an integer greater than or equal to 1.", key);
        bad_request(r, key, msg);
        return false;
    }
    q->max_tokens = n;
    return true;
}

/* ---------- faults ---------- */

enum fault { F_NONE, F_ERROR, F_RATE_LIMIT, F_HANG };

static enum fault draw_fault(uint64_t n)
{
    double u = sim_unit(rnd_splitmix64(cfg.seed ^ rnd_splitmix64(n ^ 0xfa17fa17fa17fa17ull)));
    double e = cfg.error_rate, rl = e + cfg.rate_limit_rate, h = rl + cfg.hang_rate;
    if (u < e)
        return F_ERROR;
    if (u < rl)
        return F_RATE_LIMIT;
    if (u < h)
        return F_HANG;
    return F_NONE;
}

/* Returns true when the fault answered (or parked) the request. */
static bool apply_fault(struct worker *w, http_req *r, uint64_t n)
{
    switch (draw_fault(n)) {
    case F_NONE:
        return false;
    case F_ERROR:
        respond_error_hdrs(r, 500, NULL, 0, "server_error", NULL, NULL,
                           "The server had an error while processing your request. Sorry about that! "
                           "(simulated by shade sim)");
        return true;
    case F_RATE_LIMIT: {
        static const struct http_hdr ra = { "retry-after", 11, "1", 1 };
        respond_error_hdrs(r, 429, &ra, 1, "requests", "rate_limit_exceeded", NULL,
                           "Rate limit reached for requests. Please try again in 1s. (simulated by shade sim)");
        return true;
    }
    case F_HANG:
        if (!job_new(w, r, M_HANG, 0))
            http_abort(r);
        return true;
    }
    return false;
}

/* ---------- timing ---------- */

static double ttft_us(uint64_t n)
{
    double t = (double)cfg.ttft_ms * 1000.0;
    if (cfg.ttft_jitter_ms) {
        double u = sim_unit(rnd_splitmix64(cfg.seed ^ rnd_splitmix64(n ^ 0x7777777777777777ull)));
        t += (2.0 * u - 1.0) * (double)cfg.ttft_jitter_ms * 1000.0;
    }
    return t < 0 ? 0 : t;
}

static uint64_t us_to_ms_ceil(double us)
{
    if (us <= 0)
        return 0;
    double ms = us / 1000.0;
    uint64_t m = (uint64_t)ms;
    return (double)m < ms ? m + 1 : m;
}

/* Send a finished body now, or after delay_us. */
static void respond_after(struct worker *w, http_req *r, const char *body, size_t len, double delay_us)
{
    uint64_t ms = us_to_ms_ceil(delay_us);
    if (ms == 0) {
        http_start(r, 200, json_hdr, 1, (int64_t)len);
        http_write(r, body, len);
        http_end(r);
        return;
    }
    struct job *j = job_new(w, r, M_DELAYED, len);
    if (!j) {
        respond_error_hdrs(r, 500, NULL, 0, "server_error", NULL, NULL, "out of memory");
        return;
    }
    memcpy(j->data, body, len);
    j->len = len;
    ev_timer_start(w->loop, &j->timer, ms);
}

/* ---------- the judge (--judge) ---------- */

static int append_unescaped(struct buf *b, const struct json_span *v)
{
    /* decoding never makes a string longer than its escaped form */
    char *w = buf_reserve(b, v->len + 1);
    if (!w)
        return -1;
    long n = json_str_unescape(v, w, v->len + 1);
    if (n < 0)
        return -1;
    b->len += (size_t)n;
    return 0;
}

/* The judge's reply to a chat request: judge the answers in the last user
 * message (content a string, or text parts joined by newlines) by
 * sim_judge's rule.  The text is plain ASCII words, digits, spaces and
 * punctuation without quotes or backslashes: no JSON escaping needed.
 * Returns -1 when memory ran out. */
static int judge_reply(const struct json_span *messages, char *out, size_t cap)
{
    struct json_span last = { 0 }, k, m, role, c;
    size_t it = 0;
    while (json_next(messages, &it, &k, &m))
        if (m.type == JSON_OBJECT && json_get(&m, "role", &role) && json_str_eq(&role, "user") &&
            json_get(&m, "content", &c))
            last = c;
    struct buf text = { 0 };
    int rc = 0;
    if (last.type == JSON_STRING) {
        rc = append_unescaped(&text, &last);
    } else if (last.type == JSON_ARRAY) {
        size_t it2 = 0;
        struct json_span k2, part, t;
        while (rc == 0 && json_next(&last, &it2, &k2, &part)) {
            if (part.type != JSON_OBJECT || !json_get(&part, "text", &t) || t.type != JSON_STRING)
                continue;
            if (buf_used(&text) && buf_append(&text, "\n", 1) < 0)
                rc = -1;
            else
                rc = append_unescaped(&text, &t);
        }
    }
    struct sim_judgement jd = { 0 };
    if (rc == 0) {
        sim_judge(text.p ? buf_data(&text) : "", buf_used(&text), cfg.judge_bias, cfg.judge_margin, &jd);
        if (jd.words_a == SIZE_MAX)
            rc = -1;
    }
    buf_free(&text);
    if (rc < 0)
        return -1;
    static const char *const names[] = { "", "A", "B", "TIE" };
    if (jd.verdict == SIM_VERDICT_NONE)
        snprintf(out, cap, "No answers to compare: the last user message needs [Answer A], [Answer B] "
                           "and [End] sections.");
    else if (cfg.judge_bias != SIM_BIAS_NONE)
        snprintf(out, cap, "Answer A has %zu distinct words and answer B has %zu. Position bias: preferring "
                 "the %s answer. VERDICT: %s", jd.words_a, jd.words_b,
                 cfg.judge_bias == SIM_BIAS_FIRST ? "first" : "second", names[jd.verdict]);
    else
        snprintf(out, cap, "Answer A has %zu distinct words and answer B has %zu. VERDICT: %s", jd.words_a,
                 jd.words_b, names[jd.verdict]);
    return 0;
}

/* ---------- chat and legacy completions ---------- */

static void handle_generate(struct worker *w, http_req *r, enum job_kind kind)
{
    struct mreq q;
    if (!parse_common(r, &q))
        return;
    struct json_span v;
    if (kind == K_CHAT) {
        if (!get_present(&q.root, "messages", &v)) {
            bad_request(r, "messages", "Missing required parameter: 'messages'.");
            return;
        }
        if (v.type != JSON_ARRAY) {
            bad_request(r, "messages", "Invalid type for 'messages': expected an array.");
            return;
        }
        if (json_count(&v) == 0) {
            bad_request(r, "messages", "Invalid 'messages': empty array. Expected an array with minimum length 1.");
            return;
        }
        q.prompt_tokens = (uint32_t)count_message_tokens(&v);
        if (!parse_max_tokens(r, &q, "max_completion_tokens"))
            return;
        if (!q.max_tokens && !parse_max_tokens(r, &q, "max_tokens"))
            return;
    } else {
        if (!get_present(&q.root, "prompt", &v)) {
            bad_request(r, "prompt", "Missing required parameter: 'prompt'.");
            return;
        }
        if (v.type != JSON_STRING && v.type != JSON_ARRAY) {
            bad_request(r, "prompt", "Invalid type for 'prompt': expected a string or an array.");
            return;
        }
        q.prompt_tokens = (uint32_t)count_tokens_value(&v);
        if (!parse_max_tokens(r, &q, "max_tokens"))
            return;
    }
    q.prompt = v.p;
    q.prompt_len = v.len;

    uint64_t n = atomic_fetch_add_explicit(&req_counter, 1, memory_order_relaxed);
    if (apply_fault(w, r, n))
        return;

    /* a judge's reply is a fixed text, its words the tokens */
    char reply[320];
    const char *fixed = NULL;
    if (cfg.judge && kind == K_CHAT) {
        if (judge_reply(&v, reply, sizeof reply) < 0) {
            respond_error_hdrs(r, 500, NULL, 0, "server_error", NULL, NULL, "out of memory");
            return;
        }
        fixed = reply;
    } else if (cfg.refuse_rate > 0 &&
               sim_unit(rnd_splitmix64(cfg.seed ^ rnd_splitmix64(n ^ 0x2ef05e2ef05e2ef0ull))) < cfg.refuse_rate) {
        fixed = SIM_REFUSAL;
    }
    struct sim_text t = {
        .hash = sim_hash(q.prompt, q.prompt_len, cfg.seed),
        .nonce = rnd_splitmix64(cfg.seed ^ rnd_splitmix64(n ^ 0x5eed5eed5eed5eedull)),
        .vary = cfg.vary_word,
        .natural = fixed ? fixed_tokens(fixed) : (uint32_t)cfg.max_tokens,
    };
    t.n = t.natural;
    if (q.max_tokens && (uint64_t)q.max_tokens < t.natural)
        t.n = (uint32_t)q.max_tokens;

    char id[29];
    make_id(w, id);
    uint64_t created = now_unix();
    double first_us = ttft_us(n);
    double interval = cfg.tps > 0 ? 1e6 / cfg.tps : 0;
    uint64_t rng = rnd_splitmix64(cfg.seed ^ rnd_splitmix64(n ^ 0x3141592653589793ull));

    struct buf *b = &w->scratch;
    buf_reset(b);
    if (q.stream) {
        /* the part every chunk starts with, built once */
        if (kind == K_CHAT)
            PUTS(b, "data: {\"id\":\"chatcmpl-");
        else
            PUTS(b, "data: {\"id\":\"cmpl-");
        put(b, id, sizeof id);
        if (kind == K_CHAT)
            PUTS(b, "\",\"object\":\"chat.completion.chunk\",\"created\":");
        else
            PUTS(b, "\",\"object\":\"text_completion\",\"created\":");
        put_u64(b, created);
        PUTS(b, ",\"model\":");
        put(b, q.model, q.model_len);
        PUTS(b, ",\"system_fingerprint\":\"fp_sim\",\"choices\":[");
        size_t fixed_len = fixed ? strlen(fixed) + 1 : 0;
        struct job *j = job_new(w, r, M_STREAM, buf_used(b) + fixed_len);
        if (!j) {
            respond_error_hdrs(r, 500, NULL, 0, "server_error", NULL, NULL, "out of memory");
            return;
        }
        memcpy(j->data, buf_data(b), buf_used(b));
        j->len = buf_used(b);
        if (fixed) {
            memcpy(j->data + j->len, fixed, fixed_len);
            j->fixed = j->data + j->len;
        }
        j->kind = kind;
        j->include_usage = q.include_usage;
        j->text = t;
        j->prompt_tokens = q.prompt_tokens;
        j->interval_us = interval;
        j->rng = rng;
        r->on_drain = job_drain_cb;
        double now_us = (double)loop_now(w->loop) * 1000.0;
        j->due_us = now_us + first_us;
        uint64_t ms = us_to_ms_ceil(first_us);
        if (ms == 0)
            stream_emit(j);
        else
            ev_timer_start(w->loop, &j->timer, ms);
        return;
    }

    /* whole response: reserve for the text so the token loop never grows b */
    if (!buf_reserve(b, 512 + q.model_len + (size_t)t.n * SIM_TOKEN_MAX)) {
        respond_error_hdrs(r, 500, NULL, 0, "server_error", NULL, NULL, "out of memory");
        return;
    }
    if (kind == K_CHAT)
        PUTS(b, "{\"id\":\"chatcmpl-");
    else
        PUTS(b, "{\"id\":\"cmpl-");
    put(b, id, sizeof id);
    if (kind == K_CHAT)
        PUTS(b, "\",\"object\":\"chat.completion\",\"created\":");
    else
        PUTS(b, "\",\"object\":\"text_completion\",\"created\":");
    put_u64(b, created);
    PUTS(b, ",\"model\":");
    put(b, q.model, q.model_len);
    if (kind == K_CHAT)
        PUTS(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
    else
        PUTS(b, ",\"choices\":[{\"text\":\"");
    uint32_t off = 0;
    for (uint32_t i = 0; i < t.n; i++) {
        size_t l = next_token(&t, fixed, &off, i, b->p + b->len);
        b->len += l;
    }
    if (kind == K_CHAT)
        PUTS(b, "\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"");
    else
        PUTS(b, "\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"");
    const char *fr = finish_reason(&t);
    put(b, fr, strlen(fr));
    PUTS(b, "\"}],\"usage\":");
    put_usage(b, q.prompt_tokens, t.n);
    PUTS(b, ",\"system_fingerprint\":\"fp_sim\"}\n");

    double total = first_us;
    if (interval > 0) {
        double gen = interval * t.n;
        if (cfg.tps_jitter > 0)
            gen *= 1.0 + cfg.tps_jitter * (2.0 * sim_unit(rnd_splitmix64(rng)) - 1.0);
        total += gen;
    }
    respond_after(w, r, buf_data(b), buf_used(b), total);
}

/* ---------- embeddings ---------- */

static bool embed_input_ok(const struct json_span *in)
{
    if (in->type == JSON_STRING)
        return true;
    if (in->type != JSON_ARRAY || json_count(in) == 0)
        return false;
    /* all strings, all integers (one token array), or all integer arrays */
    size_t it = 0;
    struct json_span k, e;
    enum json_type first = JSON_INVALID;
    while (json_next(in, &it, &k, &e)) {
        if (first == JSON_INVALID)
            first = e.type;
        if (e.type != first)
            return false;
        if (e.type == JSON_ARRAY) {
            size_t it2 = 0;
            struct json_span k2, e2;
            if (json_count(&e) == 0)
                return false;
            while (json_next(&e, &it2, &k2, &e2))
                if (e2.type != JSON_NUMBER)
                    return false;
        } else if (e.type != JSON_STRING && e.type != JSON_NUMBER) {
            return false;
        }
    }
    return true;
}

static void put_embedding(struct buf *b, const struct json_span *item, size_t index, size_t dim,
                          bool base64, float *vec, char *tmp)
{
    sim_embed(sim_hash(item->p, item->len, cfg.seed ^ 0xe111bedd1e5ull), vec, dim);
    if (index)
        PUTS(b, ",");
    PUTS(b, "{\"object\":\"embedding\",\"index\":");
    put_u64(b, index);
    PUTS(b, ",\"embedding\":");
    if (base64) {
        /* little-endian float32, as OpenAI sends it */
        unsigned char *raw = (unsigned char *)tmp;
        for (size_t k = 0; k < dim; k++) {
            uint32_t u;
            memcpy(&u, &vec[k], 4);
            raw[4 * k] = (unsigned char)u;
            raw[4 * k + 1] = (unsigned char)(u >> 8);
            raw[4 * k + 2] = (unsigned char)(u >> 16);
            raw[4 * k + 3] = (unsigned char)(u >> 24);
        }
        char *w = buf_reserve(b, 4 * ((4 * dim + 2) / 3) + 4);
        if (!w)
            return;
        w[0] = '"';
        size_t n = sim_base64(raw, 4 * dim, w + 1);
        w[n + 1] = '"';
        b->len += n + 2;
    } else {
        PUTS(b, "[");
        for (size_t k = 0; k < dim; k++) {
            char num[32];
            int n = snprintf(num, sizeof num, "%s%.9g", k ? "," : "", (double)vec[k]);
            put(b, num, (size_t)n);
        }
        PUTS(b, "]");
    }
    PUTS(b, "}");
}

static void handle_embeddings(struct worker *w, http_req *r)
{
    struct mreq q;
    if (!parse_common(r, &q))
        return;
    struct json_span in, v;
    if (!get_present(&q.root, "input", &in)) {
        bad_request(r, "input", "Missing required parameter: 'input'.");
        return;
    }
    if (!embed_input_ok(&in)) {
        bad_request(r, "input", "Invalid 'input': expected a string, an array of strings, "
                                "an array of integers or an array of integer arrays.");
        return;
    }
    size_t dim = (size_t)cfg.embedding_dim;
    if (get_present(&q.root, "dimensions", &v)) {
        int64_t d;
        if (v.type != JSON_NUMBER || !json_to_i64(&v, &d) || d < 1 || d > (int64_t)MAX_EMBEDDING_DIM) {
            bad_request(r, "dimensions", "Invalid 'dimensions': expected an integer between 1 and 65536.");
            return;
        }
        dim = (size_t)d;
    }
    bool base64 = false;
    if (get_present(&q.root, "encoding_format", &v)) {
        if (json_str_eq(&v, "base64")) {
            base64 = true;
        } else if (!json_str_eq(&v, "float")) {
            bad_request(r, "encoding_format", "Invalid 'encoding_format': expected 'float' or 'base64'.");
            return;
        }
    }
    uint64_t n = atomic_fetch_add_explicit(&req_counter, 1, memory_order_relaxed);
    if (apply_fault(w, r, n))
        return;

    float *vec = malloc(dim * sizeof *vec);
    char *tmp = malloc(4 * dim);
    if (!vec || !tmp) {
        free(vec);
        free(tmp);
        respond_error_hdrs(r, 500, NULL, 0, "server_error", NULL, NULL, "out of memory");
        return;
    }
    struct buf *b = &w->scratch;
    buf_reset(b);
    PUTS(b, "{\"object\":\"list\",\"data\":[");
    /* an array of numbers is one token array, i.e. one input */
    struct json_span first;
    if (in.type == JSON_STRING || (json_index(&in, 0, &first) && first.type == JSON_NUMBER)) {
        put_embedding(b, &in, 0, dim, base64, vec, tmp);
    } else {
        size_t it = 0, i = 0;
        struct json_span k, e;
        while (json_next(&in, &it, &k, &e))
            put_embedding(b, &e, i++, dim, base64, vec, tmp);
    }
    free(vec);
    free(tmp);
    size_t ptok = count_tokens_value(&in);
    PUTS(b, "],\"model\":");
    put(b, q.model, q.model_len);
    PUTS(b, ",\"usage\":{\"prompt_tokens\":");
    put_u64(b, ptok);
    PUTS(b, ",\"total_tokens\":");
    put_u64(b, ptok);
    PUTS(b, "}}\n");
    respond_after(w, r, buf_data(b), buf_used(b), ttft_us(n));
}

/* ---------- routing ---------- */

static bool path_is(const http_req *r, const char *p)
{
    size_t n = strlen(p);
    return r->path_len == n && memcmp(r->path, p, n) == 0;
}

static bool is_get(const http_req *r) { return r->method == HTTP_M_GET || r->method == HTTP_M_HEAD; }

static void route(struct worker *w, http_req *r);

static void handle(http_req *r, void *arg)
{
    struct worker *w = arg;
    route(w, r);
    /* one huge reply should not pin its memory for the worker's lifetime */
    if (w->scratch.cap > SCRATCH_KEEP) {
        buf_reset(&w->scratch);
        buf_trim(&w->scratch, SCRATCH_KEEP);
    }
}

static void route(struct worker *w, http_req *r)
{
    if (path_is(r, "/v1/chat/completions") || path_is(r, "/v1/completions") || path_is(r, "/v1/embeddings")) {
        if (r->method != HTTP_M_POST) {
            method_not_allowed(r, "POST");
            return;
        }
        if (r->path[4] == 'c' && r->path[5] == 'h')
            handle_generate(w, r, K_CHAT);
        else if (r->path[4] == 'c')
            handle_generate(w, r, K_COMPLETION);
        else
            handle_embeddings(w, r);
        return;
    }
    if (path_is(r, "/health")) {
        if (!is_get(r))
            method_not_allowed(r, "GET");
        else
            http_respond(r, 200, "application/json", "{\"status\":\"ok\"}\n", 16);
        return;
    }
    if (path_is(r, "/v1/models")) {
        if (!is_get(r))
            method_not_allowed(r, "GET");
        else
            http_respond(r, 200, "application/json", cfg.models_body, cfg.models_len);
        return;
    }
    static const char mprefix[] = "/v1/models/";
    size_t mpl = sizeof mprefix - 1;
    if (r->path_len > mpl && memcmp(r->path, mprefix, mpl) == 0) {
        if (!is_get(r)) {
            method_not_allowed(r, "GET");
        } else if (r->path_len - mpl == strlen(cfg.model) && memcmp(r->path + mpl, cfg.model, r->path_len - mpl) == 0) {
            http_respond(r, 200, "application/json", cfg.model_obj, cfg.model_obj_len);
        } else {
            char msg[300];
            snprintf(msg, sizeof msg, "The model '%.*s' does not exist or you do not have access to it.",
                     (int)(r->path_len - mpl > 200 ? 200 : r->path_len - mpl), r->path + mpl);
            respond_error_hdrs(r, 404, NULL, 0, "invalid_request_error", "model_not_found", NULL, msg);
        }
        return;
    }
    char msg[300];
    snprintf(msg, sizeof msg, "Invalid URL (%.*s %.*s)", (int)(r->method_len > 16 ? 16 : r->method_len),
             r->method_name, (int)(r->path_len > 200 ? 200 : r->path_len), r->path);
    respond_error_hdrs(r, 404, NULL, 0, "invalid_request_error", NULL, NULL, msg);
}

/* ---------- stopping ---------- */

static void stop_timer_cb(loop_t *l, ev_timer *t)
{
    struct worker *w = t->data;
    if (w->njobs == 0 || loop_now(l) >= w->stop_deadline || atomic_load(&stop_level) >= 2) {
        httpd_close_all(w->httpd);
        loop_stop(l);
        return;
    }
    ev_timer_start(l, t, STOP_POLL_MS);
}

static void wake_cb(loop_t *l, ev_async *a)
{
    struct worker *w = a->data;
    if (!w->stopping) {
        w->stopping = true;
        w->stop_deadline = loop_now(l) + cfg.grace_ms;
        httpd_shutdown(w->httpd);
        /* hung requests would never finish: close them now */
        struct job *j = w->jobs;
        while (j) {
            struct job *next = j->next;
            if (j->mode == M_HANG) {
                http_req *r = j->r;
                job_free(j);
                http_abort(r);
            }
            j = next;
        }
    }
    ev_timer_start(l, &w->stop_timer, 0);
}

/* ---------- setup ---------- */

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    int rc = loop_run(w->loop);
    if (rc < 0)
        fprintf(stderr, "shade sim: worker %d: event loop failed: %s\n", w->idx, strerror(-rc));
    atomic_fetch_add(&workers_exited, 1);
    return NULL;
}

static void notify_workers(struct worker *ws, size_t n, int level)
{
    atomic_store(&stop_level, level);
    for (size_t i = 0; i < n; i++)
        ev_async_send(&ws[i].wake);
}

static int split_host_port(const char *s, char *host, size_t hcap, char *port, size_t pcap)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        if ((size_t)(rb - s - 1) >= hcap)
            return -1;
        memcpy(host, s + 1, (size_t)(rb - s - 1));
        host[rb - s - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= hcap)
            return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    size_t pl = strlen(colon + 1);
    if (pl == 0 || pl >= pcap)
        return -1;
    memcpy(port, colon + 1, pl + 1);
    uint64_t pv;
    return sim_parse_uint(port, 0, 65535, &pv);
}

static int open_listener(const struct sockaddr *sa, socklen_t sl, char *err, size_t errcap)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errcap, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, sa, sl) < 0 || listen(fd, 4096) < 0) {
        snprintf(err, errcap, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* SO_REUSEPORT would let a second simulator share a busy port silently:
 * first bind once without it (and resolve port 0), then let go. */
static int probe_address(struct sockaddr_storage *ss, socklen_t *sl)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    if (bind(fd, (struct sockaddr *)ss, *sl) < 0 || getsockname(fd, (struct sockaddr *)&got, &gl) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    *ss = got;
    *sl = gl;
    return 0;
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int build_static_bodies(void)
{
    size_t ml = strlen(cfg.model);
    size_t cap = 6 * ml + 3;
    cfg.model_json = malloc(cap);
    if (!cfg.model_json)
        return -1;
    long n = json_escape(cfg.model, ml, cfg.model_json, cap);
    if (n < 0)
        return -1;
    cfg.model_json_len = (size_t)n;
    struct buf b = { 0 };
    PUTS(&b, "{\"id\":");
    put(&b, cfg.model_json, cfg.model_json_len);
    PUTS(&b, ",\"object\":\"model\",\"created\":");
    put_u64(&b, now_unix());
    PUTS(&b, ",\"owned_by\":\"shade-sim\"}");
    struct buf m = { 0 };
    PUTS(&m, "{\"object\":\"list\",\"data\":[");
    put(&m, buf_data(&b), buf_used(&b));
    PUTS(&m, "]}\n");
    PUTS(&b, "\n");
    if (!b.p || !m.p) {
        buf_free(&b);
        buf_free(&m);
        return -1;
    }
    cfg.model_obj = b.p;
    cfg.model_obj_len = buf_used(&b);
    cfg.models_body = m.p;
    cfg.models_len = buf_used(&m);
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: shade sim [--listen HOST:PORT] [options]\n"
          "\n"
          "A simulated OpenAI-compatible model server for demos, tests and benchmarks.\n"
          "Replies are made-up words, deterministic for a given prompt and seed.\n"
          "\n"
          "  --listen HOST:PORT      address to listen on (default 127.0.0.1:8000; port 0 picks one)\n"
          "  --seed N                seed for text, faults and jitter (default 1)\n"
          "  --ttft-ms N             time to first token in ms (default 50)\n"
          "  --ttft-jitter-ms N      uniform +/- spread of the time to first token (default 0)\n"
          "  --tps N                 tokens per second; 0 = instant (default 100)\n"
          "  --tps-jitter P          relative spread of each token interval, 0..1 (default 0)\n"
          "  --max-tokens N          reply length in tokens; a request's max_tokens can\n"
          "                          only shorten it (default 64)\n"
          "  --vary P                fraction of words that differ between calls, 0..1 (default 0)\n"
          "  --quality Q             fraction of words kept, 0..1; the others become filler\n"
          "                          words, the same for a given prompt (default 1)\n"
          "  --error-rate P          fraction of requests answered 500 (default 0)\n"
          "  --rate-limit-rate P     fraction of requests answered 429 + Retry-After (default 0)\n"
          "  --hang-rate P           fraction of requests never answered (default 0)\n"
          "  --refuse-rate P         fraction of replies that are a refusal: \"" SIM_REFUSAL "\"\n"
          "                          (default 0)\n"
          "  --model NAME            model id for /v1/models and requests without one (default sim)\n"
          "  --workers N             threads, each with its own SO_REUSEPORT socket (default 1)\n"
          "  --embedding-dim N       embedding length (default 16)\n"
          "  --grace-ms N            on SIGTERM, time allowed for replies in flight (default 5000)\n"
          "  --judge                 act as a judge model: chat replies compare the [Answer A] and\n"
          "                          [Answer B] sections of the last user message (doc/simulator.md)\n"
          "  --judge-bias B          none | first | second: always prefer A or B (default none)\n"
          "  --judge-margin P        a tie when the distinct-word counts differ by at most\n"
          "                          P x the larger one (default 0.1)\n"
          "  --help                  this text\n",
          f);
}

struct opt {
    const char *name;
    int kind;          /* 0 uint, 1 probability, 2 double, 3 string, 4 flag (no value) */
    void *dst;
    uint64_t min, max;
};

static int parse_args(int argc, char **argv)
{
    const struct opt opts[] = {
        { "listen", 3, &cfg.listen, 0, 0 },
        { "seed", 0, &cfg.seed, 0, UINT64_MAX },
        { "ttft-ms", 0, &cfg.ttft_ms, 0, 3600000 },
        { "ttft-jitter-ms", 0, &cfg.ttft_jitter_ms, 0, 3600000 },
        { "tps", 2, &cfg.tps, 0, 1000000000 },
        { "tps-jitter", 1, &cfg.tps_jitter, 0, 0 },
        { "max-tokens", 0, &cfg.max_tokens, 1, MAX_OUTPUT_TOKENS },
        { "vary", 1, &cfg.vary, 0, 0 },
        { "error-rate", 1, &cfg.error_rate, 0, 0 },
        { "rate-limit-rate", 1, &cfg.rate_limit_rate, 0, 0 },
        { "hang-rate", 1, &cfg.hang_rate, 0, 0 },
        { "refuse-rate", 1, &cfg.refuse_rate, 0, 0 },
        { "model", 3, &cfg.model, 0, 0 },
        { "workers", 0, &cfg.workers, 1, 1024 },
        { "embedding-dim", 0, &cfg.embedding_dim, 1, MAX_EMBEDDING_DIM },
        { "grace-ms", 0, &cfg.grace_ms, 0, 3600000 },
        { "quality", 1, &cfg.quality, 0, 0 },
        { "judge", 4, &cfg.judge, 0, 0 },
        { "judge-bias", 3, &cfg.judge_bias_name, 0, 0 },
        { "judge-margin", 1, &cfg.judge_margin, 0, 0 },
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "shade sim: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        const char *name = a + 2, *val = NULL;
        const char *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
            if (strlen(opts[k].name) == nl && memcmp(opts[k].name, name, nl) == 0)
                o = &opts[k];
        if (!o) {
            fprintf(stderr, "shade sim: unknown option '%.*s' (see --help)\n", (int)(nl + 2), a);
            return -1;
        }
        if (o->kind == 4) {
            if (eq) {
                fprintf(stderr, "shade sim: --%s takes no value\n", o->name);
                return -1;
            }
            *(bool *)o->dst = true;
            continue;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "shade sim: --%s needs a value\n", o->name);
            return -1;
        }
        int bad = 0;
        switch (o->kind) {
        case 0:
            bad = sim_parse_uint(val, o->min, o->max, o->dst);
            if (bad)
                fprintf(stderr, "shade sim: --%s: expected an integer from %llu to %llu, got '%s'\n",
                        o->name, (unsigned long long)o->min, (unsigned long long)o->max, val);
            break;
        case 1:
            bad = sim_parse_prob(val, o->dst);
            if (bad)
                fprintf(stderr, "shade sim: --%s: expected a number from 0 to 1, got '%s'\n", o->name, val);
            break;
        case 2:
            bad = sim_parse_double(val, (double)o->min, (double)o->max, o->dst);
            if (bad)
                fprintf(stderr, "shade sim: --%s: expected a number from %llu to %llu, got '%s'\n",
                        o->name, (unsigned long long)o->min, (unsigned long long)o->max, val);
            break;
        default:
            if (!*val) {
                fprintf(stderr, "shade sim: --%s: expected a non-empty value\n", o->name);
                bad = -1;
            }
            *(const char **)o->dst = val;
            break;
        }
        if (bad)
            return -1;
    }
    static const char *const biases[] = { "none", "first", "second" };
    bool bias_ok = false;
    for (int b = 0; b < 3; b++)
        if (strcmp(cfg.judge_bias_name, biases[b]) == 0) {
            cfg.judge_bias = (enum sim_bias)b;
            bias_ok = true;
        }
    if (!bias_ok) {
        fprintf(stderr, "shade sim: --judge-bias: expected none, first or second, got '%s'\n",
                cfg.judge_bias_name);
        return -1;
    }
    if (cfg.error_rate + cfg.rate_limit_rate + cfg.hang_rate > 1.0 + 1e-9) {
        fprintf(stderr, "shade sim: --error-rate + --rate-limit-rate + --hang-rate must not exceed 1\n");
        return -1;
    }
    return 0;
}

int sim_main(int argc, char **argv)
{
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "127.0.0.1:8000";
    cfg.seed = 1;
    cfg.ttft_ms = 50;
    cfg.tps = 100;
    cfg.max_tokens = 64;
    cfg.model = "sim";
    cfg.workers = 1;
    cfg.embedding_dim = 16;
    cfg.grace_ms = 5000;
    cfg.quality = 1;
    cfg.judge_bias_name = "none";
    cfg.judge_margin = 0.1;
    atomic_store(&req_counter, 0);
    atomic_store(&stop_level, 0);
    atomic_store(&workers_exited, 0);

    int pr = parse_args(argc, argv);
    if (pr != 0)
        return pr > 0 ? 0 : 2;
    /* two calls differ in a word unless neither replaced it: 1-(1-q)^2 = vary */
    cfg.vary_word = 1.0 - sqrt(1.0 - cfg.vary);
    cfg.garble = 1.0 - cfg.quality;

    char host[256], port[16];
    if (split_host_port(cfg.listen, host, sizeof host, port, sizeof port) < 0) {
        fprintf(stderr, "shade sim: --listen: expected HOST:PORT or [V6]:PORT, got '%s'\n", cfg.listen);
        return 2;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *ai = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (gai != 0 || !ai) {
        fprintf(stderr, "shade sim: --listen %s: %s\n", cfg.listen, gai_strerror(gai));
        return 2;
    }
    if (build_static_bodies() < 0) {
        freeaddrinfo(ai);
        fprintf(stderr, "shade sim: out of memory\n");
        return 1;
    }
    raise_fd_limit();

    /* SIGINT / SIGTERM go to the main thread's sigwait only */
    sigset_t sigs, oldsigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &oldsigs);

    int rc = 0;
    size_t nw = (size_t)cfg.workers, started = 0, made = 0;
    struct worker *ws = calloc(nw, sizeof *ws);
    struct sockaddr_storage ss;
    socklen_t sl = (socklen_t)ai->ai_addrlen;
    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!ws) {
        fprintf(stderr, "shade sim: out of memory\n");
        rc = 1;
        goto out;
    }
    struct httpd_limits lim = {
        .max_header_bytes = 65536,
        .max_headers = 100,
        .max_body_bytes = 64u << 20,
        .header_timeout_ms = 10000,
        .body_timeout_ms = 60000,
        .keepalive_timeout_ms = 75000,
        .max_connections = 1000000,
    };
    if (probe_address(&ss, &sl) < 0) {
        fprintf(stderr, "shade sim: cannot listen on %s: %s\n", cfg.listen, strerror(errno));
        rc = 1;
        goto out;
    }
    for (size_t i = 0; i < nw; i++) {
        struct worker *w = &ws[i];
        char err[256];
        w->idx = (int)i;
        w->lfd = -1;
        w->id_state = rnd_splitmix64(mono_ns() ^ ((uint64_t)getpid() << 32) ^ (i * RND_GOLDEN));
        w->lfd = open_listener((struct sockaddr *)&ss, sl, err, sizeof err);
        if (w->lfd < 0) {
            fprintf(stderr, "shade sim: cannot listen on %s: %s\n", cfg.listen, err);
            rc = 1;
            break;
        }
        made++;
        w->loop = loop_new();
        w->httpd = w->loop ? httpd_new(w->loop, &lim, handle, w) : NULL;
        if (!w->httpd || httpd_listen(w->httpd, w->lfd) < 0) {
            fprintf(stderr, "shade sim: cannot set up worker %zu\n", i);
            close(w->lfd);
            w->lfd = -1;
            rc = 1;
            break;
        }
        w->lfd = -1; /* owned by httpd now */
        if (ev_async_init(w->loop, &w->wake, wake_cb, w) < 0) {
            fprintf(stderr, "shade sim: cannot set up worker %zu\n", i);
            rc = 1;
            break;
        }
        w->wake_ok = true;
        ev_timer_init(&w->stop_timer, stop_timer_cb, w);
    }
    if (rc == 0) {
        char hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];
        if (getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof hbuf, pbuf, sizeof pbuf,
                        NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
            hbuf[0] = '?';
            hbuf[1] = pbuf[0] = '\0';
        }
        fprintf(stderr, "shade sim: listening on %s%s%s:%s (simulator; model %s, seed %llu, workers %zu%s%s)\n",
                ss.ss_family == AF_INET6 ? "[" : "", hbuf, ss.ss_family == AF_INET6 ? "]" : "", pbuf,
                cfg.model, (unsigned long long)cfg.seed, nw, cfg.judge ? ", judge, bias " : "",
                cfg.judge ? cfg.judge_bias_name : "");
        fflush(stderr);
        for (; started < nw; started++) {
            if (pthread_create(&ws[started].th, NULL, worker_main, &ws[started]) != 0) {
                fprintf(stderr, "shade sim: cannot start worker thread\n");
                rc = 1;
                break;
            }
        }
    }
    if (started > 0) {
        /* wait for signals; a worker that stops on its own (or a failed
         * start) stops the rest.  A second signal stops without grace. */
        int level = rc != 0 ? 1 : 0;
        if (level)
            notify_workers(ws, started, level);
        struct timespec tick = { 0, 100 * 1000 * 1000 };
        for (;;) {
            siginfo_t si;
            int s = sigtimedwait(&sigs, &si, &tick);
            if ((s == SIGINT || s == SIGTERM) && level < 2) {
                level++;
                notify_workers(ws, started, level);
            } else if (level == 0 && atomic_load(&workers_exited) > 0) {
                level = 1;
                notify_workers(ws, started, level);
            }
            if (level > 0 && (size_t)atomic_load(&workers_exited) == started)
                break;
        }
        for (size_t i = 0; i < started; i++)
            pthread_join(ws[i].th, NULL);
    }
out:
    for (size_t i = 0; ws && i < made; i++) {
        struct worker *w = &ws[i];
        if (w->httpd)
            httpd_free(w->httpd);
        if (w->loop) {
            if (w->wake_ok)
                ev_async_close(w->loop, &w->wake);
            /* anything httpd_free closed just now is released here */
            while (w->jobs)
                job_free(w->jobs);
            loop_free(w->loop);
        }
        buf_free(&w->scratch);
    }
    free(ws);
    free(cfg.model_json);
    free(cfg.model_obj);
    free(cfg.models_body);
    memset(&cfg, 0, sizeof cfg);
    pthread_sigmask(SIG_SETMASK, &oldsigs, NULL);
    if (rc == 0)
        fprintf(stderr, "shade sim: stopped\n");
    return rc;
}
