/* accesslog.c — buffered JSON access log (see accesslog.h for the format and
 * the guarantees).
 *
 * How a line gets out:
 *   accesslog_write   formats the record straight into the worker's buffer:
 *                     one buf_reserve() of an upper bound on the line's size,
 *                     then plain stores (json_escape for strings, hand-rolled
 *                     integer / fixed-point formatting, the date part of the
 *                     timestamp cached per second).  No lock, no syscall,
 *                     no allocation once the buffer has grown.
 *   flush             under the log's mutex: first the carry (the tail of a
 *                     line an earlier short write tore), then the worker's
 *                     whole buffer in one write().  A short write moves the
 *                     rest of the torn line to the carry and keeps the lines
 *                     after it in the worker's buffer.
 *   timer             armed when a line goes into an empty buffer, stopped
 *                     when a flush empties it, re-armed after EAGAIN (the
 *                     worker is then "blocked": the size threshold stops
 *                     triggering writes until the timer's retry succeeds, so
 *                     a full pipe does not cost a syscall per request).
 *
 * Counting: w->nlines is the number of complete lines in the worker's
 * buffer; l->carry holds at most one (partial) line.  A line is counted in
 * stats.lines once its last byte is written, in stats.dropped when it is
 * given up.
 *
 * The descriptor: l->fd is fixed for the log's life.  Reopen opens the path
 * and dup3()s the new file over l->fd while holding the mutex, so no flush
 * straddles the swap.
 */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"

#define OPEN_FLAGS (O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY)
#define RETAIN_MIN (256u * 1024u)   /* lines kept through EAGAIN, at least */
#define RETAIN_FACTOR 8u            /* ... or this many buffers */
#define MAX_BUFFER (64u * 1024u * 1024u)

struct accesslog {
    int fd;
    bool is_stdout;
    bool prompts;
    uint32_t buffer_bytes, flush_ms;
    char *path;
    pthread_mutex_t mu;      /* serialises writes to fd, the carry, reopen */
    struct buf carry;        /* rest of a torn line; written before anything else */
    _Atomic uint64_t lines, dropped, write_errors;
};

struct alog_worker {
    struct accesslog *l;
    loop_t *loop;
    ev_timer timer;
    struct buf b;
    size_t nlines;           /* complete lines in b */
    size_t retain;           /* cap on b while the fd refuses data */
    bool blocked;            /* last flush hit EAGAIN; the timer retries */
    int64_t tsec;            /* second cached in tstr */
    char tstr[20];           /* "YYYY-MM-DDTHH:MM:SS" */
};

static void count(_Atomic uint64_t *c, uint64_t n)
{
    if (n) atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* ------------------------------------------------------------ formatting */

static inline char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}
#define PUTL(o, lit) put((o), (lit), sizeof(lit) - 1)

static const char digits2[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static char *put_u64(char *o, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    while (v >= 100) {
        unsigned d = (unsigned)(v % 100) * 2;
        v /= 100;
        tmp[--i] = digits2[d + 1];
        tmp[--i] = digits2[d];
    }
    if (v >= 10) {
        tmp[--i] = digits2[v * 2 + 1];
        tmp[--i] = digits2[v * 2];
    } else {
        tmp[--i] = (char)('0' + v);
    }
    return put(o, tmp + i, sizeof tmp - i);
}

static char *put_i64(char *o, int64_t v)
{
    if (v < 0) {
        *o++ = '-';
        return put_u64(o, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(o, (uint64_t)v);
}

static const uint64_t pow10_u[] = { 1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000 };

/* A non-negative finite value with at most dec decimals, trailing zeros
 * trimmed.  Values too large for the fixed-point path use %.17g (valid
 * JSON: "1e+20").  Inlined so that dec is a constant and the divisions by
 * the scale become multiplications. */
static inline __attribute__((always_inline)) char *put_fixed(char *o, double v, int dec)
{
    uint64_t scale = pow10_u[dec];
    double x = v * (double)scale + 0.5;
    if (!(x < 1e18))
        return o + snprintf(o, 32, "%.17g", v);
    uint64_t n = (uint64_t)x;
    o = put_u64(o, n / scale);
    uint64_t f = n % scale;
    if (f) {
        int d = dec;
        while (f % 10 == 0) {
            f /= 10;
            d--;
        }
        *o++ = '.';
        for (int i = d - 1; i >= 0; i--) {
            o[i] = (char)('0' + f % 10);
            f /= 10;
        }
        o += d;
    }
    return o;
}

/* A measurement: null when negative or not finite. */
static inline __attribute__((always_inline)) char *put_measure(char *o, double v, int dec)
{
    if (!(v >= 0) || !isfinite(v))
        return PUTL(o, "null");
    return put_fixed(o, v, dec);
}

/* Cut n to max bytes without splitting a UTF-8 sequence (if the cut falls
 * on a continuation byte, back up to the lead byte; invalid data is cut
 * where it is, json_escape replaces what is left of it). */
static size_t bound(const char *s, size_t n, size_t max, bool *cut)
{
    if (n <= max) {
        if (cut) *cut = false;
        return n;
    }
    if (cut) *cut = true;
    size_t k = max;
    while (k > 0 && max - k < 3 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    if (((unsigned char)s[k] & 0xC0) == 0x80)
        k = max; /* not a sequence we could have split */
    return k;
}

/* Worst case of a bounded string: every byte escaped as \u00XX, quotes. */
static size_t str_room(size_t n) { return 6 * n + 3; }

static char *put_str(char *o, const char *s, size_t n)
{
    if (!s)
        return PUTL(o, "null");
    long k = json_escape(s, n, o, str_room(n));
    return k < 0 ? PUTL(o, "null") : o + k; /* cannot fail: room is the worst case */
}

/* days since 1970-01-01 → civil date (H. Hinnant, "chrono-compatible
 * low-level date algorithms"); no locks, unlike gmtime_r. */
static void civil(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static void two(char *o, unsigned v)
{
    o[0] = (char)('0' + v / 10 % 10);
    o[1] = (char)('0' + v % 10);
}

static char *put_time(struct alog_worker *w, char *o, double ts)
{
    int64_t ms;
    if (ts > 0 && ts < 253402300800.0) /* before year 10000 */
        ms = (int64_t)(ts * 1000.0 + 0.5); /* nearest: 1.123 s is 1122.99.. ms */
    else
        ms = (int64_t)wall_ms();
    int64_t sec = ms / 1000;
    if (sec != w->tsec) {
        int64_t y;
        unsigned mo, d, sod = (unsigned)(sec % 86400);
        civil(sec / 86400, &y, &mo, &d);
        char *t = w->tstr;
        two(t, (unsigned)(y / 100));
        two(t + 2, (unsigned)(y % 100));
        t[4] = '-';
        two(t + 5, mo);
        t[7] = '-';
        two(t + 8, d);
        t[10] = 'T';
        two(t + 11, sod / 3600);
        t[13] = ':';
        two(t + 14, sod / 60 % 60);
        t[16] = ':';
        two(t + 17, sod % 60);
        w->tsec = sec;
    }
    unsigned msec = (unsigned)(ms % 1000);
    *o++ = '"';
    o = put(o, w->tstr, sizeof w->tstr - 1);
    *o++ = '.';
    *o++ = (char)('0' + msec / 100);
    two(o, msec % 100);
    o += 2;
    return PUTL(o, "Z\"");
}

static size_t cstrlen(const char *s) { return s ? strlen(s) : 0; }

/* ------------------------------------------------------------- writing */

/* write() until done or an error; returns the bytes written, *err = 0 or
 * the errno that stopped it. */
static size_t write_some(int fd, const char *p, size_t n, int *err)
{
    size_t done = 0;
    *err = 0;
    while (done < n) {
        ssize_t k = write(fd, p + done, n - done);
        if (k > 0) {
            done += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else {
            *err = k < 0 ? errno : EIO;
            break;
        }
    }
    return done;
}

static bool is_again(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

static size_t count_nl(const char *p, size_t n)
{
    size_t c = 0;
    const char *end = p + n;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        c++;
        p++;
    }
    return c;
}

/* Under l->mu.  Write the carry; returns false if it is still (partly)
 * there because the fd said EAGAIN. */
static bool write_carry(struct accesslog *l)
{
    size_t n = buf_used(&l->carry);
    if (!n)
        return true;
    int err;
    size_t k = write_some(l->fd, buf_data(&l->carry), n, &err);
    if (k == n) {
        buf_reset(&l->carry);
        count(&l->lines, 1);
        return true;
    }
    buf_consume(&l->carry, k);
    if (is_again(err))
        return false;
    count(&l->write_errors, 1);
    count(&l->dropped, 1);
    buf_reset(&l->carry);
    return true;
}

/* Write out the worker's buffer.  Returns true if data remains because the
 * descriptor is not taking any (EAGAIN), in the worker's buffer or in the
 * carry. */
static bool flush(struct alog_worker *w)
{
    struct accesslog *l = w->l;
    bool again = false, carry_left;
    pthread_mutex_lock(&l->mu);
    if (!write_carry(l))
        again = true; /* nothing of ours may go before the torn line ends */
    size_t n = buf_used(&w->b);
    if (!again && n) {
        const char *p = buf_data(&w->b);
        int err;
        size_t k = write_some(l->fd, p, n, &err);
        if (k == n) {
            count(&l->lines, w->nlines);
            w->nlines = 0;
            buf_reset(&w->b);
        } else {
            /* whole lines in p[0..whole), then maybe a torn one */
            const char *last = k ? memrchr(p, '\n', k) : NULL;
            size_t whole = last ? (size_t)(last - p) + 1 : 0;
            size_t done = count_nl(p, whole), used = whole;
            if (k > whole) {
                const char *e = memchr(p + k, '\n', n - k); /* every line ends in one */
                size_t end = e ? (size_t)(e - p) + 1 : n;
                if (buf_append(&l->carry, p + k, end - k) < 0)
                    count(&l->dropped, 1); /* the file keeps a torn line */
                used = end;
                done++; /* leaves w->nlines: counted when the carry is written */
                count(&l->lines, done - 1);
            } else {
                count(&l->lines, done);
            }
            w->nlines -= done;
            buf_consume(&w->b, used);
            if (is_again(err)) {
                again = true;
            } else {
                count(&l->write_errors, 1);
                count(&l->dropped, w->nlines);
                w->nlines = 0;
                buf_reset(&w->b);
            }
        }
    }
    carry_left = buf_used(&l->carry) > 0;
    pthread_mutex_unlock(&l->mu);

    w->blocked = again;
    if (w->loop) {
        if (again && (buf_used(&w->b) || carry_left))
            ev_timer_start(w->loop, &w->timer, l->flush_ms);
        else if (!buf_used(&w->b))
            ev_timer_stop(w->loop, &w->timer);
    }
    return again && (buf_used(&w->b) || carry_left);
}

static void on_timer(loop_t *lp, ev_timer *t)
{
    (void)lp;
    flush(t->data);
}

void accesslog_flush(struct alog_worker *w)
{
    if (w)
        flush(w);
}

void accesslog_write(struct alog_worker *w, const struct access_record *r)
{
    struct accesslog *l = w->l;
    if (buf_used(&w->b) >= w->retain) {
        count(&l->dropped, 1);
        return;
    }
    size_t rid = bound(r->request_id, r->request_id ? r->request_id_len : 0, ALOG_STR_MAX, NULL);
    size_t meth = bound(r->method, r->method ? r->method_len : 0, ALOG_STR_MAX, NULL);
    size_t plen = r->path ? r->path_len : 0;
    const char *q = plen ? memchr(r->path, '?', plen) : NULL;
    if (q)
        plen = (size_t)(q - r->path);
    plen = bound(r->path, plen, ALOG_STR_MAX, NULL);
    const char *strs[] = { r->client, r->model, r->served_model, r->variant, r->backend,
                           r->error, r->trace_id, r->key };
    size_t lens[8];
    size_t room = 1024 + str_room(rid) + str_room(meth) + str_room(plen);
    for (int i = 0; i < 8; i++) {
        lens[i] = bound(strs[i], cstrlen(strs[i]), ALOG_STR_MAX, NULL);
        room += str_room(lens[i]);
    }
    bool pcut = false;
    size_t prl = 0;
    if (l->prompts) {
        prl = bound(r->prompt, r->prompt ? r->prompt_len : 0, ALOG_PROMPT_MAX, &pcut);
        room += 40 + str_room(prl);
    }
    char *start = buf_reserve(&w->b, room);
    if (!start) {
        count(&l->dropped, 1);
        return;
    }
    bool was_empty = buf_used(&w->b) == 0;
    char *o = start;
    o = PUTL(o, "{\"time\":");
    o = put_time(w, o, r->ts);
    o = PUTL(o, ",\"request_id\":");
    o = put_str(o, r->request_id, rid);
    o = PUTL(o, ",\"method\":");
    o = put_str(o, r->method, meth);
    o = PUTL(o, ",\"path\":");
    o = put_str(o, r->path, plen);
    o = PUTL(o, ",\"client\":");
    o = put_str(o, strs[0], lens[0]);
    o = PUTL(o, ",\"model\":");
    o = put_str(o, strs[1], lens[1]);
    o = PUTL(o, ",\"served_model\":");
    o = put_str(o, strs[2], lens[2]);
    o = PUTL(o, ",\"variant\":");
    o = put_str(o, strs[3], lens[3]);
    o = PUTL(o, ",\"backend\":");
    o = put_str(o, strs[4], lens[4]);
    o = PUTL(o, ",\"key\":");
    o = put_str(o, strs[7], lens[7]);
    o = PUTL(o, ",\"status\":");
    o = put_i64(o, r->status);
    o = r->stream ? PUTL(o, ",\"stream\":true") : PUTL(o, ",\"stream\":false");
    o = PUTL(o, ",\"latency_ms\":");
    o = put_measure(o, r->latency_ms, 3);
    o = PUTL(o, ",\"ttft_ms\":");
    o = put_measure(o, r->ttft_ms, 3);
    o = PUTL(o, ",\"overhead_us\":");
    o = put_measure(o, r->overhead_us, 1);
    o = PUTL(o, ",\"tokens_in\":");
    o = r->tokens_in < 0 ? PUTL(o, "null") : put_i64(o, r->tokens_in);
    o = PUTL(o, ",\"tokens_out\":");
    o = r->tokens_out < 0 ? PUTL(o, "null") : put_i64(o, r->tokens_out);
    o = PUTL(o, ",\"tokens_estimated\":");
    if (r->tokens_in < 0 && r->tokens_out < 0)
        o = PUTL(o, "null");
    else
        o = r->tokens_estimated ? PUTL(o, "true") : PUTL(o, "false");
    o = PUTL(o, ",\"cost_usd\":");
    o = put_measure(o, r->cost_usd, 8);
    o = PUTL(o, ",\"attempts\":");
    o = put_i64(o, r->attempts);
    o = PUTL(o, ",\"error\":");
    o = put_str(o, strs[5], lens[5]);
    o = PUTL(o, ",\"shadowed\":");
    o = put_i64(o, r->shadowed);
    o = PUTL(o, ",\"trace_id\":");
    o = put_str(o, strs[6], lens[6]);
    if (l->prompts) {
        o = PUTL(o, ",\"prompt\":");
        o = put_str(o, r->prompt, prl);
        o = pcut ? PUTL(o, ",\"prompt_truncated\":true") : PUTL(o, ",\"prompt_truncated\":false");
    }
    o = PUTL(o, "}\n");
    w->b.len += (size_t)(o - start);
    w->nlines++;

    if (buf_used(&w->b) >= l->buffer_bytes) {
        if (!(w->blocked && w->loop)) /* blocked: the timer retries */
            flush(w);
    } else if (was_empty && w->loop && !ev_timer_active(&w->timer)) {
        ev_timer_start(w->loop, &w->timer, l->flush_ms);
    }
}

/* ------------------------------------------------------------ life cycle */

static bool path_is_stdout(const char *p) { return strcmp(p, "stdout") == 0 || strcmp(p, "-") == 0; }

struct accesslog *accesslog_open(const struct accesslog_opts *o, char *err, size_t errlen)
{
    if (!o || !o->path || !*o->path) {
        snprintf(err, errlen, "access log: no path");
        return NULL;
    }
    struct accesslog *l = calloc(1, sizeof *l);
    if (!l || !(l->path = strdup(o->path))) {
        free(l);
        snprintf(err, errlen, "access log: out of memory");
        return NULL;
    }
    l->prompts = o->prompts;
    l->buffer_bytes = o->buffer_bytes ? o->buffer_bytes : ALOG_DEFAULT_BUFFER;
    if (l->buffer_bytes > MAX_BUFFER)
        l->buffer_bytes = MAX_BUFFER;
    l->flush_ms = o->flush_ms ? o->flush_ms : ALOG_DEFAULT_FLUSH_MS;
    l->is_stdout = path_is_stdout(o->path);
    if (l->is_stdout) {
        l->fd = STDOUT_FILENO;
    } else {
        l->fd = open(o->path, OPEN_FLAGS, 0644);
        if (l->fd < 0) {
            snprintf(err, errlen, "access log %s: %s", o->path, strerror(errno));
            free(l->path);
            free(l);
            return NULL;
        }
    }
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

int accesslog_reopen(struct accesslog *l)
{
    if (l->is_stdout)
        return 0;
    int fd = open(l->path, OPEN_FLAGS, 0644);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&l->mu);
    /* the torn line's start is in the old file: end it there if it can be */
    if (!write_carry(l)) {
        count(&l->dropped, 1);
        buf_reset(&l->carry);
    }
    int rc = dup3(fd, l->fd, O_CLOEXEC);
    int e = errno;
    pthread_mutex_unlock(&l->mu);
    close(fd);
    if (rc < 0) {
        errno = e;
        return -1;
    }
    return 0;
}

void accesslog_close(struct accesslog *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < 20 && !write_carry(l); i++) {
        struct pollfd pfd = { .fd = l->fd, .events = POLLOUT };
        poll(&pfd, 1, 50);
    }
    if (buf_used(&l->carry))
        count(&l->dropped, 1);
    pthread_mutex_unlock(&l->mu);
    if (!l->is_stdout)
        close(l->fd);
    buf_free(&l->carry);
    pthread_mutex_destroy(&l->mu);
    free(l->path);
    free(l);
}

struct alog_worker *accesslog_worker_new(struct accesslog *l, loop_t *loop)
{
    struct alog_worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->l = l;
    w->loop = loop;
    w->tsec = -1;
    w->retain = (size_t)l->buffer_bytes * RETAIN_FACTOR;
    if (w->retain < RETAIN_MIN)
        w->retain = RETAIN_MIN;
    ev_timer_init(&w->timer, on_timer, w);
    /* room for a full buffer plus the line that passes the threshold */
    if (!buf_reserve(&w->b, (size_t)l->buffer_bytes + 4096)) {
        free(w);
        return NULL;
    }
    return w;
}

void accesslog_worker_free(struct alog_worker *w)
{
    if (!w)
        return;
    /* a full non-blocking pipe: give the reader about a second */
    for (int i = 0; i < 20 && flush(w); i++) {
        struct pollfd pfd = { .fd = w->l->fd, .events = POLLOUT };
        poll(&pfd, 1, 50);
    }
    count(&w->l->dropped, w->nlines);
    if (w->loop)
        ev_timer_stop(w->loop, &w->timer);
    buf_free(&w->b);
    free(w);
}

void accesslog_get_stats(const struct accesslog *l, struct accesslog_stats *s)
{
    s->lines = atomic_load_explicit(&l->lines, memory_order_relaxed);
    s->dropped = atomic_load_explicit(&l->dropped, memory_order_relaxed);
    s->write_errors = atomic_load_explicit(&l->write_errors, memory_order_relaxed);
}
