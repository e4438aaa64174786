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
#include "stats.h"

#define SEL_PAIRS "SELECT id FROM pairs WHERE shadow = ?1 AND ts >= ?2 ORDER BY ts DESC, id DESC LIMIT ?3"
#define ALPHA 0.05        /* significance level of every test */
#define MAX_KINDS 16      /* distinct failure kinds kept per leg; the rest is "other" */
#define MAX_EVENTS 10     /* newest events shown per shadow */
#define TEXT_CLIP 160     /* characters of a prompt / answer in the text report */
#define HTML_CLIP 16384   /* bytes of a prompt / answer in the HTML report */
#define DIFF_MAX_WORDS 4000
#define DIFF_MAX_CELLS (4u << 20)

void report_rules_default(struct report_rules *r)
{
    r->success_min = 0.95;
    r->latency_ratio_max = 1.5;
    r->autostop_success_min = 0.90;
    r->min_pairs = 30;
    r->noise_relative = 0.20;
    r->noise_absolute = 0.03;
}

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
    if (!isfinite(x))
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
    sqlite3_bind_double(st, 2, c->q->since > 0 ? c->q->since : -1e300);
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
    sqlite3_bind_double(st, 2, c->q->since > 0 ? c->q->since : -1e300);
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

/* ============================================================ statistics */

/* The "difference level" of a comparator's mean: how far it is from
 * perfect agreement (for refusals: the refusal rate; for the length ratio:
 * the distance from 1).  The relative noise threshold is taken against the
 * larger of the two levels, as Diffy compares difference rates. */
static double diff_level(enum better b, double mean)
{
    switch (b) {
    case HIGHER:
        return 1 - mean;
    case LOWER:
        return mean;
    case NEAR_ONE:
        return fabs(mean - 1);
    default:
        return NAN;
    }
}

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

    /* comparators against the noise floor */
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
        if (!cs->known)
            continue;
        cs->p = cmp_defs[i].binary
                    ? stats_two_prop_p(sh->sum, (double)sh->n, aa->sum, (double)aa->n)
                    : stats_welch_p(sh->mean, sh->var, (double)sh->n, aa->mean, aa->var,
                                    (double)aa->n);
        double ds = diff_level(cmp_defs[i].better, sh->mean);
        double da = diff_level(cmp_defs[i].better, aa->mean);
        double d = fabs(cs->diff), level = ds > da ? ds : da;
        bool beyond = d > r->noise_absolute && d > r->noise_relative * level && cs->p < ALPHA;
        cs->verdict = !beyond ? 0 : ds > da ? -1 : +1;
    }

    /* judge: among decisive verdicts, is the shadow's win share above ½? */
    struct judge_stats *j = &s->judge;
    uint64_t valid = j->win + j->tie + j->loss + j->inconsistent, decisive = j->win + j->loss;
    j->inconsistency = valid ? (double)j->inconsistent / (double)valid : NAN;
    j->share = decisive ? (double)j->win / (double)decisive : NAN;
    stats_wilson((double)j->win, (double)decisive, STATS_Z95, &j->lo, &j->hi);
    j->p_better = stats_sign_p(j->win, j->loss);
    j->p_worse = stats_sign_p(j->loss, j->win);
    if (decisive && j->p_better >= ALPHA)
        j->decisive_needed = stats_sign_n_needed(j->share, ALPHA);
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

/* The recommendation: the rules in their fixed order, the first that
 * applies wins (doc/shadow-report.md has the table).  Rules that stop a
 * candidate use point estimates; the one that passes it (no_regression)
 * uses interval bounds, so "ready" means the data rule a breach out. */
static void decide(const struct report_rules *r, struct section *s)
{
    struct reco *rc = &s->reco;
    const struct leg_stats *sh = &s->leg[L_SHADOW];
    memset(rc, 0, sizeof *rc);
    rc->more = -1;

    if (s->pairs < r->min_pairs) {
        rc->rule = "insufficient_data";
        rc->action = "keep_collecting";
        rc->criterion = "min_pairs";
        rc->more = (int64_t)(r->min_pairs - s->pairs);
        reco_add(rc, "%llu pairs, fewer than the %u the rules need: keep collecting, %lld more",
                 (unsigned long long)s->pairs, r->min_pairs, (long long)rc->more);
        return;
    }
    if (sh->rate < r->success_min) {
        rc->rule = "success_rate";
        rc->action = "investigate";
        reco_add(rc, "shadow success %.2f%% (95%% CI %.2f-%.2f%%) is below %.2f%%", 100 * sh->rate,
                 100 * sh->lo, 100 * sh->hi, 100 * r->success_min);
        return;
    }
    if (s->have_ratio && s->ratio[0].point > r->latency_ratio_max) {
        rc->rule = "latency_ratio";
        rc->action = "too_slow";
        reco_add(rc, "shadow p50 latency is %.2fx the primary's (95%% CI %.2f-%.2f), above %.2fx",
                 s->ratio[0].point, s->ratio[0].lo, s->ratio[0].hi, r->latency_ratio_max);
        return;
    }
    bool worse = s->judge.p_worse < ALPHA;
    for (size_t i = 0; i < NCMP; i++)
        worse = worse || s->cmp[i].verdict < 0;
    if (worse)
        reco_add(rc, "worse beyond the noise floor: ");
    for (size_t i = 0; i < NCMP; i++)
        if (s->cmp[i].verdict < 0) {
            const struct cmp_stats *cs = &s->cmp[i];
            reco_add(rc, "%s%s: shadow %.3f vs A/A %.3f (p %.4f)", rc->nnames ? "; " : "",
                     cmp_defs[i].name, cs->s[A_SHADOW].mean, cs->s[A_AA].mean, cs->p);
            rc->names[rc->nnames++] = cmp_defs[i].name;
        }
    if (s->judge.p_worse < ALPHA) {
        reco_add(rc, "%sjudge: %llu wins vs %llu losses (sign test p %.4f)", rc->nnames ? "; " : "",
                 (unsigned long long)s->judge.win, (unsigned long long)s->judge.loss,
                 s->judge.p_worse);
        rc->names[rc->nnames++] = "judge";
    }
    if (rc->nnames) {
        rc->rule = "quality_regression";
        rc->action = "investigate";
        return;
    }
    if (s->judge.win + s->judge.loss > 0 && s->judge.p_better < ALPHA) {
        rc->rule = "judge_better";
        rc->action = "ready_for_canary";
        reco_add(rc, "the judge prefers the shadow: %llu wins vs %llu losses (sign test p %.4f)",
                 (unsigned long long)s->judge.win, (unsigned long long)s->judge.loss,
                 s->judge.p_better);
        return;
    }

    /* no_regression needs every criterion met; otherwise say what is
     * missing and how many more pairs would settle it at the observed
     * rates */
    bool ok_success = sh->lo >= r->success_min;
    bool ok_latency = s->have_ratio && s->ratio[0].hi <= r->latency_ratio_max;
    if (ok_success && ok_latency && s->noise_known) {
        rc->rule = "no_regression";
        rc->action = "ready_for_canary";
        reco_add(rc,
                 "shadow success %.2f%% (lower bound %.2f%% >= %.2f%%), p50 latency ratio %.2fx "
                 "(upper bound %.2f <= %.2f), no comparator beyond the noise floor, judge not worse",
                 100 * sh->rate, 100 * sh->lo, 100 * r->success_min, s->ratio[0].point,
                 s->ratio[0].hi, r->latency_ratio_max);
        return;
    }
    rc->rule = "keep_collecting";
    rc->action = "keep_collecting";
    int64_t worst = 0;
    bool cannot = false;
    if (!ok_success) {
        uint64_t need = stats_wilson_n_needed(sh->rate, r->success_min, STATS_Z95);
        int64_t more = need ? (int64_t)need - (int64_t)s->pairs : -1;
        if (more == 0)
            more = 1;
        reco_add(rc, "%sshadow success lower bound %.2f%% < %.2f%%", rc->reason[0] ? "; " : "",
                 100 * sh->lo, 100 * r->success_min);
        if (more < 0) {
            reco_add(rc, " (cannot clear at the observed %.2f%%)", 100 * sh->rate);
            cannot = true;
            rc->criterion = "success_ci";
        } else {
            reco_add(rc, " (about %lld more pairs at the observed %.2f%%)", (long long)more,
                     100 * sh->rate);
            if (!cannot && more > worst) {
                worst = more;
                rc->criterion = "success_ci";
            }
        }
    }
    if (!ok_latency) {
        if (!s->have_ratio) {
            reco_add(rc, "%sno pair where both legs succeeded: latency ratio unknown",
                     rc->reason[0] ? "; " : "");
            if (!cannot)
                rc->criterion = "latency_ci";
            cannot = true;
        } else {
            /* the interval narrows like 1/sqrt(n): scale the half-width */
            double pt = s->ratio[0].point, hi = s->ratio[0].hi, max = r->latency_ratio_max;
            reco_add(rc, "%sp50 latency ratio upper bound %.2f > %.2f", rc->reason[0] ? "; " : "",
                     hi, max);
            if (!(pt < max) || !isfinite(hi)) {
                reco_add(rc, " (cannot clear at the observed %.2fx)", pt);  /* or no interval */
                if (!cannot)
                    rc->criterion = "latency_ci";
                cannot = true;
            } else {
                double f = (hi - pt) / (max - pt);
                double need = ceil((double)s->pairs * f * f);
                int64_t more = need > 9e15 ? INT64_MAX : (int64_t)need - (int64_t)s->pairs;
                if (more < 1)
                    more = 1;
                reco_add(rc, " (about %lld more pairs)", (long long)more);
                if (!cannot && more > worst) {
                    worst = more;
                    rc->criterion = "latency_ci";
                }
            }
        }
    }
    if (!s->noise_known) {
        reco_add(rc, "%sno A/A legs recorded: the noise floor is unknown, so the comparators "
                     "cannot be judged (send a fraction of shadowed requests to the primary again)",
                 rc->reason[0] ? "; " : "");
        if (!cannot)
            rc->criterion = "noise_floor";
        cannot = true;
    }
    rc->more = cannot ? -1 : worst;
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
        w_fmt(w, "%-17smore pairs needed: %lld (%s)\n", "", (long long)rc->more,
              rc->criterion ? rc->criterion : "-");
    w_str(w, "\n");

    char t0[40], t1[40];
    iso_time(s->first_ts, t0, sizeof t0);
    iso_time(s->last_ts, t1, sizeof t1);
    w_fmt(w, "%-17s%llu", "pairs", (unsigned long long)s->pairs);
    if (s->pairs)
        w_fmt(w, " (%s .. %s)", t0, t1);
    w_str(w, "\n");
    t_counters(w, s);
    w_str(w, "\n");

    w_fmt(w, "%-17s%-10s%-22s%-9s%s\n", "success", "rate", "95% CI (Wilson)", "n", "failures");
    for (int l = 0; l < NLEGS; l++) {
        const struct leg_stats *ls = &s->leg[l];
        if (l == L_AA && ls->n == 0)
            continue;
        char ci[80];
        if (ls->n)
            snprintf(ci, sizeof ci, "[%s, %s]", f_pct(a, sizeof a, ls->lo), f_pct(b, sizeof b, ls->hi));
        else
            snprintf(ci, sizeof ci, "-");
        t_leg_label(w, l);
        w_fmt(w, "%-10s%-22s%-9llu", f_pct(c2, sizeof c2, ls->rate), ci, (unsigned long long)ls->n);
        t_kinds(w, ls);
        w_str(w, "\n");
    }
    w_fmt(w, "%-17sauto-stop below %.2f%% over the recent window\n", "", 100 * r->autostop_success_min);
    w_str(w, "\n");

    for (int m = 0; m < 2; m++) {
        w_fmt(w, "%-17s%-10s%-10s%-10s%s\n", m ? "ttft ms" : "latency ms", "p50", "p95", "p99", "n");
        for (int l = 0; l < 2; l++) {
            const struct leg_stats *ls = &s->leg[l];
            const double *p = m ? ls->ttft_p : ls->lat_p;
            t_leg_label(w, l);
            w_fmt(w, "%-10s%-10s%-10s%zu\n", f_num(a, sizeof a, p[0], 1), f_num(b, sizeof b, p[1], 1),
                  f_num(c2, sizeof c2, p[2], 1), m ? ls->ttft.n : ls->lat.n);
        }
        if (m == 0) {
            w_fmt(w, "  %-15s%-10s%-10s%-10s%zu pairs with both legs successful\n", "shadow/primary",
                  f_num(a, sizeof a, s->ratio[0].point, 3), f_num(b, sizeof b, s->ratio[1].point, 3),
                  "", s->pair_p.n);
            if (s->have_ratio) {
                char ci0[80], ci1[80];
                snprintf(ci0, sizeof ci0, "[%s, %s]", f_num(a, sizeof a, s->ratio[0].lo, 3),
                         f_num(b, sizeof b, s->ratio[0].hi, 3));
                snprintf(ci1, sizeof ci1, "[%s, %s]", f_num(a, sizeof a, s->ratio[1].lo, 3),
                         f_num(b, sizeof b, s->ratio[1].hi, 3));
                w_fmt(w, "  %-15s%-20s%-20s(paired bootstrap, %u resamples)\n", "95% CI", ci0, ci1,
                      s->boot_reps);
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

    w_fmt(w, "%-19s%-9s%-8s%-9s%-8s%-9s%-9s%s\n", "comparators", "shadow", "n", "aa", "n", "diff",
          "p", "verdict");
    for (size_t i = 0; i < NCMP; i++) {
        const struct cmp_stats *cs = &s->cmp[i];
        if (cs->s[A_SHADOW].n == 0 && cs->s[A_AA].n == 0)
            continue;
        const char *v = cmp_defs[i].better == INFO ? "(primary's own rate)"
                        : !s->noise_known           ? "noise floor unknown"
                        : !cs->known                ? "no aa values"
                        : cs->verdict < 0           ? "BEYOND NOISE (worse)"
                        : cs->verdict > 0           ? "beyond noise (better)"
                                                    : "within noise";
        w_fmt(w, "  %-17s%-9s%-8llu%-9s%-8llu%-9s%-9s%s\n", cmp_defs[i].name,
              f_num(a, sizeof a, cs->s[A_SHADOW].mean, 3), (unsigned long long)cs->s[A_SHADOW].n,
              f_num(b, sizeof b, cs->s[A_AA].mean, 3), (unsigned long long)cs->s[A_AA].n,
              f_num(c2, sizeof c2, cs->known ? cs->diff : NAN, 3),
              f_p(d, sizeof d, cs->p), v);
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
        w_fmt(w, "  %-15s%s of %llu decisive, 95%% CI [%s, %s]; sign test p %s (better), %s (worse)\n",
              "win share", f_pct(a, sizeof a, j->share), (unsigned long long)(j->win + j->loss),
              f_pct(b, sizeof b, j->lo), f_pct(c2, sizeof c2, j->hi), f_p(d, sizeof d, j->p_better),
              f_p(e, sizeof e, j->p_worse));
        if (j->decisive_needed)
            w_fmt(w, "  %-15sat this win share, significantly better after about %llu decisive "
                     "verdicts\n", "", (unsigned long long)j->decisive_needed);
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
    w_fmt(w, "]},\"pairs\":%llu,\"first_ts\":", (unsigned long long)s->pairs);
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
    w_str(w, "}}");

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
        w_fmt(w, ",\"beyond_noise\":%s,\"direction\":%s}", cs->verdict ? "true" : "false",
              cs->verdict < 0 ? "\"worse\"" : cs->verdict > 0 ? "\"better\"" : "null");
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
        w_fmt(w, "<br>more pairs needed: %lld (%s)", (long long)rc->more,
              rc->criterion ? rc->criterion : "-");
    w_str(w, "</div>\n");

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

    w_str(w, "<h3>Success</h3><table><tr><th></th><th>rate</th><th>95% CI (Wilson)</th><th>n</th>"
             "<th>failures</th></tr>");
    for (int l = 0; l < NLEGS; l++) {
        const struct leg_stats *ls = &s->leg[l];
        if (l == L_AA && ls->n == 0)
            continue;
        w_fmt(w, "<tr><td>%s</td>", leg_names[l]);
        h_pct_cell(w, ls->rate);
        if (ls->n)
            w_fmt(w, "<td>%s &ndash; %s</td>", f_pct(a, sizeof a, ls->lo), f_pct(b, sizeof b, ls->hi));
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
    w_fmt(w, "</table><p class=\"muted\">Rules: investigate below %.2f%%; the live auto-stop acts "
             "below %.2f%% over its recent window.</p>\n",
          100 * r->success_min, 100 * r->autostop_success_min);

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
             "<th>diff</th><th>p</th><th>verdict</th></tr>");
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
        w_fmt(w, "<td>%s</td><td>%s</td></tr>", f_p(a, sizeof a, cs->p),
              cmp_defs[i].better == INFO ? "<span class=\"muted\">primary&#39;s own rate</span>"
              : !cs->known               ? "<span class=\"muted\">unknown</span>"
              : cs->verdict < 0          ? "<span class=\"bad\">beyond noise, worse</span>"
              : cs->verdict > 0          ? "<span class=\"good\">beyond noise, better</span>"
                                         : "within noise");
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
        w_fmt(w, "Win share %s of %llu decisive, 95%% CI %s &ndash; %s; sign test p %s (better), ",
              f_pct(a, sizeof a, j->share), (unsigned long long)(j->win + j->loss),
              f_pct(b, sizeof b, j->lo), f_pct(c1, sizeof c1, j->hi), f_p(c2, sizeof c2, j->p_better));
        w_fmt(w, "%s (worse).", f_p(c3, sizeof c3, j->p_worse));
        if (j->decisive_needed)
            w_fmt(w, " At this win share, significantly better after about %llu decisive verdicts.",
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
    if (load_window(c, s) < 0 || load_counters(c, s) < 0 || load_legs(c, s) < 0 ||
        load_comparisons(c, s) < 0 || load_judgements(c, s) < 0 || load_examples(c, s) < 0 ||
        load_events(c, s) < 0 || analyse(c, s) < 0)
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
        w_str(w, "{\"version\":1,\"generated_at\":");
        j_num(w, now);
        w_str(w, ",\"query\":{\"shadow\":");
        j_str(w, q->shadow);
        w_str(w, ",\"since\":");
        j_num(w, q->since);
        w_fmt(w, ",\"max_pairs\":%u,\"worst\":%u},\"rules\":{\"success_min\":", q->max_pairs, q->worst);
        j_num(w, r->success_min);
        w_str(w, ",\"latency_ratio_max\":");
        j_num(w, r->latency_ratio_max);
        w_str(w, ",\"autostop_success_min\":");
        j_num(w, r->autostop_success_min);
        w_fmt(w, ",\"min_pairs\":%u,\"noise_relative\":", r->min_pairs);
        j_num(w, r->noise_relative);
        w_str(w, ",\"noise_absolute\":");
        j_num(w, r->noise_absolute);
        w_fmt(w, ",\"alpha\":%g},\"shadows\":[", ALPHA);
        return;
    }
    char win[160];
    int k = snprintf(win, sizeof win, "%s", q->since > 0 ? "since " : "all time");
    if (q->since > 0)
        k += snprintf(win + k, sizeof win - (size_t)k, "%s", since);
    if (q->max_pairs)
        snprintf(win + k, sizeof win - (size_t)k, ", newest %u pairs", q->max_pairs);
    if (f == REPORT_HTML) {
        w_str(w, html_head);
        w_fmt(w, "<h1>shade shadow report</h1><p class=\"muted\">Generated %s &middot; window: %s "
                 "&middot; rules: success &ge; %.2f%%, p50 latency ratio &le; %.2f, at least %u pairs, "
                 "noise: a comparator differs when |shadow &minus; aa| &gt; %.2f relative and &gt; "
                 "%.3f absolute with p &lt; %.2f.</p>\n",
              gen, win, 100 * r->success_min, r->latency_ratio_max, r->min_pairs, r->noise_relative,
              r->noise_absolute, ALPHA);
        return;
    }
    w_fmt(w, "shade shadow report, generated %s\n", gen);
    w_fmt(w, "window: %s\n", win);
    w_fmt(w, "rules: success >= %.2f%%, p50 latency ratio <= %.2f, at least %u pairs; a comparator "
             "differs from the A/A noise floor when |shadow - aa| > %.2f relative and > %.3f "
             "absolute with p < %.2f\n\n",
          100 * r->success_min, r->latency_ratio_max, r->min_pairs, r->noise_relative,
          r->noise_absolute, ALPHA);
}

int report_render(sqlite3 *db, const struct report_query *q, const struct report_rules *rules,
                  enum report_format f, struct buf *out, char *err, size_t errlen)
{
    struct ctx c = { db, q, rules, err, errlen };
    struct w w = { out, false };
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
    header(&w, f, q, rules, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
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
        if (f == REPORT_JSON) {
            w_str(&w, done ? "," : "");
            render_json(&w, &s);
        } else if (f == REPORT_HTML) {
            render_html(&w, q, rules, &s);
        } else {
            render_text(&w, q, rules, &s);
        }
        done++;
        section_free(&s);
    }
    if (f == REPORT_JSON)
        w_str(&w, "]}\n");
    else if (f == REPORT_HTML)
        w_str(&w, done ? "</body></html>\n" : "<p>No shadows recorded.</p></body></html>\n");
    else if (!done)
        w_str(&w, "no shadows recorded\n");
    if (w.oom) {
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

int report_recent_success(sqlite3 *db, const char *shadow, uint32_t window, uint64_t *n,
                          uint64_t *k)
{
    static const char sql[] =
        "SELECT COUNT(*), TOTAL(l.error IS NULL AND l.status >= 200 AND l.status < 300) FROM "
        "(SELECT id FROM pairs WHERE shadow = ?1 ORDER BY ts DESC, id DESC LIMIT ?2) p "
        "LEFT JOIN legs l ON l.pair_id = p.id AND l.leg = 'shadow'";
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_bind_text(st, 1, shadow, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, window ? (sqlite3_int64)window : -1);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *n = (uint64_t)sqlite3_column_int64(st, 0);
        *k = (uint64_t)sqlite3_column_double(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

/* ============================================================ the command */

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
    "                            or an age: 90s, 15m, 2h, 1d, 1w\n"
    "  --max-pairs N             only the newest N pairs (default: all)\n"
    "  --format text|json|html   output format (default text)\n"
    "  --out FILE                write to FILE instead of standard output\n"
    "  --worst N                 worst examples per shadow (default 5, 0 = none)\n"
    "  --success-min X           rule: shadow success below X → investigate (0.95)\n"
    "  --latency-ratio-max X     rule: p50 latency ratio above X → too slow (1.5)\n"
    "  --min-pairs N             rule: fewer pairs → keep collecting (30)\n"
    "  --autostop-success-min X  the live auto-stop threshold, reported (0.90)\n"
    "  --noise-relative X        noise floor: relative difference needed (0.20)\n"
    "  --noise-absolute X        noise floor: absolute difference needed (0.03)\n"
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
                                         "min-pairs", "autostop-success-min", "noise-relative",
                                         "noise-absolute" };
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
            if (report_parse_time(val, (double)now.tv_sec, &q.since) < 0)
                bad = "expected unix seconds, an ISO-8601 time like 2026-11-21T10:00:00Z, or an "
                      "age like 15m, 2h, 1d";
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
            bad = parse_real(val, 0, 1, &rules.success_min) < 0 ? "expected a number from 0 to 1" : NULL;
            break;
        case 8:
            bad = parse_real(val, 0.0001, 1e6, &rules.latency_ratio_max) < 0 ? "expected a positive number"
                                                                              : NULL;
            break;
        case 9:
            bad = parse_u32(val, &rules.min_pairs) < 0 ? "expected a non-negative integer" : NULL;
            break;
        case 10:
            bad = parse_real(val, 0, 1, &rules.autostop_success_min) < 0 ? "expected a number from 0 to 1"
                                                                         : NULL;
            break;
        case 11:
            bad = parse_real(val, 0, 1e6, &rules.noise_relative) < 0 ? "expected a non-negative number"
                                                                     : NULL;
            break;
        default:
            bad = parse_real(val, 0, 1e6, &rules.noise_absolute) < 0 ? "expected a non-negative number"
                                                                     : NULL;
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
