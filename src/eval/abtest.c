/* abtest.c — the A/B experiment analysis (abtest.h). */
#include "abtest.h"

#include <math.h>
#include <string.h>

#include "seq.h"

const char *const ab_counter_names[AB_COUNTERS] = {
    "requests",    "failures",    "latency_slower", "latency_faster",    "ttft_slower",
    "ttft_faster", "cost_higher", "cost_lower",     "feedback_positive", "feedback_negative",
    "judge_losses", "judge_wins",
};
const char *const ab_metric_names[AB_METRICS] = { "failures", "latency", "ttft", "cost", "feedback", "judge" };
const char *const ab_verdict_names[] = { "no difference shown yet", "better", "worse" };

int ab_metrics(bool judge) { return judge ? AB_METRICS : AB_METRICS - 1; }

double ab_tests(size_t narms, bool judge)
{
    return narms > 1 ? (double)ab_metrics(judge) * (double)(narms - 1) * 2 : 1;
}

/* A share test: a of the events from the arm, b from the control, where
 * the arm's share under H0 is w: worse when a's share is above w, better
 * when below.  w outside (0, 1) (no requests on a side): no evidence. */
static void share_test(struct ab_comparison *c, uint64_t a, uint64_t b, double w)
{
    c->arm_side = a;
    c->control_side = b;
    c->n = a + b;
    if (!(w > 0 && w < 1))
        return;
    c->log_e_worse = seq_log_e((double)a, (double)b, w);
    c->log_e_better = seq_log_e_below((double)a, (double)b, w);
}

/* A paired sign test: `worse` pairs against `better` pairs, H0 1/2. */
static void sign_test(struct ab_comparison *c, uint64_t worse, uint64_t better)
{
    c->arm_side = worse;
    c->control_side = better;
    c->n = worse + better;
    c->log_e_worse = seq_log_e_sign((double)worse, (double)better);
    c->log_e_better = seq_log_e_sign((double)better, (double)worse);
}

void ab_analyze(const uint64_t (*counts)[AB_COUNTERS], size_t narms, double alpha, bool judge,
                struct ab_arm_result *out)
{
    int nm = ab_metrics(judge);
    double k = ab_tests(narms, judge), thr = log(k / alpha);
    const uint64_t *c0 = counts[0];
    for (size_t i = 0; i < narms; i++) {
        const uint64_t *c = counts[i];
        struct ab_arm_result *r = &out[i];
        memset(r, 0, sizeof *r);
        uint64_t ok = c[AB_REQ] >= c[AB_FAIL] ? c[AB_REQ] - c[AB_FAIL] : 0;
        r->success = c[AB_REQ] ? (double)ok / (double)c[AB_REQ] : NAN;
        seq_rate_cs((double)ok, (double)c[AB_FAIL], alpha, &r->success_lo, &r->success_hi);
        uint64_t fb = c[AB_FB_POS] + c[AB_FB_NEG];
        r->positive = fb ? (double)c[AB_FB_POS] / (double)fb : NAN;
        seq_rate_cs((double)c[AB_FB_POS], (double)c[AB_FB_NEG], alpha, &r->positive_lo, &r->positive_hi);
        for (int m = 0; m < AB_METRICS; m++)
            r->cmp[m].p = 1;
        if (i == 0)
            continue;
        uint64_t nreq = c[AB_REQ] + c0[AB_REQ];
        share_test(&r->cmp[AB_M_FAILURES], c[AB_FAIL], c0[AB_FAIL], nreq ? (double)c[AB_REQ] / (double)nreq : 0);
        uint64_t fb0 = c0[AB_FB_POS] + c0[AB_FB_NEG];
        share_test(&r->cmp[AB_M_FEEDBACK], c[AB_FB_NEG], c0[AB_FB_NEG],
                   fb + fb0 ? (double)fb / (double)(fb + fb0) : 0);
        sign_test(&r->cmp[AB_M_LATENCY], c[AB_LAT_SLOW], c[AB_LAT_FAST]);
        sign_test(&r->cmp[AB_M_TTFT], c[AB_TTFT_SLOW], c[AB_TTFT_FAST]);
        sign_test(&r->cmp[AB_M_COST], c[AB_COST_MORE], c[AB_COST_LESS]);
        if (judge)
            sign_test(&r->cmp[AB_M_JUDGE], c[AB_JUDGE_LOSS], c[AB_JUDGE_WIN]);
        for (int m = 0; m < nm; m++) {
            struct ab_comparison *x = &r->cmp[m];
            double le = x->log_e_worse > x->log_e_better ? x->log_e_worse : x->log_e_better;
            x->p = le > 0 ? fmin(1, k * exp(-le)) : 1;
            x->verdict = x->log_e_worse >= thr ? AB_WORSE : x->log_e_better >= thr ? AB_BETTER : AB_NONE;
        }
    }
}
