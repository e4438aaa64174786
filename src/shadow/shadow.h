/* shadow.h — mirroring live traffic to candidate models (doc/shadow.md).
 *
 * The pipeline, per request of a model that has shadows:
 *
 *   select   (worker, in the request's decode phase) state, endpoint,
 *            opt-out header, selection mode and sample, tool results.
 *            Selected = "mirrored": from here on the request ends as a
 *            stored pair or as a drop counted with its reason.
 *   admit    the shadow's concurrency cap and hourly budget; over either,
 *            the pair is dropped (counted), never queued.
 *   legs     a shadow leg (and, for aa_percent of pairs, an A/A leg to the
 *            primary model again) starts on the same worker loop, with its
 *            own copy of the body, its own deadline timer and no link to
 *            the client connection: the user's response and the next
 *            request on the connection never wait for it.
 *   primary  the user's own request is observed beside its stream (text,
 *            finish reason, tool calls, usage, TTFT, inter-token gaps).
 *   pair     when the primary and every leg are done, the pair goes to the
 *            recorder's bounded queue (recorder.c); a full queue drops it
 *            (counted).  The recorder writes SQLite, compares, analyses.
 *
 * Memory: a pair is owned by its legs and the primary (a plain count: all
 * of them run on one worker loop); the last one to finish hands it to the
 * recorder, which frees it after writing.
 */
#ifndef SHADE_SHADOW_H
#define SHADE_SHADOW_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "httpd.h"
#include "json.h"
#include "metrics.h"
#include "pair.h"
#include "trace.h"
#include "upstream.h"

struct gateway;
struct worker;
struct model_rt;

#define SHADOWS_PER_REQUEST 4 /* shadows of one model that may mirror one request */
/* What the proxy keeps for a mirrored request (NULL when not mirrored). */
struct shadow_primary {
    struct shadow_pair *pairs[SHADOWS_PER_REQUEST];
    int npairs;
    struct shadow_answer ans;
    bool chat;
    bool json_read;                  /* a non-streamed answer was parsed */
};

/* gateway set-up (server.c): shadow runtimes and the model → shadows index */
int shadow_gateway_init(struct gateway *gw, char *err, size_t errlen);
void shadow_gateway_free(struct gateway *gw);
const struct shadow_rt *shadow_find(const struct gateway *gw, const char *name, size_t len);

/* mod_shadow, once the primary is on the wire: choose the shadows that
 * mirror this request and start their legs from body (the request's
 * current body; root spans into it; key_name: the key auth checked, NULL
 * none).  Returns NULL when none does. */
struct shadow_primary *shadow_mirror(struct worker *w, const struct model_rt *m, http_req *r,
                                     const char *body, size_t body_len, const struct json_span *root, enum met_endpoint ep, bool stream,
                                     uint64_t est_tokens, const struct trace_ctx *primary, const char *key_name);
/* the store's error kind of an upstream failure */
const char *shadow_err_kind(enum up_err e);
/* proxy.c: observe the primary's answer beside the stream / at the end */
/* (root: the event / body the proxy has already validated) */
void shadow_primary_sse(struct shadow_primary *sp, const struct json_span *root);
void shadow_primary_json(struct shadow_primary *sp, const struct json_span *root);
/* an event of the primary's stream was lost (larger than its SSE reader
 * takes): the answer is kept up to there, flagged truncated */
void shadow_primary_gap(struct shadow_primary *sp);
/* the primary's non-streamed answer (bytes long) was larger than the proxy
 * reads: not parsed; stored with error too_large, tokens estimated */
void shadow_primary_too_large(struct shadow_primary *sp, uint64_t bytes);
/* proxy.c, when the user's request ends: hand the primary's result to the
 * pairs and let go of sp.  error = store.h kind or NULL. */
void shadow_primary_done(struct worker *w, struct shadow_primary *sp, int status, const char *error,
                         const char *backend, const char *target, bool streamed, uint64_t t_start_ns,
                         uint64_t t_first_ns, int64_t usage_in, int64_t usage_out, bool client_gone);

#endif
