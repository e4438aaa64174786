/* answer.h — what a model answered, read from its response: the text, the
 * finish reason, the tool calls, the usage, and (for streams) when output
 * events arrived.  Used for every leg of a shadowed request (shadow.c): the
 * user's own response is observed beside its stream, shadow legs are read
 * as they arrive.  Bounded: text beyond text_max is cut (and flagged), tool
 * call arguments beyond 64 KiB are cut.
 */
#ifndef SHADE_ANSWER_H
#define SHADE_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"

/* One leg's observed answer. */
struct shadow_answer {
    struct buf text;                 /* content, bounded */
    bool text_truncated;
    char finish[32];
    struct buf tools;                /* JSON array [{"name":..,"arguments":".."}] */
    int64_t usage_in, usage_out;     /* -1 = not reported */
    int64_t events_out;              /* SSE events carrying output */
    uint64_t t_first_ns, t_last_ns;  /* first / last output event */
    double itl_sum_ms, itl_max_ms;
    uint64_t itl_n;
    /* streamed tool calls arrive in pieces, by index */
    struct buf tc_name[4], tc_args[4];
    int tc_n;
    size_t text_max;
};

void shadow_answer_init(struct shadow_answer *a, size_t text_max);
void shadow_answer_free(struct shadow_answer *a);
/* one SSE event's data (a chat.completion.chunk or completion chunk) */
void shadow_answer_sse(struct shadow_answer *a, const char *data, size_t len, uint64_t now_ns);
/* the same, for an event the caller has already validated (a JSON object) */
void shadow_answer_sse_root(struct shadow_answer *a, const struct json_span *root, uint64_t now_ns);
/* after the last event: assemble streamed tool calls into `tools` */
void shadow_answer_finish_stream(struct shadow_answer *a);
/* a whole non-streamed JSON response */
void shadow_answer_json(struct shadow_answer *a, const char *body, size_t len);
void shadow_answer_json_root(struct shadow_answer *a, const struct json_span *root);

#endif
