/* json.c — a strict, single-pass, non-allocating JSON validator plus lookups
 * that walk already-validated text.
 *
 * json_validate() is an explicit state machine: nesting is kept in a
 * JSON_MAX_DEPTH-bit stack (1 = object, 0 = array), so there is no recursion
 * and no allocation.  String contents are skipped 8 bytes at a time (SWAR):
 * a word is only looked at byte by byte when it holds a quote, a backslash,
 * a control character or a non-ASCII byte.
 *
 * Error offsets point at the offending byte:
 *   - unexpected end of input: offset n;
 *   - bad escape: the byte after the backslash; bad \u hex digit: that digit;
 *   - unpaired surrogate escape: the backslash of the offending \u escape;
 *   - ill-formed UTF-8: the first byte of the ill-formed sequence;
 *   - leading zero: the digit after the zero;
 *   - trailing comma: the closing bracket after the comma.
 *
 * The lookups (json_get, json_next, ...) assume their spans came from
 * json_validate (or from another lookup on such a span).  They never read
 * outside the span, even if it is not valid JSON, but their answers are then
 * meaningless.
 */
#include "json.h"

#include "buf.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define HAVE_SSE2 1
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HAVE_SWAR 1
#endif

typedef unsigned char uc;

/* ------------------------------------------------------------------ tables */

/* JSON whitespace: space, tab, LF, CR. */
static const uint8_t ws_tab[256] = {
    ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, [' '] = 1,
};

/* Bytes that stop the plain-string fast loop: control characters, '"', '\\'
 * and every non-ASCII byte. */
static const uint8_t str_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x10 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x30 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x40 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x50 '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x70 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* Bytes that matter when skipping over a validated container. */
static const uint8_t skip_stop[256] = {
    ['"'] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1,
};

/* Bytes that end a number or literal in validated text. */
static const uint8_t scalar_end[256] = {
    ['\t'] = 1, ['\n'] = 1, ['\r'] = 1, [' '] = 1, [','] = 1, [']'] = 1, ['}'] = 1,
};

static int hexval(uc c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static inline bool is_digit(uc c) { return (unsigned)(c - '0') < 10u; }

static inline const uc *skip_ws(const uc *p, const uc *end)
{
    while (p < end && ws_tab[*p]) p++;
    return p;
}

/* ---- block scanners: first byte in [p, end) of a class, or end.  SSE2 on
 * x86-64 (always present there), 8-byte SWAR elsewhere; the tail is done
 * byte by byte with the tables, so nothing is read past end. */

#define ONES 0x0101010101010101ull
#define HIGHS (ONES * 0x80)

/* str_stop class: control characters, '"', '\\', bytes >= 0x80. */
static inline const uc *find_str_stop(const uc *p, const uc *end)
{
#if defined(HAVE_SSE2)
    const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\'), sp = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed compare: 0x80..0xFF are negative, so "< 0x20" catches them too */
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, b)),
                                 _mm_cmplt_epi8(v, sp));
        unsigned bits = (unsigned)_mm_movemask_epi8(m);
        if (bits) return p + __builtin_ctz(bits);
        p += 16;
    }
#elif defined(HAVE_SWAR)
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        /* borrows only travel towards higher bytes, so the lowest flagged
         * byte is a real stop byte */
        uint64_t m = ((w - ONES * 0x20) | ((w ^ (ONES * '"')) - ONES) |
                      ((w ^ (ONES * '\\')) - ONES) | w) & HIGHS;
        if (m) return p + ((unsigned)__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && !str_stop[*p]) p++;
    return p;
}

/* '"' or '\\' (inside a validated string). */
static inline const uc *find_quote_bs(const uc *p, const uc *end)
{
#if defined(HAVE_SSE2)
    const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\');
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned bits = (unsigned)_mm_movemask_epi8(
            _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, b)));
        if (bits) return p + __builtin_ctz(bits);
        p += 16;
    }
#elif defined(HAVE_SWAR)
    while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t x = w ^ (ONES * '"'), y = w ^ (ONES * '\\');
        uint64_t m = (((x - ONES) & ~x) | ((y - ONES) & ~y)) & HIGHS;
        if (m) return p + ((unsigned)__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\') p++;
    return p;
}

/* Length (1..4) of the well-formed UTF-8 sequence starting at p (p < end),
 * or minus the length of its maximal ill-formed subpart (Unicode 3.9,
 * "best practice" for U+FFFD substitution).  Rejects overlongs, encoded
 * surrogates and code points above U+10FFFF. */
static int utf8_seq(const uc *p, const uc *end)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    int need;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xE1 && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else return -1;
    size_t avail = (size_t)(end - p);
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= avail) return -i;
        unsigned b = p[i];
        if (b < lo || b > hi) return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

/* --------------------------------------------------------------- validate */

static int fail(struct json_error *err, size_t off, const char *msg)
{
    if (err) {
        err->offset = off;
        err->message = msg;
    }
    return -1;
}

/* Scan a string body; p is just past the opening quote.  Returns the pointer
 * just past the closing quote, or NULL with *err filled. */
static const uc *scan_string(const uc *p, const uc *end, const uc *base, struct json_error *err)
{
    for (;;) {
        p = find_str_stop(p, end);
        if (p == end) {
            fail(err, (size_t)(end - base), "unterminated string");
            return NULL;
        }
        uc c = *p;
        if (c == '"') return p + 1;
        if (c == '\\') {
            if (end - p < 2) {
                fail(err, (size_t)(end - base), "unterminated string");
                return NULL;
            }
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                continue;
            case 'u':
                break;
            default:
                fail(err, (size_t)(p + 1 - base), "invalid escape");
                return NULL;
            }
            /* \uXXXX */
            unsigned cp = 0;
            for (int i = 2; i < 6; i++) {
                int h = p + i < end ? hexval(p[i]) : -1;
                if (h < 0) {
                    fail(err, (size_t)((p + i < end ? p + i : end) - base), "invalid \\u escape");
                    return NULL;
                }
                cp = cp << 4 | (unsigned)h;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* must be followed by a \u escape of a low surrogate */
                if (end - p >= 8 && p[6] == '\\' && p[7] == 'u') {
                    unsigned lo = 0;
                    for (int i = 8; i < 12; i++) {
                        int h = p + i < end ? hexval(p[i]) : -1;
                        if (h < 0) {
                            fail(err, (size_t)((p + i < end ? p + i : end) - base),
                                 "invalid \\u escape");
                            return NULL;
                        }
                        lo = lo << 4 | (unsigned)h;
                    }
                    if (lo >= 0xDC00 && lo <= 0xDFFF) {
                        p += 12;
                        continue;
                    }
                }
                fail(err, (size_t)(p - base), "unpaired surrogate");
                return NULL;
            }
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(err, (size_t)(p - base), "unpaired surrogate");
                return NULL;
            }
            p += 6;
            continue;
        }
        if (c < 0x20) {
            fail(err, (size_t)(p - base), "control character in string");
            return NULL;
        }
        int k = utf8_seq(p, end);
        if (k < 0) {
            fail(err, (size_t)(p - base), "invalid UTF-8");
            return NULL;
        }
        p += k;
    }
}

/* Scan a number starting at p (a '-' or a digit). */
static const uc *scan_number(const uc *p, const uc *end, const uc *base, struct json_error *err)
{
    if (*p == '-') {
        p++;
        if (p == end || !is_digit(*p)) {
            fail(err, (size_t)(p - base), p == end ? "unexpected end of input" : "expected digit");
            return NULL;
        }
    }
    if (*p == '0') {
        p++;
        if (p < end && is_digit(*p)) {
            fail(err, (size_t)(p - base), "leading zero");
            return NULL;
        }
    } else {
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (p == end || !is_digit(*p)) {
            fail(err, (size_t)(p - base), "expected digit after '.'");
            return NULL;
        }
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p | 0x20) == 'e') {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p == end || !is_digit(*p)) {
            fail(err, (size_t)(p - base), "expected digit in exponent");
            return NULL;
        }
        while (p < end && is_digit(*p)) p++;
    }
    return p;
}

static enum json_type type_of(uc c)
{
    switch (c) {
    case '{': return JSON_OBJECT;
    case '[': return JSON_ARRAY;
    case '"': return JSON_STRING;
    case 't': return JSON_TRUE;
    case 'f': return JSON_FALSE;
    case 'n': return JSON_NULL;
    default: return (c == '-' || is_digit(c)) ? JSON_NUMBER : JSON_INVALID;
    }
}

static int bad_literal(const uc *p, const uc *end, const uc *base, const char *lit,
                       struct json_error *err)
{
    size_t i = 0;
    while (lit[i] && p + i < end && p[i] == (uc)lit[i]) i++;
    return fail(err, (size_t)(p + i - base), p + i == end ? "unexpected end of input" : "invalid literal");
}

int json_validate(const char *s, size_t n, struct json_span *root, struct json_error *err)
{
    if (root) {
        root->p = NULL;
        root->len = 0;
        root->type = JSON_INVALID;
    }
    if (!s) return fail(err, 0, "unexpected end of input");

    const uc *const base = (const uc *)s, *const end = base + n;
    const uc *p = skip_ws(base, end);
    const uc *const vstart = p;
    uint64_t stack[(JSON_MAX_DEPTH + 63) / 64] = {0};
    unsigned depth = 0;

value:
    if (p == end) return fail(err, n, "unexpected end of input");
    switch (*p) {
    case '{':
        if (depth >= JSON_MAX_DEPTH) return fail(err, (size_t)(p - base), "nesting too deep");
        stack[depth >> 6] |= 1ull << (depth & 63);
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == '}') {
            p++;
            depth--;
            goto after;
        }
        goto member;
    case '[':
        if (depth >= JSON_MAX_DEPTH) return fail(err, (size_t)(p - base), "nesting too deep");
        stack[depth >> 6] &= ~(1ull << (depth & 63));
        depth++;
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']') {
            p++;
            depth--;
            goto after;
        }
        goto value;
    case '"':
        p = scan_string(p + 1, end, base, err);
        if (!p) return -1;
        goto after;
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) { p += 4; goto after; }
        return bad_literal(p, end, base, "true", err);
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) { p += 5; goto after; }
        return bad_literal(p, end, base, "false", err);
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) { p += 4; goto after; }
        return bad_literal(p, end, base, "null", err);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        p = scan_number(p, end, base, err);
        if (!p) return -1;
        goto after;
    default:
        return fail(err, (size_t)(p - base), "unexpected character");
    }

member: /* an object key is expected at p */
    if (p == end) return fail(err, n, "unexpected end of input");
    if (*p != '"')
        return fail(err, (size_t)(p - base), *p == '}' ? "trailing comma" : "expected string key");
    p = scan_string(p + 1, end, base, err);
    if (!p) return -1;
    p = skip_ws(p, end);
    if (p == end) return fail(err, n, "unexpected end of input");
    if (*p != ':') return fail(err, (size_t)(p - base), "expected ':'");
    p = skip_ws(p + 1, end);
    goto value;

after: /* a value just ended at p */
    if (depth == 0) goto done;
    p = skip_ws(p, end);
    if (p == end) return fail(err, n, "unexpected end of input");
    if (stack[(depth - 1) >> 6] >> ((depth - 1) & 63) & 1) {
        if (*p == ',') {
            p = skip_ws(p + 1, end);
            goto member;
        }
        if (*p == '}') {
            p++;
            depth--;
            goto after;
        }
        return fail(err, (size_t)(p - base), "expected ',' or '}'");
    }
    if (*p == ',') {
        p = skip_ws(p + 1, end);
        if (p < end && *p == ']') return fail(err, (size_t)(p - base), "trailing comma");
        goto value;
    }
    if (*p == ']') {
        p++;
        depth--;
        goto after;
    }
    return fail(err, (size_t)(p - base), "expected ',' or ']'");

done:;
    const uc *vend = p;
    p = skip_ws(p, end);
    if (p != end) return fail(err, (size_t)(p - base), "trailing characters");
    if (root) {
        root->p = (const char *)vstart;
        root->len = (size_t)(vend - vstart);
        root->type = type_of(*vstart);
    }
    return 0;
}

/* ---------------------------------------------------- validated-text walks */

/* p at an opening quote; returns just past the closing quote (or end). */
static const uc *skip_str(const uc *p, const uc *end)
{
    p++;
    for (;;) {
        p = find_quote_bs(p, end);
        if (p >= end) return end;
        if (*p == '"') return p + 1;
        p += 2; /* backslash: skip the escaped byte (a \\u's hex digits are plain) */
    }
}

/* p at the first byte of a value; returns just past it (or end). */
static const uc *skip_val(const uc *p, const uc *end)
{
    if (p >= end) return end;
    switch (*p) {
    case '"':
        return skip_str(p, end);
    case '{':
    case '[': {
        size_t depth = 0;
        while (p < end) {
            /* structural gaps are short: bytes beat vectors here */
            while (p < end && !skip_stop[*p]) p++;
            if (p == end) break;
            uc c = *p;
            if (c == '"') {
                p = skip_str(p, end);
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (--depth == 0) {
                return p + 1;
            }
            p++;
        }
        return end;
    }
    default:
        while (p < end && !scalar_end[*p]) p++;
        return p;
    }
}

static void set_span(struct json_span *sp, const uc *p, size_t len, enum json_type t)
{
    if (sp) {
        sp->p = (const char *)p;
        sp->len = len;
        sp->type = t;
    }
}

static bool is_container(const struct json_span *c)
{
    return c && c->p && c->len >= 2 && (c->type == JSON_OBJECT || c->type == JSON_ARRAY);
}

/* One step of iteration.  *pp is the position after the previous element
 * (or NULL before the first); end is the container's closing bracket. */
static bool step(const uc *base, const uc *end, bool obj, const uc **pp, const uc **kp,
                 size_t *klen, const uc **vp, size_t *vlen)
{
    const uc *p = *pp;
    if (!p) {
        p = skip_ws(base + 1, end);
    } else {
        p = skip_ws(p, end);
        if (p >= end || *p != ',') return false;
        p = skip_ws(p + 1, end);
    }
    if (p >= end) return false;
    if (obj) {
        if (*p != '"') return false;
        const uc *k = p;
        p = skip_str(p, end);
        *kp = k;
        *klen = (size_t)(p - k);
        p = skip_ws(p, end);
        if (p >= end || *p != ':') return false;
        p = skip_ws(p + 1, end);
        if (p >= end) return false;
    }
    const uc *v = p;
    p = skip_val(p, end);
    *vp = v;
    *vlen = (size_t)(p - v);
    *pp = p;
    return true;
}

bool json_next(const struct json_span *container, size_t *it, struct json_span *key,
               struct json_span *val)
{
    if (!is_container(container) || !it || *it >= container->len) return false;
    const uc *base = (const uc *)container->p, *end = base + container->len - 1;
    bool obj = container->type == JSON_OBJECT;
    const uc *p = *it ? base + *it : NULL, *k = NULL, *v;
    size_t klen = 0, vlen;
    if (!step(base, end, obj, &p, &k, &klen, &v, &vlen)) return false;
    *it = (size_t)(p - base);
    if (obj) set_span(key, k, klen, JSON_STRING);
    else set_span(key, NULL, 0, JSON_INVALID);
    set_span(val, v, vlen, vlen ? type_of(*v) : JSON_INVALID);
    return true;
}

size_t json_count(const struct json_span *container)
{
    if (!is_container(container)) return 0;
    const uc *base = (const uc *)container->p, *end = base + container->len - 1;
    bool obj = container->type == JSON_OBJECT;
    const uc *p = NULL, *k, *v;
    size_t klen, vlen, n = 0;
    while (step(base, end, obj, &p, &k, &klen, &v, &vlen)) n++;
    return n;
}

bool json_index(const struct json_span *arr, size_t i, struct json_span *out)
{
    if (!is_container(arr) || arr->type != JSON_ARRAY) return false;
    const uc *base = (const uc *)arr->p, *end = base + arr->len - 1;
    const uc *p = NULL, *k, *v;
    size_t klen, vlen, n = 0;
    while (step(base, end, false, &p, &k, &klen, &v, &vlen)) {
        if (n++ == i) {
            set_span(out, v, vlen, vlen ? type_of(*v) : JSON_INVALID);
            return true;
        }
    }
    return false;
}

/* --------------------------------------------------------------- strings */

/* Encode a code point as UTF-8 into out (4 bytes room); returns length. */
static size_t put_utf8(unsigned cp, uc *out)
{
    if (cp < 0x80) {
        out[0] = (uc)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uc)(0xC0 | cp >> 6);
        out[1] = (uc)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uc)(0xE0 | cp >> 12);
        out[1] = (uc)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uc)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uc)(0xF0 | cp >> 18);
    out[1] = (uc)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uc)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uc)(0x80 | (cp & 0x3F));
    return 4;
}

static bool hex4(const uc *p, const uc *end, unsigned *cp)
{
    if (end - p < 4) return false;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return false;
        v = v << 4 | (unsigned)h;
    }
    *cp = v;
    return true;
}

/* Decode the escape at p (p[0] == '\\', p < end) into out (4 bytes room).
 * Sets *olen; returns the number of input bytes consumed.  Malformed input
 * (never seen after validation) decodes as U+FFFD. */
static size_t decode_escape(const uc *p, const uc *end, uc *out, size_t *olen)
{
    if (end - p < 2) {
        *olen = put_utf8(0xFFFD, out);
        return (size_t)(end - p);
    }
    uc c;
    switch (p[1]) {
    case '"': c = '"'; break;
    case '\\': c = '\\'; break;
    case '/': c = '/'; break;
    case 'b': c = '\b'; break;
    case 'f': c = '\f'; break;
    case 'n': c = '\n'; break;
    case 'r': c = '\r'; break;
    case 't': c = '\t'; break;
    case 'u': {
        unsigned cp, lo;
        if (!hex4(p + 2, end, &cp)) {
            *olen = put_utf8(0xFFFD, out);
            return 2;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 12 && p[6] == '\\' && p[7] == 'u' &&
            hex4(p + 8, end, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
            *olen = put_utf8(0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00), out);
            return 12;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
        *olen = put_utf8(cp, out);
        return 6;
    }
    default:
        *olen = put_utf8(0xFFFD, out);
        return 2;
    }
    out[0] = c;
    *olen = 1;
    return 2;
}

static bool is_string(const struct json_span *v)
{
    return v && v->p && v->len >= 2 && v->p[0] == '"';
}

/* Compare the raw string body [s, end) decoded against lit[0..litlen). */
static bool body_eq(const uc *s, const uc *end, const char *lit, size_t litlen)
{
    size_t j = 0;
    while (s < end) {
        const uc *bs = memchr(s, '\\', (size_t)(end - s));
        size_t run = (size_t)((bs ? bs : end) - s);
        if (run > litlen - j || memcmp(s, lit + j, run) != 0) return false;
        j += run;
        s += run;
        if (!bs) break;
        uc tmp[4];
        size_t olen;
        s += decode_escape(s, end, tmp, &olen);
        if (olen > litlen - j || memcmp(tmp, lit + j, olen) != 0) return false;
        j += olen;
    }
    return j == litlen;
}

bool json_str_eq(const struct json_span *v, const char *lit)
{
    if (!is_string(v) || !lit) return false;
    return body_eq((const uc *)v->p + 1, (const uc *)v->p + v->len - 1, lit, strlen(lit));
}

bool json_get(const struct json_span *obj, const char *key, struct json_span *out)
{
    if (!is_container(obj) || obj->type != JSON_OBJECT || !key) return false;
    const uc *base = (const uc *)obj->p, *end = base + obj->len - 1;
    const size_t keylen = strlen(key);
    const bool key_bs = memchr(key, '\\', keylen) != NULL;
    const uc *p = NULL, *k, *v, *found = NULL;
    size_t klen = 0, vlen = 0, flen = 0;
    while (step(base, end, true, &p, &k, &klen, &v, &vlen)) {
        if (klen < 2) continue;
        const uc *kb = k + 1;
        size_t kn = klen - 2;
        bool eq;
        if (kn == keylen)
            /* same length: equal only if the raw bytes are and hold no
             * escape (every escape decodes shorter than it is written) */
            eq = !key_bs && memcmp(kb, key, kn) == 0;
        else if (kn > keylen && memchr(kb, '\\', kn))
            eq = body_eq(kb, kb + kn, key, keylen);
        else
            eq = false;
        if (eq) {
            found = v;
            flen = vlen;
        }
    }
    if (!found) return false;
    set_span(out, found, flen, flen ? type_of(*found) : JSON_INVALID);
    return true;
}

long json_str_unescape(const struct json_span *v, char *out, size_t cap)
{
    if (!is_string(v) || !out || cap == 0) return -1;
    const uc *s = (const uc *)v->p + 1, *end = (const uc *)v->p + v->len - 1;
    size_t o = 0, room = cap - 1;
    while (s < end) {
        const uc *bs = memchr(s, '\\', (size_t)(end - s));
        size_t run = (size_t)((bs ? bs : end) - s);
        if (run > room - o) return -1;
        memcpy(out + o, s, run);
        o += run;
        s += run;
        if (!bs) break;
        uc tmp[4];
        size_t olen;
        s += decode_escape(s, end, tmp, &olen);
        if (olen > room - o) return -1;
        memcpy(out + o, tmp, olen);
        o += olen;
    }
    out[o] = '\0';
    return (long)o;
}

size_t json_str_rawlen(const struct json_span *v)
{
    return is_string(v) ? v->len - 2 : 0;
}

/* ---------------------------------------------------------------- values */

bool json_is_true(const struct json_span *v)
{
    return v && v->p && v->type == JSON_TRUE;
}

bool json_to_i64(const struct json_span *v, int64_t *out)
{
    if (!v || !v->p || v->type != JSON_NUMBER || v->len == 0) return false;
    const uc *p = (const uc *)v->p, *end = p + v->len;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    if (p == end) return false;
    /* magnitude limit: 2^63 - 1, or 2^63 when negative */
    const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    uint64_t m = 0;
    for (; p < end; p++) {
        if (!is_digit(*p)) return false; /* '.', 'e', 'E' or garbage */
        unsigned d = (unsigned)(*p - '0');
        if (m > (limit - d) / 10) return false;
        m = m * 10 + d;
    }
    if (out) {
        if (neg) *out = m == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)m;
        else *out = (int64_t)m;
    }
    return true;
}

/* Note: strtod honours LC_NUMERIC; the gateway never calls setlocale, so the
 * decimal point is always '.'. */
bool json_to_double(const struct json_span *v, double *out)
{
    if (!v || !v->p || v->type != JSON_NUMBER || v->len == 0) return false;
    char small[128], *buf = small;
    if (v->len >= sizeof small) {
        buf = malloc(v->len + 1);
        if (!buf) return false;
    }
    memcpy(buf, v->p, v->len);
    buf[v->len] = '\0';
    char *endp;
    errno = 0;
    double d = strtod(buf, &endp);
    bool ok = endp == buf + v->len && !(errno == ERANGE && (d > 1.0 || d < -1.0));
    if (buf != small) free(buf);
    if (ok && out) *out = d;
    return ok;
}

/* ----------------------------------------------------------------- escape */

long json_escape(const char *s, size_t len, char *out, size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    if (!s) {
        if (len) return -1;
        s = "";
    }
    const uc *p = (const uc *)s, *end = p + len;
    size_t o = 0;
    if (!out || cap < 2) return -1;
    out[o++] = '"';
    while (p < end) {
        const uc *q = p;
        while (q < end && !str_stop[*q]) q++;
        size_t run = (size_t)(q - p);
        if (run > cap - o) return -1;
        memcpy(out + o, p, run);
        o += run;
        p = q;
        if (p == end) break;
        uc c = *p;
        if (c >= 0x80) {
            int k = utf8_seq(p, end);
            if (k > 0) {
                if ((size_t)k > cap - o) return -1;
                memcpy(out + o, p, (size_t)k);
                o += (size_t)k;
                p += k;
            } else {
                if (3 > cap - o) return -1;
                memcpy(out + o, "\xEF\xBF\xBD", 3);
                o += 3;
                p += -k;
            }
            continue;
        }
        char e = 0;
        switch (c) {
        case '"': e = '"'; break;
        case '\\': e = '\\'; break;
        case '\b': e = 'b'; break;
        case '\f': e = 'f'; break;
        case '\n': e = 'n'; break;
        case '\r': e = 'r'; break;
        case '\t': e = 't'; break;
        default: break;
        }
        if (e) {
            if (2 > cap - o) return -1;
            out[o++] = '\\';
            out[o++] = e;
        } else {
            if (6 > cap - o) return -1;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[c >> 4];
            out[o + 5] = hex[c & 15];
            o += 6;
        }
        p++;
    }
    if (o >= cap) return -1;
    out[o++] = '"';
    if (o < cap) out[o] = '\0'; /* convenience: NUL-terminate when there is room */
    return (long)o;
}

int json_buf_str(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    char *w = buf_reserve(b, n * 6 + 3);
    long el = w ? json_escape(s ? s : "", n, w, n * 6 + 3) : -1;
    if (el < 0)
        return -1;
    b->len += (size_t)el;
    return 0;
}

int json_buf_num(struct buf *b, double x)
{
    return isfinite(x) ? buf_printf(b, "%.6g", x) : buf_append_str(b, "null");
}
