/* Unit tests for health.c: the active-check and outlier state machines,
 * driven with a fake clock (every call takes now_ms). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway.h"
#include "log.h"
#include "health.h"
#include "unit.h"

#define NB 4

static struct config_backend cb[NB];
static struct backend be[NB];
static struct backend *bep[NB];
static struct config_model cm;
static struct model_rt m;
static struct health h;

static void setup(size_t n, uint32_t consecutive, uint32_t base, uint32_t max, uint32_t pct)
{
    memset(cb, 0, sizeof cb);
    memset(be, 0, sizeof be);
    cm.nbackends = n;
    for (size_t i = 0; i < n; i++) {
        cb[i].name = "b";
        cb[i].max_fails = 1000;
        cb[i].fail_timeout_ms = 1000;
        cb[i].outlier = (struct config_outlier){ true, consecutive, base, max, pct };
        cb[i].health_check =
            (struct config_health_check){ true, "/health", 100, 50, 2, 3 };
        be[i].cfg = &cb[i];
        be[i].model = &cm;
        be[i].id = (uint32_t)i;
        be[i].index = (uint32_t)i;
        bep[i] = &be[i];
    }
    cm.name = "demo";
    m.cfg = &cm;
    m.backends = bep;
    m.n = n;
    CHECK(health_init(&h, be, n, &m, 1) == 0);
    health_install(&h);
}

static void errors(struct backend *b, int n, uint64_t now)
{
    for (int i = 0; i < n; i++)
        backend_report(b, BE_5XX, now);
}

static void test_active_thresholds(void)
{
    setup(2, 5, 1000, 10000, 50);
    struct backend *b = &be[0];
    CHECK(backend_is_up(b, 0));
    CHECK_EQ_STR(health_state(b, 0), "up");
    health_check_result(&h, b, false, 503, 1);
    health_check_result(&h, b, false, 503, 2);
    CHECK(backend_is_up(b, 2));                 /* 2 < unhealthy_threshold 3 */
    health_check_result(&h, b, true, 200, 3);   /* a success resets the streak */
    health_check_result(&h, b, false, 0, 4);
    health_check_result(&h, b, false, 0, 5);
    CHECK(backend_is_up(b, 5));
    health_check_result(&h, b, false, 0, 6);
    CHECK(!backend_is_up(b, 6));
    CHECK_EQ_STR(health_state(b, 6), "unhealthy");
    health_check_result(&h, b, true, 200, 7);
    CHECK(!backend_is_up(b, 7));                /* 1 < healthy_threshold 2 */
    health_check_result(&h, b, false, 0, 8);    /* a failure resets the streak */
    health_check_result(&h, b, true, 200, 9);
    CHECK(!backend_is_up(b, 9));
    health_check_result(&h, b, true, 200, 10);
    CHECK(backend_is_up(b, 10));
    CHECK_EQ_INT(h.hb[0].checks_ok, 4);
    CHECK_EQ_INT(h.hb[0].checks_fail, 6);
    CHECK_EQ_INT(h.hb[0].last_status, 200);
    /* active checks ignore max_ejected_percent: every backend may fail */
    for (int i = 0; i < 3; i++) {
        health_check_result(&h, &be[0], false, 0, 20);
        health_check_result(&h, &be[1], false, 0, 20);
    }
    CHECK(!backend_is_up(&be[0], 20) && !backend_is_up(&be[1], 20));
    health_free(&h);
}

static void test_outlier_threshold_and_reset(void)
{
    setup(2, 3, 1000, 10000, 50);
    struct backend *b = &be[0];
    errors(b, 2, 100);
    backend_report(b, BE_OK, 101);              /* OK resets the count */
    errors(b, 2, 102);
    backend_report(b, BE_429, 103);             /* 429 neither counts nor resets */
    CHECK(backend_is_up(b, 103));
    CHECK_EQ_INT(h.hb[0].consec_errors, 2);
    backend_report(b, BE_TIMEOUT, 104);
    CHECK(!backend_is_up(b, 104));
    CHECK_EQ_STR(health_state(b, 104), "ejected");
    CHECK_EQ_INT(b->ejections, 1);
    CHECK_EQ_INT(h.hb[0].ejections_total, 1);
    CHECK_EQ_INT(b->down_until, 1104);
    CHECK(backend_is_up(b, 1104));              /* re-admitted after base_ejection */
    /* connect failures count too (max_fails is 1000 here, so only outlier) */
    backend_report(b, BE_CONNECT_FAIL, 1200);
    backend_report(b, BE_CONNECT_FAIL, 1201);
    backend_report(b, BE_CONNECT_FAIL, 1202);
    CHECK(!backend_is_up(b, 1202));
    CHECK_EQ_INT(b->down_until, 1202 + 2000);   /* second ejection: doubled */
    health_free(&h);
}

static void test_backoff_doubling_cap_and_forget(void)
{
    setup(2, 1, 1000, 5000, 50);
    struct backend *b = &be[0];
    uint64_t now = 0;
    const uint64_t want[] = { 1000, 2000, 4000, 5000, 5000 };
    for (int i = 0; i < 5; i++) {
        errors(b, 1, now);
        CHECK_EQ_INT(b->ejections, i + 1);
        CHECK_EQ_INT(b->down_until - now, want[i]);
        now = b->down_until;                    /* fails again as soon as it is back */
    }
    /* errors reported while ejected do not stack */
    errors(b, 5, now - 1);
    CHECK_EQ_INT(b->ejections, 5);
    /* a success right after re-admission does not forget the backoff ... */
    backend_report(b, BE_OK, now + 10);
    CHECK_EQ_INT(b->ejections, 5);
    /* ... one after a healthy period as long as the last ejection does */
    backend_report(b, BE_OK, now + 5000);
    CHECK_EQ_INT(b->ejections, 0);
    errors(b, 1, now + 6000);
    CHECK_EQ_INT(b->down_until, now + 6000 + 1000);
    health_free(&h);
}

static void test_max_ejected_percent(void)
{
    /* 4 backends, 50%: at most 2 ejected */
    setup(4, 1, 1000, 10000, 50);
    for (int i = 0; i < 4; i++)
        errors(&be[i], 1, 10);
    int up = 0;
    for (int i = 0; i < 4; i++)
        up += backend_is_up(&be[i], 10);
    CHECK_EQ_INT(up, 2);
    /* backends out for other reasons (active checks) count as out */
    health_free(&h);
    setup(4, 1, 1000, 10000, 50);
    for (int i = 0; i < 3; i++)
        health_check_result(&h, &be[3], false, 0, 1);
    CHECK(!backend_is_up(&be[3], 1));
    errors(&be[0], 1, 10);
    errors(&be[1], 1, 10);
    CHECK(!backend_is_up(&be[0], 10));
    CHECK(backend_is_up(&be[1], 10));           /* would make 3 of 4 out */
    health_free(&h);

    /* 100%: still the last backend taking traffic stays in */
    setup(2, 1, 1000, 10000, 100);
    errors(&be[0], 1, 10);
    errors(&be[1], 1, 10);
    CHECK(!backend_is_up(&be[0], 10));
    CHECK(backend_is_up(&be[1], 10));
    errors(&be[1], 3, 11);
    CHECK(backend_is_up(&be[1], 11));
    CHECK_EQ_INT(be[1].ejections, 0);
    /* once the first is back, the second may go */
    errors(&be[1], 1, 1010);
    CHECK(!backend_is_up(&be[1], 1010));
    CHECK(backend_is_up(&be[0], 1010));
    health_free(&h);

    /* a pool of one is never ejected */
    setup(1, 1, 1000, 10000, 100);
    errors(&be[0], 10, 10);
    CHECK(backend_is_up(&be[0], 10));
    health_free(&h);
}

static void test_outlier_off_keeps_max_fails(void)
{
    setup(2, 1, 1000, 10000, 50);
    cb[0].outlier.enabled = false;
    cb[0].max_fails = 2;
    errors(&be[0], 5, 10);                      /* 5xx never counted without outlier */
    CHECK(backend_is_up(&be[0], 10));
    backend_report(&be[0], BE_CONNECT_FAIL, 20);
    CHECK(backend_is_up(&be[0], 20));
    backend_report(&be[0], BE_CONNECT_FAIL, 21);
    CHECK(!backend_is_up(&be[0], 21));          /* today's max_fails / fail_timeout */
    CHECK(backend_is_up(&be[0], 21 + 1000));
    CHECK_EQ_INT(be[0].ejections, 0);
    health_free(&h);
}

static struct config *load(const char *yaml, char *err, size_t errlen)
{
    char path[] = "/tmp/shade_test_health_XXXXXX";
    int fd = mkstemp(path);
    struct config *c = NULL;
    if (fd < 0)
        return NULL;
    size_t len = strlen(yaml);
    if (write(fd, yaml, len) == (ssize_t)len && config_load(path, &c, err, errlen) < 0)
        c = NULL;
    close(fd);
    unlink(path);
    return c;
}

static void test_config(void)
{
    char err[512] = "";
    struct config *c = load("models:\n"
                            "  - name: m\n"
                            "    backends:\n"
                            "      - url: http://127.0.0.1:9\n"
                            "        health_check: {path: /ready, interval: 250ms, unhealthy_threshold: 4}\n"
                            "        outlier: {}\n"
                            "      - url: http://127.0.0.1:10\n",
                            err, sizeof err);
    CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    const struct config_backend *b = &c->models[0].backends[0];
    CHECK(b->health_check.enabled);
    CHECK_EQ_STR(b->health_check.path, "/ready");
    CHECK_EQ_INT(b->health_check.interval_ms, 250);
    CHECK_EQ_INT(b->health_check.timeout_ms, 2000);
    CHECK_EQ_INT(b->health_check.healthy_threshold, 2);
    CHECK_EQ_INT(b->health_check.unhealthy_threshold, 4);
    CHECK(b->outlier.enabled);
    CHECK_EQ_INT(b->outlier.consecutive_errors, 5);
    CHECK_EQ_INT(b->outlier.base_ejection_ms, 10000);
    CHECK_EQ_INT(b->outlier.max_ejection_ms, 300000);
    CHECK_EQ_INT(b->outlier.max_ejected_percent, 50);
    b = &c->models[0].backends[1];
    CHECK(!b->health_check.enabled);
    CHECK(!b->outlier.enabled);
    config_free(c);

    c = load("models:\n  - name: m\n    backends:\n      - url: http://127.0.0.1:9\n"
             "        health_check: {path: health}\n", err, sizeof err);
    CHECK(c == NULL && strstr(err, "must start with '/'"));
    c = load("models:\n  - name: m\n    backends:\n      - url: http://127.0.0.1:9\n"
             "        outlier: {base_ejection: 10s, max_ejection: 1s}\n", err, sizeof err);
    CHECK(c == NULL && strstr(err, "max_ejection"));
    c = load("models:\n  - name: m\n    backends:\n      - url: http://127.0.0.1:9\n"
             "        outlier: {max_ejected_percent: 101}\n", err, sizeof err);
    CHECK(c == NULL);
    c = load("models:\n  - name: m\n    backends:\n      - url: http://127.0.0.1:9\n"
             "        health_check: {intervall: 1s}\n", err, sizeof err);
    CHECK(c == NULL && strstr(err, "intervall"));
}

int main(void)
{
    log_set_level("error");
    test_config();
    test_active_thresholds();
    test_outlier_threshold_and_reset();
    test_backoff_doubling_cap_and_forget();
    test_max_ejected_percent();
    test_outlier_off_keeps_max_fails();
    UNIT_DONE();
}
