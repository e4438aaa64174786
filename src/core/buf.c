#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return b->p + b->len;
    if (b->off > 0) {
        size_t used = b->len - b->off;
        memmove(b->p, b->p + b->off, used);
        b->off = 0;
        b->len = used;
        if (b->cap - b->len >= n)
            return b->p + b->len;
    }
    size_t need = b->len + n;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return NULL;
    b->p = p;
    b->cap = cap;
    return b->p + b->len;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    char *w = buf_reserve(b, n);
    if (!w)
        return -1;
    memcpy(w, p, n);
    b->len += n;
    return 0;
}

int buf_append_str(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    char *w = buf_reserve(b, 256);
    if (!w)
        return -1;
    va_start(ap, fmt);
    int n = vsnprintf(w, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= b->cap - b->len) {
        w = buf_reserve(b, (size_t)n + 1);
        if (!w)
            return -1;
        va_start(ap, fmt);
        vsnprintf(w, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
    return 0;
}

int buf_append_uint(struct buf *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, tmp + i, sizeof tmp - i);
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void buf_reset(struct buf *b) { b->off = b->len = 0; }

void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}

void buf_trim(struct buf *b, size_t keep)
{
    if (b->cap <= keep || buf_used(b) > 0)
        return;
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}
