/* decsim.h — the decision simulator: synthetic pair streams for named
 * scenarios, fed to the real decision code (verdict.h) with a look every
 * VERDICT_LOOK_EVERY pairs, to measure what the rules promise: how often
 * an identical candidate is flagged (false alarms), how soon a real
 * regression is caught, how often "ready" comes first, how often auto-stop
 * stops a candidate that is exactly at its bar.
 *
 * `shade simulate-decisions` prints the table (doc/shadow-report.md shows
 * it); tests/unit/test_verdict.c runs a fixed-seed smaller version as a
 * property test.
 */
#ifndef SHADE_DECSIM_H
#define SHADE_DECSIM_H

#include <stdbool.h>
#include <stdint.h>

#include "verdict.h"

struct decsim_scenario {
    const char *name, *what;
    bool null;              /* nothing planted: any alarm is a false alarm */
    double p_ok, c_ok;      /* success rates of the primary / the candidate (A/A = p_ok) */
    double lat_factor;      /* candidate latency multiplier */
    double lat_sigma;       /* per-leg log-normal latency noise */
    double determinism;     /* mean chance two primary answers are identical */
    double exact_drop;      /* the candidate's exact-match chance is this much lower */
    double aa_share;        /* fraction of pairs with an A/A leg */
};
extern const struct decsim_scenario decsim_scenarios[];
extern const unsigned decsim_nscenarios;

struct decsim_result {
    uint32_t runs;
    uint32_t alarm[VERDICT_FAMILIES]; /* runs whose first alarm came from this family */
    uint32_t alarms;                  /* runs with any alarm by the end */
    uint32_t ready_first;             /* runs declared ready before any alarm */
    uint32_t stops;                   /* runs auto-stopped */
    double alarm_median, alarm_p90;   /* pairs to the first alarm, over runs with one (NAN: none) */
    double ready_median;              /* pairs to "ready", over runs ready first */
    double stop_median;
};

/* Run `runs` streams of `pairs` pairs each (seed fixes everything).
 * Returns 0, or -1 when out of memory. */
int decsim_run(const struct decsim_scenario *sc, const struct verdict_rules *rules, uint32_t runs,
               uint32_t pairs, uint64_t seed, struct decsim_result *out);

/* `shade simulate-decisions [--runs N] [--pairs N] [--seed N]
 * [--scenario NAME] [--format text|json]`; argv[0] is the command name. */
int decsim_main(int argc, char **argv);

#endif
