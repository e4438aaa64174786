// srcs: src/core/sse.c
/* fuzz_sse.c — the first byte picks a split position for the rest of the
 * input.  The stream is fed in one piece, in two pieces split there, one
 * byte at a time, and in pieces of varying sizes; every way must give the
 * same events (compared by a hash over all of them), and the same as a
 * straightforward whole-stream reference parser written from the spec. */
#include "sse.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_EVENT 64 /* small, so that skipping is exercised */

struct digest {
    uint64_t h;
    size_t events;
};

static void mix(struct digest *d, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        d->h ^= b[i];
        d->h *= 0x100000001b3ull;
    }
}

static void on_event(void *arg, const char *data, size_t len)
{
    struct digest *d = arg;
    if (len > MAX_EVENT) abort(); /* larger events must be skipped */
    mix(d, &len, sizeof len);
    mix(d, data, len); /* ASan checks the whole span is readable */
    d->events++;
}

/* Feed s in pieces; sizes cycles through the given piece lengths. */
static struct digest run(const uint8_t *s, size_t n, const size_t *sizes, size_t nsizes)
{
    struct digest d = {0xcbf29ce484222325ull, 0};
    struct sse_reader r;
    sse_reader_init(&r, on_event, &d, MAX_EVENT);
    size_t at = 0, k = 0;
    while (at < n) {
        size_t len = nsizes ? sizes[k++ % nsizes] : n;
        if (len > n - at) len = n - at;
        /* a fresh copy per piece: keeping a pointer into an old piece is a
         * use-after-free */
        char *piece = malloc(len ? len : 1);
        if (!piece) abort();
        memcpy(piece, s + at, len);
        sse_reader_feed(&r, piece, len);
        free(piece);
        at += len;
    }
    sse_reader_free(&r);
    return d;
}

/* Reference: split the whole stream into lines, then apply the spec's
 * field processing literally. */
static struct digest reference(const uint8_t *s, size_t n)
{
    struct digest d = {0xcbf29ce484222325ull, 0};
    char *buf = malloc(n + 1);
    if (!buf) abort();
    size_t blen = 0;
    bool have = false;
    size_t i = 0;
    if (n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) i = 3;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '\r' && s[j] != '\n') j++;
        if (j == n) break; /* an unterminated last line is not a line */
        const uint8_t *line = s + i;
        size_t len = j - i;
        i = j + 1;
        if (s[j] == '\r' && i < n && s[i] == '\n') i++;

        if (len == 0) {
            if (have) {
                blen--; /* the trailing '\n' */
                if (blen <= MAX_EVENT) on_event(&d, buf, blen);
            }
            blen = 0;
            have = false;
            continue;
        }
        if (line[0] == ':') continue;
        const uint8_t *colon = memchr(line, ':', len);
        size_t nlen = colon ? (size_t)(colon - line) : len;
        const uint8_t *val = colon ? colon + 1 : line + len;
        size_t vlen = colon ? len - nlen - 1 : 0;
        if (vlen && val[0] == ' ') {
            val++;
            vlen--;
        }
        if (nlen == 4 && memcmp(line, "data", 4) == 0) {
            memcpy(buf + blen, val, vlen);
            blen += vlen;
            buf[blen++] = '\n';
            have = true;
        }
    }
    free(buf);
    return d;
}

static void same(struct digest a, struct digest b, const char *what)
{
    if (a.h != b.h || a.events != b.events) {
        fprintf(stderr, "%s: %zu events (hash %016llx) vs %zu events (hash %016llx)\n", what,
                a.events, (unsigned long long)a.h, b.events, (unsigned long long)b.h);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const uint8_t *s = data + 1;
    size_t n = size - 1;
    size_t cut = (size_t)data[0] * (n + 1) / 256;

    struct digest whole = run(s, n, NULL, 0);
    same(whole, reference(s, n), "whole vs reference");

    size_t two[2] = {cut, n};
    same(whole, run(s, n, two, 2), "whole vs split");

    if (n <= 4096) {
        size_t one = 1;
        same(whole, run(s, n, &one, 1), "whole vs bytewise");
    }
    /* uneven pieces, including empty feeds */
    size_t odd[5] = {(size_t)data[0] % 7, 1, 0, 3, 2};
    same(whole, run(s, n, odd, 5), "whole vs uneven");
    return 0;
}
