/* abtest.h — the A/B experiment analysis: each arm against the control
 * (the first arm), always-valid comparisons and confidence sequences.
 * Pure: counts in, results out, no I/O (src/gateway/experiment.c keeps the
 * counts; `shade experiment report` reads them back from the store).
 *
 * Every comparison is a "share" test, as the rollout's (canary.h):
 *
 *   failures    under "the arm fails as often as the control", a failure
 *               comes from the arm as often as a request does: the arm's
 *               share of the failures against its realized share of the
 *               requests
 *   feedback    the arm's share of the negative feedback against its share
 *               of the feedback given
 *   latency,    paired: each arm request is paired with the newest unpaired
 *   ttft, cost  control request; "slower" (costlier) against "faster"
 *               (cheaper), H0 P = 1/2 (a sign test; ties say nothing)
 *   judge       (only when the experiment has a judge) a sample of the
 *               arm's requests also answered by the control's model, the
 *               two answers judged in both orders: losses against wins
 *               among the verdicts both orders agree on, H0 P = 1/2 (a
 *               sign test: under equal arms the two answers are
 *               exchangeable, and exchanging them swaps loss and win)
 *
 * each in both directions (worse, better) as beta-mixture e-values
 * (seq.h), Bonferroni over metrics x arms x 2 directions at alpha: the
 * chance that an experiment whose arms are all alike ever shows any
 * difference, however often it is looked at, is at most alpha.
 */
#ifndef SHADE_ABTEST_H
#define SHADE_ABTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An arm's counts, cumulative since the experiment began.  The pair counts
 * of the control arm are 0 (it is what the others are paired with). */
enum ab_counter {
    AB_REQ,        /* finished requests (a client that left is not counted) */
    AB_FAIL,       /* of them not 2xx */
    AB_LAT_SLOW,   /* pairs: the arm's latency above the control's (or it timed out) */
    AB_LAT_FAST,   /* pairs: below */
    AB_TTFT_SLOW,  /* streamed pairs, on time to first token */
    AB_TTFT_FAST,
    AB_COST_MORE,  /* pairs with both costs known: the arm's cost above the control's */
    AB_COST_LESS,
    AB_FB_POS,     /* feedback on the arm's requests: positive (score >= 0.5, thumbs up) */
    AB_FB_NEG,     /* negative */
    AB_JUDGE_LOSS, /* judged pairs (the arm's answer against the control's to the same request, both
                      orders agreeing): the judge prefers the control's */
    AB_JUDGE_WIN,  /* the arm's */
    AB_COUNTERS
};
extern const char *const ab_counter_names[AB_COUNTERS];

enum ab_metric { AB_M_FAILURES, AB_M_LATENCY, AB_M_TTFT, AB_M_COST, AB_M_FEEDBACK, AB_M_JUDGE, AB_METRICS };
extern const char *const ab_metric_names[AB_METRICS];

enum ab_verdict { AB_NONE, AB_BETTER, AB_WORSE };
extern const char *const ab_verdict_names[]; /* "no difference shown yet", "better", "worse" */

struct ab_comparison {
    double log_e_worse, log_e_better; /* the two directions' e-values, logs */
    double p;                         /* always-valid p, Bonferroni-adjusted: min(1, k / max e) */
    uint64_t n;                       /* observations behind it (failures, feedback or pairs) */
    uint64_t arm_side, control_side;  /* failures / negatives of each side, or slower / faster pairs */
    enum ab_verdict verdict;
};

struct ab_arm_result {
    double success, success_lo, success_hi;    /* rate of 2xx, with its (1 - alpha) confidence sequence */
    double positive, positive_lo, positive_hi; /* rate of positive feedback (NAN rate without feedback) */
    struct ab_comparison cmp[AB_METRICS];      /* against the control; all 0 for the control itself */
};

/* The metrics compared: AB_METRICS with a judge, else all but AB_M_JUDGE. */
int ab_metrics(bool judge);
/* The number of tests Bonferroni divides alpha by: metrics x (narms - 1) x 2. */
double ab_tests(size_t narms, bool judge);
/* Analyse narms arms (counts[0] is the control) at alpha into out[narms];
 * without a judge cmp[AB_M_JUDGE] stays empty (no verdict, p 1). */
void ab_analyze(const uint64_t (*counts)[AB_COUNTERS], size_t narms, double alpha, bool judge,
                struct ab_arm_result *out);

#endif
