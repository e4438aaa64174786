/* answer.h — what a model answered, read from its response: the text, the
 * finish reason, the tool calls, the usage, and (for streams) when output
 * events arrived.  Used for every leg of a shadowed request (shadow.c): the
 * user's own response is observed beside its stream, shadow legs are read
 * as they arrive.
 *
 * Bounded, and always a prefix: the text is cut at text_max, the tool calls
 * array at text_max too (whole calls; a first call that does not fit alone
 * keeps its name and a cut of its arguments), a call's arguments at 64 KiB,
 * its name at 256 bytes, streamed calls after the fourth are left out.
 * Once a part has been cut nothing more is appended to it — a later, smaller
 * piece would splice text that was never adjacent — and text_truncated /
 * tools_truncated say so.  shadow_answer_gap() does the same when an event
 * of a stream could not be read (too large for the SSE reader).
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
    struct buf tools;                /* JSON array [{"name":..,"arguments":".."}], <= text_max */
    bool tools_truncated;            /* a call, or part of one, was left out */
    bool tools_full;                 /* no further call fits: the array is closed */
    /* a non-streamed answer larger than its reader keeps (shadow.c, proxy.c):
     * it was not parsed, so its text, tool calls and usage are unknown */
    bool too_large;
    uint64_t body_bytes;             /* its size, for the token estimate */
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
/* an event of the stream was lost (larger than the SSE reader takes): what
 * was read so far is kept, flagged, and nothing later is appended */
void shadow_answer_gap(struct shadow_answer *a);
/* after the last event: assemble streamed tool calls into `tools` */
void shadow_answer_finish_stream(struct shadow_answer *a);
/* a whole non-streamed JSON response */
void shadow_answer_json(struct shadow_answer *a, const char *body, size_t len);
void shadow_answer_json_root(struct shadow_answer *a, const struct json_span *root);

#endif
