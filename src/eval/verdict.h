/* verdict.h — the shadow decision: is the candidate worse than the primary
 * (an alarm), good enough for a canary (ready), or is more data needed?
 *
 * One streaming state fed one pair at a time, in the order the pairs were
 * stored, and one decision function that may be called after any pair: the
 * report (which replays the store), the live analysis and the decision
 * simulator (src/eval/decsim.c) all run this code, so the figures the
 * simulator prints are the figures of the real rules.
 *
 * Every test is an e-process (seq.h), so the decision stays valid however
 * often it is taken.  Each keeps its running maximum: a threshold crossed
 * once stays crossed (the always-valid p-value is 1 / that maximum).
 *
 *   alarms (union: Bonferroni over VERDICT_FAMILIES at alpha)
 *     success   paired, on discordant pairs: primary ok / candidate failed
 *               against the reverse, H0 "candidate not worse"
 *     latency   paired sign test: candidate slower than latency_margin x
 *               the primary's latency, a candidate timeout counting as
 *               slower, H0 "median ratio <= latency_margin"
 *     quality   per comparator, on pairs with both a candidate and an A/A
 *               comparison, the sign of c(primary, cand) - c(primary, A/A)
 *               (exact when the candidate is the primary); the family's
 *               e-value is the average over the comparators
 *     judge     losses against wins
 *   ready (intersection: each at alpha_ready, and no alarm)
 *     success   the candidate's own successes against success_min
 *     latency   faster than latency_ratio_max x the primary in most pairs
 *     quality   per comparator, non-inferiority: the mean paired
 *               difference is above -quality_margin (betting e-process)
 */
#ifndef SHADE_VERDICT_H
#define SHADE_VERDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "seq.h"

/* The comparators that are tested, in store.h's column order
 * (refusal_primary is the primary's own rate: context, never tested). */
enum verdict_cmp_better { VC_HIGHER, VC_LOWER, VC_NEAR_ONE };
#define VERDICT_NCMP 10
extern const char *const verdict_cmp_names[VERDICT_NCMP];
extern const enum verdict_cmp_better verdict_cmp_better[VERDICT_NCMP];
/* A comparator's raw value as an agreement score in [0, 1], higher =
 * closer to the primary: the value, 1 - value (refusal_other) or
 * max(0, 1 - |value - 1|) (length_ratio).  NAN stays NAN. */
double verdict_agreement(int cmp, double raw);

enum { VF_SUCCESS, VF_LATENCY, VF_QUALITY, VF_JUDGE, VERDICT_FAMILIES };
extern const char *const verdict_family_names[VERDICT_FAMILIES];

struct verdict_rules {
    double alpha;             /* 0.05: alarms, all families together */
    double alpha_ready;       /* 0.05: each readiness test */
    double success_min;       /* 0.95 */
    double latency_margin;    /* 1.2: slower than this x the primary alarms */
    double latency_ratio_max; /* 1.5: faster than this x in most pairs: ready */
    double quality_margin;    /* 0.10: a comparator may be at most this much worse */
    uint32_t min_pairs;       /* 30: no "ready" before this many pairs */
    /* auto-stop: a CUSUM on the candidate's success, H0 "rate >= stop_below",
     * false stops within stop_horizon pairs bounded by stop_alpha; 0 = off */
    double stop_below;        /* 0.90 */
    double stop_alpha;        /* 0.05 */
    double stop_horizon;      /* 100000 pairs */
};
void verdict_rules_default(struct verdict_rules *r);

/* One pair as the decision sees it. */
struct verdict_obs {
    bool p_ok, c_ok;          /* leg succeeded (a missing leg did not) */
    bool c_timeout;           /* the candidate failed by 'timeout' or 'deadline' */
    double p_lat, c_lat;      /* latency_ms, NAN when unknown */
    /* comparator raw values against the candidate / the A/A leg; NAN = not
     * applicable or no such row */
    double cmp_c[VERDICT_NCMP], cmp_aa[VERDICT_NCMP];
    bool has_aa;              /* the pair has an A/A comparison (cmp_aa is meaningful) */
    int judge;                /* +1 win, -1 loss, 0 anything else / none */
};
void verdict_obs_clear(struct verdict_obs *o); /* no values: every NAN, flags false */

/* A sign-type test: a counts for the alternative, b against. */
struct verdict_count {
    uint64_t a, b;
    double log_e, log_e_max;
};

struct verdict_state {
    struct verdict_rules rules;
    uint64_t n;
    uint64_t p_ok, c_ok;
    struct verdict_count succ_worse;  /* a: primary ok & cand failed; b: the reverse */
    struct verdict_count succ_ready;  /* a: cand ok; b: cand failed; against success_min */
    struct verdict_count lat_slow;    /* a: slower than the margin or timed out; b: not */
    struct verdict_count lat_fast;    /* a: faster than latency_ratio_max; b: not */
    struct verdict_count cmp_worse[VERDICT_NCMP]; /* a: D < 0; b: D > 0 */
    struct verdict_count cmp_all_worse;           /* sign of the mean D over the comparators */
    uint64_t cmp_applies[VERDICT_NCMP];           /* pairs where both sides have a value */
    struct seq_bet cmp_ni[VERDICT_NCMP];          /* non-inferiority: D on every pair with an
                                                     A/A leg, 0 where it does not apply */
    double quality_log_e, quality_log_e_max;      /* log mean of the cmp_worse e-values */
    struct verdict_count judge_worse;             /* a: loss; b: win */
    uint64_t first_alarm_n, first_ready_n;        /* pair count at the look that first
                                                     crossed, 0 = not yet */
    uint64_t looked_at;
    struct seq_cusum cusum;                       /* auto-stop */
    uint64_t stop_n;                              /* pair count when it fired, 0 = not */
};
void verdict_init(struct verdict_state *s, const struct verdict_rules *r);
/* Count one pair (cheap: counters and the bets). */
void verdict_add(struct verdict_state *s, const struct verdict_obs *o);
/* A look: recompute the e-values and their running maxima.  The report,
 * the live analysis and the simulator look every VERDICT_LOOK_EVERY pairs
 * and after the last one; a look costs a few microseconds per test. */
#define VERDICT_LOOK_EVERY 10
void verdict_look(struct verdict_state *s);

/* The decision at the last look (call verdict_look first). */
enum verdict_action { VA_KEEP_COLLECTING, VA_INVESTIGATE, VA_TOO_SLOW, VA_READY };
struct verdict {
    enum verdict_action action;
    const char *action_name, *rule;       /* JSON names */
    bool alarm[VERDICT_FAMILIES];         /* running max crossed VERDICT_FAMILIES / alpha */
    bool cmp_alarm[VERDICT_NCMP];         /* which comparators carry a quality alarm */
    bool ready_success, ready_latency, ready_quality;
    bool cmp_ready[VERDICT_NCMP];         /* non-inferior (or not applicable: no paired data) */
    bool cmp_applicable[VERDICT_NCMP];    /* has paired data */
    double cmp_mde[VERDICT_NCMP];         /* the drop detectable with 80 % power now (NAN: n/a) */
    /* keep_collecting: the criterion that needs the most pairs and how
     * many, for 80 % power under its planning value; -1 = cannot be said */
    const char *criterion;
    int64_t more;
    bool raise_aa;                        /* the A/A sample is what limits */
};
void verdict_decide(const struct verdict_state *s, struct verdict *v);

/* Thresholds, as logs. */
double verdict_alarm_log_thr(const struct verdict_rules *r, int family);
double verdict_ready_log_thr(const struct verdict_rules *r);

#endif
