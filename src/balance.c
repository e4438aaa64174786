/* balance.c — choosing a backend within a model's pool.
 *
 * Health and in-flight counts are shared atomics; the cursors of round robin
 * and smooth weighted round robin are per worker (no shared writes).  The
 * in-flight slot is reserved with fetch_add and undone when over the cap, so
 * max_concurrent holds exactly across workers.
 */
#include <stdatomic.h>

#include "gateway.h"

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

void balance_release(struct backend *be)
{
    atomic_fetch_sub_explicit(&be->inflight, 1, memory_order_relaxed);
}

int balance_pick(struct worker *w, const struct model_rt *m, uint64_t tried, uint64_t now_ms)
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
        case BALANCE_LEAST_OUTSTANDING: {
            /* fewest in flight; ties rotate so equal backends share load */
            uint32_t start = w->rr[m->index]++;
            int bestq = 0;
            for (size_t k = 0; k < n; k++) {
                size_t i = (start + k) % n;
                if (!(cand & (1ull << i)))
                    continue;
                int q = atomic_load_explicit(&m->backends[i]->inflight, memory_order_relaxed);
                if (best < 0 || q < bestq) {
                    best = (int)i;
                    bestq = q;
                }
            }
            break;
        }
        }
        if (best < 0)
            break;
        if (reserve(m->backends[best]))
            return best;
        full |= 1ull << best;
    }
    return -2;
}
