/* sse.h — an incremental Server-Sent Events reader that watches a stream
 * beside the forwarding path.  Bytes are forwarded first; the reader only
 * looks at them afterwards, so it can never delay or change the stream.
 */
#ifndef SHADE_SSE_H
#define SHADE_SSE_H

#include <stddef.h>
#include <stdint.h>

/* Called once per complete event with the concatenated "data:" payload
 * (multiple data lines joined with '\n', as the SSE spec says). */
typedef void (*sse_event_cb)(void *arg, const char *data, size_t len);

struct sse_reader {
    char *buf;        /* partial line / event data carried between feeds */
    size_t len, cap;
    size_t max;       /* events larger than this are skipped (default 1 MiB) */
    int state;        /* internal */
    int skipping;     /* internal: current event too large */
    uint64_t skipped; /* events dropped for their size (or memory): an observer
                         that assembles text across events must not join what
                         came before such an event with what comes after */
    sse_event_cb cb;
    void *arg;
};

void sse_reader_init(struct sse_reader *r, sse_event_cb cb, void *arg, size_t max_event);
/* Feed any number of bytes; handles CRLF, LF and CR line ends, lines split
 * across feeds, comments (":..."), and fields other than data (ignored). */
void sse_reader_feed(struct sse_reader *r, const char *p, size_t n);
void sse_reader_free(struct sse_reader *r);

#endif
