/* compare_bench.c — what the pair store's writer thread spends per pair:
 * comparing the two answers (compare.c) and storing them (recorder.c,
 * SQLite), with realistic long answers.  `make bench-compare` builds and
 * runs it; doc/benchmarks.md explains the figures.
 *
 * Cases (token counts are compare.h's word tokens, on both legs):
 *   similar  1,500 tokens, the candidate differs in ~20% of its tokens
 *            (runs of 1-6 tokens substituted, deleted or inserted);
 *   diverse  1,500 tokens, ~30% differ;
 *   aa       1,500 tokens, near-identical (3 small edits): the A/A case;
 *   long     4,000 tokens, ~20% differ.
 * For each, three measurements, all CPU time (not wall time), so a busy
 * machine slows the figures less than it would wall-clock ones:
 *   1. distances: edit distance + LCS on the token arrays, the plain O(n*m)
 *      DP that compare.c used before (tests/unit/compare_ref.h) against the
 *      bit-parallel compare_distances(), and their ratio;
 *   2. compare:   compare_answers() on the two texts: normalising,
 *      tokenising, every metric — the comparison part of the writer's work;
 *   3. recorder:  the real writer thread (recorder_start / recorder_submit)
 *      storing PAIRS pairs into a fresh SQLite file in a temporary
 *      directory: pairs row, two legs rows, comparisons row, counters, in
 *      batches of BATCH pairs per transaction as a busy writer takes them.
 *      Its CPU is the process's CPU minus this (main) thread's, which only
 *      builds the pairs and waits.  Printed: pairs per CPU-second (what one
 *      core sustains), CPU per pair, and the ratio to "compare" (how much of
 *      the writer's time is comparing), plus the same with the old DP put
 *      in place of the new distances (derived: recorder - new + old).
 *
 *   compare_bench [PAIRS] [BATCH]      (defaults 2000 and 64)
 *
 * A benchmark prints figures; it never fails on timing. */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "compare.h"
#include "compare_ref.h"
#include "config.h"
#include "gateway.h"
#include "log.h"
#include "recorder.h"
#include "server.h"
#include "shadow.h"

/* ------------------------------------------------------------ clocks */

static double cpu_clock(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu(void) { return cpu_clock(CLOCK_THREAD_CPUTIME_ID); }
static double process_cpu(void) { return cpu_clock(CLOCK_PROCESS_CPUTIME_ID); }
static double wall(void) { return cpu_clock(CLOCK_MONOTONIC); }

/* ------------------------------------------------------------ texts */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static size_t below(size_t n) { return (size_t)(rnd() % n); }

/* A vocabulary drawn with a Zipf-like skew (the first words are the most
 * frequent), as in real prose: many repeated tokens, so many matches. */
static const char *const vocab[] = {
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "be", "on",
    "this", "are", "by", "or", "you", "can", "from", "an", "which", "not", "your", "if", "will",
    "use", "when", "data", "each", "value", "function", "request", "model", "answer", "first",
    "then", "also", "more", "other", "time", "example", "should", "because", "file", "return",
    "user", "number", "system", "way", "into", "only", "new", "some", "these", "may", "two",
    "like", "would", "make", "set", "used", "list", "string", "error", "case", "code", "server",
    "memory", "cache", "result", "order", "step", "check", "change", "text", "line", "type",
    "field", "name", "key", "call", "test", "point", "state", "output", "input", "loop", "thread",
    "write", "read", "table", "query", "index", "option", "config", "default", "network", "client",
    "response", "stream", "token", "buffer", "queue", "limit", "retry", "timeout", "latency",
    "throughput", "performance", "algorithm", "structure", "approach", "problem", "solution",
    "however", "therefore", "important", "different", "following", "simple", "small", "large",
    "fast", "slow", "better", "usually", "often", "instead", "without", "between", "before",
};
#define NVOCAB (sizeof vocab / sizeof vocab[0])

static const char *word(void)
{
    /* min of two uniforms, twice: a skew towards the front */
    size_t a = below(NVOCAB), b = below(NVOCAB), c = below(NVOCAB);
    size_t m = a < b ? a : b;
    return vocab[m < c ? m : c];
}

/* Tokens as strings: words, punctuation, numbers like 3 . 5, newlines as
 * list items — about what a model's prose answer tokenises to. */
struct toks {
    const char **t;
    size_t n, cap;
};

static void push(struct toks *s, const char *t)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->t = realloc(s->t, s->cap * sizeof *s->t);
        if (!s->t) abort();
    }
    s->t[s->n++] = t;
}

static const char *const digits[] = {"1", "2", "3", "4", "5", "8", "10", "16", "64", "100", "1024"};

/* a sentence of several tokens appended to s */
static void sentence(struct toks *s)
{
    size_t len = 6 + below(14);
    if (below(6) == 0) {
        push(s, "\n-");
    }
    for (size_t i = 0; i < len; i++) {
        size_t r = below(40);
        if (r == 0 && i > 0) push(s, ",");
        else if (r == 1) {
            push(s, digits[below(sizeof digits / sizeof digits[0])]);
            continue;
        } else if (r == 2) {
            push(s, "(");
            push(s, word());
            push(s, ")");
            continue;
        }
        push(s, word());
    }
    push(s, below(8) == 0 ? ":" : ".");
}

static void gen(struct toks *s, size_t n)
{
    s->n = 0;
    while (s->n < n) sentence(s);
    s->n = n;
}

/* b = a with runs of 1-6 tokens changed until about pct% of a's tokens are
 * touched: substituted by other words, deleted, or with words inserted */
static void edit(const struct toks *a, struct toks *b, unsigned pct)
{
    b->n = 0;
    /* a run starts at a token with probability p; mean run 3.5 tokens */
    double p = (double)pct / 100.0 / 3.5;
    for (size_t i = 0; i < a->n;) {
        if ((double)(rnd() >> 11) / 9007199254740992.0 >= p) {
            push(b, a->t[i++]);
            continue;
        }
        size_t run = 1 + below(6);
        switch (below(3)) {
        case 0: /* substitute */
            for (size_t k = 0; k < run && i < a->n; k++, i++) push(b, word());
            break;
        case 1: /* delete */
            i += run;
            break;
        default: /* insert */
            for (size_t k = 0; k < run; k++) push(b, word());
            push(b, a->t[i++]);
        }
    }
}

/* the near-identical A/A answer: three one-token edits spread out */
static void edit_few(const struct toks *a, struct toks *b)
{
    b->n = 0;
    for (size_t i = 0; i < a->n; i++) push(b, i == a->n / 4 || i == a->n / 2 || i == 3 * a->n / 4 ? word() : a->t[i]);
}

/* the text: tokens joined by spaces (the tokeniser splits "word ," and
 * "word," alike; the spaces only cost bytes, as in real answers) */
static char *join(const struct toks *s, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) n += strlen(s->t[i]) + 1;
    char *out = malloc(n + 1), *p = out;
    if (!out) abort();
    for (size_t i = 0; i < s->n; i++) {
        size_t k = strlen(s->t[i]);
        memcpy(p, s->t[i], k);
        p += k;
        *p++ = ' ';
    }
    *p = '\0';
    *len = n;
    return out;
}

/* ------------------------------------------------------------ cases */

struct bench_case {
    const char *name, *what;
    size_t tokens;
    int pct; /* -1: the A/A edit */
    char *a, *b;
    size_t la, lb, ta, tb;
};

static struct bench_case cases[] = {
    {"similar", "1,500 tokens, ~20% differ", 1500, 20, NULL, NULL, 0, 0, 0, 0},
    {"diverse", "1,500 tokens, ~30% differ", 1500, 30, NULL, NULL, 0, 0, 0, 0},
    {"aa", "1,500 tokens, 3 edits (A/A)", 1500, -1, NULL, NULL, 0, 0, 0, 0},
    {"long", "4,000 tokens, ~20% differ", 4000, 20, NULL, NULL, 0, 0, 0, 0},
};
#define NCASES (sizeof cases / sizeof cases[0])

static void make_case(struct bench_case *c)
{
    struct toks a = {0}, b = {0};
    gen(&a, c->tokens);
    if (c->pct < 0) edit_few(&a, &b);
    else edit(&a, &b, (unsigned)c->pct);
    c->a = join(&a, &c->la);
    c->b = join(&b, &c->lb);
    c->ta = compare_tokens(c->a, c->la, NULL, 0);
    c->tb = compare_tokens(c->b, c->lb, NULL, 0);
    free(a.t);
    free(b.t);
}

/* Each timed loop runs until MIN_CPU_S of this thread's CPU has passed. */
#define MIN_CPU_S 0.3

struct figures {
    double ref_s, new_s, cmp_s;     /* per pair: old DP, new distances, compare_answers */
    double rec_cpu_s, rec_wall_s;   /* per pair: the writer thread, wall time of the run */
    size_t lev, lcs;
};

static volatile size_t sink;

static void measure_compare(struct bench_case *c, struct figures *f)
{
    uint64_t *x = malloc(c->ta * sizeof *x), *y = malloc(c->tb * sizeof *y);
    if (!x || !y) abort();
    compare_tokens(c->a, c->la, x, c->ta);
    compare_tokens(c->b, c->lb, y, c->tb);
    size_t l1, c1, l2, c2;
    if (compare_ref_dp(x, c->ta, y, c->tb, &l1, &c1) != 0 || compare_distances(x, c->ta, y, c->tb, &l2, &c2) != 0 ||
        l1 != l2 || c1 != c2) {
        fprintf(stderr, "compare_bench: %s: the distances disagree with the reference\n", c->name);
        exit(1);
    }
    f->lev = l2;
    f->lcs = c2;
    size_t n = 0;
    double t0 = thread_cpu(), t;
    do {
        compare_ref_dp(x, c->ta, y, c->tb, &l1, &c1);
        sink += l1;
        n++;
    } while ((t = thread_cpu() - t0) < MIN_CPU_S);
    f->ref_s = t / (double)n;
    n = 0;
    t0 = thread_cpu();
    do {
        compare_distances(x, c->ta, y, c->tb, &l2, &c2);
        sink += l2;
        n++;
    } while ((t = thread_cpu() - t0) < MIN_CPU_S);
    f->new_s = t / (double)n;
    struct cmp_answer a = {0}, b = {0};
    a.ok = b.ok = true;
    a.status = b.status = 200;
    a.finish = b.finish = "stop";
    a.text = c->a;
    a.len = c->la;
    b.text = c->b;
    b.len = c->lb;
    struct cmp_result r;
    n = 0;
    t0 = thread_cpu();
    do {
        compare_answers(&a, &b, NULL, &r);
        sink += (size_t)r.exact;
        n++;
    } while ((t = thread_cpu() - t0) < MIN_CPU_S);
    f->cmp_s = t / (double)n;
    free(x);
    free(y);
}

/* ------------------------------------------------------------ recorder */

static const char body[] =
    "{\"model\":\"demo\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a careful assistant. "
    "Answer in full sentences, explain your reasoning, and give examples where they help.\"},"
    "{\"role\":\"user\",\"content\":\"How should I size the queue between the workers and the writer "
    "thread of a logging pipeline, and what happens when it is full?\"}],\"max_tokens\":2048,"
    "\"temperature\":0.7}";

static void set_text(struct shadow_answer *ans, const char *s, size_t n, size_t out_tokens)
{
    shadow_answer_init(ans, 1u << 20);
    if (buf_append(&ans->text, s, n) != 0) abort();
    snprintf(ans->finish, sizeof ans->finish, "stop");
    ans->usage_in = 60;
    ans->usage_out = (int64_t)out_tokens;
}

static struct shadow_pair *make_pair(struct shadow_rt *sh, const struct bench_case *c, size_t i)
{
    struct shadow_pair *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->sh = sh;
    snprintf(p->reqid, sizeof p->reqid, "bench-%s-%zu", c->name, i);
    p->ts = unix_now();
    p->chat = true;
    /* the pair keeps the prompt (the messages array), as shadow.c does */
    const char *m = strchr(body, '[');
    const char *e = strrchr(body, ']');
    p->prompt_len = (size_t)(e + 1 - m);
    p->prompt = malloc(p->prompt_len + 1);
    if (!p->prompt) abort();
    memcpy(p->prompt, m, p->prompt_len);
    p->prompt[p->prompt_len] = '\0';
    memset(p->prompt_hash, 'a', 64);
    p->prompt_bytes = p->prompt_len;
    static const char *const names[] = {"primary", "candidate"};
    for (int k = 0; k < 2; k++) {
        struct shadow_leg_result *l = &p->leg[k];
        l->present = true;
        l->status = 200;
        l->target = names[k];
        l->backend = names[k];
        l->upstream_model = names[k];
        l->latency_ms = 900.0 + (double)below(400);
        l->ttft_ms = -1;
        l->price_in = 0.5;
        l->price_out = 1.5;
        if (k == 0) set_text(&l->ans, c->a, c->la, c->ta);
        else set_text(&l->ans, c->b, c->lb, c->tb);
    }
    return p;
}

static void sleep_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* Feed npairs pairs to the real writer, batch at a time, and measure its
 * CPU: the process's minus this thread's (which builds pairs and waits). */
static void measure_recorder(struct shadow_rt *sh, struct bench_case *c, size_t npairs, size_t batch,
                             struct figures *f)
{
    uint64_t base = atomic_load(&sh->stored);
    struct shadow_pair **ready = malloc(batch * sizeof *ready);
    if (!ready) abort();
    double p0 = process_cpu(), t0 = thread_cpu(), w0 = wall();
    for (size_t done = 0; done < npairs;) {
        size_t k = npairs - done < batch ? npairs - done : batch;
        for (size_t i = 0; i < k; i++) ready[i] = make_pair(sh, c, done + i);
        /* the writer takes all that is queued at once: one transaction */
        while (atomic_load(&sh->stored) - base < done) sleep_us(50);
        for (size_t i = 0; i < k; i++) recorder_submit(ready[i]);
        done += k;
    }
    while (atomic_load(&sh->stored) - base < npairs) {
        uint64_t dropped = 0;
        for (int d = 0; d < DROP__COUNT; d++) dropped += atomic_load(&sh->dropped[d]);
        if (dropped) {
            fprintf(stderr, "compare_bench: %llu pair(s) dropped; see the log above\n", (unsigned long long)dropped);
            exit(1);
        }
        sleep_us(50);
    }
    double p1 = process_cpu(), t1 = thread_cpu(), w1 = wall();
    f->rec_cpu_s = ((p1 - p0) - (t1 - t0)) / (double)npairs;
    f->rec_wall_s = (w1 - w0) / (double)npairs;
    free(ready);
}

/* ------------------------------------------------------------ main */

static size_t arg(int argc, char **argv, int i, size_t dflt)
{
    if (argc <= i) return dflt;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (errno || *end || v == 0 || v > 1000000) {
        fprintf(stderr, "usage: compare_bench [PAIRS] [BATCH]\n");
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    size_t npairs = arg(argc, argv, 1, 2000), batch = arg(argc, argv, 2, 64);
    log_set_level("warn");

    char dir[] = "/tmp/shade-compare-bench.XXXXXX";
    const char *tmp = getenv("TMPDIR");
    char tdir[512];
    snprintf(tdir, sizeof tdir, "%s/shade-compare-bench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    char *d = mkdtemp(tmp && *tmp ? tdir : dir);
    if (!d) {
        perror("compare_bench: mkdtemp");
        return 1;
    }
    char cfgpath[600], dbpath[600], err[512];
    snprintf(cfgpath, sizeof cfgpath, "%s/bench.yaml", d);
    snprintf(dbpath, sizeof dbpath, "%s/pairs.db", d);
    FILE *cf = fopen(cfgpath, "w");
    if (!cf) {
        perror("compare_bench: config");
        return 1;
    }
    /* no listener is opened: only the gateway's tables and the recorder are
     * used.  Analysis is moved out of the way (1h): it is not per-pair work. */
    fprintf(cf,
            "server:\n  listen: 127.0.0.1:1\n"
            "models:\n  - name: demo\n    backends:\n      - url: http://127.0.0.1:2\n"
            "shadows:\n  - name: candidate\n    model: demo\n    backends:\n      - url: http://127.0.0.1:3\n"
            "    sample: 100\n    analysis:\n      interval: 1h\n      stop_below: 0\n"
            "shadow_store:\n  path: %s\n  queue_size: %zu\n",
            dbpath, batch * 4);
    fclose(cf);

    struct config *cfg;
    struct gateway gw;
    if (config_load(cfgpath, &cfg, err, sizeof err) != 0 || gateway_init(&gw, cfg, err, sizeof err) != 0 ||
        recorder_start(&gw, err, sizeof err) != 0) {
        fprintf(stderr, "compare_bench: %s\n", err);
        return 1;
    }
    struct shadow_rt *sh = &gw.shadows[0];

    printf("compare_bench: %zu pairs per case through the pair-store writer, %zu per transaction;\n"
           "CPU time per pair (one core), SQLite file in %s (synchronous=NORMAL, WAL)\n\n",
           npairs, batch, d);
    /* every text first: the same texts whatever PAIRS is */
    for (size_t i = 0; i < NCASES; i++) make_case(&cases[i]);
    struct figures fig[NCASES];
    for (size_t i = 0; i < NCASES; i++) {
        struct bench_case *c = &cases[i];
        measure_compare(c, &fig[i]);
        /* the long case costs more per pair: fewer pairs, same accuracy */
        size_t n = c->tokens > 2000 ? npairs / 2 : npairs;
        measure_recorder(sh, c, n ? n : 1, batch, &fig[i]);
        fprintf(stderr, "compare_bench: %s done\n", c->name);
    }
    recorder_stop();

    printf("%-8s %-28s %11s %11s %11s %8s\n", "case", "tokens (primary/candidate)", "edit dist", "LCS", "edit_sim",
           "rouge_l");
    for (size_t i = 0; i < NCASES; i++) {
        struct bench_case *c = &cases[i];
        size_t m = c->ta > c->tb ? c->ta : c->tb;
        printf("%-8s %5zu / %-20zu %11zu %11zu %11.3f %8.3f\n", c->name, c->ta, c->tb, fig[i].lev, fig[i].lcs,
               1.0 - (double)fig[i].lev / (double)m, 2.0 * (double)fig[i].lcs / (double)(c->ta + c->tb));
    }

    printf("\n1. edit distance + LCS on the token arrays (CPU per pair)\n");
    printf("%-8s %14s %16s %10s\n", "case", "old DP (ref)", "bit-parallel", "speed-up");
    for (size_t i = 0; i < NCASES; i++)
        printf("%-8s %11.3f ms %13.3f ms %9.1fx\n", cases[i].name, fig[i].ref_s * 1e3, fig[i].new_s * 1e3,
               fig[i].ref_s / fig[i].new_s);

    printf("\n2. the writer's work per pair: compare_answers, and compare + SQLite through the recorder\n");
    printf("%-8s %12s %14s %12s %13s %14s %13s %12s\n", "case", "compare", "compare+store", "pairs/s",
           "store/compare", "old: +store", "old pairs/s", "new vs old");
    for (size_t i = 0; i < NCASES; i++) {
        struct figures *f = &fig[i];
        double old = f->rec_cpu_s - f->new_s + f->ref_s; /* the same path with the old DP */
        printf("%-8s %9.3f ms %11.3f ms %12.0f %12.2fx %11.3f ms %13.0f %11.1fx\n", cases[i].name, f->cmp_s * 1e3,
               f->rec_cpu_s * 1e3, 1.0 / f->rec_cpu_s, f->rec_cpu_s / f->cmp_s, old * 1e3, 1.0 / old,
               old / f->rec_cpu_s);
    }
    printf("\ncompare: compare_answers alone (normalise, tokenise, every metric);\n"
           "compare+store: the writer thread's CPU per stored pair (pairs, legs, comparisons rows);\n"
           "pairs/s: 1 / that, what one core sustains; store/compare: that / compare;\n"
           "old: the same with the old DP instead of the bit-parallel distances (derived:\n"
           "compare+store - bit-parallel + old DP, all measured above; the rest of the\n"
           "path, e.g. the faster refusal scan, is today's).\n");
    printf("wall time per pair of the recorder runs:");
    for (size_t i = 0; i < NCASES; i++) printf(" %s %.3f ms", cases[i].name, fig[i].rec_wall_s * 1e3);
    printf("\n");

    gateway_free(&gw);
    config_free(cfg);
    for (size_t i = 0; i < NCASES; i++) {
        free(cases[i].a);
        free(cases[i].b);
    }
    /* the store and its WAL can be tens of MB: not kept */
    char path[700];
    static const char *const files[] = {"pairs.db", "pairs.db-wal", "pairs.db-shm", "bench.yaml"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", d, files[i]);
        unlink(path);
    }
    rmdir(d);
    return 0;
}
