/* compare.c — answer comparison for shadow pairs (see compare.h for what
 * every metric means and the choices behind it).
 *
 * Everything here streams over the caller's bytes:
 *   - normalising is a view, not a copy: norm_bounds() finds where the
 *     normalised text starts and ends (leading whitespace, trailing
 *     whitespace and sentence punctuation cut off) and norm_next() yields
 *     its bytes one at a time, lowercased, whitespace runs as one space.
 *     exact compares two such streams; compare_normalise() writes one out.
 *   - tokens are hashed straight from the text (FNV-1a over the lowercased
 *     bytes) into a capped array per side.
 *   - edit distance and LCS come out of one bit-parallel pass over those
 *     arrays (64 DP cells per word operation), after the common prefix and
 *     suffix are taken off.
 *   - JSON shapes and tool-call signatures are 64-bit hashes that combine
 *     object members by addition, so member order does not matter and no
 *     tree has to be built or sorted.
 * The only allocations are the token arrays, the bit-parallel work area
 * (a token map, match masks and one carry byte per column), decoded tool
 * arguments and (rarely) a long escaped key; each is freed before return.
 */
#include "compare.h"

#include "json.h"
#include "rand.h"

#include <stdlib.h>
#include <string.h>

typedef unsigned char uc;

/* Refusal phrases used when the config gives none.  They are only defaults:
 * cmp_opts.refusal_patterns (from the config) replaces the whole list. */
static const char *const default_refusals[] = {
    "i can't help with",
    "i cannot help with",
    "i can't assist",
    "i cannot assist",
    "i'm sorry, but i can",
    "i am sorry, but i can",
    "i won't be able to",
    "as an ai language model",
};

/* ------------------------------------------------------------ characters */

static inline bool is_ws(uc c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static inline uc lower(uc c) { return c >= 'A' && c <= 'Z' ? (uc)(c + 32) : c; }

/* stripped from the end of the whole text when normalising */
static inline bool is_tail_punct(uc c)
{
    return c == '.' || c == ',' || c == ';' || c == ':' || c == '!' || c == '?';
}

/* bytes that make up word tokens; UTF-8 sequences stay inside words */
static inline bool is_word(uc c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c == '_' || c >= 0x80;
}

/* an order-sensitive combination of a tag or hash with another hash */
static uint64_t mix2(uint64_t a, uint64_t b) { return rnd_mix64(a * RND_GOLDEN ^ rnd_mix64(b)); }

static bool str_eq_null(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

/* An answer's text; NULL is the empty text. */
static const uc *text_of(const char *s, size_t n, size_t *len)
{
    *len = s ? n : 0;
    return s ? (const uc *)s : (const uc *)"";
}

/* ----------------------------------------------------------- normalising */

struct norm {
    const uc *p, *end;
};

/* The normalised text's extent: leading whitespace and a trailing run of
 * whitespace and sentence punctuation are outside it. */
static struct norm norm_bounds(const char *s, size_t n)
{
    struct norm it;
    it.p = text_of(s, n, &n);
    it.end = it.p + n;
    while (it.end > it.p && (is_ws(it.end[-1]) || is_tail_punct(it.end[-1]))) it.end--;
    while (it.p < it.end && is_ws(*it.p)) it.p++;
    return it;
}

/* The next normalised byte, or -1 at the end.  A whitespace run inside the
 * bounds always ends before it.end (the bounds end on a non-space). */
static int norm_next(struct norm *it)
{
    if (it->p >= it->end) return -1;
    if (is_ws(*it->p)) {
        while (is_ws(*it->p)) it->p++;
        return ' ';
    }
    return lower(*it->p++);
}

size_t compare_normalise(const char *s, size_t n, char *out, size_t cap)
{
    struct norm it = norm_bounds(s, n);
    size_t len = 0;
    int c;
    while ((c = norm_next(&it)) >= 0) {
        if (len + 1 < cap) out[len] = (char)c;
        len++;
    }
    if (cap) out[len < cap ? len : cap - 1] = '\0';
    return len;
}

static bool norm_equal(const char *a, size_t na, const char *b, size_t nb)
{
    struct norm x = norm_bounds(a, na), y = norm_bounds(b, nb);
    int c;
    do {
        c = norm_next(&x);
        if (c != norm_next(&y)) return false;
    } while (c >= 0);
    return true;
}

/* ---------------------------------------------------------------- tokens */

size_t compare_tokens(const char *s, size_t n, uint64_t *out, size_t max)
{
    struct norm it = norm_bounds(s, n);
    const uc *p = it.p, *e = it.end;
    size_t count = 0;
    while (p < e) {
        if (is_ws(*p)) {
            p++;
            continue;
        }
        uint64_t h = RND_FNV1A64_INIT;
        if (is_word(*p)) {
            for (; p < e && is_word(*p); p++) h = rnd_fnv1a64_byte(h, lower(*p));
        } else {
            h = rnd_fnv1a64_byte(h, *p++);
        }
        if (count < max) out[count] = h;
        count++;
    }
    return count;
}

/* ------------------------------------------------- edit distance and LCS */

/* Both metrics run bit-parallel over the DP matrix, 64 rows per machine
 * word, and give exactly the numbers of the plain O(n*m) DP (which the unit
 * test and the fuzz harness keep as their reference, tests/unit/compare_ref.h):
 *   - Levenshtein: Myers 1999 as Hyyro formulated it, in its blocked form:
 *     a block of 64 rows keeps the vertical deltas (+1 / -1 bit vectors Pv,
 *     Mv) of one column, and passes the horizontal delta of its last row
 *     (+1, 0, -1) down to the block below at the same column;
 *   - LCS: Hyyro 2004 (as Allison-Dix / Crochemore et al.), V' = (V + (V &
 *     M)) | (V & ~M) over the whole column, zeros of V counting the LCS; the
 *     multi-word addition's carry is what a block passes down.
 * Since a block only needs what the block above produced in the same
 * column, the matrix is walked block by block, each over every column,
 * with one byte per column carrying both metrics' deltas down.  So the
 * match masks are only ever needed for the current block's 64 tokens: one
 * word per distinct pattern token, set and cleared per block, instead of a
 * ceil(m/64)-word vector per distinct token.  Tokens are 64-bit hashes, an
 * alphabet too large to index: a small open-addressing map gives every
 * distinct pattern token a dense id, and each text token is looked up once
 * (a token absent from the pattern gets an id whose mask is always 0). */

#define NO_ID UINT32_MAX

/* carry byte of one column between blocks */
enum { CARRY_HP = 1, CARRY_HM = 2, CARRY_LCS = 4 };

static size_t popcount64(uint64_t x)
{
    size_t n = 0;
    for (; x; x &= x - 1) n++;
    return n;
}

/* Levenshtein distance and LCS length of x[0..nx) (the pattern: rows) and
 * y[0..ny) (the text: columns), nx, ny >= 1.  Time O(ceil(nx/64) * ny);
 * memory 36 to 60 bytes per pattern token (the map is a quarter to half
 * full) and 5 per text token, one block, freed before return.  -1 if memory ran out. */
static int bit_parallel(const uint64_t *x, size_t nx, const uint64_t *y, size_t ny, size_t *lev,
                        size_t *lcs)
{
    /* at most half full, so a probe ends soon */
    int bits = 4;
    while (bits < 62 && ((size_t)1 << bits) < 2 * nx) bits++;
    size_t slots = (size_t)1 << bits, shift = (size_t)(64 - bits);
    if (nx > SIZE_MAX / 64 || ny > SIZE_MAX / 64 || slots > SIZE_MAX / 64) return -1;
    size_t bytes = slots * sizeof(uint64_t) + (nx + 1) * sizeof(uint64_t) +
                   slots * sizeof(uint32_t) + nx * sizeof(uint32_t) + ny * sizeof(uint32_t) + ny;
    char *mem = malloc(bytes);
    if (!mem) return -1;
    /* 8-byte arrays first, then 4-byte, then bytes: every one aligned */
    uint64_t *keys = (uint64_t *)mem;         /* slot -> token hash */
    uint64_t *peq = keys + slots;             /* id -> match mask in the current block */
    uint32_t *ids = (uint32_t *)(peq + nx + 1); /* slot -> id, NO_ID when empty */
    uint32_t *px = ids + slots;               /* pattern position -> id */
    uint32_t *ty = px + nx;                   /* text position -> id (nx: not in the pattern) */
    uc *carry = (uc *)(ty + ny);

    memset(ids, 0xFF, slots * sizeof *ids);
    memset(peq, 0, (nx + 1) * sizeof *peq);
    uint32_t nid = 0;
    for (size_t i = 0; i < nx; i++) {
        size_t s = (size_t)(rnd_mix64(x[i]) >> shift);
        while (ids[s] != NO_ID && keys[s] != x[i]) s = (s + 1) & (slots - 1);
        if (ids[s] == NO_ID) {
            keys[s] = x[i];
            ids[s] = nid++;
        }
        px[i] = ids[s];
    }
    for (size_t j = 0; j < ny; j++) {
        size_t s = (size_t)(rnd_mix64(y[j]) >> shift);
        while (ids[s] != NO_ID && keys[s] != y[j]) s = (s + 1) & (slots - 1);
        ty[j] = ids[s] == NO_ID ? (uint32_t)nx : ids[s];
        /* row 0 of the edit-distance matrix is 0, 1, 2, ...: every
         * horizontal delta above the first block is +1; no LCS carry */
        carry[j] = CARRY_HP;
    }

    size_t zeros = 0;
    for (size_t base = 0; base < nx; base += 64) {
        size_t rows = nx - base < 64 ? nx - base : 64;
        unsigned top = (unsigned)(rows - 1); /* the block's last real row */
        for (size_t i = 0; i < rows; i++) peq[px[base + i]] |= (uint64_t)1 << i;
        /* column 0: D[i][0] = i, all vertical deltas +1; LCS row all ones */
        uint64_t pv = ~(uint64_t)0, mv = 0, v = ~(uint64_t)0;
        for (size_t j = 0; j < ny; j++) {
            uint64_t eq = peq[ty[j]];
            unsigned c = carry[j];
            uint64_t hpin = c & CARRY_HP, hmin = (c & CARRY_HM) >> 1, cin = (c & CARRY_LCS) >> 2;
            /* Levenshtein (Myers's advance_block, branch-free: a -1 coming
             * in acts as a match in row 0) */
            uint64_t xv = eq | mv, e = eq | hmin;
            uint64_t xh = (((e & pv) + pv) ^ pv) | e;
            uint64_t ph = mv | ~(xh | pv), mh = pv & xh;
            unsigned out = (unsigned)((ph >> top) & 1) | (unsigned)((mh >> top) & 1) << 1;
            ph = ph << 1 | hpin;
            mh = mh << 1 | hmin;
            pv = mh | ~(xv | ph);
            mv = ph & xv;
            /* LCS: u is a subset of v, so v - u has no borrow; the sum's
             * carry out of bit 63 goes to the next block */
            uint64_t u = v & eq, s = v + u, s2 = s + cin;
            unsigned cout = (unsigned)(s < v) | (unsigned)(s2 < s);
            v = s2 | (v - u);
            carry[j] = (uc)(out | cout << 2);
        }
        uint64_t valid = rows == 64 ? ~(uint64_t)0 : ((uint64_t)1 << rows) - 1;
        zeros += popcount64(~v & valid);
        for (size_t i = 0; i < rows; i++) peq[px[base + i]] = 0;
    }
    /* D[nx][ny] = D[nx][0] + the last row's horizontal deltas */
    size_t d = nx;
    for (size_t j = 0; j < ny; j++) {
        if (carry[j] & CARRY_HP) d++;
        else if (carry[j] & CARRY_HM) d--;
    }
    *lev = d;
    *lcs = zeros;
    free(mem);
    return 0;
}

int compare_distances(const uint64_t *a, size_t na, const uint64_t *b, size_t nb, size_t *lev,
                      size_t *lcs)
{
    /* Both metrics are unchanged by taking off a common prefix and suffix
     * (the LCS then gains their length): near-identical answers, the usual
     * A/A case, cost linear time. */
    size_t pre = 0, suf = 0;
    while (pre < na && pre < nb && a[pre] == b[pre]) pre++;
    while (suf < na - pre && suf < nb - pre && a[na - 1 - suf] == b[nb - 1 - suf]) suf++;
    size_t ma = na - pre - suf, mb = nb - pre - suf;
    *lev = ma > mb ? ma : mb;
    *lcs = pre + suf;
    if (ma == 0 || mb == 0) return 0;
    /* both are symmetric: the pattern is the side with fewer block steps */
    size_t cost_a = (ma + 63) / 64 * mb, cost_b = (mb + 63) / 64 * ma, l, c;
    int rc = cost_a <= cost_b ? bit_parallel(a + pre, ma, b + pre, mb, &l, &c)
                              : bit_parallel(b + pre, mb, a + pre, ma, &l, &c);
    if (rc != 0) return -1;
    *lev = l;
    *lcs += c;
    return 0;
}

static double edit_sim_of(size_t lev, size_t na, size_t nb)
{
    size_t m = na > nb ? na : nb;
    return m ? 1.0 - (double)lev / (double)m : 1.0;
}

/* F1 = 2PR/(P+R) with P = lcs/nb, R = lcs/na simplifies to 2 lcs/(na+nb) */
static double rouge_of(size_t lcs, size_t na, size_t nb)
{
    return na + nb ? 2.0 * (double)lcs / ((double)na + (double)nb) : 1.0;
}

double compare_edit_sim(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t lev, lcs;
    if (compare_distances(a, na, b, nb, &lev, &lcs) != 0) return -1;
    return edit_sim_of(lev, na, nb);
}

double compare_rouge_l(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t lev, lcs;
    if (compare_distances(a, na, b, nb, &lev, &lcs) != 0) return -1;
    return rouge_of(lcs, na, nb);
}

/* --------------------------------------------------------------- refusal */

/* Does pattern pat match at s?  A space matches a whitespace run, an
 * apostrophe also matches U+2019 (E2 80 99), letters ignore ASCII case. */
static bool match_at(const uc *s, const uc *e, const uc *pat)
{
    while (*pat) {
        if (s >= e) return false;
        if (*pat == ' ') {
            if (!is_ws(*s)) return false;
            while (s < e && is_ws(*s)) s++;
            while (*pat == ' ') pat++;
            continue;
        }
        if (*pat == '\'' && e - s >= 3 && s[0] == 0xE2 && s[1] == 0x80 && s[2] == 0x99) {
            s += 3;
            pat++;
            continue;
        }
        if (lower(*s) != lower(*pat)) return false;
        s++;
        pat++;
    }
    return true;
}

bool compare_is_refusal(const char *s, size_t n, const struct cmp_opts *o)
{
    if (!s || !n) return false;
    const char *const *pats = default_refusals;
    size_t npats = sizeof default_refusals / sizeof default_refusals[0];
    if (o && o->refusal_patterns) {
        pats = o->refusal_patterns;
        npats = o->nrefusal;
    }
    /* The bytes a match can start with (the union over the patterns, as
     * match_at tests a pattern's first byte): the scan only tries the
     * patterns there, instead of every pattern at every byte, which made
     * this the largest part of comparing two long answers. */
    bool start[256] = {false}, any = false;
    for (size_t k = 0; k < npats; k++) {
        const uc *pat = (const uc *)pats[k];
        if (!pat || !*pat) continue;
        any = true;
        for (unsigned c = 0; c < 256; c++)
            if (*pat == ' ' ? is_ws((uc)c) : lower((uc)c) == lower(*pat) || (*pat == '\'' && c == 0xE2))
                start[c] = true;
    }
    if (!any) return false;
    const uc *p = (const uc *)s, *e = p + n;
    for (const uc *q = p; q < e; q++) {
        if (!start[*q]) continue;
        for (size_t k = 0; k < npats; k++) {
            const uc *pat = (const uc *)pats[k];
            if (pat && *pat && match_at(q, e, pat)) return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ JSON */

/* Hash of a string span's decoded content ("\u0061" and "a" hash alike).
 * Returns -1 if memory ran out. */
static int str_hash(const struct json_span *v, uint64_t *out)
{
    const char *p = v->p + 1;
    size_t n = v->len - 2;
    if (!memchr(p, '\\', n)) {
        *out = rnd_fnv1a64(RND_FNV1A64_INIT, p, n);
        return 0;
    }
    char small[256], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return -1;
    long k = json_str_unescape(v, buf, n + 1); /* escapes only shrink */
    *out = rnd_fnv1a64(RND_FNV1A64_INIT, buf, k > 0 ? (size_t)k : 0);
    if (buf != small) free(buf);
    return 0;
}

/* The JSON object or array an answer's text holds, after trimming
 * whitespace and an optional ```json / ``` fence. */
static bool text_json(const char *s, size_t n, struct json_span *root)
{
    const uc *p = text_of(s, n, &n), *e = p + n;
    while (p < e && is_ws(*p)) p++;
    while (e > p && is_ws(e[-1])) e--;
    if (e - p >= 3 && memcmp(p, "```", 3) == 0) {
        const uc *q = p + 3;
        if (e - q >= 4 && lower(q[0]) == 'j' && lower(q[1]) == 's' && lower(q[2]) == 'o' &&
            lower(q[3]) == 'n')
            q += 4;
        while (q < e && (*q == ' ' || *q == '\t')) q++;
        if (q < e && *q == '\r') q++;
        if (q >= e || *q != '\n' || e - (q + 1) < 3 || memcmp(e - 3, "```", 3) != 0) return false;
        p = q + 1;
        e -= 3;
    }
    struct json_span v;
    if (json_validate((const char *)p, (size_t)(e - p), &v, NULL) != 0) return false;
    if (v.type != JSON_OBJECT && v.type != JSON_ARRAY) return false;
    *root = v;
    return true;
}

enum { SH_NULL = 1, SH_BOOL, SH_NUMBER, SH_STRING, SH_ARRAY_EMPTY, SH_ARRAY, SH_OBJECT, SH_KEYS };

/* The shape hash of a validated value (see "JSON" in compare.h).  Recursion
 * is bounded by JSON_MAX_DEPTH, which json_validate enforced; each value is
 * visited at most once (arrays: only the first element). */
static int shape(const struct json_span *v, uint64_t *out)
{
    size_t it = 0;
    struct json_span key, val;
    uint64_t h;
    switch (v->type) {
    case JSON_NULL: *out = rnd_mix64(SH_NULL); return 0;
    case JSON_FALSE:
    case JSON_TRUE: *out = rnd_mix64(SH_BOOL); return 0;
    case JSON_NUMBER: *out = rnd_mix64(SH_NUMBER); return 0;
    case JSON_STRING: *out = rnd_mix64(SH_STRING); return 0;
    case JSON_ARRAY:
        if (!json_next(v, &it, &key, &val)) {
            *out = rnd_mix64(SH_ARRAY_EMPTY);
            return 0;
        }
        if (shape(&val, &h) != 0) return -1;
        *out = mix2(SH_ARRAY, h);
        return 0;
    case JSON_OBJECT: {
        uint64_t sum = 0, kh;
        while (json_next(v, &it, &key, &val)) {
            if (str_hash(&key, &kh) != 0 || shape(&val, &h) != 0) return -1;
            sum += mix2(kh, h); /* addition: member order does not matter */
        }
        *out = mix2(SH_OBJECT, sum);
        return 0;
    }
    default: *out = 0; return 0;
    }
}

/* ------------------------------------------------------------ tool calls */

enum tools_state { TOOLS_NONE, TOOLS_OK, TOOLS_BAD };

struct tools {
    enum tools_state state;
    size_t n;      /* calls */
    uint64_t sum;  /* sum of rnd_mix64(call signature): a multiset hash */
};

/* The order-insensitive hash of an object's key set. */
static int key_set(const struct json_span *obj, uint64_t *out)
{
    size_t it = 0;
    struct json_span key, val;
    uint64_t sum = 0, kh;
    while (json_next(obj, &it, &key, &val)) {
        if (str_hash(&key, &kh) != 0) return -1;
        sum += rnd_mix64(kh);
    }
    *out = mix2(SH_KEYS, sum);
    return 0;
}

/* Key set of a call's arguments: absent, null or "" is the empty set; *bad
 * when they are not an object.  Returns -1 if memory ran out. */
static int args_keys(const struct json_span *args, bool found, uint64_t *out, bool *bad)
{
    static const struct json_span empty = {"{}", 2, JSON_OBJECT};
    *bad = false;
    if (!found || args->type == JSON_NULL) return key_set(&empty, out);
    if (args->type == JSON_OBJECT) return key_set(args, out);
    if (args->type != JSON_STRING) {
        *bad = true;
        return 0;
    }
    size_t cap = args->len - 1; /* decoded length <= raw length - 2, plus NUL */
    char *dec = malloc(cap);
    if (!dec) return -1;
    long n = json_str_unescape(args, dec, cap);
    const uc *p = (const uc *)dec, *e = p + (n > 0 ? n : 0);
    while (p < e && is_ws(*p)) p++;
    int rc = 0;
    struct json_span obj;
    if (p == e) rc = key_set(&empty, out);
    else if (json_validate((const char *)p, (size_t)(e - p), &obj, NULL) == 0 &&
             obj.type == JSON_OBJECT)
        rc = key_set(&obj, out);
    else *bad = true;
    free(dec);
    return rc;
}

static int tools_sig(const char *s, size_t n, struct tools *t)
{
    t->state = TOOLS_NONE;
    t->n = 0;
    t->sum = 0;
    const uc *p = text_of(s, n, &n), *e = p + n;
    while (p < e && is_ws(*p)) p++;
    if (p == e) return 0;
    struct json_span arr, call, name, args, fn;
    if (json_validate((const char *)p, (size_t)(e - p), &arr, NULL) != 0 ||
        arr.type != JSON_ARRAY) {
        t->state = TOOLS_BAD;
        return 0;
    }
    size_t it = 0;
    struct json_span unused;
    while (json_next(&arr, &it, &unused, &call)) {
        if (call.type != JSON_OBJECT) goto bad;
        /* OpenAI's wire shape nests name and arguments in "function" */
        if (!json_get(&call, "name", &name) && json_get(&call, "function", &fn) &&
            fn.type == JSON_OBJECT)
            call = fn;
        if (!json_get(&call, "name", &name) || name.type != JSON_STRING) goto bad;
        uint64_t nh, kh;
        bool badargs;
        bool has_args = json_get(&call, "arguments", &args);
        if (str_hash(&name, &nh) != 0) return -1;
        if (args_keys(&args, has_args, &kh, &badargs) != 0) return -1;
        if (badargs) goto bad;
        t->sum += rnd_mix64(mix2(nh, kh));
        t->n++;
    }
    t->state = t->n ? TOOLS_OK : TOOLS_NONE;
    return 0;
bad:
    t->state = TOOLS_BAD;
    return 0;
}

/* ------------------------------------------------------------ comparison */

static void content_na(struct cmp_result *r)
{
    r->finish_agree = r->exact = -1;
    r->edit_sim = r->rouge_l = r->length_ratio = -1;
    r->json_valid = r->json_same = r->tool_agree = -1;
}

/* Every content field, both legs having succeeded.  -1 if memory ran out. */
static int compare_content(const struct cmp_answer *a, const struct cmp_answer *b,
                           struct cmp_result *r)
{
    size_t la, lb;
    const char *ta = (const char *)text_of(a->text, a->len, &la);
    const char *tb = (const char *)text_of(b->text, b->len, &lb);

    r->finish_agree = str_eq_null(a->finish, b->finish);
    r->exact = norm_equal(ta, la, tb, lb);

    /* tokens: a text of n bytes has at most n tokens */
    size_t ca = la < COMPARE_MAX_TOKENS ? la : COMPARE_MAX_TOKENS;
    size_t cb = lb < COMPARE_MAX_TOKENS ? lb : COMPARE_MAX_TOKENS;
    uint64_t *tok = malloc((ca + cb + 1) * sizeof *tok);
    if (!tok) return -1;
    size_t na = compare_tokens(ta, la, tok, ca), nb = compare_tokens(tb, lb, tok + ca, cb);
    size_t ka = na < ca ? na : ca, kb = nb < cb ? nb : cb, lev, lcs;
    int rc = compare_distances(tok, ka, tok + ca, kb, &lev, &lcs);
    free(tok);
    if (rc != 0) return -1;
    r->edit_sim = edit_sim_of(lev, ka, kb);
    r->rouge_l = rouge_of(lcs, ka, kb);
    r->length_ratio = na ? (double)nb / (double)na : nb ? -1 : 1;

    struct json_span ja, jb;
    if (text_json(ta, la, &ja)) {
        r->json_valid = r->json_same = 0;
        if (text_json(tb, lb, &jb)) {
            uint64_t sa, sb;
            r->json_valid = 1;
            if (shape(&ja, &sa) != 0 || shape(&jb, &sb) != 0) return -1;
            r->json_same = sa == sb;
        }
    }

    struct tools xa, xb;
    if (tools_sig(a->tool_calls, a->tool_len, &xa) != 0 ||
        tools_sig(b->tool_calls, b->tool_len, &xb) != 0)
        return -1;
    if (xa.state != TOOLS_NONE || xb.state != TOOLS_NONE)
        r->tool_agree = xa.state == TOOLS_OK && xb.state == TOOLS_OK && xa.n == xb.n &&
                        xa.sum == xb.sum;
    return 0;
}

int compare_answers(const struct cmp_answer *a, const struct cmp_answer *b,
                    const struct cmp_opts *o, struct cmp_result *r)
{
    content_na(r);
    if (a->ok && b->ok) r->status_agree = true;
    else r->status_agree = !a->ok && !b->ok && a->status == b->status && str_eq_null(a->error, b->error);
    r->refusal_a = compare_is_refusal(a->text, a->len, o);
    r->refusal_b = compare_is_refusal(b->text, b->len, o);
    if (!a->ok || !b->ok) return 0;
    if (compare_content(a, b, r) != 0) {
        content_na(r);
        return -1;
    }
    return 0;
}
