/* seq.h — anytime-valid statistics: tests that stay valid however often
 * the data are looked at, for the shadow analysis that re-reads its pairs
 * every few seconds.  Pure functions on numbers, no I/O, no allocation.
 *
 *   e-values     the beta-mixture e-process for a rate (Robbins 1970;
 *                Howard, Ramdas, McAuliffe, Sekhon 2021): large values are
 *                evidence against H0, and P(ever >= 1/alpha | H0) <= alpha
 *                (Ville's inequality), so "stop when it crosses 1/alpha"
 *                is a valid test under continuous monitoring
 *   sequences    confidence sequences for a rate and for a quantile
 *                (Howard & Ramdas, Bernoulli 2022) built from it
 *   betting      a bounded-mean e-process (a mixture of fixed bets,
 *                Waudby-Smith & Ramdas 2023) for non-inferiority margins
 *   detection    a Bernoulli CUSUM with a false-stop bound over a run
 *   planning     power and "how many more" under a planning value
 *   fixed-n      Fisher's exact test (descriptive, for one look only)
 *
 * doc/shadow-report.md explains the method for people.
 */
#ifndef SHADE_SEQ_H
#define SHADE_SEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* log E(S, F, p0): the e-value of S successes and F failures against
 * H0: p <= p0, mixing the alternative p uniformly over [p0, 1]:
 *   log E = lgamma(S+1) + lgamma(F+1) - lgamma(S+F+2)
 *           + log I_{1-p0}(F+1, S+1) - S log p0 - (F+1) log(1-p0).
 * The order of the observations does not matter, only the counts.
 * p0 is clamped into [1e-12, 1 - 1e-12]. */
double seq_log_e(double S, double F, double p0);
/* H0: p >= p0 ("the rate is not below p0"): log E(F, S, 1 - p0). */
double seq_log_e_below(double S, double F, double p0);
/* The sign e-value: a "for" and b "against" trials, H0: P(for) <= 1/2. */
double seq_log_e_sign(double a, double b);

/* Two-sided (1 - alpha) confidence sequence for a rate after S successes
 * and F failures: the p0 not rejected at alpha/2 either way.  S + F == 0
 * gives [0, 1]. */
void seq_rate_cs(double S, double F, double alpha, double *lo, double *hi);

/* Two-sided (1 - alpha) confidence sequence for the q-quantile of a sample
 * (ascending, n values): [sorted[l], sorted[u]] where u is the first order
 * statistic above which "the quantile is larger" is rejected at alpha/2,
 * and l the symmetric one.  A side with too little data is -inf / +inf. */
void seq_quantile_cs(const double *sorted, size_t n, double q, double alpha, double *lo,
                     double *hi);

/* P(X >= k) for X ~ Binomial(n, p). */
double seq_binom_sf(uint64_t k, uint64_t n, double p);
/* The smallest S of n trials with log E(S, n - S, p0) >= log_thr; n + 1
 * when even S = n is not enough. */
uint64_t seq_min_successes(uint64_t n, double p0, double log_thr);
/* The chance that n trials at true rate p reach log_thr against p0 when
 * looked at once, at the end (a lower bound on the power of continuous
 * monitoring, which may cross earlier). */
double seq_power(uint64_t n, double p, double p0, double log_thr);
/* The smallest n with seq_power >= power; 0 when p <= p0 or beyond
 * SEQ_N_MAX. */
#define SEQ_N_MAX 100000000ull
uint64_t seq_n_for_power(double p, double p0, double log_thr, double power);

/* Bounded-mean betting e-process for H0: E[D] <= -margin, D in [-1, 1]
 * (a paired difference of agreement scores): the average over a fixed grid
 * of bets lambda of prod(1 + lambda (D_i + margin)), each lambda below
 * 1/(1 - margin) so no factor reaches 0.  Large when the mean difference is
 * credibly above -margin: the candidate is no worse than margin. */
#define SEQ_BET_GRID 6
struct seq_bet {
    double margin;
    double lam[SEQ_BET_GRID];
    double logk[SEQ_BET_GRID];
    uint64_t n;
    double sum, sumsq; /* of D: the planning functions use its spread */
    double log_e_max;  /* running maximum of log E */
};
void seq_bet_init(struct seq_bet *b, double margin);
void seq_bet_add(struct seq_bet *b, double d);
double seq_bet_log_e(const struct seq_bet *b);
/* Planning, second-order (E log(1 + lY) ~ log(1 + l m) - l^2 s^2 / 2(1 + l m)^2)
 * with the true mean difference 0 ("as good as the A/A") and spread sd:
 * the smallest margin the betting test would clear with probability
 * `power` after n observations (the minimum detectable effect), and the n
 * that clears `margin`.  1 / SEQ_N_MAX when out of reach. */
double seq_bet_mde(uint64_t n, double sd, double log_thr, double power);
uint64_t seq_bet_n_needed(double margin, double sd, double log_thr, double power);

/* Bernoulli CUSUM for "the success rate fell from p0 to p1 = 2 p0 - 1"
 * (the failure rate doubled): W = max(0, W + log LR); stop when
 * W >= log(horizon / alpha), which bounds the chance of a false stop
 * within `horizon` observations at a rate >= p0 by alpha (each start
 * point's likelihood ratio crosses e^h with probability <= e^-h). */
struct seq_cusum {
    double w, up, down; /* statistic; log LR of a failure (>0) and of a success (<=0) */
    double h;           /* threshold */
    uint64_t n;
};
void seq_cusum_init(struct seq_cusum *c, double p0, double horizon, double alpha);
/* Add one observation; true when the statistic is at or above the threshold. */
bool seq_cusum_add(struct seq_cusum *c, bool success);

/* Fisher's exact test, two-sided: the probability, under fixed margins, of
 * a table at most as likely as the one observed (k1 of n1 vs k2 of n2). */
double seq_fisher_p(uint64_t k1, uint64_t n1, uint64_t k2, uint64_t n2);

#endif
