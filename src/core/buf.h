/* buf.h — a growable byte buffer with a read offset, used for connection
 * input and output.  Consumed bytes are dropped lazily (memmove only when
 * the tail runs out of room), so appending and consuming are O(1) amortised.
 */
#ifndef SHADE_BUF_H
#define SHADE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *p;
    size_t off;   /* first unread byte */
    size_t len;   /* end of data */
    size_t cap;
};

static inline size_t buf_used(const struct buf *b) { return b->len - b->off; }
static inline char *buf_data(const struct buf *b) { return b->p ? b->p + b->off : b->p; }

/* Make room for at least n more bytes at the end; returns the write pointer
 * or NULL on allocation failure. */
char *buf_reserve(struct buf *b, size_t n);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append an unsigned decimal without printf (hot paths build headers). */
int buf_append_uint(struct buf *b, unsigned long long v);
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);   /* drop data, keep memory */
void buf_free(struct buf *b);
/* Shrink a large idle buffer back (keep-alive connections should not pin
 * megabytes after one big request). */
void buf_trim(struct buf *b, size_t keep);

#endif
