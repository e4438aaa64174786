/* accesslog.h — one JSON line per request, to a file or stdout.
 *
 * Buffering.  A worker serves tens of thousands of requests a second, so a
 * write() per request is out of the question.  Each worker thread owns an
 * alog_worker: a private buffer that accesslog_write() appends a finished
 * line to (no lock, no syscall).  The buffer is written out in one write()
 * of whole lines when it passes opts.buffer_bytes, or when a timer fires
 * opts.flush_ms after the first line went into an empty buffer (nginx's
 * `access_log ... buffer=32k flush=1s`).  The timer runs only while the
 * buffer holds something.
 *
 * Whole lines.  Every line ends in the only raw '\n' it contains (strings
 * are JSON-escaped), a flush writes whole lines, and flushes from all
 * workers are serialised by one process-wide mutex, so lines from different
 * workers never interleave, even on a pipe where the kernel would split a
 * large write.  If a write() is short (a non-blocking pipe that filled up, a
 * disk that filled up) the unwritten tail of the line it tore is kept in a
 * process-wide "carry" that the next flush from any worker writes first;
 * nothing else is written until that line is complete.
 *
 * Back-pressure.  When the descriptor says EAGAIN (stdout is a full
 * non-blocking pipe) the worker keeps its lines and retries on its timer;
 * past a cap (8 × buffer_bytes, at least 256 KiB) new lines are dropped
 * whole and counted.  Any other write error drops the lines of that flush
 * and counts the error: the log never blocks on anything but the kernel's
 * own write(), and a full disk costs lines, not requests.
 *
 * Rotation.  logrotate renames the file and sends SIGUSR1; the thread that
 * waits for signals calls accesslog_reopen(), which opens the configured
 * path again (creating a new file) and dup3()s it over the descriptor the
 * workers use.  The swap is atomic: the fd number never changes, a flush is
 * written wholly to the old or wholly to the new file.  On failure the old
 * file stays in use.  "stdout" is never reopened.
 *
 * Privacy.  Headers, keys and query strings are never logged (the path is
 * cut at '?' even if the caller forgot).  The prompt is logged only with
 * opts.prompts, and then at most ALOG_PROMPT_MAX bytes of it.
 *
 * Line format — one JSON object, keys always present and in this order,
 * null where a value is absent or unknown:
 *   time              "2026-11-21T10:00:00.123Z": UTC, to the nearest ms, when the request
 *                     started (record.ts; 0 = now)
 *   request_id        the request's id (the client's X-Request-Id or ours)
 *   method, path      HTTP method and path without the query string
 *   client            "ip:port" of the peer
 *   model             the model the client asked for
 *   served_model      the model that answered (differs after a fallback)
 *   variant           which route served it: "primary", "fallback", ...
 *   backend           the backend that produced the response
 *   status            HTTP status sent to the client (0: none was sent)
 *   stream            true for an SSE response
 *   latency_ms        request start to last byte sent, ms (3 decimals)
 *   ttft_ms           request start to first content token, ms; null when
 *                     there was none (errors, non-streamed responses may
 *                     leave it absent)
 *   overhead_us       time spent in the gateway itself, µs (1 decimal)
 *   tokens_in         prompt tokens; null if unknown
 *   tokens_out        completion tokens; null if unknown
 *   tokens_estimated  true when the counts are the gateway's estimate, not
 *                     the backend's usage; null when both counts are null
 *   cost_usd          estimated cost in USD (8 decimals); null if unknown
 *   attempts          upstream attempts (retries and fallbacks included)
 *   error             error kind ("timeout", "upstream_5xx", ...) or null
 *   shadowed          how many shadows mirrored the request
 *   trace_id          W3C trace id (32 hex) or null
 *   prompt            only with opts.prompts: the prompt text as given,
 *                     cut to ALOG_PROMPT_MAX bytes at a character boundary
 *   prompt_truncated  only with opts.prompts: true when it was cut
 * Numbers are trimmed of trailing zeros (12.5, not 12.500).  Strings other
 * than the prompt are cut to ALOG_STR_MAX bytes.  Control characters are
 * escaped and bytes that are not valid UTF-8 become U+FFFD, so a hostile
 * request id, path or model name cannot break or forge a line.
 *
 * Threads.  accesslog_open/close: once, by the main thread.  A worker's
 * functions: only on that worker's thread (its loop's thread).  reopen and
 * get_stats: any thread (not from a signal handler: reopen takes a mutex).
 */
#ifndef SHADE_ACCESSLOG_H
#define SHADE_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define ALOG_PROMPT_MAX 4096   /* bytes of the prompt kept, before escaping */
#define ALOG_STR_MAX 1024      /* bytes kept of any other string */
#define ALOG_DEFAULT_BUFFER 32768
#define ALOG_DEFAULT_FLUSH_MS 1000

struct accesslog_opts {
    const char *path;       /* file path, or "stdout" (also "-") */
    bool prompts;           /* include the prompt (bounded) */
    uint32_t buffer_bytes;  /* per worker; 0 = 32768; 1 = flush every line */
    uint32_t flush_ms;      /* 0 = 1000 */
};

struct accesslog;   /* process-wide: the fd, the path, the counters */

/* Open (create, append, mode 0644 before umask) the file.  NULL on failure
 * with a message in err. */
struct accesslog *accesslog_open(const struct accesslog_opts *o, char *err, size_t errlen);
/* Open the path again and swap it in (SIGUSR1 after a rename).  0, or -1
 * with errno set (print strerror(errno)); the old file stays in use then.
 * Logs nothing itself.  A no-op for stdout. */
int accesslog_reopen(struct accesslog *l);
/* After every worker has been freed: writes what a torn write left, closes
 * the file (never stdout). */
void accesslog_close(struct accesslog *l);

struct alog_worker;   /* one per worker thread */

/* loop may be NULL: no timer then, the owner calls accesslog_flush(). */
struct alog_worker *accesslog_worker_new(struct accesslog *l, loop_t *loop);
/* Flushes first (waiting up to about a second for a full pipe), then frees.
 * On the worker's thread, or after its loop has stopped — but before
 * loop_free(): it stops the worker's timer. */
void accesslog_worker_free(struct alog_worker *w);
/* Write out what the worker holds now. */
void accesslog_flush(struct alog_worker *w);

struct access_record {
    double ts;                      /* unix seconds when the request started; 0 = now */
    const char *request_id; size_t request_id_len;
    const char *method; size_t method_len;
    const char *path; size_t path_len;   /* path without query (cut at '?' anyway) */
    const char *client;             /* "ip:port" or NULL */
    const char *model;              /* requested public model or NULL */
    const char *served_model;       /* model that served it (differs on fallback) or NULL */
    const char *variant;            /* "primary" | "fallback" | ... or NULL */
    const char *backend;            /* or NULL */
    const char *key;                /* the API key's name (auth), or NULL */
    int status;
    bool stream;
    double latency_ms;              /* <0 = none */
    double ttft_ms;                 /* <0 = none */
    double overhead_us;             /* <0 = none */
    int64_t tokens_in, tokens_out;  /* <0 = unknown */
    bool tokens_estimated;
    double cost_usd;                /* <0 = unknown */
    int attempts;                   /* upstream attempts */
    const char *error;              /* error kind or NULL */
    int shadowed;                   /* number of shadows that mirrored it */
    const char *trace_id;           /* 32 hex or NULL */
    const char *prompt; size_t prompt_len; /* written only with opts.prompts */
};

/* Format r into the worker's buffer (flushing it if it passed
 * buffer_bytes).  The record's strings are not kept. */
void accesslog_write(struct alog_worker *w, const struct access_record *r);

struct accesslog_stats {
    uint64_t lines;          /* complete lines written to the file */
    uint64_t dropped;        /* lines lost: back-pressure cap, write errors, memory */
    uint64_t write_errors;   /* failed write() calls other than EAGAIN */
};
void accesslog_get_stats(const struct accesslog *l, struct accesslog_stats *s);

#endif
