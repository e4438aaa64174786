/* rollout.h — progressive delivery: a public model's traffic moves to a
 * candidate step by step, each step decided by anytime-valid tests
 * (src/eval/canary.h), with rollback, freeze and promotion; doc/rollouts.md.
 *
 *   mod_rollout        the routing module (phase ROUTE, first): the unit's
 *                      salted bucket picks the arm; the candidate arm serves
 *                      the request as the candidate model.  At finish it
 *                      counts the outcome and pairs a candidate request with
 *                      the newest baseline request for latency and TTFT.
 *   the controller     one thread per serving process: every check_interval
 *                      it hands the new counts to canary_check, applies the
 *                      decision (the new share is read by every worker at
 *                      once; requests in flight finish on their arm), and
 *                      writes the state and the check to the store
 *   the admin API      GET /admin/rollouts[/NAME], POST
 *                      /admin/rollouts/NAME/pause|resume|promote|rollback
 *   `shade rollout`    status / replay from the store (rollout_main)
 *
 * State and every check persist in the SQLite store (shadow_store.path):
 * a reload or restart resumes the rollout where it was; `shade rollout
 * replay` recomputes every decision from the stored checks.
 */
#ifndef SHADE_ROLLOUT_H
#define SHADE_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>

struct gateway;
struct pl_req;
struct pl_outcome;
struct sqlite3;

/* The unit that keeps a client on one arm (rollouts and experiments):
 * unit is an enum rollout_unit (user: the body's "user"; header: the
 * header unit_header; key: the API key's header).  Sets *u, *ul to its
 * bytes and returns true; without one, to the request id (not sticky) and
 * returns false. */
bool rollout_unit(const struct pl_req *q, int unit, const char *unit_header, const char **u, size_t *ul);

/* Set up the rollouts of gw's config (their runtime, the models' links to
 * them, the state restored from the store) and start the controller.
 * Returns 0, or -1 with a message in err. */
int rollout_start(struct gateway *gw, char *err, size_t errlen);
/* Stop the controller (a last check is written) and free the runtime. */
void rollout_stop(struct gateway *gw);

/* `shade rollout status|replay --db FILE [--rollout NAME]`; argv[0] is
 * "rollout".  Exit status 0, 1 on errors (replay: 1 when a recomputed
 * decision differs from the stored one), 2 on usage errors. */
int rollout_main(int argc, char **argv);

/* What rollouts and experiments share besides rollout_unit: */

/* A finished request as the arms are compared on it: 2xx, timed out, its
 * latency and TTFT in ms (NAN when not streamed). */
struct rollout_obs {
    bool ok, timeout;
    double lat, ttft;
    double cost;  /* USD of an answered request whose usage was settled, else NAN */
};
void rollout_observe(const struct pl_req *q, const struct pl_outcome *o, struct rollout_obs *x);

/* The newest unpaired answers of the baseline (control) arm, for pairing
 * with the other arm's next answer (the caller locks). */
#define ROLLOUT_PAIR_BUF 64
struct rollout_pairs {
    struct rollout_pair { double lat, ttft, cost; } e[ROLLOUT_PAIR_BUF];
    size_t head, n;
};
void rollout_pairs_push(struct rollout_pairs *p, const struct rollout_pair *x); /* the oldest goes when full */
bool rollout_pairs_pop(struct rollout_pairs *p, struct rollout_pair *x);        /* the newest; false: none */

/* The quality gate's score of one paired sample: the mean, over the
 * comparators (compare.h) that apply to both comparisons, of
 * agreement(base, canary) - agreement(base, noise), where noise is a second
 * answer of the baseline (0 when none applies; in [-1, 1]).  Each
 * comparator's pair of agreements is appended to scores as a JSON object
 * when scores is not NULL.  o: refusal patterns, NULL for the defaults. */
struct shadow_answer;
struct cmp_opts;
struct buf;
double rollout_quality_d(const struct shadow_answer *canary, const struct shadow_answer *base,
                         const struct shadow_answer *noise, const struct cmp_opts *o, struct buf *scores);

/* Open (create) the SQLite store with WAL and the schema; 0, or -1 with
 * err filled ("what: store PATH: why") and *db NULL. */
int rollout_store_open(const char *path, const char *schema, const char *what, struct sqlite3 **db, char *err,
                       size_t errlen);

#endif
