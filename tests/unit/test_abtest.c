/* test_abtest.c — the A/B experiment analysis (abtest.c): verdicts on
 * hand-made counts in both directions for every metric, confidence
 * sequences, the Bonferroni count, a null simulation (arms alike, looked
 * at many times: a false verdict in at most 5 % of runs) and the power to
 * see a real difference. */
#include "abtest.h"
#include "rand.h"
#include "unit.h"

#include <math.h>

static uint64_t C[8][AB_COUNTERS];
static struct ab_arm_result R[8];

static void reset(void) { memset(C, 0, sizeof C); }

static void test_counts_and_names(void)
{
    CHECK(ab_tests(2, false) == 10);
    CHECK(ab_tests(3, false) == 20);
    CHECK(ab_tests(2, true) == 12);
    CHECK(ab_tests(3, true) == 24);
    CHECK_EQ_STR(ab_metric_names[AB_M_JUDGE], "judge");
    CHECK_EQ_STR(ab_counter_names[AB_JUDGE_WIN], "judge_wins");
    CHECK_EQ_STR(ab_counter_names[AB_FB_NEG], "feedback_negative");
    CHECK_EQ_STR(ab_metric_names[AB_M_FEEDBACK], "feedback");
    CHECK_EQ_STR(ab_verdict_names[AB_NONE], "no difference shown yet");
    /* nothing seen: no verdict, p 1, the whole [0, 1] */
    reset();
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 2, 0.05, false, R);
    for (int m = 0; m < AB_METRICS; m++)
        CHECK(R[1].cmp[m].verdict == AB_NONE && R[1].cmp[m].p == 1);
    CHECK(R[0].success_lo == 0 && R[0].success_hi == 1 && isnan(R[0].success));
}

static void test_failures(void)
{
    reset();
    C[0][AB_REQ] = 1000, C[0][AB_FAIL] = 20;
    C[1][AB_REQ] = 1000, C[1][AB_FAIL] = 100;
    C[2][AB_REQ] = 1000, C[2][AB_FAIL] = 22;
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 3, 0.05, false, R);
    CHECK(R[1].cmp[AB_M_FAILURES].verdict == AB_WORSE);
    CHECK(R[1].cmp[AB_M_FAILURES].p < 0.05);
    CHECK(R[1].cmp[AB_M_FAILURES].arm_side == 100 && R[1].cmp[AB_M_FAILURES].control_side == 20);
    CHECK(R[2].cmp[AB_M_FAILURES].verdict == AB_NONE);
    CHECK(R[2].cmp[AB_M_FAILURES].p > 0.05);
    for (int m = AB_M_LATENCY; m < AB_METRICS; m++)
        CHECK(R[1].cmp[m].verdict == AB_NONE);
    /* the control is not compared with itself */
    CHECK(R[0].cmp[AB_M_FAILURES].verdict == AB_NONE && R[0].cmp[AB_M_FAILURES].n == 0);
    /* success rates with confidence sequences around them */
    CHECK(fabs(R[1].success - 0.9) < 1e-12);
    CHECK(R[1].success_lo < 0.9 && R[1].success_hi > 0.9 && R[1].success_hi < R[0].success_lo);
    /* better: far fewer failures than the control, on unequal shares */
    reset();
    C[0][AB_REQ] = 3000, C[0][AB_FAIL] = 150;
    C[1][AB_REQ] = 1000, C[1][AB_FAIL] = 5;
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 2, 0.05, false, R);
    CHECK(R[1].cmp[AB_M_FAILURES].verdict == AB_BETTER);
    /* the same rate on a quarter of the traffic: nothing */
    C[1][AB_FAIL] = 50;
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 2, 0.05, false, R);
    CHECK(R[1].cmp[AB_M_FAILURES].verdict == AB_NONE);
}

static void test_pairs_and_feedback(void)
{
    reset();
    C[0][AB_REQ] = C[1][AB_REQ] = 200;
    C[1][AB_LAT_SLOW] = 80, C[1][AB_LAT_FAST] = 20;   /* slower */
    C[1][AB_TTFT_SLOW] = 20, C[1][AB_TTFT_FAST] = 80; /* faster to the first token */
    C[1][AB_COST_MORE] = 52, C[1][AB_COST_LESS] = 48; /* a coin */
    C[0][AB_FB_POS] = 80, C[0][AB_FB_NEG] = 20;
    C[1][AB_FB_POS] = 40, C[1][AB_FB_NEG] = 60;
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 2, 0.05, false, R);
    CHECK(R[1].cmp[AB_M_LATENCY].verdict == AB_WORSE);
    CHECK(R[1].cmp[AB_M_TTFT].verdict == AB_BETTER);
    CHECK(R[1].cmp[AB_M_COST].verdict == AB_NONE);
    CHECK(R[1].cmp[AB_M_FEEDBACK].verdict == AB_WORSE);
    CHECK(R[1].cmp[AB_M_FEEDBACK].n == 80);
    CHECK(fabs(R[1].positive - 0.4) < 1e-12 && R[1].positive_lo < 0.4 && R[1].positive_hi > 0.4);
    CHECK(R[1].positive_hi < R[0].positive_lo || R[1].positive_hi < 0.8);
    /* the other way round: the arm liked more */
    C[0][AB_FB_POS] = 160, C[0][AB_FB_NEG] = 40;
    C[1][AB_FB_POS] = 195, C[1][AB_FB_NEG] = 5;
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 2, 0.05, false, R);
    CHECK(R[1].cmp[AB_M_FEEDBACK].verdict == AB_BETTER);
    /* a verdict exactly when the adjusted p is at or below alpha */
    for (int m = 0; m < AB_METRICS; m++)
        CHECK((R[1].cmp[m].verdict != AB_NONE) == (R[1].cmp[m].p <= 0.05 + 1e-12));
}

/* One simulated experiment of n requests over arms with shares w, failure
 * rates f, P(slower) s and P(negative feedback) g, looked at every `every`
 * requests: the first look with a verdict on any comparison, or 0. */
static uint64_t run(uint64_t *rng, size_t narms, const double *w, const double *f, const double *s,
                    const double *g, uint64_t n, uint64_t every, enum ab_verdict *what)
{
    reset();
    for (uint64_t i = 1; i <= n; i++) {
        double u = (double)(rnd_splitmix64_next(rng) >> 11) / 9007199254740992.0, cum = 0;
        size_t a = 0;
        while (a + 1 < narms && u >= (cum += w[a]))
            a++;
        double v = (double)(rnd_splitmix64_next(rng) >> 11) / 9007199254740992.0;
        C[a][AB_REQ]++;
        if (v < f[a])
            C[a][AB_FAIL]++;
        double x = (double)(rnd_splitmix64_next(rng) >> 11) / 9007199254740992.0;
        if (a && x < 0.9) /* most arm requests find a control one to pair with */
            C[a][x < 0.9 * s[a] ? AB_LAT_SLOW : AB_LAT_FAST]++;
        double y = (double)(rnd_splitmix64_next(rng) >> 11) / 9007199254740992.0;
        if (y < 0.3) /* three in ten requests get feedback */
            C[a][y < 0.3 * g[a] ? AB_FB_NEG : AB_FB_POS]++;
        if (i % every)
            continue;
        ab_analyze((const uint64_t(*)[AB_COUNTERS])C, narms, 0.05, false, R);
        for (size_t k = 1; k < narms; k++)
            for (int m = 0; m < AB_METRICS; m++)
                if (R[k].cmp[m].verdict != AB_NONE) {
                    *what = R[k].cmp[m].verdict;
                    return i;
                }
    }
    return 0;
}

static void test_judge(void)
{
    reset();
    C[0][AB_REQ] = C[1][AB_REQ] = C[2][AB_REQ] = 100;
    C[1][AB_JUDGE_LOSS] = 12, C[1][AB_JUDGE_WIN] = 0; /* twelve straight losses */
    C[2][AB_JUDGE_LOSS] = 30, C[2][AB_JUDGE_WIN] = 30; /* even */
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 3, 0.05, true, R);
    CHECK(R[1].cmp[AB_M_JUDGE].verdict == AB_WORSE);
    CHECK(R[1].cmp[AB_M_JUDGE].arm_side == 12 && R[1].cmp[AB_M_JUDGE].control_side == 0);
    CHECK(R[1].cmp[AB_M_JUDGE].n == 12 && R[1].cmp[AB_M_JUDGE].p <= 0.05);
    CHECK(R[2].cmp[AB_M_JUDGE].verdict == AB_NONE && R[2].cmp[AB_M_JUDGE].p > 0.05);
    /* the other way round: the arm preferred */
    C[1][AB_JUDGE_LOSS] = 5, C[1][AB_JUDGE_WIN] = 60;
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 3, 0.05, true, R);
    CHECK(R[1].cmp[AB_M_JUDGE].verdict == AB_BETTER);
    /* without a judge the counts are not compared (and not in the Bonferroni count) */
    ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 3, 0.05, false, R);
    CHECK(R[1].cmp[AB_M_JUDGE].verdict == AB_NONE && R[1].cmp[AB_M_JUDGE].p == 1 &&
          R[1].cmp[AB_M_JUDGE].n == 0);
}

/* Judge preference under equal arms: each judged pair is a loss, a win or
 * neither (a tie, a split verdict) with P(loss) = P(win), whatever the
 * judge's tie rate; looked at every 5 pairs, 1000 pairs per arm.  The two
 * arms' judge tests (4 of the 24 tests of 3 arms) may cross their
 * threshold in at most that share of alpha of the runs. */
static void test_judge_null(void)
{
    uint64_t rng = 4242;
    int runs = 1000, false_verdicts = 0;
    const double tie[3] = { 0.2, 0.5, 0.8 };
    for (int r = 0; r < runs; r++) {
        reset();
        bool hit = false;
        for (int i = 1; i <= 1000 && !hit; i++) {
            for (size_t a = 1; a < 3; a++) {
                double u = (double)(rnd_splitmix64_next(&rng) >> 11) / 9007199254740992.0, t = tie[r % 3];
                if (u >= t)
                    C[a][u < t + (1 - t) / 2 ? AB_JUDGE_LOSS : AB_JUDGE_WIN]++;
            }
            if (i % 5)
                continue;
            ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 3, 0.05, true, R);
            hit = R[1].cmp[AB_M_JUDGE].verdict != AB_NONE || R[2].cmp[AB_M_JUDGE].verdict != AB_NONE;
        }
        false_verdicts += hit;
    }
    printf("judge null: %d of %d runs (200 looks each) showed a preference that is not there\n", false_verdicts,
           runs);
    /* the judge's share of alpha is 4 tests of 24: 0.05 / 6 = 0.83 % of runs at most */
    CHECK(false_verdicts <= runs / 120 + 1);
    /* power: an arm losing 70 % of the agreeing verdicts is shown worse within 300 of them */
    int found = 0;
    for (int r = 0; r < 50; r++) {
        reset();
        for (int i = 0; i < 300; i++)
            C[1][(double)(rnd_splitmix64_next(&rng) >> 11) / 9007199254740992.0 < 0.7 ? AB_JUDGE_LOSS
                                                                                      : AB_JUDGE_WIN]++;
        ab_analyze((const uint64_t(*)[AB_COUNTERS])C, 2, 0.05, true, R);
        found += R[1].cmp[AB_M_JUDGE].verdict == AB_WORSE;
    }
    printf("judge power: 70/30 losses shown worse in %d of 50 runs of 300 verdicts\n", found);
    CHECK(found >= 40);
}

static void test_null_simulation(void)
{
    uint64_t rng = 12345;
    const double w[3] = { 0.5, 0.25, 0.25 }, f[3] = { 0.05, 0.05, 0.05 }, s[3] = { 0.5, 0.5, 0.5 },
                 g[3] = { 0.3, 0.3, 0.3 };
    int runs = 200, false_verdicts = 0;
    for (int r = 0; r < runs; r++) {
        enum ab_verdict what = AB_NONE;
        false_verdicts += run(&rng, 3, w, f, s, g, 4000, 40, &what) != 0;
    }
    printf("null: %d of %d runs (100 looks each) showed a difference that is not there\n", false_verdicts, runs);
    CHECK(false_verdicts <= runs * 5 / 100);
}

static void test_power(void)
{
    uint64_t rng = 777;
    const double w[2] = { 0.5, 0.5 }, f[2] = { 0.05, 0.15 }, s[2] = { 0.5, 0.5 }, g[2] = { 0.3, 0.3 };
    int runs = 50, found = 0;
    for (int r = 0; r < runs; r++) {
        enum ab_verdict what = AB_NONE;
        found += run(&rng, 2, w, f, s, g, 4000, 50, &what) != 0 && what == AB_WORSE &&
                 R[1].cmp[AB_M_FAILURES].verdict == AB_WORSE;
    }
    printf("power: 5%% vs 15%% failures shown worse in %d of %d runs of 4000 requests\n", found, runs);
    CHECK(found >= runs * 9 / 10);
}

int main(void)
{
    test_counts_and_names();
    test_failures();
    test_pairs_and_feedback();
    test_judge();
    test_judge_null();
    test_null_simulation();
    test_power();
    UNIT_DONE();
}
