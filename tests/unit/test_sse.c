/* test_sse.c — the incremental SSE reader: line ends, fields, splits at every
 * position, large-event skipping, zero-copy delivery. */
#include "sse.h"
#include "unit.h"

#include <stdbool.h>
#include <stdint.h>

/* Events are recorded as "<len>:<bytes>|" in one growing string, so two runs
 * can be compared with one strcmp-like memcmp. */
struct rec {
    char *s;
    size_t len, cap;
    int events;
    int zero_copy;         /* deliveries pointing into the current input */
    const char *in_lo, *in_hi;
    uint64_t skipped;      /* the reader's count of events too large */
};

static void rec_put(struct rec *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + n + 1) cap *= 2;
        char *nb = realloc(r->s, cap);
        if (!nb) abort();
        r->s = nb;
        r->cap = cap;
    }
    if (n) memcpy(r->s + r->len, p, n);
    r->len += n;
    r->s[r->len] = '\0';
}

static void on_event(void *arg, const char *data, size_t len)
{
    struct rec *r = arg;
    char num[32];
    int k = snprintf(num, sizeof num, "%zu:", len);
    rec_put(r, num, (size_t)k);
    rec_put(r, data, len);
    rec_put(r, "|", 1);
    r->events++;
    if (r->in_lo && data >= r->in_lo && data + len <= r->in_hi) r->zero_copy++;
}

static void rec_free(struct rec *r) { free(r->s); }

/* Feed s[0..n) cut at the given offsets (ascending, may repeat). */
static struct rec run_cuts(const char *s, size_t n, size_t max, const size_t *cuts, size_t ncuts)
{
    struct rec r = {0};
    struct sse_reader rd;
    sse_reader_init(&rd, on_event, &r, max);
    rec_put(&r, "", 0);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        /* copy each piece so that a reader keeping pointers into it fails
         * under ASan */
        char *piece = malloc(to - at + 1);
        if (!piece) abort();
        memcpy(piece, s + at, to - at);
        r.in_lo = piece;
        r.in_hi = piece + (to - at);
        sse_reader_feed(&rd, piece, to - at);
        r.in_lo = r.in_hi = NULL;
        free(piece);
        at = to;
    }
    r.skipped = rd.skipped;
    sse_reader_free(&rd);
    return r;
}

static struct rec run_whole(const char *s, size_t n, size_t max)
{
    return run_cuts(s, n, max, NULL, 0);
}

static void expect(const char *stream, const char *want)
{
    struct rec r = run_whole(stream, strlen(stream), 0);
    CHECK_EQ_STR(r.s, want);
    rec_free(&r);
}

/* Whole, one byte at a time, every 2-way split and (when short) every 3-way
 * split must give the same events. */
static void check_splits(const char *s, size_t n, size_t max, const char *want)
{
    struct rec whole = run_whole(s, n, max);
    if (want) CHECK_EQ_STR(whole.s, want);

    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    if (!cuts) abort();
    for (size_t i = 0; i < n; i++) cuts[i] = i;
    struct rec bytes = run_cuts(s, n, max, cuts, n);
    CHECK_EQ_STR(bytes.s, whole.s);
    rec_free(&bytes);
    free(cuts);

    int bad = 0;
    for (size_t a = 0; a <= n; a++) {
        struct rec r = run_cuts(s, n, max, &a, 1);
        if (strcmp(r.s, whole.s) != 0 && bad++ == 0)
            fprintf(stderr, "2-way split at %zu: got %s want %s\n", a, r.s, whole.s);
        rec_free(&r);
    }
    if (n <= 200) {
        for (size_t a = 0; a <= n; a++)
            for (size_t b = a; b <= n; b++) {
                size_t c2[2] = {a, b};
                struct rec r = run_cuts(s, n, max, c2, 2);
                if (strcmp(r.s, whole.s) != 0 && bad++ == 0)
                    fprintf(stderr, "3-way split at %zu,%zu: got %s want %s\n", a, b, r.s, whole.s);
                rec_free(&r);
            }
    }
    CHECK_EQ_INT(bad, 0);
    rec_free(&whole);
}

static void test_basics(void)
{
    expect("data: hello\n\n", "5:hello|");
    expect("data:hello\n\n", "5:hello|");
    expect("data:  two spaces\n\n", "11: two spaces|");
    expect("data: a\ndata: b\n\n", "3:a\nb|");
    expect("data: a\ndata:\ndata: c\n\n", "4:a\n\nc|");
    expect("data\n\n", "0:|");             /* field without colon: empty value */
    expect("data:\n\n", "0:|");
    expect("data: \n\n", "0:|");
    expect("data:\ndata:\n\n", "1:\n|");
    expect("data: x\n", "");               /* never dispatched: no blank line */
    expect("data: x", "");
    expect("\n\n\n", "");                  /* blank lines without data */
    expect("event: ping\n\n", "");
    expect(": just a comment\n\n", "");
    expect(":\n\n", "");
    expect("event: message\nid: 7\nretry: 1000\ndata: x\n\n", "1:x|");
    expect(": comment\ndata: x\n: another\n\n", "1:x|");
    expect("data : x\n\n", "");            /* field name "data " */
    expect("Data: x\n\n", "");             /* names are case-sensitive */
    expect("dat: x\n\n", "");
    expect("datax: y\n\n", "");
    expect("data: x\ndat\n\n", "1:x|");
    expect("id\nevent\ndata: y\n\n", "1:y|");
    expect("data: a:b: c\n\n", "6:a:b: c|");
    expect("data: one\n\ndata: two\n\n", "3:one|3:two|");
    expect("data: one\n\n\n\ndata: two\n\n", "3:one|3:two|");
    /* NUL bytes pass through */
    struct rec r = run_whole("data: a\0b\n\n", 11, 0);
    CHECK_EQ_INT(r.events, 1);
    CHECK(r.len == 6 && memcmp(r.s, "3:a\0b|", 6) == 0);
    rec_free(&r);
    /* a UTF-8 BOM at the start of the stream is dropped, elsewhere it is not */
    expect("\xEF\xBB\xBF" "data: x\n\n", "1:x|");
    expect("\xEF\xBB" "data: x\n\ndata: y\n\n", "1:y|");
    expect("data: x\n\n\xEF\xBB\xBF" "data: y\n\n", "1:x|");
    expect("data: \xEF\xBB\xBF\n\n", "3:\xEF\xBB\xBF|");
}

static void test_line_ends(void)
{
    expect("data: a\r\n\r\n", "1:a|");
    expect("data: a\r\r", "1:a|");
    expect("data: a\n\n", "1:a|");
    expect("data: a\r\ndata: b\r\n\r\n", "3:a\nb|");
    expect("data: a\rdata: b\r\r", "3:a\nb|");
    expect("data: a\ndata: b\r\n\r", "3:a\nb|");
    expect("data: a\n\rdata: b\r\n\n", "1:a|1:b|");
    /* LF CR is two line ends, CR LF one */
    expect("data: a\n\r", "1:a|");
    expect("data: a\r\n", "");
    expect("data: a\r\n\r\n\r\n\r\n", "1:a|");

    /* CR at the end of one feed, LF at the start of the next: one line end */
    struct rec r = {0};
    struct sse_reader rd;
    sse_reader_init(&rd, on_event, &r, 0);
    rec_put(&r, "", 0);
    sse_reader_feed(&rd, "data: a\r", 8);
    sse_reader_feed(&rd, "", 0);         /* an empty feed changes nothing */
    sse_reader_feed(&rd, "\n", 1);
    sse_reader_feed(&rd, "data: b\r", 8);
    sse_reader_feed(&rd, "\n\r", 2);
    sse_reader_feed(&rd, "\n", 1);
    CHECK_EQ_STR(r.s, "3:a\nb|");
    /* and CR then CR is a blank line */
    sse_reader_feed(&rd, "data: c\r", 8);
    sse_reader_feed(&rd, "\r", 1);
    CHECK_EQ_STR(r.s, "3:a\nb|1:c|");
    sse_reader_free(&rd);
    rec_free(&r);
}

static const char multi[] =
    ": stream starts\r\n"
    "retry: 3000\r\n"
    "\r\n"
    "data: first\r\n"
    "\r\n"
    "event: update\n"
    "data: line one\n"
    "data:line two\n"
    "data\n"
    "id: 42\n"
    "\n"
    "data: cr only\r"
    "data:  indented\r"
    "\r"
    "data: {\"k\":\"v\"}\r\n"
    ": interleaved comment\n"
    "\r"
    "data: 0123456789012345678901234567890123456789\n"
    "\n"
    "data:\n"
    "\n"
    "data: tail\n"
    "\n";

static void test_splits(void)
{
    const char *want =
        "5:first|"
        "18:line one\nline two\n|"
        "17:cr only\n indented|"
        "9:{\"k\":\"v\"}|"
        "40:0123456789012345678901234567890123456789|"
        "0:|"
        "4:tail|";
    check_splits(multi, sizeof multi - 1, 0, want);
    /* with a small maximum the 40-byte event is skipped, at every split */
    const char *want_small =
        "5:first|"
        "18:line one\nline two\n|"
        "17:cr only\n indented|"
        "9:{\"k\":\"v\"}|"
        "0:|"
        "4:tail|";
    check_splits(multi, sizeof multi - 1, 20, want_small);

    const char crlf[] = "data: a\r\n\r\ndata: b\r\ndata: c\r\n\r\n:x\r\n\r\ndata: d\r\r";
    check_splits(crlf, sizeof crlf - 1, 0, "1:a|3:b\nc|1:d|");
    const char bom[] = "\xEF\xBB\xBF" "data: x\n\ndata: y\r\r";
    check_splits(bom, sizeof bom - 1, 0, "1:x|1:y|");
}

static void test_large(void)
{
    /* exactly max bytes is delivered, one more is skipped; the reader
     * recovers at the next blank line */
    const char *s1 = "data: 0123456789abcdef\n\ndata: 0123456789abcdefX\n\ndata: ok\n\n";
    check_splits(s1, strlen(s1), 16, "16:0123456789abcdef|2:ok|");
    /* the joined size counts, '\n' separators included */
    const char *s2 = "data: 01234567\ndata: 0123456\n\ndata: 01234567\ndata: 01234567\n\ndata: ok\n\n";
    check_splits(s2, strlen(s2), 16, "16:01234567\n0123456|2:ok|");
    /* skipped events with comments and other fields in them */
    const char *s3 = "data: xxxxxxxxxxxxxxxxxxxxxxxxxxxx\n: c\nevent: e\ndata: y\n\ndata: z\n\n";
    check_splits(s3, strlen(s3), 8, "1:z|");
    /* each skipped event is counted once, however it was split: an observer
     * joining text across events must know one is missing */
    const char *s4 = "data: ok\n\ndata: 0123456789abcdefX\ndata: more\n\ndata: z\n\ndata: 0123456789abcdefXY";
    for (size_t a = 0; a <= strlen(s4); a++) {
        size_t c2[2] = {a / 2, a};
        struct rec r = run_cuts(s4, strlen(s4), 16, c2, 2);
        CHECK_EQ_STR(r.s, "2:ok|1:z|");
        CHECK_EQ_INT(r.skipped, 2);
        rec_free(&r);
    }

    /* a 200 KB event arriving in 1000-byte pieces grows the buffer */
    size_t big = 200000;
    char *s = malloc(big + 16);
    if (!s) abort();
    memcpy(s, "data: ", 6);
    for (size_t i = 0; i < big; i++) s[6 + i] = (char)('a' + i % 26);
    memcpy(s + 6 + big, "\n\n", 2);
    size_t n = big + 8;
    size_t cuts[300], nc = 0;
    for (size_t at = 1000; at < n; at += 1000) cuts[nc++] = at;
    struct rec r = run_cuts(s, n, 0, cuts, nc);
    CHECK_EQ_INT(r.events, 1);
    CHECK(r.len == 7 + big + 1 && memcmp(r.s, "200000:", 7) == 0 && memcmp(r.s + 7, s + 6, big) == 0);
    rec_free(&r);
    /* over the default 1 MiB: skipped */
    size_t huge = (1u << 20) + 1;
    char *h = malloc(huge + 32);
    if (!h) abort();
    memcpy(h, "data: ", 6);
    memset(h + 6, 'x', huge);
    memcpy(h + 6 + huge, "\n\ndata: after\n\n", 15);
    r = run_whole(h, huge + 21, 0);
    CHECK_EQ_STR(r.s, "5:after|");
    rec_free(&r);
    size_t hc[3] = {10, 500000, huge};
    r = run_cuts(h, huge + 21, 0, hc, 3);
    CHECK_EQ_STR(r.s, "5:after|");
    rec_free(&r);
    free(h);
    free(s);
}

static void test_zero_copy(void)
{
    /* whole events in one feed with one data line: no copy */
    const char *s = "data: one\n\n: c\nevent: x\ndata: two\nid: 1\n\n";
    struct rec r = run_whole(s, strlen(s), 0);
    CHECK_EQ_STR(r.s, "3:one|3:two|");
    CHECK_EQ_INT(r.zero_copy, 2);
    rec_free(&r);
    /* several data lines must be joined: copied */
    s = "data: a\ndata: b\n\n";
    r = run_whole(s, strlen(s), 0);
    CHECK_EQ_INT(r.events, 1);
    CHECK_EQ_INT(r.zero_copy, 0);
    rec_free(&r);
    /* an event straddling feeds: copied (and run_cuts frees each piece, so
     * ASan would catch a pointer kept into an old one) */
    s = "data: abc\n\n";
    size_t cut = 7;
    r = run_cuts(s, strlen(s), 0, &cut, 1);
    CHECK_EQ_STR(r.s, "3:abc|");
    CHECK_EQ_INT(r.zero_copy, 0);
    rec_free(&r);
    /* the data line whole in the first feed, the blank line in the next */
    cut = 10;
    r = run_cuts(s, strlen(s), 0, &cut, 1);
    CHECK_EQ_STR(r.s, "3:abc|");
    rec_free(&r);
}

static void test_openai_stream(void)
{
    static const char *chunks[] = {
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
        "\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},"
        "\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo!\"},"
        "\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
        "\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
        "\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    };
    size_t nchunks = sizeof chunks / sizeof chunks[0];
    char stream[4096];
    size_t n = 0;
    for (size_t i = 0; i < nchunks; i++) {
        size_t k = strlen(chunks[i]);
        memcpy(stream + n, chunks[i], k);
        n += k;
    }
    /* expected: each chunk's payload without "data: " and "\n\n" */
    char want[4096];
    size_t w = 0;
    for (size_t i = 0; i < nchunks; i++) {
        size_t k = strlen(chunks[i]) - 8;
        w += (size_t)snprintf(want + w, sizeof want - w, "%zu:%.*s|", k, (int)k, chunks[i] + 6);
    }
    struct rec r = run_whole(stream, n, 0);
    CHECK_EQ_STR(r.s, want);
    CHECK_EQ_INT(r.events, (int)nchunks);
    CHECK_EQ_INT(r.zero_copy, (int)nchunks);
    CHECK(r.len >= 9 && memcmp(r.s + r.len - 9, "6:[DONE]|", 9) == 0);
    rec_free(&r);
    /* as the network delivers it: one chunk per read, and arbitrary reads */
    check_splits(stream, n, 0, want);
    /* TCP-sized reads of 7 bytes */
    size_t cuts[1024], nc = 0;
    for (size_t at = 7; at < n; at += 7) cuts[nc++] = at;
    r = run_cuts(stream, n, 0, cuts, nc);
    CHECK_EQ_STR(r.s, want);
    rec_free(&r);
}

static void test_reuse(void)
{
    struct rec r = {0};
    struct sse_reader rd;
    rec_put(&r, "", 0);
    sse_reader_init(&rd, on_event, &r, 0);
    CHECK(rd.max == 1u << 20);
    sse_reader_feed(&rd, "data: partial", 13);
    sse_reader_free(&rd);
    sse_reader_free(&rd); /* twice is harmless */
    sse_reader_init(&rd, on_event, &r, 4);
    sse_reader_feed(&rd, "data: 1234\n\ndata: 12345\n\n", 25);
    CHECK_EQ_STR(r.s, "4:1234|");
    sse_reader_free(&rd);
    /* no callback: parses, delivers nothing, does not crash */
    sse_reader_init(&rd, NULL, NULL, 0);
    sse_reader_feed(&rd, "data: x\ndata: y\n\n", 17);
    sse_reader_free(&rd);
    rec_free(&r);
}

int main(void)
{
    test_basics();
    test_line_ends();
    test_splits();
    test_large();
    test_zero_copy();
    test_openai_stream();
    test_reuse();
    UNIT_DONE();
}
