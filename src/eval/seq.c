/* seq.c — anytime-valid statistics (seq.h). */
#include "seq.h"

#include <math.h>

#include "stats.h"

static double clamp_p(double p)
{
    if (!(p >= 1e-12))
        return 1e-12;
    if (!(p <= 1 - 1e-12))
        return 1 - 1e-12;
    return p;
}

double seq_log_e(double S, double F, double p0)
{
    p0 = clamp_p(p0);
    return lgamma(S + 1) + lgamma(F + 1) - lgamma(S + F + 2) +
           stats_log_betai(F + 1, S + 1, 1 - p0) - S * log(p0) - (F + 1) * log1p(-p0);
}

double seq_log_e_below(double S, double F, double p0) { return seq_log_e(F, S, 1 - p0); }

double seq_log_e_sign(double a, double b) { return seq_log_e(a, b, 0.5); }

/* The largest p0 in (0, S/(S+F)] that "p <= p0" is still rejected for.  On
 * that side E falls as p0 grows towards the observed rate, so bisection
 * finds the crossing. */
static double rate_lower(double S, double F, double log_thr)
{
    double phat = S / (S + F);
    if (S == 0 || !(seq_log_e(S, F, 1e-12) >= log_thr))
        return 0;
    double lo = 1e-12, hi = phat;
    for (int i = 0; i < 100 && hi - lo > 1e-12; i++) {
        double mid = 0.5 * (lo + hi);
        if (seq_log_e(S, F, mid) >= log_thr)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

void seq_rate_cs(double S, double F, double alpha, double *lo, double *hi)
{
    if (!(S + F > 0)) {
        *lo = 0;
        *hi = 1;
        return;
    }
    double thr = log(2 / alpha);
    *lo = rate_lower(S, F, thr);
    *hi = 1 - rate_lower(F, S, thr);
}

void seq_quantile_cs(const double *sorted, size_t n, double q, double alpha, double *lo,
                     double *hi)
{
    double thr = log(2 / alpha);
    *lo = -INFINITY;
    *hi = INFINITY;
    if (n == 0)
        return;
    /* upper: the true quantile xi above X_(k) would put at least k values
     * below xi, each with chance <= q; E(k, n-k, q) grows with k */
    if (seq_log_e((double)n, 0, q) >= thr) {
        size_t l = 1, r = n;
        while (l < r) {
            size_t m = l + (r - l) / 2;
            if (seq_log_e((double)m, (double)(n - m), q) >= thr)
                r = m;
            else
                l = m + 1;
        }
        *hi = sorted[l - 1];
    }
    /* lower: xi below X_(k) would put at least n-k+1 values above xi, each
     * with chance <= 1-q; E(n-k+1, k-1, 1-q) falls as k grows: the largest
     * k that rejects */
    if (seq_log_e((double)n, 0, 1 - q) >= thr) {
        size_t l = 1, r = n;
        while (l < r) {
            size_t m = l + (r - l + 1) / 2;
            if (seq_log_e((double)(n - m + 1), (double)(m - 1), 1 - q) >= thr)
                l = m;
            else
                r = m - 1;
        }
        *lo = sorted[l - 1];
    }
}

double seq_binom_sf(uint64_t k, uint64_t n, double p)
{
    if (k == 0)
        return 1;
    if (k > n)
        return 0;
    /* P(X >= k) = I_p(k, n - k + 1) */
    return stats_betai((double)k, (double)(n - k + 1), p);
}

uint64_t seq_min_successes(uint64_t n, double p0, double log_thr)
{
    if (!(seq_log_e((double)n, 0, p0) >= log_thr))
        return n + 1;
    uint64_t l = 0, r = n;
    while (l < r) {
        uint64_t m = l + (r - l) / 2;
        if (seq_log_e((double)m, (double)(n - m), p0) >= log_thr)
            r = m;
        else
            l = m + 1;
    }
    return l;
}

double seq_power(uint64_t n, double p, double p0, double log_thr)
{
    return seq_binom_sf(seq_min_successes(n, p0, log_thr), n, p);
}

uint64_t seq_n_for_power(double p, double p0, double log_thr, double power)
{
    if (!(p > p0))
        return 0;
    /* doubling to a passing n, then bisection; the binomial is discrete,
     * so this is the first n found, within a few trials of the least */
    uint64_t hi = 1;
    while (seq_power(hi, p, p0, log_thr) < power) {
        if (hi >= SEQ_N_MAX)
            return 0;
        hi *= 2;
    }
    uint64_t lo = hi / 2;
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (seq_power(mid, p, p0, log_thr) >= power)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

/* ---------------------------------------------------------------- betting */

/* fractions of the largest safe bet 1/(1 - margin): small bets win when
 * the difference is noisy, large ones when it is nearly constant */
static const double bet_frac[SEQ_BET_GRID] = { 0.025, 0.05, 0.1, 0.2, 0.4, 0.75 };

void seq_bet_init(struct seq_bet *b, double margin)
{
    b->margin = margin;
    for (int i = 0; i < SEQ_BET_GRID; i++) {
        b->lam[i] = bet_frac[i] / (1 - margin);
        b->logk[i] = 0;
    }
    b->n = 0;
    b->sum = b->sumsq = 0;
    b->log_e_max = 0;
}

void seq_bet_add(struct seq_bet *b, double d)
{
    if (d < -1)
        d = -1;
    if (d > 1)
        d = 1;
    for (int i = 0; i < SEQ_BET_GRID; i++)
        b->logk[i] += log1p(b->lam[i] * (d + b->margin));
    b->n++;
    b->sum += d;
    b->sumsq += d * d;
    double le = seq_bet_log_e(b);
    if (le > b->log_e_max)
        b->log_e_max = le;
}

double seq_bet_log_e(const struct seq_bet *b)
{
    double m = b->logk[0];
    for (int i = 1; i < SEQ_BET_GRID; i++)
        if (b->logk[i] > m)
            m = b->logk[i];
    double s = 0;
    for (int i = 0; i < SEQ_BET_GRID; i++)
        s += exp(b->logk[i] - m);
    return m + log(s / SEQ_BET_GRID);
}

#define Z80 0.8416212335729143 /* one-sided 80 % normal quantile */

/* Would the best single bet of the grid reach log_thr + log(grid) (which
 * implies the average reaches log_thr) with the asked power? */
static double z_of(double power)
{
    if (power > 0.79999 && power < 0.80001)
        return Z80;
    double lo = -10, hi = 10; /* P(Z > -z) = power */
    for (int i = 0; i < 80; i++) {
        double mid = 0.5 * (lo + hi);
        if (stats_normal_sf(-mid) < power)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

static bool bet_clears(double n, double margin, double sd, double log_thr, double power)
{
    double z = z_of(power);
    double need = log_thr + log((double)SEQ_BET_GRID);
    for (int i = 0; i < SEQ_BET_GRID; i++) {
        double lam = bet_frac[i] / (1 - margin), q = 1 + lam * margin;
        double g = log(q) - lam * lam * sd * sd / (2 * q * q);
        double spread = lam * sd / q;
        if (n * g - z * sqrt(n) * spread >= need)
            return true;
    }
    return false;
}

double seq_bet_mde(uint64_t n, double sd, double log_thr, double power)
{
    if (n == 0 || !bet_clears((double)n, 0.999, sd, log_thr, power))
        return 1;
    double lo = 0, hi = 0.999;
    for (int i = 0; i < 60; i++) {
        double mid = 0.5 * (lo + hi);
        if (bet_clears((double)n, mid, sd, log_thr, power))
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

uint64_t seq_bet_n_needed(double margin, double sd, double log_thr, double power)
{
    if (!(margin > 0) || !(margin < 1))
        return SEQ_N_MAX;
    uint64_t hi = 1;
    while (!bet_clears((double)hi, margin, sd, log_thr, power)) {
        if (hi >= SEQ_N_MAX)
            return SEQ_N_MAX;
        hi *= 2;
    }
    uint64_t lo = hi / 2;
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (bet_clears((double)mid, margin, sd, log_thr, power))
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

/* ---------------------------------------------------------------- CUSUM */

void seq_cusum_init(struct seq_cusum *c, double p0, double horizon, double alpha)
{
    p0 = clamp_p(p0);
    double p1 = 2 * p0 - 1;
    c->up = log((1 - p1) / (1 - p0));                  /* a failure: > 0 */
    c->down = p1 > 0 ? log(p1 / p0) : -INFINITY;        /* a success: < 0 */
    c->h = log((horizon > 1 ? horizon : 1) / alpha);
    c->w = 0;
    c->n = 0;
}

bool seq_cusum_add(struct seq_cusum *c, bool success)
{
    c->w += success ? c->down : c->up;
    if (!(c->w > 0))
        c->w = 0;
    c->n++;
    return c->w >= c->h;
}

/* ---------------------------------------------------------------- Fisher */

static double lchoose(uint64_t n, uint64_t k)
{
    return lgamma((double)n + 1) - lgamma((double)k + 1) - lgamma((double)(n - k) + 1);
}

double seq_fisher_p(uint64_t k1, uint64_t n1, uint64_t k2, uint64_t n2)
{
    uint64_t n = n1 + n2, k = k1 + k2;
    if (n1 == 0 || n2 == 0)
        return 1;
    uint64_t lo = k > n2 ? k - n2 : 0, hi = k < n1 ? k : n1;
    double base = lchoose(n, k);
    double lobs = lchoose(n1, k1) + lchoose(n2, k2) - base, p = 0;
    for (uint64_t x = lo; x <= hi; x++) {
        double l = lchoose(n1, x) + lchoose(n2, k - x) - base;
        if (l <= lobs + 1e-7 * fabs(lobs) + 1e-12)
            p += exp(l);
    }
    return p > 1 ? 1 : p;
}
