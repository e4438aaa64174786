/* judge.h — the LLM judge: a background thread of the serving process that
 * asks a judge model which answer of a shadow pair is better.
 *
 * Every interval it looks in the pair store (store.h) for pairs of each
 * configured shadow whose primary and shadow legs both succeeded and that
 * have no judgements row yet, a deterministic sample of them (by a hash of
 * the pair id), oldest first, at most max_per_round per look.  Each pair is
 * judged twice, through the gateway's own listener like any client request:
 * order1 shows the primary's answer as A and the shadow's as B, order2 the
 * other way round.  A win or a loss counts only when both orders agree;
 * the verdicts and the outcome are written to the judgements table.
 *
 * Rollouts with a judge (judge_rollout) and experiments with a judge
 * (judge_experiment) are judged by the same thread, taking turns with the
 * shadows.
 *
 * The judge model is asked for a last line "VERDICT: A", "VERDICT: B" or
 * "VERDICT: TIE" (judge.c shows the whole prompt; `shade sim --judge`
 * answers it deterministically, doc/simulator.md).
 */
#ifndef SHADE_JUDGE_H
#define SHADE_JUDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct judge_shadow {
    const char *shadow;      /* pairs.shadow */
    const char *judge_model; /* public model name of the judge, as served by the gateway */
    double sample;           /* 0..1 of eligible pairs, chosen deterministically by hash of pair id */
};

/* A rollout whose quality gate has a judge: its paired samples
 * (rollout_pairs, rollout.c) are judged the same way, the baseline's
 * answer in the primary's place and the canary's in the shadow's, into
 * rollout_judgements; only pairs of the rollout's current run (id above
 * the pair_floor in its rollout_state) while it is in the canary (or
 * frozen) phase. */
struct judge_rollout {
    const char *rollout;     /* rollout_pairs.rollout */
    const char *judge_model; /* public model name of the judge */
    double sample;           /* 0..1 of the pairs, by hash of pair id */
};

/* An experiment with a judge: its pairs (experiment_pairs, experiment.c:
 * a non-control arm's answer and the control's to the same request) are
 * judged the same way, the control's answer in the primary's place and the
 * arm's in the shadow's, into experiment_judgements (with the arm).  Every
 * stored pair is judged (the experiment samples the requests). */
struct judge_experiment {
    const char *experiment;  /* experiment_pairs.experiment */
    const char *judge_model; /* public model name of the judge */
};

struct judge_opts {
    const char *db_path;            /* the pair store (created by the recorder; wait/retry until the tables exist) */
    const char *host; int port;     /* the gateway's own listener: the judge is called THROUGH shade;
                                       NULL, "", "0.0.0.0" or "::" mean the loopback address */
    const struct judge_shadow *shadows; size_t nshadows;
    const struct judge_rollout *rollouts; size_t nrollouts;
    const struct judge_experiment *experiments; size_t nexperiments;
    uint32_t interval_ms;           /* how often to look for new pairs (default 1000) */
    uint32_t timeout_ms;            /* per judge call (default 60000) */
    uint32_t max_per_round;         /* pairs judged per look, bounds work (default 20, at most 10000) */
};

struct judge;

/* Validate and copy *o (nothing of it is used after the call) and start the
 * thread.  NULL and a message in err on invalid options or failure.  Zero
 * intervals, timeouts and bounds take the defaults. */
struct judge *judge_start(const struct judge_opts *o, char *err, size_t errlen);
/* Prompt: wakes the thread, aborts a call in progress at once (a pair whose
 * call was cut gets no row and is judged again later), joins, frees.
 * NULL is ignored. */
void judge_stop(struct judge *j);

struct judge_stats {
    uint64_t judged;  /* judgements rows written (any outcome, 'error' included) */
    uint64_t errors;  /* judge calls that failed or gave no valid verdict */
    uint64_t calls;   /* judge calls made */
};
void judge_get_stats(struct judge *j, struct judge_stats *s); /* thread-safe (atomics) */

/* ---- the pure parts, exposed for tests ---- */

/* The verdict in a judge's answer: the last "VERDICT:" (case-insensitive,
 * spaces and '*' allowed around the colon) decides; it must be followed by
 * A, B or TIE (optionally after spaces, '*', quotes or '[') and then a
 * non-alphanumeric byte or the end.  Returns "A", "B", "tie", or "invalid"
 * (no verdict line, or the last one names something else). */
const char *judge_parse_verdict(const char *s, size_t n);
/* The outcome for the shadow from the two verdicts (NULL = the call failed):
 * "win" (B then A), "loss" (A then B), "tie" (tie, tie), "error" (a NULL or
 * "invalid" verdict), else "inconsistent". */
const char *judge_outcome(const char *order1, const char *order2);
/* Whether pair_id is in the sample: unit(mix64(pair_id)) < sample. */
bool judge_sampled(int64_t pair_id, double sample);

#endif
