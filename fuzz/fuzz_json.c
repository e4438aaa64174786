// srcs: src/core/json.c src/core/buf.c
/* fuzz_json.c — json_validate against a small, obviously-correct recursive
 * reference validator; on valid input, every lookup is exercised on the root
 * and every nested value and checked against the others; json_escape of the
 * raw input must always validate and round-trip. */
#include "json.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", \
    __FILE__, __LINE__, #c); abort(); } } while (0)

/* ------------------------------------------------ reference validator */

struct ref {
    const uint8_t *s;
    size_t n, i;
};

static void ref_ws(struct ref *r)
{
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
                           r->s[r->i] == '\r'))
        r->i++;
}

static bool ref_lit(struct ref *r, const char *lit)
{
    size_t k = strlen(lit);
    if (r->n - r->i < k || memcmp(r->s + r->i, lit, k) != 0) return false;
    r->i += k;
    return true;
}

static bool ref_hex4(struct ref *r, unsigned *cp)
{
    if (r->n - r->i < 4) return false;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t c = r->s[r->i + (size_t)k];
        unsigned d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10u;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10u;
        else return false;
        v = v * 16 + d;
    }
    r->i += 4;
    *cp = v;
    return true;
}

/* Decode one UTF-8 scalar the long way: lead byte, continuation bytes, then
 * reject overlongs, surrogates and values above U+10FFFF. */
static bool ref_utf8(const uint8_t *s, size_t n, size_t *i)
{
    uint8_t c = s[*i];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) { (*i)++; return true; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1Fu; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0Fu; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07u; min = 0x10000; }
    else return false;
    if (n - *i < len) return false;
    for (size_t k = 1; k < len; k++) {
        uint8_t b = s[*i + k];
        if ((b & 0xC0) != 0x80) return false;
        cp = cp << 6 | (b & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    *i += len;
    return true;
}

static bool ref_string(struct ref *r)
{
    r->i++; /* opening quote */
    while (r->i < r->n) {
        uint8_t c = r->s[r->i];
        if (c == '"') { r->i++; return true; }
        if (c < 0x20) return false;
        if (c == '\\') {
            r->i++;
            if (r->i >= r->n) return false;
            c = r->s[r->i++];
            if (c == 'u') {
                unsigned cp, lo;
                if (!ref_hex4(r, &cp)) return false;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return false;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (!ref_lit(r, "\\u") || !ref_hex4(r, &lo)) return false;
                    if (lo < 0xDC00 || lo > 0xDFFF) return false;
                }
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return false;
            }
            continue;
        }
        if (!ref_utf8(r->s, r->n, &r->i)) return false;
    }
    return false;
}

static bool ref_digits(struct ref *r)
{
    size_t start = r->i;
    while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') r->i++;
    return r->i > start;
}

static bool ref_number(struct ref *r)
{
    if (r->s[r->i] == '-') r->i++;
    if (r->i >= r->n) return false;
    if (r->s[r->i] == '0') r->i++;
    else if (!ref_digits(r)) return false;
    if (r->i < r->n && r->s[r->i] == '.') {
        r->i++;
        if (!ref_digits(r)) return false;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) r->i++;
        if (!ref_digits(r)) return false;
    }
    return true;
}

/* depth = containers around this value */
static bool ref_value(struct ref *r, int depth)
{
    ref_ws(r);
    if (r->i >= r->n) return false;
    uint8_t c = r->s[r->i];
    if (c == '[' || c == '{') {
        if (depth + 1 > JSON_MAX_DEPTH) return false;
        uint8_t close = c == '[' ? ']' : '}';
        r->i++;
        ref_ws(r);
        if (r->i < r->n && r->s[r->i] == close) { r->i++; return true; }
        for (;;) {
            if (c == '{') {
                ref_ws(r);
                if (r->i >= r->n || r->s[r->i] != '"' || !ref_string(r)) return false;
                ref_ws(r);
                if (r->i >= r->n || r->s[r->i] != ':') return false;
                r->i++;
            }
            if (!ref_value(r, depth + 1)) return false;
            ref_ws(r);
            if (r->i >= r->n) return false;
            if (r->s[r->i] == close) { r->i++; return true; }
            if (r->s[r->i] != ',') return false;
            r->i++;
        }
    }
    if (c == '"') return ref_string(r);
    if (c == '-' || (c >= '0' && c <= '9')) return ref_number(r);
    return ref_lit(r, "true") || ref_lit(r, "false") || ref_lit(r, "null");
}

static bool ref_validate(const uint8_t *s, size_t n)
{
    struct ref r = {s, n, 0};
    if (!ref_value(&r, 0)) return false;
    ref_ws(&r);
    return r.i == r.n;
}

/* ------------------------------------------------------------ checks */

static bool same(const struct json_span *a, const struct json_span *b)
{
    return a->p == b->p && a->len == b->len && a->type == b->type;
}

/* escape(x) validates as a string and unescapes back to x (x valid UTF-8) */
static void check_escape_roundtrip(const char *x, size_t n)
{
    size_t cap = 6 * n + 3;
    char *esc = malloc(cap), *back = malloc(n + 1);
    REQUIRE(esc && back);
    long k = json_escape(x, n, esc, cap);
    REQUIRE(k >= 2);
    struct json_span v;
    REQUIRE(json_validate(esc, (size_t)k, &v, NULL) == 0 && v.type == JSON_STRING);
    REQUIRE(json_str_unescape(&v, back, n + 1) == (long)n);
    REQUIRE(memcmp(back, x, n) == 0);
    free(esc);
    free(back);
}

static void check_string(const struct json_span *v)
{
    REQUIRE(v->len >= 2 && v->p[0] == '"' && v->p[v->len - 1] == '"');
    REQUIRE(json_str_rawlen(v) == v->len - 2);
    /* escapes only shrink: the raw length is enough room */
    size_t cap = v->len - 1;
    char *out = malloc(cap);
    REQUIRE(out);
    long n = json_str_unescape(v, out, cap);
    REQUIRE(n >= 0 && (size_t)n <= v->len - 2);
    REQUIRE(out[n] == '\0');
    if (n > 0) REQUIRE(json_str_unescape(v, out, (size_t)n) == -1);
    if (memchr(out, '\0', (size_t)n) == NULL) REQUIRE(json_str_eq(v, out));
    /* decoded strings of valid JSON are valid UTF-8: escaping round-trips */
    check_escape_roundtrip(out, (size_t)n);
    free(out);
}

static void check_number(const struct json_span *v)
{
    char buf[512];
    if (v->len >= sizeof buf) return;
    memcpy(buf, v->p, v->len);
    buf[v->len] = '\0';
    bool integral = strpbrk(buf, ".eE") == NULL;
    int64_t i;
    bool ok = json_to_i64(v, &i);
    errno = 0;
    char *end;
    long long ll = strtoll(buf, &end, 10);
    bool fits = integral && errno != ERANGE && *end == '\0';
    REQUIRE(ok == fits);
    if (ok) REQUIRE(i == ll);
    double d, ref;
    ok = json_to_double(v, &d);
    errno = 0;
    ref = strtod(buf, &end);
    REQUIRE(*end == '\0');
    if (ok) REQUIRE(d == ref || (d != d && ref != ref));
    else REQUIRE(errno == ERANGE);
}

static void walk(const struct json_span *v, int depth)
{
    /* any span the lookups hand out is itself a valid text of its type */
    struct json_span again;
    REQUIRE(json_validate(v->p, v->len, &again, NULL) == 0);
    REQUIRE(same(&again, v));
    REQUIRE(json_is_true(v) == (v->type == JSON_TRUE));

    switch (v->type) {
    case JSON_STRING:
        check_string(v);
        return;
    case JSON_NUMBER:
        check_number(v);
        return;
    case JSON_OBJECT:
    case JSON_ARRAY:
        break;
    default:
        return;
    }

    size_t it = 0, count = 0;
    struct json_span key, val, other;
    while (json_next(v, &it, &key, &val)) {
        REQUIRE(it <= v->len);
        if (v->type == JSON_ARRAY) {
            REQUIRE(key.p == NULL);
            if (count < 64) {
                REQUIRE(json_index(v, count, &other));
                REQUIRE(same(&other, &val));
            }
        } else {
            REQUIRE(key.type == JSON_STRING);
            REQUIRE(!json_index(v, count, &other));
            if (count < 64) {
                /* json_get(decoded key) finds the last member with that key */
                char *k = malloc(key.len);
                REQUIRE(k);
                long kn = json_str_unescape(&key, k, key.len);
                REQUIRE(kn >= 0);
                if (memchr(k, '\0', (size_t)kn) == NULL) {
                    REQUIRE(json_get(v, k, &other));
                    struct json_span lk, lv, last = {NULL, 0, JSON_INVALID};
                    size_t it2 = 0;
                    while (json_next(v, &it2, &lk, &lv))
                        if (json_str_eq(&lk, k)) last = lv;
                    REQUIRE(same(&other, &last));
                }
                free(k);
            }
        }
        if (depth < 32) walk(&val, depth + 1);
        count++;
    }
    REQUIRE(json_count(v) == count);
    REQUIRE(!json_index(v, count, &other));
    REQUIRE(!json_next(v, &it, &key, &val));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct json_span root;
    struct json_error err = {0, NULL};
    int rc = json_validate((const char *)data, size, &root, &err);
    bool ref = ref_validate(data, size);
    if ((rc == 0) != ref) {
        fprintf(stderr, "json_validate=%d (offset %zu: %s) but reference says %s\n", rc,
                err.offset, rc ? err.message : "-", ref ? "valid" : "invalid");
        abort();
    }
    if (rc != 0) {
        REQUIRE(err.message && err.message[0]);
        REQUIRE(err.offset <= size);
        /* the offset is the first offending byte: everything before it is
         * fine, so the text cut there is either valid or merely ends early
         * (its only error is at its end) */
        struct json_error e2 = {0, NULL};
        if (json_validate((const char *)data, err.offset, NULL, &e2) != 0 && e2.offset != err.offset) {
            fprintf(stderr, "error at %zu (%s), but the prefix fails at %zu (%s)\n", err.offset,
                    err.message, e2.offset, e2.message);
            abort();
        }
        REQUIRE(root.p == NULL && root.type == JSON_INVALID);
    } else {
        REQUIRE(root.p >= (const char *)data && root.p + root.len <= (const char *)data + size);
        walk(&root, 0);
    }

    /* json_escape: any bytes come out as a valid JSON string; valid UTF-8
     * round-trips exactly */
    size_t cap = 6 * size + 3;
    char *esc = malloc(cap);
    REQUIRE(esc);
    long k = json_escape((const char *)data, size, esc, cap);
    REQUIRE(k >= 2);
    struct json_span sv;
    REQUIRE(json_validate(esc, (size_t)k, &sv, NULL) == 0 && sv.type == JSON_STRING);
    /* one byte short fails cleanly (ASan watches the heap block edge) */
    char *tight = malloc((size_t)k - 1);
    REQUIRE(tight);
    REQUIRE(json_escape((const char *)data, size, tight, (size_t)k - 1) == -1);
    free(tight);
    size_t i = 0;
    bool utf8 = true;
    while (i < size && utf8) utf8 = ref_utf8(data, size, &i);
    if (utf8) check_escape_roundtrip((const char *)data, size);
    free(esc);
    return 0;
}
