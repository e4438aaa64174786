/* sse.c — incremental Server-Sent Events reader (WHATWG HTML, "Interpreting
 * an event stream"), restricted to what the gateway needs: the data field.
 *
 * The reader is a small line state machine.  r->state packs:
 *   bits 0-3  where we are in the current line (PH_*)
 *   bit  4    the previous feed ended in CR: a leading LF of the next feed
 *             belongs to that line end
 *   bit  5    the current event has at least one data line
 *   bits 6-7  UTF-8 BOM bytes matched at the very start of the stream
 *   bit  8    start of stream is behind us (BOM check done)
 * r->buf/r->len hold the current event's data (lines joined with '\n') when
 * it has to be copied; r->skipping is set while an event over r->max is
 * being dropped.
 *
 * Zero copy: while a feed is processed, the first data line of an event is
 * only remembered as a pointer into the input.  If the blank line that
 * dispatches the event arrives in the same feed and no second data line came,
 * the callback gets that pointer.  The data is copied into r->buf only when a
 * second data line arrives or the feed ends before the event does.
 */
#include "sse.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum {
    PH_START = 0,  /* nothing of the line seen yet */
    PH_NAME1,      /* "d" */
    PH_NAME2,      /* "da" */
    PH_NAME3,      /* "dat" */
    PH_NAME4,      /* "data" */
    PH_VALSTART,   /* "data:" — an optional space may follow */
    PH_VALUE,      /* in the data value */
    PH_IGNORE,     /* comment or another field: ignored to the line end */
};

#define ST_PHASE 0x0Fu
#define ST_CR 0x10u
#define ST_DATA 0x20u
#define ST_BOM_SHIFT 6
#define ST_BOM_MASK (3u << ST_BOM_SHIFT)
#define ST_STARTED 0x100u

#define SSE_DEFAULT_MAX (1u << 20)

/* The data line of the current event that still lives in the input. */
struct pending {
    const char *p;
    size_t len;
    bool on;
};

void sse_reader_init(struct sse_reader *r, sse_event_cb cb, void *arg, size_t max_event)
{
    memset(r, 0, sizeof *r);
    r->max = max_event ? max_event : SSE_DEFAULT_MAX;
    r->cb = cb;
    r->arg = arg;
}

void sse_reader_free(struct sse_reader *r)
{
    if (!r) return;
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

static unsigned phase(const struct sse_reader *r) { return (unsigned)r->state & ST_PHASE; }

static void set_phase(struct sse_reader *r, unsigned ph)
{
    r->state = (int)(((unsigned)r->state & ~ST_PHASE) | ph);
}

/* Drop the current event: it is too large (or memory ran out). */
static void start_skipping(struct sse_reader *r, struct pending *pd)
{
    if (!r->skipping)
        r->skipped++;
    r->skipping = 1;
    r->len = 0;
    pd->on = false;
}

/* Append to the event data in r->buf, growing it; the total stays <= max. */
static void append(struct sse_reader *r, struct pending *pd, const char *p, size_t n)
{
    if (r->skipping || n == 0) return;
    if (n > r->max - r->len) {
        start_skipping(r, pd);
        return;
    }
    size_t need = r->len + n;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < need) cap = cap > r->max / 2 ? r->max : cap * 2;
        char *nb = realloc(r->buf, cap);
        if (!nb) {
            start_skipping(r, pd);
            return;
        }
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len = need;
}

/* Move a pending in-input data line into r->buf. */
static void materialize(struct sse_reader *r, struct pending *pd)
{
    if (!pd->on) return;
    pd->on = false;
    append(r, pd, pd->p, pd->len);
}

/* A new data line begins: join it to the previous one with '\n'. */
static void begin_data_line(struct sse_reader *r, struct pending *pd)
{
    if ((unsigned)r->state & ST_DATA) {
        materialize(r, pd);
        append(r, pd, "\n", 1);
    }
    r->state = (int)((unsigned)r->state | ST_DATA);
}

static void dispatch(struct sse_reader *r, struct pending *pd)
{
    if (((unsigned)r->state & ST_DATA) && !r->skipping && r->cb) {
        if (pd->on) r->cb(r->arg, pd->p, pd->len);
        else r->cb(r->arg, r->len ? r->buf : "", r->len);
    }
    pd->on = false;
    r->len = 0;
    r->skipping = 0;
    r->state = (int)((unsigned)r->state & ~ST_DATA);
}

/* Process s[0..n) of the current line; eol says the line ends after it. */
static void segment(struct sse_reader *r, struct pending *pd, const char *s, size_t n, bool eol)
{
    unsigned ph = phase(r);
    const bool whole = ph == PH_START && eol; /* the entire line is in s */
    size_t i = 0;

    if (ph == PH_START && n == 0) {
        if (eol) dispatch(r, pd); /* blank line */
        return;
    }
    if (ph == PH_START && s[0] == ':') {
        ph = PH_IGNORE; /* comment */
    }
    while (ph <= PH_NAME4 && i < n) {
        char c = s[i];
        if (ph < PH_NAME4 && c == "data"[ph]) {
            ph++;
            i++;
        } else if (ph == PH_NAME4 && c == ':') {
            i++;
            begin_data_line(r, pd);
            ph = PH_VALSTART;
        } else {
            ph = PH_IGNORE; /* another field name */
        }
    }
    if (ph == PH_VALSTART && i < n) {
        if (s[i] == ' ') i++;
        ph = PH_VALUE;
    }
    if (ph == PH_VALUE && i < n) {
        size_t vn = n - i;
        if (whole && !r->skipping && !pd->on && r->len == 0) {
            /* the first data line of this event (a second one would have
             * appended its '\n' already), whole in the input: remember
             * where it is instead of copying it */
            if (vn > r->max) start_skipping(r, pd);
            else {
                pd->p = s + i;
                pd->len = vn;
                pd->on = true;
            }
        } else {
            materialize(r, pd);
            append(r, pd, s + i, vn);
        }
    }
    if (eol) {
        if (ph == PH_NAME4) begin_data_line(r, pd); /* "data" alone: empty value */
        ph = PH_START;
    }
    set_phase(r, ph);
}

void sse_reader_feed(struct sse_reader *r, const char *p, size_t n)
{
    struct pending pd = {NULL, 0, false};
    size_t i = 0;
    if (!r || !p || n == 0) return;

    if (!((unsigned)r->state & ST_STARTED)) {
        /* a UTF-8 BOM at the start of the stream is dropped */
        static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
        unsigned k = ((unsigned)r->state & ST_BOM_MASK) >> ST_BOM_SHIFT;
        while (i < n && k < 3 && (unsigned char)p[i] == bom[k]) {
            i++;
            k++;
        }
        if (k == 3 || i < n) {
            r->state = (int)(((unsigned)r->state & ~ST_BOM_MASK) | ST_STARTED);
            /* a partial BOM then something else: the line starts with
             * bytes that are not "data", so it is ignored */
            if (k > 0 && k < 3) set_phase(r, PH_IGNORE);
        } else {
            r->state = (int)(((unsigned)r->state & ~ST_BOM_MASK) | k << ST_BOM_SHIFT);
            return;
        }
    }
    if ((unsigned)r->state & ST_CR) {
        r->state = (int)((unsigned)r->state & ~ST_CR);
        if (i < n && p[i] == '\n') i++;
    }
    while (i < n) {
        size_t j = i;
        while (j < n && p[j] != '\n' && p[j] != '\r') j++;
        if (j == n) {
            segment(r, &pd, p + i, n - i, false);
            break;
        }
        segment(r, &pd, p + i, j - i, true);
        if (p[j] == '\r') {
            if (j + 1 < n) {
                if (p[j + 1] == '\n') j++;
            } else {
                r->state = (int)((unsigned)r->state | ST_CR);
            }
        }
        i = j + 1;
    }
    /* the input goes away after this call */
    materialize(r, &pd);
}
