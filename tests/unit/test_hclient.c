/* test_hclient.c — the blocking client of background threads (hclient.c)
 * against a server thread in this process on 127.0.0.1 (an ephemeral
 * port) that answers each connection with canned bytes, sent in pieces of
 * a chosen size, then closes or keeps the connection open.
 */
#include "hclient.h"
#include "loopback.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* ---------- the server ---------- */

/* How one connection is answered (copied when it is accepted). */
struct script {
    const char *reply;  /* NULL: nothing */
    size_t piece;       /* bytes per send (a short pause between them); 0: all at once */
    bool hang;          /* after the reply, keep the connection until the client closes */
};

struct srv {
    int lfd, port;
    pthread_t th;
    atomic_bool stop;
    pthread_mutex_t mu;
    struct script next; /* under mu */
    struct buf req;     /* the last request, head and body (under mu) */
    size_t req_head;    /* its head's length */
};

/* Read a request (head, then Content-Length bytes) into s->req. */
static void srv_read(struct srv *s, int c)
{
    struct buf in = { 0 };
    size_t need = 0, head = 0;
    char tmp[65536];
    for (;;) {
        ssize_t k = recv(c, tmp, sizeof tmp, 0);
        if (k <= 0 || buf_append(&in, tmp, (size_t)k) < 0)
            break;
        if (!head) {
            const char *p = memmem(buf_data(&in), buf_used(&in), "\r\n\r\n", 4);
            if (!p)
                continue;
            head = (size_t)(p + 4 - buf_data(&in));
            /* the head as a string (the buffer may move: offsets from here on) */
            char *h = strndup(buf_data(&in), head);
            const char *cl = h ? strcasestr(h, "\r\ncontent-length:") : NULL;
            need = head + (cl ? strtoul(cl + 17, NULL, 10) : 0);
            free(h);
        }
        if (buf_used(&in) >= need)
            break;
    }
    pthread_mutex_lock(&s->mu);
    buf_free(&s->req);
    s->req = in;
    s->req_head = head;
    pthread_mutex_unlock(&s->mu);
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    int c;
    while ((c = loopback_accept(s->lfd, &s->stop)) >= 0) {
        pthread_mutex_lock(&s->mu);
        struct script sc = s->next;
        pthread_mutex_unlock(&s->mu);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        srv_read(s, c);
        size_t n = sc.reply ? strlen(sc.reply) : 0, piece = sc.piece ? sc.piece : n;
        for (size_t i = 0; i < n; i += piece) {
            if (send(c, sc.reply + i, n - i < piece ? n - i : piece, MSG_NOSIGNAL) < 0)
                break; /* the client gave up */
            if (sc.piece)
                sleep_ms(1);
        }
        /* hang: until the client closes (it is the client's deadline that ends this) */
        if (sc.hang)
            loopback_hold(c, &s->stop);
        close(c);
    }
    return NULL;
}

static bool srv_start(struct srv *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = loopback_listen(&s->port);
    return s->lfd >= 0 && pthread_create(&s->th, NULL, srv_main, s) == 0;
}

static void srv_stop(struct srv *s)
{
    atomic_store(&s->stop, true);
    pthread_join(s->th, NULL);
    close(s->lfd);
    buf_free(&s->req);
    pthread_mutex_destroy(&s->mu);
}

static struct srv S;
static struct hc_addrs ADDRS;
static char AUTHORITY[32];

/* One call to the server answering with `reply`; the deadline is ms away. */
static enum hc_err call(const char *reply, size_t piece, bool hang, size_t max, unsigned ms, struct hc_response *r)
{
    pthread_mutex_lock(&S.mu);
    S.next = (struct script){ reply, piece, hang };
    pthread_mutex_unlock(&S.mu);
    struct hc_request rq = { .addrs = &ADDRS, .method = "POST", .path = "/v1/x", .authority = AUTHORITY,
                             .content_type = "application/json", .body = "{}", .body_len = 2,
                             .deadline_ms = hc_now_ms() + ms, .max_response = max, .cancel_fd = -1 };
    memset(r, 0, sizeof *r);
    return hc_call(&rq, r);
}

static bool body_is(const struct hc_response *r, const char *s)
{
    size_t n = strlen(s);
    return buf_used(&r->body) == n && (n == 0 || memcmp(buf_data(&r->body), s, n) == 0);
}

/* The reply whole, in 7-byte pieces and byte by byte: the same outcome. */
static void check_pieces_max(const char *reply, size_t max, enum hc_err want, int status, const char *body)
{
    static const size_t pieces[] = { 0, 7, 1 };
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        struct hc_response r;
        enum hc_err e = call(reply, pieces[i], false, max, 10000, &r);
        if (e != want || r.status != status || !body_is(&r, body))
            fprintf(stderr, "  reply %.40s… in pieces of %zu: %s, status %d\n", reply, pieces[i], hc_err_str(e),
                    r.status);
        CHECK_EQ_INT(e, want);
        CHECK_EQ_INT(r.status, status);
        CHECK(body_is(&r, body));
        buf_free(&r.body);
    }
}

static void check_all_pieces(const char *reply, enum hc_err want, int status, const char *body)
{
    check_pieces_max(reply, 1024, want, status, body);
}

/* ---------- the tests ---------- */

static void test_request(void)
{
    struct hc_request rq = { .addrs = &ADDRS, .method = "POST", .path = "/v1/traces", .authority = AUTHORITY,
                             .headers = "X-One: 1\r\nX-Two: 2\r\n", .content_type = "application/json",
                             .body = "{\"a\":1}", .body_len = 7, .deadline_ms = hc_now_ms() + 10000,
                             .max_response = 100, .cancel_fd = -1 };
    pthread_mutex_lock(&S.mu);
    S.next = (struct script){ "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, false };
    pthread_mutex_unlock(&S.mu);
    struct hc_response r = { 0 };
    CHECK_EQ_INT(hc_call(&rq, &r), HC_OK);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(buf_used(&r.body), 0);
    buf_free(&r.body);
    char want[512];
    snprintf(want, sizeof want, "POST /v1/traces HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                                "Content-Length: 7\r\nConnection: close\r\nX-One: 1\r\nX-Two: 2\r\n\r\n{\"a\":1}",
             AUTHORITY);
    pthread_mutex_lock(&S.mu);
    CHECK(buf_used(&S.req) == strlen(want) && memcmp(buf_data(&S.req), want, strlen(want)) == 0);
    pthread_mutex_unlock(&S.mu);

    /* no body, no type: Content-Length 0 all the same */
    rq.method = "GET";
    rq.headers = NULL;
    rq.content_type = NULL;
    rq.body = NULL;
    rq.body_len = 0;
    CHECK_EQ_INT(hc_call(&rq, &r), HC_OK);
    buf_free(&r.body);
    snprintf(want, sizeof want, "GET /v1/traces HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
             AUTHORITY);
    pthread_mutex_lock(&S.mu);
    CHECK(buf_used(&S.req) == strlen(want) && memcmp(buf_data(&S.req), want, strlen(want)) == 0);
    pthread_mutex_unlock(&S.mu);
}

/* a body far larger than a socket buffer: sending waits for the reader */
static void test_large_request(void)
{
    size_t n = 4u << 20;
    char *big = malloc(n);
    if (!big)
        return;
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    pthread_mutex_lock(&S.mu);
    S.next = (struct script){ "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, false };
    pthread_mutex_unlock(&S.mu);
    struct hc_request rq = { .addrs = &ADDRS, .method = "POST", .path = "/", .authority = AUTHORITY,
                             .body = big, .body_len = n, .deadline_ms = hc_now_ms() + 30000, .max_response = 10,
                             .cancel_fd = -1 };
    struct hc_response r = { 0 };
    CHECK_EQ_INT(hc_call(&rq, &r), HC_OK);
    CHECK(body_is(&r, "ok"));
    buf_free(&r.body);
    pthread_mutex_lock(&S.mu);
    CHECK_EQ_INT(buf_used(&S.req) - S.req_head, n);
    CHECK(buf_used(&S.req) - S.req_head == n && memcmp(buf_data(&S.req) + S.req_head, big, n) == 0);
    pthread_mutex_unlock(&S.mu);
    free(big);
}

static void test_framing(void)
{
    /* Content-Length */
    check_all_pieces("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
                     HC_OK, 200, "{\"ok\":true}");
    /* bytes after a complete response are not read as anything */
    check_all_pieces("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 No\r\n\r\n", HC_OK, 200, "ok");
    /* chunked, with extensions and a trailer */
    check_all_pieces("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
                     HC_OK, 200, "hello world");
    /* close-delimited: neither length nor chunked */
    check_all_pieces("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close", HC_OK, 200,
                     "until the close");
    /* interim 1xx heads, then the final one */
    check_all_pieces("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
                     HC_OK, 201, "ok");
    /* an error status is an answer like any other: the caller decides */
    check_all_pieces("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", HC_OK, 503, "busy");
    /* a lone LF ends a line too (RFC 9112 2.2) */
    check_all_pieces("HTTP/1.1 200 OK\nContent-Length: 2\n\nok", HC_OK, 200, "ok");

    /* 204 has no body: complete at once, though the server keeps the connection open */
    struct hc_response r;
    CHECK_EQ_INT(call("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 0, true, 100, 30000, &r), HC_OK);
    CHECK_EQ_INT(r.status, 204);
    buf_free(&r.body);
    /* and a Content-Length body is complete without the close */
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, true, 100, 30000, &r), HC_OK);
    CHECK(body_is(&r, "ok"));
    buf_free(&r.body);
}

static void test_bad_framing(void)
{
    /* a bare CR in a header line */
    check_all_pieces("HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok", HC_EPROTO, 0, "");
    /* chunk data not followed by CRLF */
    check_all_pieces("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", HC_EPROTO, 200,
                     "hello");
    /* a chunk size that is not hex */
    check_all_pieces("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HC_EPROTO, 200, "");
    /* not HTTP */
    check_all_pieces("garbage\r\n\r\n", HC_EPROTO, 0, "");
    check_all_pieces("HTTP/2 200\r\n\r\n", HC_EPROTO, 0, "");
    /* an upgrade nobody asked for */
    check_all_pieces("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", HC_EPROTO, 0, "");
    /* Content-Length twice, disagreeing */
    check_all_pieces("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", HC_EPROTO, 0, "");
    /* obs-fold */
    check_all_pieces("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", HC_EPROTO, 0, "");

    /* a head that never ends (64 KiB and more) */
    size_t n = 70000;
    char *big = malloc(n + 1);
    if (big) {
        static const char start[] = "HTTP/1.1 200 OK\r\nX-Pad: ";
        memcpy(big, start, sizeof start - 1);
        memset(big + sizeof start - 1, 'p', n - (sizeof start - 1));
        big[n] = '\0';
        struct hc_response r;
        CHECK_EQ_INT(call(big, 0, true, 100, 30000, &r), HC_EPROTO);
        buf_free(&r.body);
        free(big);
    }
}

static void test_cut(void)
{
    /* the server closes mid-body: what arrived is kept, the call fails */
    check_all_pieces("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", HC_ECLOSED, 200, "abc");
    check_all_pieces("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", HC_ECLOSED, 200, "abc");
    /* … mid-head, and before any byte */
    check_all_pieces("HTTP/1.1 200 OK\r\nContent-Le", HC_ECLOSED, 0, "");
    check_all_pieces("", HC_ECLOSED, 0, "");
}

static void test_deadline(void)
{
    struct hc_response r;
    /* a server that never answers */
    CHECK_EQ_INT(call(NULL, 0, true, 100, 150, &r), HC_ETIMEOUT);
    CHECK_EQ_INT(r.status, 0);
    buf_free(&r.body);
    /* one that sends the head and part of the body, then nothing */
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, true, 100, 150, &r), HC_ETIMEOUT);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_is(&r, "abc"));
    buf_free(&r.body);
    /* a close-delimited body the server never ends */
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\n\r\nabc", 0, true, 100, 150, &r), HC_ETIMEOUT);
    CHECK_EQ_INT(r.status, 200);
    buf_free(&r.body);
    /* a deadline already passed: whatever step it ends at, it ends */
    enum hc_err e = call(NULL, 0, true, 100, 0, &r);
    CHECK(e == HC_ETIMEOUT || e == HC_ECONNECT);
    buf_free(&r.body);
}

static void test_oversize(void)
{
    /* exactly the bound is fine, one byte more is not */
    check_pieces_max("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", 10, HC_OK, 200, "0123456789");
    check_pieces_max("HTTP/1.1 200 OK\r\n\r\n0123456789", 10, HC_OK, 200, "0123456789");
    struct hc_response r;
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", 0, false, 10, 10000, &r),
                 HC_ETOOBIG);
    CHECK_EQ_INT(r.status, 200); /* the head was in: a caller may still go by the status */
    CHECK_EQ_INT(buf_used(&r.body), 0);
    buf_free(&r.body);
    /* the length is not announced: as much as fits is kept */
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
                      0, false, 10, 10000, &r),
                 HC_ETOOBIG);
    CHECK(body_is(&r, "0123456789"));
    buf_free(&r.body);
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\n\r\n0123456789abcdef", 3, false, 10, 10000, &r), HC_ETOOBIG);
    CHECK(body_is(&r, "0123456789"));
    buf_free(&r.body);
    /* max_response 0: only bodiless answers */
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, false, 0, 10000, &r), HC_OK);
    CHECK_EQ_INT(call("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0, false, 0, 10000, &r), HC_ETOOBIG);
    buf_free(&r.body);
}

static void test_connect(void)
{
    /* a port bound but not listening: refused */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0);
    char port[8];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    struct hc_addrs refused;
    const char *why = NULL;
    CHECK_EQ_INT(hc_resolve("127.0.0.1", port, &refused, &why), 0);
    CHECK_EQ_INT(refused.n, 1);
    struct hc_request rq = { .addrs = &refused, .method = "GET", .path = "/", .authority = "x",
                             .deadline_ms = hc_now_ms() + 10000, .max_response = 10, .cancel_fd = -1 };
    struct hc_response r = { 0 };
    CHECK_EQ_INT(hc_call(&rq, &r), HC_ECONNECT);
    CHECK_EQ_STR(hc_err_str(HC_ECONNECT), "cannot connect");

    /* the next address is tried when one fails */
    struct hc_addrs two = refused;
    two.addr[1] = ADDRS.addr[0];
    two.len[1] = ADDRS.len[0];
    two.n = 2;
    rq.addrs = &two;
    pthread_mutex_lock(&S.mu);
    S.next = (struct script){ "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, false };
    pthread_mutex_unlock(&S.mu);
    CHECK_EQ_INT(hc_call(&rq, &r), HC_OK);
    CHECK_EQ_INT(r.status, 200);
    close(fd);
    buf_free(&r.body);

    /* no addresses at all */
    struct hc_addrs none = { .n = 0 };
    rq.addrs = &none;
    CHECK_EQ_INT(hc_call(&rq, &r), HC_ECONNECT);

    /* resolving: a port that is not a number is refused, with a reason */
    why = NULL;
    CHECK_EQ_INT(hc_resolve("127.0.0.1", "http", &none, &why), -1);
    CHECK(why && *why);
}

struct canceller {
    int fd;
    unsigned after_ms;
};

static void *cancel_later(void *arg)
{
    struct canceller *c = arg;
    sleep_ms(c->after_ms);
    uint64_t one = 1;
    if (write(c->fd, &one, sizeof one) < 0) {
        /* an eventfd below its maximum cannot refuse */
    }
    return NULL;
}

static void test_cancel(void)
{
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    CHECK(efd >= 0);
    pthread_mutex_lock(&S.mu);
    S.next = (struct script){ NULL, 0, true };
    pthread_mutex_unlock(&S.mu);
    struct hc_request rq = { .addrs = &ADDRS, .method = "GET", .path = "/", .authority = AUTHORITY,
                             .deadline_ms = hc_now_ms() + 60000, .max_response = 10, .cancel_fd = efd };
    /* a call waiting for an answer that never comes is dropped when the fd fires */
    struct canceller c = { efd, 50 };
    pthread_t th;
    CHECK(pthread_create(&th, NULL, cancel_later, &c) == 0);
    struct hc_response r = { 0 };
    CHECK_EQ_INT(hc_call(&rq, &r), HC_ESTOPPED);
    pthread_join(th, NULL);
    /* once readable, every call stops, also one whose deadline has passed */
    CHECK_EQ_INT(hc_call(&rq, &r), HC_ESTOPPED);
    rq.deadline_ms = hc_now_ms();
    CHECK_EQ_INT(hc_call(&rq, &r), HC_ESTOPPED);
    buf_free(&r.body);
    close(efd);
}

/* Endpoints from the configuration (the OTLP exporter, rollout webhooks). */
static void test_url_parse(void)
{
    struct hc_url u;
    const char *why = NULL;
    CHECK(hc_url_parse("http://127.0.0.1:4318/v1/traces", &u, &why) == 0);
    CHECK_EQ_STR(u.host, "127.0.0.1");
    CHECK_EQ_STR(u.port, "4318");
    CHECK_EQ_STR(u.authority, "127.0.0.1:4318");
    CHECK_EQ_STR(u.path, "/v1/traces");
    hc_url_free(&u);
    CHECK(hc_url_parse("http://hooks.local?x=1#frag", &u, &why) == 0);
    CHECK_EQ_STR(u.port, "80");
    CHECK_EQ_STR(u.path, "/?x=1");
    hc_url_free(&u);
    CHECK(hc_url_parse("http://[::1]:9/h", &u, &why) == 0);
    CHECK_EQ_STR(u.host, "::1");
    CHECK_EQ_STR(u.authority, "[::1]:9");
    hc_url_free(&u);
    CHECK(hc_url_parse("https://x/", &u, &why) < 0 && strstr(why, "https is not supported"));
    CHECK(hc_url_parse("ftp://x/", &u, &why) < 0);
    CHECK(hc_url_parse("http://user@x/", &u, &why) < 0);
    CHECK(hc_url_parse("http://x:0/", &u, &why) < 0);
    CHECK(hc_url_parse("http://x:70000/", &u, &why) < 0);
    CHECK(hc_url_parse("http://x:80 /", &u, &why) < 0 && strstr(why, "spaces"));
    CHECK(hc_url_parse("http:///path", &u, &why) < 0);
    CHECK(hc_url_parse("http://[::1/", &u, &why) < 0);
}

int main(void)
{
    test_url_parse();
    if (!srv_start(&S)) {
        fprintf(stderr, "cannot start the test server\n");
        return 1;
    }
    char port[8];
    snprintf(port, sizeof port, "%d", S.port);
    snprintf(AUTHORITY, sizeof AUTHORITY, "127.0.0.1:%d", S.port);
    const char *why = "";
    CHECK_EQ_INT(hc_resolve("127.0.0.1", port, &ADDRS, &why), 0);
    test_request();
    test_large_request();
    test_framing();
    test_bad_framing();
    test_cut();
    test_deadline();
    test_oversize();
    test_connect();
    test_cancel();
    srv_stop(&S);
    UNIT_DONE();
}
