/* h1.c — HTTP/1.1 request framing held to RFC 9112 (see h1.h for the rules
 * and why shade parses requests itself). */
#include "h1.h"

#include "buf.h"

#include <string.h>
#include <strings.h>

/* ---------- character classes ---------- */

enum { C_TCHAR = 1, C_VCHAR = 2, C_TARGET = 4, C_HOST = 8, C_QDTEXT = 16 };

static unsigned char cls[256];

__attribute__((constructor)) static void cls_setup(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char f = 0;
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (alnum || (c && strchr("!#$%&'*+-.^_`|~", c)))
            f |= C_TCHAR;
        /* field-value = *( field-vchar / SP / HTAB ), field-vchar = VCHAR / obs-text */
        if (c == '\t' || (c >= 0x20 && c <= 0x7e) || c >= 0x80)
            f |= C_VCHAR;
        if (c >= 0x21 && c <= 0x7e)
            f |= C_TARGET;
        /* uri-host [ ":" port ]: unreserved, sub-delims, pct-encoded, IP-literal */
        if (alnum || (c && strchr("-._~!$&'()*+,;=:[]%", c)))
            f |= C_HOST;
        /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
        if (c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) ||
            c >= 0x80)
            f |= C_QDTEXT;
        cls[c] = f;
    }
}

#define IS(c, f) (cls[(unsigned char)(c)] & (f))

bool http_is_tchar(unsigned char ch) { return cls[ch] & C_TCHAR; }

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---------- the head ---------- */

size_t h1_skip_empty_lines(const char *p, size_t n)
{
    size_t i = 0;
    for (;;) {
        if (i < n && p[i] == '\n')
            i += 1;
        else if (i + 1 < n && p[i] == '\r' && p[i + 1] == '\n')
            i += 2;
        else
            return i;
    }
}

size_t h1_head_end(const char *p, size_t n, size_t *scanned)
{
    size_t i = *scanned;
    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        if (!nl) {
            *scanned = n;
            return 0;
        }
        i = (size_t)(nl - p);
        /* an empty line follows: LF, or CR LF */
        if (i + 1 >= n || (p[i + 1] == '\r' && i + 2 >= n)) {
            *scanned = i; /* look at this line end again when more arrives */
            return 0;
        }
        if (p[i + 1] == '\n')
            return i + 2;
        if (p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
        i++;
    }
    *scanned = n;
    return 0;
}

long h1_head_gather(struct buf *head, size_t *scanned, size_t max, const char *p, size_t n, size_t *used)
{
    size_t before = buf_used(head);
    size_t take = n < max + 1 - before ? n : max + 1 - before;
    if (buf_append(head, p, take) < 0)
        return -2;
    size_t hl = h1_head_end(buf_data(head), buf_used(head), scanned);
    if (hl == 0) {
        *used = n;
        return buf_used(head) > max ? -1 : 0;
    }
    /* what followed the head in this piece is not part of it */
    size_t past = buf_used(head) - hl;
    head->len -= past;
    *used = take - past;
    return (long)hl;
}

size_t h1_count_lines(const char *head, size_t n)
{
    size_t k = 0;
    for (const char *p = head, *e = head + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
        k++;
    return k;
}

/* The next line of [*p, e): its content without the line end.  The head
 * ends with an empty line, so every line has its LF. */
static bool next_line(const char **p, const char *e, const char **ls, size_t *ll)
{
    const char *nl = memchr(*p, '\n', (size_t)(e - *p));
    if (!nl)
        return false;
    *ls = *p;
    *ll = (size_t)(nl - *p);
    if (*ll && nl[-1] == '\r')
        (*ll)--;
    *p = nl + 1;
    return true;
}

static bool ci_eq(const char *a, size_t al, const char *b)
{
    size_t bl = strlen(b);
    return al == bl && strncasecmp(a, b, bl) == 0;
}

/* Iterate the elements of a comma-separated list value (RFC 9110 5.6.1),
 * trimmed of OWS; empty elements are skipped. */
struct list_it { const char *p, *e; };

static bool list_next(struct list_it *it, const char **s, size_t *l)
{
    while (it->p < it->e) {
        const char *a = it->p;
        const char *comma = memchr(a, ',', (size_t)(it->e - a));
        const char *b = comma ? comma : it->e;
        it->p = comma ? comma + 1 : it->e;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (b > a) {
            *s = a;
            *l = (size_t)(b - a);
            return true;
        }
    }
    return false;
}

/* One field line "name: value" into h; 0 or 400 with *msg. */
static int parse_field(const char *ls, size_t ll, struct http_hdr *h, const char **msg)
{
    if (ll && (ls[0] == ' ' || ls[0] == '\t')) {
        *msg = "malformed HTTP request: folded header line";
        return 400;
    }
    size_t i = 0;
    while (i < ll && IS(ls[i], C_TCHAR))
        i++;
    if (i == ll || ls[i] != ':') {
        *msg = memchr(ls, '\r', ll) ? "malformed HTTP request: CR not followed by LF"
             : i == ll || ls[i] == ' ' || ls[i] == '\t' || i == 0
                 ? "malformed HTTP request: invalid header line"
                 : "malformed HTTP request: invalid character in a header name";
        return 400;
    }
    if (i == 0) {
        *msg = "malformed HTTP request: empty header name";
        return 400;
    }
    h->name = ls;
    h->name_len = i;
    size_t a = i + 1, b = ll;
    for (size_t k = a; k < b; k++)
        if (!IS(ls[k], C_VCHAR)) {
            *msg = ls[k] == '\r' ? "malformed HTTP request: CR not followed by LF"
                                 : "malformed HTTP request: invalid character in a header value";
            return 400;
        }
    while (a < b && (ls[a] == ' ' || ls[a] == '\t'))
        a++;
    while (b > a && (ls[b - 1] == ' ' || ls[b - 1] == '\t'))
        b--;
    h->value = ls + a;
    h->value_len = b - a;
    return 0;
}

static int parse_request_line(const char *ls, size_t ll, struct h1_request *rq, const char **msg)
{
    size_t i = 0;
    while (i < ll && IS(ls[i], C_TCHAR))
        i++;
    if (i == 0 || i == ll || ls[i] != ' ')
        goto bad;
    rq->method = ls;
    rq->method_len = i;
    size_t t = ++i;
    while (i < ll && IS(ls[i], C_TARGET))
        i++;
    if (i == t || i == ll || ls[i] != ' ')
        goto bad;
    rq->target = ls + t;
    rq->target_len = i - t;
    i++;
    if (ll - i != 8 || memcmp(ls + i, "HTTP/", 5) != 0 || ls[i + 5] < '0' || ls[i + 5] > '9' ||
        ls[i + 6] != '.' || ls[i + 7] < '0' || ls[i + 7] > '9')
        goto bad;
    if (ls[i + 5] != '1') {
        *msg = "only HTTP/1.x is supported";
        return 505;
    }
    rq->minor = ls[i + 7] - '0';
    return 0;
bad:
    *msg = memchr(ls, '\r', ll) ? "malformed HTTP request: CR not followed by LF"
                                : "malformed HTTP request: invalid request line";
    return 400;
}

/* Content-Length: 1*DIGIT, possibly repeated as a list or as several
 * fields; all must agree (RFC 9112 6.3 item 5). */
static int content_length(const struct http_hdr *h, bool *seen, uint64_t *len, const char **msg)
{
    struct list_it it = { h->value, h->value + h->value_len };
    const char *s;
    size_t l;
    bool any = false;
    while (list_next(&it, &s, &l)) {
        uint64_t v = 0;
        for (size_t i = 0; i < l; i++) {
            if (s[i] < '0' || s[i] > '9') {
                *msg = "malformed HTTP request: invalid Content-Length";
                return 400;
            }
            unsigned d = (unsigned)(s[i] - '0');
            v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
        }
        if (*seen && v != *len) {
            *msg = "malformed HTTP request: conflicting Content-Length values";
            return 400;
        }
        *seen = true;
        *len = v;
        any = true;
    }
    if (!any) {
        *msg = "malformed HTTP request: invalid Content-Length";
        return 400;
    }
    return 0;
}

/* Transfer-Encoding codings, over every such field in order. */
struct te_state { int codings, chunked, last_chunked; };

static void transfer_encoding(const struct http_hdr *h, struct te_state *te)
{
    struct list_it it = { h->value, h->value + h->value_len };
    const char *s;
    size_t l;
    while (list_next(&it, &s, &l)) {
        te->codings++;
        te->last_chunked = ci_eq(s, l, "chunked");
        te->chunked += te->last_chunked;
    }
}

/* What the field section says about framing and the connection. */
struct fields_info {
    size_t hosts;
    const struct http_hdr *host;   /* the last Host */
    bool cl_seen, te_seen, conn_close, conn_ka;
    uint64_t content_length;
    struct te_state te;
};

/* Parse the field lines after the start line, up to the empty line that
 * ends the head: each checked (parse_field), the framing headers read.
 * 0, 431 (too many for hdrs), or 400 with *msg. */
static int parse_fields(const char **p, const char *e, struct http_hdr *hdrs, size_t max_hdrs, size_t *nhdrs,
                        struct fields_info *fi, const char **msg)
{
    const char *ls;
    size_t ll, nh = 0;
    int st;
    memset(fi, 0, sizeof *fi);
    while (next_line(p, e, &ls, &ll) && ll > 0) {
        if (nh == max_hdrs) {
            *msg = "too many headers";
            return 431;
        }
        struct http_hdr *h = &hdrs[nh];
        if ((st = parse_field(ls, ll, h, msg)) != 0)
            return st;
        nh++;
        if (ci_eq(h->name, h->name_len, "host")) {
            fi->hosts++;
            fi->host = h;
        } else if (ci_eq(h->name, h->name_len, "content-length")) {
            if ((st = content_length(h, &fi->cl_seen, &fi->content_length, msg)) != 0)
                return st;
        } else if (ci_eq(h->name, h->name_len, "transfer-encoding")) {
            fi->te_seen = true;
            transfer_encoding(h, &fi->te);
        } else if (ci_eq(h->name, h->name_len, "connection")) {
            struct list_it it = { h->value, h->value + h->value_len };
            const char *s;
            size_t l;
            while (list_next(&it, &s, &l)) {
                fi->conn_close |= ci_eq(s, l, "close");
                fi->conn_ka |= ci_eq(s, l, "keep-alive");
            }
        }
    }
    if (*p != e) {
        /* the empty line is not the end of what h1_head_end measured */
        *msg = "malformed HTTP request: incomplete head";
        return 400;
    }
    *nhdrs = nh;
    return 0;
}

int h1_parse_request(const char *head, size_t n, struct h1_request *rq, struct http_hdr *hdrs,
                     size_t max_hdrs, const char **msg)
{
    memset(rq, 0, sizeof *rq);
    const char *p = head, *e = head + n, *ls;
    size_t ll;
    if (!next_line(&p, e, &ls, &ll)) {
        *msg = "malformed HTTP request: incomplete head";
        return 400;
    }
    int st = parse_request_line(ls, ll, rq, msg);
    if (st)
        return st;

    struct fields_info fi;
    if ((st = parse_fields(&p, e, hdrs, max_hdrs, &rq->nhdrs, &fi, msg)) != 0) {
        if (st == 431)
            *msg = "too many request headers";
        return st;
    }
    rq->content_length = fi.content_length;

    /* RFC 9112 3.2: a 1.1 request without Host, or any with more than one, is a 400 */
    if (fi.hosts > 1 || (fi.hosts == 0 && rq->minor >= 1)) {
        *msg = fi.hosts ? "malformed HTTP request: more than one Host header"
                        : "malformed HTTP request: missing Host header";
        return 400;
    }
    for (size_t k = 0; fi.host && k < fi.host->value_len; k++)
        if (!IS(fi.host->value[k], C_HOST)) {
            *msg = "malformed HTTP request: invalid Host header";
            return 400;
        }
    const struct te_state te = fi.te;
    if (fi.te_seen) {
        if (rq->minor == 0) {
            *msg = "malformed HTTP request: Transfer-Encoding in an HTTP/1.0 request";
            return 400;
        }
        if (fi.cl_seen) {
            *msg = "malformed HTTP request: both Content-Length and Transfer-Encoding";
            return 400;
        }
        /* RFC 9112 6.3 item 4: chunked must be the final coding, once */
        if (te.codings == 0 || te.chunked != 1 || !te.last_chunked) {
            *msg = "malformed HTTP request: Transfer-Encoding must end with chunked, once";
            return 400;
        }
        if (te.codings > 1) {
            *msg = "unsupported transfer coding: only chunked is accepted";
            return 501;
        }
        rq->framing = H1_CHUNKED;
    } else if (fi.cl_seen) {
        rq->framing = rq->content_length ? H1_LENGTH : H1_NO_BODY;
    } else {
        rq->framing = H1_NO_BODY;
    }
    rq->keep_alive = rq->minor >= 1 ? !fi.conn_close : (fi.conn_ka && !fi.conn_close);
    return 0;
}

/* ---------- responses ---------- */

int h1_parse_response(const char *head, size_t n, struct h1_response *rs, struct http_hdr *hdrs,
                      size_t max_hdrs, const char **msg)
{
    memset(rs, 0, sizeof *rs);
    const char *p = head, *e = head + n, *ls;
    size_t ll;
    if (!next_line(&p, e, &ls, &ll)) {
        *msg = "incomplete response head";
        return -1;
    }
    /* HTTP/1.x SP 3DIGIT SP reason-phrase (the reason may be empty, and
     * some servers leave out the space before it) */
    if (ll < 12 || memcmp(ls, "HTTP/1.", 7) != 0 || ls[7] < '0' || ls[7] > '9' || ls[8] != ' ' ||
        ls[9] < '1' || ls[9] > '5' || ls[10] < '0' || ls[10] > '9' || ls[11] < '0' || ls[11] > '9' ||
        (ll > 12 && ls[12] != ' ')) {
        *msg = "invalid status line";
        return -1;
    }
    for (size_t k = 12; k < ll; k++)
        if (!IS(ls[k], C_VCHAR)) {
            *msg = "invalid status line";
            return -1;
        }
    rs->minor = ls[7] - '0';
    rs->status = (ls[9] - '0') * 100 + (ls[10] - '0') * 10 + (ls[11] - '0');
    struct fields_info fi;
    if (parse_fields(&p, e, hdrs, max_hdrs, &rs->nhdrs, &fi, msg) != 0)
        return -1;
    rs->content_length = fi.content_length;
    const struct te_state te = fi.te;
    rs->keep_alive = rs->minor >= 1 ? !fi.conn_close : (fi.conn_ka && !fi.conn_close);
    if (rs->status < 200 || rs->status == 204 || rs->status == 304) {
        rs->framing = H1_NO_BODY;
    } else if (fi.te_seen && rs->minor >= 1) {
        if (te.chunked == 1 && te.last_chunked) {
            rs->framing = H1_CHUNKED;
        } else if (te.chunked > 1) {
            *msg = "chunked applied twice";
            return -1;
        } else {
            rs->framing = H1_UNTIL_CLOSE;
        }
        /* RFC 9112 6.1: a message with both is never reused */
        if (fi.cl_seen || rs->framing == H1_UNTIL_CLOSE)
            rs->keep_alive = false;
    } else if (fi.cl_seen) {
        rs->framing = H1_LENGTH;
        rs->has_content_length = true;
        if (fi.te_seen) /* HTTP/1.0 with Transfer-Encoding: framing is suspect */
            rs->keep_alive = false;
    } else {
        rs->framing = H1_UNTIL_CLOSE;
        rs->keep_alive = false;
    }
    if (rs->framing == H1_LENGTH && rs->content_length == 0)
        rs->framing = H1_NO_BODY;
    return 0;
}

/* ---------- the body ---------- */

enum {
    B_SIZE0,        /* first hex digit of a size */
    B_SIZE,         /* more hex digits */
    B_AFTER,        /* right after the size, a name or a value: ws, ';', '=' (name), line end */
    B_BWS,          /* whitespace after the size or a value: only ';' may follow */
    B_BWS_EQ,       /* whitespace after a name: '=' or ';' may follow */
    B_EXT_NAME0,    /* after ';' (and whitespace): first char of a name */
    B_EXT_NAME,
    B_EXT_VAL0,     /* after '=' (and whitespace) */
    B_EXT_TOKEN,
    B_EXT_QUOTED,
    B_EXT_QPAIR,
    B_SIZE_LF,      /* CR seen at the end of a size line */
    B_DATA,
    B_DATA_END,     /* CRLF after chunk data */
    B_DATA_LF,
    B_TRAILER0,     /* start of a trailer line, or the final empty line */
    B_TRAILER_NAME,
    B_TRAILER_VALUE,
    B_TRAILER_LF,
    B_END_LF,       /* CR of the final empty line seen */
    B_DONE,
};

void h1_body_init(struct h1_body *b, enum h1_framing f, uint64_t content_length)
{
    memset(b, 0, sizeof *b);
    b->framing = f;
    b->remaining = content_length;
    b->state = B_SIZE0;
    b->done = f == H1_NO_BODY || (f == H1_LENGTH && content_length == 0);
}

#define BAD(m)                                                                                      \
    do {                                                                                            \
        *status = 400;                                                                              \
        *msg = "malformed HTTP request: " m;                                                        \
        return -1;                                                                                  \
    } while (0)

long h1_body_feed(struct h1_body *b, const char *p, size_t n, h1_sink sink, void *arg, int *status,
                  const char **msg)
{
    if (b->done)
        return 0;
    if (b->framing == H1_UNTIL_CLOSE) {
        if (n) {
            int st = sink(arg, p, n, msg);
            if (st) {
                *status = st;
                return -1;
            }
        }
        return (long)n;
    }
    if (b->framing == H1_LENGTH) {
        size_t take = n < b->remaining ? n : (size_t)b->remaining;
        if (take) {
            int st = sink(arg, p, take, msg);
            if (st) {
                *status = st;
                return -1;
            }
        }
        b->remaining -= take;
        b->done = b->remaining == 0;
        return (long)take;
    }
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        if (b->state == B_DATA) {
            size_t take = n - i < b->remaining ? n - i : (size_t)b->remaining;
            int st = sink(arg, p + i, take, msg);
            if (st) {
                *status = st;
                return -1;
            }
            b->remaining -= take;
            i += take;
            if (b->remaining == 0)
                b->state = B_DATA_END;
            continue;
        }
        i++;
        if (b->state >= B_TRAILER0 && b->state <= B_END_LF && ++b->trailer > H1_MAX_TRAILER) {
            *status = 431;
            *msg = "request trailer fields are too large";
            return -1;
        }
        if (b->state < B_SIZE_LF && ++b->line > H1_MAX_CHUNK_LINE)
            BAD("chunk size line too long");
        switch (b->state) {
        case B_SIZE0:
        case B_SIZE: {
            int v = hexval(c);
            if (v >= 0) {
                if (b->remaining || v)
                    b->digits++;
                if (b->digits > 16)
                    BAD("chunk size too large");
                b->remaining = (b->remaining << 4) | (uint64_t)v;
                b->state = B_SIZE;
                break;
            }
            if (b->state == B_SIZE0)
                BAD("invalid chunk size");
            b->state = B_AFTER;
            __attribute__((fallthrough)); /* the byte after the size */
        }
        case B_AFTER:
        after:
            /* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ) */
            if (c == ' ' || c == '\t')
                b->state = B_BWS;
            else if (c == ';')
                b->state = B_EXT_NAME0;
            else if (c == '\r')
                b->state = B_SIZE_LF;
            else if (c == '\n')
                goto line_end;
            else
                BAD("invalid chunk extension");
            break;
        case B_BWS:
        case B_BWS_EQ:
            if (c == ';')
                b->state = B_EXT_NAME0;
            else if (c == '=' && b->state == B_BWS_EQ)
                b->state = B_EXT_VAL0;
            else if (c != ' ' && c != '\t')
                BAD("invalid chunk extension");
            break;
        case B_EXT_NAME0:
            if (c == ' ' || c == '\t')
                break;
            if (!IS(c, C_TCHAR))
                BAD("invalid chunk extension");
            b->state = B_EXT_NAME;
            break;
        case B_EXT_NAME:
            if (IS(c, C_TCHAR))
                break;
            if (c == '=')
                b->state = B_EXT_VAL0;
            else if (c == ' ' || c == '\t')
                b->state = B_BWS_EQ;
            else
                goto after;
            break;
        case B_EXT_VAL0:
            if (c == ' ' || c == '\t')
                break;
            if (c == '"')
                b->state = B_EXT_QUOTED;
            else if (IS(c, C_TCHAR))
                b->state = B_EXT_TOKEN;
            else
                BAD("invalid chunk extension");
            break;
        case B_EXT_TOKEN:
            if (IS(c, C_TCHAR))
                break;
            goto after;
        case B_EXT_QUOTED:
            if (c == '"')
                b->state = B_AFTER;
            else if (c == '\\')
                b->state = B_EXT_QPAIR;
            else if (!IS(c, C_QDTEXT))
                BAD("invalid chunk extension");
            break;
        case B_EXT_QPAIR:
            /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!(c == '\t' || (c >= 0x20 && c != 0x7f)))
                BAD("invalid chunk extension");
            b->state = B_EXT_QUOTED;
            break;
        case B_SIZE_LF:
            if (c != '\n')
                BAD("CR not followed by LF");
        line_end:
            b->line = 0;
            b->digits = 0;
            b->state = b->remaining ? B_DATA : B_TRAILER0;
            break;
        case B_DATA_END:
            if (c == '\r')
                b->state = B_DATA_LF;
            else if (c == '\n')
                b->state = B_SIZE0;
            else
                BAD("chunk data not followed by CRLF");
            break;
        case B_DATA_LF:
            if (c != '\n')
                BAD("chunk data not followed by CRLF");
            b->state = B_SIZE0;
            break;
        /* trailer fields: checked like header fields, then dropped */
        case B_TRAILER0:
            if (c == '\r') {
                b->state = B_END_LF;
            } else if (c == '\n') {
                b->state = B_DONE;
                b->done = true;
                return (long)i;
            } else if (IS(c, C_TCHAR)) {
                b->state = B_TRAILER_NAME;
            } else if (c == ' ' || c == '\t') {
                BAD("folded header line");
            } else {
                BAD("invalid trailer field");
            }
            break;
        case B_TRAILER_NAME:
            if (c == ':')
                b->state = B_TRAILER_VALUE;
            else if (!IS(c, C_TCHAR))
                BAD("invalid trailer field");
            break;
        case B_TRAILER_VALUE:
            if (c == '\r')
                b->state = B_TRAILER_LF;
            else if (c == '\n')
                b->state = B_TRAILER0;
            else if (!IS(c, C_VCHAR))
                BAD("invalid trailer field");
            break;
        case B_TRAILER_LF:
            if (c != '\n')
                BAD("CR not followed by LF");
            b->state = B_TRAILER0;
            break;
        case B_END_LF:
            if (c != '\n')
                BAD("CR not followed by LF");
            b->state = B_DONE;
            b->done = true;
            return (long)i;
        default:
            return (long)(i - 1);
        }
    }
    return (long)i;
}
