/* canary.h — the rollout decision: should the canary step up, be promoted,
 * be rolled back, or be frozen?  Pure: counts in, a decision out, no I/O.
 * The controller (src/gateway/rollout.c) keeps the counts and calls
 * canary_check at every check; the rollout simulator (rollsim.c) runs the
 * same code.
 *
 * A canary shares traffic with its baseline: at share w, a request goes to
 * the canary with probability w.  Traffic swings during the day, and both
 * arms swing together, so every comparison is made *conditionally on the
 * split* (no absolute rate is compared across hours):
 *
 *   failures   if both arms fail alike, a failure comes from the canary
 *              as often as a request does: the beta-mixture e-value of
 *              canary failures against baseline failures, H0 "share <=
 *              the step's realized share of requests" (not w: with sticky
 *              units a heavy client on one arm moves the request split,
 *              and a broken split must freeze, not roll back)
 *   latency    each canary request is paired with the newest baseline
 *              request not yet paired (same moment, independent requests):
 *              H0 "the canary is more than latency_margin x slower in at
 *              most half the pairs" (a sign test); TTFT the same for
 *              streamed requests; cost per request the same, against
 *              cost_margin (a candidate cheaper per token that says more
 *              costs more per request)
 *   refusals   like failures, among the requests that answered: if both
 *              arms refuse alike, a refusal comes from the canary as often
 *              as an answer does (the step's realized share of answered
 *              requests); H0 "the canary's share of refusals <= that"
 *   quality    a sample of canary requests is also sent twice to the
 *              baseline (B1, B2, side calls); D = agreement(B1, canary) -
 *              agreement(B1, B2), the comparators' mean (compare.h).  If
 *              the arms answer alike, the canary's answer and B2 are
 *              exchangeable and D is symmetric about 0.  A pair is *worse*
 *              when D < -quality_margin; H0 "worse in at most half the
 *              pairs" (a sign test, like latency)
 *   split      sample-ratio mismatch: the canary's share of the *units*
 *              first seen in the step against w, both sides (each new unit
 *              lands on the canary with chance w, whatever its traffic); a
 *              drift means broken assignment and invalid data — freeze
 *
 * Each step has its own w, so each step has its own e-values; a step that
 * ends hands its e-values on as a factor (a product of e-processes over
 * consecutive periods is one), so evidence is never thrown away and the
 * guarantee holds over the whole rollout: an equal canary is rolled back
 * with chance at most alpha_rollback, however often it is checked.
 *
 * Promotion at the end of the last step needs, at alpha_promote: the
 * canary's success shown above success_min, and its latency shown within
 * latency_ratio_max of the baseline's in most pairs.
 */
#ifndef SHADE_CANARY_H
#define SHADE_CANARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CANARY_MAX_STEPS 16

struct canary_step {
    double share;          /* percent of units on the canary, 0 < share <= 100 */
    double min_seconds;    /* the step lasts at least this long */
    uint64_t min_requests; /* and sees at least this many canary requests */
};

struct canary_rules {
    double alpha_rollback;    /* 0.05 */
    double alpha_promote;     /* 0.01 */
    double latency_margin;    /* 1.2: rollback when shown slower than this x (also TTFT) */
    double latency_ratio_max; /* 1.5: promote only when shown faster than this x */
    double cost_margin;       /* 1.25: rollback when shown costlier than this x per request */
    double success_min;       /* 0.95: promote only when the canary's success is shown above */
    double srm_alpha;         /* 0.001: freeze on a sample-ratio mismatch */
    bool refusals;            /* true: the refusal family is tested */
    bool quality;             /* true: the quality family is tested (paired samples) */
    double quality_margin;    /* 0.10: a pair is worse when D < -quality_margin */
    bool judge;               /* true: the judge family is tested (judged quality pairs) */
    struct canary_step steps[CANARY_MAX_STEPS];
    size_t nsteps;
};
/* steps 1, 5, 25, 50 % of 60 s / 300 requests; refusals on, quality and judge off */
void canary_rules_default(struct canary_rules *r);

/* What the arms did during the current step. */
struct canary_counts {
    uint64_t base_req, can_req;     /* finished requests by arm */
    uint64_t base_fail, can_fail;   /* of them failed */
    uint64_t lat_slow, lat_other;   /* pairs: canary > latency_margin x baseline (or timed out) */
    uint64_t lat_fast, lat_notfast; /* pairs: canary < latency_ratio_max x baseline */
    uint64_t ttft_slow, ttft_other; /* streamed pairs, the same on TTFT */
    uint64_t base_units, can_units; /* units first seen in the step, by the arm they got */
    uint64_t cost_high, cost_other; /* priced pairs: canary > cost_margin x baseline; not */
    uint64_t base_refusal, can_refusal; /* answered (2xx) requests whose answer is a refusal */
    uint64_t qual_worse, qual_other;    /* quality pairs: D < -quality_margin; not */
    uint64_t judge_loss, judge_win;     /* judged quality pairs, both orders agreeing: baseline better; canary */
};

enum canary_family { CF_FAILURES, CF_LATENCY, CF_TTFT, CF_COST, CF_REFUSALS, CF_QUALITY, CF_JUDGE,
                     CANARY_FAMILIES };
extern const char *const canary_family_names[CANARY_FAMILIES];
/* Is family f tested under r (refusals, quality and judge can be off)?  The
 * families tested share alpha_rollback: each alarms at an e-value of
 * canary_families_on(r) / alpha_rollback. */
bool canary_family_on(const struct canary_rules *r, int f);
int canary_families_on(const struct canary_rules *r);

/* CP_SHADOW: before the first step, the candidate is only shadowed (share
 * 0) until the shadow analysis says ready; canary_begin moves it on. */
enum canary_phase { CP_CANARY, CP_PROMOTED, CP_ROLLED_BACK, CP_FROZEN, CP_SHADOW };
extern const char *const canary_phase_names[];

struct canary_state {
    enum canary_phase phase;
    size_t step;                       /* index of the current step */
    double step_started;               /* seconds (any clock the caller keeps) */
    struct canary_counts cur;          /* the current step */
    struct canary_counts total;        /* the whole rollout */
    double log_carry[CANARY_FAMILIES]; /* sum of log e-values of the finished steps */
    double log_e[CANARY_FAMILIES];     /* carry + the current step's, at the last check */
    double log_e_max[CANARY_FAMILIES];
    double log_srm;                    /* the current step's split e-value */
    double log_promote_success, log_promote_latency;
    uint64_t checks;
};
void canary_init(struct canary_state *s, double now);
/* Count what finished since the last call (into the step and the total). */
void canary_add(struct canary_state *s, const struct canary_counts *delta);

enum canary_action { CA_NONE, CA_ADVANCE, CA_PROMOTE, CA_ROLLBACK, CA_FREEZE };
extern const char *const canary_action_names[];

struct canary_decision {
    enum canary_action action;
    int family;          /* CA_ROLLBACK: the family that crossed (first) */
    char reason[512];
};

/* One check at time `now`: recompute the e-values from the counts, then
 * decide.  Rollback and freeze take effect at once; an advance moves to
 * the next step (its counts start from zero, its evidence is carried);
 * promote ends the rollout.  Nothing changes once promoted, rolled back or
 * frozen (canary_resume unfreezes). */
void canary_check(struct canary_state *s, const struct canary_rules *r, double now,
                  struct canary_decision *d);
/* From the shadow stage to the first step. */
void canary_begin(struct canary_state *s, double now);
/* Unfreeze (a person looked at the assignment): the step starts again,
 * its evidence kept where it is below the carried one, never raised. */
void canary_resume(struct canary_state *s, double now);

/* The current share in percent (0 once rolled back, 100 once promoted). */
double canary_share(const struct canary_state *s, const struct canary_rules *r);

/* Sticky assignment: the unit's bucket in [0, 10000) from a salted hash
 * (FNV-1a 64 of salt, a 0 byte, the unit); a unit is on the canary when
 * bucket < share x 100, so raising the share only adds units, and two
 * rollouts with different salts are independent. */
uint32_t canary_bucket(const char *salt, size_t salt_len, const char *unit, size_t unit_len);

#endif
