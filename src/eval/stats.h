/* stats.h — the statistics behind `shade report`: pure functions on
 * numbers, no I/O, no allocation except where a function says so.
 *
 *   intervals    Wilson score interval for a proportion
 *   percentiles  linear interpolation between closest ranks (numpy's
 *                default, Hyndman & Fan type 7)
 *   tests        two-proportion z test, Welch's t test (two-sided), exact
 *                one-sided sign test
 *   bootstrap    paired percentile bootstrap for the ratio of a percentile
 *                of one sample to the same percentile of the other
 *   planning     how many samples a rule would need at the observed rate
 *
 * doc/shadow-report.md explains the choices for people.
 */
#ifndef SHADE_STATS_H
#define SHADE_STATS_H

#include <stddef.h>
#include <stdint.h>

#define STATS_Z95 1.959964         /* two-sided 95 % normal quantile */
#define STATS_BOOT_REPLICATES 2000 /* default bootstrap resamples */
#define STATS_BOOT_SEED 0x5eed5eed5eed5eedull

/* Wilson score interval for k successes of n (k may be fractional: the
 * planning functions ask "what if the rate stayed the same").  n == 0 gives
 * the uninformative [0, 1]. */
void stats_wilson(double k, double n, double z, double *lo, double *hi);

/* Sort ascending (NaNs are not expected; callers filter them). */
void stats_sort(double *v, size_t n);
/* Percentile q in [0, 1] of an ascending array: h = (n-1)q, then
 * v[floor h] + (h - floor h)(v[floor h + 1] - v[floor h]).  NaN if n == 0. */
double stats_percentile(const double *sorted, size_t n, double q);

/* Upper tail of the standard normal: P(Z > z). */
double stats_normal_sf(double z);
/* Regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1. */
double stats_betai(double a, double b, double x);
/* log I_x(a, b), without underflow: I_x is never formed where it would be
 * tiny (log I = -745 and below are exact too).  -inf at x <= 0, 0 at x >= 1. */
double stats_log_betai(double a, double b, double x);
/* Upper tail of Student's t with df degrees of freedom: P(T > t). */
double stats_t_sf(double t, double df);

/* Two-sided p-value of the pooled two-proportion z test of k1/n1 against
 * k2/n2.  NaN when either n is 0; 1 when the pooled rate is 0 or 1. */
double stats_two_prop_p(double k1, double n1, double k2, double n2);
/* Two-sided p-value of Welch's unequal-variance t test from means, sample
 * variances (n-1 denominator) and sizes.  NaN when either n < 2.  With both
 * variances 0 the answer is 1 for equal means and 0 otherwise. */
double stats_welch_p(double m1, double v1, double n1, double m2, double v2, double n2);
/* Exact one-sided sign test: P(X >= wins) for X ~ Binomial(wins + losses,
 * 1/2), the chance of at least this many wins if either side were equally
 * likely to win.  1 when there are no decisive trials. */
double stats_sign_p(uint64_t wins, uint64_t losses);

/* Smallest n at which the Wilson lower bound of k = rate * n successes
 * reaches threshold; 0 when it never does (rate <= threshold).  At most
 * STATS_N_MAX is searched. */
#define STATS_N_MAX 1000000000ull
uint64_t stats_wilson_n_needed(double rate, double threshold, double z);
/* Smallest number of decisive trials at which a win share `share` would
 * make the one-sided sign test p < alpha (wins = share * n rounded to
 * nearest); 0 when it never does (share <= 1/2).  The binomial is discrete,
 * so this is the first n found by a doubling-then-bisection search: exact
 * for smooth cases, within a few trials otherwise. */
uint64_t stats_sign_n_needed(double share, double alpha);

/* xoshiro256** seeded with splitmix64: fixed seeds make reports
 * reproducible. */
struct stats_rng {
    uint64_t s[4];
};
void stats_rng_seed(struct stats_rng *r, uint64_t seed);
uint64_t stats_rng_next(struct stats_rng *r);
/* Uniform integer in [0, n), n > 0 (multiply-shift; bias below n / 2^64). */
uint64_t stats_rng_below(struct stats_rng *r, uint64_t n);

/* Paired bootstrap of ratio = percentile(shadow, q) / percentile(primary, q)
 * for each q in qs[0..nq): `replicates` resamples of the n pairs with
 * replacement (one draw of n indexes serves every q), and the 2.5th and
 * 97.5th percentiles of the resampled ratios.  The arrays are not
 * modified.  Returns 0, or -1 when n == 0 or out of memory. */
struct stats_boot {
    double point;   /* the ratio on the sample itself */
    double lo, hi;  /* 95 % percentile interval; NaN if no resample had a
                       positive denominator */
};
int stats_boot_ratio(const double *primary, const double *shadow, size_t n, const double *qs,
                     size_t nq, uint32_t replicates, uint64_t seed, struct stats_boot *out);

#endif
