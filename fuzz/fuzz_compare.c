// srcs: src/eval/compare.c src/core/json.c src/core/buf.c
/* fuzz_compare.c — compare_answers and its helpers on arbitrary answers.
 *
 * Input: one flags byte, then up to four parts separated by NUL bytes:
 * a's text, b's text, a's tool_calls, b's tool_calls.  Each part is copied
 * into a block of exactly its size (no terminator) so that any read past
 * the length shows up under ASan.  Beyond "no crash, no leak, no UB" the
 * results are checked for their ranges and for properties that must hold:
 * exact implies identical tokens, the metrics are symmetric, an answer
 * compared with itself is identical, normalising is idempotent, on short
 * texts edit similarity and ROUGE-L match a plain full-matrix DP, and the
 * bit-parallel distances match the two-row DP they replaced
 * (compare_ref.h) on a's and b's raw bytes taken as tokens, over a
 * 256-symbol and a 3-symbol alphabet (many matches, long runs). */
#include "compare.h"
#include "../tests/unit/compare_ref.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", \
    __FILE__, __LINE__, #c); abort(); } } while (0)

static char *dup_exact(const uint8_t *p, size_t n)
{
    char *s = malloc(n ? n : 1);
    REQUIRE(s);
    if (n) memcpy(s, p, n);
    return s;
}

static bool in_unit(double x) { return x == -1 || (x >= 0 && x <= 1); }
static bool tri(int x) { return x == -1 || x == 0 || x == 1; }

static void check_ranges(const struct cmp_result *r)
{
    REQUIRE(tri(r->finish_agree) && tri(r->exact) && tri(r->json_valid) && tri(r->json_same) &&
            tri(r->tool_agree));
    REQUIRE(in_unit(r->edit_sim) && in_unit(r->rouge_l));
    REQUIRE(r->length_ratio == -1 || r->length_ratio >= 0);
    /* JSON fields apply together; same structure implies valid */
    REQUIRE((r->json_valid == -1) == (r->json_same == -1));
    if (r->json_same == 1) REQUIRE(r->json_valid == 1);
    if (r->exact == 1) {
        REQUIRE(r->edit_sim == 1 && r->rouge_l == 1);
        REQUIRE(r->length_ratio == 1);
    }
    /* n/a content fields go together: they apply iff both legs succeeded */
    REQUIRE((r->exact == -1) == (r->edit_sim == -1));
    REQUIRE((r->exact == -1) == (r->rouge_l == -1));
    REQUIRE((r->exact == -1) == (r->finish_agree == -1));
}

/* reference: full-matrix Levenshtein and LCS, for short arrays only */
#define REF_MAX 48
static void ref_dp(const uint64_t *a, size_t na, const uint64_t *b, size_t nb, size_t *lev,
                   size_t *lcs)
{
    static size_t d[REF_MAX + 1][REF_MAX + 1], l[REF_MAX + 1][REF_MAX + 1];
    for (size_t i = 0; i <= na; i++)
        for (size_t j = 0; j <= nb; j++) {
            if (i == 0 || j == 0) {
                d[i][j] = i + j;
                l[i][j] = 0;
                continue;
            }
            bool eq = a[i - 1] == b[j - 1];
            size_t m = d[i - 1][j - 1] + !eq;
            if (d[i - 1][j] + 1 < m) m = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < m) m = d[i][j - 1] + 1;
            d[i][j] = m;
            size_t x = l[i - 1][j] > l[i][j - 1] ? l[i - 1][j] : l[i][j - 1];
            l[i][j] = eq ? l[i - 1][j - 1] + 1 : x;
        }
    *lev = d[na][nb];
    *lcs = l[na][nb];
}

/* compare_distances on bytes as tokens (each byte mod k) against the
 * reference, both orders */
static void check_bytes(const uint8_t *x, size_t nx, const uint8_t *y, size_t ny, unsigned k)
{
    uint64_t *tx = malloc((nx + 1) * sizeof *tx), *ty = malloc((ny + 1) * sizeof *ty);
    REQUIRE(tx && ty);
    /* spread over the word so the token map's probes see it too */
    for (size_t i = 0; i < nx; i++) tx[i] = (uint64_t)(x[i] % k) * 0x0101010101010101ull;
    for (size_t i = 0; i < ny; i++) ty[i] = (uint64_t)(y[i] % k) * 0x0101010101010101ull;
    size_t lev, lcs, rlev, rlcs;
    REQUIRE(compare_ref_dp(tx, nx, ty, ny, &rlev, &rlcs) == 0);
    REQUIRE(compare_distances(tx, nx, ty, ny, &lev, &lcs) == 0);
    REQUIRE(lev == rlev && lcs == rlcs);
    REQUIRE(compare_distances(ty, ny, tx, nx, &lev, &lcs) == 0);
    REQUIRE(lev == rlev && lcs == rlcs);
    free(tx);
    free(ty);
}

static void check_text(const char *s, size_t n)
{
    /* normalising: bounded, idempotent, and tokenising it changes nothing */
    char *out = malloc(n + 1);
    REQUIRE(out);
    size_t k = compare_normalise(s, n, out, n + 1);
    REQUIRE(k <= n && out[k] == '\0');
    char *again = malloc(k + 1);
    REQUIRE(again);
    REQUIRE(compare_normalise(out, k, again, k + 1) == k);
    REQUIRE(memcmp(out, again, k) == 0);
    /* a short buffer gets a prefix */
    if (k > 2) {
        char small[3];
        REQUIRE(compare_normalise(s, n, small, sizeof small) == k);
        REQUIRE(small[2] == '\0' && memcmp(small, out, 2) == 0);
    }
    size_t cap = 64;
    uint64_t t1[64], t2[64];
    size_t c1 = compare_tokens(s, n, t1, cap), c2 = compare_tokens(out, k, t2, cap);
    REQUIRE(c1 == c2 && c1 <= n);
    REQUIRE(memcmp(t1, t2, (c1 < cap ? c1 : cap) * sizeof t1[0]) == 0);
    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    uint8_t flags = data[0];
    data++;
    size--;

    /* the four NUL-separated parts */
    const uint8_t *part[4] = {data, data + size, data + size, data + size};
    size_t len[4] = {size, 0, 0, 0};
    int nparts = 1;
    for (int i = 0; i < 3; i++, nparts++) {
        const uint8_t *z = memchr(part[i], 0, len[i]);
        if (!z) break;
        part[i + 1] = z + 1;
        len[i + 1] = (size_t)(part[i] + len[i] - (z + 1));
        len[i] = (size_t)(z - part[i]);
    }
    char *ta = dup_exact(part[0], len[0]), *tb = dup_exact(part[1], len[1]);
    char *ca = dup_exact(part[2], len[2]), *cb = dup_exact(part[3], len[3]);

    static const char *const finishes[] = {NULL, "stop", "length", "tool_calls"};
    static const char *const errors[] = {NULL, "timeout", "http_5xx", "connect"};
    struct cmp_answer a = {0}, b = {0};
    a.ok = flags & 1;
    b.ok = flags & 2;
    a.text = ta;
    a.len = len[0];
    b.text = tb;
    b.len = len[1];
    a.finish = finishes[(flags >> 2) & 1];
    b.finish = finishes[(flags >> 3) & 3];
    a.error = a.ok ? NULL : errors[(flags >> 5) & 1];
    b.error = b.ok ? NULL : errors[(flags >> 6) & 3];
    a.status = a.ok ? 200 : 500;
    b.status = b.ok ? 200 : 500;
    /* part 2 or 3 missing: NULL tool calls */
    a.tool_calls = nparts > 2 ? ca : NULL;
    a.tool_len = len[2];
    b.tool_calls = nparts > 3 ? cb : NULL;
    b.tool_len = len[3];

    /* custom patterns: a's tool_calls part doubles as one (NUL-terminated) */
    char *pat = NULL;
    const char *pats[2];
    struct cmp_opts opts = {NULL, 0}, *o = NULL;
    if (flags & 0x80) {
        pat = malloc(len[2] + 1);
        REQUIRE(pat);
        memcpy(pat, part[2], len[2]);
        pat[len[2]] = '\0';
        pats[0] = pat;
        pats[1] = "sorry";
        opts.refusal_patterns = pats;
        opts.nrefusal = 2;
        o = &opts;
    }

    struct cmp_result r, s;
    REQUIRE(compare_answers(&a, &b, o, &r) == 0);
    check_ranges(&r);
    REQUIRE(r.refusal_a == compare_is_refusal(ta, len[0], o));
    REQUIRE(r.refusal_b == compare_is_refusal(tb, len[1], o));

    /* symmetric metrics */
    REQUIRE(compare_answers(&b, &a, o, &s) == 0);
    check_ranges(&s);
    REQUIRE(r.status_agree == s.status_agree && r.finish_agree == s.finish_agree);
    REQUIRE(r.exact == s.exact && r.edit_sim == s.edit_sim && r.rouge_l == s.rouge_l);
    REQUIRE(r.refusal_a == s.refusal_b && r.tool_agree == s.tool_agree);

    /* an answer against itself */
    if (a.ok) {
        REQUIRE(compare_answers(&a, &a, o, &s) == 0);
        REQUIRE(s.status_agree && s.exact == 1 && s.edit_sim == 1 && s.rouge_l == 1);
        REQUIRE(s.json_same == s.json_valid && s.finish_agree == 1);
        REQUIRE(s.tool_agree != 0 || a.tool_calls);
    }

    /* short texts: the metrics against a plain DP */
    if (r.exact != -1) {
        uint64_t xa[REF_MAX], xb[REF_MAX];
        size_t na = compare_tokens(ta, len[0], xa, REF_MAX);
        size_t nb = compare_tokens(tb, len[1], xb, REF_MAX);
        if (na <= REF_MAX && nb <= REF_MAX) {
            size_t lev, lcs, m = na > nb ? na : nb;
            ref_dp(xa, na, xb, nb, &lev, &lcs);
            double es = m ? 1.0 - (double)lev / (double)m : 1.0;
            double rl = na + nb ? 2.0 * (double)lcs / ((double)na + (double)nb) : 1.0;
            REQUIRE(r.edit_sim == es && r.rouge_l == rl);
            REQUIRE(compare_edit_sim(xa, na, xb, nb) == es);
            REQUIRE(compare_rouge_l(xa, na, xb, nb) == rl);
        }
    }

    check_bytes(part[0], len[0], part[1], len[1], 256);
    check_bytes(part[0], len[0], part[1], len[1], 3);
    check_text(ta, len[0]);
    check_text(tb, len[1]);
    free(pat);
    free(ta);
    free(tb);
    free(ca);
    free(cb);
    return 0;
}
