// srcs: src/shadow/answer.c src/core/json.c src/core/buf.c
/* Fuzz the answer reader: the first byte picks the mode (a whole JSON
 * response, or SSE event data split at newlines), the rest is what an
 * upstream model sent.  Any bytes must leave a bounded, well-formed answer:
 * text and tools within text_max, tools a JSON array or empty, no crash,
 * no leak.  A line "!" in SSE mode stands for an event the reader lost. */
#include <stdint.h>
#include <string.h>

#include "answer.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct shadow_answer a;
    shadow_answer_init(&a, 64 + (data[0] & 0x3f));
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] & 0x80) {
        shadow_answer_json(&a, p, n);
    } else {
        uint64_t t = 1;
        while (n) {
            const char *nl = memchr(p, '\n', n);
            size_t len = nl ? (size_t)(nl - p) : n;
            if (len == 1 && p[0] == '!')
                shadow_answer_gap(&a); /* an event the SSE reader lost */
            shadow_answer_sse(&a, p, len, t += 1000);
            p += len + (nl ? 1 : 0);
            n -= len + (nl ? 1 : 0);
        }
        shadow_answer_finish_stream(&a);
    }
    if (buf_used(&a.text) > a.text_max || buf_used(&a.tools) > a.text_max)
        __builtin_trap();
    if (buf_used(&a.tools) && json_validate(buf_data(&a.tools), buf_used(&a.tools), NULL, NULL) < 0)
        __builtin_trap();
    shadow_answer_free(&a);
    return 0;
}
