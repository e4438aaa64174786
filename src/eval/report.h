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

struct report_rules {
    double success_min;          /* 0.95: shadow success below → "investigate" */
    double latency_ratio_max;    /* 1.5: p50 ratio above → "too slow" */
    double autostop_success_min; /* 0.90, used by the live auto-stop, reported */
    uint32_t min_pairs;          /* 30: fewer → keep collecting */
    /* Diffy-style noise cancellation: a comparator differs only if
     * |shadow - aa| exceeds both thresholds (relative to the larger of the
     * two disagreement levels, and absolute) and a two-proportion / Welch
     * test gives p < 0.05 */
    double noise_relative, noise_absolute; /* 0.20, 0.03 */
};
void report_rules_default(struct report_rules *r);

struct report_query {
    const char *shadow; /* NULL = every shadow in the file, one section each */
    double since;       /* unix seconds, 0 = all */
    uint32_t worst;     /* worst examples per shadow (default 5) */
    uint32_t max_pairs; /* newest N pairs, 0 = all */
};

enum report_format { REPORT_TEXT, REPORT_JSON, REPORT_HTML };

/* Build the report from an open db (read-only use) into out.  Returns 0, or
 * -1 with a message in err (db errors, an unknown --shadow name, out of
 * memory); out may then hold a partial report. */
int report_render(sqlite3 *db, const struct report_query *q, const struct report_rules *rules,
                  enum report_format f, struct buf *out, char *err, size_t errlen);

/* The recent-window success rate used by auto-stop: over the newest
 * `window` pairs of `shadow` (0 = all), *n = pairs and *k = pairs whose
 * shadow leg succeeded (a missing shadow leg counts as a failure).  One
 * indexed query; usable on the recorder's own connection.  Returns 0 or -1
 * (sqlite3_errmsg(db) says why). */
int report_recent_success(sqlite3 *db, const char *shadow, uint32_t window, uint64_t *n,
                          uint64_t *k);

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
