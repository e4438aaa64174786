/* judge.c — the LLM judge worker (judge.h).
 *
 * One thread, off the hot path, with its own SQLite connection to the pair
 * store, calling the judge model with the blocking client of hclient.c
 * (Connection: close, one call at a time).  Each round (every interval_ms) it takes, shadow after shadow
 * (starting with the next one each round), the oldest eligible pairs not
 * yet judged, max_per_round in all, and asks the judge model about each
 * twice (order1: A = primary, B = shadow; order2: swapped), then writes one
 * judgements row (INSERT OR IGNORE: several serving processes may judge
 * the same store, e.g. across a reload).
 *
 * Finding work.  Pairs are read in id order (the order they were stored)
 * from a per-shadow `floor`: every pair of the shadow with an id up to it
 * is settled — judged, not sampled, or with both legs present and one of
 * them failed.  A pair whose legs are not all there yet holds the floor
 * back, so it is seen again once they are; the scan stops as soon as it has
 * enough candidates.  Sampling is an SQL function (judge_sampled), so
 * unsampled pairs are never copied.  The read statement is reset before
 * any judge call: no read transaction stays open across the network.
 *
 * Rollouts.  A rollout whose quality gate has a judge is one more entry
 * of the same round-robin: its rows of rollout_pairs (complete: every leg
 * answered) are judged with the baseline's answer in the primary's place
 * and the canary's in the shadow's, into rollout_judgements.  Only the
 * rollout's current run (ids above the pair_floor that rollout.c keeps in
 * its rollout_state) while it is in the canary or frozen phase; the floor
 * here moves with each pair written.  The controller reads the verdicts
 * (rollout.c judge_read).
 *
 * Experiments.  An experiment with a judge is one more entry: its rows of
 * experiment_pairs (complete: the control's answer and a non-control
 * arm's) are judged with the control's answer in the primary's place and
 * the arm's in the shadow's, into experiment_judgements with the arm;
 * every stored pair (the experiment sampled the requests).  experiment.c
 * reads the counts back.
 *
 * Failures.  A call that cannot connect, or is answered 429, 502, 503 or
 * 504 (the judge is unavailable, not wrong), writes nothing and ends the
 * round: the pair is tried again next round.  Any other failure (timeout,
 * another HTTP error, a response that is not a chat completion) records
 * that order's verdict as NULL and skips order2; an answer without a valid
 * verdict line records 'invalid'.  Either makes the outcome 'error'.
 *
 * Stopping.  judge_stop sets a flag and signals an eventfd that every wait
 * polls (between rounds, SQLite's busy handler, and hclient's connect,
 * send and receive as the call's cancel fd), so a call in progress is dropped at once; a pair cut short gets
 * no row.
 *
 * The prompt (user message; a system message precedes it):
 *
 *   Compare two answers to the same request. …
 *
 *   [Request]
 *   user: …            (pairs.prompt: messages as "role: content" lines)
 *   [Answer A]
 *   …
 *   [Answer B]
 *   …
 *   [End]
 *
 *   … end with exactly one line: "VERDICT: A" …, "VERDICT: B" … or
 *   "VERDICT: TIE" ….
 *
 * An answer is legs.response, followed by "(tool calls: JSON)" when the
 * leg has tool calls.  Inside the sections the markers "[Request]",
 * "[Answer A]", "[Answer B]" and "[End]" are written with parentheses, so
 * an answer cannot forge a section; each section is cut at
 * JUDGE_MAX_SECTION bytes.
 */
#include "judge.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "hclient.h"
#include "json.h"
#include "log.h"
#include "rand.h"

#define JUDGE_MAX_SECTION   (64u << 10) /* bytes of request / answer shown to the judge */
#define JUDGE_MAX_RESPONSE  (4u << 20)  /* judge's HTTP response body */
#define JUDGE_MAX_PER_ROUND 10000       /* max_per_round is clamped to this */
#define BUSY_STEP_MS        10          /* SQLite busy: retry every 10 ms … */
#define BUSY_STEPS          500         /* … for about 5 s */

/* a shadow, or a rollout (rollout_pairs) when rollout is set, or an
 * experiment (experiment_pairs) when experiment is set too */
struct shadow_rt {
    char *shadow, *judge_model;
    double sample;
    int64_t floor; /* every pair with id <= floor is settled */
    bool rollout, experiment;
};

struct judge {
    char *db_path;
    char *host;                       /* numeric or name, no brackets */
    char port[8];
    char *authority;                  /* the Host header: host:port, [v6]:port */
    struct shadow_rt *shadows;
    size_t nshadows, next_shadow;
    uint32_t interval_ms, timeout_ms, max_per_round;
    int stop_fd;                      /* eventfd: readable once judge_stop ran */
    atomic_bool stopping;
    pthread_t thread;
    atomic_uint_fast64_t judged, errors, calls;
    sqlite3 *db;
    sqlite3_stmt *sel, *ins;          /* shadows' pairs (NULL when no shadow has a judge) */
    sqlite3_stmt *rsel, *rins;        /* rollouts' pairs (NULL when no rollout has a judge) */
    sqlite3_stmt *esel, *eins;        /* experiments' pairs (NULL when no experiment has a judge) */
    bool warned;                      /* a failure was logged; quiet until a success */
};

/* a pair to judge, copied out of the store */
struct cand {
    int64_t id;
    char *prompt, *primary, *shadow;
    char *arm; /* an experiment's pair: the arm (else NULL) */
};

static bool stopping(struct judge *j) { return atomic_load_explicit(&j->stopping, memory_order_relaxed); }

static void bump(atomic_uint_fast64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

/* A failure is logged once, then the judge is quiet until a call succeeds. */
__attribute__((format(printf, 2, 3))) static void warn_once(struct judge *j, const char *fmt, ...)
{
    if (j->warned)
        return;
    j->warned = true;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_warn("%s (further failures are not logged until a judge call succeeds)", msg);
}

/* ---------- the pure parts ---------- */

bool judge_sampled(int64_t pair_id, double sample)
{
    return (double)(rnd_splitmix64((uint64_t)pair_id) >> 11) * 0x1.0p-53 < sample;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

const char *judge_parse_verdict(const char *s, size_t n)
{
    const char *v = "invalid";
    for (size_t i = 0; i + 7 <= n; i++) {
        if (strncasecmp(s + i, "verdict", 7) != 0 || (i > 0 && is_alnum((unsigned char)s[i - 1])))
            continue;
        size_t p = i + 7;
        while (p < n && (s[p] == ' ' || s[p] == '*'))
            p++;
        if (p >= n || s[p] != ':')
            continue; /* prose ("the verdict is"), not a verdict line */
        p++;
        while (p < n && (s[p] == ' ' || s[p] == '*' || s[p] == '"' || s[p] == '\'' || s[p] == '['))
            p++;
        size_t w = p;
        while (w < n && is_alnum((unsigned char)s[w]))
            w++;
        if (w - p == 1 && (s[p] == 'A' || s[p] == 'a'))
            v = "A";
        else if (w - p == 1 && (s[p] == 'B' || s[p] == 'b'))
            v = "B";
        else if (w - p == 3 && strncasecmp(s + p, "tie", 3) == 0)
            v = "tie";
        else
            v = "invalid";
    }
    return v;
}

const char *judge_outcome(const char *order1, const char *order2)
{
    if (!order1 || !order2 || strcmp(order1, "invalid") == 0 || strcmp(order2, "invalid") == 0)
        return "error";
    if (strcmp(order1, "B") == 0 && strcmp(order2, "A") == 0)
        return "win";
    if (strcmp(order1, "A") == 0 && strcmp(order2, "B") == 0)
        return "loss";
    if (strcmp(order1, "tie") == 0 && strcmp(order2, "tie") == 0)
        return "tie";
    return "inconsistent";
}

/* ---------- waiting (every wait can be cut by judge_stop) ---------- */

/* Sleep for ms, or less when judge_stop runs: false when stopping (or poll
 * failed).  The HTTP calls wait in hclient.c on the same eventfd. */
static bool nap(struct judge *j, uint64_t ms)
{
    uint64_t deadline = hc_now_ms() + ms;
    for (;;) {
        if (stopping(j))
            return false;
        uint64_t now = hc_now_ms();
        if (now >= deadline)
            return true;
        struct pollfd p = { j->stop_fd, POLLIN, 0 };
        uint64_t left = deadline - now;
        int rc = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if ((rc < 0 && errno != EINTR) || rc > 0)
            return false;
    }
}

static int busy_cb(void *arg, int count)
{
    struct judge *j = arg;
    if (count >= BUSY_STEPS)
        return 0;
    return nap(j, BUSY_STEP_MS); /* 0 when stopping: give up */
}

/* ---------- the call (hclient.c) ---------- */

enum call_rc { CALL_OK, CALL_UNAVAILABLE, CALL_FAILED, CALL_STOPPED };

/* POST body to path; the response is in *r when CALL_OK (any status).  The
 * name is resolved for every call, as the listener's address may change
 * meaning (a name) between rounds. */
static enum call_rc http_post(struct judge *j, const char *path, const char *extra_hdrs, const struct buf *body,
                              struct hc_response *r)
{
    struct hc_addrs addrs;
    const char *why;
    if (hc_resolve(j->host, j->port, &addrs, &why) < 0)
        return CALL_UNAVAILABLE;
    struct hc_request rq = { .addrs = &addrs, .method = "POST", .path = path, .authority = j->authority,
                             .headers = extra_hdrs, .content_type = "application/json",
                             .body = buf_data(body), .body_len = buf_used(body),
                             .deadline_ms = hc_now_ms() + j->timeout_ms, .max_response = JUDGE_MAX_RESPONSE,
                             .cancel_fd = j->stop_fd };
    switch (hc_call(&rq, r)) {
    case HC_OK: return CALL_OK;
    case HC_ECONNECT: return CALL_UNAVAILABLE;
    case HC_ESTOPPED: return CALL_STOPPED;
    default: return CALL_FAILED; /* timed out, cut, not HTTP, too large */
    }
}

/* ---------- the prompt ---------- */

static const char *const markers[] = { "[Request]", "[Answer A]", "[Answer B]", "[End]" };

/* Append s with the section markers defused ("[End]" -> "(End)"), at most
 * JUDGE_MAX_SECTION bytes of it, cut on a UTF-8 character boundary. */
static void put_defused(struct buf *b, const char *s, size_t n)
{
    bool cut = n > JUDGE_MAX_SECTION;
    if (cut) {
        n = JUDGE_MAX_SECTION;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n;) {
        const char *q = memchr(s + i, '[', n - i);
        size_t run = q ? (size_t)(q - (s + i)) : n - i;
        buf_append(b, s + i, run);
        i += run;
        if (i == n)
            break;
        size_t ml = 0;
        for (size_t k = 0; k < sizeof markers / sizeof markers[0] && !ml; k++)
            if (strlen(markers[k]) <= n - i && memcmp(s + i, markers[k], strlen(markers[k])) == 0)
                ml = strlen(markers[k]);
        if (ml) {
            buf_append(b, "(", 1);
            buf_append(b, s + i + 1, ml - 2);
            buf_append(b, ")", 1);
            i += ml;
        } else {
            buf_append(b, "[", 1);
            i++;
        }
    }
    if (cut)
        buf_append_str(b, "\n(truncated)");
}

/* Append a JSON string's decoded content, defused. */
static void put_json_text(struct buf *b, const struct json_span *v)
{
    char *t = malloc(v->len + 1);
    long n = t ? json_str_unescape(v, t, v->len + 1) : -1;
    if (n >= 0)
        put_defused(b, t, (size_t)n);
    free(t);
}

/* The request as the judge sees it: chat messages as "role: content"
 * lines, a completion prompt as its text, anything else (a truncated
 * prompt is not JSON) as stored. */
static void put_request(struct buf *b, const char *prompt)
{
    size_t n = strlen(prompt);
    struct json_span root, k, m, role, c, part, text;
    if (json_validate(prompt, n, &root, NULL) < 0 || (root.type != JSON_ARRAY && root.type != JSON_STRING)) {
        put_defused(b, prompt, n);
        return;
    }
    if (root.type == JSON_STRING) {
        put_json_text(b, &root);
        return;
    }
    size_t it = 0;
    while (json_next(&root, &it, &k, &m)) {
        if (m.type != JSON_OBJECT)
            continue;
        if (json_get(&m, "role", &role) && role.type == JSON_STRING)
            put_json_text(b, &role);
        buf_append_str(b, ": ");
        bool has = json_get(&m, "content", &c);
        if (has && c.type == JSON_STRING) {
            put_json_text(b, &c);
        } else if (has && c.type == JSON_ARRAY) {
            size_t it2 = 0, nparts = 0;
            while (json_next(&c, &it2, &k, &part)) {
                if (part.type != JSON_OBJECT || !json_get(&part, "text", &text) || text.type != JSON_STRING)
                    continue;
                if (nparts++)
                    buf_append_str(b, " ");
                put_json_text(b, &text);
            }
        }
        buf_append_str(b, "\n");
    }
}

static int put_json_str(struct buf *b, const char *s, size_t n)
{
    char *w = buf_reserve(b, 6 * n + 3);
    long l = w ? json_escape(s, n, w, 6 * n + 3) : -1;
    if (l < 0)
        return -1;
    b->len += (size_t)l;
    return 0;
}

static const char system_msg[] =
    "You are an impartial judge. You compare two answers to the same request and decide which one "
    "serves the user better.";
static const char intro[] =
    "Compare two answers to the same request. Decide which answer is better for the user: correct, "
    "helpful, complete and clear. The answers are shown in an arbitrary order; the order must not "
    "influence you, and an answer is not better for being longer.\n\n[Request]\n";
static const char outro[] =
    "[End]\n\nGive a one-sentence reason, then end with exactly one line: \"VERDICT: A\" if answer A is "
    "better, \"VERDICT: B\" if answer B is better, or \"VERDICT: TIE\" if they are equally good.";

/* The request body of one judge call; -1 when memory ran out. */
static int build_body(struct buf *body, const char *model, const char *prompt, const char *a, const char *b)
{
    struct buf u = { 0 };
    buf_append_str(&u, intro);
    put_request(&u, prompt);
    buf_append_str(&u, "[Answer A]\n");
    put_defused(&u, a, strlen(a));
    buf_append_str(&u, "\n[Answer B]\n");
    put_defused(&u, b, strlen(b));
    buf_append_str(&u, "\n");
    int rc = buf_append_str(&u, outro);
    if (rc == 0)
        rc = buf_append_str(body, "{\"model\":");
    if (rc == 0)
        rc = put_json_str(body, model, strlen(model));
    if (rc == 0)
        rc = buf_append_str(body, ",\"temperature\":0,\"stream\":false,\"messages\":[{\"role\":\"system\","
                                  "\"content\":");
    if (rc == 0)
        rc = put_json_str(body, system_msg, sizeof system_msg - 1);
    if (rc == 0)
        rc = buf_append_str(body, "},{\"role\":\"user\",\"content\":");
    if (rc == 0)
        rc = put_json_str(body, buf_data(&u), buf_used(&u));
    if (rc == 0)
        rc = buf_append_str(body, "}]}");
    buf_free(&u);
    return rc;
}

/* ---------- one judge call ---------- */

static void note_failure(struct judge *j, const char *what, int status)
{
    bump(&j->errors);
    warn_once(j, "judge: call to %s:%s failed: %s (status %d)", j->host, j->port, what, status);
}

/* Ask one order.  *verdict: "A" | "B" | "tie" | "invalid", or NULL when the
 * call failed (CALL_FAILED). */
static enum call_rc ask(struct judge *j, const struct shadow_rt *s, const struct cand *c, int order,
                        const char **verdict)
{
    *verdict = NULL;
    struct buf body = { 0 };
    const char *a = order == 1 ? c->primary : c->shadow, *b = order == 1 ? c->shadow : c->primary;
    if (build_body(&body, s->judge_model, c->prompt, a, b) < 0) {
        buf_free(&body);
        return CALL_UNAVAILABLE; /* out of memory: try again later */
    }
    char hdrs[96];
    snprintf(hdrs, sizeof hdrs, "x-shade-no-shadow: 1\r\nx-request-id: shade-judge-%s%lld-%d\r\n",
             s->experiment ? "e" : s->rollout ? "r" : "", (long long)c->id, order);
    struct hc_response r = { 0 };
    bump(&j->calls);
    enum call_rc rc = http_post(j, "/v1/chat/completions", hdrs, &body, &r);
    buf_free(&body);
    if (rc == CALL_OK && (r.status == 429 || r.status == 502 || r.status == 503 || r.status == 504))
        rc = CALL_UNAVAILABLE;
    else if (rc == CALL_OK && (r.status < 200 || r.status > 299))
        rc = CALL_FAILED;
    if (rc == CALL_OK) {
        /* choices[0].message.content */
        struct json_span root, v, ch, msg, content;
        if (r.body.p && json_validate(buf_data(&r.body), buf_used(&r.body), &root, NULL) == 0 &&
            json_get(&root, "choices", &v) && json_index(&v, 0, &ch) && json_get(&ch, "message", &msg) &&
            json_get(&msg, "content", &content) && content.type == JSON_STRING) {
            char *t = malloc(content.len + 1);
            long n = t ? json_str_unescape(&content, t, content.len + 1) : -1;
            if (n >= 0)
                *verdict = judge_parse_verdict(t, (size_t)n);
            free(t);
        }
        if (!*verdict)
            rc = CALL_FAILED;
    }
    if (rc == CALL_OK && strcmp(*verdict, "invalid") == 0)
        note_failure(j, "no valid VERDICT line", r.status);
    else if (rc == CALL_OK)
        j->warned = false;
    else if (rc != CALL_STOPPED)
        note_failure(j, r.status >= 200 && r.status < 300 ? "malformed answer"
                        : r.status ? "HTTP error" : "no answer (connect, timeout or cut)", r.status);
    buf_free(&r.body);
    return rc;
}

/* ---------- the store ---------- */

static void pick_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    sqlite3_result_int(ctx, judge_sampled(sqlite3_value_int64(argv[0]), sqlite3_value_double(argv[1])));
}

static void close_db(struct judge *j)
{
    sqlite3_finalize(j->sel);
    sqlite3_finalize(j->ins);
    sqlite3_finalize(j->rsel);
    sqlite3_finalize(j->rins);
    sqlite3_finalize(j->esel);
    sqlite3_finalize(j->eins);
    sqlite3_close(j->db);
    j->sel = j->ins = j->rsel = j->rins = j->esel = j->eins = NULL;
    j->db = NULL;
}

/* Open the store once the recorder has created it (file and tables). */
static int open_db(struct judge *j)
{
    /* +p.shadow: walk pairs by id (the floor), not by the (shadow, ts) index */
    static const char sel_sql[] =
        "SELECT p.id, p.prompt, lp.status, lp.error IS NULL, lp.response, "
        "       ls.status, ls.error IS NULL, ls.response, "
        "       EXISTS (SELECT 1 FROM judgements jd WHERE jd.pair_id = p.id), lp.tool_calls, ls.tool_calls "
        "FROM pairs p "
        "LEFT JOIN legs lp ON lp.pair_id = p.id AND lp.leg = 'primary' "
        "LEFT JOIN legs ls ON ls.pair_id = p.id AND ls.leg = 'shadow' "
        "WHERE +p.shadow = ?1 AND p.id > ?2 AND shade_judge_sampled(p.id, ?3) "
        "ORDER BY p.id";
    static const char ins_sql[] =
        "INSERT OR IGNORE INTO judgements (pair_id, judge, order1, order2, outcome, ts) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    /* a rollout's pairs are complete rows (every leg answered): the oldest
     * sampled ones of its current run not judged yet, while it decides
     * (phase canary or frozen; rollout.c writes the state) */
    static const char rsel_sql[] =
        "SELECT p.id, p.prompt, p.baseline, p.canary FROM rollout_pairs p, rollout_state s "
        "WHERE s.rollout = ?1 AND json_extract(s.state, '$.phase') IN (0, 3) "
        "  AND p.rollout = ?1 AND p.id > ?2 AND p.id > coalesce(json_extract(s.state, '$.pair_floor'), 0) "
        "  AND shade_judge_sampled(p.id, ?3) "
        "  AND NOT EXISTS (SELECT 1 FROM rollout_judgements jd WHERE jd.pair_id = p.id) "
        "ORDER BY p.id LIMIT ?4";
    static const char rins_sql[] =
        "INSERT OR IGNORE INTO rollout_judgements (pair_id, rollout, judge, order1, order2, outcome, ts) "
        "VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6)";
    /* an experiment's pairs: every one stored is complete (the arm's answer
     * and the control's); the experiment.c writer deletes those of an
     * earlier configuration of the experiment */
    static const char esel_sql[] =
        "SELECT p.id, p.prompt, p.control, p.answer, p.arm FROM experiment_pairs p "
        "WHERE p.experiment = ?1 AND p.id > ?2 AND shade_judge_sampled(p.id, ?3) "
        "  AND NOT EXISTS (SELECT 1 FROM experiment_judgements jd WHERE jd.pair_id = p.id) "
        "ORDER BY p.id LIMIT ?4";
    static const char eins_sql[] =
        "INSERT OR IGNORE INTO experiment_judgements (pair_id, experiment, arm, judge, order1, order2, outcome, ts) "
        "VALUES (?1, ?7, ?8, ?2, ?3, ?4, ?5, ?6)";
    bool sh = false, ro = false, ex = false;
    for (size_t i = 0; i < j->nshadows; i++)
        *(j->shadows[i].experiment ? &ex : j->shadows[i].rollout ? &ro : &sh) = true;
    if (sqlite3_open_v2(j->db_path, &j->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_busy_handler(j->db, busy_cb, j) != SQLITE_OK ||
        sqlite3_create_function(j->db, "shade_judge_sampled", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                pick_fn, NULL, NULL) != SQLITE_OK ||
        (sh && sqlite3_prepare_v2(j->db, sel_sql, -1, &j->sel, NULL) != SQLITE_OK) ||
        (sh && sqlite3_prepare_v2(j->db, ins_sql, -1, &j->ins, NULL) != SQLITE_OK) ||
        (ro && sqlite3_prepare_v2(j->db, rsel_sql, -1, &j->rsel, NULL) != SQLITE_OK) ||
        (ro && sqlite3_prepare_v2(j->db, rins_sql, -1, &j->rins, NULL) != SQLITE_OK) ||
        (ex && sqlite3_prepare_v2(j->db, esel_sql, -1, &j->esel, NULL) != SQLITE_OK) ||
        (ex && sqlite3_prepare_v2(j->db, eins_sql, -1, &j->eins, NULL) != SQLITE_OK)) {
        close_db(j); /* not there yet ("no such table"): next round */
        return -1;
    }
    log_info("judge: judging pairs in %s through %s:%s", j->db_path, j->host, j->port);
    return 0;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

/* An answer as the judge sees it: the text, then the tool calls if any. */
static char *answer_dup(sqlite3_stmt *st, int text_col, int tools_col)
{
    const char *t = (const char *)sqlite3_column_text(st, text_col);
    const char *tc = (const char *)sqlite3_column_text(st, tools_col);
    struct buf b = { 0 };
    buf_append_str(&b, t ? t : "");
    if (tc && *tc && strcmp(tc, "[]") != 0)
        buf_printf(&b, "%s(tool calls: %s)", t && *t ? "\n" : "", tc);
    if (buf_append(&b, "", 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.p;
}

static bool leg_ok(sqlite3_stmt *st, int i)
{
    int status = sqlite3_column_int(st, i);
    return sqlite3_column_int(st, i + 1) && status >= 200 && status < 300;
}

/* Up to max pairs of s to judge, oldest first; advances s->floor. */
static size_t find_pairs(struct judge *j, struct shadow_rt *s, struct cand *out, size_t max)
{
    size_t n = 0;
    bool settled_so_far = true;
    sqlite3_bind_text(j->sel, 1, s->shadow, -1, SQLITE_STATIC);
    sqlite3_bind_int64(j->sel, 2, s->floor);
    sqlite3_bind_double(j->sel, 3, s->sample);
    int rc = SQLITE_DONE;
    while (n < max && (rc = sqlite3_step(j->sel)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(j->sel, 0);
        bool both = sqlite3_column_type(j->sel, 2) != SQLITE_NULL && sqlite3_column_type(j->sel, 5) != SQLITE_NULL;
        bool good = both && leg_ok(j->sel, 2) && leg_ok(j->sel, 5);
        bool judged = sqlite3_column_int(j->sel, 8);
        if (!judged && good) {
            struct cand *c = &out[n];
            c->id = id;
            c->arm = NULL;
            c->prompt = col_dup(j->sel, 1);
            c->primary = answer_dup(j->sel, 4, 9);
            c->shadow = answer_dup(j->sel, 7, 10);
            if (c->prompt && c->primary && c->shadow) {
                n++;
            } else {
                free(c->prompt);
                free(c->primary);
                free(c->shadow);
            }
        }
        /* judged, or a failed leg: never eligible again; missing legs: maybe later */
        if (settled_so_far && (judged || (both && !good)))
            s->floor = id;
        else
            settled_so_far = false;
    }
    if (n < max && rc != SQLITE_DONE && !stopping(j))
        warn_once(j, "judge: cannot read %s: %s", j->db_path, sqlite3_errmsg(j->db));
    sqlite3_reset(j->sel);
    sqlite3_clear_bindings(j->sel);
    return n;
}

static void cand_free(struct cand *c)
{
    free(c->prompt);
    free(c->primary);
    free(c->shadow);
    free(c->arm);
}

/* Up to max pairs of rollout (or experiment) s to judge, oldest first.
 * Every row is complete: the floor moves as pairs are written (write_row). */
static size_t find_rollout_pairs(struct judge *j, struct shadow_rt *s, struct cand *out, size_t max)
{
    size_t n = 0;
    sqlite3_stmt *sel = s->experiment ? j->esel : j->rsel;
    sqlite3_bind_text(sel, 1, s->shadow, -1, SQLITE_STATIC);
    sqlite3_bind_int64(sel, 2, s->floor);
    sqlite3_bind_double(sel, 3, s->sample);
    sqlite3_bind_int64(sel, 4, (sqlite3_int64)max);
    int rc = SQLITE_DONE;
    while (n < max && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
        struct cand *c = &out[n];
        c->id = sqlite3_column_int64(sel, 0);
        c->prompt = col_dup(sel, 1);
        c->primary = col_dup(sel, 2); /* the baseline's (the control's) answer */
        c->shadow = col_dup(sel, 3);  /* the canary's (the arm's) */
        c->arm = s->experiment ? col_dup(sel, 4) : NULL;
        if (c->prompt && c->primary && c->shadow && (c->arm || !s->experiment))
            n++;
        else
            cand_free(c);
    }
    if (n < max && rc != SQLITE_DONE && !stopping(j))
        warn_once(j, "judge: cannot read %s: %s", j->db_path, sqlite3_errmsg(j->db));
    sqlite3_reset(sel);
    sqlite3_clear_bindings(sel);
    return n;
}

static int write_row(struct judge *j, struct shadow_rt *s, const struct cand *c, const char *v1, const char *v2)
{
    int64_t id = c->id;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sqlite3_stmt *ins = s->experiment ? j->eins : s->rollout ? j->rins : j->ins;
    sqlite3_bind_int64(ins, 1, id);
    sqlite3_bind_text(ins, 2, s->judge_model, -1, SQLITE_STATIC);
    if (v1)
        sqlite3_bind_text(ins, 3, v1, -1, SQLITE_STATIC);
    if (v2)
        sqlite3_bind_text(ins, 4, v2, -1, SQLITE_STATIC);
    sqlite3_bind_text(ins, 5, judge_outcome(v1, v2), -1, SQLITE_STATIC);
    sqlite3_bind_double(ins, 6, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    if (s->rollout)
        sqlite3_bind_text(ins, 7, s->shadow, -1, SQLITE_STATIC);
    if (s->experiment)
        sqlite3_bind_text(ins, 8, c->arm ? c->arm : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(ins);
    sqlite3_reset(ins);
    sqlite3_clear_bindings(ins);
    if (rc != SQLITE_DONE) {
        if (!stopping(j))
            warn_once(j, "judge: cannot write to %s: %s", j->db_path, sqlite3_errmsg(j->db));
        return -1;
    }
    if (sqlite3_changes(j->db) > 0) /* 0: another process judged it first */
        bump(&j->judged);
    if (s->rollout && id > s->floor) /* pairs come in id order: every one below is settled */
        s->floor = id;
    return 0;
}

/* Judge up to *budget pairs of s.  Returns -1 when the round should end. */
static int judge_shadow(struct judge *j, struct shadow_rt *s, size_t *budget, struct cand *cands)
{
    size_t n = s->rollout ? find_rollout_pairs(j, s, cands, *budget) : find_pairs(j, s, cands, *budget);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const char *v1 = NULL, *v2 = NULL;
        if (rc == 0) {
            /* a failed first call makes the outcome 'error' already: no second */
            enum call_rc r1 = ask(j, s, &cands[i], 1, &v1);
            enum call_rc r2 = r1 == CALL_OK ? ask(j, s, &cands[i], 2, &v2) : r1;
            if (r2 == CALL_UNAVAILABLE || r2 == CALL_STOPPED || write_row(j, s, &cands[i], v1, v2) < 0)
                rc = -1; /* no row: the pair comes again next round */
            else
                (*budget)--;
        }
        cand_free(&cands[i]);
    }
    return rc;
}

/* ---------- the thread ---------- */

static void *judge_main(void *arg)
{
    struct judge *j = arg;
    struct cand *cands = calloc(j->max_per_round, sizeof *cands);
    while (cands && !stopping(j)) {
        size_t budget = j->max_per_round;
        if (j->db || open_db(j) == 0) {
            for (size_t k = 0; k < j->nshadows && budget > 0; k++) {
                struct shadow_rt *s = &j->shadows[(j->next_shadow + k) % j->nshadows];
                if (judge_shadow(j, s, &budget, cands) < 0)
                    break;
            }
            j->next_shadow = (j->next_shadow + 1) % j->nshadows; /* no shadow starves the others */
        }
        nap(j, j->interval_ms);
    }
    if (!cands)
        log_error("judge: out of memory");
    free(cands);
    close_db(j);
    return NULL;
}

static void free_judge(struct judge *j)
{
    for (size_t i = 0; j->shadows && i < j->nshadows; i++) {
        free(j->shadows[i].shadow);
        free(j->shadows[i].judge_model);
    }
    free(j->shadows);
    free(j->db_path);
    free(j->host);
    free(j->authority);
    if (j->stop_fd >= 0)
        close(j->stop_fd);
    free(j);
}

struct judge *judge_start(const struct judge_opts *o, char *err, size_t errlen)
{
    if (!o->db_path || !*o->db_path || o->port < 1 || o->port > 65535 || (!o->shadows && o->nshadows) ||
        (!o->rollouts && o->nrollouts) || (!o->experiments && o->nexperiments) ||
        o->nshadows + o->nrollouts + o->nexperiments == 0) {
        snprintf(err, errlen,
                 "judge: needs a store path, a port (1-65535) and at least one shadow, rollout or experiment");
        return NULL;
    }
    for (size_t i = 0; i < o->nrollouts; i++) {
        const struct judge_rollout *r = &o->rollouts[i];
        if (!r->rollout || !*r->rollout || !r->judge_model || !*r->judge_model || !(r->sample >= 0 && r->sample <= 1)) {
            snprintf(err, errlen, "judge: rollout %zu needs a name, a judge model and a sample from 0 to 1", i);
            return NULL;
        }
    }
    for (size_t i = 0; i < o->nexperiments; i++) {
        const struct judge_experiment *e = &o->experiments[i];
        if (!e->experiment || !*e->experiment || !e->judge_model || !*e->judge_model) {
            snprintf(err, errlen, "judge: experiment %zu needs a name and a judge model", i);
            return NULL;
        }
    }
    for (size_t i = 0; i < o->nshadows; i++) {
        const struct judge_shadow *s = &o->shadows[i];
        if (!s->shadow || !*s->shadow || !s->judge_model || !*s->judge_model || !(s->sample >= 0 && s->sample <= 1)) {
            snprintf(err, errlen, "judge: shadow %zu needs a name, a judge model and a sample from 0 to 1", i);
            return NULL;
        }
    }
    struct judge *j = calloc(1, sizeof *j);
    if (!j) {
        snprintf(err, errlen, "judge: out of memory");
        return NULL;
    }
    j->stop_fd = -1;
    /* a wildcard listener is reached on the loopback; "[v6]" loses its brackets */
    const char *h = o->host && *o->host ? o->host : "127.0.0.1";
    size_t hl = strlen(h);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 7 && memcmp(h, "0.0.0.0", 7) == 0) {
        h = "127.0.0.1";
        hl = 9;
    } else if (hl == 2 && memcmp(h, "::", 2) == 0) {
        h = "::1";
        hl = 3;
    }
    j->host = strndup(h, hl);
    j->db_path = strdup(o->db_path);
    snprintf(j->port, sizeof j->port, "%d", o->port);
    bool v6 = j->host && strchr(j->host, ':') != NULL;
    if (j->host && asprintf(&j->authority, "%s%s%s:%s", v6 ? "[" : "", j->host, v6 ? "]" : "", j->port) < 0)
        j->authority = NULL;
    j->interval_ms = o->interval_ms ? o->interval_ms : 1000;
    j->timeout_ms = o->timeout_ms ? o->timeout_ms : 60000;
    j->max_per_round = o->max_per_round ? o->max_per_round : 20;
    if (j->max_per_round > JUDGE_MAX_PER_ROUND)
        j->max_per_round = JUDGE_MAX_PER_ROUND;
    /* shadows first, then rollouts, then experiments: one list the rounds take turns on */
    size_t total = o->nshadows + o->nrollouts + o->nexperiments;
    j->shadows = calloc(total, sizeof *j->shadows);
    bool ok = j->host && j->authority && j->db_path && j->shadows;
    for (size_t i = 0; ok && i < total; i++) {
        bool ex = i >= o->nshadows + o->nrollouts, ro = i >= o->nshadows;
        const char *name, *model;
        double sample = 1; /* an experiment's pairs are a sample already: all are judged */
        if (ex) {
            name = o->experiments[i - o->nshadows - o->nrollouts].experiment;
            model = o->experiments[i - o->nshadows - o->nrollouts].judge_model;
        } else if (ro) {
            name = o->rollouts[i - o->nshadows].rollout;
            model = o->rollouts[i - o->nshadows].judge_model;
            sample = o->rollouts[i - o->nshadows].sample;
        } else {
            name = o->shadows[i].shadow;
            model = o->shadows[i].judge_model;
            sample = o->shadows[i].sample;
        }
        j->nshadows++;
        j->shadows[i].shadow = strdup(name);
        j->shadows[i].judge_model = strdup(model);
        j->shadows[i].sample = sample;
        j->shadows[i].rollout = ro; /* an experiment's pairs are judged like a rollout's */
        j->shadows[i].experiment = ex;
        ok = j->shadows[i].shadow && j->shadows[i].judge_model;
    }
    if (ok)
        j->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!ok || j->stop_fd < 0) {
        snprintf(err, errlen, "judge: %s", ok ? strerror(errno) : "out of memory");
        free_judge(j);
        return NULL;
    }
    /* the thread takes no signals: they belong to the serving process's main thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&j->thread, NULL, judge_main, j);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "judge: cannot start the thread: %s", strerror(rc));
        free_judge(j);
        return NULL;
    }
    return j;
}

void judge_stop(struct judge *j)
{
    if (!j)
        return;
    atomic_store(&j->stopping, true);
    uint64_t one = 1;
    if (write(j->stop_fd, &one, sizeof one) < 0) {
        /* cannot fail on an eventfd below its maximum; the flag is checked anyway */
    }
    pthread_join(j->thread, NULL);
    free_judge(j);
}

void judge_get_stats(struct judge *j, struct judge_stats *s)
{
    s->judged = atomic_load_explicit(&j->judged, memory_order_relaxed);
    s->errors = atomic_load_explicit(&j->errors, memory_order_relaxed);
    s->calls = atomic_load_explicit(&j->calls, memory_order_relaxed);
}
