/* compare_ref.h — the reference for compare_distances(): the two-row
 * O(n*m) dynamic program that src/eval/compare.c used before the bit-parallel
 * algorithms replaced it, kept word for word so that the unit test, the
 * fuzz harness and bench/compare_bench.c can check the new code against it
 * (results must be EXACTLY equal) and measure what it gained.  Not used by
 * the gateway itself. */
#ifndef SHADE_COMPARE_REF_H
#define SHADE_COMPARE_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Levenshtein distance and LCS length of two token arrays in one pass.
 * Both are unchanged by taking off a common prefix and suffix (the LCS then
 * gains their length), so only the differing middle goes through the DP,
 * with the shorter side as the row.  Returns -1 if memory ran out. */
static inline int compare_ref_dp(const uint64_t *a, size_t na, const uint64_t *b, size_t nb,
                                 size_t *lev, size_t *lcs)
{
    size_t pre = 0, suf = 0;
    while (pre < na && pre < nb && a[pre] == b[pre]) pre++;
    while (suf < na - pre && suf < nb - pre && a[na - 1 - suf] == b[nb - 1 - suf]) suf++;
    /* the middles: a[pre .. pre+ma), b[pre .. pre+mb) */
    size_t ma = na - pre - suf, mb = nb - pre - suf;
    *lcs = pre + suf;
    *lev = 0;
    if (ma < mb) { /* both metrics are symmetric: make b the shorter side */
        const uint64_t *t = a;
        a = b;
        b = t;
        size_t m = ma;
        ma = mb;
        mb = m;
    }
    if (mb == 0) {
        *lev = ma;
        return 0;
    }
    size_t w = mb + 1;
    if (w > SIZE_MAX / (4 * sizeof(size_t))) return -1;
    size_t *rows = malloc(4 * w * sizeof *rows);
    if (!rows) return -1;
    /* d*: edit distance rows, l*: LCS rows; p = previous, c = current */
    size_t *dp = rows, *dc = rows + w, *lp = rows + 2 * w, *lc = rows + 3 * w;
    for (size_t j = 0; j < w; j++) {
        dp[j] = j;
        lp[j] = 0;
    }
    const uint64_t *x = a + pre, *y = b + pre;
    for (size_t i = 1; i <= ma; i++) {
        uint64_t xi = x[i - 1];
        dc[0] = i;
        lc[0] = 0;
        for (size_t j = 1; j < w; j++) {
            bool eq = xi == y[j - 1];
            size_t d = dp[j - 1] + !eq, t = dp[j] + 1;
            if (t < d) d = t;
            t = dc[j - 1] + 1;
            if (t < d) d = t;
            dc[j] = d;
            lc[j] = eq ? lp[j - 1] + 1 : lp[j] > lc[j - 1] ? lp[j] : lc[j - 1];
        }
        size_t *t = dp;
        dp = dc;
        dc = t;
        t = lp;
        lp = lc;
        lc = t;
    }
    *lev = dp[mb];
    *lcs += lp[mb];
    free(rows);
    return 0;
}

#endif
