/* balance.c — choosing a backend within a model's pool.
 *
 * Health and in-flight counts are shared atomics; the cursors of round robin
 * and smooth weighted round robin and the PRNG of p2c are per worker (no
 * shared writes).  The in-flight slot is reserved with fetch_add and undone
 * when over the cap, so max_concurrent holds exactly across workers.
 *
 * Strategies:
 *   round_robin        rotate, ignoring weights
 *   weighted           nginx's smooth weighted round robin
 *   least_outstanding  fewest in flight; ties rotate
 *   least_tokens       fewest estimated tokens in flight; ties rotate
 *   p2c_ewma           power of two choices on peak-EWMA latency × (inflight+1)
 *   prefix_affinity    consistent hashing with bounded load on hint->affinity
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"

#include "gateway.h"
#include "rand.h"

/* Peak-EWMA decay time constant (Finagle / linkerd use 10 s too). */
#define EWMA_TAU_MS 10000.0
/* Virtual nodes per unit of weight on the prefix_affinity ring. */
#define RING_VNODES 100u

struct ring_point {
    uint64_t hash;
    uint32_t backend;   /* index in the model */
};

struct balance_ring {
    size_t n;
    struct ring_point pts[];
};

/* ------------------------------------------------------------ helpers */


static uint64_t rng_next(struct worker *w)
{
    /* the state is per worker, so no sharing; unseeded, each worker starts apart */
    if (!w->rng)
        w->rng = RND_GOLDEN ^ (uint64_t)(uintptr_t)w;
    return rnd_xorshift64s(&w->rng);
}

static int popcount64(uint64_t x)
{
    return __builtin_popcountll(x);
}

/* the k-th (0-based) set bit of x */
static int nth_bit(uint64_t x, int k)
{
    while (k-- > 0)
        x &= x - 1;
    return __builtin_ctzll(x);
}

static bool reserve(struct backend *be)
{
    uint32_t cap = be->cfg->max_concurrent;
    int now = atomic_fetch_add_explicit(&be->inflight, 1, memory_order_relaxed);
    if (cap && (uint32_t)now >= cap) {
        atomic_fetch_sub_explicit(&be->inflight, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

static int inflight_of(struct backend *be)
{
    return atomic_load_explicit(&be->inflight, memory_order_relaxed);
}

/* ------------------------------------------------------------ accounting */

void balance_release(struct backend *be, const struct pick_hint *hint)
{
    if (hint && hint->est_tokens)
        atomic_fetch_sub_explicit(&be->outstanding_tokens, hint->est_tokens, memory_order_relaxed);
    atomic_fetch_sub_explicit(&be->inflight, 1, memory_order_relaxed);
}

/* Peak EWMA (Finagle's PeakEwma, linkerd's peak_ewma): a latency above the
 * current estimate replaces it at once (react to slowdowns immediately);
 * otherwise the estimate decays towards the observation with weight
 * w = exp(-Δt/τ), τ = 10 s, Δt = time since the previous observation.
 * 0 means "never observed", so a latency is stored as at least 1 µs.
 *
 * Lock-free: plain relaxed loads and stores.  Two workers observing the same
 * backend at the same moment may lose one of the two updates; that only
 * drops one sample of a smoothed estimate and is accepted. */
void balance_observe(struct backend *be, uint64_t latency_us, uint64_t now_ms)
{
    if (latency_us == 0)
        latency_us = 1;
    uint64_t cur = atomic_load_explicit(&be->ewma_us, memory_order_relaxed);
    uint64_t stamp = atomic_load_explicit(&be->ewma_stamp_ms, memory_order_relaxed);
    uint64_t next;
    if (cur == 0 || latency_us >= cur) {
        next = latency_us;
    } else {
        double dt = now_ms > stamp ? (double)(now_ms - stamp) : 0.0;
        double wgt = exp(-dt / EWMA_TAU_MS);
        double v = (double)cur * wgt + (double)latency_us * (1.0 - wgt);
        next = (uint64_t)(v + 0.5);
        if (next < 1)
            next = 1;
    }
    atomic_store_explicit(&be->ewma_us, next, memory_order_relaxed);
    if (now_ms > stamp)
        atomic_store_explicit(&be->ewma_stamp_ms, now_ms, memory_order_relaxed);
}

/* ------------------------------------------------------------ the ring */

static int cmp_point(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->backend < y->backend ? -1 : x->backend > y->backend;
}

/* RING_VNODES × weight points per backend, placed by hashing the backend's
 * name (or its position when unnamed) with the vnode number, so a backend's
 * points do not depend on the others: ejecting one moves only its keys. */
int balance_model_init(struct model_rt *m)
{
    m->ring = NULL;
    if (m->cfg->balance != BALANCE_PREFIX_AFFINITY || m->n == 0)
        return 0;
    size_t total = 0;
    for (size_t i = 0; i < m->n; i++) {
        uint32_t wt = m->backends[i]->cfg->weight;
        total += RING_VNODES * (wt ? wt : 1);
    }
    struct balance_ring *r = malloc(sizeof *r + total * sizeof r->pts[0]);
    if (!r)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        const struct config_backend *cb = m->backends[i]->cfg;
        uint64_t base = cb->name ? rnd_fnv1a64(RND_FNV1A64_INIT, cb->name, strlen(cb->name)) : rnd_mix64(0x5348414445ull + i);
        uint32_t nv = RING_VNODES * (cb->weight ? cb->weight : 1);
        for (uint32_t v = 0; v < nv; v++) {
            r->pts[k].hash = rnd_mix64(base ^ rnd_mix64((uint64_t)v + 1));
            r->pts[k].backend = (uint32_t)i;
            k++;
        }
    }
    r->n = total;
    qsort(r->pts, r->n, sizeof r->pts[0], cmp_point);
    m->ring = r;
    return 0;
}

void balance_model_free(struct model_rt *m)
{
    free(m->ring);
    m->ring = NULL;
}

/* first point with hash >= h, wrapping to 0 */
static size_t ring_find(const struct balance_ring *r, uint64_t h)
{
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->pts[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->n ? 0 : lo;
}

/* Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam
 * 2018; Envoy's / HAProxy's hash-balance-factor): walk clockwise from the
 * key and take the first candidate whose in-flight count is below
 * ceil(load_factor × (total in flight + 1) / eligible backends). */
static int pick_affinity(const struct model_rt *m, uint64_t eligible, uint64_t cand, uint64_t key)
{
    const struct balance_ring *r = m->ring;
    uint64_t total = 0;
    for (size_t i = 0; i < m->n; i++)
        if (eligible & (1ull << i))
            total += (uint64_t)inflight_of(m->backends[i]);
    double lf = m->cfg->load_factor >= 1.0 ? m->cfg->load_factor : 1.0;
    uint64_t bound = (uint64_t)ceil(lf * (double)(total + 1) / (double)popcount64(eligible));
    uint64_t seen = 0;
    int first = -1;
    size_t at = ring_find(r, rnd_mix64(key));
    for (size_t k = 0; k < r->n && (seen & cand) != cand; k++) {
        uint32_t b = r->pts[(at + k) % r->n].backend;
        if (!(cand & (1ull << b)) || (seen & (1ull << b)))
            continue;
        seen |= 1ull << b;
        if (first < 0)
            first = (int)b;
        if ((uint64_t)inflight_of(m->backends[b]) < bound)
            return (int)b;
    }
    return first; /* only under a race: everyone moved past the bound */
}

/* ------------------------------------------------------------ picking */

/* fewest of some load measure; ties rotate so equal backends share load */
static int pick_least(struct worker *w, const struct model_rt *m, uint64_t cand, bool tokens)
{
    uint32_t start = w->rr[m->index]++;
    int best = -1;
    uint64_t bestq = 0;
    for (size_t k = 0; k < m->n; k++) {
        size_t i = (start + k) % m->n;
        if (!(cand & (1ull << i)))
            continue;
        struct backend *be = m->backends[i];
        uint64_t q = tokens ? atomic_load_explicit(&be->outstanding_tokens, memory_order_relaxed)
                            : (uint64_t)inflight_of(be);
        if (best < 0 || q < bestq) {
            best = (int)i;
            bestq = q;
        }
    }
    return best;
}

/* Power of two choices: two distinct random candidates, the lower
 * peak-EWMA × (in flight + 1) wins.  A backend never observed borrows the
 * lowest estimate among the candidates that were (1 µs when none was), so a
 * new or recovered backend is tried promptly without being flooded. */
static int pick_p2c(struct worker *w, const struct model_rt *m, uint64_t cand)
{
    int nc = popcount64(cand);
    if (nc == 1)
        return __builtin_ctzll(cand);
    uint64_t r = rng_next(w);
    int a = (int)((r >> 32) % (uint64_t)nc);
    int b = (int)((r & 0xffffffffu) % (uint64_t)(nc - 1));
    if (b >= a)
        b++;
    int idx[2] = { nth_bit(cand, a), nth_bit(cand, b) };
    uint64_t lat[2];
    uint64_t minlat = 0;
    for (int j = 0; j < 2; j++) {
        lat[j] = atomic_load_explicit(&m->backends[idx[j]]->ewma_us, memory_order_relaxed);
        if (lat[j] && (!minlat || lat[j] < minlat))
            minlat = lat[j];
    }
    double cost[2];
    for (int j = 0; j < 2; j++) {
        uint64_t l = lat[j] ? lat[j] : (minlat ? minlat : 1);
        cost[j] = (double)l * (double)(inflight_of(m->backends[idx[j]]) + 1);
    }
    return cost[1] < cost[0] ? idx[1] : idx[0];
}

int balance_pick(struct worker *w, const struct model_rt *m, uint64_t tried, uint64_t now_ms,
                 const struct pick_hint *hint)
{
    size_t n = m->n;
    uint64_t eligible = 0;
    for (size_t i = 0; i < n; i++)
        if (!(tried & (1ull << i)) && backend_is_up(m->backends[i], now_ms))
            eligible |= 1ull << i;
    if (!eligible)
        return -1;
    uint64_t full = 0;
    /* pick, try to reserve; a backend at its cap is skipped and we pick again */
    while (eligible & ~full) {
        uint64_t cand = eligible & ~full;
        int best = -1;
        switch (m->cfg->balance) {
        case BALANCE_ROUND_ROBIN: {
            uint32_t start = w->rr[m->index]++;
            for (size_t k = 0; k < n; k++) {
                size_t i = (start + k) % n;
                if (cand & (1ull << i)) {
                    best = (int)i;
                    break;
                }
            }
            break;
        }
        case BALANCE_WEIGHTED: {
            /* nginx's smooth weighted round robin: spreads picks evenly */
            int64_t total = 0, bestw = 0;
            for (size_t i = 0; i < n; i++) {
                if (!(cand & (1ull << i)))
                    continue;
                int64_t *cur = &w->wrr[m->backends[i]->id];
                *cur += m->backends[i]->cfg->weight;
                total += m->backends[i]->cfg->weight;
                if (best < 0 || *cur > bestw) {
                    best = (int)i;
                    bestw = *cur;
                }
            }
            w->wrr[m->backends[best]->id] -= total;
            break;
        }
        case BALANCE_LEAST_OUTSTANDING:
            best = pick_least(w, m, cand, false);
            break;
        case BALANCE_LEAST_TOKENS:
            best = pick_least(w, m, cand, true);
            break;
        case BALANCE_P2C_EWMA:
            best = pick_p2c(w, m, cand);
            break;
        case BALANCE_PREFIX_AFFINITY:
            if (hint && hint->affinity && m->ring)
                best = pick_affinity(m, eligible, cand, hint->affinity);
            else
                best = pick_least(w, m, cand, false);
            break;
        }
        if (best < 0)
            break;
        if (reserve(m->backends[best])) {
            if (hint && hint->est_tokens)
                atomic_fetch_add_explicit(&m->backends[best]->outstanding_tokens, hint->est_tokens,
                                          memory_order_relaxed);
            return best;
        }
        full |= 1ull << best;
    }
    return -2;
}
