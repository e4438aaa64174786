/* test_stats.c — the report's statistics against values computed by hand
 * (the arithmetic is in the comments), the fast bootstrap against the
 * naive one, and the report's C-level helpers (time parsing, the auto-stop
 * window query, rendering an in-memory store). */
#include "json.h"
#include "report.h"
#include "stats.h"
#include "store.h"
#include "unit.h"

#include <math.h>

#define CHECK_NEAR(a, b, tol) do { double _a = (a), _b = (b); unit_checks++; \
    if (!(fabs(_a - _b) <= (tol))) { unit_failures++; fprintf(stderr, "%s:%d: %s == %.12g, expected %.12g\n", \
    __FILE__, __LINE__, #a, _a, _b); } } while (0)

static void test_wilson(void)
{
    double lo, hi;
    /* 45/50, z = 1.959964, z² = 3.841459:
     *   p = 0.9, denom = 1 + z²/n = 1 + 3.841459/50 = 1.0768292
     *   centre = (p + z²/2n) / denom = (0.9 + 0.0384146) / 1.0768292 = 0.8714610
     *   half = z √(p(1-p)/n + z²/4n²) / denom
     *        = 1.959964 √(0.0018 + 0.000384146) / 1.0768292
     *        = 1.959964 × 0.0467348 / 1.0768292 = 0.0850633
     *   → [0.7863977, 0.9565242] */
    stats_wilson(45, 50, STATS_Z95, &lo, &hi);
    CHECK_NEAR(lo, 0.7863977, 1e-6);
    CHECK_NEAR(hi, 0.9565242, 1e-6);
    /* 0/10: centre = half = (z²/2n)/denom, so lo = 0 and
     * hi = z²/(n + z²) = 3.841459 / 13.841459 = 0.2775328 */
    stats_wilson(0, 10, STATS_Z95, &lo, &hi);
    CHECK_NEAR(lo, 0, 1e-12);
    CHECK_NEAR(hi, 0.2775328, 1e-6);
    /* 10/10: lo = n/(n + z²) = 10 / 13.841459 = 0.7224672, hi = 1 */
    stats_wilson(10, 10, STATS_Z95, &lo, &hi);
    CHECK_NEAR(lo, 0.7224672, 1e-6);
    CHECK_NEAR(hi, 1, 1e-12);
    /* nothing observed: the whole range */
    stats_wilson(0, 0, STATS_Z95, &lo, &hi);
    CHECK(lo == 0 && hi == 1);
}

static void test_percentiles(void)
{
    /* h = (n-1) q; v[floor h] + frac × (next - v[floor h]) */
    double v[] = { 40, 15, 50, 35, 20 };
    stats_sort(v, 5);
    CHECK(v[0] == 15 && v[1] == 20 && v[2] == 35 && v[3] == 40 && v[4] == 50);
    CHECK_NEAR(stats_percentile(v, 5, 0.50), 35, 1e-12);   /* h = 2 → v[2] */
    CHECK_NEAR(stats_percentile(v, 5, 0.95), 48, 1e-12);   /* h = 3.8 → 40 + 0.8 × 10 */
    CHECK_NEAR(stats_percentile(v, 5, 0.99), 49.6, 1e-12); /* h = 3.96 → 40 + 0.96 × 10 */
    CHECK_NEAR(stats_percentile(v, 5, 0.0), 15, 1e-12);
    CHECK_NEAR(stats_percentile(v, 5, 1.0), 50, 1e-12);
    double w[] = { 1, 2, 3, 4 };
    CHECK_NEAR(stats_percentile(w, 4, 0.50), 2.5, 1e-12);  /* h = 1.5 → 2 + 0.5 */
    CHECK_NEAR(stats_percentile(w, 4, 0.95), 3.85, 1e-12); /* h = 2.85 → 3 + 0.85 */
    CHECK_NEAR(stats_percentile(w, 4, 0.99), 3.97, 1e-12); /* h = 2.97 */
    double one = 7;
    CHECK_NEAR(stats_percentile(&one, 1, 0.5), 7, 0);
    CHECK(isnan(stats_percentile(NULL, 0, 0.5)));
}

static void test_tests(void)
{
    /* normal: P(Z > 1.959964) = 0.025 */
    CHECK_NEAR(stats_normal_sf(STATS_Z95), 0.025, 1e-7);
    CHECK_NEAR(stats_normal_sf(0), 0.5, 1e-15);
    /* incomplete beta closed forms: I_x(1,1) = x; I_x(1,b) = 1 - (1-x)^b;
     * I_½(a,a) = ½ */
    CHECK_NEAR(stats_betai(1, 1, 0.3), 0.3, 1e-12);
    CHECK_NEAR(stats_betai(1, 0.5, 1.0 / 3), 1 - sqrt(2.0 / 3), 1e-12);
    CHECK_NEAR(stats_betai(7.5, 7.5, 0.5), 0.5, 1e-12);
    CHECK_NEAR(stats_betai(40000, 40000, 0.5), 0.5, 1e-9);
    /* Student t: df = 1 is Cauchy, P(T > 1) = ½ - atan(1)/π = 0.25;
     * df = 2: P(T > t) = ½ - t / (2 √(2 + t²)) → t = 2: ½ - 2/(2√6) = 0.0917517 */
    CHECK_NEAR(stats_t_sf(1, 1), 0.25, 1e-12);
    CHECK_NEAR(stats_t_sf(2, 2), 0.0917517, 1e-7);
    CHECK_NEAR(stats_t_sf(-2, 2), 1 - 0.0917517, 1e-7);
    /* large df tends to the normal */
    CHECK_NEAR(stats_t_sf(1.959964, 1e7), 0.025, 1e-6);

    /* two proportions, 45/50 against 35/50: pooled p = 80/100 = 0.8,
     * se = √(0.8 × 0.2 × (1/50 + 1/50)) = √0.0064 = 0.08,
     * z = (0.9 - 0.7) / 0.08 = 2.5, p = 2 P(Z > 2.5) = 0.0124193 */
    CHECK_NEAR(stats_two_prop_p(45, 50, 35, 50), 0.0124193, 1e-7);
    CHECK_NEAR(stats_two_prop_p(45, 50, 45, 50), 1, 1e-12);
    CHECK_NEAR(stats_two_prop_p(0, 50, 0, 20), 1, 0); /* pooled rate 0 */
    CHECK(isnan(stats_two_prop_p(1, 0, 1, 2)));

    /* Welch with a constant second sample gives df = n1 - 1:
     * [1,2,3] (mean 2, var 1) vs [5,5,5]: se² = 1/3, t = 3/√(1/3) = 5.196152,
     * df = (1/3)² / ((1/3)²/2) = 2, two-sided p = 1 - t/√(2 + t²)
     * = 1 - 5.196152/5.385165 = 0.0350987 */
    CHECK_NEAR(stats_welch_p(2, 1, 3, 5, 0, 3), 0.0350987, 1e-6);
    /* [1,3] (mean 2, var 2) vs [4,4]: se² = 1, t = 2, df = 1 (Cauchy):
     * p = 1 - (2/π) atan 2 = 0.2951672 */
    CHECK_NEAR(stats_welch_p(2, 2, 2, 4, 0, 2), 0.2951672, 1e-6);
    CHECK_NEAR(stats_welch_p(2, 0, 5, 2, 0, 5), 1, 0);
    CHECK_NEAR(stats_welch_p(2, 0, 5, 3, 0, 5), 0, 0);
    CHECK(isnan(stats_welch_p(2, 1, 1, 3, 1, 5)));
    /* symmetric in the two samples */
    CHECK_NEAR(stats_welch_p(3, 2.5, 5, 6, 10, 5), stats_welch_p(6, 10, 5, 3, 2.5, 5), 1e-15);

    /* sign test, one-sided P(X >= w), X ~ Bin(w + l, ½):
     * 8 wins 2 losses: (C(10,8) + C(10,9) + C(10,10)) / 2^10 = (45+10+1)/1024 = 0.0546875
     * 9 / 1: (10 + 1) / 1024 = 0.0107421875
     * 5 / 5: (252 + 210 + 120 + 45 + 10 + 1) / 1024 = 638/1024 = 0.623046875 */
    CHECK_NEAR(stats_sign_p(8, 2), 0.0546875, 1e-12);
    CHECK_NEAR(stats_sign_p(9, 1), 0.0107421875, 1e-12);
    CHECK_NEAR(stats_sign_p(5, 5), 0.623046875, 1e-12);
    CHECK_NEAR(stats_sign_p(0, 5), 1, 0);
    CHECK_NEAR(stats_sign_p(0, 0), 1, 0);
    CHECK_NEAR(stats_sign_p(5, 0), 1.0 / 32, 1e-12);
    /* the exact sum and the incomplete beta form agree (n = 1000 is summed,
     * the beta form is what n > 2000 uses) */
    CHECK_NEAR(stats_sign_p(530, 470), stats_betai(530, 471, 0.5), 1e-10);
    CHECK_NEAR(stats_sign_p(1000, 1000), stats_betai(1000, 1001, 0.5), 1e-10);
    /* n = 3000 takes the beta path: 1500/1500 is just above ½
     * (P(X >= n/2) = ½ + P(X = n/2)/2 ≈ 0.5 + 0.0073) */
    double p = stats_sign_p(1500, 1500);
    CHECK(p > 0.5 && p < 0.51);
}

static void test_planning(void)
{
    /* all successes, threshold 0.95: Wilson lower = n/(n + z²) >= 0.95
     * ⇔ n >= 0.95 z² / 0.05 = 19 × 3.841459 = 72.99 → 73
     * (73/76.841459 = 0.950008; 72/75.841459 = 0.949349) */
    CHECK_EQ_INT(stats_wilson_n_needed(1.0, 0.95, STATS_Z95), 73);
    CHECK_EQ_INT(stats_wilson_n_needed(0.95, 0.95, STATS_Z95), 0); /* cannot */
    CHECK_EQ_INT(stats_wilson_n_needed(0.90, 0.95, STATS_Z95), 0);
    /* a rate barely above the threshold needs many samples; check the
     * answer is the first n that clears */
    uint64_t n = stats_wilson_n_needed(0.97, 0.95, STATS_Z95);
    double lo, hi;
    stats_wilson(0.97 * (double)n, (double)n, STATS_Z95, &lo, &hi);
    CHECK(lo >= 0.95);
    stats_wilson(0.97 * (double)(n - 1), (double)(n - 1), STATS_Z95, &lo, &hi);
    CHECK(lo < 0.95);
    CHECK(n > 300 && n < 600);
    /* sign test, all wins: p = 2^-n < 0.05 first at n = 5 (1/32; 1/16 fails) */
    CHECK_EQ_INT(stats_sign_n_needed(1.0, 0.05), 5);
    /* share 0.8: n = 10 → 8 wins, p = 0.0547 (fails); n = 11 → round(8.8) = 9
     * wins, p = (55 + 11 + 1)/2048 = 0.0327 (passes); the search doubles to
     * 16 and bisects 8..16 → 12 (pass), 10 (fail), 11 (pass) */
    CHECK_EQ_INT(stats_sign_n_needed(0.8, 0.05), 11);
    CHECK_EQ_INT(stats_sign_n_needed(0.5, 0.05), 0);
    CHECK_EQ_INT(stats_sign_n_needed(0.3, 0.05), 0);
}

static void test_rng(void)
{
    struct stats_rng a, b;
    stats_rng_seed(&a, 42);
    stats_rng_seed(&b, 42);
    int same = 1, below = 1;
    for (int i = 0; i < 1000; i++) {
        if (stats_rng_next(&a) != stats_rng_next(&b))
            same = 0;
        if (stats_rng_below(&a, 7) >= 7)
            below = 0;
        (void)stats_rng_below(&b, 7);
    }
    CHECK(same);
    CHECK(below);
    stats_rng_seed(&b, 43);
    CHECK(stats_rng_next(&a) != stats_rng_next(&b));
    /* every value in [0, 3) appears, roughly uniformly */
    int hist[3] = { 0 };
    for (int i = 0; i < 30000; i++)
        hist[stats_rng_below(&a, 3)]++;
    CHECK(hist[0] > 9500 && hist[1] > 9500 && hist[2] > 9500);
}

/* The textbook bootstrap: copy the drawn pairs, sort, take percentiles. */
static void naive_boot(const double *a, const double *b, size_t n, double q, uint32_t reps,
                       uint64_t seed, double *lo, double *hi)
{
    double *ra = malloc(n * sizeof *ra), *rb = malloc(n * sizeof *rb);
    double *ratios = malloc(reps * sizeof *ratios);
    struct stats_rng r;
    stats_rng_seed(&r, seed);
    for (uint32_t k = 0; k < reps; k++) {
        for (size_t j = 0; j < n; j++) {
            size_t i = (size_t)stats_rng_below(&r, n);
            ra[j] = a[i];
            rb[j] = b[i];
        }
        stats_sort(ra, n);
        stats_sort(rb, n);
        ratios[k] = stats_percentile(rb, n, q) / stats_percentile(ra, n, q);
    }
    stats_sort(ratios, reps);
    *lo = stats_percentile(ratios, reps, 0.025);
    *hi = stats_percentile(ratios, reps, 0.975);
    free(ra);
    free(rb);
    free(ratios);
}

static void test_bootstrap(void)
{
    enum { N = 37 };
    double a[N], b[N], b2[N];
    struct stats_rng r;
    stats_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) {
        a[i] = 100 + (double)stats_rng_below(&r, 400);
        b[i] = a[i] * 1.2 + (double)stats_rng_below(&r, 100) - 50;
        b2[i] = 2 * a[i];
    }
    const double qs[] = { 0.5, 0.95, 0.3, 0.7 };
    struct stats_boot out[4];
    CHECK_EQ_INT(stats_boot_ratio(a, b, N, qs, 4, 500, 99, out), 0);
    /* the counting walk gives exactly the naive numbers for the same draws
     * (both below and above the median, with and without interpolation) */
    for (int k = 0; k < 4; k++) {
        double lo, hi;
        naive_boot(a, b, N, qs[k], 500, 99, &lo, &hi);
        CHECK_NEAR(out[k].lo, lo, 1e-12);
        CHECK_NEAR(out[k].hi, hi, 1e-12);
        CHECK(out[k].lo <= out[k].point && out[k].point <= out[k].hi);
    }
    /* even n: p50 interpolates between two ranks */
    {
        double lo, hi;
        struct stats_boot o1;
        CHECK_EQ_INT(stats_boot_ratio(a, b, N - 1, qs, 1, 300, 5, &o1), 0);
        naive_boot(a, b, N - 1, 0.5, 300, 5, &lo, &hi);
        CHECK_NEAR(o1.lo, lo, 1e-12);
        CHECK_NEAR(o1.hi, hi, 1e-12);
    }
    /* reproducible: same seed, same interval */
    struct stats_boot again[4];
    CHECK_EQ_INT(stats_boot_ratio(a, b, N, qs, 4, 500, 99, again), 0);
    CHECK(again[0].lo == out[0].lo && again[1].hi == out[1].hi);
    /* shadow = 2 × primary: every resample's ratio is 2 */
    CHECK_EQ_INT(stats_boot_ratio(a, b2, N, qs, 2, 200, 1, out), 0);
    CHECK_NEAR(out[0].point, 2, 1e-12);
    CHECK_NEAR(out[0].lo, 2, 1e-12);
    CHECK_NEAR(out[1].hi, 2, 1e-12);
    /* identical legs: ratio 1 */
    CHECK_EQ_INT(stats_boot_ratio(a, a, N, qs, 1, 200, 1, out), 0);
    CHECK(out[0].point == 1 && out[0].lo == 1 && out[0].hi == 1);
    /* one pair: every resample is that pair */
    double x = 10, y = 15;
    CHECK_EQ_INT(stats_boot_ratio(&x, &y, 1, qs, 1, 50, 1, out), 0);
    CHECK_NEAR(out[0].point, 1.5, 1e-12);
    CHECK_NEAR(out[0].lo, 1.5, 1e-12);
    CHECK_EQ_INT(stats_boot_ratio(&x, &y, 0, qs, 1, 50, 1, out), -1);
}

static void test_parse_time(void)
{
    double t = 0;
    CHECK_EQ_INT(report_parse_time("1763719200", 0, &t), 0);
    CHECK_NEAR(t, 1763719200, 0);
    CHECK_EQ_INT(report_parse_time("1763719200.5", 0, &t), 0);
    CHECK_NEAR(t, 1763719200.5, 0);
    /* 2026-01-01T00:00:00Z = 1767225600; Nov 21 is day 304 + 20 = 324 of
     * the year: 1767225600 + 324 × 86400 + 10 × 3600 = 1795255200 */
    CHECK_EQ_INT(report_parse_time("2026-11-21T10:00:00Z", 0, &t), 0);
    CHECK_NEAR(t, 1795255200, 0);
    CHECK_EQ_INT(report_parse_time("2026-11-21 10:00:00", 0, &t), 0); /* no zone: UTC */
    CHECK_NEAR(t, 1795255200, 0);
    CHECK_EQ_INT(report_parse_time("2026-11-21T12:00:00+02:00", 0, &t), 0);
    CHECK_NEAR(t, 1795255200, 0);
    CHECK_EQ_INT(report_parse_time("2026-11-21T09:30-0030", 0, &t), 0);
    CHECK_NEAR(t, 1795255200, 0);
    CHECK_EQ_INT(report_parse_time("2026-11-21T10:00:00.25Z", 0, &t), 0);
    CHECK_NEAR(t, 1795255200.25, 1e-6);
    CHECK_EQ_INT(report_parse_time("2026-11-21", 0, &t), 0);
    CHECK_NEAR(t, 1795255200 - 36000, 0);
    /* ages count back from now */
    CHECK_EQ_INT(report_parse_time("15m", 1000000, &t), 0);
    CHECK_NEAR(t, 1000000 - 900, 0);
    CHECK_EQ_INT(report_parse_time("2h", 1000000, &t), 0);
    CHECK_NEAR(t, 1000000 - 7200, 0);
    CHECK_EQ_INT(report_parse_time("1d", 1000000, &t), 0);
    CHECK_NEAR(t, 1000000 - 86400, 0);
    CHECK_EQ_INT(report_parse_time("1.5h", 1000000, &t), 0);
    CHECK_NEAR(t, 1000000 - 5400, 0);
    CHECK_EQ_INT(report_parse_time("90s", 1000000, &t), 0);
    CHECK_NEAR(t, 1000000 - 90, 0);
    const char *bad[] = { "", "abc", "-5m", "5x", "m", "1.2.3", "1e5", "2026-02-30T00:00:00Z",
                          "2026-11-21T25:00:00Z", "2026-11-21T10:00:00Q", "2026-1-21",
                          "2026-11-21T10", "2026-11-21T10:00:00+2" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (report_parse_time(bad[i], 1000000, &t) == 0) {
            fprintf(stderr, "accepted bad time '%s'\n", bad[i]);
            CHECK(0);
        } else {
            CHECK(1);
        }
    }
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sql: %s\n", msg ? msg : "?");
        CHECK(0);
    }
    sqlite3_free(msg);
}

/* A store in memory: shadow 's' with 10 pairs, the 5 oldest with a failed
 * shadow leg and one (the newest) with none; shadow 't' with 2 pairs. */
static sqlite3 *small_store(void)
{
    sqlite3 *db = NULL;
    CHECK_EQ_INT(sqlite3_open(":memory:", &db), SQLITE_OK);
    exec_sql(db, STORE_SCHEMA_SQL);
    char sql[1024];
    for (int i = 1; i <= 12; i++) {
        const char *shadow = i <= 10 ? "s" : "t";
        snprintf(sql, sizeof sql,
                 "INSERT INTO pairs (id, shadow, request_id, ts, model, endpoint, prompt, prompt_hash) "
                 "VALUES (%d, '%s', 'r', %d, 'm', 'chat', '[{\"role\":\"user\",\"content\":\"<hi>\"}]', 'h');"
                 "INSERT INTO legs (pair_id, leg, streamed, status, latency_ms, response) "
                 "VALUES (%d, 'primary', 0, 200, %d, 'a b c');",
                 i, shadow, 1000 + i, i, 100 + i);
        exec_sql(db, sql);
        if (i != 10) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO legs (pair_id, leg, streamed, status, error, latency_ms, response) "
                     "VALUES (%d, 'shadow', 0, %d, %s, %d, 'a x c');"
                     "INSERT INTO comparisons (pair_id, against, status_agree, exact, rouge_l) "
                     "VALUES (%d, 'shadow', %d, 0, 0.5);",
                     i, i <= 5 ? 503 : 200, i <= 5 ? "'http_5xx'" : "NULL", 120 + i, i, i > 5);
            exec_sql(db, sql);
        }
    }
    return db;
}

/* The live decision fed from the store of 's' (pairs 1..5: the shadow
 * failed, 6..9: it succeeded, 10: no shadow leg): in one piece or in two,
 * the same state; auto-stop's CUSUM inside it (at the bar 0.9 a failure
 * adds log(0.2/0.1) = log 2, a success log(0.8/0.9)); and from the newest
 * start event on. */
static void test_feed(void)
{
    sqlite3 *db = small_store();
    struct verdict_rules r;
    verdict_rules_default(&r);
    struct verdict_state *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    verdict_init(a, &r);
    int64_t last = 0;
    CHECK_EQ_INT(report_feed(db, "s", 0, &last, a), 0);
    CHECK_EQ_INT(last, 10);
    CHECK_EQ_INT(a->n, 10);
    CHECK_EQ_INT(a->succ_worse.a, 6); /* primary ok, shadow failed: 1..5 and 10 */
    CHECK(!a->stop_n);                /* the threshold is log(100000/0.05) = 14.5 */
    CHECK_NEAR(a->cusum.w, 6 * log(2.0) + 4 * log(8.0 / 9), 1e-12);
    /* nothing new: nothing changes */
    CHECK_EQ_INT(report_feed(db, "s", 0, &last, a), 0);
    CHECK_EQ_INT(a->n, 10);
    /* in two pieces: the first 5, then the rest */
    verdict_init(b, &r);
    last = 0;
    exec_sql(db, "CREATE TEMP TABLE hold AS SELECT * FROM pairs WHERE id > 5 AND shadow = 's';"
                 "DELETE FROM pairs WHERE id > 5 AND shadow = 's';");
    CHECK_EQ_INT(report_feed(db, "s", 0, &last, b), 0);
    CHECK_EQ_INT(last, 5);
    exec_sql(db, "INSERT INTO pairs SELECT * FROM hold;");
    CHECK_EQ_INT(report_feed(db, "s", 0, &last, b), 0);
    CHECK_EQ_INT(b->n, 10);
    CHECK(b->cusum.w == a->cusum.w && b->succ_worse.a == a->succ_worse.a &&
          b->succ_ready.log_e_max == a->succ_ready.log_e_max);
    /* a short horizon and a loose bound: log(10/0.5) = 3.0 is crossed at
     * pair 5 (5 log 2 = 3.47), and a crossing is remembered */
    r.stop_horizon = 10;
    r.stop_alpha = 0.5;
    verdict_init(a, &r);
    last = 0;
    CHECK_EQ_INT(report_feed(db, "s", 0, &last, a), 0);
    CHECK_EQ_INT(a->stop_n, 5);
    /* the analysis start: the newest 'start' event */
    double ts = -1;
    CHECK_EQ_INT(report_analysis_start(db, "s", &ts), 0);
    CHECK(ts == 0);
    exec_sql(db, "INSERT INTO events (ts, shadow, kind, detail) VALUES (1002, 's', 'start', ''), "
                 "(1005.5, 's', 'start', 'admin API'), (1007, 's', 'pause', '')");
    CHECK_EQ_INT(report_analysis_start(db, "s", &ts), 0);
    CHECK(ts == 1005.5);
    verdict_init(a, &r);
    last = 0;
    CHECK_EQ_INT(report_feed(db, "s", ts, &last, a), 0);
    CHECK_EQ_INT(a->n, 5); /* pairs 6..10 */
    CHECK(!a->stop_n);
    CHECK_NEAR(a->cusum.w, log(2.0), 1e-12);
    verdict_init(a, &r);
    last = 0;
    CHECK_EQ_INT(report_feed(db, "nope", 0, &last, a), 0);
    CHECK_EQ_INT(a->n, 0);
    free(a);
    free(b);
    sqlite3_close(db);
}

static void test_render(void)
{
    sqlite3 *db = small_store();
    struct report_rules rules;
    report_rules_default(&rules);
    struct report_query q = { .shadow = NULL, .since = 0, .worst = 5, .max_pairs = 0 };
    char err[256];
    const enum report_format fmts[] = { REPORT_TEXT, REPORT_JSON, REPORT_HTML };
    for (int f = 0; f < 3; f++) {
        struct buf out = { 0 };
        CHECK_EQ_INT(report_render(db, &q, &rules, fmts[f], &out, err, sizeof err), 0);
        CHECK(buf_used(&out) > 0);
        if (fmts[f] == REPORT_JSON) {
            struct json_span root, shadows, first, rec, rule;
            CHECK_EQ_INT(json_validate(buf_data(&out), buf_used(&out), &root, NULL), 0);
            CHECK(json_get(&root, "shadows", &shadows) && json_count(&shadows) == 2);
            CHECK(json_index(&shadows, 0, &first) && json_get(&first, "recommendation", &rec) &&
                  json_get(&rec, "rule", &rule) && json_str_eq(&rule, "insufficient_data"));
        }
        if (fmts[f] == REPORT_HTML) /* the prompt's <hi> is escaped */
            CHECK(memmem(buf_data(&out), buf_used(&out), "&lt;hi&gt;", 10) &&
                  !memmem(buf_data(&out), buf_used(&out), "<hi>", 4));
        buf_free(&out);
    }
    /* several formats in one pass: the same documents as one at a time
     * (but for the time each was generated: the first line of the text,
     * the first field of the JSON) */
    struct buf one[2] = { { 0 }, { 0 } }, both[2] = { { 0 }, { 0 } };
    const enum report_format two[2] = { REPORT_TEXT, REPORT_JSON };
    struct buf *outs[2] = { &both[0], &both[1] };
    CHECK_EQ_INT(report_render_formats(db, &q, &rules, two, outs, 2, err, sizeof err), 0);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(report_render(db, &q, &rules, two[k], &one[k], err, sizeof err), 0);
        const char *sep = k ? ",\"query\"" : "\n";
        const char *a = memmem(buf_data(&one[k]), buf_used(&one[k]), sep, strlen(sep));
        const char *b = memmem(buf_data(&both[k]), buf_used(&both[k]), sep, strlen(sep));
        CHECK(a && b);
        if (a && b) {
            size_t la = buf_used(&one[k]) - (size_t)(a - buf_data(&one[k]));
            size_t lb = buf_used(&both[k]) - (size_t)(b - buf_data(&both[k]));
            CHECK(la == lb && memcmp(a, b, la) == 0);
        }
        buf_free(&one[k]);
        buf_free(&both[k]);
    }
    /* an unknown shadow is an error that names the known ones */
    struct buf out = { 0 };
    q.shadow = "zz";
    CHECK_EQ_INT(report_render(db, &q, &rules, REPORT_TEXT, &out, err, sizeof err), -1);
    CHECK(strstr(err, "'zz'") && strstr(err, "'s', 't'"));
    buf_free(&out);
    /* still usable afterwards: the read transaction was closed */
    CHECK(sqlite3_get_autocommit(db));
    q.shadow = "t";
    CHECK_EQ_INT(report_render(db, &q, &rules, REPORT_JSON, &out, err, sizeof err), 0);
    CHECK(strstr(buf_data(&out), "\"pairs\":2,") != NULL);
    buf_free(&out);
    sqlite3_close(db);
}

int main(void)
{
    test_wilson();
    test_percentiles();
    test_tests();
    test_planning();
    test_rng();
    test_bootstrap();
    test_parse_time();
    test_feed();
    test_render();
    UNIT_DONE();
}
