// srcs: src/obs/trace.c src/http/hclient.c src/http/h1.c src/core/buf.c src/core/json.c src/core/log.c
/* fuzz_traceparent.c — trace_parse against a reference written from the
 * W3C Trace Context text with string functions; whatever parses formats to
 * a version-00 value that parses again to the same context (and, for
 * version 00, is the input itself).  The same bytes then go through the
 * span attribute setters and the OTLP/JSON encoder, whose output must
 * always be valid JSON. */
#include "json.h"
#include "trace.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", \
    __FILE__, __LINE__, #c); abort(); } } while (0)

/* ------------------------------------------------ reference parser */

static bool lower_hex(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!p[i] || !strchr("0123456789abcdef", p[i]))
            return false;
    return true;
}

static bool zeros(const char *p, size_t n)
{
    return strspn(p, "0") >= n;
}

/* §3.2: version-trace_id-parent_id-flags; §3.2.4 for higher versions */
static bool ref_valid(const char *s, size_t n)
{
    if (n < 55)
        return false;
    if (!lower_hex(s, 2) || memcmp(s, "ff", 2) == 0)
        return false;
    if (s[2] != '-' || !lower_hex(s + 3, 32) || s[35] != '-' || !lower_hex(s + 36, 16) || s[52] != '-' ||
        !lower_hex(s + 53, 2))
        return false;
    if (zeros(s + 3, 32) || zeros(s + 36, 16))
        return false;
    if (memcmp(s, "00", 2) == 0)
        return n == 55;
    return n == 55 || s[55] == '-';
}

static unsigned hexbyte(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 2; i++)
        v = v * 16 + (unsigned)(p[i] <= '9' ? p[i] - '0' : p[i] - 'a' + 10);
    return v;
}

/* ------------------------------------------------ spans from the bytes */

static void check_encoding(const uint8_t *data, size_t size)
{
    struct span s;
    memset(&s, 0, sizeof s);
    memset(s.trace_id, 0x11, 16);
    memset(s.span_id, 0x22, 8);
    size_t nn = size < sizeof s.name ? size : sizeof s.name; /* may fill the name with no NUL */
    memcpy(s.name, data, nn);
    size_t mn = size < sizeof s.status_message - 1 ? size : sizeof s.status_message - 1;
    memcpy(s.status_message, data, mn);
    s.status = size % 3;
    s.kind = size ? data[0] % 8 - 1 : 0;
    s.has_parent = size & 1;
    uint64_t bits = 0;
    memcpy(&bits, data, size < 8 ? size : 8);
    double d;
    memcpy(&d, &bits, sizeof d);
    s.start_unix_ns = bits;
    s.end_unix_ns = ~bits;

    /* the attribute string: a prefix of the input up to its first NUL, cut
     * at most 3 bytes before the limit */
    span_attr_str(&s, "s", (const char *)data, size);
    size_t upto = strnlen((const char *)data, size), got = strlen(s.attrs[0].s);
    REQUIRE(got <= SPAN_STR_MAX - 1);
    REQUIRE(memcmp(s.attrs[0].s, data, got) == 0);
    if (upto <= SPAN_STR_MAX - 1)
        REQUIRE(got == upto);
    else
        REQUIRE(got + 3 >= SPAN_STR_MAX - 1);
    span_attr_int(&s, "i", (int64_t)bits);
    span_attr_double(&s, "d", d);
    span_attr_bool(&s, "b", bits & 1);
    if (size >= 24)
        span_add_link(&s, data, data + 16);

    struct buf b = { 0 };
    REQUIRE(trace_encode_otlp_json((const char *)s.attrs[0].s, &s, 1, &b) == 0);
    struct json_error e = { 0, NULL };
    if (json_validate(buf_data(&b), buf_used(&b), NULL, &e) != 0) {
        fprintf(stderr, "invalid JSON at %zu (%s): %.*s\n", e.offset, e.message, (int)buf_used(&b), buf_data(&b));
        abort();
    }
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes: ASan sees any read past the end */
    char *v = malloc(size ? size : 1);
    REQUIRE(v);
    if (size)
        memcpy(v, data, size);

    struct trace_ctx c, again;
    memset(&c, 0xa5, sizeof c);
    struct trace_ctx before = c;
    int rc = trace_parse(v, size, &c);
    bool ref = ref_valid(v, size);
    if ((rc == 0) != ref) {
        fprintf(stderr, "trace_parse=%d but the reference says %s: %.*s\n", rc, ref ? "valid" : "invalid",
                (int)size, v);
        abort();
    }
    if (rc != 0) {
        REQUIRE(memcmp(&c, &before, sizeof c) == 0); /* untouched */
    } else {
        char out[TRACE_PARENT_LEN + 1];
        trace_format(&c, out);
        REQUIRE(strlen(out) == TRACE_PARENT_LEN);
        REQUIRE(trace_parse(out, TRACE_PARENT_LEN, &again) == 0);
        REQUIRE(memcmp(c.trace_id, again.trace_id, 16) == 0);
        REQUIRE(memcmp(c.span_id, again.span_id, 8) == 0);
        REQUIRE(c.flags == again.flags);
        /* the fields are the input's; version 00 formats back to the input */
        REQUIRE(memcmp(out + 2, v + 2, 51) == 0);
        unsigned flags = hexbyte(v + 53);
        if (memcmp(v, "00", 2) == 0) {
            REQUIRE(memcmp(out, v, TRACE_PARENT_LEN) == 0);
            REQUIRE(c.flags == flags);
        } else {
            REQUIRE(c.flags == (flags & TRACE_FLAG_SAMPLED));
        }
    }
    /* a valid higher-version value cut to its first 55 bytes is valid too */
    if (size > TRACE_PARENT_LEN && rc == 0) {
        REQUIRE(trace_parse(v, TRACE_PARENT_LEN, &again) == 0);
    }
    free(v);

    check_encoding(data, size);
    return 0;
}
