/* test_canary.c — the rollout decision (canary.c) on small hand-made
 * counts (rollback by family, advancing through the steps, promotion only
 * when its tests pass, freeze and resume, nothing after the end), the
 * sticky assignment (canary_bucket) as a property over 10,000 units, and
 * the rollout simulator (rollsim.c) with a fixed seed as a property test. */
#include "canary.h"
#include "rollsim.h"
#include "seq.h"
#include "unit.h"

#include <math.h>

static struct canary_counts counts(uint64_t base_req, uint64_t base_fail, uint64_t can_req,
                                   uint64_t can_fail)
{
    struct canary_counts c;
    memset(&c, 0, sizeof c);
    c.base_req = base_req;
    c.base_fail = base_fail;
    c.can_req = can_req;
    c.can_fail = can_fail;
    /* every request a unit of its own (no unit sent twice) */
    c.base_units = base_req;
    c.can_units = can_req;
    return c;
}

static void test_rules_and_share(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    CHECK_EQ_INT(r.nsteps, 4);
    CHECK(r.steps[0].share == 1 && r.steps[1].share == 5 && r.steps[2].share == 25 &&
          r.steps[3].share == 50);
    CHECK(r.alpha_promote < r.alpha_rollback);
    CHECK(r.steps[0].min_seconds == 60 && r.steps[0].min_requests == 300);

    struct canary_state s;
    canary_init(&s, 0);
    CHECK_EQ_INT(s.phase, CP_CANARY);
    CHECK(canary_share(&s, &r) == 1);
    s.step = 2;
    CHECK(canary_share(&s, &r) == 25);
    s.phase = CP_FROZEN; /* frozen keeps its share: the split stays as it is */
    CHECK(canary_share(&s, &r) == 25);
    s.phase = CP_PROMOTED;
    CHECK(canary_share(&s, &r) == 100);
    s.phase = CP_ROLLED_BACK;
    CHECK(canary_share(&s, &r) == 0);
    CHECK_EQ_STR(canary_phase_names[CP_FROZEN], "frozen");
    CHECK_EQ_STR(canary_action_names[CA_ROLLBACK], "rollback");
    CHECK_EQ_STR(canary_family_names[CF_TTFT], "ttft");
}

/* A canary failing every request is rolled back at the first check, before
 * min_seconds, by the failures family; afterwards nothing changes. */
static void test_rollback_failures(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    struct canary_state s;
    struct canary_decision d;
    canary_init(&s, 0);
    struct canary_counts c = counts(990, 10, 10, 10); /* 1 %: 10 of 20 failures from the canary */
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK);
    CHECK_EQ_INT(d.family, CF_FAILURES);
    CHECK_EQ_INT(s.phase, CP_ROLLED_BACK);
    CHECK(canary_share(&s, &r) == 0);
    CHECK(strstr(d.reason, "fails more than the baseline") != NULL);
    CHECK(strstr(d.reason, "10 of 20 failures") != NULL);
    /* the e-value is the beta mixture of 10 canary failures against 10 at w = 1 % */
    CHECK(fabs(s.log_e[CF_FAILURES] - seq_log_e(10, 10, 0.01)) < 1e-12);
    CHECK(s.log_e_max[CF_FAILURES] >= log(CANARY_FAMILIES / r.alpha_rollback));

    /* nothing changes once rolled back, whatever comes */
    struct canary_state before = s;
    c = counts(0, 0, 1000, 0);
    c.lat_fast = 1000;
    canary_add(&s, &c);
    canary_check(&s, &r, 1000, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK_EQ_INT(s.phase, CP_ROLLED_BACK);
    CHECK_EQ_INT(s.step, before.step);
    CHECK(s.log_e[CF_FAILURES] == before.log_e[CF_FAILURES]);

    /* failures in proportion to the split are no evidence: 1 of 100 at 1 % */
    canary_init(&s, 0);
    c = counts(9900, 99, 100, 1);
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK(s.log_e[CF_FAILURES] < 0.5);
}

/* Latency: E_sign(a, 0) = (2^(a+1) - 1) / (a + 1): 8 slow pairs of 8 give
 * 56.8 < 3 / 0.05 = 60, 9 of 9 give 102.3: the rollback comes at the 9th. */
static void test_rollback_latency(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    struct canary_state s;
    struct canary_decision d;
    CHECK(fabs(exp(seq_log_e_sign(8, 0)) - 511.0 / 9) < 1e-6);
    CHECK(fabs(exp(seq_log_e_sign(9, 0)) - 102.3) < 1e-6);
    canary_init(&s, 0);
    struct canary_counts c = counts(792, 8, 8, 0);
    c.lat_slow = 8;
    c.lat_notfast = 8;
    canary_add(&s, &c);
    canary_check(&s, &r, 10, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK_EQ_INT(s.phase, CP_CANARY);
    c = counts(99, 1, 1, 0);
    c.lat_slow = 1;
    c.lat_notfast = 1;
    canary_add(&s, &c);
    canary_check(&s, &r, 20, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK);
    CHECK_EQ_INT(d.family, CF_LATENCY);
    CHECK(strstr(d.reason, "latency is more than 1.20x") != NULL);
    CHECK(strstr(d.reason, "9 of 9") != NULL);

    /* TTFT the same, its own family */
    canary_init(&s, 0);
    c = counts(1980, 20, 20, 0);
    c.lat_slow = 5;
    c.lat_other = 15;
    c.ttft_slow = 12;
    canary_add(&s, &c);
    canary_check(&s, &r, 10, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK);
    CHECK_EQ_INT(d.family, CF_TTFT);
    CHECK(strstr(d.reason, "time to first token") != NULL);
}

/* Equal arms: advance after min_seconds and min_requests, evidence carried;
 * promote at the last step only once success and latency are shown. */
static void test_advance_and_promote(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    for (size_t k = 0; k < r.nsteps; k++) /* the counts below are laid out for 100 */
        r.steps[k].min_requests = 100;
    struct canary_state s;
    struct canary_decision d;
    canary_init(&s, 0);
    /* step 1 %: the canary 100 of 10,000 requests, 1 % failures on both arms */
    struct canary_counts c = counts(9900, 99, 100, 1);
    c.lat_slow = 40, c.lat_other = 60, c.lat_fast = 50, c.lat_notfast = 50;
    c.ttft_slow = 20, c.ttft_other = 30;
    canary_add(&s, &c);
    canary_check(&s, &r, 30, &d);
    CHECK_EQ_INT(d.action, CA_NONE); /* 30 s < min_seconds */
    canary_check(&s, &r, 60, &d);
    CHECK_EQ_INT(d.action, CA_ADVANCE);
    CHECK_EQ_INT(s.step, 1);
    CHECK(canary_share(&s, &r) == 5);
    CHECK(s.step_started == 60);
    CHECK_EQ_INT(s.cur.can_req, 0);
    CHECK_EQ_INT(s.total.can_req, 100);
    for (int f = 0; f < CANARY_FAMILIES; f++)
        CHECK(s.log_carry[f] == s.log_e[f]);
    double carried = s.log_carry[CF_LATENCY];
    CHECK(carried < 0); /* 40 slow of 100 is evidence for H0 */
    CHECK(strstr(d.reason, "on to 5%") != NULL);

    /* step 5 %: 60 s pass but only 50 canary requests: hold */
    c = counts(950, 10, 50, 0);
    c.lat_slow = 20, c.lat_other = 30, c.lat_fast = 25, c.lat_notfast = 25;
    canary_add(&s, &c);
    canary_check(&s, &r, 130, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK(fabs(s.log_e[CF_LATENCY] - (carried + seq_log_e_sign(20, 30))) < 1e-12);
    c = counts(950, 9, 50, 1);
    c.lat_slow = 20, c.lat_other = 30, c.lat_fast = 25, c.lat_notfast = 25;
    canary_add(&s, &c);
    canary_check(&s, &r, 140, &d);
    CHECK_EQ_INT(d.action, CA_ADVANCE);
    CHECK_EQ_INT(s.step, 2);

    /* step 25 % */
    c = counts(300, 3, 100, 1);
    c.lat_slow = 40, c.lat_other = 60, c.lat_fast = 50, c.lat_notfast = 50;
    canary_add(&s, &c);
    canary_check(&s, &r, 199, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    canary_check(&s, &r, 200, &d);
    CHECK_EQ_INT(d.action, CA_ADVANCE);
    CHECK_EQ_INT(s.step, 3);
    CHECK(canary_share(&s, &r) == 50);

    /* the last step (50 %): held long enough, but latency "faster than
     * 1.5x" is 200 of 400 pairs: not shown, no promotion */
    c = counts(100, 1, 100, 1);
    c.lat_slow = 40, c.lat_other = 60, c.lat_fast = 50, c.lat_notfast = 50;
    canary_add(&s, &c);
    canary_check(&s, &r, 300, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK_EQ_INT(s.phase, CP_CANARY);
    CHECK_EQ_INT(s.total.can_req, 400);
    CHECK_EQ_INT(s.total.lat_fast, 200);
    CHECK(fabs(s.log_promote_success - seq_log_e(396, 4, 0.95)) < 1e-12);
    CHECK(s.log_promote_success >= log(1 / r.alpha_promote)); /* success is shown */
    CHECK(s.log_promote_latency < log(1 / r.alpha_promote));  /* latency is not */

    /* 150 more pairs, all within 1.5x: 350 of 550 is shown at 1 % */
    c = counts(150, 1, 150, 1);
    c.lat_slow = 60, c.lat_other = 90, c.lat_fast = 150;
    canary_add(&s, &c);
    CHECK(seq_log_e_sign(350, 200) >= log(100));
    canary_check(&s, &r, 310, &d);
    CHECK_EQ_INT(d.action, CA_PROMOTE);
    CHECK_EQ_INT(s.phase, CP_PROMOTED);
    CHECK(canary_share(&s, &r) == 100);
    CHECK(strstr(d.reason, "550 of 550") == NULL);
    CHECK(strstr(d.reason, "350 of 550 pairs") != NULL);

    /* nothing changes once promoted, not even a dreadful canary */
    c = counts(0, 0, 100, 100);
    c.lat_slow = 100;
    canary_add(&s, &c);
    canary_check(&s, &r, 400, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK_EQ_INT(s.phase, CP_PROMOTED);

    /* success not shown blocks promotion: 95 % success exactly (the bar) */
    canary_init(&s, 0);
    s.step = 3;
    c = counts(1000, 10, 1000, 50);
    c.lat_slow = 100, c.lat_other = 900, c.lat_fast = 1000;
    canary_add(&s, &c);
    canary_check(&s, &r, 60, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK); /* 50 of 60 failures at 50 %: failures family */
    CHECK_EQ_INT(d.family, CF_FAILURES);
    canary_init(&s, 0);
    s.step = 3;
    c = counts(1000, 50, 1000, 50); /* both arms at 95 %: no alarm, no promotion */
    c.lat_slow = 100, c.lat_other = 900, c.lat_fast = 1000;
    canary_add(&s, &c);
    canary_check(&s, &r, 60, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK(s.log_promote_latency >= log(1 / r.alpha_promote));
    CHECK(s.log_promote_success < log(1 / r.alpha_promote));
}

/* Sample-ratio mismatch: freeze, hold, resume. */
static void test_srm(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    for (size_t k = 0; k < r.nsteps; k++) /* the counts below are laid out for 100 */
        r.steps[k].min_requests = 100;
    struct canary_state s;
    struct canary_decision d;
    canary_init(&s, 0);
    struct canary_counts c = counts(9500, 95, 500, 5); /* 5 % of requests at a 1 % share */
    canary_add(&s, &c);
    canary_check(&s, &r, 10, &d);
    CHECK_EQ_INT(d.action, CA_FREEZE);
    CHECK_EQ_INT(s.phase, CP_FROZEN);
    CHECK(strstr(d.reason, "sample-ratio mismatch") != NULL);
    CHECK(strstr(d.reason, "500 of 10000") != NULL);
    CHECK(canary_share(&s, &r) == 1);
    /* too few canary requests is a mismatch too (two-sided) */
    struct canary_state s2;
    canary_init(&s2, 0);
    c = counts(20000, 0, 50, 0); /* 0.25 % at 1 % */
    canary_add(&s2, &c);
    canary_check(&s2, &r, 10, &d);
    CHECK_EQ_INT(d.action, CA_FREEZE);
    /* a small, plausible deviation is not */
    canary_init(&s2, 0);
    c = counts(9880, 0, 120, 0); /* 120 where 100 are expected: z = 2 */
    canary_add(&s2, &c);
    canary_check(&s2, &r, 10, &d);
    CHECK_EQ_INT(d.action, CA_NONE);

    /* with sticky units, the requests may be far from the share while the
     * units are not: a heavy client on the canary is no mismatch, and its
     * failures are compared with the realized request split */
    canary_init(&s2, 0);
    c = counts(9000, 90, 1000, 10); /* 10 % of requests at a 1 % share... */
    c.base_units = 990, c.can_units = 10; /* ...from 1 % of the units */
    canary_add(&s2, &c);
    canary_check(&s2, &r, 10, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK(s2.log_e[CF_FAILURES] < 0.5); /* 10 of 100 failures at a 10 % request share */

    /* frozen: checks do nothing, even after min_seconds */
    canary_check(&s, &r, 100, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK_EQ_INT(s.phase, CP_FROZEN);
    CHECK_EQ_INT(s.step, 0);
    /* resume: the step starts again from zero counts; the total stays */
    canary_resume(&s, 200);
    CHECK_EQ_INT(s.phase, CP_CANARY);
    CHECK(s.step_started == 200);
    CHECK_EQ_INT(s.cur.can_req, 0);
    CHECK_EQ_INT(s.total.can_req, 500);
    c = counts(9900, 99, 100, 1);
    canary_add(&s, &c);
    canary_check(&s, &r, 250, &d);
    CHECK_EQ_INT(d.action, CA_NONE); /* 50 s of the restarted step */
    canary_check(&s, &r, 260, &d);
    CHECK_EQ_INT(d.action, CA_ADVANCE);
    /* resume does nothing unless frozen */
    canary_resume(&s, 300);
    CHECK_EQ_INT(s.phase, CP_CANARY);
    CHECK(s.step_started == 260);
}

/* A resume never raises the evidence: a step's e-value below the carried
 * one is kept, one above it is dropped. */
static void test_resume_evidence(void)
{
    struct canary_state s;
    canary_init(&s, 0);
    s.phase = CP_FROZEN;
    s.log_carry[CF_FAILURES] = 1.0, s.log_e[CF_FAILURES] = 0.4;  /* the step pointed away */
    s.log_carry[CF_LATENCY] = 0.5, s.log_e[CF_LATENCY] = 2.0;    /* the step pointed at an alarm */
    canary_resume(&s, 10);
    CHECK(s.log_carry[CF_FAILURES] == 0.4);
    CHECK(s.log_carry[CF_LATENCY] == 0.5);
    CHECK_EQ_INT(s.phase, CP_CANARY);
}

/* Stickiness: 10,000 units across 1 -> 5 -> 25 -> 50 -> 100 % never move
 * from the canary back to the baseline, and each step's count is within
 * 4.5 binomial standard deviations of the target; a second salt picks an
 * independent half (overlap ~ 25 %). */
static void test_sticky(void)
{
    enum { N = 10000 };
    static const double ramp[] = { 1, 5, 25, 50, 100 };
    static bool on[N];
    static uint32_t bucket_a[N];
    memset(on, 0, sizeof on);
    char id[32];
    int out_of_range = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof id, "user-%d", i);
        bucket_a[i] = canary_bucket("rollout-a", 9, id, (size_t)n);
        out_of_range += bucket_a[i] >= 10000;
    }
    CHECK_EQ_INT(out_of_range, 0);
    int switched_back = 0;
    for (size_t k = 0; k < sizeof ramp / sizeof ramp[0]; k++) {
        double p = ramp[k] / 100;
        int count = 0;
        for (int i = 0; i < N; i++) {
            int n = snprintf(id, sizeof id, "user-%d", i);
            /* recomputed at each step, as the gateway does per request */
            bool now = canary_bucket("rollout-a", 9, id, (size_t)n) < ramp[k] * 100;
            switched_back += on[i] && !now;
            on[i] = now;
            count += now;
        }
        double mean = N * p, sd = sqrt(N * p * (1 - p));
        printf("sticky: %5.0f %% -> %5d units on the canary (expected %.0f +- %.0f)\n", ramp[k], count,
               mean, sd);
        CHECK(fabs(count - mean) <= 4.5 * sd + 1e-9);
    }
    CHECK_EQ_INT(switched_back, 0);

    int a = 0, b = 0, both = 0;
    for (int i = 0; i < N; i++) {
        int n = snprintf(id, sizeof id, "user-%d", i);
        bool in_a = bucket_a[i] < 5000, in_b = canary_bucket("rollout-b", 9, id, (size_t)n) < 5000;
        a += in_a;
        b += in_b;
        both += in_a && in_b;
    }
    printf("salts: %d and %d units at 50 %%, %d in both (expected 2500 +- 43)\n", a, b, both);
    CHECK(abs(both - 2500) <= 4.5 * 43.3);
    /* the separator: salt "ab" + unit "c" is not salt "a" + unit "bc" */
    int differ = 0;
    for (int i = 0; i < 20; i++) {
        char u1[16], u2[16];
        int n1 = snprintf(u1, sizeof u1, "c%d", i), n2 = snprintf(u2, sizeof u2, "bc%d", i);
        differ += canary_bucket("ab", 2, u1, (size_t)n1) != canary_bucket("a", 1, u2, (size_t)n2);
    }
    CHECK(differ >= 19);
    /* deterministic */
    CHECK(canary_bucket("s", 1, "u", 1) == canary_bucket("s", 1, "u", 1));
}

/* Refusals are compared like failures, among the answered requests: the
 * canary's share of refusals against its share of answers.  The family is
 * tested only when the rules say so, and the threshold counts the families
 * tested. */
static void test_refusals(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    CHECK(r.refusals && !r.quality);
    CHECK_EQ_INT(canary_families_on(&r), 5);
    struct canary_state s;
    struct canary_decision d;
    canary_init(&s, 0);
    /* 1 %: 990 baseline answers, 2 % refused; 10 canary answers, 5 refused */
    struct canary_counts c = counts(990, 0, 10, 0);
    c.base_refusal = 20;
    c.can_refusal = 5;
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK);
    CHECK_EQ_INT(d.family, CF_REFUSALS);
    CHECK(strstr(d.reason, "refuses more than the baseline") != NULL);
    CHECK(strstr(d.reason, "5 of 25 refusals") != NULL);
    CHECK(fabs(s.log_e[CF_REFUSALS] - seq_log_e(5, 20, 0.01)) < 1e-12);

    /* the realized share of *answered* requests: a canary that fails half
     * its requests answers less, so its share of refusals is compared with
     * its (smaller) share of answers — failures are the other family's */
    canary_init(&s, 0);
    c = counts(900, 0, 100, 50);
    c.base_refusal = 90;
    c.can_refusal = 5; /* 5 of 50 answers refused: 10 %, as the baseline */
    canary_add(&s, &c);
    r.nsteps = 1;
    r.steps[0].min_seconds = 1e9;
    canary_check(&s, &r, 5, &d);
    CHECK(fabs(s.log_e[CF_REFUSALS] - seq_log_e(5, 90, 50.0 / 950)) < 1e-12);
    CHECK(s.log_e[CF_REFUSALS] < 1);

    /* off: never an alarm, and one family fewer shares alpha */
    canary_rules_default(&r);
    r.refusals = false;
    CHECK_EQ_INT(canary_families_on(&r), 4);
    canary_init(&s, 0);
    c = counts(990, 0, 10, 0);
    c.can_refusal = 10;
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK(s.log_e_max[CF_REFUSALS] == 0);
}

/* The quality gate: a sign test on the sampled pairs (worse than
 * quality_margin or not), only when the rules test it. */
static void test_quality(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    struct canary_state s;
    struct canary_decision d;
    canary_init(&s, 0);
    struct canary_counts c = counts(990, 0, 10, 0);
    c.qual_worse = 30;
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_NONE); /* off by default: 30 worse pairs say nothing */
    r.quality = true;
    CHECK_EQ_INT(canary_families_on(&r), 6);
    canary_init(&s, 0);
    c.qual_worse = 8;
    c.qual_other = 2;
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_NONE); /* 8 of 10: not yet e >= 120 */
    CHECK(fabs(s.log_e[CF_QUALITY] - seq_log_e_sign(8, 2)) < 1e-12);
    c = counts(0, 0, 0, 0);
    c.qual_worse = 20;
    canary_add(&s, &c);
    canary_check(&s, &r, 6, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK);
    CHECK_EQ_INT(d.family, CF_QUALITY);
    CHECK(strstr(d.reason, "answers are worse than the baseline's by more than 0.10") != NULL);
    CHECK(strstr(d.reason, "28 of 30") != NULL);
    CHECK(s.log_e_max[CF_QUALITY] >= log(6 / r.alpha_rollback));
}

/* The judge gate: a sign test on losses against wins among the verdicts
 * both orders agreed on, only when the rules test it; alpha shared with
 * the families on (7 with refusals, quality and judge). */
static void test_judge(void)
{
    struct canary_rules r;
    canary_rules_default(&r);
    CHECK(!r.judge);
    r.quality = true;
    struct canary_state s;
    struct canary_decision d;
    canary_init(&s, 0);
    struct canary_counts c = counts(990, 0, 10, 0);
    c.judge_loss = 40;
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_NONE); /* off: 40 losses say nothing */
    CHECK(s.log_e[CF_JUDGE] == 0);
    r.judge = true;
    CHECK(canary_family_on(&r, CF_JUDGE));
    CHECK_EQ_INT(canary_families_on(&r), 7);
    canary_init(&s, 0);
    c.judge_loss = 9;
    c.judge_win = 3;
    canary_add(&s, &c);
    canary_check(&s, &r, 5, &d);
    CHECK_EQ_INT(d.action, CA_NONE); /* 9 of 12: not yet e >= 140 */
    CHECK(fabs(s.log_e[CF_JUDGE] - seq_log_e_sign(9, 3)) < 1e-12);
    /* wins count against: as many wins as losses pull the e-value down */
    struct canary_state t = s;
    c = counts(0, 0, 0, 0);
    c.judge_win = 30;
    canary_add(&t, &c);
    canary_check(&t, &r, 6, &d);
    CHECK_EQ_INT(d.action, CA_NONE);
    CHECK(t.log_e[CF_JUDGE] < 0);
    c = counts(0, 0, 0, 0);
    c.judge_loss = 20;
    canary_add(&s, &c);
    canary_check(&s, &r, 6, &d);
    CHECK_EQ_INT(d.action, CA_ROLLBACK);
    CHECK_EQ_INT(d.family, CF_JUDGE);
    CHECK(strstr(d.reason, "judge prefers the baseline") != NULL);
    CHECK(strstr(d.reason, "lost 29 and won 3") != NULL);
    CHECK(s.log_e_max[CF_JUDGE] >= log(7 / r.alpha_rollback));
    CHECK(strcmp(canary_family_names[CF_JUDGE], "judge") == 0);
    /* the same counts without the judge family: quality's threshold is
     * 6 / alpha again (only the families on share alpha) */
    r.judge = false;
    CHECK_EQ_INT(canary_families_on(&r), 6);
}

/* The property test: the rollout simulator with a fixed seed, fewer runs
 * than `make bench-rollouts`.  The bounds leave room for sampling error:
 * 200 runs at a true 5 % exceed 20 in under 0.2 % of seeds. */
static void test_simulator(void)
{
    struct canary_rules rules;
    rollsim_rules(&rules);
    CHECK(rules.steps[0].min_seconds == 60);
    CHECK(rules.refusals && rules.quality); /* the A/A scenarios run with every gate */
    static const struct {
        const char *name;
        uint32_t runs;
    } want[] = { { "aa", 200 }, { "aa_bad_hour", 100 }, { "aa_sticky_users", 100 }, { "latency_x1.5", 100 },
                 { "errors_plus5", 100 }, { "broken_split", 100 }, { "refuses_plus10", 100 },
                 { "quality_drop0.3", 100 }, { "aa_judged", 200 }, { "judge_lose60_s50", 100 },
                 { "dead", 50 } };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const struct rollsim_scenario *sc = rollsim_find(want[k].name);
        CHECK(sc != NULL);
        if (!sc)
            continue;
        struct rollsim_result r;
        CHECK(rollsim_run(sc, &rules, want[k].runs, 20261203, &r) == 0);
        printf("simulated %-14s rollbacks %3u/%u (%3u below 25 %%), promoted %3u, frozen %3u, "
               "undecided %u, median exposure %.0f\n",
               sc->name, r.rollbacks, r.runs, r.rollback_early, r.promotions, r.freezes, r.undecided,
               r.exposure_median);
        CHECK_EQ_INT(r.rollbacks + r.promotions + r.freezes + r.undecided, r.runs);
        if (strcmp(sc->name, "aa") == 0) {
            CHECK(r.rollbacks <= 10); /* wrongful, at alpha 5 % */
            CHECK(r.freezes <= 2);    /* srm_alpha 0.1 % per step */
            CHECK(r.promotions >= 185);
        } else if (strcmp(sc->name, "aa_bad_hour") == 0) {
            CHECK(r.rollbacks <= 10);
            CHECK(r.freezes <= 2);
        } else if (strcmp(sc->name, "aa_sticky_users") == 0) {
            /* heavy users on one arm: neither a mismatch nor a failure alarm
             * (the split is tested on units, failures against the realized
             * request split) */
            CHECK(r.rollbacks <= 10);
            CHECK(r.freezes <= 5);
            CHECK(r.promotions >= 85);
        } else if (strcmp(sc->name, "latency_x1.5") == 0) {
            CHECK(r.rollback_family[CF_LATENCY] >= 95);
            CHECK(r.promotions == 0);
        } else if (strcmp(sc->name, "errors_plus5") == 0) {
            CHECK(r.rollback_family[CF_FAILURES] >= 95);
            CHECK(r.rollback_early >= 80); /* most before 25 % */
            CHECK(r.promotions == 0);
        } else if (strcmp(sc->name, "refuses_plus10") == 0) {
            CHECK(r.rollback_family[CF_REFUSALS] >= 95);
            CHECK(r.rollback_early >= 90);
            CHECK(r.promotions == 0);
        } else if (strcmp(sc->name, "quality_drop0.3") == 0) {
            CHECK(r.rollback_family[CF_QUALITY] >= 95);
            CHECK(r.promotions == 0);
        } else if (strcmp(sc->name, "aa_judged") == 0) {
            CHECK(r.rollbacks <= 10); /* wrongful, with the judge family on too */
            CHECK(r.promotions >= 185);
        } else if (strcmp(sc->name, "judge_lose60_s50") == 0) {
            CHECK(r.rollback_family[CF_JUDGE] >= 80); /* 95 % at 1000 runs */
        } else if (strcmp(sc->name, "broken_split") == 0) {
            CHECK(r.freezes >= 95);
            CHECK(r.promotions == 0);
        } else {
            CHECK_EQ_INT(r.rollback_family[CF_FAILURES], r.runs); /* dead */
            CHECK_EQ_INT(r.rollback_early, r.runs);
            CHECK(r.exposure_median <= 30);
        }
    }
}

int main(void)
{
    test_resume_evidence();
    test_rules_and_share();
    test_rollback_failures();
    test_rollback_latency();
    test_advance_and_promote();
    test_srm();
    test_refusals();
    test_quality();
    test_judge();
    test_sticky();
    test_simulator();
    UNIT_DONE();
}
