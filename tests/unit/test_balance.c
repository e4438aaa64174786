/* Unit tests for balance.c: strategies, health, caps, the tried set. */
#include <string.h>

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
    int i = balance_pick(&w, &m, tried, now);
    if (i >= 0)
        balance_release(&be[i]);
    return i;
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
        held[balance_pick(&w, &m, 0, 0)]++;
    CHECK_EQ_INT(held[0], 3);
    CHECK_EQ_INT(held[1], 3);
    CHECK_EQ_INT(held[2], 3);

    /* a backend marked down is skipped until fail_timeout passes */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    backend_report(&be[1], false, 100);
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
    backend_report(&be[0], false, 0);
    CHECK(backend_is_up(&be[0], 0));
    backend_report(&be[0], true, 0);
    backend_report(&be[0], false, 0);
    CHECK(backend_is_up(&be[0], 0));
    backend_report(&be[0], false, 0);
    CHECK(!backend_is_up(&be[0], 0));

    /* the tried set excludes backends; all tried → -1 */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    for (int i = 0; i < 5; i++)
        CHECK_EQ_INT(pick(0x3, 0), 2);
    CHECK_EQ_INT(pick(0x7, 0), -1);

    /* all down → -1 */
    setup(BALANCE_ROUND_ROBIN, NULL, NULL);
    for (int i = 0; i < NB; i++)
        backend_report(&be[i], false, 0);
    CHECK_EQ_INT(pick(0, 10), -1);

    /* concurrency caps: exact, then -2 when every live backend is full */
    static const uint32_t caps[NB] = { 1, 2, 0 };
    setup(BALANCE_ROUND_ROBIN, NULL, caps);
    backend_report(&be[2], false, 0); /* unlimited one is down */
    int got[NB] = { 0 };
    for (int i = 0; i < 3; i++) {
        int k = balance_pick(&w, &m, 0, 1);
        CHECK(k >= 0);
        if (k >= 0)
            got[k]++;
    }
    CHECK_EQ_INT(got[0], 1);
    CHECK_EQ_INT(got[1], 2);
    CHECK_EQ_INT(balance_pick(&w, &m, 0, 1), -2);
    CHECK_EQ_INT(atomic_load(&be[0].inflight), 1);
    CHECK_EQ_INT(atomic_load(&be[1].inflight), 2);
    balance_release(&be[1]);
    CHECK_EQ_INT(balance_pick(&w, &m, 0, 1), 1);

    UNIT_DONE();
}
