/* report.c — `shade report`: the shadow pair store (store.h) turned into a
 * verdict with its evidence (report.h; doc/shadow-report.md for people).
 *
 * How it works
 *   The pairs of one shadow are selected by one subquery, SEL_PAIRS below
 *   (shadow name, --since, newest --max-pairs), and every other table is
 *   read with one prepared statement restricted by `pair_id IN (SEL_PAIRS)`:
 *   one pass over the legs (ordered by pair, so that the primary and shadow
 *   legs of a pair meet without a lookup), one aggregate over the
 *   comparisons (count, sum and sum of squares per column and per 'shadow'
 *   / 'aa'), one over the judgements, one for the counters, one for the
 *   worst examples (sorted and limited by SQLite on the comparisons alone,
 *   then joined with the prompts and answers of the few chosen), one for
 *   the events.  No per-pair queries: 100k pairs cost a few passes over
 *   the file, about a second.  Everything runs in one read transaction, so
 *   the numbers come from one snapshot even while the recorder writes.
 *
 *   The rows are folded into a struct section; analyse() derives the
 *   statistics (stats.c) and decide() evaluates the recommendation rules in
 *   their fixed order.  The section is rendered as text, JSON or HTML and
 *   freed before the next shadow is read.
 *
 *   Stored text (prompts, answers, error kinds, names) is user content: it
 *   is escaped for the output it goes to (JSON string escapes, HTML
 *   entities, terminal: control characters dropped), and invalid UTF-8 is
 *   replaced by U+FFFD everywhere.
 */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "json.h"
#include "seq.h"
#include "stats.h"
#include "verdict.h"

#define SEL_PAIRS "SELECT id FROM pairs WHERE shadow = ?1 AND ts >= ?2 ORDER BY ts DESC, id DESC LIMIT ?3"
#define MAX_KINDS 16      /* distinct failure kinds kept per leg; the rest is "other" */
#define MAX_EVENTS 10     /* newest events shown per shadow */
#define TEXT_CLIP 160     /* characters of a prompt / answer in the text report */
#define HTML_CLIP 16384   /* bytes of a prompt / answer in the HTML report */
#define DIFF_MAX_WORDS 4000
#define DIFF_MAX_CELLS (4u << 20)

void report_rules_default(struct report_rules *r) { verdict_rules_default(&r->v); }

/* ================================================================ output */

/* An output buffer with a sticky out-of-memory flag, so that rendering code
 * does not check every append. */
struct w {
    struct buf *b;
    bool oom;
};

static void w_put(struct w *w, const void *p, size_t n)
{
    if (buf_append(w->b, p, n) < 0)
        w->oom = true;
}

static void w_str(struct w *w, const char *s) { w_put(w, s, strlen(s)); }

__attribute__((format(printf, 2, 3))) static void w_fmt(struct w *w, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        w->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        w_put(w, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        w->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    w_put(w, big, (size_t)n);
    free(big);
}

/* Decode one UTF-8 sequence at s (n > 0 bytes left): its length, and the
 * code point in *cp — or length 1 and U+FFFD for a byte that does not start
 * a valid, shortest-form sequence. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp, bool *valid)
{
    unsigned c = s[0];
    size_t len;
    uint32_t v, min;
    *valid = true;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, v = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, v = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        goto bad;
    }
    if (n < len)
        goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            goto bad;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        goto bad;
    *cp = v;
    return len;
bad:
    *valid = false;
    *cp = 0xfffd;
    return 1;
}

static const char REPLACEMENT[] = "\xef\xbf\xbd"; /* U+FFFD */

/* The length of the longest prefix of s[0..n) that is at most max bytes and
 * ends on a character boundary. */
static size_t utf8_clip(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t i = max;
    while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
        i--;
    return i;
}

/* A JSON string (with quotes); NULL → null. */
static void j_strn(struct w *w, const char *s, size_t n)
{
    if (!s) {
        w_str(w, "null");
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    w_put(w, "\"", 1);
    size_t i = 0, run = 0; /* bytes [run, i) are copied verbatim */
    while (i < n) {
        uint32_t cp;
        bool ok;
        size_t l = utf8_next(u + i, n - i, &cp, &ok);
        const char *esc = NULL;
        char tmp[8];
        if (!ok)
            esc = REPLACEMENT;
        else if (cp == '"')
            esc = "\\\"";
        else if (cp == '\\')
            esc = "\\\\";
        else if (cp == '\n')
            esc = "\\n";
        else if (cp == '\r')
            esc = "\\r";
        else if (cp == '\t')
            esc = "\\t";
        else if (cp < 0x20 || cp == 0x7f || cp == 0x2028 || cp == 0x2029) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
            esc = tmp;
        }
        if (esc) {
            w_put(w, s + run, i - run);
            w_str(w, esc);
            run = i + l;
        }
        i += l;
    }
    w_put(w, s + run, n - run);
    w_put(w, "\"", 1);
}

static void j_str(struct w *w, const char *s) { j_strn(w, s, s ? strlen(s) : 0); }

/* A JSON number, the shortest decimal that reads back as the same double
 * (0.1, not 0.10000000000000001); NaN and infinities (n/a) are null. */
static void j_num(struct w *w, double x)
{
    if (!isfinite(x)) {
        w_str(w, "null");
        return;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        if (strtod(tmp, NULL) == x)
            break;
    }
    w_str(w, tmp);
}

/* HTML text: & < > " ' as entities, control characters other than newline
 * and tab dropped, invalid UTF-8 replaced. */
static void h_strn(struct w *w, const char *s, size_t n)
{
    if (!s)
        return;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        uint32_t cp;
        bool ok;
        size_t l = utf8_next(u + i, n - i, &cp, &ok);
        const char *esc = NULL;
        if (!ok)
            esc = REPLACEMENT;
        else if (cp == '&')
            esc = "&amp;";
        else if (cp == '<')
            esc = "&lt;";
        else if (cp == '>')
            esc = "&gt;";
        else if (cp == '"')
            esc = "&quot;";
        else if (cp == '\'')
            esc = "&#39;";
        else if ((cp < 0x20 && cp != '\n' && cp != '\t') || (cp >= 0x7f && cp < 0xa0))
            esc = "";
        if (esc) {
            w_put(w, s + run, i - run);
            w_str(w, esc);
            run = i + l;
        }
        i += l;
    }
    w_put(w, s + run, n - run);
}

static void h_str(struct w *w, const char *s)
{
    if (s)
        h_strn(w, s, strlen(s));
}

/* Terminal text on one line: whitespace runs become one space, other
 * control characters (escape sequences!) are dropped, invalid UTF-8 is
 * replaced, and at most max characters are written ("…" marks the cut).
 * NULL → "-". */
static void t_line(struct w *w, const char *s, size_t max)
{
    if (!s) {
        w_put(w, "-", 1);
        return;
    }
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, chars = 0;
    bool space = false, any = false;
    while (i < n) {
        uint32_t cp;
        bool ok;
        size_t l = utf8_next(u + i, n - i, &cp, &ok);
        if (cp == ' ' || cp == '\n' || cp == '\t' || cp == '\r') {
            space = any;
        } else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
            /* dropped */
        } else {
            if (chars + (space ? 1 : 0) >= max) {
                w_str(w, "…");
                return;
            }
            if (space) {
                w_put(w, " ", 1);
                chars++;
            }
            space = false;
            any = true;
            if (ok)
                w_put(w, s + i, l);
            else
                w_str(w, REPLACEMENT);
            chars++;
        }
        i += l;
    }
}

static void iso_time(double ts, char *out, size_t cap)
{
    if (!isfinite(ts)) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)floor(ts);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%.0f", ts);
}

/* Text-report number cells: "-" when n/a. */
static const char *f_num(char *b, size_t cap, double x, int prec)
{
    if (isinf(x))
        snprintf(b, cap, "%s", x > 0 ? "inf" : "-inf");
    else if (!isfinite(x))
        snprintf(b, cap, "-");
    else
        snprintf(b, cap, "%.*f", prec, x);
    return b;
}

static const char *f_pct(char *b, size_t cap, double x)
{
    if (!isfinite(x))
        snprintf(b, cap, "-");
    else
        snprintf(b, cap, "%.2f%%", 100 * x);
    return b;
}

static const char *f_p(char *b, size_t cap, double p)
{
    if (!isfinite(p))
        snprintf(b, cap, "-");
    else if (p < 0.0001)
        snprintf(b, cap, "<0.0001");
    else
        snprintf(b, cap, "%.4f", p);
    return b;
}

/* A prompt for people, as a new string: a chat `messages` array as
 * "role: content" lines (the text parts of multi-part contents joined), a
 * completions prompt string unescaped, anything else (e.g. JSON cut short
 * when stored) as it is.  NULL for no prompt or out of memory. */
static char *prompt_plain(const char *prompt)
{
    if (!prompt)
        return NULL;
    size_t n = strlen(prompt);
    struct json_span root, msg, role, content, part, text;
    struct buf out = { 0 };
    struct w w = { &out, false };
    char *tmp = malloc(n + 1);
    long k;
    if (!tmp || json_validate(prompt, n, &root, NULL) < 0)
        goto raw;
    if (root.type == JSON_STRING) {
        if ((k = json_str_unescape(&root, tmp, n + 1)) < 0)
            goto raw;
        w_put(&w, tmp, (size_t)k);
    } else if (root.type == JSON_ARRAY) {
        for (size_t it = 0; json_next(&root, &it, NULL, &msg);) {
            if (msg.type != JSON_OBJECT)
                goto raw;
            if (json_get(&msg, "role", &role) && role.type == JSON_STRING &&
                (k = json_str_unescape(&role, tmp, n + 1)) >= 0)
                w_put(&w, tmp, (size_t)k);
            else
                w_str(&w, "?");
            w_str(&w, ": ");
            if (!json_get(&msg, "content", &content)) {
            } else if (content.type == JSON_STRING) {
                if ((k = json_str_unescape(&content, tmp, n + 1)) >= 0)
                    w_put(&w, tmp, (size_t)k);
            } else if (content.type == JSON_ARRAY) {
                for (size_t pi = 0; json_next(&content, &pi, NULL, &part);)
                    if (part.type == JSON_OBJECT && json_get(&part, "text", &text) &&
                        text.type == JSON_STRING && (k = json_str_unescape(&text, tmp, n + 1)) >= 0) {
                        w_put(&w, tmp, (size_t)k);
                        w_str(&w, " ");
                    }
            } else {
                w_put(&w, content.p, content.len);
            }
            w_str(&w, "\n");
        }
    } else {
        goto raw;
    }
    w_put(&w, "", 1);
    free(tmp);
    if (w.oom) {
        buf_free(&out);
        return NULL;
    }
    return out.p; /* the buffer was never consumed: data starts at p */
raw:
    free(tmp);
    buf_free(&out);
    return strdup(prompt);
}

/* ============================================================== the data */

enum { L_PRIMARY, L_SHADOW, L_AA, NLEGS };
static const char *const leg_names[NLEGS] = { "primary", "shadow", "aa" };

struct dvec {
    double *v;
    size_t n, cap;
};

static int dvec_push(struct dvec *d, double x)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        double *p = realloc(d->v, cap * sizeof *p);
        if (!p)
            return -1;
        d->v = p;
        d->cap = cap;
    }
    d->v[d->n++] = x;
    return 0;
}

struct kind {
    char name[32];
    uint64_t n;
};

struct mean_acc {
    double sum;
    uint64_t n;
};

static double acc_mean(const struct mean_acc *a) { return a->n ? a->sum / (double)a->n : NAN; }

struct leg_stats {
    uint64_t rows;  /* legs recorded among the selected pairs */
    uint64_t n, ok; /* success denominator (pairs; for aa: its rows) and successes */
    double rate, lo, hi;
    struct kind kinds[MAX_KINDS]; /* failures by kind, "missing" = no leg row */
    size_t nkinds;
    struct dvec lat, ttft; /* successful legs (ttft: streamed ones) */
    double lat_p[3], ttft_p[3];
    struct mean_acc itl, tin, tout, cost;
};

/* ---- comparators */

enum better { HIGHER, LOWER, NEAR_ONE, INFO };
static const char *const better_names[] = { "higher", "lower", "closer_to_1", "none" };

struct cmp_def {
    const char *name;
    bool binary; /* 0/1 column: two-proportion test; else Welch */
    enum better better;
};

static const struct cmp_def cmp_defs[] = {
    { "status_agree", true, HIGHER }, { "finish_agree", true, HIGHER },
    { "exact", true, HIGHER },        { "edit_sim", false, HIGHER },
    { "rouge_l", false, HIGHER },     { "length_ratio", false, NEAR_ONE },
    { "json_valid", true, HIGHER },   { "json_same", true, HIGHER },
    { "tool_agree", true, HIGHER },   { "refusal_other", true, LOWER },
    { "refusal_primary", true, INFO },
};
#define NCMP (sizeof cmp_defs / sizeof cmp_defs[0])

enum { A_SHADOW, A_AA };

struct cmp_side {
    uint64_t n;
    double sum, sumsq, mean, var;
};

struct cmp_stats {
    struct cmp_side s[2];
    double diff, p;     /* shadow mean - aa mean; test p-value */
    int verdict;        /* 0 within noise / unknown, -1 beyond noise and worse, +1 better */
    bool known;         /* both sides have values */
};

/* ---- judge */

struct judge_stats {
    uint64_t win, tie, loss, inconsistent, error;
    char names[8][64]; /* judge models (the first 8) */
    size_t nnames;
    uint64_t more_names; /* judge models beyond those */
    double inconsistency, share, lo, hi, p_better, p_worse;
    uint64_t decisive_needed; /* at this win share, decisive verdicts for p < ALPHA; 0 = n/a */
};

/* ---- worst examples */

struct ex_leg {
    bool present;
    int status;
    char *error, *response;
    bool truncated;
};

struct example {
    int64_t id;
    double ts;
    char *prompt;
    bool prompt_truncated;
    int status_agree;
    double rouge_l;
    struct ex_leg leg[2]; /* primary, shadow */
};

struct counter {
    char *name;
    int64_t value;
};

struct event {
    double ts;
    char *kind, *detail;
};

struct reco {
    const char *action, *rule;
    const char *criterion; /* what more data is needed for (keep_collecting) */
    int64_t more;          /* more pairs needed; -1 = cannot be said */
    char reason[1024];
    const char *names[NCMP + 1]; /* quality_regression: the comparators ("judge") */
    size_t nnames;
};

struct section {
    const char *shadow;
    uint64_t pairs;
    double first_ts, last_ts;
    struct counter *counters;
    size_t ncounters;
    int64_t mirrored, stored, dropped;
    bool have_mirrored, have_stored;
    struct leg_stats leg[NLEGS];
    struct dvec pair_p, pair_s; /* latency of pairs where both legs succeeded */
    struct stats_boot ratio[2];  /* p50, p95 */
    bool have_ratio;
    uint32_t boot_reps;
    uint64_t cmp_rows[2];
    bool noise_known;
    struct cmp_stats cmp[NCMP];
    struct judge_stats judge;
    struct example *ex;
    size_t nex;
    struct event *events;
    size_t nevents;
    double start_ts;              /* the analysis start used (from_start), 0 = none */
    /* the decision: the pairs replayed in stored order through verdict.h */
    struct verdict_state vs;
    struct verdict v;
    struct dvec ratios;           /* per pair: shadow / primary latency, +inf = timed out */
    double ratio_med, ratio_lo, ratio_hi; /* median per-pair ratio and its confidence sequence */
    double lat_cs[2][2][2];       /* [leg][p50, p95][lo, hi] latency confidence sequences */
    double ttft_cs[2][2][2];
    double succ_cs[NLEGS][2];     /* success-rate confidence sequences */
    struct reco reco;
};

static void section_free(struct section *s)
{
    for (int l = 0; l < NLEGS; l++) {
        free(s->leg[l].lat.v);
        free(s->leg[l].ttft.v);
    }
    free(s->pair_p.v);
    free(s->pair_s.v);
    free(s->ratios.v);
    for (size_t i = 0; i < s->ncounters; i++)
        free(s->counters[i].name);
    free(s->counters);
    for (size_t i = 0; i < s->nex; i++) {
        free(s->ex[i].prompt);
        for (int l = 0; l < 2; l++) {
            free(s->ex[i].leg[l].error);
            free(s->ex[i].leg[l].response);
        }
    }
    free(s->ex);
    for (size_t i = 0; i < s->nevents; i++) {
        free(s->events[i].kind);
        free(s->events[i].detail);
    }
    free(s->events);
    memset(s, 0, sizeof *s);
}

static void add_kind(struct leg_stats *ls, const char *name, uint64_t n)
{
    for (size_t i = 0; i < ls->nkinds; i++)
        if (strcmp(ls->kinds[i].name, name) == 0) {
            ls->kinds[i].n += n;
            return;
        }
    if (ls->nkinds == MAX_KINDS) { /* the last slot collects the rest */
        snprintf(ls->kinds[MAX_KINDS - 1].name, sizeof ls->kinds[0].name, "other");
        ls->kinds[MAX_KINDS - 1].n += n;
        return;
    }
    snprintf(ls->kinds[ls->nkinds].name, sizeof ls->kinds[0].name, "%s", name);
    ls->kinds[ls->nkinds++].n = n;
}

/* ============================================================ the queries */

struct ctx {
    sqlite3 *db;
    const struct report_query *q;
    const struct report_rules *rules;
    char *err;
    size_t errlen;
    double since; /* the section's: q->since, or later with from_start */
};

static int db_fail(struct ctx *c, const char *what)
{
    snprintf(c->err, c->errlen, "database error (%s): %s", what, sqlite3_errmsg(c->db));
    return -1;
}

static int oom(struct ctx *c)
{
    snprintf(c->err, c->errlen, "out of memory");
    return -1;
}

static sqlite3_stmt *prep(struct ctx *c, const char *sql, const char *what)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(c, what);
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

/* Bind ?1 shadow, ?2 since, ?3 limit: the parameters of SEL_PAIRS. */
static void bind_sel(struct ctx *c, sqlite3_stmt *st, const char *shadow)
{
    sqlite3_bind_text(st, 1, shadow, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, c->since > 0 ? c->since : -1e300);
    sqlite3_bind_int64(st, 3, c->q->max_pairs ? (sqlite3_int64)c->q->max_pairs : -1);
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return NULL;
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

static double col_real(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static int load_window(struct ctx *c, struct section *s)
{
    sqlite3_stmt *st = prep(c,
                            "SELECT COUNT(*), MIN(ts), MAX(ts) FROM (SELECT ts FROM pairs WHERE "
                            "shadow = ?1 AND ts >= ?2 ORDER BY ts DESC, id DESC LIMIT ?3)",
                            "pairs");
    if (!st)
        return -1;
    bind_sel(c, st, s->shadow);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        s->pairs = (uint64_t)sqlite3_column_int64(st, 0);
        s->first_ts = col_real(st, 1);
        s->last_ts = col_real(st, 2);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_fail(c, "pairs");
}

static int load_counters(struct ctx *c, struct section *s)
{
    sqlite3_stmt *st =
        prep(c, "SELECT name, value FROM counters WHERE shadow = ?1 ORDER BY name", "counters");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, s->shadow, -1, SQLITE_STATIC);
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (s->ncounters == cap) {
            cap = cap ? cap * 2 : 16;
            struct counter *p = realloc(s->counters, cap * sizeof *p);
            if (!p)
                goto nomem;
            s->counters = p;
        }
        struct counter *k = &s->counters[s->ncounters];
        k->name = col_dup(st, 0);
        if (!k->name)
            k->name = strdup("");
        if (!k->name)
            goto nomem;
        k->value = sqlite3_column_int64(st, 1);
        s->ncounters++;
        if (strcmp(k->name, "mirrored") == 0) {
            s->mirrored = k->value;
            s->have_mirrored = true;
        } else if (strcmp(k->name, "stored") == 0) {
            s->stored = k->value;
            s->have_stored = true;
        } else if (strncmp(k->name, "dropped_", 8) == 0) {
            s->dropped += k->value;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "counters");
nomem:
    sqlite3_finalize(st);
    return oom(c);
}

/* The legs of one pair, collected while the ordered scan is on it. */
struct pair_acc {
    int64_t id;
    bool ok[NLEGS];
    double lat[NLEGS];
};

static int flush_pair(struct section *s, struct pair_acc *pa)
{
    int rc = 0;
    if (pa->id >= 0 && pa->ok[L_PRIMARY] && pa->ok[L_SHADOW] && isfinite(pa->lat[L_PRIMARY]) &&
        isfinite(pa->lat[L_SHADOW])) {
        if (dvec_push(&s->pair_p, pa->lat[L_PRIMARY]) < 0 ||
            dvec_push(&s->pair_s, pa->lat[L_SHADOW]) < 0)
            rc = -1;
    }
    memset(pa, 0, sizeof *pa);
    pa->id = -1;
    return rc;
}

static int load_legs(struct ctx *c, struct section *s)
{
    sqlite3_stmt *st = prep(c,
                            "SELECT pair_id, leg, streamed, status, error, latency_ms, ttft_ms, "
                            "itl_ms, tokens_in, tokens_out, cost_usd FROM legs WHERE pair_id IN (" SEL_PAIRS
                            ") ORDER BY pair_id",
                            "legs");
    if (!st)
        return -1;
    bind_sel(c, st, s->shadow);
    struct pair_acc pa;
    memset(&pa, 0, sizeof pa);
    pa.id = -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        const char *legname = (const char *)sqlite3_column_text(st, 1);
        int l = -1;
        for (int i = 0; legname && i < NLEGS; i++)
            if (strcmp(legname, leg_names[i]) == 0)
                l = i;
        if (l < 0)
            continue;
        if (id != pa.id) {
            if (flush_pair(s, &pa) < 0)
                goto nomem;
            pa.id = id;
        }
        struct leg_stats *ls = &s->leg[l];
        ls->rows++;
        bool streamed = sqlite3_column_int(st, 2) != 0;
        int status = sqlite3_column_int(st, 3);
        const char *error = (const char *)sqlite3_column_text(st, 4);
        double lat = col_real(st, 5), ttft = col_real(st, 6), itl = col_real(st, 7);
        bool ok = !error && status >= 200 && status < 300;
        pa.ok[l] = ok;
        pa.lat[l] = lat;
        if (ok) {
            ls->ok++;
            if (isfinite(lat) && dvec_push(&ls->lat, lat) < 0)
                goto nomem;
            if (streamed && isfinite(ttft) && dvec_push(&ls->ttft, ttft) < 0)
                goto nomem;
            if (streamed && isfinite(itl)) {
                ls->itl.sum += itl;
                ls->itl.n++;
            }
        } else {
            char kind[32];
            if (error)
                snprintf(kind, sizeof kind, "%s", error);
            else
                snprintf(kind, sizeof kind, "status_%d", status);
            add_kind(ls, kind, 1);
        }
        struct mean_acc *accs[3] = { &ls->tin, &ls->tout, &ls->cost };
        for (int k = 0; k < 3; k++)
            if (sqlite3_column_type(st, 8 + k) != SQLITE_NULL) {
                accs[k]->sum += sqlite3_column_double(st, 8 + k);
                accs[k]->n++;
            }
    }
    if (flush_pair(s, &pa) < 0)
        goto nomem;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "legs");
nomem:
    sqlite3_finalize(st);
    return oom(c);
}

static int load_comparisons(struct ctx *c, struct section *s)
{
    struct buf sql = { 0 };
    struct w w = { &sql, false };
    w_str(&w, "SELECT against, COUNT(*)");
    for (size_t i = 0; i < NCMP; i++)
        w_fmt(&w, ", COUNT(%s), TOTAL(%s), TOTAL(%s * %s)", cmp_defs[i].name, cmp_defs[i].name,
              cmp_defs[i].name, cmp_defs[i].name);
    w_str(&w, " FROM comparisons WHERE pair_id IN (" SEL_PAIRS ") GROUP BY against");
    w_put(&w, "", 1);
    if (w.oom) {
        buf_free(&sql);
        return oom(c);
    }
    sqlite3_stmt *st = prep(c, buf_data(&sql), "comparisons");
    buf_free(&sql);
    if (!st)
        return -1;
    bind_sel(c, st, s->shadow);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *against = (const char *)sqlite3_column_text(st, 0);
        int a = !against ? -1 : strcmp(against, "shadow") == 0 ? A_SHADOW : strcmp(against, "aa") == 0 ? A_AA : -1;
        if (a < 0)
            continue;
        s->cmp_rows[a] = (uint64_t)sqlite3_column_int64(st, 1);
        for (size_t i = 0; i < NCMP; i++) {
            struct cmp_side *cs = &s->cmp[i].s[a];
            cs->n = (uint64_t)sqlite3_column_int64(st, 2 + 3 * (int)i);
            cs->sum = sqlite3_column_double(st, 3 + 3 * (int)i);
            cs->sumsq = sqlite3_column_double(st, 4 + 3 * (int)i);
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "comparisons");
}

static int load_judgements(struct ctx *c, struct section *s)
{
    sqlite3_stmt *st = prep(c,
                            "SELECT judge, outcome, COUNT(*) FROM judgements WHERE pair_id IN (" SEL_PAIRS
                            ") GROUP BY judge, outcome ORDER BY judge",
                            "judgements");
    if (!st)
        return -1;
    bind_sel(c, st, s->shadow);
    struct judge_stats *j = &s->judge;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *judge = (const char *)sqlite3_column_text(st, 0);
        const char *outcome = (const char *)sqlite3_column_text(st, 1);
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 2);
        if (!outcome)
            outcome = "";
        if (strcmp(outcome, "win") == 0)
            j->win += n;
        else if (strcmp(outcome, "loss") == 0)
            j->loss += n;
        else if (strcmp(outcome, "tie") == 0)
            j->tie += n;
        else if (strcmp(outcome, "inconsistent") == 0)
            j->inconsistent += n;
        else
            j->error += n; /* 'error' and anything unexpected */
        /* the rows come grouped by judge: keep each name once */
        if (!judge || (j->nnames && strcmp(j->names[j->nnames - 1], judge) == 0))
            continue;
        if (j->nnames < sizeof j->names / sizeof j->names[0])
            snprintf(j->names[j->nnames++], sizeof j->names[0], "%s", judge);
        else
            j->more_names++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "judgements");
}

/* The worst examples: pairs whose status differs first, then the lowest
 * rouge_l (unknown counts as 1: not known to differ), newest first among
 * equals; pairs that agree in every way are never listed.  The inner query
 * sorts and limits the comparisons alone, so only the chosen few pairs are
 * joined with their prompt and answers. */
static int load_examples(struct ctx *c, struct section *s)
{
    if (c->q->worst == 0)
        return 0;
    sqlite3_stmt *st = prep(c,
        "SELECT p.id, p.ts, p.prompt, p.prompt_truncated, c.status_agree, c.rouge_l, "
        "lp.pair_id, lp.status, lp.error, lp.response, lp.response_truncated, "
        "ls.pair_id, ls.status, ls.error, ls.response, ls.response_truncated "
        "FROM (SELECT pair_id, status_agree, rouge_l FROM comparisons "
        "      WHERE against = 'shadow' AND pair_id IN (" SEL_PAIRS ") "
        "      AND (status_agree = 0 OR rouge_l < 1 OR exact = 0) "
        "      ORDER BY status_agree ASC, COALESCE(rouge_l, 1.0) ASC, pair_id DESC LIMIT ?4) c "
        "JOIN pairs p ON p.id = c.pair_id "
        "LEFT JOIN legs lp ON lp.pair_id = c.pair_id AND lp.leg = 'primary' "
        "LEFT JOIN legs ls ON ls.pair_id = c.pair_id AND ls.leg = 'shadow' "
        "ORDER BY c.status_agree ASC, COALESCE(c.rouge_l, 1.0) ASC, c.pair_id DESC",
        "worst examples");
    if (!st)
        return -1;
    bind_sel(c, st, s->shadow);
    sqlite3_bind_int64(st, 4, c->q->worst);
    s->ex = calloc(c->q->worst, sizeof *s->ex);
    if (!s->ex) {
        sqlite3_finalize(st);
        return oom(c);
    }
    int rc;
    while (s->nex < c->q->worst && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct example *e = &s->ex[s->nex++];
        e->id = sqlite3_column_int64(st, 0);
        e->ts = col_real(st, 1);
        e->prompt = col_dup(st, 2);
        e->prompt_truncated = sqlite3_column_int(st, 3) != 0;
        e->status_agree = sqlite3_column_int(st, 4);
        e->rouge_l = col_real(st, 5);
        for (int l = 0; l < 2; l++) {
            int b = 6 + 5 * l;
            struct ex_leg *el = &e->leg[l];
            el->present = sqlite3_column_type(st, b) != SQLITE_NULL;
            el->status = sqlite3_column_int(st, b + 1);
            el->error = col_dup(st, b + 2);
            el->response = col_dup(st, b + 3);
            el->truncated = sqlite3_column_int(st, b + 4) != 0;
            if ((sqlite3_column_type(st, b + 2) != SQLITE_NULL && !el->error) ||
                (sqlite3_column_type(st, b + 3) != SQLITE_NULL && !el->response))
                goto nomem;
        }
        if (sqlite3_column_type(st, 2) != SQLITE_NULL && !e->prompt)
            goto nomem;
    }
    if (s->nex == c->q->worst)
        rc = SQLITE_DONE;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "worst examples");
nomem:
    sqlite3_finalize(st);
    return oom(c);
}

static int load_events(struct ctx *c, struct section *s)
{
    sqlite3_stmt *st = prep(c,
                            "SELECT ts, kind, detail FROM (SELECT ts, kind, detail FROM events "
                            "WHERE shadow = ?1 AND ts >= ?2 ORDER BY ts DESC LIMIT ?3) ORDER BY ts",
                            "events");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, s->shadow, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, c->since > 0 ? c->since : -1e300);
    sqlite3_bind_int(st, 3, MAX_EVENTS);
    s->events = calloc(MAX_EVENTS, sizeof *s->events);
    if (!s->events) {
        sqlite3_finalize(st);
        return oom(c);
    }
    int rc;
    while (s->nevents < MAX_EVENTS && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct event *e = &s->events[s->nevents++];
        e->ts = col_real(st, 0);
        e->kind = col_dup(st, 1);
        e->detail = col_dup(st, 2);
        if (!e->kind && !(e->kind = strdup("")))
            goto nomem;
        if (sqlite3_column_type(st, 2) != SQLITE_NULL && !e->detail)
            goto nomem;
    }
    if (s->nevents == MAX_EVENTS)
        rc = SQLITE_DONE;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "events");
nomem:
    sqlite3_finalize(st);
    return oom(c);
}

/* The decision's input: every selected pair in the order it was stored
 * (id), with both legs' outcome and latency, both comparisons and the
 * judge's outcome, fed to verdict.h with a look every VERDICT_LOOK_EVERY
 * pairs — the same replay the live analysis and the simulator run. */
static bool is_timeout(const char *error)
{
    return error && (strcmp(error, "timeout") == 0 || strcmp(error, "deadline") == 0);
}

/* verdict.h's comparators, in its order, from comparisons row t */
#define CMP_COLS(t) t ".status_agree, " t ".finish_agree, " t ".exact, " t ".edit_sim, " t \
    ".rouge_l, " t ".length_ratio, " t ".json_valid, " t ".json_same, " t ".tool_agree, " t \
    ".refusal_other"

#define SEQ_SELECT                                                                         \
    "SELECT lp.pair_id, lp.status, lp.error, lp.latency_ms, "                            \
    "ls.pair_id, ls.status, ls.error, ls.latency_ms, "                                   \
    "cs.pair_id, " CMP_COLS("cs") ", ca.pair_id, " CMP_COLS("ca") ", j.outcome, p.id "   \
    "FROM pairs p "                                                                      \
    "LEFT JOIN legs lp ON lp.pair_id = p.id AND lp.leg = 'primary' "                     \
    "LEFT JOIN legs ls ON ls.pair_id = p.id AND ls.leg = 'shadow' "                      \
    "LEFT JOIN comparisons cs ON cs.pair_id = p.id AND cs.against = 'shadow' "           \
    "LEFT JOIN comparisons ca ON ca.pair_id = p.id AND ca.against = 'aa' "               \
    "LEFT JOIN judgements j ON j.pair_id = p.id "
#define SEQ_ID_COL (9 + 2 * (VERDICT_NCMP + 1))

/* One row of SEQ_SELECT as the decision sees the pair. */
static void seq_row(sqlite3_stmt *st, struct verdict_obs *o)
{
    verdict_obs_clear(o);
    for (int l = 0; l < 2; l++) {
        int b = 4 * l;
        if (sqlite3_column_type(st, b) == SQLITE_NULL)
            continue; /* no leg: a failure */
        int status = sqlite3_column_int(st, b + 1);
        const char *error = (const char *)sqlite3_column_text(st, b + 2);
        bool ok = !error && status >= 200 && status < 300;
        double lat = col_real(st, b + 3);
        if (l == 0) {
            o->p_ok = ok;
            o->p_lat = lat;
        } else {
            o->c_ok = ok;
            o->c_lat = lat;
            o->c_timeout = !ok && is_timeout(error);
        }
    }
    for (int a = 0; a < 2; a++) {
        int b = 8 + a * (VERDICT_NCMP + 1);
        if (sqlite3_column_type(st, b) == SQLITE_NULL)
            continue;
        if (a == 1)
            o->has_aa = true;
        double *dst = a ? o->cmp_aa : o->cmp_c;
        for (int k = 0; k < VERDICT_NCMP; k++)
            dst[k] = col_real(st, b + 1 + k);
    }
    const char *jo = (const char *)sqlite3_column_text(st, 8 + 2 * (VERDICT_NCMP + 1));
    o->judge = !jo ? 0 : strcmp(jo, "win") == 0 ? 1 : strcmp(jo, "loss") == 0 ? -1 : 0;
}

static void seq_add(struct verdict_state *vs, const struct verdict_obs *o)
{
    verdict_add(vs, o);
    if (vs->n % VERDICT_LOOK_EVERY == 0)
        verdict_look(vs);
}

static int load_sequence(struct ctx *c, struct section *s)
{
    sqlite3_stmt *st = prep(c, SEQ_SELECT "WHERE p.id IN (" SEL_PAIRS ") ORDER BY p.id", "pair sequence");
    if (!st)
        return -1;
    bind_sel(c, st, s->shadow);
    /* the live analysis brings its own state, fed incrementally over every
     * pair since the start (report_feed); the rows here then only give the
     * per-pair latency ratios of the window */
    if (c->q->decided)
        s->vs = *c->q->decided;
    else
        verdict_init(&s->vs, &c->rules->v);
    struct verdict_obs o;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        seq_row(st, &o);
        if (!c->q->decided)
            seq_add(&s->vs, &o);
        if (o.p_ok && isfinite(o.p_lat) && o.p_lat > 0 && (o.c_timeout || (o.c_ok && isfinite(o.c_lat))) &&
            dvec_push(&s->ratios, o.c_timeout ? INFINITY : o.c_lat / o.p_lat) < 0) {
            sqlite3_finalize(st);
            return oom(c);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_fail(c, "pair sequence");
    verdict_look(&s->vs);
    verdict_decide(&s->vs, &s->v);
    return 0;
}

int report_feed(sqlite3 *db, const char *shadow, double since, int64_t *last_id, struct verdict_state *vs)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, SEQ_SELECT "WHERE p.shadow = ?1 AND p.ts >= ?2 AND p.id > ?3 ORDER BY p.id",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, shadow, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, since > 0 ? since : -1e300);
    sqlite3_bind_int64(st, 3, *last_id);
    struct verdict_obs o;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        seq_row(st, &o);
        seq_add(vs, &o);
        *last_id = sqlite3_column_int64(st, SEQ_ID_COL);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return -1;
    verdict_look(vs);
    return 0;
}

/* ============================================================ statistics */

static int analyse(struct ctx *c, struct section *s)
{
    const struct report_rules *r = c->rules;
    static const double qs[3] = { 0.50, 0.95, 0.99 };

    /* success: primary and shadow over every pair (a missing leg failed),
     * aa over its own legs */
    for (int l = 0; l < NLEGS; l++) {
        struct leg_stats *ls = &s->leg[l];
        ls->n = l == L_AA ? ls->rows : s->pairs;
        if (ls->n > ls->rows)
            add_kind(ls, "missing", ls->n - ls->rows);
        ls->rate = ls->n ? (double)ls->ok / (double)ls->n : NAN;
        stats_wilson((double)ls->ok, (double)ls->n, STATS_Z95, &ls->lo, &ls->hi);
        stats_sort(ls->lat.v, ls->lat.n);
        stats_sort(ls->ttft.v, ls->ttft.n);
        for (int k = 0; k < 3; k++) {
            ls->lat_p[k] = stats_percentile(ls->lat.v, ls->lat.n, qs[k]);
            ls->ttft_p[k] = stats_percentile(ls->ttft.v, ls->ttft.n, qs[k]);
        }
    }

    /* latency ratio over pairs where both legs succeeded */
    s->boot_reps = STATS_BOOT_REPLICATES;
    s->ratio[0].point = s->ratio[0].lo = s->ratio[0].hi = NAN;
    s->ratio[1] = s->ratio[0];
    if (s->pair_p.n > 0) {
        if (stats_boot_ratio(s->pair_p.v, s->pair_s.v, s->pair_p.n, qs, 2, s->boot_reps,
                             STATS_BOOT_SEED, s->ratio) < 0)
            return oom(c);
        s->have_ratio = isfinite(s->ratio[0].point);
    }

    /* comparators: descriptive means on each side; the test is the paired
     * sign test of the decision (verdict.h), its always-valid p = 1 / the
     * running maximum of its e-value */
    s->noise_known = s->cmp_rows[A_AA] > 0;
    for (size_t i = 0; i < NCMP; i++) {
        struct cmp_stats *cs = &s->cmp[i];
        for (int a = 0; a < 2; a++) {
            struct cmp_side *sd = &cs->s[a];
            double n = (double)sd->n;
            sd->mean = sd->n ? sd->sum / n : NAN;
            sd->var = sd->n > 1 ? (sd->sumsq - sd->sum * sd->sum / n) / (n - 1) : NAN;
            if (sd->var < 0)
                sd->var = 0; /* rounding */
        }
        const struct cmp_side *sh = &cs->s[A_SHADOW], *aa = &cs->s[A_AA];
        cs->known = sh->n > 0 && aa->n > 0 && cmp_defs[i].better != INFO;
        cs->diff = sh->mean - aa->mean;
        cs->p = NAN;
        cs->verdict = 0;
        if (i < VERDICT_NCMP && s->v.cmp_applicable[i]) {
            double le = s->vs.cmp_worse[i].log_e_max;
            cs->p = le > 0 ? exp(-le) : 1;
            cs->verdict = s->v.cmp_alarm[i] ? -1 : 0;
        }
    }

    /* judge: losses against wins is the alarm; wins against losses is shown */
    struct judge_stats *j = &s->judge;
    uint64_t valid = j->win + j->tie + j->loss + j->inconsistent, decisive = j->win + j->loss;
    j->inconsistency = valid ? (double)j->inconsistent / (double)valid : NAN;
    j->share = decisive ? (double)j->win / (double)decisive : NAN;
    seq_rate_cs((double)j->win, (double)j->loss, r->v.alpha, &j->lo, &j->hi);
    double lw = s->vs.judge_worse.log_e_max, lb = seq_log_e_sign((double)j->win, (double)j->loss);
    j->p_worse = lw > 0 ? exp(-lw) : 1;
    j->p_better = lb > 0 ? exp(-lb) : 1;
    if (decisive && j->p_better >= r->v.alpha) {
        double lo80, hi80;
        stats_wilson((double)j->win, (double)decisive, 0.8416212335729143, &lo80, &hi80);
        j->decisive_needed = seq_n_for_power(lo80, 0.5, log(1 / r->v.alpha), 0.8);
    }

    /* confidence sequences: success per leg, latency and TTFT quantiles per
     * leg, the median per-pair latency ratio */
    for (int l = 0; l < NLEGS; l++)
        seq_rate_cs((double)s->leg[l].ok, (double)(s->leg[l].n - s->leg[l].ok), r->v.alpha,
                    &s->succ_cs[l][0], &s->succ_cs[l][1]);
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 2; k++) {
            const struct leg_stats *ls = &s->leg[l];
            seq_quantile_cs(ls->lat.v, ls->lat.n, qs[k], r->v.alpha, &s->lat_cs[l][k][0],
                            &s->lat_cs[l][k][1]);
            seq_quantile_cs(ls->ttft.v, ls->ttft.n, qs[k], r->v.alpha, &s->ttft_cs[l][k][0],
                            &s->ttft_cs[l][k][1]);
        }
    stats_sort(s->ratios.v, s->ratios.n);
    size_t rn = s->ratios.n;
    s->ratio_med = !rn       ? NAN
                   : rn & 1  ? s->ratios.v[rn / 2]
                             : 0.5 * (s->ratios.v[rn / 2 - 1] + s->ratios.v[rn / 2]); /* inf stays inf */
    seq_quantile_cs(s->ratios.v, s->ratios.n, 0.5, r->v.alpha, &s->ratio_lo, &s->ratio_hi);
    return 0;
}

/* ======================================================== recommendation */

static void reco_add(struct reco *rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reco_add(struct reco *rc, const char *fmt, ...)
{
    size_t len = strlen(rc->reason);
    if (len + 1 >= sizeof rc->reason)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rc->reason + len, sizeof rc->reason - len, fmt, ap);
    va_end(ap);
}

/* an e-value from its log; astronomically large ones are shown as 1e300 */
static double ev(double log_e) { return log_e > 690 ? 1e300 : exp(log_e); }
static double avp(double log_e_max) { return log_e_max > 0 ? exp(-log_e_max) : 1; }

/* The recommendation is verdict.h's decision; this says it in words, with
 * the evidence of the rule that decided. */
static void decide(const struct report_rules *rules, struct section *s)
{
    const struct verdict_rules *r = &rules->v;
    const struct verdict_state *vs = &s->vs;
    const struct verdict *v = &s->v;
    struct reco *rc = &s->reco;
    memset(rc, 0, sizeof *rc);
    rc->action = v->action_name;
    rc->rule = v->rule;
    rc->criterion = v->criterion;
    rc->more = v->more;
    double athr[VERDICT_FAMILIES];
    for (int f = 0; f < VERDICT_FAMILIES; f++)
        athr[f] = ev(verdict_alarm_log_thr(r, f));
    double rthr = ev(verdict_ready_log_thr(r));

    switch (v->action) {
    case VA_INVESTIGATE:
        if (v->alarm[VF_SUCCESS]) {
            reco_add(rc, "the shadow fails where the primary succeeds more often than the reverse: "
                         "%llu vs %llu discordant pairs (e-value %.3g >= %.3g, always-valid p %.4f)",
                     (unsigned long long)vs->succ_worse.a, (unsigned long long)vs->succ_worse.b,
                     ev(vs->succ_worse.log_e_max), athr[VF_SUCCESS], avp(vs->succ_worse.log_e_max));
            return;
        }
        reco_add(rc, "worse than the A/A noise floor: ");
        for (int i = 0; i < VERDICT_NCMP; i++)
            if (v->cmp_alarm[i]) {
                const struct verdict_count *k = &vs->cmp_worse[i];
                reco_add(rc, "%s%s: shadow %.3f vs A/A %.3f, worse in %llu paired pairs, better in %llu "
                             "(sign e-value %.3g)",
                         rc->nnames ? "; " : "", verdict_cmp_names[i], s->cmp[i].s[A_SHADOW].mean,
                         s->cmp[i].s[A_AA].mean, (unsigned long long)k->a, (unsigned long long)k->b,
                         ev(k->log_e_max));
                rc->names[rc->nnames++] = verdict_cmp_names[i];
            }
        if (v->alarm[VF_QUALITY])
            reco_add(rc, " (comparators' e-value %.3g >= %.3g)", ev(vs->quality_log_e_max),
                     athr[VF_QUALITY]);
        if (v->alarm[VF_JUDGE]) {
            reco_add(rc, "%sjudge: %llu losses vs %llu wins (e-value %.3g >= %.3g)",
                     rc->nnames ? "; " : "", (unsigned long long)vs->judge_worse.a,
                     (unsigned long long)vs->judge_worse.b, ev(vs->judge_worse.log_e_max),
                     athr[VF_JUDGE]);
            rc->names[rc->nnames++] = "judge";
        }
        return;
    case VA_TOO_SLOW: {
        uint64_t n = vs->lat_slow.a + vs->lat_slow.b;
        reco_add(rc, "the shadow is slower than %.2fx the primary (or timed out) in %llu of %llu pairs; "
                     "median per-pair ratio %.2f, %.0f%% confidence sequence [%.2f, %.2f] "
                     "(e-value %.3g >= %.3g, always-valid p %.4f)",
                 r->latency_margin, (unsigned long long)vs->lat_slow.a, (unsigned long long)n,
                 s->ratio_med, 100 * (1 - r->alpha), s->ratio_lo, s->ratio_hi,
                 ev(vs->lat_slow.log_e_max), athr[VF_LATENCY], avp(vs->lat_slow.log_e_max));
        return;
    }
    case VA_READY:
        reco_add(rc, "shadow success %.2f%% shown above %.2f%% (e-value %.3g >= %.3g); faster than "
                     "%.2fx the primary in %llu of %llu pairs (e-value %.3g); every comparator shown "
                     "within %.2f of the A/A noise floor; no alarm",
                 100 * s->leg[L_SHADOW].rate, 100 * r->success_min, ev(vs->succ_ready.log_e_max), rthr,
                 r->latency_ratio_max, (unsigned long long)vs->lat_fast.a,
                 (unsigned long long)(vs->lat_fast.a + vs->lat_fast.b), ev(vs->lat_fast.log_e_max),
                 r->quality_margin);
        if (s->judge.win + s->judge.loss)
            reco_add(rc, "; judge %llu wins vs %llu losses", (unsigned long long)s->judge.win,
                     (unsigned long long)s->judge.loss);
        return;
    case VA_KEEP_COLLECTING:
        break;
    }

    /* not decided: say what each readiness test is waiting for */
    if (vs->n < r->min_pairs)
        reco_add(rc, "%llu pairs, fewer than the %u the rules need", (unsigned long long)vs->n,
                 r->min_pairs);
    if (!v->ready_success)
        reco_add(rc, "%sshadow success not yet shown above %.2f%% (%.2f%%, confidence sequence from "
                     "%.2f%%)",
                 rc->reason[0] ? "; " : "", 100 * r->success_min, 100 * s->leg[L_SHADOW].rate,
                 100 * s->succ_cs[L_SHADOW][0]);
    if (!v->ready_latency)
        reco_add(rc, "%slatency not yet shown below %.2fx the primary's in most pairs (%llu of %llu)",
                 rc->reason[0] ? "; " : "", r->latency_ratio_max, (unsigned long long)vs->lat_fast.a,
                 (unsigned long long)(vs->lat_fast.a + vs->lat_fast.b));
    bool any = false;
    for (int i = 0; i < VERDICT_NCMP; i++)
        any = any || v->cmp_applicable[i];
    if (!any) {
        reco_add(rc, "%sno A/A legs recorded: the noise floor is unknown, so the comparators cannot be "
                     "judged (send a fraction of shadowed requests to the primary again: aa_percent)",
                 rc->reason[0] ? "; " : "");
    } else {
        bool first = true;
        for (int i = 0; i < VERDICT_NCMP; i++)
            if (!v->cmp_ready[i]) {
                reco_add(rc, "%s%s (a drop below %.3f cannot be ruled out yet)",
                         first ? (rc->reason[0] ? "; not yet shown within the quality margin: "
                                                : "not yet shown within the quality margin: ")
                               : ", ",
                         verdict_cmp_names[i], v->cmp_mde[i]);
                first = false;
            }
        if (v->raise_aa)
            reco_add(rc, "; the A/A sample is what limits: raise aa_percent to get there sooner");
    }
    if (rc->more >= 0)
        reco_add(rc, "; about %lld more pairs for an 80%% chance (%s)", (long long)rc->more,
                 rc->criterion ? rc->criterion : "-");
}

/* ============================================================ text format */

static void t_counters(struct w *w, const struct section *s)
{
    w_fmt(w, "%-17s", "counters");
    if (s->ncounters == 0) {
        w_str(w, "none recorded\n");
        return;
    }
    w_fmt(w, "mirrored %lld, stored %lld, dropped %lld", (long long)s->mirrored,
          (long long)s->stored, (long long)s->dropped);
    bool first = true;
    for (size_t i = 0; i < s->ncounters; i++)
        if (strncmp(s->counters[i].name, "dropped_", 8) == 0 && s->counters[i].value) {
            w_str(w, first ? " (" : ", ");
            t_line(w, s->counters[i].name + 8, 32);
            w_fmt(w, " %lld", (long long)s->counters[i].value);
            first = false;
        }
    w_str(w, first ? "" : ")");
    long long gap = (long long)(s->mirrored - s->stored - s->dropped);
    if (gap == 0)
        w_str(w, ": mirrored = stored + dropped\n");
    else
        w_fmt(w, ": MISMATCH, mirrored != stored + dropped (%+lld unaccounted; expected while "
                 "the writer has not flushed)\n", gap);
    w_fmt(w, "%-17s(cumulative since the shadow started, not limited by --since)\n", "");
}

static void t_kinds(struct w *w, const struct leg_stats *ls)
{
    if (ls->nkinds == 0) {
        w_str(w, "-");
        return;
    }
    for (size_t i = 0; i < ls->nkinds; i++) {
        w_str(w, i ? ", " : "");
        t_line(w, ls->kinds[i].name, 32);
        w_fmt(w, " %llu", (unsigned long long)ls->kinds[i].n);
    }
}

static void t_leg_label(struct w *w, int l)
{
    w_fmt(w, "  %-15s", leg_names[l]);
}

/* A comparator's verdict in words, with its minimum detectable effect
 * beside every "within noise". */
static void cmp_verdict(const struct report_rules *r, const struct section *s, size_t i, char *out,
                        size_t cap)
{
    if (cmp_defs[i].better == INFO || i >= VERDICT_NCMP)
        snprintf(out, cap, "(primary's own rate)");
    else if (!s->noise_known)
        snprintf(out, cap, "noise floor unknown");
    else if (!s->v.cmp_applicable[i])
        snprintf(out, cap, "no paired values");
    else if (s->v.cmp_alarm[i])
        snprintf(out, cap, "WORSE than the noise floor");
    else if (s->v.cmp_ready[i])
        snprintf(out, cap, "within noise: shown within %.2f", r->v.quality_margin);
    else
        snprintf(out, cap, "not shown worse; cannot detect a drop below %.3f yet", s->v.cmp_mde[i]);
}

static void t_test(struct w *w, const char *name, const char *what, double log_e_max, double log_thr,
                   bool passed, const char *yes, const char *no)
{
    w_fmt(w, "  %-15s%-44s%-11.4g%-11.4g%s\n", name, what, ev(log_e_max), ev(log_thr), passed ? yes : no);
}

/* Every test the decision took, with its e-value (the largest so far),
 * the threshold it must reach and what it says. */
static void t_decision(struct w *w, const struct report_rules *rules, const struct section *s)
{
    const struct verdict_rules *r = &rules->v;
    const struct verdict_state *vs = &s->vs;
    const struct verdict *v = &s->v;
    char what[128];
    w_fmt(w, "%-17s%-44s%-11s%-11s%s\n", "tests", "(anytime-valid, a look every 10 pairs)",
          "e-value", "threshold", "result");
    w_fmt(w, "  alarms: any of these at alpha %.2f together\n", r->alpha);
    snprintf(what, sizeof what, "%llu primary ok/shadow failed vs %llu reverse",
             (unsigned long long)vs->succ_worse.a, (unsigned long long)vs->succ_worse.b);
    t_test(w, "success worse", what, vs->succ_worse.log_e_max, verdict_alarm_log_thr(r, VF_SUCCESS),
           v->alarm[VF_SUCCESS], "ALARM", "-");
    snprintf(what, sizeof what, "%llu of %llu pairs slower than %.2fx",
             (unsigned long long)vs->lat_slow.a,
             (unsigned long long)(vs->lat_slow.a + vs->lat_slow.b), r->latency_margin);
    t_test(w, "latency slower", what, vs->lat_slow.log_e_max, verdict_alarm_log_thr(r, VF_LATENCY),
           v->alarm[VF_LATENCY], "ALARM", "-");
    t_test(w, "quality worse", "comparators vs A/A (weighted average)", vs->quality_log_e_max,
           verdict_alarm_log_thr(r, VF_QUALITY), v->alarm[VF_QUALITY], "ALARM", "-");
    snprintf(what, sizeof what, "%llu losses vs %llu wins", (unsigned long long)vs->judge_worse.a,
             (unsigned long long)vs->judge_worse.b);
    t_test(w, "judge worse", what, vs->judge_worse.log_e_max, verdict_alarm_log_thr(r, VF_JUDGE),
           v->alarm[VF_JUDGE], "ALARM", "-");
    w_fmt(w, "  ready: all of these, each at alpha %.2f, and at least %u pairs\n", r->alpha_ready,
          r->min_pairs);
    snprintf(what, sizeof what, "%llu of %llu ok, above %.2f%%", (unsigned long long)vs->succ_ready.a,
             (unsigned long long)(vs->succ_ready.a + vs->succ_ready.b), 100 * r->success_min);
    t_test(w, "success", what, vs->succ_ready.log_e_max, verdict_ready_log_thr(r), v->ready_success,
           "shown", "not yet");
    snprintf(what, sizeof what, "%llu of %llu pairs faster than %.2fx", (unsigned long long)vs->lat_fast.a,
             (unsigned long long)(vs->lat_fast.a + vs->lat_fast.b), r->latency_ratio_max);
    t_test(w, "latency", what, vs->lat_fast.log_e_max, verdict_ready_log_thr(r), v->ready_latency,
           "shown", "not yet");
    w_fmt(w, "  %-15s%s %.2f of the A/A noise floor (paired mean difference; mde: the drop\n"
             "  %-15sdetectable with an 80%% chance now)\n", "quality:", "each comparator within",
          r->quality_margin, "");
    for (int i = 0; i < VERDICT_NCMP; i++) {
        if (!v->cmp_applicable[i])
            continue;
        const struct seq_bet *b = &vs->cmp_ni[i];
        snprintf(what, sizeof what, "  diff %+.3f over %llu pairs, mde %.3f",
                 b->n ? b->sum / (double)b->n : NAN, (unsigned long long)b->n, v->cmp_mde[i]);
        t_test(w, verdict_cmp_names[i], what, b->log_e_max, verdict_ready_log_thr(r), v->cmp_ready[i],
               "shown", "not yet");
    }
    w_fmt(w, "  auto-stop:      CUSUM %.2f of %.2f (success below %.2f%%)%s\n", vs->cusum.w, vs->cusum.h,
          100 * r->stop_below,
          r->stop_below <= 0 ? ", off" : vs->stop_n ? ", REACHED" : "");
    w_str(w, "\n");
}

static void render_text(struct w *w, const struct report_query *q, const struct report_rules *r,
                        const struct section *s)
{
    char a[32], b[32], c2[32], d[32], e[32];
    w_str(w, "== shadow ");
    t_line(w, s->shadow, 80);
    w_str(w, "\n\n");
    const struct reco *rc = &s->reco;
    w_fmt(w, "%-17s%s  (rule %s)\n", "recommendation", rc->action, rc->rule);
    w_fmt(w, "%-17s", "");
    t_line(w, rc->reason, sizeof rc->reason);
    w_str(w, "\n");
    if (rc->more >= 0 && strcmp(rc->action, "keep_collecting") == 0)
        w_fmt(w, "%-17smore pairs needed: %lld (%s, for an 80%% chance)\n", "", (long long)rc->more,
              rc->criterion ? rc->criterion : "-");
    w_str(w, "\n");
    t_decision(w, r, s);

    char t0[40], t1[40];
    iso_time(s->first_ts, t0, sizeof t0);
    iso_time(s->last_ts, t1, sizeof t1);
    w_fmt(w, "%-17s%llu", "pairs", (unsigned long long)s->pairs);
    if (s->pairs)
        w_fmt(w, " (%s .. %s)", t0, t1);
    w_str(w, "\n");
    t_counters(w, s);
    w_str(w, "\n");

    w_fmt(w, "%-17s%-10s%-22s%-9s%s\n", "success", "rate", "95% CS (anytime)", "n", "failures");
    for (int l = 0; l < NLEGS; l++) {
        const struct leg_stats *ls = &s->leg[l];
        if (l == L_AA && ls->n == 0)
            continue;
        char ci[80];
        if (ls->n)
            snprintf(ci, sizeof ci, "[%s, %s]", f_pct(a, sizeof a, s->succ_cs[l][0]),
                     f_pct(b, sizeof b, s->succ_cs[l][1]));
        else
            snprintf(ci, sizeof ci, "-");
        t_leg_label(w, l);
        w_fmt(w, "%-10s%-22s%-9llu", f_pct(c2, sizeof c2, ls->rate), ci, (unsigned long long)ls->n);
        t_kinds(w, ls);
        w_str(w, "\n");
    }
    w_str(w, "\n");

    for (int m = 0; m < 2; m++) {
        w_fmt(w, "%-17s%-10s%-10s%-10s%s\n", m ? "ttft ms" : "latency ms", "p50", "p95", "p99", "n");
        for (int l = 0; l < 2; l++) {
            const struct leg_stats *ls = &s->leg[l];
            const double *p = m ? ls->ttft_p : ls->lat_p;
            t_leg_label(w, l);
            w_fmt(w, "%-10s%-10s%-10s%zu\n", f_num(a, sizeof a, p[0], 1), f_num(b, sizeof b, p[1], 1),
                  f_num(c2, sizeof c2, p[2], 1), m ? ls->ttft.n : ls->lat.n);
            const double(*cs)[2] = m ? s->ttft_cs[l] : s->lat_cs[l];
            char c50[80], c95[80];
            snprintf(c50, sizeof c50, "[%s, %s]", f_num(a, sizeof a, cs[0][0], 0), f_num(b, sizeof b, cs[0][1], 0));
            snprintf(c95, sizeof c95, "[%s, %s]", f_num(a, sizeof a, cs[1][0], 0), f_num(b, sizeof b, cs[1][1], 0));
            w_fmt(w, "    %-13s%-20s%s\n", "95% CS", c50, c95);
        }
        if (m == 0) {
            w_fmt(w, "  %-15smedian %s, 95%% CS [%s, %s], over %zu pairs (a shadow timeout counts as "
                     "slower)\n", "per-pair ratio", f_num(a, sizeof a, s->ratio_med, 3),
                  f_num(b, sizeof b, s->ratio_lo, 3), f_num(c2, sizeof c2, s->ratio_hi, 3), s->ratios.n);
        }
        if (m == 0) {
            w_fmt(w, "  %-15s%-10s%-10s%-10s%zu pairs with both legs successful\n", "ratio of pct",
                  f_num(a, sizeof a, s->ratio[0].point, 3), f_num(b, sizeof b, s->ratio[1].point, 3),
                  "", s->pair_p.n);
            if (s->have_ratio) {
                char ci0[80], ci1[80];
                snprintf(ci0, sizeof ci0, "[%s, %s]", f_num(a, sizeof a, s->ratio[0].lo, 3),
                         f_num(b, sizeof b, s->ratio[0].hi, 3));
                snprintf(ci1, sizeof ci1, "[%s, %s]", f_num(a, sizeof a, s->ratio[1].lo, 3),
                         f_num(b, sizeof b, s->ratio[1].hi, 3));
                w_fmt(w, "  %-15s%-20s%-20s(paired bootstrap, %u resamples; one look only)\n",
                      "95% CI", ci0, ci1, s->boot_reps);
            }
        }
    }
    w_fmt(w, "%-17sprimary %s (n %llu), shadow %s (n %llu)\n", "itl ms mean",
          f_num(a, sizeof a, acc_mean(&s->leg[L_PRIMARY].itl), 1),
          (unsigned long long)s->leg[L_PRIMARY].itl.n,
          f_num(b, sizeof b, acc_mean(&s->leg[L_SHADOW].itl), 1),
          (unsigned long long)s->leg[L_SHADOW].itl.n);
    w_str(w, "\n");

    w_fmt(w, "%-17s%-14s%-14s%s\n", "usage per leg", "tokens in", "tokens out", "cost usd");
    const struct leg_stats *P = &s->leg[L_PRIMARY], *S = &s->leg[L_SHADOW];
    w_fmt(w, "  %-15s%-14s%-14s%s\n", "primary mean", f_num(a, sizeof a, acc_mean(&P->tin), 1),
          f_num(b, sizeof b, acc_mean(&P->tout), 1), f_num(c2, sizeof c2, acc_mean(&P->cost), 6));
    w_fmt(w, "  %-15s%-14s%-14s%s\n", "shadow mean", f_num(a, sizeof a, acc_mean(&S->tin), 1),
          f_num(b, sizeof b, acc_mean(&S->tout), 1), f_num(c2, sizeof c2, acc_mean(&S->cost), 6));
    w_fmt(w, "  %-15s%-14s%-14s%s\n", "difference",
          f_num(a, sizeof a, acc_mean(&S->tin) - acc_mean(&P->tin), 1),
          f_num(b, sizeof b, acc_mean(&S->tout) - acc_mean(&P->tout), 1),
          f_num(c2, sizeof c2, acc_mean(&S->cost) - acc_mean(&P->cost), 6));
    w_fmt(w, "  %-15s%-14.0f%-14.0f%.6f\n", "primary total", P->tin.sum, P->tout.sum, P->cost.sum);
    w_fmt(w, "  %-15s%-14.0f%-14.0f%.6f\n", "shadow total", S->tin.sum, S->tout.sum, S->cost.sum);
    w_str(w, "\n");

    w_fmt(w, "%-19s%-9s%-8s%-9s%-8s%-8s%-13s%-9s%s\n", "comparators", "shadow", "n", "aa", "n",
          "paired", "worse/better", "e-value", "verdict");
    for (size_t i = 0; i < NCMP; i++) {
        const struct cmp_stats *cs = &s->cmp[i];
        if (cs->s[A_SHADOW].n == 0 && cs->s[A_AA].n == 0)
            continue;
        char v[96], wb[40], evs[32];
        cmp_verdict(r, s, i, v, sizeof v);
        bool tested = i < VERDICT_NCMP;
        snprintf(wb, sizeof wb, "%s", "-");
        snprintf(evs, sizeof evs, "%s", "-");
        if (tested) {
            snprintf(wb, sizeof wb, "%llu/%llu", (unsigned long long)s->vs.cmp_worse[i].a,
                     (unsigned long long)s->vs.cmp_worse[i].b);
            snprintf(evs, sizeof evs, "%.3g", ev(s->vs.cmp_worse[i].log_e_max));
        }
        w_fmt(w, "  %-17s%-9s%-8llu%-9s%-8llu%-8llu%-13s%-9s%s\n", cmp_defs[i].name,
              f_num(a, sizeof a, cs->s[A_SHADOW].mean, 3), (unsigned long long)cs->s[A_SHADOW].n,
              f_num(b, sizeof b, cs->s[A_AA].mean, 3), (unsigned long long)cs->s[A_AA].n,
              (unsigned long long)(tested ? s->vs.cmp_applies[i] : 0), wb, evs, v);
    }
    if (s->cmp_rows[A_SHADOW] == 0)
        w_fmt(w, "  %s\n", "no comparisons recorded");
    if (!s->noise_known)
        w_fmt(w, "  %s\n", "no A/A legs: the noise floor is unknown");
    w_str(w, "\n");

    const struct judge_stats *j = &s->judge;
    uint64_t total = j->win + j->tie + j->loss + j->inconsistent + j->error;
    w_fmt(w, "%-17s", "judge");
    if (!total) {
        w_str(w, "no judgements\n");
    } else {
        for (size_t i = 0; i < j->nnames; i++) {
            w_str(w, i ? ", " : "");
            t_line(w, j->names[i], 60);
        }
        if (j->more_names)
            w_fmt(w, " and %llu more", (unsigned long long)j->more_names);
        w_fmt(w, ": %llu judged\n", (unsigned long long)total);
        w_fmt(w, "  %-15s%llu win, %llu tie, %llu loss, %llu inconsistent, %llu error; inconsistency %s\n",
              "verdicts", (unsigned long long)j->win, (unsigned long long)j->tie,
              (unsigned long long)j->loss, (unsigned long long)j->inconsistent,
              (unsigned long long)j->error, f_pct(a, sizeof a, j->inconsistency));
        w_fmt(w, "  %-15s%s of %llu decisive, 95%% CS [%s, %s]; always-valid p %s (better), %s (worse)\n",
              "win share", f_pct(a, sizeof a, j->share), (unsigned long long)(j->win + j->loss),
              f_pct(b, sizeof b, j->lo), f_pct(c2, sizeof c2, j->hi), f_p(d, sizeof d, j->p_better),
              f_p(e, sizeof e, j->p_worse));
        if (j->decisive_needed)
            w_fmt(w, "  %-15sshown better with an 80%% chance after about %llu decisive verdicts\n", "",
                  (unsigned long long)j->decisive_needed);
    }
    w_str(w, "\n");

    if (q->worst) {
        w_str(w, s->nex ? "worst examples\n" : "worst examples   none (every compared pair agrees)\n");
        for (size_t i = 0; i < s->nex; i++) {
            const struct example *ex = &s->ex[i];
            char ts[40];
            iso_time(ex->ts, ts, sizeof ts);
            w_fmt(w, "  #%zu pair %lld  %s  status %s  rouge_l %s\n", i + 1, (long long)ex->id, ts,
                  ex->status_agree ? "agree" : "DIFFER", f_num(a, sizeof a, ex->rouge_l, 3));
            w_fmt(w, "     %-9s", "prompt");
            char *pt = prompt_plain(ex->prompt);
            t_line(w, pt ? pt : ex->prompt, TEXT_CLIP);
            free(pt);
            w_str(w, "\n");
            for (int l = 0; l < 2; l++) {
                const struct ex_leg *el = &ex->leg[l];
                w_fmt(w, "     %-9s", leg_names[l]);
                if (!el->present) {
                    w_str(w, "[no leg recorded]\n");
                    continue;
                }
                if (el->error || el->status < 200 || el->status >= 300) {
                    w_fmt(w, "[status %d", el->status);
                    if (el->error) {
                        w_str(w, ", ");
                        t_line(w, el->error, 32);
                    }
                    w_str(w, "] ");
                }
                t_line(w, el->response, TEXT_CLIP);
                w_str(w, "\n");
            }
        }
        w_str(w, "\n");
    }
    if (s->nevents) {
        w_str(w, "events\n");
        for (size_t i = 0; i < s->nevents; i++) {
            char ts[40];
            iso_time(s->events[i].ts, ts, sizeof ts);
            w_fmt(w, "  %s  ", ts);
            t_line(w, s->events[i].kind, 20);
            w_str(w, "  ");
            t_line(w, s->events[i].detail, 120);
            w_str(w, "\n");
        }
        w_str(w, "\n");
    }
}

/* ============================================================ JSON format */

static void j_dist(struct w *w, const struct dvec *v, const double *p)
{
    w_fmt(w, "{\"n\":%zu,\"p50\":", v->n);
    j_num(w, p[0]);
    w_str(w, ",\"p95\":");
    j_num(w, p[1]);
    w_str(w, ",\"p99\":");
    j_num(w, p[2]);
    w_str(w, "}");
}

static void j_acc(struct w *w, const struct mean_acc *a)
{
    w_fmt(w, "{\"n\":%llu,\"mean\":", (unsigned long long)a->n);
    j_num(w, acc_mean(a));
    w_str(w, ",\"total\":");
    j_num(w, a->sum);
    w_str(w, "}");
}

static void j_test(struct w *w, const char *name, const struct verdict_count *k, double log_thr,
                   bool crossed)
{
    w_fmt(w, "\"%s\":{\"for\":%llu,\"against\":%llu,\"e_value\":", name, (unsigned long long)k->a,
          (unsigned long long)k->b);
    j_num(w, ev(k->log_e));
    w_str(w, ",\"e_value_max\":");
    j_num(w, ev(k->log_e_max));
    w_str(w, ",\"always_valid_p\":");
    j_num(w, avp(k->log_e_max));
    w_str(w, ",\"threshold\":");
    j_num(w, ev(log_thr));
    w_fmt(w, ",\"crossed\":%s}", crossed ? "true" : "false");
}

/* "decision": every test of verdict.h with its counts, e-values and
 * threshold (doc/shadow-report.md lists the fields). */
static void j_decision(struct w *w, const struct section *s)
{
    const struct verdict_rules *r = &s->vs.rules;
    const struct verdict_state *vs = &s->vs;
    const struct verdict *v = &s->v;
    w_fmt(w, ",\"decision\":{\"pairs\":%llu,\"look_every\":%d,\"alarms\":{", (unsigned long long)vs->n,
          VERDICT_LOOK_EVERY);
    j_test(w, "success_worse", &vs->succ_worse, verdict_alarm_log_thr(r, VF_SUCCESS), v->alarm[VF_SUCCESS]);
    w_str(w, ",");
    j_test(w, "latency_slower", &vs->lat_slow, verdict_alarm_log_thr(r, VF_LATENCY), v->alarm[VF_LATENCY]);
    w_str(w, ",\"quality_worse\":{\"e_value\":");
    j_num(w, ev(vs->quality_log_e));
    w_str(w, ",\"e_value_max\":");
    j_num(w, ev(vs->quality_log_e_max));
    w_str(w, ",\"always_valid_p\":");
    j_num(w, avp(vs->quality_log_e_max));
    w_str(w, ",\"threshold\":");
    j_num(w, ev(verdict_alarm_log_thr(r, VF_QUALITY)));
    w_fmt(w, ",\"crossed\":%s},", v->alarm[VF_QUALITY] ? "true" : "false");
    j_test(w, "judge_worse", &vs->judge_worse, verdict_alarm_log_thr(r, VF_JUDGE), v->alarm[VF_JUDGE]);
    w_str(w, "},\"ready\":{");
    j_test(w, "success", &vs->succ_ready, verdict_ready_log_thr(r), v->ready_success);
    w_str(w, ",");
    j_test(w, "latency", &vs->lat_fast, verdict_ready_log_thr(r), v->ready_latency);
    w_fmt(w, ",\"quality\":%s},\"autostop\":{\"statistic\":", v->ready_quality ? "true" : "false");
    j_num(w, vs->cusum.w);
    w_str(w, ",\"threshold\":");
    j_num(w, vs->cusum.h);
    w_fmt(w, ",\"reached\":%s}", vs->stop_n ? "true" : "false");
    w_str(w, ",\"first_alarm_pair\":");
    j_num(w, vs->first_alarm_n ? (double)vs->first_alarm_n : NAN);
    w_str(w, ",\"first_ready_pair\":");
    j_num(w, vs->first_ready_n ? (double)vs->first_ready_n : NAN);
    w_str(w, "}");
}

static void render_json(struct w *w, const struct section *s)
{
    w_str(w, "{\"shadow\":");
    j_str(w, s->shadow);
    const struct reco *rc = &s->reco;
    w_fmt(w, ",\"recommendation\":{\"action\":\"%s\",\"rule\":\"%s\",\"reason\":", rc->action, rc->rule);
    j_str(w, rc->reason);
    w_str(w, ",\"criterion\":");
    j_str(w, rc->criterion);
    w_str(w, ",\"more_pairs\":");
    if (rc->more >= 0)
        w_fmt(w, "%lld", (long long)rc->more);
    else
        w_str(w, "null");
    w_str(w, ",\"comparators\":[");
    for (size_t i = 0; i < rc->nnames; i++)
        w_fmt(w, "%s\"%s\"", i ? "," : "", rc->names[i]);
    w_str(w, "],\"raise_aa_percent\":");
    w_str(w, s->v.raise_aa ? "true" : "false");
    w_str(w, "}");
    j_decision(w, s);
    w_str(w, ",\"analysis_start\":");
    j_num(w, s->start_ts > 0 ? s->start_ts : NAN);
    w_fmt(w, ",\"pairs\":%llu,\"first_ts\":", (unsigned long long)s->pairs);
    j_num(w, s->first_ts);
    w_str(w, ",\"last_ts\":");
    j_num(w, s->last_ts);

    w_fmt(w, ",\"counters\":{\"mirrored\":%lld,\"stored\":%lld,\"dropped\":{", (long long)s->mirrored,
          (long long)s->stored);
    bool first = true;
    for (size_t i = 0; i < s->ncounters; i++)
        if (strncmp(s->counters[i].name, "dropped_", 8) == 0) {
            w_str(w, first ? "" : ",");
            j_str(w, s->counters[i].name + 8);
            w_fmt(w, ":%lld", (long long)s->counters[i].value);
            first = false;
        }
    w_fmt(w, "},\"dropped_total\":%lld,\"recorded\":%s,\"invariant_ok\":%s,\"unaccounted\":%lld}",
          (long long)s->dropped, s->ncounters ? "true" : "false",
          s->mirrored == s->stored + s->dropped ? "true" : "false",
          (long long)(s->mirrored - s->stored - s->dropped));

    w_str(w, ",\"success\":{");
    for (int l = 0; l < NLEGS; l++) {
        const struct leg_stats *ls = &s->leg[l];
        w_fmt(w, "%s\"%s\":{\"n\":%llu,\"ok\":%llu,\"rate\":", l ? "," : "", leg_names[l],
              (unsigned long long)ls->n, (unsigned long long)ls->ok);
        j_num(w, ls->rate);
        w_str(w, ",\"wilson_lo\":");
        j_num(w, ls->n ? ls->lo : NAN);
        w_str(w, ",\"wilson_hi\":");
        j_num(w, ls->n ? ls->hi : NAN);
        w_str(w, ",\"cs_lo\":");
        j_num(w, ls->n ? s->succ_cs[l][0] : NAN);
        w_str(w, ",\"cs_hi\":");
        j_num(w, ls->n ? s->succ_cs[l][1] : NAN);
        w_str(w, ",\"failures\":{");
        for (size_t k = 0; k < ls->nkinds; k++) {
            w_str(w, k ? "," : "");
            j_str(w, ls->kinds[k].name);
            w_fmt(w, ":%llu", (unsigned long long)ls->kinds[k].n);
        }
        w_str(w, "}}");
    }
    w_str(w, "}");

    w_str(w, ",\"latency\":{");
    for (int l = 0; l < 2; l++) {
        const struct leg_stats *ls = &s->leg[l];
        w_fmt(w, "\"%s\":{\"latency_ms\":", leg_names[l]);
        j_dist(w, &ls->lat, ls->lat_p);
        w_str(w, ",\"ttft_ms\":");
        j_dist(w, &ls->ttft, ls->ttft_p);
        for (int m = 0; m < 2; m++) {
            const double(*cs)[2] = m ? s->ttft_cs[l] : s->lat_cs[l];
            w_fmt(w, ",\"%s\":{", m ? "ttft_cs" : "latency_cs");
            for (int k = 0; k < 2; k++) {
                w_fmt(w, "%s\"%s\":[", k ? "," : "", k ? "p95" : "p50");
                j_num(w, cs[k][0]);
                w_str(w, ",");
                j_num(w, cs[k][1]);
                w_str(w, "]");
            }
            w_str(w, "}");
        }
        w_str(w, ",\"itl_ms_mean\":");
        j_num(w, acc_mean(&ls->itl));
        w_fmt(w, ",\"itl_n\":%llu},", (unsigned long long)ls->itl.n);
    }
    w_fmt(w, "\"ratio\":{\"pairs\":%zu,\"replicates\":%u,\"seed\":%llu", s->pair_p.n, s->boot_reps,
          (unsigned long long)STATS_BOOT_SEED);
    for (int k = 0; k < 2; k++) {
        w_fmt(w, ",\"%s\":{\"ratio\":", k ? "p95" : "p50");
        j_num(w, s->ratio[k].point);
        w_str(w, ",\"ci_lo\":");
        j_num(w, s->ratio[k].lo);
        w_str(w, ",\"ci_hi\":");
        j_num(w, s->ratio[k].hi);
        w_str(w, "}");
    }
    w_fmt(w, ",\"per_pair\":{\"pairs\":%zu,\"median\":", s->ratios.n);
    j_num(w, s->ratio_med);
    w_str(w, ",\"cs_lo\":");
    j_num(w, s->ratio_lo);
    w_str(w, ",\"cs_hi\":");
    j_num(w, s->ratio_hi);
    w_str(w, "}}}");

    w_str(w, ",\"usage\":{");
    for (int l = 0; l < 2; l++) {
        const struct leg_stats *ls = &s->leg[l];
        w_fmt(w, "\"%s\":{\"tokens_in\":", leg_names[l]);
        j_acc(w, &ls->tin);
        w_str(w, ",\"tokens_out\":");
        j_acc(w, &ls->tout);
        w_str(w, ",\"cost_usd\":");
        j_acc(w, &ls->cost);
        w_str(w, "},");
    }
    const struct leg_stats *P = &s->leg[L_PRIMARY], *S = &s->leg[L_SHADOW];
    w_str(w, "\"diff\":{\"tokens_in_mean\":");
    j_num(w, acc_mean(&S->tin) - acc_mean(&P->tin));
    w_str(w, ",\"tokens_out_mean\":");
    j_num(w, acc_mean(&S->tout) - acc_mean(&P->tout));
    w_str(w, ",\"cost_usd_mean\":");
    j_num(w, acc_mean(&S->cost) - acc_mean(&P->cost));
    w_str(w, ",\"cost_usd_total\":");
    j_num(w, S->cost.sum - P->cost.sum);
    w_str(w, "}}");

    w_fmt(w, ",\"noise_floor_known\":%s,\"comparisons\":{\"shadow\":%llu,\"aa\":%llu},\"comparators\":[",
          s->noise_known ? "true" : "false", (unsigned long long)s->cmp_rows[A_SHADOW],
          (unsigned long long)s->cmp_rows[A_AA]);
    for (size_t i = 0; i < NCMP; i++) {
        const struct cmp_stats *cs = &s->cmp[i];
        w_fmt(w, "%s{\"name\":\"%s\",\"kind\":\"%s\",\"better\":\"%s\"", i ? "," : "",
              cmp_defs[i].name, cmp_defs[i].binary ? "binary" : "real",
              better_names[cmp_defs[i].better]);
        for (int a = 0; a < 2; a++) {
            w_fmt(w, ",\"%s\":{\"n\":%llu,\"mean\":", a ? "aa" : "shadow",
                  (unsigned long long)cs->s[a].n);
            j_num(w, cs->s[a].mean);
            w_str(w, "}");
        }
        w_str(w, ",\"diff\":");
        j_num(w, cs->known ? cs->diff : NAN);
        w_str(w, ",\"p_value\":");
        j_num(w, cs->p);
        w_fmt(w, ",\"beyond_noise\":%s,\"direction\":%s", cs->verdict ? "true" : "false",
              cs->verdict < 0 ? "\"worse\"" : cs->verdict > 0 ? "\"better\"" : "null");
        if (i < VERDICT_NCMP) {
            const struct seq_bet *b = &s->vs.cmp_ni[i];
            w_fmt(w, ",\"paired\":%llu,\"worse\":%llu,\"better\":%llu,\"e_value\":",
                  (unsigned long long)s->vs.cmp_applies[i], (unsigned long long)s->vs.cmp_worse[i].a,
                  (unsigned long long)s->vs.cmp_worse[i].b);
            j_num(w, ev(s->vs.cmp_worse[i].log_e_max));
            w_fmt(w, ",\"non_inferiority\":{\"n\":%llu,\"mean_diff\":", (unsigned long long)b->n);
            j_num(w, b->n ? b->sum / (double)b->n : NAN);
            w_str(w, ",\"e_value\":");
            j_num(w, ev(b->log_e_max));
            w_fmt(w, ",\"shown\":%s},\"mde\":", s->v.cmp_ready[i] && s->v.cmp_applicable[i] ? "true" : "false");
            j_num(w, s->v.cmp_mde[i]);
        }
        w_str(w, "}");
    }
    w_str(w, "]");

    const struct judge_stats *j = &s->judge;
    w_str(w, ",\"judge\":{\"judges\":[");
    for (size_t i = 0; i < j->nnames; i++) {
        w_str(w, i ? "," : "");
        j_str(w, j->names[i]);
    }
    w_fmt(w, "],\"total\":%llu,\"win\":%llu,\"tie\":%llu,\"loss\":%llu,\"inconsistent\":%llu,"
             "\"error\":%llu,\"decisive\":%llu,\"inconsistency_rate\":",
          (unsigned long long)(j->win + j->tie + j->loss + j->inconsistent + j->error),
          (unsigned long long)j->win, (unsigned long long)j->tie, (unsigned long long)j->loss,
          (unsigned long long)j->inconsistent, (unsigned long long)j->error,
          (unsigned long long)(j->win + j->loss));
    j_num(w, j->inconsistency);
    w_str(w, ",\"win_share\":");
    j_num(w, j->share);
    w_str(w, ",\"win_share_lo\":");
    j_num(w, j->win + j->loss ? j->lo : NAN);
    w_str(w, ",\"win_share_hi\":");
    j_num(w, j->win + j->loss ? j->hi : NAN);
    w_str(w, ",\"p_better\":");
    j_num(w, j->p_better);
    w_str(w, ",\"p_worse\":");
    j_num(w, j->p_worse);
    w_str(w, ",\"decisive_needed\":");
    j_num(w, j->decisive_needed ? (double)j->decisive_needed : NAN);
    w_str(w, "}");

    w_str(w, ",\"worst\":[");
    for (size_t i = 0; i < s->nex; i++) {
        const struct example *ex = &s->ex[i];
        w_fmt(w, "%s{\"pair_id\":%lld,\"ts\":", i ? "," : "", (long long)ex->id);
        j_num(w, ex->ts);
        w_fmt(w, ",\"status_agree\":%s,\"rouge_l\":", ex->status_agree ? "true" : "false");
        j_num(w, ex->rouge_l);
        w_str(w, ",\"prompt\":");
        j_str(w, ex->prompt);
        w_fmt(w, ",\"prompt_truncated\":%s", ex->prompt_truncated ? "true" : "false");
        for (int l = 0; l < 2; l++) {
            const struct ex_leg *el = &ex->leg[l];
            w_fmt(w, ",\"%s\":", leg_names[l]);
            if (!el->present) {
                w_str(w, "null");
                continue;
            }
            w_fmt(w, "{\"status\":%d,\"error\":", el->status);
            j_str(w, el->error);
            w_str(w, ",\"response\":");
            j_str(w, el->response);
            w_fmt(w, ",\"response_truncated\":%s}", el->truncated ? "true" : "false");
        }
        w_str(w, "}");
    }
    w_str(w, "],\"events\":[");
    for (size_t i = 0; i < s->nevents; i++) {
        w_str(w, i ? ",{\"ts\":" : "{\"ts\":");
        j_num(w, s->events[i].ts);
        w_str(w, ",\"kind\":");
        j_str(w, s->events[i].kind);
        w_str(w, ",\"detail\":");
        j_str(w, s->events[i].detail);
        w_str(w, "}");
    }
    w_str(w, "]}");
}

/* ============================================================ HTML format */

/* One word of a text and the whitespace before it (both point into the
 * text); a diff compares the words only. */
struct wtok {
    const char *p;
    size_t ws, len;
};

/* Split s[0..n) into at most max tokens; *rest is where the untokenised
 * remainder starts (n when everything fitted). */
static size_t tokenize(const char *s, size_t n, struct wtok *t, size_t max, size_t *rest)
{
    size_t i = 0, k = 0;
    while (i < n && k < max) {
        size_t st = i;
        while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
            i++;
        size_t w0 = i;
        while (i < n && !(s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
            i++;
        t[k++] = (struct wtok){ s + st, w0 - st, i - w0 };
    }
    *rest = i;
    return k;
}

static bool tok_eq(const struct wtok *a, const struct wtok *b)
{
    return a->len == b->len && memcmp(a->p + a->ws, b->p + b->ws, a->len) == 0;
}

/* Mark the words of a (ma) and b (mb) that are not in a longest common
 * subsequence of words.  Common prefix and suffix are stripped first; if
 * the rest is too large for the table (DIFF_MAX_CELLS) all of it is marked
 * rather than guessed at. */
static void word_diff(const struct wtok *a, size_t m, const struct wtok *b, size_t k, bool *ma,
                      bool *mb)
{
    memset(ma, 0, m * sizeof *ma);
    memset(mb, 0, k * sizeof *mb);
    size_t pre = 0, suf = 0;
    while (pre < m && pre < k && tok_eq(&a[pre], &b[pre]))
        pre++;
    while (suf < m - pre && suf < k - pre && tok_eq(&a[m - 1 - suf], &b[k - 1 - suf]))
        suf++;
    size_t M = m - pre - suf, K = k - pre - suf;
    uint16_t *L = NULL;
    if (M && K && (M + 1) * (K + 1) <= DIFF_MAX_CELLS)
        L = calloc((M + 1) * (K + 1), sizeof *L);
    if (!L) {
        for (size_t i = 0; i < M; i++)
            ma[pre + i] = true;
        for (size_t j = 0; j < K; j++)
            mb[pre + j] = true;
        return;
    }
    const struct wtok *A = a + pre, *B = b + pre;
    size_t W = K + 1; /* L[i*W + j] = LCS length of A[i..] and B[j..] */
    for (size_t i = M; i-- > 0;)
        for (size_t j = K; j-- > 0;) {
            if (tok_eq(&A[i], &B[j])) {
                L[i * W + j] = (uint16_t)(L[(i + 1) * W + j + 1] + 1);
            } else {
                uint16_t x = L[(i + 1) * W + j], y = L[i * W + j + 1];
                L[i * W + j] = x > y ? x : y;
            }
        }
    size_t i = 0, j = 0;
    while (i < M && j < K) {
        if (tok_eq(&A[i], &B[j])) {
            i++, j++;
        } else if (L[(i + 1) * W + j] >= L[i * W + j + 1]) {
            ma[pre + i++] = true;
        } else {
            mb[pre + j++] = true;
        }
    }
    for (; i < M; i++)
        ma[pre + i] = true;
    for (; j < K; j++)
        mb[pre + j] = true;
    free(L);
}

/* A text with its marked words wrapped in <tag>, runs of marked words in
 * one element. */
static void h_marked(struct w *w, const char *s, size_t n, const struct wtok *t, size_t nt,
                     const bool *mark, size_t rest, const char *tag)
{
    bool open = false;
    for (size_t i = 0; i < nt; i++) {
        if (!mark[i] && open) {
            w_fmt(w, "</%s>", tag);
            open = false;
        }
        h_strn(w, t[i].p, t[i].ws);
        if (mark[i] && !open && t[i].len) {
            w_fmt(w, "<%s>", tag);
            open = true;
        }
        h_strn(w, t[i].p + t[i].ws, t[i].len);
    }
    if (open)
        w_fmt(w, "</%s>", tag);
    h_strn(w, s + rest, n - rest);
}

/* The two answers side by side, words only in the primary's struck out,
 * words only in the shadow's highlighted. */
static void h_answers(struct w *w, const struct example *ex)
{
    const char *txt[2];
    size_t len[2];
    for (int l = 0; l < 2; l++) {
        txt[l] = ex->leg[l].response ? ex->leg[l].response : "";
        len[l] = utf8_clip(txt[l], strlen(txt[l]), HTML_CLIP);
    }
    struct wtok *t[2];
    bool *mk[2];
    size_t nt[2], rest[2];
    t[0] = malloc(DIFF_MAX_WORDS * sizeof *t[0]);
    t[1] = malloc(DIFF_MAX_WORDS * sizeof *t[1]);
    mk[0] = malloc(DIFF_MAX_WORDS * sizeof *mk[0]);
    mk[1] = malloc(DIFF_MAX_WORDS * sizeof *mk[1]);
    bool diff = t[0] && t[1] && mk[0] && mk[1];
    if (diff) {
        for (int l = 0; l < 2; l++)
            nt[l] = tokenize(txt[l], len[l], t[l], DIFF_MAX_WORDS, &rest[l]);
        word_diff(t[0], nt[0], t[1], nt[1], mk[0], mk[1]);
    }
    w_str(w, "<div class=\"sbs\">");
    for (int l = 0; l < 2; l++) {
        const struct ex_leg *el = &ex->leg[l];
        w_fmt(w, "<div><h4>%s", leg_names[l]);
        if (!el->present)
            w_str(w, " <span class=\"bad\">no leg recorded</span>");
        else if (el->error || el->status < 200 || el->status >= 300) {
            w_fmt(w, " <span class=\"bad\">status %d", el->status);
            if (el->error) {
                w_str(w, ", ");
                h_str(w, el->error);
            }
            w_str(w, "</span>");
        }
        if (el->truncated)
            w_str(w, " <span class=\"muted\">(truncated when stored)</span>");
        w_str(w, "</h4><pre>");
        if (diff)
            h_marked(w, txt[l], len[l], t[l], nt[l], mk[l], rest[l], l == 0 ? "del" : "ins");
        else
            h_strn(w, txt[l], len[l]);
        if (len[l] < strlen(txt[l]))
            w_str(w, "<span class=\"muted\"> […]</span>");
        w_str(w, "</pre></div>");
    }
    w_str(w, "</div>");
    for (int l = 0; l < 2; l++) {
        free(t[l]);
        free(mk[l]);
    }
}

/* 1, 2 or 5 times a power of ten, about x. */
static double nice_step(double x)
{
    double e = pow(10, floor(log10(x))), f = x / e;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * e;
}

/* Cumulative distributions of the two legs' latencies as an inline SVG.
 * The x axis ends a little past the larger p99 so that a long tail does
 * not squash the body; a table lists the exact percentiles. */
static void h_cdf(struct w *w, const struct section *s, bool ttft)
{
    const struct dvec *v[2] = { ttft ? &s->leg[L_PRIMARY].ttft : &s->leg[L_PRIMARY].lat,
                                ttft ? &s->leg[L_SHADOW].ttft : &s->leg[L_SHADOW].lat };
    if (v[0]->n == 0 && v[1]->n == 0)
        return;
    const double W = 640, H = 240, ML = 56, MR = 16, MT = 14, MB = 42;
    double xmax = 0;
    for (int l = 0; l < 2; l++) {
        double p = stats_percentile(v[l]->v, v[l]->n, 0.99);
        if (isfinite(p) && p > xmax)
            xmax = p;
    }
    xmax = xmax > 0 ? xmax * 1.05 : 1;
    double step = nice_step(xmax / 5);
    w_fmt(w, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
             "role=\"img\" aria-label=\"%s distribution\">",
          W, H, W, H, ttft ? "time to first token" : "latency");
    w_fmt(w, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"#fafbfc\" stroke=\"#ccd\"/>",
          ML, MT, W - ML - MR, H - MT - MB);
    for (double x = 0; x <= xmax + 1e-9; x += step) {
        double px = ML + x / xmax * (W - ML - MR);
        w_fmt(w, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#e3e6ea\"/>"
                 "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"middle\">%g</text>",
              px, MT, px, H - MB, px, H - MB + 14, x);
    }
    for (int k = 0; k <= 4; k++) {
        double py = MT + (1 - k / 4.0) * (H - MT - MB);
        w_fmt(w, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#e3e6ea\"/>"
                 "<text x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%d%%</text>",
              ML, py, W - MR, py, ML - 6, py + 4, k * 25);
    }
    w_fmt(w, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">%s (ms), cumulative share of "
             "successful legs</text>",
          (ML + W - MR) / 2, H - 8, ttft ? "time to first token" : "latency");
    static const char *const colour[2] = { "#1f6fd1", "#e8710a" };
    for (int l = 0; l < 2; l++) {
        size_t n = v[l]->n;
        if (!n)
            continue;
        size_t K = n < 240 ? n : 240;
        w_fmt(w, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour[l]);
        double prevy = MT + (H - MT - MB);
        for (size_t i = 0; i < K; i++) {
            size_t idx = K > 1 ? (size_t)((double)(n - 1) * (double)i / (double)(K - 1)) : 0;
            double x = v[l]->v[idx] > xmax ? xmax : v[l]->v[idx];
            double px = ML + x / xmax * (W - ML - MR);
            double py = MT + (1 - (double)(idx + 1) / (double)n) * (H - MT - MB);
            w_fmt(w, "%.1f,%.1f %.1f,%.1f ", px, prevy, px, py); /* a step */
            prevy = py;
        }
        w_str(w, "\"/>");
        w_fmt(w, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"4\" fill=\"%s\"/>"
                 "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%s (n %zu)</text>",
              W - MR - 150, H - MB - 40 + 16.0 * l, colour[l], W - MR - 132, H - MB - 35 + 16.0 * l,
              leg_names[l], n);
    }
    w_str(w, "</svg>\n");
}

static const char html_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<title>shade shadow report</title><style>\n"
    "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;"
    "padding:0 16px;color:#1d232a}\n"
    "h1{font-size:22px}h2{font-size:19px;margin-top:36px;border-bottom:2px solid #1d232a}"
    "h3{font-size:15px;margin:22px 0 6px}h4{margin:0 0 6px;font-size:13px}\n"
    "table{border-collapse:collapse;margin:4px 0 12px}td,th{padding:3px 12px 3px 0;"
    "border-bottom:1px solid #e3e6ea;text-align:right;vertical-align:top}"
    "th{font-weight:600;color:#4a5560}td:first-child,th:first-child{text-align:left}\n"
    ".reco{padding:10px 14px;border-radius:6px;margin:12px 0}.reco b{font-size:16px;text-transform:uppercase}"
    ".investigate,.too_slow{background:#fde8e8;border-left:6px solid #c62828}"
    ".ready_for_canary{background:#e6f4ea;border-left:6px solid #2e7d32}"
    ".keep_collecting{background:#fff6e0;border-left:6px solid #e0a000}\n"
    ".bad{color:#c62828;font-weight:600}.good{color:#2e7d32}.muted{color:#6b7580}"
    "code{font:12px ui-monospace,monospace}\n"
    "pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12px/1.45 ui-monospace,SFMono-Regular,monospace}\n"
    ".ex{border:1px solid #d5dae0;border-radius:6px;padding:10px;margin:10px 0}"
    ".prompt{background:#f4f6f8;padding:6px;border-radius:4px;margin:6px 0;max-height:220px;overflow:auto}\n"
    ".sbs{display:grid;grid-template-columns:1fr 1fr;gap:10px}.sbs>div{border:1px solid #e3e6ea;"
    "border-radius:4px;padding:8px;max-height:520px;overflow:auto}\n"
    "del{background:#fdd8d8;text-decoration:line-through}ins{background:#d6f5dc;text-decoration:none}\n"
    "svg{display:block;margin:6px 0 14px;max-width:100%;height:auto;font-family:system-ui,sans-serif}\n"
    "</style></head><body>\n";

static void h_pct_cell(struct w *w, double x)
{
    char a[32];
    w_fmt(w, "<td>%s</td>", f_pct(a, sizeof a, x));
}

static void h_num_cell(struct w *w, double x, int prec)
{
    char a[32];
    w_fmt(w, "<td>%s</td>", f_num(a, sizeof a, x, prec));
}

static void render_html(struct w *w, const struct report_query *q, const struct report_rules *r,
                        const struct section *s)
{
    char a[32], b[32], t0[40], t1[40];
    const struct reco *rc = &s->reco;
    w_str(w, "<section><h2>shadow <code>");
    h_str(w, s->shadow);
    w_str(w, "</code></h2>\n");
    w_fmt(w, "<div class=\"reco %s\"><b>", rc->action);
    for (const char *p = rc->action; *p; p++)
        w_put(w, *p == '_' ? " " : p, 1);
    w_fmt(w, "</b> &nbsp;rule <code>%s</code><br>", rc->rule);
    h_str(w, rc->reason);
    if (rc->more >= 0 && strcmp(rc->action, "keep_collecting") == 0)
        w_fmt(w, "<br>more pairs needed: %lld (%s, for an 80%% chance)", (long long)rc->more,
              rc->criterion ? rc->criterion : "-");
    w_str(w, "</div>\n");
    {
        /* the tests behind it, as the text report lays them out */
        struct buf tb = { 0 };
        struct w tw = { &tb, false };
        t_decision(&tw, r, s);
        w_str(w, "<h3>Tests</h3><pre>");
        if (!tw.oom)
            h_strn(w, buf_data(&tb), buf_used(&tb));
        else
            w->oom = true;
        w_str(w, "</pre>\n");
        buf_free(&tb);
    }

    iso_time(s->first_ts, t0, sizeof t0);
    iso_time(s->last_ts, t1, sizeof t1);
    w_fmt(w, "<p><b>%llu pairs</b>", (unsigned long long)s->pairs);
    if (s->pairs)
        w_fmt(w, " from %s to %s", t0, t1);
    w_str(w, ".<br>Counters (cumulative, not limited by the window): ");
    if (!s->ncounters) {
        w_str(w, "none recorded.");
    } else {
        w_fmt(w, "mirrored %lld, stored %lld, dropped %lld", (long long)s->mirrored,
              (long long)s->stored, (long long)s->dropped);
        bool first = true;
        for (size_t i = 0; i < s->ncounters; i++)
            if (strncmp(s->counters[i].name, "dropped_", 8) == 0 && s->counters[i].value) {
                w_str(w, first ? " (" : ", ");
                h_str(w, s->counters[i].name + 8);
                w_fmt(w, " %lld", (long long)s->counters[i].value);
                first = false;
            }
        w_str(w, first ? "" : ")");
        long long gap = (long long)(s->mirrored - s->stored - s->dropped);
        if (gap == 0)
            w_str(w, " &mdash; <span class=\"good\">mirrored = stored + dropped</span>.");
        else
            w_fmt(w, " &mdash; <span class=\"bad\">mirrored &ne; stored + dropped (%+lld "
                     "unaccounted)</span>.", gap);
    }
    w_str(w, "</p>\n");

    w_str(w, "<h3>Success</h3><table><tr><th></th><th>rate</th><th>95% CS (anytime)</th><th>n</th>"
             "<th>failures</th></tr>");
    for (int l = 0; l < NLEGS; l++) {
        const struct leg_stats *ls = &s->leg[l];
        if (l == L_AA && ls->n == 0)
            continue;
        w_fmt(w, "<tr><td>%s</td>", leg_names[l]);
        h_pct_cell(w, ls->rate);
        if (ls->n)
            w_fmt(w, "<td>%s &ndash; %s</td>", f_pct(a, sizeof a, s->succ_cs[l][0]),
                  f_pct(b, sizeof b, s->succ_cs[l][1]));
        else
            w_str(w, "<td>-</td>");
        w_fmt(w, "<td>%llu</td><td>", (unsigned long long)ls->n);
        for (size_t k = 0; k < ls->nkinds; k++) {
            w_str(w, k ? ", " : "");
            h_str(w, ls->kinds[k].name);
            w_fmt(w, " %llu", (unsigned long long)ls->kinds[k].n);
        }
        w_str(w, "</td></tr>");
    }
    w_fmt(w, "</table><p class=\"muted\">Ready needs success shown above %.2f%%; the live auto-stop "
             "acts when a CUSUM says it fell below %.2f%% (statistic %.2f of %.2f).</p>\n",
          100 * r->v.success_min, 100 * r->v.stop_below, s->vs.cusum.w, s->vs.cusum.h);

    w_str(w, "<h3>Latency (ms, successful legs)</h3><table><tr><th></th><th>p50</th><th>p95</th>"
             "<th>p99</th><th>n</th><th>ttft p50</th><th>ttft p95</th><th>ttft p99</th><th>n</th>"
             "<th>itl mean</th></tr>");
    for (int l = 0; l < 2; l++) {
        const struct leg_stats *ls = &s->leg[l];
        w_fmt(w, "<tr><td>%s</td>", leg_names[l]);
        for (int k = 0; k < 3; k++)
            h_num_cell(w, ls->lat_p[k], 1);
        w_fmt(w, "<td>%zu</td>", ls->lat.n);
        for (int k = 0; k < 3; k++)
            h_num_cell(w, ls->ttft_p[k], 1);
        w_fmt(w, "<td>%zu</td>", ls->ttft.n);
        h_num_cell(w, acc_mean(&ls->itl), 1);
        w_str(w, "</tr>");
    }
    w_str(w, "<tr><td>shadow / primary</td>");
    for (int k = 0; k < 2; k++) {
        w_fmt(w, "<td>%s", f_num(a, sizeof a, s->ratio[k].point, 3));
        if (s->have_ratio)
            w_fmt(w, "<br><span class=\"muted\">[%s, %s]</span>", f_num(a, sizeof a, s->ratio[k].lo, 3),
                  f_num(b, sizeof b, s->ratio[k].hi, 3));
        w_str(w, "</td>");
    }
    w_fmt(w, "<td></td><td>%zu pairs</td><td colspan=\"5\" class=\"muted\">95%% CI: paired bootstrap, "
             "%u resamples</td></tr></table>\n",
          s->pair_p.n, s->boot_reps);
    h_cdf(w, s, false);
    h_cdf(w, s, true);

    const struct leg_stats *P = &s->leg[L_PRIMARY], *S = &s->leg[L_SHADOW];
    w_str(w, "<h3>Usage</h3><table><tr><th></th><th>tokens in</th><th>tokens out</th><th>cost usd</th></tr>");
    w_str(w, "<tr><td>primary mean</td>");
    h_num_cell(w, acc_mean(&P->tin), 1);
    h_num_cell(w, acc_mean(&P->tout), 1);
    h_num_cell(w, acc_mean(&P->cost), 6);
    w_str(w, "</tr><tr><td>shadow mean</td>");
    h_num_cell(w, acc_mean(&S->tin), 1);
    h_num_cell(w, acc_mean(&S->tout), 1);
    h_num_cell(w, acc_mean(&S->cost), 6);
    w_str(w, "</tr><tr><td>difference</td>");
    h_num_cell(w, acc_mean(&S->tin) - acc_mean(&P->tin), 1);
    h_num_cell(w, acc_mean(&S->tout) - acc_mean(&P->tout), 1);
    h_num_cell(w, acc_mean(&S->cost) - acc_mean(&P->cost), 6);
    w_str(w, "</tr><tr><td>primary total</td>");
    h_num_cell(w, P->tin.sum, 0);
    h_num_cell(w, P->tout.sum, 0);
    h_num_cell(w, P->cost.sum, 6);
    w_str(w, "</tr><tr><td>shadow total</td>");
    h_num_cell(w, S->tin.sum, 0);
    h_num_cell(w, S->tout.sum, 0);
    h_num_cell(w, S->cost.sum, 6);
    w_str(w, "</tr></table>\n");

    w_str(w, "<h3>Comparators against the A/A noise floor</h3>");
    if (!s->noise_known)
        w_str(w, "<p class=\"bad\">No A/A legs: the noise floor is unknown.</p>");
    w_str(w, "<table><tr><th>comparator</th><th>shadow</th><th>n</th><th>aa (noise)</th><th>n</th>"
             "<th>diff</th><th>paired</th><th>worse / better</th><th>e-value</th><th>verdict</th></tr>");
    for (size_t i = 0; i < NCMP; i++) {
        const struct cmp_stats *cs = &s->cmp[i];
        if (cs->s[A_SHADOW].n == 0 && cs->s[A_AA].n == 0)
            continue;
        w_fmt(w, "<tr><td>%s</td>", cmp_defs[i].name);
        h_num_cell(w, cs->s[A_SHADOW].mean, 3);
        w_fmt(w, "<td>%llu</td>", (unsigned long long)cs->s[A_SHADOW].n);
        h_num_cell(w, cs->s[A_AA].mean, 3);
        w_fmt(w, "<td>%llu</td>", (unsigned long long)cs->s[A_AA].n);
        h_num_cell(w, cs->known ? cs->diff : NAN, 3);
        char v[96];
        cmp_verdict(r, s, i, v, sizeof v);
        if (i < VERDICT_NCMP) {
            w_fmt(w, "<td>%llu</td><td>%llu / %llu</td>", (unsigned long long)s->vs.cmp_applies[i],
                  (unsigned long long)s->vs.cmp_worse[i].a, (unsigned long long)s->vs.cmp_worse[i].b);
            h_num_cell(w, ev(s->vs.cmp_worse[i].log_e_max), 3);
        } else {
            w_str(w, "<td>-</td><td>-</td><td>-</td>");
        }
        w_fmt(w, "<td%s>", s->v.cmp_alarm[i < VERDICT_NCMP ? i : 0] && i < VERDICT_NCMP ? " class=\"bad\"" : "");
        h_str(w, v);
        w_str(w, "</td></tr>");
    }
    w_str(w, "</table>\n");

    const struct judge_stats *j = &s->judge;
    uint64_t total = j->win + j->tie + j->loss + j->inconsistent + j->error;
    w_str(w, "<h3>Judge</h3>");
    if (!total) {
        w_str(w, "<p class=\"muted\">No judgements.</p>");
    } else {
        w_str(w, "<p>");
        for (size_t i = 0; i < j->nnames; i++) {
            w_str(w, i ? ", " : "");
            h_str(w, j->names[i]);
        }
        if (j->more_names)
            w_fmt(w, " and %llu more", (unsigned long long)j->more_names);
        w_fmt(w, ": %llu judged &mdash; %llu win, %llu tie, %llu loss, %llu inconsistent, %llu error "
                 "(inconsistency %s).<br>",
              (unsigned long long)total, (unsigned long long)j->win, (unsigned long long)j->tie,
              (unsigned long long)j->loss, (unsigned long long)j->inconsistent,
              (unsigned long long)j->error, f_pct(a, sizeof a, j->inconsistency));
        char c1[32], c2[32], c3[32];
        w_fmt(w, "Win share %s of %llu decisive, 95%% CS %s &ndash; %s; always-valid p %s (better), ",
              f_pct(a, sizeof a, j->share), (unsigned long long)(j->win + j->loss),
              f_pct(b, sizeof b, j->lo), f_pct(c1, sizeof c1, j->hi), f_p(c2, sizeof c2, j->p_better));
        w_fmt(w, "%s (worse).", f_p(c3, sizeof c3, j->p_worse));
        if (j->decisive_needed)
            w_fmt(w, " Shown better with an 80%% chance after about %llu decisive verdicts.",
                  (unsigned long long)j->decisive_needed);
        w_str(w, "</p>");
    }

    if (q->worst) {
        w_str(w, "<h3>Worst examples</h3>");
        if (!s->nex)
            w_str(w, "<p class=\"muted\">None: every compared pair agrees.</p>");
        for (size_t i = 0; i < s->nex; i++) {
            const struct example *ex = &s->ex[i];
            iso_time(ex->ts, t0, sizeof t0);
            w_fmt(w, "<div class=\"ex\"><b>#%zu</b> pair %lld &middot; %s &middot; status %s &middot; "
                     "rouge_l %s",
                  i + 1, (long long)ex->id, t0,
                  ex->status_agree ? "agree" : "<span class=\"bad\">differ</span>",
                  f_num(a, sizeof a, ex->rouge_l, 3));
            w_str(w, "<pre class=\"prompt\">");
            char *pt = prompt_plain(ex->prompt);
            h_strn(w, pt, pt ? utf8_clip(pt, strlen(pt), HTML_CLIP) : 0);
            free(pt);
            if (ex->prompt_truncated)
                w_str(w, "<span class=\"muted\"> […truncated when stored]</span>");
            w_str(w, "</pre>");
            h_answers(w, ex);
            w_str(w, "</div>\n");
        }
    }
    if (s->nevents) {
        w_str(w, "<h3>Events</h3><table><tr><th>time</th><th>kind</th><th>detail</th></tr>");
        for (size_t i = 0; i < s->nevents; i++) {
            iso_time(s->events[i].ts, t0, sizeof t0);
            w_fmt(w, "<tr><td>%s</td><td>", t0);
            h_str(w, s->events[i].kind);
            w_str(w, "</td><td style=\"text-align:left\">");
            h_str(w, s->events[i].detail);
            w_str(w, "</td></tr>");
        }
        w_str(w, "</table>");
    }
    w_str(w, "</section>\n");
}

/* ================================================================ driver */

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int list_shadows(struct ctx *c, char ***out, size_t *nout)
{
    sqlite3_stmt *st = prep(c,
                            "SELECT shadow FROM pairs UNION SELECT shadow FROM counters "
                            "UNION SELECT shadow FROM events ORDER BY 1",
                            "shadows");
    if (!st)
        return -1;
    char **v = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) == SQLITE_NULL)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **p = realloc(v, cap * sizeof *p);
            if (!p)
                goto nomem;
            v = p;
        }
        if (!(v[n] = col_dup(st, 0)))
            goto nomem;
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free_names(v, n);
        return db_fail(c, "shadows");
    }
    *out = v;
    *nout = n;
    return 0;
nomem:
    sqlite3_finalize(st);
    free_names(v, n);
    return oom(c);
}

static int build_section(struct ctx *c, struct section *s)
{
    c->since = c->q->since;
    if (c->q->from_start) {
        if (report_analysis_start(c->db, s->shadow, &s->start_ts) < 0)
            return db_fail(c, "events");
        if (s->start_ts > c->since)
            c->since = s->start_ts;
    }
    if (load_window(c, s) < 0 || load_counters(c, s) < 0 || load_legs(c, s) < 0 ||
        load_comparisons(c, s) < 0 || load_judgements(c, s) < 0 || load_examples(c, s) < 0 ||
        load_events(c, s) < 0 || load_sequence(c, s) < 0 || analyse(c, s) < 0)
        return -1;
    decide(c->rules, s);
    return 0;
}

static void header(struct w *w, enum report_format f, const struct report_query *q,
                   const struct report_rules *r, double now)
{
    char gen[40], since[40];
    iso_time(now, gen, sizeof gen);
    iso_time(q->since, since, sizeof since);
    if (f == REPORT_JSON) {
        w_str(w, "{\"version\":2,\"generated_at\":");
        j_num(w, now);
        w_str(w, ",\"query\":{\"shadow\":");
        j_str(w, q->shadow);
        w_str(w, ",\"since\":");
        j_num(w, q->since);
        w_fmt(w, ",\"max_pairs\":%u,\"worst\":%u,\"from_start\":%s},\"rules\":{\"success_min\":",
              q->max_pairs, q->worst, q->from_start ? "true" : "false");
        j_num(w, r->v.success_min);
        w_str(w, ",\"latency_ratio_max\":");
        j_num(w, r->v.latency_ratio_max);
        w_str(w, ",\"autostop_success_min\":");
        j_num(w, r->v.stop_below);
        w_fmt(w, ",\"min_pairs\":%u,\"alpha\":", r->v.min_pairs);
        j_num(w, r->v.alpha);
        w_str(w, ",\"alpha_ready\":");
        j_num(w, r->v.alpha_ready);
        w_str(w, ",\"latency_margin\":");
        j_num(w, r->v.latency_margin);
        w_str(w, ",\"quality_margin\":");
        j_num(w, r->v.quality_margin);
        w_str(w, ",\"autostop_alpha\":");
        j_num(w, r->v.stop_alpha);
        w_str(w, ",\"autostop_horizon\":");
        j_num(w, r->v.stop_horizon);
        w_fmt(w, ",\"look_every\":%d},\"shadows\":[", VERDICT_LOOK_EVERY);
        return;
    }
    char win[160];
    int k = snprintf(win, sizeof win, "%s", q->since > 0 ? "since " : "all time");
    if (q->since > 0)
        k += snprintf(win + k, sizeof win - (size_t)k, "%s", since);
    if (q->from_start)
        k += snprintf(win + k, sizeof win - (size_t)k, ", from each shadow's newest start");
    if (q->max_pairs)
        snprintf(win + k, sizeof win - (size_t)k, ", newest %u pairs", q->max_pairs);
    char rules[512];
    snprintf(rules, sizeof rules,
             "alarms (together at alpha %.2f): shadow fails more than the primary, slower than %.2fx "
             "in most pairs, comparators worse than the A/A noise floor, judge prefers the primary; "
             "ready (each at alpha %.2f, at least %u pairs): success above %.2f%%, faster than %.2fx "
             "in most pairs, every comparator within %.2f of the noise floor; anytime-valid, a look "
             "every %d pairs",
             r->v.alpha, r->v.latency_margin, r->v.alpha_ready, r->v.min_pairs, 100 * r->v.success_min,
             r->v.latency_ratio_max, r->v.quality_margin, VERDICT_LOOK_EVERY);
    if (f == REPORT_HTML) {
        w_str(w, html_head);
        w_fmt(w, "<h1>shade shadow report</h1><p class=\"muted\">Generated %s &middot; window: %s "
                 "&middot; rules: ", gen, win);
        h_str(w, rules);
        w_str(w, ".</p>\n");
        return;
    }
    w_fmt(w, "shade shadow report, generated %s\n", gen);
    w_fmt(w, "window: %s\n", win);
    w_fmt(w, "rules: %s\n\n", rules);
}

int report_render(sqlite3 *db, const struct report_query *q, const struct report_rules *rules,
                  enum report_format f, struct buf *out, char *err, size_t errlen)
{
    return report_render_formats(db, q, rules, &f, &out, 1, err, errlen);
}

int report_render_formats(sqlite3 *db, const struct report_query *q, const struct report_rules *rules,
                          const enum report_format *fs, struct buf *const *outs, size_t nf, char *err,
                          size_t errlen)
{
    struct ctx c = { db, q, rules, err, errlen, q->since };
    struct w ws[REPORT_MAX_FORMATS];
    if (nf > REPORT_MAX_FORMATS)
        nf = REPORT_MAX_FORMATS;
    for (size_t k = 0; k < nf; k++)
        ws[k] = (struct w){ outs[k], false };
    char **names = NULL;
    size_t nnames = 0;
    bool txn = false;
    int rc = -1;
    /* one read transaction: every query sees the same snapshot */
    if (sqlite3_get_autocommit(db)) {
        if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
            return db_fail(&c, "begin");
        txn = true;
    }
    if (list_shadows(&c, &names, &nnames) < 0)
        goto out;
    if (q->shadow) {
        bool found = false;
        for (size_t i = 0; i < nnames && !found; i++)
            found = strcmp(names[i], q->shadow) == 0;
        if (!found) {
            size_t k = (size_t)snprintf(err, errlen, "no shadow named '%s' in the store (", q->shadow);
            for (size_t i = 0; i < nnames && k < errlen; i++)
                k += (size_t)snprintf(err + k, errlen - k, "%s'%s'", i ? ", " : "known: ", names[i]);
            if (k < errlen)
                snprintf(err + k, errlen - k, "%s)", nnames ? "" : "it holds no shadows");
            goto out;
        }
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    for (size_t k = 0; k < nf; k++)
        header(&ws[k], fs[k], q, rules, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    size_t done = 0;
    for (size_t i = 0; i < nnames; i++) {
        if (q->shadow && strcmp(names[i], q->shadow) != 0)
            continue;
        struct section s;
        memset(&s, 0, sizeof s);
        s.shadow = names[i];
        if (build_section(&c, &s) < 0) {
            section_free(&s);
            goto out;
        }
        /* each section is built once and rendered in every format asked for */
        for (size_t k = 0; k < nf; k++) {
            if (fs[k] == REPORT_JSON) {
                w_str(&ws[k], done ? "," : "");
                render_json(&ws[k], &s);
            } else if (fs[k] == REPORT_HTML) {
                render_html(&ws[k], q, rules, &s);
            } else {
                render_text(&ws[k], q, rules, &s);
            }
        }
        done++;
        section_free(&s);
    }
    bool oomed = false;
    for (size_t k = 0; k < nf; k++) {
        if (fs[k] == REPORT_JSON)
            w_str(&ws[k], "]}\n");
        else if (fs[k] == REPORT_HTML)
            w_str(&ws[k], done ? "</body></html>\n" : "<p>No shadows recorded.</p></body></html>\n");
        else if (!done)
            w_str(&ws[k], "no shadows recorded\n");
        oomed = oomed || ws[k].oom;
    }
    if (oomed) {
        oom(&c);
        goto out;
    }
    rc = 0;
out:
    if (txn)
        sqlite3_exec(db, rc == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
    free_names(names, nnames);
    return rc;
}

int report_analysis_start(sqlite3 *db, const char *shadow, double *ts)
{
    sqlite3_stmt *st = NULL;
    *ts = 0;
    if (sqlite3_prepare_v2(db, "SELECT MAX(ts) FROM events WHERE shadow = ?1 AND kind = 'start'", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, shadow, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        *ts = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static bool all_of(const char *s, const char *set)
{
    for (; *s; s++)
        if (!strchr(set, *s))
            return false;
    return true;
}

static int parse_2(const char *p, int *out)
{
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
        return -1;
    *out = (p[0] - '0') * 10 + (p[1] - '0');
    return 0;
}

int report_parse_time(const char *s, double now, double *out)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || s[0] < '0' || s[0] > '9')
        return -1;
    const char *units = "smhdw";
    const char *u = strchr(units, s[n - 1]);
    if (u && n >= 2) { /* relative: that long ago */
        static const double mult[] = { 1, 60, 3600, 86400, 604800 };
        char num[32];
        if (n - 1 >= sizeof num)
            return -1;
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        if (!all_of(num, "0123456789.") || strchr(num, '.') != strrchr(num, '.'))
            return -1;
        *out = now - strtod(num, NULL) * mult[u - units];
        return 0;
    }
    if (all_of(s, "0123456789.")) { /* unix seconds */
        if (strchr(s, '.') != strrchr(s, '.'))
            return -1;
        *out = strtod(s, NULL);
        return 0;
    }
    /* ISO-8601: YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH:MM|±HHMM] */
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int year = 0, mon, day, hh = 0, mm = 0, ss = 0, oh = 0, om = 0, sign = 0;
    double frac = 0;
    if (n < 10 || !all_of((char[]){ s[0], s[1], s[2], s[3], 0 }, "0123456789") || s[4] != '-' ||
        parse_2(s + 5, &mon) < 0 || s[7] != '-' || parse_2(s + 8, &day) < 0)
        return -1;
    year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    const char *p = s + 10;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        if (parse_2(p + 1, &hh) < 0 || p[3] != ':' || parse_2(p + 4, &mm) < 0)
            return -1;
        p += 6;
        if (*p == ':') {
            if (parse_2(p + 1, &ss) < 0)
                return -1;
            p += 3;
            if (*p == '.' || *p == ',') {
                double scale = 0.1;
                p++;
                if (*p < '0' || *p > '9')
                    return -1;
                for (; *p >= '0' && *p <= '9'; p++, scale /= 10)
                    frac += (*p - '0') * scale;
            }
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        if (parse_2(p + 1, &oh) < 0)
            return -1;
        p += 3;
        if (*p == ':')
            p++;
        if (parse_2(p, &om) < 0)
            return -1;
        p += 2;
    }
    if (*p || mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 ||
        oh > 23 || om > 59)
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    time_t t = timegm(&tm);
    if (tm.tm_mday != day) /* timegm normalised e.g. Feb 30 */
        return -1;
    *out = (double)t + frac - sign * (oh * 3600 + om * 60);
    return 0;
}

static const char usage_report[] =
    "usage: shade report --db FILE [options]\n"
    "\n"
    "Read a shadow pair store and say, per shadow, whether the candidate is ready:\n"
    "success rates, latency, cost, comparators against the A/A noise floor, the\n"
    "judge, the worst examples, and a recommendation naming the rule that fired\n"
    "(doc/shadow-report.md).  The file is opened read-only.\n"
    "\n"
    "options:\n"
    "  --db FILE                 the store (required; never created)\n"
    "  --shadow NAME             only this shadow (default: every shadow, one section each)\n"
    "  --since TIME              pairs from TIME on: unix seconds, 2026-11-21T10:00:00Z,\n"
    "                            an age: 90s, 15m, 2h, 1d, 1w, or 'start': from each\n"
    "                            shadow's newest start, as the live analysis counts\n"
    "  --max-pairs N             only the newest N pairs (default: all)\n"
    "  --format text|json|html   output format (default text)\n"
    "  --out FILE                write to FILE instead of standard output\n"
    "  --worst N                 worst examples per shadow (default 5, 0 = none)\n"
    "  --success-min X           ready: success shown above X (0.95)\n"
    "  --latency-ratio-max X     ready: faster than X times the primary in most pairs (1.5)\n"
    "  --min-pairs N             ready: not on fewer pairs (30)\n"
    "  --latency-margin X        alarm: slower than X times the primary in most pairs (1.2)\n"
    "  --quality-margin X        ready: every comparator within X of the A/A noise floor (0.10)\n"
    "  --alpha X                 every readiness test, and all alarms together (0.05)\n"
    "  --autostop-success-min X  auto-stop: the success bar of its CUSUM (0.90, 0 = off)\n"
    "  --autostop-alpha X        auto-stop: false-stop chance within the horizon (0.05)\n"
    "  --autostop-horizon N      auto-stop: the horizon, in pairs (100000)\n"
    "  -h, --help                show this help\n"
    "\n"
    "exit status: 0 report written, 1 database or output error, 2 usage error\n";

static int parse_u32(const char *v, uint32_t *out)
{
    if (!*v || !all_of(v, "0123456789") || strlen(v) > 10)
        return -1;
    unsigned long long x = strtoull(v, NULL, 10);
    if (x > UINT32_MAX)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

static int parse_real(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

int report_main(int argc, char **argv)
{
    const char *db_path = NULL, *out_path = NULL;
    enum report_format fmt = REPORT_TEXT;
    struct report_query q = { .shadow = NULL, .since = 0, .worst = 5, .max_pairs = 0 };
    struct report_rules rules;
    report_rules_default(&rules);
    static const char *const names[] = { "db", "shadow", "since", "format", "out", "worst",
                                         "max-pairs", "success-min", "latency-ratio-max",
                                         "min-pairs", "autostop-success-min", "latency-margin",
                                         "quality-margin", "alpha", "autostop-alpha",
                                         "autostop-horizon" };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_report, stdout);
            return 0;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "shade report: unexpected argument '%s' (see --help)\n", a);
            return 2;
        }
        const char *name = a + 2, *eq = strchr(name, '='), *val;
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        int o = -1;
        for (int k = 0; k < (int)(sizeof names / sizeof names[0]); k++)
            if (strlen(names[k]) == nl && memcmp(names[k], name, nl) == 0)
                o = k;
        if (o < 0) {
            fprintf(stderr, "shade report: unknown option '%.*s' (see --help)\n", (int)(nl + 2), a);
            return 2;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(stderr, "shade report: --%s needs a value\n", names[o]);
            return 2;
        }
        const char *bad = NULL;
        switch (o) {
        case 0:
            db_path = val;
            bad = *val ? NULL : "expected a file name";
            break;
        case 1:
            q.shadow = val;
            bad = *val ? NULL : "expected a shadow name";
            break;
        case 2: {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (strcmp(val, "start") == 0)
                q.from_start = true;
            else if (report_parse_time(val, (double)now.tv_sec, &q.since) < 0)
                bad = "expected unix seconds, an ISO-8601 time like 2026-11-21T10:00:00Z, an "
                      "age like 15m, 2h, 1d, or 'start'";
            break;
        }
        case 3:
            if (strcmp(val, "text") == 0)
                fmt = REPORT_TEXT;
            else if (strcmp(val, "json") == 0)
                fmt = REPORT_JSON;
            else if (strcmp(val, "html") == 0)
                fmt = REPORT_HTML;
            else
                bad = "expected text, json or html";
            break;
        case 4:
            out_path = val;
            bad = *val ? NULL : "expected a file name";
            break;
        case 5:
            bad = parse_u32(val, &q.worst) < 0 || q.worst > 1000 ? "expected an integer from 0 to 1000" : NULL;
            break;
        case 6:
            bad = parse_u32(val, &q.max_pairs) < 0 ? "expected a non-negative integer" : NULL;
            break;
        case 7:
            bad = parse_real(val, 0, 1, &rules.v.success_min) < 0 ? "expected a number from 0 to 1" : NULL;
            break;
        case 8:
            bad = parse_real(val, 1, 1e6, &rules.v.latency_ratio_max) < 0 ? "expected a number >= 1" : NULL;
            break;
        case 9:
            bad = parse_u32(val, &rules.v.min_pairs) < 0 ? "expected a non-negative integer" : NULL;
            break;
        case 10:
            bad = parse_real(val, 0, 0.999, &rules.v.stop_below) < 0 ? "expected a number from 0 to 0.999"
                                                                     : NULL;
            break;
        case 11:
            bad = parse_real(val, 1, 1e6, &rules.v.latency_margin) < 0 ? "expected a number >= 1" : NULL;
            break;
        case 12:
            bad = parse_real(val, 0.001, 0.99, &rules.v.quality_margin) < 0
                      ? "expected a number from 0.001 to 0.99"
                      : NULL;
            break;
        case 13:
            bad = parse_real(val, 1e-9, 0.5, &rules.v.alpha) < 0 ? "expected a number from 1e-9 to 0.5" : NULL;
            rules.v.alpha_ready = rules.v.alpha;
            break;
        case 14:
            bad = parse_real(val, 1e-9, 0.5, &rules.v.stop_alpha) < 0 ? "expected a number from 1e-9 to 0.5"
                                                                      : NULL;
            break;
        default:
            bad = parse_real(val, 1, 1e12, &rules.v.stop_horizon) < 0 ? "expected a number >= 1" : NULL;
            break;
        }
        if (bad) {
            fprintf(stderr, "shade report: --%s: %s, got '%s'\n", names[o], bad, val);
            return 2;
        }
    }
    if (!db_path) {
        fprintf(stderr, "shade report: missing --db FILE\n\n%s", usage_report);
        return 2;
    }

    /* read-only: a mistyped path must not leave an empty database behind */
    struct stat sb;
    if (stat(db_path, &sb) < 0) {
        fprintf(stderr, "shade report: %s: %s\n", db_path, strerror(errno));
        return 1;
    }
    if (S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "shade report: %s: is a directory\n", db_path);
        return 1;
    }
    sqlite3 *db = NULL;
    int orc = sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL);
    if (orc != SQLITE_OK) {
        fprintf(stderr, "shade report: %s: cannot open: %s\n", db_path,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(orc));
        sqlite3_close(db);
        return 1;
    }
    sqlite3_busy_timeout(db, 5000);
    struct buf out = { 0 };
    char err[1024] = "";
    int rc = report_render(db, &q, &rules, fmt, &out, err, sizeof err);
    sqlite3_close(db);
    if (rc < 0) {
        fprintf(stderr, "shade report: %s: %s\n", db_path, err);
        buf_free(&out);
        return 1;
    }
    FILE *f = out_path ? fopen(out_path, "w") : stdout;
    if (!f) {
        fprintf(stderr, "shade report: %s: %s\n", out_path, strerror(errno));
        buf_free(&out);
        return 1;
    }
    size_t len = buf_used(&out);
    bool ok = fwrite(buf_data(&out), 1, len, f) == len;
    ok = (out_path ? fclose(f) == 0 : fflush(f) == 0) && ok;
    buf_free(&out);
    if (!ok) {
        fprintf(stderr, "shade report: %s: write failed: %s\n", out_path ? out_path : "standard output",
                strerror(errno));
        return 1;
    }
    return 0;
}
