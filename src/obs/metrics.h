/* metrics.h — per-worker counters, summed when /metrics is scraped.
 *
 * Each worker writes only its own shard (relaxed atomic load+store, which is
 * a plain add on x86: no lock, no contended cache line on the hot path); the
 * scrape reads every shard.  Label sets are fixed at start-up from the
 * config: a series is an index into flat arrays.
 */
#ifndef SHADE_METRICS_H
#define SHADE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct config;

#define MET_NBUCKETS 17   /* + Inf */
/* bucket bounds, in the family's unit (seconds, or tokens) */
extern const double met_buckets[MET_NBUCKETS];         /* latencies: 5 ms .. 10 min */
extern const double met_buckets_tpot[MET_NBUCKETS];    /* time per output token: 1 ms .. 2 s */
extern const double met_buckets_overhead[MET_NBUCKETS];/* gateway overhead: 5 µs .. 1 s */
extern const double met_buckets_tokens[MET_NBUCKETS];  /* input tokens: 64 .. 4M */

struct met_hist {
    _Atomic uint64_t b[MET_NBUCKETS + 1];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;   /* sum in µs (time) or in units (tokens) */
};

/* Who a request (or leg) was for: the model the client asked for
 * (primary), a fallback model, a shadow's candidate, the A/A leg. */
/* VAR_CANARY: a rollout's candidate serving the public model's request,
 * labelled with the public model's name (and the candidate's backend) */
enum met_variant { VAR_PRIMARY = 0, VAR_FALLBACK, VAR_SHADOW, VAR_AA, VAR_CANARY, VAR__COUNT };
extern const char *const met_variant_names[VAR__COUNT];

enum met_endpoint { EP_CHAT = 0, EP_COMPLETIONS, EP_EMBEDDINGS, EP_OTHER, EP__COUNT };

struct met_shard {
    /* "vkey" arrays: [variant * nkeys + key]; key = model/backend pair, see
     * metrics_key(), metrics_vkey() */
    _Atomic uint64_t (*requests)[500]; /* [vkey][status-100] */
    struct met_hist *duration;      /* [vkey] */
    struct met_hist *ttft;          /* [vkey] */
    struct met_hist *tpot;          /* [vkey]: time per output token (streams) */
    _Atomic uint64_t *tokens_in;    /* [vkey] */
    _Atomic uint64_t *tokens_out;   /* [vkey] */
    _Atomic uint64_t *tokens_estimated; /* [vkey]: requests whose usage was estimated */
    struct met_hist *overhead;      /* [model]: time inside shade (doc/observability.md) */
    struct met_hist *queue_wait;    /* [model]: time in the admission queue */
    struct met_hist *input_tokens;  /* [model]: input tokens per request */
    _Atomic uint64_t admin_auth_failures;
    _Atomic uint64_t *cost_micro_usd; /* [model] */
    _Atomic uint64_t *retries;      /* [model] */
    _Atomic uint64_t *fallbacks;    /* [from model * nmodels + to model] */
    _Atomic uint64_t *retries_denied; /* [model]: retries the budget refused */
    _Atomic int64_t *queue_depth;   /* [model] */
    _Atomic uint64_t (*shed)[2];    /* [model][0 queue full, 1 queue timeout] */
    _Atomic uint64_t (*up_errors)[16]; /* [backend][enum up_err] */
    _Atomic int64_t *inflight;      /* [model] */
};

static inline void met_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}
static inline void met_gauge_add(_Atomic int64_t *c, int64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v, memory_order_relaxed);
}
/* Count one value: us (µs) against met_buckets / _tpot / _overhead (in
 * seconds), or a plain count against met_buckets_tokens (scale 1). */
void met_observe_in(struct met_hist *h, uint64_t v, const double *bounds, double scale);
static inline void met_observe(struct met_hist *h, uint64_t us) { met_observe_in(h, us, met_buckets, 1e-6); }

/* Series keys: per model m, key = key_base[m] + 0 (no backend) or + 1 + i
 * for its i-th backend; the last key is "no model". */
struct met_layout {
    size_t nmodels, nbackends, nkeys;
    size_t *key_base;   /* [nmodels] */
};

/* from the config: every model, hidden ones included, in config order */
int metrics_layout_init(struct met_layout *lay, const struct config *cfg);
void metrics_layout_free(struct met_layout *lay);
struct met_shard *metrics_shard_new(const struct met_layout *lay);
void metrics_shard_free(struct met_shard *s);
static inline size_t metrics_key(const struct met_layout *lay, int model, int backend_index)
{
    if (model < 0)
        return lay->nkeys - 1;
    return lay->key_base[model] + (size_t)(backend_index + 1);
}
static inline size_t metrics_vkey(const struct met_layout *lay, enum met_variant v, size_t key)
{
    return (size_t)v * lay->nkeys + key;
}

/* A label value, escaped as the exposition format requires. */
void metrics_put_label(struct buf *out, const char *v);

#endif
