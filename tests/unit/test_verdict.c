/* test_verdict.c — the anytime-valid statistics (seq.c) against known
 * values, their promises checked by simulation (a null e-process crosses
 * 1/alpha in at most alpha of the runs, however often it is looked at;
 * confidence sequences cover), and the shadow decision (verdict.c) on
 * small hand-made streams and on the decision simulator with a fixed seed
 * (the property test: false alarms and detection). */
#include "decsim.h"
#include "seq.h"
#include "stats.h"
#include "unit.h"
#include "verdict.h"

#include <math.h>

#define CHECK_REL(a, b, rel) do { double _a = (a), _b = (b); unit_checks++; \
    if (!(fabs(_a - _b) <= (rel) * (fabs(_b) > 1 ? fabs(_b) : 1))) { unit_failures++; \
    fprintf(stderr, "%s:%d: %s == %.12g, expected %.12g\n", __FILE__, __LINE__, #a, _a, _b); } } while (0)

static double E(double s, double f, double p0) { return exp(seq_log_e(s, f, p0)); }
static double Esign(double a, double b) { return exp(seq_log_e_sign(a, b)); }
static double below(double s, double f, double p0) { return exp(seq_log_e_below(s, f, p0)); }

static void test_known_values(void)
{
    /* E_sign(7,0) = (1/8)(255/256)(2^8) = 255/8: lgamma terms give
     * 7! 0! / 8! = 1/8, I_(1/2)(1, 8) = 1 - 2^-8, and 2^7 2^1 */
    CHECK_REL(Esign(7, 0), 31.875, 1e-6);
    CHECK_REL(Esign(6, 0), 18.142857, 1e-6);
    CHECK_REL(Esign(10, 2), 9.440559, 1e-6);
    CHECK_REL(Esign(5, 5), 0.369408, 1e-6);
    CHECK_REL(Esign(0, 0), 1, 1e-12);
    CHECK_REL(E(100, 0, 0.95), 33.258182, 1e-6);
    CHECK_REL(E(200, 1, 0.95), 280.951705, 1e-6);
    CHECK_REL(E(95, 5, 0.95), 0.432302, 1e-6);
    CHECK_REL(below(50, 10, 0.95), 30.453872, 1e-6);
    CHECK_REL(below(0, 3, 0.95), 2105.25, 1e-6);
    CHECK_REL(E(20, 50, 0.15), 10.393782, 1e-6);
    /* Fisher two-sided, 0/80 vs 1/7: one success among 87, the table with
     * it in the small group has probability 7/87, the other 80/87 is more
     * likely: p = 7/87 */
    CHECK_REL(seq_fisher_p(0, 80, 1, 7), 7.0 / 87, 1e-9);
    CHECK_REL(seq_fisher_p(0, 80, 1, 7), 0.080460, 1e-5);
    CHECK_REL(seq_fisher_p(5, 10, 5, 10), 1, 1e-9);
    /* no underflow far out in the tails: log E stays finite */
    CHECK(isfinite(seq_log_e(1e6, 1e5, 0.5)) && seq_log_e(1e6, 1e5, 0.5) > 1e5);
    CHECK(isfinite(seq_log_e(10, 1e6, 0.5)) && seq_log_e(10, 1e6, 0.5) < 0);
    CHECK(isfinite(stats_log_betai(5000, 5000, 0.01)) && stats_log_betai(5000, 5000, 0.01) < -1e4);
    CHECK_REL(stats_log_betai(2, 3, 0.4), log(stats_betai(2, 3, 0.4)), 1e-12);
    /* the binomial tail: P(X >= 3), X ~ Bin(4, 1/2) = 5/16 */
    CHECK_REL(seq_binom_sf(3, 4, 0.5), 5.0 / 16, 1e-9);
}

/* Ville's inequality, by simulation: 400 fair-coin sign sequences of 1000
 * steps, looked at every 5: the e-value reaches 20 in at most 5 % of them. */
static void test_null_sign_sequences(void)
{
    struct stats_rng r;
    stats_rng_seed(&r, 42);
    int crossed = 0;
    for (int run = 0; run < 400; run++) {
        uint64_t a = 0, b = 0;
        for (int t = 1; t <= 1000; t++) {
            if (stats_rng_next(&r) >> 63)
                a++;
            else
                b++;
            if (t % 5 == 0 && seq_log_e_sign((double)a, (double)b) >= log(20)) {
                crossed++;
                break;
            }
        }
    }
    printf("null sign sequences crossing 20: %d of 400\n", crossed);
    CHECK(crossed <= 20);
    /* and a real effect (60 % heads) does cross */
    int found = 0;
    for (int run = 0; run < 100; run++) {
        uint64_t a = 0, b = 0;
        for (int t = 1; t <= 1000; t++) {
            if ((double)(stats_rng_next(&r) >> 11) * 0x1p-53 < 0.6)
                a++;
            else
                b++;
            if (seq_log_e_sign((double)a, (double)b) >= log(20)) {
                found++;
                break;
            }
        }
    }
    CHECK(found >= 90);
}

/* The rate and quantile confidence sequences cover the truth at every look
 * in at least 95 % of runs. */
static void test_confidence_sequences(void)
{
    double lo, hi;
    seq_rate_cs(0, 0, 0.05, &lo, &hi);
    CHECK(lo == 0 && hi == 1);
    seq_rate_cs(950, 50, 0.05, &lo, &hi);
    CHECK(lo < 0.95 && hi > 0.95 && lo > 0.92 && hi < 0.975);
    /* the CS is wider than the fixed-n Wilson interval: it pays for looking */
    double wl, wh;
    stats_wilson(950, 1000, STATS_Z95, &wl, &wh);
    CHECK(lo < wl && hi > wh);

    struct stats_rng r;
    stats_rng_seed(&r, 7);
    int miss_rate = 0, miss_q = 0;
    static double x[500], sorted[500];
    for (int run = 0; run < 200; run++) {
        bool mr = false, mq = false;
        uint64_t s = 0;
        for (int t = 1; t <= 500; t++) {
            double u = (double)(stats_rng_next(&r) >> 11) * 0x1p-53;
            x[t - 1] = u; /* uniform: the 0.9-quantile is 0.9 */
            s += u < 0.3;
            if (t % 25 == 0) {
                seq_rate_cs((double)s, (double)(t - (int)s), 0.05, &lo, &hi);
                mr = mr || lo > 0.3 || hi < 0.3;
                for (int i = 0; i < t; i++)
                    sorted[i] = x[i];
                stats_sort(sorted, (size_t)t);
                seq_quantile_cs(sorted, (size_t)t, 0.9, 0.05, &lo, &hi);
                mq = mq || lo > 0.9 || hi < 0.9;
            }
        }
        miss_rate += mr;
        miss_q += mq;
    }
    printf("confidence sequences missing the truth at some look: rate %d, quantile %d of 200\n",
           miss_rate, miss_q);
    CHECK(miss_rate <= 10);
    CHECK(miss_q <= 10);
    /* with 500 values the p90 sequence is finite on both sides and brackets it */
    seq_quantile_cs(sorted, 500, 0.9, 0.05, &lo, &hi);
    CHECK(isfinite(lo) && isfinite(hi) && lo < 0.9 && hi > 0.9);
    /* three values say nothing about a p95 */
    seq_quantile_cs(sorted, 3, 0.95, 0.05, &lo, &hi);
    CHECK(isinf(hi));
}

static void test_planning(void)
{
    /* power grows with n and with the true rate */
    double thr = log(20);
    CHECK(seq_power(200, 0.99, 0.95, thr) > seq_power(100, 0.99, 0.95, thr));
    CHECK(seq_power(200, 0.99, 0.95, thr) > seq_power(200, 0.97, 0.95, thr));
    uint64_t n = seq_n_for_power(0.99, 0.95, thr, 0.8);
    CHECK(n > 0 && seq_power(n, 0.99, 0.95, thr) >= 0.8);
    CHECK(seq_n_for_power(0.95, 0.95, thr, 0.8) == 0); /* never at the bar */
    /* seq_min_successes is the first S that crosses */
    uint64_t s = seq_min_successes(100, 0.5, thr);
    CHECK(seq_log_e((double)s, (double)(100 - s), 0.5) >= thr);
    CHECK(seq_log_e((double)s - 1, (double)(101 - s), 0.5) < thr);
    /* the betting test's detectable margin falls like 1/sqrt(n) */
    double m100 = seq_bet_mde(100, 0.7, thr, 0.8), m400 = seq_bet_mde(400, 0.7, thr, 0.8);
    CHECK(m400 < m100 && m400 > m100 / 3);
    uint64_t nb = seq_bet_n_needed(m400, 0.7, thr, 0.8);
    CHECK(nb >= 380 && nb <= 420);
}

/* The betting e-process under its null (mean difference exactly -margin)
 * stays below 1/alpha in at least 95 % of runs; with no difference it
 * passes. */
static void test_betting(void)
{
    struct stats_rng r;
    stats_rng_seed(&r, 9);
    int crossed = 0;
    for (int run = 0; run < 300; run++) {
        struct seq_bet b;
        seq_bet_init(&b, 0.1);
        for (int t = 0; t < 2000; t++) {
            double u = (double)(stats_rng_next(&r) >> 11) * 0x1p-53;
            /* D in {-1, 0, 1} with mean -0.1: P(-1) = 0.3, P(1) = 0.2 */
            seq_bet_add(&b, u < 0.3 ? -1 : u < 0.5 ? 1 : 0);
        }
        crossed += b.log_e_max >= log(20);
    }
    printf("betting null crossing 20: %d of 300\n", crossed);
    CHECK(crossed <= 15);
    struct seq_bet b;
    seq_bet_init(&b, 0.1);
    for (int t = 0; t < 100; t++)
        seq_bet_add(&b, 0);
    CHECK(seq_bet_log_e(&b) >= log(20));
}

static void test_cusum(void)
{
    /* a dead candidate: p0 = 0.9 means p1 = 0.8; a failure adds
     * log(0.2/0.1) = log 2, and the threshold log(1e5/0.05) = 14.5 needs
     * 21 failures in a row */
    struct seq_cusum c;
    seq_cusum_init(&c, 0.9, 1e5, 0.05);
    int n = 0;
    while (!seq_cusum_add(&c, false))
        n++;
    CHECK_EQ_INT(n + 1, 21);
    /* at the bar it stays down in at least 95 % of 2000-pair runs */
    struct stats_rng r;
    stats_rng_seed(&r, 3);
    int stops = 0;
    for (int run = 0; run < 200; run++) {
        seq_cusum_init(&c, 0.9, 1e5, 0.05);
        bool stop = false;
        for (int t = 0; t < 2000 && !stop; t++)
            stop = seq_cusum_add(&c, (double)(stats_rng_next(&r) >> 11) * 0x1p-53 < 0.9);
        stops += stop;
    }
    CHECK(stops <= 10);
}

/* ---------------------------------------------------------------- decisions */

static void obs_ok(struct verdict_obs *o, double p_lat, double c_lat)
{
    verdict_obs_clear(o);
    o->p_ok = o->c_ok = true;
    o->p_lat = p_lat;
    o->c_lat = c_lat;
}

static void feed(struct verdict_state *s, const struct verdict_obs *o, int n)
{
    for (int i = 0; i < n; i++) {
        verdict_add(s, o);
        if (s->n % VERDICT_LOOK_EVERY == 0)
            verdict_look(s);
    }
    verdict_look(s);
}

static void test_decisions(void)
{
    struct verdict_rules rules;
    verdict_rules_default(&rules);
    struct verdict_state *s = calloc(1, sizeof *s);
    struct verdict v;
    struct verdict_obs o;

    /* nothing yet: keep collecting, for min_pairs */
    verdict_init(s, &rules);
    verdict_look(s);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.action_name, "keep_collecting");
    CHECK_EQ_STR(v.rule, "insufficient_data");

    /* a single A/A row that disagrees, and five candidate rows that do:
     * no quality alarm on so little (the old z test said p 0.038) */
    verdict_init(s, &rules);
    obs_ok(&o, 100, 100);
    o.has_aa = true;
    o.cmp_c[2] = 0; /* exact: candidate differs */
    o.cmp_aa[2] = 1;
    feed(s, &o, 5);
    verdict_decide(s, &v);
    CHECK(!v.alarm[VF_QUALITY]);

    /* a candidate that fails every request alarms on success quickly */
    verdict_init(s, &rules);
    verdict_obs_clear(&o);
    o.p_ok = true;
    o.p_lat = 100;
    feed(s, &o, 20);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.action_name, "investigate");
    CHECK_EQ_STR(v.rule, "success_rate");

    /* twice as slow in every pair: too slow */
    verdict_init(s, &rules);
    obs_ok(&o, 100, 200);
    feed(s, &o, 40);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.action_name, "too_slow");
    CHECK_EQ_STR(v.rule, "latency_ratio");
    /* a timeout counts as slower, never dropped */
    verdict_init(s, &rules);
    verdict_obs_clear(&o);
    o.p_ok = true;
    o.p_lat = 100;
    o.c_timeout = true;
    feed(s, &o, 15);
    CHECK_EQ_INT(s->lat_slow.a, 15);

    /* identical answers everywhere, with A/A legs: ready, but not before
     * min_pairs, and not without A/A legs */
    verdict_init(s, &rules);
    obs_ok(&o, 100, 100);
    for (int j = 0; j < VERDICT_NCMP; j++)
        o.cmp_c[j] = j == 9 ? 0 : 1; /* refusal_other: lower is better */
    feed(s, &o, 200);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.action_name, "keep_collecting");
    CHECK_EQ_STR(v.criterion, "noise_floor");
    CHECK(v.more == -1);
    verdict_init(s, &rules);
    o.has_aa = true;
    for (int j = 0; j < VERDICT_NCMP; j++)
        o.cmp_aa[j] = o.cmp_c[j];
    feed(s, &o, 20);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.action_name, "keep_collecting"); /* fewer than min_pairs */
    CHECK(v.more >= 10);
    feed(s, &o, 180);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.action_name, "ready_for_canary");
    CHECK_EQ_STR(v.rule, "no_regression");
    CHECK(v.ready_success && v.ready_latency && v.ready_quality);
    CHECK(s->first_ready_n >= rules.min_pairs);

    /* the judge preferring the candidate does not make it ready on its own
     * (the old judge_better rule did, before success and latency) */
    verdict_init(s, &rules);
    obs_ok(&o, 100, 100);
    o.judge = +1;
    feed(s, &o, 40);
    verdict_decide(s, &v);
    CHECK(v.action != VA_READY);
    /* ... and losing every verdict is a quality regression */
    verdict_init(s, &rules);
    o.judge = -1;
    feed(s, &o, 40);
    verdict_decide(s, &v);
    CHECK_EQ_STR(v.rule, "quality_regression");
    CHECK(v.alarm[VF_JUDGE]);
    free(s);
}

/* The property test: the simulator with a fixed seed, fewer runs than
 * `make bench-decisions`.  Bounds leave room for sampling error: 100 runs
 * at a true 5 % would exceed 10 in under 3 % of seeds. */
static void test_simulator(void)
{
    struct verdict_rules rules;
    verdict_rules_default(&rules);
    for (unsigned k = 0; k < decsim_nscenarios; k++) {
        const struct decsim_scenario *sc = &decsim_scenarios[k];
        struct decsim_result r;
        bool want = sc->null || strcmp(sc->name, "latency_x1.5") == 0 ||
                    strcmp(sc->name, "errors_plus5") == 0 || strcmp(sc->name, "at_stop_bar") == 0;
        if (!want)
            continue;
        CHECK(decsim_run(sc, &rules, 100, 1000, 20261203, &r) == 0);
        printf("simulated %-18s alarms %3u/100, ready first %3u, stops %3u, median to alarm %.0f\n",
               sc->name, r.alarms, r.ready_first, r.stops, r.alarm_median);
        if (sc->null) {
            CHECK(r.alarms <= 10);
            CHECK(r.stops == 0);
        } else if (strcmp(sc->name, "latency_x1.5") == 0) {
            CHECK(r.alarm[VF_LATENCY] >= 95);
            CHECK(r.alarm_median <= 150);
            CHECK(r.ready_first <= 5);
        } else if (strcmp(sc->name, "errors_plus5") == 0) {
            CHECK(r.alarm[VF_SUCCESS] >= 90);
            CHECK(r.alarm_median <= 400);
        } else {
            CHECK(r.stops <= 10); /* exactly at the auto-stop bar */
        }
    }
    /* the A/A stream is declared ready in most runs by 1000 pairs */
    struct decsim_result r;
    CHECK(decsim_run(&decsim_scenarios[0], &rules, 50, 1000, 5, &r) == 0);
    CHECK(r.ready_first >= 40);
}

int main(void)
{
    test_known_values();
    test_null_sign_sequences();
    test_confidence_sequences();
    test_planning();
    test_betting();
    test_cusum();
    test_decisions();
    test_simulator();
    UNIT_DONE();
}
