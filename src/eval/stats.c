/* stats.c — intervals, percentiles, tests and the paired bootstrap used by
 * `shade report` (see stats.h for the contract, doc/shadow-report.md for
 * the reasoning).
 *
 * The bootstrap is the only costly part.  A resample of n pairs is
 * represented by how many times each pair was drawn (counts[i]), not by a
 * copied and re-sorted array: both legs are sorted once, and a percentile
 * of a resample is found by walking the sorted order, adding counts, until
 * the wanted rank is reached — from the nearer end, so p95 touches 5 % of
 * the array.  That makes a replicate O(n) instead of O(n log n), and gives
 * exactly the numbers the naive method gives for the same draws
 * (tests/unit/test_stats.c checks that).
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rand.h"

/* ------------------------------------------------------------ intervals */

void stats_wilson(double k, double n, double z, double *lo, double *hi)
{
    if (!(n > 0)) {
        *lo = 0;
        *hi = 1;
        return;
    }
    double p = k / n, z2 = z * z;
    double pq = p * (1 - p);
    if (pq < 0)
        pq = 0;
    double denom = 1 + z2 / n;
    double center = (p + z2 / (2 * n)) / denom;
    double half = z * sqrt(pq / n + z2 / (4 * n * n)) / denom;
    *lo = k <= 0 || center - half < 0 ? 0 : center - half;
    *hi = k >= n || center + half > 1 ? 1 : center + half;
}

/* ----------------------------------------------------------- percentiles */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void stats_sort(double *v, size_t n)
{
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_double);
}

double stats_percentile(const double *v, size_t n, double q)
{
    if (n == 0)
        return NAN;
    if (q <= 0)
        return v[0];
    if (q >= 1)
        return v[n - 1];
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)h;
    double frac = h - (double)lo;
    if (lo + 1 >= n || frac == 0)
        return v[lo];
    return v[lo] + frac * (v[lo + 1] - v[lo]);
}

/* ----------------------------------------------------------------- tests */

double stats_normal_sf(double z) { return 0.5 * erfc(z / sqrt(2.0)); }

/* The continued fraction of the incomplete beta function,
 *   I_x(a,b) = x^a (1-x)^b / (a B(a,b)) · 1 / (1 + d1 / (1 + d2 / (1 + ...)))
 *   d(2m+1) = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)),
 *   d(2m)   = m (b-m) x / ((a+2m-1)(a+2m)),
 * evaluated with the modified Lentz method; it converges quickly for
 * x < (a+1)/(a+b+2), and the symmetry I_x(a,b) = 1 - I_(1-x)(b,a) covers
 * the other side. */
static double beta_cf(double a, double b, double x)
{
    const double tiny = 1e-300, eps = 1e-15;
    double f = 1, c = 1, d = 0;
    for (int j = 1; j <= 200000; j++) {
        int m = j / 2;
        double dj = (j & 1) ? -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
                            : m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
        d = 1 + dj * d;
        if (fabs(d) < tiny)
            d = tiny;
        c = 1 + dj / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1 / d;
        double delta = c * d;
        f *= delta;
        if (fabs(delta - 1) < eps)
            break;
    }
    return 1 / f;
}

double stats_log_betai(double a, double b, double x)
{
    if (!(x > 0))
        return -INFINITY;
    if (!(x < 1))
        return 0;
    double lfront = a * log(x) + b * log1p(-x) - (lgamma(a) + lgamma(b) - lgamma(a + b));
    if (x < (a + 1) / (a + b + 2))
        return lfront + log(beta_cf(a, b, x)) - log(a);
    /* I = 1 - J with J = I_(1-x)(b, a) <= about 1/2 on this side, so the
     * subtraction loses nothing; log1p keeps I's logarithm exact when J is
     * tiny */
    double lj = lfront + log(beta_cf(b, a, 1 - x)) - log(b);
    return lj < 0 ? log1p(-exp(lj)) : -INFINITY;
}

double stats_betai(double a, double b, double x)
{
    if (!(x > 0))
        return 0;
    if (!(x < 1))
        return 1;
    double lfront = a * log(x) + b * log1p(-x) - (lgamma(a) + lgamma(b) - lgamma(a + b));
    if (x < (a + 1) / (a + b + 2))
        return exp(lfront) * beta_cf(a, b, x) / a;
    return 1 - exp(lfront) * beta_cf(b, a, 1 - x) / b;
}

/* P(T > t) = I_(df/(df+t²))(df/2, 1/2) / 2 for t >= 0. */
double stats_t_sf(double t, double df)
{
    if (isnan(t) || !(df > 0))
        return NAN;
    double tail = 0.5 * stats_betai(df / 2, 0.5, df / (df + t * t));
    return t >= 0 ? tail : 1 - tail;
}

double stats_two_prop_p(double k1, double n1, double k2, double n2)
{
    if (!(n1 > 0) || !(n2 > 0))
        return NAN;
    double p1 = k1 / n1, p2 = k2 / n2, pool = (k1 + k2) / (n1 + n2);
    double se = sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2));
    if (!(se > 0))
        return 1;
    double z = fabs(p1 - p2) / se;
    return 2 * stats_normal_sf(z);
}

double stats_welch_p(double m1, double v1, double n1, double m2, double v2, double n2)
{
    if (!(n1 >= 2) || !(n2 >= 2))
        return NAN;
    double s1 = (v1 > 0 ? v1 : 0) / n1, s2 = (v2 > 0 ? v2 : 0) / n2, se2 = s1 + s2;
    if (!(se2 > 0))
        return m1 == m2 ? 1 : 0;
    double t = fabs(m1 - m2) / sqrt(se2);
    double df = se2 * se2 / (s1 * s1 / (n1 - 1) + s2 * s2 / (n2 - 1));
    double p = 2 * stats_t_sf(t, df);
    return p > 1 ? 1 : p;
}

double stats_sign_p(uint64_t wins, uint64_t losses)
{
    uint64_t n = wins + losses;
    if (n == 0 || wins == 0)
        return 1;
    if (n > 2000) /* P(X >= w) = I_(1/2)(w, n - w + 1) */
        return stats_betai((double)wins, (double)(n - wins + 1), 0.5);
    /* exact: sum over i = w..n of C(n, i) / 2^n, each term in log space */
    double lnf = lgamma((double)n + 1), ln2n = (double)n * log(2.0), s = 0;
    for (uint64_t i = wins; i <= n; i++)
        s += exp(lnf - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) - ln2n);
    return s > 1 ? 1 : s;
}

/* ---------------------------------------------------------------- planning */

static int wilson_clears(double rate, uint64_t n, double threshold, double z)
{
    double lo, hi;
    stats_wilson(rate * (double)n, (double)n, z, &lo, &hi);
    return lo >= threshold;
}

static int sign_clears(double share, uint64_t n, double alpha)
{
    uint64_t w = (uint64_t)llround(share * (double)n);
    if (w > n)
        w = n;
    return stats_sign_p(w, n - w) < alpha;
}

/* Doubling to the first n that passes, then bisection between it and the
 * last n that failed. */
#define SEARCH_N(passes)                                    \
    do {                                                    \
        uint64_t hi_ = 1;                                   \
        while (!(passes(hi_))) {                            \
            if (hi_ >= STATS_N_MAX)                         \
                return 0;                                   \
            hi_ *= 2;                                       \
        }                                                   \
        uint64_t lo_ = hi_ / 2;                             \
        while (hi_ - lo_ > 1) {                             \
            uint64_t mid_ = lo_ + (hi_ - lo_) / 2;          \
            if (passes(mid_))                               \
                hi_ = mid_;                                 \
            else                                            \
                lo_ = mid_;                                 \
        }                                                   \
        return hi_;                                         \
    } while (0)

uint64_t stats_wilson_n_needed(double rate, double threshold, double z)
{
    if (!(rate > threshold) || rate > 1)
        return 0;
#define WPASS(n) wilson_clears(rate, (n), threshold, z)
    SEARCH_N(WPASS);
#undef WPASS
}

uint64_t stats_sign_n_needed(double share, double alpha)
{
    if (!(share > 0.5) || share > 1 || !(alpha > 0))
        return 0;
#define SPASS(n) sign_clears(share, (n), alpha)
    SEARCH_N(SPASS);
#undef SPASS
}

/* ------------------------------------------------------------------- rng */

void stats_rng_seed(struct stats_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = rnd_splitmix64_next(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t stats_rng_next(struct stats_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t stats_rng_below(struct stats_rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)stats_rng_next(r) * n) >> 64);
}

/* ------------------------------------------------------------- bootstrap */

struct vi {
    double v;
    uint32_t i;
};

static int cmp_vi(const void *a, const void *b)
{
    const struct vi *x = a, *y = b;
    if (x->v != y->v)
        return (x->v > y->v) - (x->v < y->v);
    return (x->i > y->i) - (x->i < y->i);
}

/* One leg sorted once: val[j] is the j-th smallest value, ord[j] its pair. */
struct sorted_leg {
    double *val;
    uint32_t *ord;
};

static int sort_leg(const double *x, size_t n, struct vi *tmp, struct sorted_leg *s)
{
    s->val = malloc(n * sizeof *s->val);
    s->ord = malloc(n * sizeof *s->ord);
    if (!s->val || !s->ord)
        return -1;
    for (size_t i = 0; i < n; i++)
        tmp[i] = (struct vi){ x[i], (uint32_t)i };
    qsort(tmp, n, sizeof *tmp, cmp_vi);
    for (size_t j = 0; j < n; j++) {
        s->val[j] = tmp[j].v;
        s->ord[j] = tmp[j].i;
    }
    return 0;
}

/* Percentile q of the resample described by cnt (n draws in all): the
 * values at 0-based ranks lo and lo+1 of the resample in sorted order,
 * interpolated exactly like stats_percentile. */
static double resampled_percentile(const struct sorted_leg *s, const uint32_t *cnt, size_t n,
                                   double q)
{
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)h;
    double frac = h - (double)lo;
    int need2 = frac > 0 && lo + 1 < n;
    double v0, v1 = 0;
    size_t j;
    uint64_t cum = 0;
    /* the loops carry no data-dependent branch but their exit: the counts
     * of a resample are unpredictable, and a mispredicted branch per
     * element would cost more than the addition */
    if (lo < n / 2) { /* walk up from the smallest value */
        for (j = 0;; j++) {
            cum += cnt[s->ord[j]];
            if (cum > lo)
                break;
        }
        v0 = s->val[j];
        if (need2) {
            while (cum <= lo + 1)
                cum += cnt[s->ord[++j]];
            v1 = s->val[j];
        }
    } else { /* walk down from the largest: rank r is n-1-r from the top */
        size_t t1 = n - 1 - lo;
        j = n;
        if (need2) {
            do
                cum += cnt[s->ord[--j]];
            while (cum <= t1 - 1);
            v1 = s->val[j];
        }
        while (cum <= t1)
            cum += cnt[s->ord[--j]];
        v0 = s->val[j];
    }
    if (!need2)
        return v0;
    return v0 + frac * (v1 - v0);
}

int stats_boot_ratio(const double *primary, const double *shadow, size_t n, const double *qs,
                     size_t nq, uint32_t replicates, uint64_t seed, struct stats_boot *out)
{
    if (n == 0 || n > UINT32_MAX)
        return -1;
    int rc = -1;
    struct sorted_leg a = { 0 }, b = { 0 };
    struct vi *tmp = malloc(n * sizeof *tmp);
    uint32_t *cnt = malloc(n * sizeof *cnt);
    double *ratios = malloc(((size_t)replicates * nq + 1) * sizeof *ratios);
    size_t *nvalid = calloc(nq + 1, sizeof *nvalid);
    if (!tmp || !cnt || !ratios || !nvalid || sort_leg(primary, n, tmp, &a) < 0 ||
        sort_leg(shadow, n, tmp, &b) < 0)
        goto out;

    for (size_t k = 0; k < nq; k++) {
        double pa = stats_percentile(a.val, n, qs[k]), pb = stats_percentile(b.val, n, qs[k]);
        out[k].point = pa > 0 ? pb / pa : NAN;
    }
    struct stats_rng rng;
    stats_rng_seed(&rng, seed);
    for (uint32_t r = 0; r < replicates; r++) {
        memset(cnt, 0, n * sizeof *cnt);
        for (size_t j = 0; j < n; j++)
            cnt[stats_rng_below(&rng, n)]++;
        for (size_t k = 0; k < nq; k++) {
            double pa = resampled_percentile(&a, cnt, n, qs[k]);
            double pb = resampled_percentile(&b, cnt, n, qs[k]);
            if (pa > 0 && isfinite(pb))
                ratios[k * replicates + nvalid[k]++] = pb / pa;
        }
    }
    for (size_t k = 0; k < nq; k++) {
        double *rk = ratios + k * replicates;
        stats_sort(rk, nvalid[k]);
        out[k].lo = stats_percentile(rk, nvalid[k], 0.025);
        out[k].hi = stats_percentile(rk, nvalid[k], 0.975);
    }
    rc = 0;
out:
    free(tmp);
    free(cnt);
    free(ratios);
    free(nvalid);
    free(a.val);
    free(a.ord);
    free(b.val);
    free(b.ord);
    return rc;
}
