/* h1.h — shade's own HTTP/1.1 request framing, held to RFC 9112.
 *
 * What a client sends is parsed here, not by llhttp: llhttp 8.1.0 (the
 * version Debian ships) ends a header line at a CR followed by any byte and
 * skips any two bytes after chunk data, two request-smuggling primitives
 * (the CVE-2023-30589 class), and rejects valid unquoted chunk extensions.
 * A framing parser is small enough to own outright and to fuzz against
 * itself (fuzz/fuzz_h1.c: any split of the input gives the same result).
 *
 * Two pieces, both pure (no I/O, no allocation):
 *
 *   head   h1_head_end() finds the empty line that ends a request head,
 *          incrementally; h1_parse_request() then validates the complete
 *          head in place and fills header pointers into it.
 *   body   h1_body_feed() decodes a Content-Length or chunked body from
 *          whatever pieces the network gives, handing data to a sink.
 *
 * Rules (each one closes a way for two parsers to disagree on where a
 * message ends):
 *   - a line ends with CRLF; a lone LF is accepted as a line end too
 *     (RFC 9112 2.2 allows it) and a CR anywhere else is an error;
 *   - request line: method SP request-target SP HTTP/D.D, single spaces;
 *     the target is visible ASCII; major version other than 1 → 505;
 *   - header names are tokens directly followed by ':' (no space before the
 *     colon); values are visible ASCII, obs-text, SP and HTAB only (no NUL,
 *     no control bytes); a line starting with SP or HTAB (obs-fold) → 400;
 *   - HTTP/1.1 needs exactly one Host, HTTP/1.0 at most one;
 *   - Content-Length is digits; repeats (as headers or as a list) must
 *     agree;
 *   - Transfer-Encoding: only in HTTP/1.1, never with Content-Length,
 *     `chunked` exactly once and last; other codings before it (gzip,
 *     chunked) → 501, as nginx answers;
 *   - chunked: hex size (at most 16 significant digits), extensions
 *     `;name[=token|"quoted"]` with optional whitespace around ';' and '=',
 *     chunk data followed by exactly CRLF (or LF), trailer fields checked
 *     like header fields and then dropped.
 */
#ifndef SHADE_H1_H
#define SHADE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* RFC 9110 token character (header names, methods, codings). */
bool http_is_tchar(unsigned char ch);

/* Bounds on the parts of a chunked body that are not data. */
#define H1_MAX_CHUNK_LINE 4096     /* a size line with its extensions */
#define H1_MAX_TRAILER    16384    /* the whole trailer section */

/* The length of the request head at the start of p[0..n), up to and
 * including the empty line that ends it, or 0 while it is incomplete.
 * *scanned keeps how far earlier calls looked (start it at 0 for each
 * request), so a head that arrives a byte at a time costs linear time.
 * The caller drops empty lines before a request line first (RFC 9112 2.2
 * says to ignore them): h1_skip_empty_lines(). */
size_t h1_head_end(const char *p, size_t n, size_t *scanned);

/* A head that arrives in pieces at a client (upstream.c, hclient.c):
 * append p[0..n) to head — max + 1 bytes in all at most — and look for its
 * end as h1_head_end does (*scanned as there).  Returns the head's length
 * once complete, head cut to it and *used = the bytes of p it took (the
 * rest of p is body); 0 while incomplete (*used = n); -1 when the head
 * passes max, -2 when memory runs out. */
struct buf;
long h1_head_gather(struct buf *head, size_t *scanned, size_t max, const char *p, size_t n, size_t *used);
/* How many bytes of CRLF / LF empty lines start p[0..n) (a trailing lone CR
 * is left: it may be the start of the next CRLF). */
size_t h1_skip_empty_lines(const char *p, size_t n);

enum h1_framing { H1_NO_BODY, H1_LENGTH, H1_CHUNKED, H1_UNTIL_CLOSE };

struct h1_request {
    const char *method; size_t method_len;
    const char *target; size_t target_len;
    int minor;                   /* HTTP/1.minor */
    size_t nhdrs;
    enum h1_framing framing;
    uint64_t content_length;     /* H1_LENGTH; UINT64_MAX when it overflowed */
    bool keep_alive;             /* HTTP/1.1 unless "close", 1.0 only with "keep-alive" */
};

/* How many header lines a head of this length can hold at most (for sizing
 * the hdrs array before h1_parse_request). */
size_t h1_count_lines(const char *head, size_t n);

/* Parse a complete head (length from h1_head_end) in place: rq and hdrs[]
 * point into head.  max_hdrs is the capacity of hdrs.  Returns 0, or the
 * HTTP status to answer (400, 431, 501, 505) with *msg saying why. */
int h1_parse_request(const char *head, size_t n, struct h1_request *rq, struct http_hdr *hdrs,
                     size_t max_hdrs, const char **msg);

/* Responses (from backends to shade's upstream client, and to the blocking
 * client of background threads, hclient.c).  The same line and
 * field rules as requests; the status line is HTTP/1.x SP 3DIGIT SP reason.
 * Framing per RFC 9112 6.3: 1xx, 204 and 304 have no body; a final chunked
 * coding is chunked (with Content-Length too, the connection is not reused);
 * any other Transfer-Encoding, or neither header, reads until the close. */
struct h1_response {
    int status;
    int minor;
    size_t nhdrs;
    enum h1_framing framing;
    uint64_t content_length;     /* H1_LENGTH */
    bool has_content_length;
    bool keep_alive;             /* false for bodies that end at the close */
};

/* Parse a complete response head in place, as h1_parse_request does.
 * Returns 0, or -1 with *msg saying why (the response is unusable). */
int h1_parse_response(const char *head, size_t n, struct h1_response *rs, struct http_hdr *hdrs,
                      size_t max_hdrs, const char **msg);

/* Body data goes to a sink; a sink returns 0, or an HTTP status to stop
 * with (413 when a limit is passed), setting *msg. */
typedef int (*h1_sink)(void *arg, const char *data, size_t len, const char **msg);

struct h1_body {
    enum h1_framing framing;
    uint64_t remaining;          /* bytes left in the body (LENGTH) or current chunk */
    uint32_t state;
    uint32_t line;               /* bytes of the current size or trailer line */
    uint32_t trailer;            /* bytes of the trailer section */
    uint32_t digits;             /* significant hex digits of the size */
    bool done;                   /* the message has ended */
};

void h1_body_init(struct h1_body *b, enum h1_framing f, uint64_t content_length);
/* Decode from p[0..n).  Returns the bytes consumed (it stops right after the
 * end of the message, so pipelined bytes stay with the caller), or -1 with
 * *status and *msg set (400 for bad framing, or what the sink returned).
 * H1_UNTIL_CLOSE takes everything: the caller ends it at the close. */
long h1_body_feed(struct h1_body *b, const char *p, size_t n, h1_sink sink, void *arg, int *status,
                  const char **msg);

#endif
