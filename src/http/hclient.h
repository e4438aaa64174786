/* hclient.h — one blocking HTTP/1.1 client for background threads.
 *
 * The judge (judge.c) and the OTLP exporter (trace.c) each make one request
 * at a time from their own thread, to an endpoint from the configuration,
 * and never forward what they read.  They do not need the worker loop's
 * client (upstream.c); they need a call that blocks with a deadline:
 *
 *   connect (each resolved address in turn) ─▶ send ─▶ read until the
 *   response is complete, the peer closes, or the deadline passes
 *
 * on a fresh connection each time (Connection: close), plain TCP only: both
 * callers talk to the gateway's own listener or to a local collector, and
 * neither accepts an https:// endpoint.  Responses are framed by h1.c, the
 * same rules as the gateway's own upstream client (interim 1xx skipped,
 * Content-Length, chunked, close-delimited, 204/304 without a body); a body
 * is bounded by the caller's max_response.
 *
 * Every wait is a poll() bounded by the deadline and, when the caller gives
 * one, by a cancel fd (an eventfd that becomes readable to stop the thread),
 * so a call in progress can be dropped at once.
 */
#ifndef SHADE_HCLIENT_H
#define SHADE_HCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"

#define HC_MAX_ADDRS 4

/* The addresses of an endpoint, resolved once (or before every call). */
struct hc_addrs {
    struct sockaddr_storage addr[HC_MAX_ADDRS];
    socklen_t len[HC_MAX_ADDRS];
    int n;
};

/* Resolve host (a name or a numeric address, no brackets) and a numeric
 * port.  0, or -1 with *why saying why (getaddrinfo's message, or that no
 * address was usable). */
int hc_resolve(const char *host, const char *port, struct hc_addrs *out, const char **why);

enum hc_err {
    HC_OK,
    HC_ECONNECT,  /* no address accepted the connection before the deadline */
    HC_ESEND,     /* the request could not be sent in full */
    HC_ETIMEOUT,  /* the deadline passed before the response was complete */
    HC_ECLOSED,   /* the peer closed before the response was complete */
    HC_EPROTO,    /* the response is not HTTP/1.x as h1.h frames it */
    HC_ETOOBIG,   /* the body is longer than max_response */
    HC_ENOMEM,
    HC_ESTOPPED,  /* cancel_fd became readable */
};

/* What an error is, in a few words for a log line ("timed out"). */
const char *hc_err_str(enum hc_err e);

struct hc_request {
    const struct hc_addrs *addrs;
    const char *method, *path;
    const char *authority;      /* the Host header: "host:port", "[v6]:port" */
    const char *headers;        /* more header lines, each ending in CRLF, or NULL */
    const char *content_type;   /* with a body; NULL: no Content-Type */
    const char *body;
    size_t body_len;            /* Content-Length is always sent */
    uint64_t deadline_ms;       /* the whole call, on hc_now_ms()'s clock */
    size_t max_response;        /* body bytes kept; a longer body is HC_ETOOBIG */
    int cancel_fd;              /* readable: stop with HC_ESTOPPED; -1 for none */
};

struct hc_response {
    int status;                 /* the final (non-1xx) status; 0 until its head is in */
    struct buf body;            /* the body so far (whole when HC_OK); the caller frees it */
};

/* An endpoint from the configuration, "http://host[:port][/path]": host and
 * port to resolve, the authority (the Host header) and the path (with a
 * leading '/', the query kept, a fragment dropped).  No https (this client
 * has no TLS), no user part, a port 1-65535 (80 when absent), no spaces or
 * control characters.  0, or -1 with *why; hc_url_free frees the strings. */
struct hc_url {
    char host[256], port[8];
    char *authority, *path;
};
int hc_url_parse(const char *url, struct hc_url *u, const char **why);
void hc_url_free(struct hc_url *u);

/* Milliseconds on CLOCK_MONOTONIC, the clock of deadline_ms. */
uint64_t hc_now_ms(void);

/* Make one request.  HC_OK when the response is complete; otherwise what
 * went wrong — rs->status is still set when a final head came before the
 * failure (a caller may decide by the status alone), and rs->body holds
 * what arrived of the body, at most max_response bytes. */
enum hc_err hc_call(const struct hc_request *rq, struct hc_response *rs);

#endif
