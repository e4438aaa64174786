/* rollsim.h — the rollout simulator: simulated traffic for named
 * scenarios, split between a baseline and a canary by the real sticky
 * assignment (canary_bucket) and fed to the real rollout decision
 * (canary.h) with a check every ROLLSIM_CHECK_EVERY simulated seconds, to
 * measure what the rules promise: how often an equal canary is wrongly
 * rolled back, how much traffic a bad canary sees before it is rolled
 * back, whether a broken split freezes.
 *
 * `shade simulate-rollouts` prints the table (doc/rollouts.md shows it);
 * tests/unit/test_canary.c runs a fixed-seed smaller version as a property
 * test.  The model is written out at the top of rollsim.c.
 */
#ifndef SHADE_ROLLSIM_H
#define SHADE_ROLLSIM_H

#include <stdbool.h>
#include <stdint.h>

#include "canary.h"

#define ROLLSIM_CHECK_EVERY 10.0      /* seconds between checks */
#define ROLLSIM_MAX_SECONDS 21600.0   /* a run that has not decided by 6 h is "undecided" */

/* What the scenario should end in. */
enum rollsim_expect { RS_PROMOTE, RS_ROLLBACK, RS_FREEZE };

struct rollsim_scenario {
    const char *name, *what;
    bool null;                /* equal arms: any rollback is wrongful */
    enum rollsim_expect expect;
    double rate;              /* mean requests per second, both arms together */
    double p_base, p_can;     /* success rates outside the bad hour */
    double lat_factor;        /* the canary's latency multiplier */
    double ttft_factor;       /* the canary's time-to-first-token multiplier */
    double split_factor;      /* the canary gets this x the intended share (1: a sound split) */
    double bad_success;       /* during the bad hour both arms succeed at this rate (0: no bad hour) */
    double bad_slow;          /* and both arms are this much slower */
    unsigned users;           /* 0: every request is its own unit; else a Zipf(1) pool of this many */
    double cost_factor;       /* the canary's cost per request multiplier (0: the same as 1) */
    double refuse_extra;      /* the canary refuses this much more often than the baseline's 2 % */
    double quality_drop;      /* the canary's answers agree this much less with the baseline's */
    double judge_loss;        /* > 0: the judge gate is on, and the canary loses this share of the
                                 verdicts both orders agree on (0.5: the judge cannot tell) */
    double quality_sample;    /* share of answered canary requests paired (0: ROLLSIM_QUALITY_SAMPLE) */
};
extern const struct rollsim_scenario rollsim_scenarios[];
extern const unsigned rollsim_nscenarios;
const struct rollsim_scenario *rollsim_find(const char *name);

struct rollsim_result {
    uint32_t runs;
    uint32_t rollbacks, promotions, freezes, undecided;
    uint32_t rollback_family[CANARY_FAMILIES];
    uint32_t rollback_early;        /* rolled back at a step share below 25 % */
    double exposure_median, exposure_p90; /* canary requests served by the decision (runs with one) */
    double share_median;            /* the step's share at the decision */
    double seconds_median;          /* simulated seconds to the decision */
    double requests_per_run;        /* mean requests simulated per run (both arms) */
};

/* Run `runs` rollouts of one scenario under `rules` (seed fixes everything).
 * Returns 0, or -1 when out of memory. */
int rollsim_run(const struct rollsim_scenario *sc, const struct canary_rules *rules, uint32_t runs,
                uint64_t seed, struct rollsim_result *out);

/* The rules the simulator uses: canary_rules_default with every step's
 * min_seconds set to 60 (so a run finishes in simulated minutes), and the
 * quality gate on (ROLLSIM_QUALITY_SAMPLE of the canary's answers paired). */
#define ROLLSIM_QUALITY_SAMPLE 0.10
/* judged scenarios: every quality sample is judged; both orders agree on a
 * win or a loss with this chance (else a tie or a split verdict) */
#define ROLLSIM_JUDGE_AGREE 0.6
void rollsim_rules(struct canary_rules *r);

/* `shade simulate-rollouts [--runs N] [--seed N] [--scenario NAME]
 * [--format text|json]`; argv[0] is the command name. */
int rollsim_main(int argc, char **argv);

#endif
