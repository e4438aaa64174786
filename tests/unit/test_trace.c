/* test_trace.c — W3C traceparent parsing and formatting, id generation,
 * ratio sampling, span attributes, the OTLP/JSON encoding, and the exporter
 * end to end against a receiver thread in this process (a listening socket
 * on 127.0.0.1 that answers 200, 500, a partial success, or not at all). */
#include "trace.h"
#include "json.h"
#include "loopback.h"
#include "unit.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int parse_str(const char *s, struct trace_ctx *c) { return trace_parse(s, strlen(s), c); }

/* ------------------------------------------------------------ traceparent */

static const char VALID[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void test_parse(void)
{
    struct trace_ctx c;
    memset(&c, 0x77, sizeof c);
    CHECK_EQ_INT(parse_str(VALID, &c), 0);
    static const uint8_t tid[16] = { 0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                     0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36 };
    static const uint8_t sid[8] = { 0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7 };
    CHECK(memcmp(c.trace_id, tid, 16) == 0);
    CHECK(memcmp(c.span_id, sid, 8) == 0);
    CHECK_EQ_INT(c.flags, 1);

    CHECK_EQ_INT(parse_str("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &c), 0);
    CHECK_EQ_INT(c.flags, 0);
    /* version 00 keeps every flag bit (level 2's random flag, future ones) */
    CHECK_EQ_INT(parse_str("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", &c), 0);
    CHECK_EQ_INT(c.flags, 0xff);

    /* a failed parse leaves *out alone */
    struct trace_ctx keep;
    memset(&keep, 0x5c, sizeof keep);
    c = keep;
    const char *bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",         /* 54 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",       /* 56 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",       /* 00 has no more fields */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",        /* uppercase trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",        /* uppercase parent id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",        /* uppercase flags */
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        /* uppercase version */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        /* all-zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        /* all-zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        /* version ff */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        /* separators */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",        /* field shifted */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-701",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",        /* not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       /* whitespace is the HTTP parser's */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",       /* future: flags then not '-' */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",           /* future: shorter than 55 */
        "01-00000000000000000000000000000000-00f067aa0ba902b7-01-x",      /* future: zero ids still invalid */
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0G-x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = parse_str(bad[i], &c);
        CHECK_EQ_INT(rc, -1);
        if (rc != -1)
            fprintf(stderr, "  accepted: \"%s\"\n", bad[i]);
    }
    CHECK(memcmp(&c, &keep, sizeof c) == 0);
    CHECK_EQ_INT(trace_parse(NULL, 0, &c), -1);
    CHECK_EQ_INT(trace_parse(NULL, 55, &c), -1);
    /* n is the length: a longer buffer cut at 55 parses, a NUL inside does not */
    char longer[80];
    snprintf(longer, sizeof longer, "%sGARBAGE", VALID);
    CHECK_EQ_INT(trace_parse(longer, 55, &c), 0);
    CHECK_EQ_INT(trace_parse(longer, 56, &c), -1);
    char withnul[56];
    memcpy(withnul, VALID, 56);
    withnul[40] = '\0';
    CHECK_EQ_INT(trace_parse(withnul, 55, &c), -1);

    /* higher versions (§3.2.4): exactly 55, or '-' and anything after; only sampled is kept */
    const char *future[] = {
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
        "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-XYZ",
    };
    for (size_t i = 0; i < sizeof future / sizeof future[0]; i++) {
        memset(&c, 0, sizeof c);
        CHECK_EQ_INT(parse_str(future[i], &c), 0);
        CHECK(memcmp(c.trace_id, tid, 16) == 0 && memcmp(c.span_id, sid, 8) == 0);
        CHECK_EQ_INT(c.flags, 1);
    }
    CHECK_EQ_INT(parse_str("02-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe-x", &c), 0);
    CHECK_EQ_INT(c.flags, 0);
}

static void test_format(void)
{
    struct trace_ctx c;
    char out[TRACE_PARENT_LEN + 1];
    CHECK_EQ_INT(parse_str(VALID, &c), 0);
    memset(out, 'X', sizeof out);
    trace_format(&c, out);
    CHECK_EQ_STR(out, VALID);
    CHECK_EQ_INT(strlen(out), 55);

    /* a future version comes out as 00 with the sampled bit */
    CHECK_EQ_INT(parse_str("7f-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-zz", &c), 0);
    trace_format(&c, out);
    CHECK_EQ_STR(out, VALID);

    /* round trip of random contexts and every flags value */
    uint64_t rng = 12345;
    for (int i = 0; i < 256; i++) {
        struct trace_ctx a, b;
        trace_new_trace_id(&rng, a.trace_id);
        trace_new_span_id(&rng, a.span_id);
        a.flags = (uint8_t)i;
        trace_format(&a, out);
        CHECK_EQ_INT(strlen(out), 55);
        CHECK_EQ_INT(trace_parse(out, 55, &b), 0);
        CHECK(memcmp(&a.trace_id, &b.trace_id, 16) == 0 && memcmp(a.span_id, b.span_id, 8) == 0 &&
              a.flags == b.flags);
    }
    /* ids with low values format with leading zeros */
    memset(&c, 0, sizeof c);
    c.trace_id[15] = 1;
    c.span_id[7] = 2;
    trace_format(&c, out);
    CHECK_EQ_STR(out, "00-00000000000000000000000000000001-0000000000000002-00");
    CHECK_EQ_INT(trace_parse(out, 55, &c), 0);
}

/* ---------------------------------------------------------------- ids */

static void test_ids(void)
{
    enum { N = 2000 };
    static uint8_t tids[N][16], sids[N][8];
    uint64_t rng = 0; /* 0 is replaced by a fixed seed */
    for (int i = 0; i < N; i++) {
        trace_new_trace_id(&rng, tids[i]);
        trace_new_span_id(&rng, sids[i]);
    }
    static const uint8_t z16[16];
    int zero = 0, dup = 0;
    for (int i = 0; i < N; i++) {
        zero += memcmp(tids[i], z16, 16) == 0 || memcmp(sids[i], z16, 8) == 0;
        /* the halves of a trace id differ, and differ from every span id around */
        dup += memcmp(tids[i], tids[i] + 8, 8) == 0;
        for (int j = i + 1; j < N; j++)
            dup += memcmp(tids[i], tids[j], 16) == 0 || memcmp(sids[i], sids[j], 8) == 0;
    }
    CHECK_EQ_INT(zero, 0);
    CHECK_EQ_INT(dup, 0);
    CHECK(rng != 0);

    /* same seed, same ids; different seeds, different ids */
    uint64_t r1 = 42, r2 = 42, r3 = 43;
    uint8_t a[16], b[16], c[16];
    trace_new_trace_id(&r1, a);
    trace_new_trace_id(&r2, b);
    trace_new_trace_id(&r3, c);
    CHECK(memcmp(a, b, 16) == 0);
    CHECK(memcmp(a, c, 16) != 0);

    uint64_t s1 = trace_rng_seed(), s2 = trace_rng_seed();
    CHECK(s1 != 0 && s2 != 0 && s1 != s2);
}

/* ---------------------------------------------------------------- sampling */

static void test_sampling(void)
{
    enum { N = 10000 };
    uint64_t rng = 0x5eed;
    int never = 0, always = 0, half = 0, tenth = 0, nan_s = 0, same = 0, nested = 0;
    for (int i = 0; i < N; i++) {
        uint8_t t[16];
        trace_new_trace_id(&rng, t);
        never += trace_ratio_sampled(t, 0.0);
        never += trace_ratio_sampled(t, -1.0);
        nan_s += trace_ratio_sampled(t, NAN);
        always += trace_ratio_sampled(t, 1.0);
        always += trace_ratio_sampled(t, 2.0);
        bool h = trace_ratio_sampled(t, 0.5);
        half += h;
        tenth += trace_ratio_sampled(t, 0.1);
        same += trace_ratio_sampled(t, 0.5) == h; /* deterministic */
        /* a trace kept at a ratio is kept at every higher ratio */
        nested += trace_ratio_sampled(t, 0.1) && !h;
    }
    CHECK_EQ_INT(nested, 0);
    CHECK_EQ_INT(never, 0);
    CHECK_EQ_INT(nan_s, 0);
    CHECK_EQ_INT(always, 2 * N);
    CHECK_EQ_INT(same, N);
    /* binomial: sd = 50 for 0.5, 30 for 0.1; 6 sd either way */
    CHECK(half > 4700 && half < 5300);
    CHECK(tenth > 820 && tenth < 1180);

    /* only the lower 8 bytes count, as OpenTelemetry does */
    uint8_t a[16], b[16];
    memset(a, 0x00, 16);
    memset(b, 0xff, 8);
    memset(b + 8, 0x00, 8);
    CHECK(trace_ratio_sampled(a, 1e-9) == trace_ratio_sampled(b, 1e-9));
    a[15] = 1; /* lower 8 bytes = 1, >> 1 = 0: below any positive bound */
    CHECK(trace_ratio_sampled(a, 1e-12));
    memset(a + 8, 0xff, 8); /* the largest value: kept only at ratio 1 */
    CHECK(!trace_ratio_sampled(a, 0.999999));
    CHECK(trace_ratio_sampled(a, 1.0));
    /* the bound is ratio * 2^63 on the value >> 1: 0x40.. >> 1 = 2^61 = 0.25 * 2^63 */
    memset(a + 8, 0, 8);
    a[8] = 0x40;
    CHECK(!trace_ratio_sampled(a, 0.25));
    CHECK(trace_ratio_sampled(a, 0.2500001));
}

/* ---------------------------------------------------------------- spans */

static void test_attrs(void)
{
    struct span s;
    memset(&s, 0, sizeof s);
    span_attr_str(&s, "short", "hi", 2);
    CHECK_EQ_STR(s.attrs[0].s, "hi");
    CHECK_EQ_INT(s.attrs[0].type, SPAN_ATTR_STR);
    span_attr_str(&s, "nul", "ab\0cd", 5);
    CHECK_EQ_STR(s.attrs[1].s, "ab");
    span_attr_str(&s, "null", NULL, 3);
    CHECK_EQ_STR(s.attrs[2].s, "");

    /* truncation at SPAN_STR_MAX - 1 bytes, on a character boundary */
    char big[1024];
    memset(big, 'a', sizeof big);
    span_attr_str(&s, "ascii", big, sizeof big);
    CHECK_EQ_INT(strlen(s.attrs[3].s), SPAN_STR_MAX - 1);
    for (size_t i = 0; i + 1 < sizeof big; i += 2)
        memcpy(big + i, "\xc3\xa9", 2); /* é */
    span_attr_str(&s, "two", big, sizeof big);
    CHECK_EQ_INT(strlen(s.attrs[4].s), 158);
    for (size_t i = 0; i + 2 < sizeof big; i += 3)
        memcpy(big + i, "\xe2\x82\xac", 3); /* € */
    span_attr_str(&s, "three", big, 1020);
    CHECK_EQ_INT(strlen(s.attrs[5].s), 159);
    for (size_t i = 0; i + 3 < sizeof big; i += 4)
        memcpy(big + i, "\xf0\x9f\x98\x80", 4); /* U+1F600 */
    span_attr_str(&s, "four", big, sizeof big);
    CHECK_EQ_INT(strlen(s.attrs[6].s), 156);
    /* each cut string is still whole UTF-8 (json_validate checks it inside a string) */
    for (int k = 4; k <= 6; k++) {
        char q[SPAN_STR_MAX + 2];
        int qn = snprintf(q, sizeof q, "\"%s\"", s.attrs[k].s);
        CHECK_EQ_INT(json_validate(q, (size_t)qn, NULL, NULL), 0);
    }
    /* not UTF-8 at all (continuation bytes only): cut at the limit anyway */
    memset(big, 0x80, sizeof big);
    span_attr_str(&s, "junk", big, sizeof big);
    CHECK_EQ_INT(strlen(s.attrs[7].s), SPAN_STR_MAX - 1);
    /* exactly fitting */
    span_attr_str(&s, "fit", big, SPAN_STR_MAX - 1);
    CHECK_EQ_INT(strlen(s.attrs[8].s), SPAN_STR_MAX - 1);

    span_attr_int(&s, "i", -7);
    span_attr_double(&s, "d", 0.25);
    span_attr_bool(&s, "b", true);
    CHECK_EQ_INT(s.nattrs, 12);
    CHECK_EQ_INT(s.attrs[9].v.i, -7);
    CHECK(s.attrs[10].v.d == 0.25 && s.attrs[10].type == SPAN_ATTR_DOUBLE);
    CHECK(s.attrs[11].v.b && s.attrs[11].type == SPAN_ATTR_BOOL);
    for (int i = 0; i < SPAN_ATTRS_MAX - 12 + 6; i++)
        span_attr_int(&s, "more", i);
    CHECK_EQ_INT(s.nattrs, SPAN_ATTRS_MAX);
    CHECK_EQ_INT(s.dropped_attrs, 6);
    CHECK_EQ_INT(s.attrs[SPAN_ATTRS_MAX - 1].v.i, SPAN_ATTRS_MAX - 12 - 1);

    uint8_t t[16] = { 1 }, sp[8] = { 2 };
    span_add_link(&s, t, sp);
    span_add_link(&s, t, sp);
    span_add_link(&s, t, sp);
    CHECK_EQ_INT(s.nlinks, SPAN_LINKS_MAX);
    CHECK(s.links[1].trace_id[0] == 1 && s.links[1].span_id[0] == 2);
}

/* ---------------------------------------------------------------- OTLP/JSON */

static bool get_path(const struct json_span *root, const char *const *path, struct json_span *out)
{
    struct json_span cur = *root;
    for (; *path; path++) {
        struct json_span next;
        char *end;
        unsigned long idx = strtoul(*path, &end, 10);
        bool ok = *end == '\0' && **path ? json_index(&cur, idx, &next) : json_get(&cur, *path, &next);
        if (!ok)
            return false;
        cur = next;
    }
    *out = cur;
    return true;
}

#define P(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* the decoded string at path, "" when absent or not a string */
static const char *str_at(const struct json_span *root, const char *const *path)
{
    static char out[4][512];
    static int k;
    char *o = out[k++ & 3];
    struct json_span v;
    o[0] = '\0';
    if (get_path(root, path, &v) && v.type == JSON_STRING && json_str_unescape(&v, o, 512) < 0)
        o[0] = '\0';
    return o;
}

static bool has(const struct json_span *root, const char *const *path)
{
    struct json_span v;
    return get_path(root, path, &v);
}

static const char *const SPANS[] = { "resourceSpans", "0", "scopeSpans", "0", "spans", NULL };

static void test_encode(void)
{
    struct span sp[2];
    memset(sp, 0, sizeof sp);
    struct trace_ctx c;
    CHECK_EQ_INT(parse_str(VALID, &c), 0);
    memcpy(sp[0].trace_id, c.trace_id, 16);
    memcpy(sp[0].parent_span_id, c.span_id, 8);
    sp[0].has_parent = true;
    static const uint8_t sid[8] = { 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3 };
    memcpy(sp[0].span_id, sid, 8);
    snprintf(sp[0].name, sizeof sp[0].name, "POST /v1/chat/\"completions\"");
    sp[0].kind = SPAN_SERVER;
    sp[0].start_unix_ns = 1700000000000000001ull;
    sp[0].end_unix_ns = UINT64_MAX;
    sp[0].status = SPAN_STATUS_ERROR;
    snprintf(sp[0].status_message, sizeof sp[0].status_message, "upstream 502\n\"bad\"");
    span_attr_str(&sp[0], "gen_ai.request.model", "gpt-\xc3\xa9\t\"x\"\\", 11);
    span_attr_int(&sp[0], "http.response.status_code", -42);
    span_attr_int(&sp[0], "min", INT64_MIN);
    span_attr_double(&sp[0], "d", 1.5);
    span_attr_double(&sp[0], "tenth", 0.1);
    span_attr_double(&sp[0], "nan", NAN);
    span_attr_double(&sp[0], "inf", -INFINITY);
    span_attr_bool(&sp[0], "b", true);
    span_attr_str(&sp[0], "bad.utf8", "a\xff\x01", 3);
    span_attr_bool(&sp[0], "f", false);
    uint8_t lt[16], ls[8];
    memset(lt, 0x11, 16);
    memset(ls, 0x22, 8);
    span_add_link(&sp[0], lt, ls);
    span_add_link(&sp[0], c.trace_id, c.span_id);
    memset(sp[1].trace_id, 0x0a, 16);
    memset(sp[1].span_id, 0x0b, 8);
    memcpy(sp[1].name, "0123456789012345678901234567890123456789012345678901234567890123", 64); /* no NUL */
    sp[1].kind = 99; /* not a kind: UNSPECIFIED */
    sp[1].status = SPAN_STATUS_OK;
    for (int i = 0; i < SPAN_ATTRS_MAX + 4; i++)
        span_attr_int(&sp[1], "k", i);

    struct buf b = { 0 };
    CHECK_EQ_INT(trace_encode_otlp_json("my \"svc\"", sp, 2, &b), 0);
    struct json_span root, v;
    struct json_error e = { 0, NULL };
    int rc = json_validate(buf_data(&b), buf_used(&b), &root, &e);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "invalid JSON at %zu (%s): %.*s\n", e.offset, e.message, (int)buf_used(&b), buf_data(&b));
        buf_free(&b);
        return;
    }
    CHECK_EQ_STR(str_at(&root, P("resourceSpans", "0", "resource", "attributes", "0", "key")), "service.name");
    CHECK_EQ_STR(str_at(&root, P("resourceSpans", "0", "resource", "attributes", "0", "value", "stringValue")),
                 "my \"svc\"");
    CHECK_EQ_STR(str_at(&root, P("resourceSpans", "0", "scopeSpans", "0", "scope", "name")), "shade");
    struct json_span spans;
    CHECK(get_path(&root, SPANS, &spans) && spans.type == JSON_ARRAY);
    CHECK_EQ_INT(json_count(&spans), 2);
    struct json_span s0, s1;
    CHECK(json_index(&spans, 0, &s0) && json_index(&spans, 1, &s1));

    CHECK_EQ_STR(str_at(&s0, P("traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_EQ_STR(str_at(&s0, P("spanId")), "deadbeef00010203");
    CHECK_EQ_STR(str_at(&s0, P("parentSpanId")), "00f067aa0ba902b7");
    CHECK_EQ_STR(str_at(&s0, P("name")), "POST /v1/chat/\"completions\"");
    int64_t iv = 0;
    CHECK(get_path(&s0, P("kind"), &v) && json_to_i64(&v, &iv) && iv == 2);
    CHECK(get_path(&s0, P("startTimeUnixNano"), &v) && v.type == JSON_STRING);
    CHECK_EQ_STR(str_at(&s0, P("startTimeUnixNano")), "1700000000000000001");
    CHECK_EQ_STR(str_at(&s0, P("endTimeUnixNano")), "18446744073709551615");
    CHECK(get_path(&s0, P("attributes"), &v) && json_count(&v) == 10);
    CHECK_EQ_STR(str_at(&s0, P("attributes", "0", "key")), "gen_ai.request.model");
    CHECK_EQ_STR(str_at(&s0, P("attributes", "0", "value", "stringValue")), "gpt-\xc3\xa9\t\"x\"\\");
    CHECK(get_path(&s0, P("attributes", "1", "value", "intValue"), &v) && v.type == JSON_STRING);
    CHECK_EQ_STR(str_at(&s0, P("attributes", "1", "value", "intValue")), "-42");
    CHECK_EQ_STR(str_at(&s0, P("attributes", "2", "value", "intValue")), "-9223372036854775808");
    double dv = 0;
    CHECK(get_path(&s0, P("attributes", "3", "value", "doubleValue"), &v) && v.type == JSON_NUMBER &&
          json_to_double(&v, &dv) && dv == 1.5);
    CHECK(get_path(&s0, P("attributes", "4", "value", "doubleValue"), &v) && v.len == 3); /* 0.1, not 0.1000…01 */
    CHECK(json_to_double(&v, &dv) && dv == 0.1);
    CHECK_EQ_STR(str_at(&s0, P("attributes", "5", "value", "doubleValue")), "NaN");
    CHECK_EQ_STR(str_at(&s0, P("attributes", "6", "value", "doubleValue")), "-Infinity");
    CHECK(get_path(&s0, P("attributes", "7", "value", "boolValue"), &v) && v.type == JSON_TRUE);
    CHECK_EQ_STR(str_at(&s0, P("attributes", "8", "value", "stringValue")), "a\xef\xbf\xbd\x01");
    CHECK(get_path(&s0, P("attributes", "9", "value", "boolValue"), &v) && v.type == JSON_FALSE);
    CHECK(!has(&s0, P("droppedAttributesCount")));
    CHECK(get_path(&s0, P("links"), &v) && json_count(&v) == 2);
    CHECK_EQ_STR(str_at(&s0, P("links", "0", "traceId")), "11111111111111111111111111111111");
    CHECK_EQ_STR(str_at(&s0, P("links", "0", "spanId")), "2222222222222222");
    CHECK_EQ_STR(str_at(&s0, P("links", "1", "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(get_path(&s0, P("status", "code"), &v) && json_to_i64(&v, &iv) && iv == 2);
    CHECK_EQ_STR(str_at(&s0, P("status", "message")), "upstream 502\n\"bad\"");

    CHECK(!has(&s1, P("parentSpanId")));
    CHECK(!has(&s1, P("links")));
    CHECK_EQ_INT(strlen(str_at(&s1, P("name"))), 64);
    CHECK(get_path(&s1, P("kind"), &v) && json_to_i64(&v, &iv) && iv == 0);
    CHECK(get_path(&s1, P("status", "code"), &v) && json_to_i64(&v, &iv) && iv == 1);
    CHECK(!has(&s1, P("status", "message")));
    CHECK(get_path(&s1, P("attributes"), &v) && json_count(&v) == SPAN_ATTRS_MAX);
    CHECK(get_path(&s1, P("droppedAttributesCount"), &v) && json_to_i64(&v, &iv) && iv == 4);

    /* the exact text of a minimal span, and of no spans */
    struct span m;
    memset(&m, 0, sizeof m);
    memset(m.trace_id, 0xab, 16);
    memset(m.span_id, 0xcd, 8);
    strcpy(m.name, "x");
    m.kind = SPAN_CLIENT;
    m.start_unix_ns = 1;
    m.end_unix_ns = 2;
    span_attr_int(&m, "n", 0);
    buf_reset(&b);
    CHECK_EQ_INT(trace_encode_otlp_json(NULL, &m, 1, &b), 0);
    buf_append(&b, "", 1);
    CHECK_EQ_STR(buf_data(&b),
                 "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":"
                 "{\"stringValue\":\"shade\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"shade\",\"version\":\""
                 SHADE_VERSION "\"},\"spans\":[{\"traceId\":\"abababababababababababababababab\",\"spanId\":"
                 "\"cdcdcdcdcdcdcdcd\",\"name\":\"x\",\"kind\":3,\"startTimeUnixNano\":\"1\",\"endTimeUnixNano\":"
                 "\"2\",\"attributes\":[{\"key\":\"n\",\"value\":{\"intValue\":\"0\"}}]}]}]}]}");
    buf_reset(&b);
    CHECK_EQ_INT(trace_encode_otlp_json("s", NULL, 0, &b), 0);
    CHECK_EQ_INT(json_validate(buf_data(&b), buf_used(&b), &root, NULL), 0);
    CHECK(get_path(&root, SPANS, &v) && json_count(&v) == 0);
    buf_free(&b);
}

/* ---------------------------------------------------------------- receiver */

enum rx_mode { RX_OK, RX_500, RX_PARTIAL, RX_HANG };

struct rx {
    int lfd, port;
    pthread_t th;
    atomic_bool stop, release; /* release: a hung request is answered 200, and so are the next ones */
    _Atomic int mode;
    atomic_int requests;        /* requests read in full */
    pthread_mutex_t mu;
    char **bodies;
    size_t *lens;
    int nbodies;
    char head[2048]; /* the first request's line and headers */
};

/* Read one request: head up to CRLFCRLF, then Content-Length bytes. */
static bool rx_read(int c, struct rx *r)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t need = 0, hend = 0;
    while (b) {
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb)
                break;
            b = nb;
        }
        ssize_t k = recv(c, b + n, cap - n - 1, 0);
        if (k <= 0)
            break;
        n += (size_t)k;
        b[n] = '\0';
        if (!hend) {
            char *e = strstr(b, "\r\n\r\n");
            if (!e)
                continue;
            hend = (size_t)(e + 4 - b);
            const char *cl = strcasestr(b, "\r\ncontent-length:");
            need = hend + (cl ? strtoul(cl + 17, NULL, 10) : 0);
        }
        if (n >= need) {
            pthread_mutex_lock(&r->mu);
            if (r->nbodies == 0)
                snprintf(r->head, sizeof r->head, "%.*s", (int)hend, b);
            char **nb = realloc(r->bodies, (size_t)(r->nbodies + 1) * sizeof *nb);
            size_t *nl = nb ? realloc(r->lens, (size_t)(r->nbodies + 1) * sizeof *nl) : NULL;
            if (nb)
                r->bodies = nb;
            if (nl)
                r->lens = nl;
            bool ok = nb && nl;
            if (ok) {
                memmove(b, b + hend, n - hend);
                r->bodies[r->nbodies] = b;
                r->lens[r->nbodies++] = n - hend;
            }
            pthread_mutex_unlock(&r->mu);
            if (!ok)
                free(b);
            atomic_fetch_add(&r->requests, 1);
            return ok;
        }
    }
    free(b);
    return false;
}

static void rx_answer(int c, const char *status, const char *body)
{
    char resp[512];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                                        "Connection: close\r\n\r\n%s", status, strlen(body), body);
    if (send(c, resp, (size_t)n, MSG_NOSIGNAL) < 0) {
        /* the exporter gave up */
    }
}

static void *rx_main(void *arg)
{
    struct rx *r = arg;
    int c;
    while ((c = loopback_accept(r->lfd, &r->stop)) >= 0) {
        struct timeval tv = { 5, 0 };
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (rx_read(c, r)) {
            int mode = atomic_load(&r->mode);
            while (mode == RX_HANG && !atomic_load(&r->release) && !atomic_load(&r->stop))
                sleep_ms(2);
            if (mode == RX_HANG && atomic_load(&r->release))
                mode = RX_OK;
            if (mode == RX_OK)
                rx_answer(c, "200 OK", "{}");
            else if (mode == RX_500)
                rx_answer(c, "500 Internal Server Error", "{\"message\":\"no\"}");
            else if (mode == RX_PARTIAL)
                rx_answer(c, "200 OK", "{\"partialSuccess\":{\"rejectedSpans\":\"2\",\"errorMessage\":\"too old\"}}");
        }
        close(c);
    }
    return NULL;
}

static bool rx_start(struct rx *r, int mode)
{
    memset(r, 0, sizeof *r);
    atomic_store(&r->mode, mode);
    pthread_mutex_init(&r->mu, NULL);
    r->lfd = loopback_listen(&r->port);
    return r->lfd >= 0 && pthread_create(&r->th, NULL, rx_main, r) == 0;
}

static void rx_stop(struct rx *r)
{
    atomic_store(&r->stop, true);
    pthread_join(r->th, NULL);
    close(r->lfd);
    for (int i = 0; i < r->nbodies; i++)
        free(r->bodies[i]);
    free(r->bodies);
    free(r->lens);
    pthread_mutex_destroy(&r->mu);
}

static bool rx_wait(struct rx *r, int requests, unsigned ms)
{
    uint64_t deadline = now_ms() + ms;
    while (atomic_load(&r->requests) < requests && now_ms() < deadline)
        sleep_ms(2);
    return atomic_load(&r->requests) >= requests;
}

/* span number i: the span id carries i */
static void make_span(struct span *s, uint32_t i)
{
    memset(s, 0, sizeof *s);
    memset(s->trace_id, 0x3c, 16);
    s->span_id[0] = 0x5a;
    s->span_id[4] = (uint8_t)(i >> 24);
    s->span_id[5] = (uint8_t)(i >> 16);
    s->span_id[6] = (uint8_t)(i >> 8);
    s->span_id[7] = (uint8_t)i;
    snprintf(s->name, sizeof s->name, "span %u", i);
    s->kind = SPAN_CLIENT;
    s->start_unix_ns = trace_unix_ns();
    s->end_unix_ns = s->start_unix_ns + 1000;
    span_attr_int(s, "i", i);
    span_attr_str(s, "pad", "some attribute text to make the body bigger", 43);
}

/* Count the spans of every received body into seen[]; the total, or -1
 * when a body is not the expected document. */
static long rx_count(struct rx *r, int *seen, uint32_t max)
{
    long total = 0;
    pthread_mutex_lock(&r->mu);
    for (int b = 0; b < r->nbodies; b++) {
        struct json_span root, spans, sp, id;
        if (json_validate(r->bodies[b], r->lens[b], &root, NULL) != 0 || !get_path(&root, SPANS, &spans)) {
            total = -1;
            break;
        }
        for (size_t i = 0; json_index(&spans, i, &sp); i++) {
            char hex[17];
            uint8_t raw[8];
            struct trace_ctx dummy;
            char tp[56];
            if (!json_get(&sp, "spanId", &id) || json_str_unescape(&id, hex, sizeof hex) != 16) {
                total = -1;
                break;
            }
            snprintf(tp, sizeof tp, "00-3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c-%s-01", hex);
            if (trace_parse(tp, 55, &dummy) != 0) {
                total = -1;
                break;
            }
            memcpy(raw, dummy.span_id, 8);
            uint32_t idx = (uint32_t)raw[4] << 24 | (uint32_t)raw[5] << 16 | (uint32_t)raw[6] << 8 | raw[7];
            if (raw[0] != 0x5a || idx >= max) {
                total = -1;
                break;
            }
            seen[idx]++;
            total++;
        }
        if (total < 0)
            break;
    }
    pthread_mutex_unlock(&r->mu);
    return total;
}

static struct tracer *start_at(int port, const char *path, uint32_t queue, uint32_t batch, uint32_t interval,
                               uint32_t timeout)
{
    char ep[128], err[256] = "";
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d%s", port, path);
    struct tracer_opts o = { .endpoint = ep, .service_name = "test", .queue_size = queue, .batch_size = batch,
                             .interval_ms = interval, .timeout_ms = timeout };
    struct tracer *t = tracer_start(&o, err, sizeof err);
    if (!t)
        fprintf(stderr, "tracer_start: %s\n", err);
    return t;
}

/* ---------------------------------------------------------------- exporter */

static void test_endpoints(void)
{
    const char *bad[] = {
        "https://127.0.0.1:4318/v1/traces", "ftp://127.0.0.1/", "127.0.0.1:4318", "http://", "http:///v1/traces",
        "http://:4318/v1/traces", "http://127.0.0.1:0/", "http://127.0.0.1:65536/", "http://127.0.0.1:x/",
        "http://127.0.0.1:/", "http://127.0.0.1:43 18/", "http://user@127.0.0.1:4318/", "http://[::1/",
        "http://[::1]x/", "http://127.0.0.1:4318/v1/tr aces", "http://127.0.0.1:4318/v1\r\nX: y",
        "http://127.0.0.1:+80/", "http://127.0.0.1:-80/",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        struct tracer_opts o = { .endpoint = bad[i] };
        struct tracer *t = tracer_start(&o, err, sizeof err);
        CHECK(t == NULL);
        CHECK(err[0] != '\0');
        if (t) {
            fprintf(stderr, "  accepted endpoint \"%s\"\n", bad[i]);
            tracer_stop(t);
        }
    }
    char err[256] = "";
    struct tracer_opts o = { .endpoint = "https://collector:4318/v1/traces" };
    CHECK(tracer_start(&o, err, sizeof err) == NULL);
    CHECK(strstr(err, "https is not supported") != NULL);
    o.endpoint = NULL;
    CHECK(tracer_start(&o, err, sizeof err) == NULL);
    o.endpoint = "http://127.0.0.1:4318";
    o.queue_size = 1u << 20;
    CHECK(tracer_start(&o, err, sizeof err) == NULL);
    CHECK(strstr(err, "queue_size") != NULL);

    /* NULL is fine everywhere it is documented to be */
    struct span s;
    make_span(&s, 0);
    tracer_submit(NULL, &s);
    tracer_stop(NULL);
    struct tracer_stats st;
    memset(&st, 0xff, sizeof st);
    tracer_get_stats(NULL, &st);
    CHECK(st.exported == 0 && st.dropped == 0 && st.failed == 0 && st.batches == 0);
    tracer_stop_stats(NULL, &st);
    CHECK(st.exported == 0);
}

/* N spans in batches; every one arrives exactly once; the request is OTLP/HTTP */
static void test_export_ok(void)
{
    enum { N = 1000 };
    struct rx r;
    CHECK(rx_start(&r, RX_OK));
    struct tracer *t = start_at(r.port, "/v1/traces", 4096, 100, 20, 2000);
    CHECK(t != NULL);
    if (!t) {
        rx_stop(&r);
        return;
    }
    struct span s;
    for (uint32_t i = 0; i < N; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    struct tracer_stats st;
    tracer_stop_stats(t, &st);
    CHECK_EQ_INT(st.exported, N);
    CHECK_EQ_INT(st.dropped, 0);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_INT(st.batches, atomic_load(&r.requests));
    CHECK(st.batches >= N / 100);
    static int seen[N];
    memset(seen, 0, sizeof seen);
    CHECK_EQ_INT(rx_count(&r, seen, N), N);
    int once = 0;
    for (int i = 0; i < N; i++)
        once += seen[i] == 1;
    CHECK_EQ_INT(once, N);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", r.port);
    CHECK(strncmp(r.head, "POST /v1/traces HTTP/1.1\r\n", 26) == 0);
    CHECK(strstr(r.head, host) != NULL);
    CHECK(strcasestr(r.head, "\r\ncontent-type: application/json\r\n") != NULL);
    CHECK(strcasestr(r.head, "\r\ncontent-length: ") != NULL);
    /* the resource carries the service name */
    struct json_span root;
    CHECK(r.nbodies > 0 && json_validate(r.bodies[0], r.lens[0], &root, NULL) == 0);
    if (r.nbodies > 0)
        CHECK_EQ_STR(str_at(&root, P("resourceSpans", "0", "resource", "attributes", "0", "value", "stringValue")),
                     "test");
    rx_stop(&r);
}

/* spans waiting are sent after interval_ms, and a full batch at once */
static void test_export_wakeups(void)
{
    struct rx r;
    CHECK(rx_start(&r, RX_OK));
    /* interval: 3 spans, batch 512, interval 50 ms */
    struct tracer *t = start_at(r.port, "", 0, 0, 50, 2000);
    CHECK(t != NULL);
    struct span s;
    uint64_t t0 = now_ms();
    for (uint32_t i = 0; i < 3; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    CHECK(rx_wait(&r, 1, 5000));
    CHECK(now_ms() - t0 < 5000);
    struct tracer_stats st;
    tracer_get_stats(t, &st);
    for (int k = 0; k < 500 && st.exported < 3; k++) {
        sleep_ms(2);
        tracer_get_stats(t, &st);
    }
    CHECK_EQ_INT(st.exported, 3);
    tracer_stop(t);
    CHECK(strncmp(r.head, "POST / HTTP/1.1\r\n", 17) == 0); /* no path: "/" */

    /* batch full: interval one minute, batch 10 */
    t = start_at(r.port, "/v1/traces?x=1", 100, 10, 60000, 2000);
    CHECK(t != NULL);
    t0 = now_ms();
    for (uint32_t i = 0; i < 9; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    sleep_ms(100);
    CHECK_EQ_INT(atomic_load(&r.requests), 1); /* 9 < batch: nothing yet */
    make_span(&s, 9);
    tracer_submit(t, &s);
    CHECK(rx_wait(&r, 2, 5000));
    CHECK(now_ms() - t0 < 5000);
    tracer_stop_stats(t, &st);
    CHECK_EQ_INT(st.exported, 10);
    CHECK_EQ_INT(st.batches, 1);
    rx_stop(&r);
}

/* 500: the batch's spans are failed, not retried; a partial success moves
 * the rejected spans to failed */
static void test_export_errors(void)
{
    struct rx r;
    CHECK(rx_start(&r, RX_500));
    struct tracer *t = start_at(r.port, "/v1/traces", 0, 20, 20, 2000);
    struct span s;
    for (uint32_t i = 0; i < 50; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    struct tracer_stats st;
    tracer_stop_stats(t, &st);
    CHECK_EQ_INT(st.failed, 50);
    CHECK_EQ_INT(st.exported, 0);
    CHECK_EQ_INT(st.dropped, 0);
    CHECK(st.batches >= 1);
    CHECK_EQ_INT(st.batches, atomic_load(&r.requests)); /* no retries: one request per batch */
    CHECK(st.batches <= 3);
    rx_stop(&r);

    CHECK(rx_start(&r, RX_PARTIAL));
    t = start_at(r.port, "/v1/traces", 0, 0, 60000, 2000);
    for (uint32_t i = 0; i < 5; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    tracer_stop_stats(t, &st);
    CHECK_EQ_INT(st.exported, 3);
    CHECK_EQ_INT(st.failed, 2);
    CHECK_EQ_INT(st.batches, 1);
    rx_stop(&r);
}

/* nobody listening: failed, and tracer_stop is prompt */
static void test_export_down(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    int port = ntohs(a.sin_port);
    close(fd); /* bound, never listened: connections are refused */
    struct tracer *t = start_at(port, "/v1/traces", 0, 64, 20, 5000);
    CHECK(t != NULL);
    struct span s;
    for (uint32_t i = 0; i < 300; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    uint64_t t0 = now_ms();
    struct tracer_stats st;
    tracer_stop_stats(t, &st);
    uint64_t took = now_ms() - t0;
    CHECK(took < 1000);
    CHECK_EQ_INT(st.failed, 300);
    CHECK_EQ_INT(st.exported, 0);
    CHECK_EQ_INT(st.dropped, 0);
}

/* a collector that takes the request and never answers: tracer_stop
 * returns within about timeout_ms, everything counted failed */
static void test_export_hung_stop(void)
{
    struct rx r;
    CHECK(rx_start(&r, RX_HANG));
    struct tracer *t = start_at(r.port, "/v1/traces", 64, 5, 60000, 300);
    struct span s;
    for (uint32_t i = 0; i < 5; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    CHECK(rx_wait(&r, 1, 5000)); /* the exporter now waits for the answer */
    for (uint32_t i = 5; i < 8; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    uint64_t t0 = now_ms();
    struct tracer_stats st;
    tracer_stop_stats(t, &st);
    uint64_t took = now_ms() - t0;
    CHECK(took < 1500);
    CHECK_EQ_INT(st.failed, 8);
    CHECK_EQ_INT(st.exported, 0);
    rx_stop(&r);
}

/* the exporter is stuck on a collector that does not answer: submit keeps
 * returning at once and counts what does not fit as dropped */
static void test_queue_full(void)
{
    struct rx r;
    CHECK(rx_start(&r, RX_HANG));
    struct tracer *t = start_at(r.port, "/v1/traces", 8, 4, 60000, 10000);
    struct span s;
    for (uint32_t i = 0; i < 4; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    CHECK(rx_wait(&r, 1, 5000)); /* 4 spans in flight, the queue is empty again */
    uint64_t t0 = now_ms();
    for (uint32_t i = 4; i < 104; i++) {
        make_span(&s, i);
        tracer_submit(t, &s);
    }
    CHECK(now_ms() - t0 < 500);
    struct tracer_stats st;
    tracer_get_stats(t, &st);
    CHECK_EQ_INT(st.dropped, 92);
    CHECK_EQ_INT(st.exported, 0);
    atomic_store(&r.release, true); /* answer now: the 8 queued follow in two batches */
    CHECK(rx_wait(&r, 3, 5000));
    tracer_stop_stats(t, &st);
    CHECK_EQ_INT(st.exported, 12);
    CHECK_EQ_INT(st.dropped, 92);
    CHECK_EQ_INT(st.failed, 0);
    CHECK_EQ_INT(st.batches, 3);
    static int seen[104];
    memset(seen, 0, sizeof seen);
    CHECK_EQ_INT(rx_count(&r, seen, 104), 12);
    int first12 = 0;
    for (int i = 0; i < 12; i++)
        first12 += seen[i] == 1;
    CHECK_EQ_INT(first12, 12); /* the first ones are kept, the overflow is dropped */
    rx_stop(&r);
}

/* several submitting threads: every span is exported, dropped or failed,
 * and what was exported arrived exactly once */
enum { THREADS = 4, PER_THREAD = 3000 };

struct submitter {
    struct tracer *t;
    uint32_t base;
};

static void *submit_main(void *arg)
{
    struct submitter *sb = arg;
    struct span s;
    for (uint32_t i = 0; i < PER_THREAD; i++) {
        make_span(&s, sb->base + i);
        tracer_submit(sb->t, &s);
        if (i % 512 == 0)
            sleep_ms(1);
    }
    return NULL;
}

static void test_concurrent(void)
{
    struct rx r;
    CHECK(rx_start(&r, RX_OK));
    struct tracer *t = start_at(r.port, "/v1/traces", 1024, 256, 10, 5000);
    struct submitter sb[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        sb[i] = (struct submitter){ t, (uint32_t)i * PER_THREAD };
        CHECK(pthread_create(&th[i], NULL, submit_main, &sb[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    struct tracer_stats st;
    tracer_stop_stats(t, &st);
    CHECK_EQ_INT(st.exported + st.dropped + st.failed, THREADS * PER_THREAD);
    CHECK_EQ_INT(st.failed, 0);
    CHECK(st.exported > 0);
    static int seen[THREADS * PER_THREAD];
    memset(seen, 0, sizeof seen);
    CHECK_EQ_INT(rx_count(&r, seen, THREADS * PER_THREAD), (long)st.exported);
    int dup = 0;
    for (int i = 0; i < THREADS * PER_THREAD; i++)
        dup += seen[i] > 1;
    CHECK_EQ_INT(dup, 0);
    rx_stop(&r);
}

int main(void)
{
    test_parse();
    test_format();
    test_ids();
    test_sampling();
    test_attrs();
    test_encode();
    test_endpoints();
    test_export_ok();
    test_export_wakeups();
    test_export_errors();
    test_export_down();
    test_export_hung_stop();
    test_queue_full();
    test_concurrent();
    UNIT_DONE();
}
