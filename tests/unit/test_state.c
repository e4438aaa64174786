/* test_state.c — the shared state segment (state.c): buckets reserve and
 * settle all or nothing, refill, windows, gauges, records that expire, a
 * full stripe, exactness across processes, and a process killed inside a
 * critical section. */
#include "state.h"
#include "unit.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct st_bucket bucket(const char *name, enum st_kind kind, int64_t cap, int64_t period)
{
    struct st_bucket b = { .capacity = cap, .period_ms = period, .kind = kind };
    st_id(b.id, name, "k", 1);
    return b;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int64_t count_fn(int64_t v[4], bool fresh, int64_t now, void *arg)
{
    (void)now;
    if (fresh)
        v[0] = 0;
    v[0]++;
    *(int64_t *)arg = v[0];
    return 200; /* ms */
}

static int inits;
static void region_init(void *p)
{
    inits++;
    *(int *)p = 42;
}

static int64_t die_fn(int64_t v[4], bool fresh, int64_t now, void *arg)
{
    (void)v, (void)fresh, (void)now, (void)arg;
    _exit(0); /* inside the critical section: the stripe's lock is left held */
}

int main(void)
{
    /* the master makes the segment, the serving process maps it */
    int fd = st_segment_create(4096);
    CHECK(fd > 2);
    CHECK(st_segment_usable(fd));
    char e[16];
    snprintf(e, sizeof e, "%d", fd);
    setenv("SHADE_STATE_FD", e, 1);
    CHECK(st_attach() == 0);
    CHECK(st_shared());
    CHECK(getenv("SHADE_STATE_FD") == NULL);

    struct st_result r;
    /* a token bucket: 100 an hour (slow enough that no whole token refills
     * while this test runs, however loaded the machine) */
    struct st_bucket tpm = bucket("tpm", ST_REFILL, 100, 3600000);
    int64_t a60 = 60, a50 = 50;
    st_reserve(&tpm, 1, &a60, &r);
    CHECK(r.ok && r.remaining[0] == 40 && r.failed == -1);
    CHECK(r.reset_ms[0] > 2150000 && r.reset_ms[0] <= 2160000); /* 60 tokens at 36 s each */
    st_reserve(&tpm, 1, &a50, &r);
    CHECK(!r.ok && r.failed == 0 && r.remaining[0] == 40);
    CHECK(r.retry_ms > 355000 && r.retry_ms <= 360001); /* 10 tokens at 100 an hour */
    int64_t used = 20;
    st_settle(&tpm, 1, &a60, &used); /* 40 of 60 come back */
    CHECK(st_peek(&tpm) == 80);
    used = 90; /* an overage is consumed: the balance goes below zero */
    st_reserve(&tpm, 1, &a60, &r);
    CHECK(r.ok && r.remaining[0] == 20);
    st_settle(&tpm, 1, &a60, &used);
    CHECK(st_peek(&tpm) == -10);
    int64_t one = 1;
    st_reserve(&tpm, 1, &one, &r);
    CHECK(!r.ok && r.remaining[0] == 0);
    int64_t big = 101;
    st_reserve(&tpm, 1, &big, &r);
    CHECK(!r.ok && r.retry_ms == -1); /* can never fit */

    /* refill is smooth: 1,000 per 200 ms, half refilled after ~100 ms */
    struct st_bucket fast = bucket("fast", ST_REFILL, 1000, 200);
    int64_t all = 1000;
    st_reserve(&fast, 1, &all, &r);
    CHECK(r.ok && r.remaining[0] == 0);
    sleep_ms(100);
    int64_t p = st_peek(&fast);
    CHECK(p >= 450 && p <= 800);
    sleep_ms(250);
    CHECK(st_peek(&fast) == 1000);

    /* all or nothing over several buckets */
    struct st_bucket pair[2] = { bucket("rpm", ST_REFILL, 10, 60000), bucket("conc", ST_GAUGE, 1, 0) };
    int64_t amt[2] = { 1, 1 };
    st_reserve(pair, 2, amt, &r);
    CHECK(r.ok && r.remaining[0] == 9 && r.remaining[1] == 0);
    st_reserve(pair, 2, amt, &r);
    CHECK(!r.ok && r.failed == 1);
    CHECK(st_peek(&pair[0]) == 9); /* the first bucket was not charged */
    int64_t u2[2] = { 1, 0 };
    st_settle(pair, 2, amt, u2); /* the gauge gets its 1 back whole */
    CHECK(st_peek(&pair[1]) == 1 && st_peek(&pair[0]) == 9);

    /* a window: full again in the next one; a settle from the old window
     * does not touch the new one */
    struct st_bucket day = bucket("budget", ST_WINDOW, 1000, 0);
    day.window = 20000;
    day.window_left_ms = 5000;
    int64_t a700 = 700, u100 = 100;
    st_reserve(&day, 1, &a700, &r);
    CHECK(r.ok && r.remaining[0] == 300 && r.reset_ms[0] == 5000);
    st_reserve(&day, 1, &a700, &r);
    CHECK(!r.ok && r.retry_ms == 5000);
    day.window = 20001;
    st_reserve(&day, 1, &a700, &r);
    CHECK(r.ok && r.remaining[0] == 300);
    day.window = 20000;
    st_settle(&day, 1, &a700, &u100);
    day.window = 20001;
    CHECK(st_peek(&day) == 300);
    st_settle(&day, 1, &a700, &u100);
    CHECK(st_peek(&day) == 900);

    /* a changed capacity keeps what was used */
    struct st_bucket rule = bucket("rule", ST_REFILL, 100, 3600000);
    st_reserve(&rule, 1, &a60, &r);
    rule.capacity = 200;
    CHECK(st_peek(&rule) == 140);
    rule.capacity = 50;
    CHECK(st_peek(&rule) == -10);

    /* records that expire */
    uint64_t id[2];
    st_id(id, "fails", "1.2.3.4", 7);
    int64_t n = 0;
    CHECK(st_update(id, count_fn, &n) && n == 1);
    CHECK(st_update(id, count_fn, &n) && n == 2);
    sleep_ms(250);
    CHECK(st_update(id, count_fn, &n) && n == 1);

    /* a full stripe: a 16-slot stripe takes at most 16 ids (fewer when an
     * earlier entry hashed there); every one refused is counted */
    struct st_stats s0, s1;
    st_stats(&s0);
    CHECK(s0.slots == 4096);
    size_t ok = 0;
    for (uint64_t i = 0; i < 17; i++) {
        uint64_t fid[2] = { 0x100 * (i + 1) + 7, i + 1 }; /* all in stripe 7 */
        ok += st_update(fid, count_fn, &n);
    }
    st_stats(&s1);
    CHECK(ok >= 12 && ok <= 16 && s1.full_errors == s0.full_errors + (17 - ok));

    /* named regions: made and initialized once, the same memory in a child */
    int *reg = st_region("test-region", 1000, region_init);
    CHECK(reg && *reg == 42 && inits == 1);
    CHECK(st_region("test-region", 1000, region_init) == reg && inits == 1);
    CHECK(st_region("test-region", 2000, region_init) == NULL);
    CHECK(st_region("too-big", ST_REGION_BYTES, region_init) == NULL);
    pid_t rk = fork();
    if (rk == 0) {
        int *r2 = st_region("test-region", 1000, region_init);
        _exit(r2 == reg && *r2 == 42 && inits == 1 ? (*r2 = 7, 0) : 1);
    }
    int rst;
    waitpid(rk, &rst, 0);
    CHECK(WIFEXITED(rst) && WEXITSTATUS(rst) == 0 && *reg == 7);

    /* generations */
    uint64_t g = st_gen(2);
    st_bump(2);
    CHECK(st_gen(2) == g + 1);

    /* exact across processes: 4 children race for 20,000 units */
    struct st_bucket race = bucket("race", ST_WINDOW, 20000, 0);
    race.window = 1;
    race.window_left_ms = 60000;
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            int64_t won = 0, x = 1;
            struct st_result rr;
            for (int i = 0; i < 10000; i++) {
                st_reserve(&race, 1, &x, &rr);
                won += rr.ok;
            }
            ssize_t w = write(pfd[1], &won, sizeof won);
            _exit(w == sizeof won ? 0 : 1);
        }
    }
    int64_t total = 0;
    for (int k = 0; k < 4; k++) {
        int64_t won = 0;
        CHECK(read(pfd[0], &won, sizeof won) == sizeof won);
        total += won;
        int st;
        waitpid(kids[k], &st, 0);
    }
    CHECK(total == 20000);
    CHECK(st_peek(&race) == 0);

    /* a process killed while it holds a stripe's lock leaves it usable */
    uint64_t did[2];
    st_id(did, "die", "x", 1);
    pid_t k = fork();
    if (k == 0) {
        st_update(did, die_fn, NULL);
        _exit(1);
    }
    int st;
    waitpid(k, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(st_update(did, count_fn, &n)); /* would hang if the lock were lost */
    st_stats(&s1);
    CHECK(s1.recovered >= 1);

    st_detach();
    /* without a master: a private segment */
    CHECK(st_attach() == 0 && !st_shared());
    st_reserve(&tpm, 1, &a60, &r);
    CHECK(r.ok && r.remaining[0] == 40);
    st_detach();
    close(fd);
    UNIT_DONE();
}
