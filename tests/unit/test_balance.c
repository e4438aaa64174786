/* Unit tests for balance.c: strategies, health, caps, the tried set. */
#include <math.h>
#include <string.h>

#include "balance.h"
#include "gateway.h"
#include "unit.h"

#define NB 3

static struct config_backend cb[NB];
static struct backend be[NB];
static struct backend *bep[NB];
static struct config_model cm;
static struct model_rt m;
static uint32_t rr[1];
static int64_t wrr[NB];
static struct worker w;
static const struct pick_hint nohint;

static void setup(enum balance_kind kind, const uint32_t *weights, const uint32_t *caps)
{
    memset(cb, 0, sizeof cb);
    memset(be, 0, sizeof be);
    memset(wrr, 0, sizeof wrr);
    rr[0] = 0;
    cm.balance = kind;
    cm.nbackends = NB;
    for (int i = 0; i < NB; i++) {
        cb[i].weight = weights ? weights[i] : 1;
        cb[i].max_concurrent = caps ? caps[i] : 0;
        cb[i].max_fails = 1;
        cb[i].fail_timeout_ms = 1000;
        be[i].cfg = &cb[i];
        be[i].id = (uint32_t)i;
        be[i].index = (uint32_t)i;
        bep[i] = &be[i];
    }
    m.cfg = &cm;
    m.index = 0;
    m.backends = bep;
    m.n = NB;
    w.rr = rr;
    w.wrr = wrr;
}

/* pick and immediately release: the sequence a strategy produces */
static int pick(uint64_t tried, uint64_t now)
{
    int i = balance_pick(&w, &m, tried, now, &nohint);
    if (i >= 0)
        balance_release(&be[i], &nohint);
    return i;
}

static int pick_h(uint64_t tried, uint64_t now, const struct pick_hint *h)
{
    int i = balance_pick(&w, &m, tried, now, h);
    if (i >= 0)
        balance_release(&be[i], h);
    return i;
}

/* p2c_ewma under a closed loop of 16 requests: the oldest finishes, a new
 * one is picked.  Returns the picks per backend. */
static void p2c_closed_loop(int iters, int counts[NB])
{
    int held[16];
    int nheld = 0, head = 0;
    for (int i = 0; i < iters; i++) {
        if (nheld == 16) {
            balance_release(&be[held[head]], &nohint);
            nheld--;
            int k = balance_pick(&w, &m, 0, 1, &nohint);
            CHECK(k >= 0);
            if (k < 0)
                return;
            counts[k]++;
            held[head] = k;
            head = (head + 1) % 16;
            nheld++;
        } else {
            int k = balance_pick(&w, &m, 0, 1, &nohint);
            CHECK(k >= 0);
            if (k < 0)
                return;
            held[(head + nheld) % 16] = k;
            nheld++;
        }
    }
    for (int i = 0; i < nheld; i++)
        balance_release(&be[held[(head + i) % 16]], &nohint);
}

static void test_p2c_ewma(void)
{
    /* peak EWMA against hand-computed values (τ = 10 s) */
    setup(BALANCE_P2C_EWMA, NULL, NULL);
    balance_observe(&be[0], 1000, 1000);
    CHECK_EQ_INT(atomic_load(&be[0].ewma_us), 1000);   /* first sample: taken as is */
    balance_observe(&be[0], 5000, 2000);
    CHECK_EQ_INT(atomic_load(&be[0].ewma_us), 5000);   /* peak: jumps up at once */
    balance_observe(&be[0], 1000, 12000);
    /* 5000·e^-1 + 1000·(1 - e^-1) = 2471.5 */
    CHECK_EQ_INT(atomic_load(&be[0].ewma_us), (long long)(5000 * exp(-1.0) + 1000 * (1 - exp(-1.0)) + 0.5));
    CHECK_EQ_INT(atomic_load(&be[0].ewma_us), 2472);
    CHECK_EQ_INT(atomic_load(&be[0].ewma_stamp_ms), 12000);
    balance_observe(&be[0], 1000, 12000);              /* Δt = 0: no decay */
    CHECK_EQ_INT(atomic_load(&be[0].ewma_us), 2472);
    balance_observe(&be[0], 2000, 17000);              /* 2472·e^-0.5 + 2000·(1 - e^-0.5) */
    CHECK_EQ_INT(atomic_load(&be[0].ewma_us), 2286);
    balance_observe(&be[0], 0, 18000);                 /* a zero latency is stored as 1 µs */
    CHECK(atomic_load(&be[0].ewma_us) >= 1);

    /* a never-observed backend still gets tried */
    setup(BALANCE_P2C_EWMA, NULL, NULL);
    balance_observe(&be[0], 10000, 1);
    balance_observe(&be[1], 10000, 1);
    int seen2 = 0;
    for (int i = 0; i < 100; i++)
        seen2 += pick(0, 1) == 2;
    CHECK(seen2 > 0);

    /* fast backends (10 ms) win most picks, the slow one (30 ms) still gets
     * some once the fast ones queue up */
    setup(BALANCE_P2C_EWMA, NULL, NULL);
    balance_observe(&be[0], 10000, 1);
    balance_observe(&be[1], 10000, 1);
    balance_observe(&be[2], 30000, 1);
    int counts[NB] = { 0 };
    p2c_closed_loop(3000, counts);
    CHECK(counts[2] > 0);
    CHECK(counts[2] * 2 < counts[0]);
    CHECK(counts[2] * 2 < counts[1]);
    CHECK(counts[0] + counts[1] + counts[2] > 2900);
    for (int i = 0; i < NB; i++)
        CHECK_EQ_INT(atomic_load(&be[i].inflight), 0);
    /* pick-and-release (nothing queued): only the fast ones */
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < 300; i++)
        counts[pick(0, 1)]++;
    CHECK_EQ_INT(counts[2], 0);
    CHECK(counts[0] > 50 && counts[1] > 50);
    /* tried set and caps still hold */
    for (int i = 0; i < 20; i++)
        CHECK_EQ_INT(pick(0x3, 1), 2);
    CHECK_EQ_INT(pick(0x7, 1), -1);
}

static void test_least_tokens(void)
{
    setup(BALANCE_LEAST_TOKENS, NULL, NULL);
    struct pick_hint big = { .est_tokens = 10000 }, small = { .est_tokens = 10 }, mid = { .est_tokens = 5000 };
    /* backend 0: one big request; 1: three small ones; 2: two middling */
    atomic_store(&be[0].inflight, 1);
    atomic_store(&be[0].outstanding_tokens, big.est_tokens);
    atomic_store(&be[1].inflight, 3);
    atomic_store(&be[1].outstanding_tokens, 3 * small.est_tokens);
    atomic_store(&be[2].inflight, 2);
    atomic_store(&be[2].outstanding_tokens, 2 * mid.est_tokens);
    struct pick_hint h = { .est_tokens = 100 };
    int k = balance_pick(&w, &m, 0, 0, &h);
    CHECK_EQ_INT(k, 1); /* most requests, fewest tokens */
    CHECK_EQ_INT(atomic_load(&be[1].outstanding_tokens), 130);
    CHECK_EQ_INT(atomic_load(&be[1].inflight), 4);
    balance_release(&be[1], &h);
    CHECK_EQ_INT(atomic_load(&be[1].outstanding_tokens), 30);
    CHECK_EQ_INT(atomic_load(&be[1].inflight), 3);
    /* excluding it: backends 0 and 2 tie at 10000 tokens; ties rotate */
    int got[NB] = { 0 };
    for (int i = 0; i < 10; i++)
        got[pick_h(0x2, 0, &h)]++;
    CHECK(got[0] > 0 && got[2] > 0);
    CHECK_EQ_INT(got[1], 0);
    /* holding picks: tokens balance out, not counts */
    setup(BALANCE_LEAST_TOKENS, NULL, NULL);
    for (int i = 0; i < 3; i++)
        CHECK(balance_pick(&w, &m, 0, 0, &big) >= 0);   /* one big each */
    int held[NB] = { 0 };
    for (int i = 0; i < 30; i++) {
        int j = balance_pick(&w, &m, 0, 0, &small);
        CHECK(j >= 0);
        if (j >= 0)
            held[j]++;
    }
    CHECK_EQ_INT(held[0] + held[1] + held[2], 30);
    CHECK_EQ_INT(held[0], 10);
    CHECK_EQ_INT(held[1], 10);
    CHECK_EQ_INT(held[2], 10);
    /* a backend with many small requests still beats one big one */
    setup(BALANCE_LEAST_TOKENS, NULL, NULL);
    balance_pick(&w, &m, 0x6, 0, &big);                 /* backend 0: 10000 */
    for (int i = 0; i < 20; i++)
        balance_pick(&w, &m, 0x5, 0, &small);           /* backend 1: 200 */
    for (int i = 0; i < 5; i++)
        balance_pick(&w, &m, 0x3, 0, &mid);             /* backend 2: 25000 */
    CHECK_EQ_INT(pick_h(0, 0, &h), 1);
    CHECK_EQ_INT(atomic_load(&be[1].outstanding_tokens), 200);
}

static void test_prefix_affinity(void)
{
    setup(BALANCE_PREFIX_AFFINITY, NULL, NULL);
    cm.load_factor = 1.25;
    CHECK_EQ_INT(balance_model_init(&m), 0);
    CHECK(m.ring != NULL);

    /* the same key: the same backend, every time */
    struct pick_hint h = { .affinity = 0x1234567890abcdefull, .est_tokens = 10 };
    int first = pick_h(0, 0, &h);
    CHECK(first >= 0);
    int same = 0;
    for (int i = 0; i < 1000; i++)
        same += pick_h(0, 0, &h) == first;
    CHECK_EQ_INT(same, 1000);

    /* keys spread over the backends */
    static int map[1000];
    int share[NB] = { 0 };
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "session-%d", i);
        uint64_t x = 0xcbf29ce484222325ull;
        for (int j = 0; j < len; j++)
            x = (x ^ (unsigned char)key[j]) * 0x100000001b3ull;
        struct pick_hint k = { .affinity = x ? x : 1 };
        map[i] = pick_h(0, 0, &k);
        CHECK(map[i] >= 0);
        if (map[i] >= 0)
            share[map[i]]++;
    }
    for (int i = 0; i < NB; i++)
        CHECK(share[i] >= 200 && share[i] <= 470);

    /* backend 1 down: only its keys move */
    backend_report(&be[1], BE_CONNECT_FAIL, 0);
    int moved = 0, wrong = 0;
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "session-%d", i);
        uint64_t x = 0xcbf29ce484222325ull;
        for (int j = 0; j < len; j++)
            x = (x ^ (unsigned char)key[j]) * 0x100000001b3ull;
        struct pick_hint k = { .affinity = x ? x : 1 };
        int now = pick_h(0, 10, &k);
        if (map[i] == 1)
            moved += now != 1 && now >= 0;
        else
            wrong += now != map[i];
    }
    CHECK_EQ_INT(moved, share[1]);
    CHECK_EQ_INT(wrong, 0);

    /* bounded load: a key stays on its backend while it is within
     * ceil(1.25 × (total + 1) / n), and spills past it */
    setup(BALANCE_PREFIX_AFFINITY, NULL, NULL);
    int home = pick_h(0, 0, &h);
    CHECK(home >= 0);
    if (home < 0)
        return;
    for (int i = 0; i < NB; i++)
        atomic_store(&be[i].inflight, 2);       /* total 6: bound ceil(1.25·7/3) = 3 */
    CHECK_EQ_INT(pick_h(0, 0, &h), home);
    atomic_store(&be[home].inflight, 3);        /* total 7: bound ceil(1.25·8/3) = 4 */
    CHECK_EQ_INT(pick_h(0, 0, &h), home);
    atomic_store(&be[home].inflight, 4);        /* total 8: bound ceil(1.25·9/3) = 4 */
    int spill = pick_h(0, 0, &h);
    CHECK(spill >= 0 && spill != home);
    CHECK_EQ_INT(pick_h(0, 0, &h), spill);      /* spills consistently: next on the ring */
    atomic_store(&be[home].inflight, 2);
    CHECK_EQ_INT(pick_h(0, 0, &h), home);       /* and comes back */
    for (int i = 0; i < NB; i++)
        atomic_store(&be[i].inflight, 0);
    /* a hot key held open: its backend fills to the bound, the rest spills */
    int got[NB] = { 0 };
    for (int i = 0; i < 30; i++) {
        int k = balance_pick(&w, &m, 0, 0, &h);
        CHECK(k >= 0);
        if (k >= 0)
            got[k]++;
    }
    CHECK(got[home] >= 10 && got[home] <= 13);  /* ceil(1.25·30/3) = 13 */
    CHECK(got[0] + got[1] + got[2] == 30);
    CHECK(got[0] > 0 && got[1] > 0 && got[2] > 0);

    /* no affinity: least outstanding */
    setup(BALANCE_PREFIX_AFFINITY, NULL, NULL);
    atomic_store(&be[0].inflight, 5);
    atomic_store(&be[1].inflight, 1);
    atomic_store(&be[2].inflight, 7);
    CHECK_EQ_INT(pick(0, 0), 1);
    /* caps: a full home backend is skipped */
    static const uint32_t caps[NB] = { 1, 1, 1 };
    setup(BALANCE_PREFIX_AFFINITY, NULL, caps);
    int a = balance_pick(&w, &m, 0, 0, &h), b = balance_pick(&w, &m, 0, 0, &h), c = balance_pick(&w, &m, 0, 0, &h);
    CHECK(a >= 0 && b >= 0 && c >= 0 && a != b && b != c && a != c);
    CHECK_EQ_INT(balance_pick(&w, &m, 0, 0, &h), -2);
    balance_model_free(&m);
    CHECK(m.ring == NULL);
}

int main(void)
{
    /* round robin: each in turn */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    int seq[6];
    for (int i = 0; i < 6; i++)
        seq[i] = pick(0, 0);
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(seq[i], i % 3);

    /* smooth weighted round robin 5:1:1 gives nginx's sequence a a b a c a a */
    static const uint32_t w511[NB] = { 5, 1, 1 };
    setup(BALANCE_WEIGHTED, w511, NULL);
    static const int expect[7] = { 0, 0, 1, 0, 2, 0, 0 };
    for (int i = 0; i < 7; i++)
        CHECK_EQ_INT(pick(0, 0), expect[i]);
    int counts[NB] = { 0 };
    for (int i = 0; i < 700; i++)
        counts[pick(0, 0)]++;
    CHECK_EQ_INT(counts[0], 500);
    CHECK_EQ_INT(counts[1], 100);
    CHECK_EQ_INT(counts[2], 100);

    /* least outstanding: the backend with the fewest in flight */
    setup(BALANCE_LEAST_OUTSTANDING, NULL, NULL);
    atomic_store(&be[0].inflight, 5);
    atomic_store(&be[1].inflight, 2);
    atomic_store(&be[2].inflight, 7);
    CHECK_EQ_INT(pick(0, 0), 1);
    /* reservations count: holding picks spreads them */
    atomic_store(&be[0].inflight, 0);
    atomic_store(&be[1].inflight, 0);
    atomic_store(&be[2].inflight, 0);
    int held[NB] = { 0 };
    for (int i = 0; i < 9; i++)
        held[balance_pick(&w, &m, 0, 0, &nohint)]++;
    CHECK_EQ_INT(held[0], 3);
    CHECK_EQ_INT(held[1], 3);
    CHECK_EQ_INT(held[2], 3);

    /* a backend marked down is skipped until fail_timeout passes */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    backend_report(&be[1], BE_CONNECT_FAIL, 100);
    CHECK(!backend_is_up(&be[1], 100));
    for (int i = 0; i < 10; i++)
        CHECK(pick(0, 500) != 1);
    CHECK(backend_is_up(&be[1], 1100));
    int seen1 = 0;
    for (int i = 0; i < 6; i++)
        seen1 += pick(0, 1100) == 1;
    CHECK_EQ_INT(seen1, 2);

    /* max_fails: two failures needed when max_fails is 2; success resets */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    cb[0].max_fails = 2;
    backend_report(&be[0], BE_CONNECT_FAIL, 0);
    CHECK(backend_is_up(&be[0], 0));
    backend_report(&be[0], BE_OK, 0);
    backend_report(&be[0], BE_CONNECT_FAIL, 0);
    CHECK(backend_is_up(&be[0], 0));
    backend_report(&be[0], BE_CONNECT_FAIL, 0);
    CHECK(!backend_is_up(&be[0], 0));

    /* the tried set excludes backends; all tried → -1 */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pick(0x3, 0), 2);
    CHECK_EQ_INT(pick(0x7, 0), -1);

    /* all down → -1 */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    for (int i = 0; i < NB; i++)
        backend_report(&be[i], BE_CONNECT_FAIL, 0);
    CHECK_EQ_INT(pick(0, 10), -1);

    /* concurrency caps: exact, then -2 when every live backend is full */
    static const uint32_t caps[NB] = { 1, 2, 0 };
    setup(BALANCE_ROUND_ROBIN, NULL, caps);
    backend_report(&be[2], BE_CONNECT_FAIL, 0); /* unlimited one is down */
    int got[NB] = { 0 };
    for (int i = 0; i < 3; i++) {
        int k = balance_pick(&w, &m, 0, 1, &nohint);
        CHECK(k >= 0);
        if (k >= 0)
            got[k]++;
    }
    CHECK_EQ_INT(got[0], 1);
    CHECK_EQ_INT(got[1], 2);
    CHECK_EQ_INT(balance_pick(&w, &m, 0, 1, &nohint), -2);
    CHECK_EQ_INT(atomic_load(&be[0].inflight), 1);
    CHECK_EQ_INT(atomic_load(&be[1].inflight), 2);
    balance_release(&be[1], &nohint);
    CHECK_EQ_INT(balance_pick(&w, &m, 0, 1, &nohint), 1);

    test_p2c_ewma();
    test_least_tokens();
    test_prefix_affinity();
    UNIT_DONE();
}
