/* report.h — `shade report`: read the shadow pair store (store.h) and say
 * whether the candidate model is ready, with the evidence.
 *
 * One section per shadow: traffic totals and the counters invariant,
 * success rates with Wilson intervals, latency percentiles and the
 * shadow/primary ratio with a paired bootstrap interval, tokens and cost,
 * each comparator next to its A/A noise floor, the judge's verdicts, the
 * worst examples side by side, and a recommendation naming the rule that
 * fired.  Formats: text (terminal), JSON (stable, documented in
 * doc/shadow-report.md), HTML (one self-contained page).
 *
 * The database is only read; report_main opens it read-only and never
 * creates it.
 */
#ifndef SHADE_REPORT_H
#define SHADE_REPORT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "verdict.h"

/* The decision rules are verdict.h's: thresholds, margins, alpha and the
 * auto-stop bar.  doc/shadow-report.md explains each. */
struct report_rules {
    struct verdict_rules v;
};
void report_rules_default(struct report_rules *r);

struct report_query {
    const char *shadow; /* NULL = every shadow in the file, one section each */
    double since;       /* unix seconds, 0 = all */
    uint32_t worst;     /* worst examples per shadow (default 5) */
    uint32_t max_pairs; /* newest N pairs, 0 = all */
    bool from_start;    /* and only pairs since the shadow's newest 'start' event:
                           the live analysis's fixed starting point */
    /* the decision already made over every pair since the start
     * (report_feed), used instead of replaying the window; the live analysis
     * keeps one per shadow so each analysis reads only the new pairs */
    const struct verdict_state *decided;
};

enum report_format { REPORT_TEXT, REPORT_JSON, REPORT_HTML };

/* Build the report from an open db (read-only use) into out.  Returns 0, or
 * -1 with a message in err (db errors, an unknown --shadow name, out of
 * memory); out may then hold a partial report. */
int report_render(sqlite3 *db, const struct report_query *q, const struct report_rules *rules,
                  enum report_format f, struct buf *out, char *err, size_t errlen);
/* The same in several formats at once (fs[k] into outs[k], at most
 * REPORT_MAX_FORMATS): the store is read and each section computed once. */
#define REPORT_MAX_FORMATS 3
int report_render_formats(sqlite3 *db, const struct report_query *q, const struct report_rules *rules,
                          const enum report_format *fs, struct buf *const *outs, size_t nf, char *err,
                          size_t errlen);

/* The newest 'start' event of `shadow` (a start or a resume: the point the
 * live analysis and auto-stop count from), 0 when there is none.  Returns 0
 * or -1 (sqlite3_errmsg(db) says why). */
int report_analysis_start(sqlite3 *db, const char *shadow, double *ts);

/* Feed the pairs of `shadow` stored after *last_id (and at or after
 * `since`), in stored order, into vs, with a look every VERDICT_LOOK_EVERY
 * pairs and one at the end; *last_id becomes the last pair read.  The same
 * replay `shade report` does, done a piece at a time.  Returns 0 or -1. */
int report_feed(sqlite3 *db, const char *shadow, double since, int64_t *last_id, struct verdict_state *vs);

/* `shade report --db FILE [--shadow NAME] [--since TIME] [--format
 * text|json|html] [--out FILE] [--worst N] [--max-pairs N] [rule options]`;
 * argv[0] is "report".  Exit status: 0, 1 on database / output errors, 2 on
 * usage errors. */
int report_main(int argc, char **argv);

/* Parse a --since value: unix seconds ("1763719200"), ISO-8601 UTC
 * ("2026-11-21T10:00:00Z", offsets "+02:00" allowed, no zone = UTC) or a
 * relative age ("90s", "15m", "2h", "1d", "1w": that long before now).
 * Returns 0 and *out, or -1. */
int report_parse_time(const char *s, double now, double *out);

#endif
