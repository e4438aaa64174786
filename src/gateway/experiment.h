/* experiment.h — A/B experiments: a public model's traffic split between
 * two or more arms at fixed shares, each arm's requests, failures, latency,
 * TTFT, cost and user feedback counted and compared with the control (the
 * first arm) by anytime-valid tests (src/eval/abtest.h); doc/rollouts.md,
 * "Experiments".
 *
 *   mod_experiment      the routing module (phase ROUTE, after mod_rollout):
 *                       the unit's salted bucket picks the arm by its share;
 *                       an arm whose model is not the public one serves the
 *                       request as its own model.  At finish it counts the
 *                       outcome, pairs an arm's request with the newest
 *                       unpaired control request (latency, TTFT, cost) and
 *                       remembers the request id for feedback.
 *                       With a judge, a sample of the non-control arms'
 *                       requests is also sent to the control's model
 *                       (sample.h); the pairs are judged by judge.c.
 *   POST /v1/feedback   {"request_id": ..., "score": 0..1 | "thumbs": "up"|"down"}:
 *                       the score goes to the arm that served the request
 *   the writer thread   every check_interval (and at stop) adds what was
 *                       counted to the store (shadow_store.path); a restart
 *                       or reload goes on from the stored counts.  It also
 *                       stores the judge samples (experiment_pairs) and
 *                       reads the verdicts back (experiment_judgements)
 *   GET /admin/experiments[/NAME], `shade experiment report`
 */
#ifndef SHADE_EXPERIMENT_H
#define SHADE_EXPERIMENT_H

#include <stddef.h>

struct gateway;

/* Set up the experiments of gw's config (their runtime, the models' links,
 * the counts restored from the store) and start the writer.  0, or -1 with
 * a message in err. */
int experiment_start(struct gateway *gw, char *err, size_t errlen);
/* Stop the writer (the last counts are written) and free the runtime. */
void experiment_stop(struct gateway *gw);

/* `shade experiment report --db FILE [--experiment NAME] [--format
 * text|json|html]`; argv[0] is "experiment".  Exit status 0, 1 on errors,
 * 2 on usage errors. */
int experiment_main(int argc, char **argv);

#endif
