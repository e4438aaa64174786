/* test_h1.c — request framing (h1.c): every rule in h1.h, the smuggling
 * shapes from issue 9, and for every case the same result whatever the
 * pieces the input arrives in (each split point, and byte by byte). */
#include "h1_driver.h"
#include "unit.h"

/* The log for input in one piece; also checks every split in two and a
 * byte-at-a-time feed give the same log. */
static char *frame_all_ways(const char *in, size_t n)
{
    char *whole = drv_frame(in, n, NULL, 0);
    size_t one = 1;
    char *bytes = drv_frame(in, n, &one, 1);
    CHECK_EQ_STR(bytes, whole);
    free(bytes);
    for (size_t cut = 1; cut < n; cut++) {
        size_t cuts[2] = { cut, n };
        char *two = drv_frame(in, n, cuts, 2);
        if (strcmp(two, whole) != 0) {
            fprintf(stderr, "split at %zu differs:\n%s\nvs whole:\n%s\n", cut, two, whole);
            CHECK(0);
            free(two);
            break;
        }
        free(two);
    }
    return whole;
}

/* Does framing `in` end with "ERR <status>"? */
static int err_of(const char *in)
{
    char *log = frame_all_ways(in, strlen(in));
    const char *e = strstr(log, "ERR ");
    int st = e ? atoi(e + 4) : 0;
    free(log);
    return st;
}

/* How many requests were framed before anything else? */
static int requests_of(const char *in)
{
    char *log = frame_all_ways(in, strlen(in));
    int n = 0;
    for (const char *p = log; (p = strstr(p, "REQ ")) != NULL; p += 4)
        n++;
    free(log);
    return n;
}

static void check_log(const char *in, const char *want)
{
    char *log = frame_all_ways(in, strlen(in));
    CHECK_EQ_STR(log, want);
    free(log);
}

#define B60 "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
#define POST_CHUNKED "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_basic(void)
{
    check_log("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
              "REQ GET /healthz 1.1 ka=1 fr=0 cl=0\n H[Host]=[x]\n B[]\n");
    /* OWS trimmed on both sides, names as sent, obs-text kept */
    check_log("GET / HTTP/1.1\r\nHost: x\r\nX-A: \t v  w \t\r\nX-U: \xc3\xa9\r\n\r\n",
              "REQ GET / 1.1 ka=1 fr=0 cl=0\n H[Host]=[x]\n H[X-A]=[v  w]\n H[X-U]=[\xc3\xa9]\n B[]\n");
    check_log("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
              "REQ POST /p 1.1 ka=1 fr=1 cl=5\n H[Host]=[x]\n H[Content-Length]=[5]\n B[hello]\n");
    /* pipelined, with empty lines between (RFC 9112 2.2) and bare LF line ends */
    check_log("GET /a HTTP/1.1\nHost: x\n\n\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
              "REQ GET /a 1.1 ka=1 fr=0 cl=0\n H[Host]=[x]\n B[]\n"
              "REQ GET /b 1.0 ka=1 fr=0 cl=0\n H[Connection]=[keep-alive]\n B[]\n");
    check_log("GET / HTTP/1.0\r\n\r\n", "REQ GET / 1.0 ka=0 fr=0 cl=0\n B[]\n");
    check_log("GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
              "REQ GET / 1.1 ka=0 fr=0 cl=0\n H[Host]=[x]\n H[Connection]=[Keep-Alive, CLOSE]\n B[]\n");
    /* an empty Host is allowed (no authority) */
    CHECK_EQ_INT(requests_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 1);
    CHECK_EQ_INT(requests_of("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n"), 1);
    /* incomplete input is waited for */
    check_log("GET / HTTP/1.1\r\nHost: x\r\n", "INCOMPLETE 1\n");
    check_log("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc",
              "REQ POST / 1.1 ka=1 fr=1 cl=9\n H[Host]=[x]\n H[Content-Length]=[9]\n B[abcINCOMPLETE 2\n");
}

/* Issue 9, items 1-5. */
static void test_issue9(void)
{
    /* 1. a bare CR ends nothing: the smuggled request is never framed */
    const char *smuggle = "GET /healthz HTTP/1.1\r\nHost: x\r\n\rXGET /v1/models HTTP/1.1\r\nHost: y\r\n\r\n";
    CHECK_EQ_INT(err_of(smuggle), 400);
    CHECK_EQ_INT(requests_of(smuggle), 0);
    CHECK_EQ_INT(err_of("GET /healthz HTTP/1.1\r\nHost: x\rX: y\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET /healthz HTTP/1.1\rHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET /healthz\r HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nX\r: y\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\rabc\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\r\nabc\r\n0\r\nX: y\rZ\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "0\r\n\rX"), 400);
    /* 2. chunk data must be followed by CRLF */
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c\r\n" B60 "XX0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c\r\n" B60 "\rX0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\r\nabcd\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(requests_of(POST_CHUNKED "3c\r\n" B60 "\r\n0\r\n\r\n"), 1);
    /* 3. chunk extensions, quoted or not (RFC 9112 7.1.1) */
    check_log(POST_CHUNKED "3c;a=1;b=2\r\n" B60 "\r\n0\r\n\r\n",
              "REQ POST /v1/chat/completions 1.1 ka=1 fr=2 cl=0\n H[Host]=[x]\n H[Transfer-Encoding]=[chunked]\n"
              " B[" B60 "]\n");
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;a=\"1\";b=2\r\n" B60 "\r\n0\r\n\r\n"), 0);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c ; a = 1 ;b;c=\"x\\\"y;z\" \t;d\r\n" B60 "\r\n0;e=f\r\n\r\n"), 0);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;\r\n" B60 "\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;a=\r\n" B60 "\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;a=b c\r\n" B60 "\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;a=\"unterminated\r\n" B60 "\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c \r\n" B60 "\r\n0\r\n\r\n"), 400); /* BWS only before ';' */
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;a=1 \r\n" B60 "\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3c;a=\x01\r\n" B60 "\r\n0\r\n\r\n"), 400);
    /* 4. Host: exactly one in HTTP/1.1, at most one in 1.0 */
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: a\r\nhOsT: a\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
    CHECK_EQ_INT(requests_of("GET / HTTP/1.0\r\n\r\n"), 1);
    /* 5. transfer codings other than a final chunked */
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), 501);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"), 501);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n"), 400);
    CHECK_EQ_INT(requests_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , CHUNKED\r\n\r\n0\r\n\r\n"), 1);
}

static void test_head_rules(void)
{
    CHECK_EQ_INT(err_of("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
    CHECK_EQ_INT(err_of("GET / HTTP/0.9\r\nHost: x\r\n\r\n"), 505);
    CHECK_EQ_INT(err_of("GET / HTTP/1.10\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / http/1.1\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1 \r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("G(T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GARBAGE\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("\x16\x03\x01\x02\xfc\x03\x03\r\n\r\n"), 400);
    /* header lines */
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\n: y\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\n Host: x\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00z\r\n\r\n") , 0); /* strlen stops at NUL */
    {
        static const char nul[] = "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0z\r\n\r\n";
        char *log = frame_all_ways(nul, sizeof nul - 1);
        CHECK(strstr(log, "ERR 400") != NULL);
        free(log);
    }
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01z\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fz\r\n\r\n"), 400);
    /* Content-Length */
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde"), 400);
    check_log("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
              "REQ POST / 1.1 ka=1 fr=1 cl=3\n H[Host]=[x]\n H[Content-Length]=[3, 3]\n H[Content-Length]=[3]\n B[abc]\n");
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 413);
    CHECK_EQ_INT(err_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
    /* limits */
    char big[DRV_MAX_HEAD + 100];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: x\r\nX: %0*d\r\n\r\n", DRV_MAX_HEAD, 0);
    CHECK_EQ_INT(err_of(big), 431);
    char many[4096] = "GET / HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < DRV_MAX_HDRS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "X-%d: v\r\n", i);
    strcat(many, "\r\n");
    CHECK_EQ_INT(err_of(many), 431);
}

static void test_chunked(void)
{
    check_log(POST_CHUNKED "3\r\nabc\r\n000A\r\n0123456789\r\n0\r\nX-T: 1\r\nY: \r\n\r\nGET / HTTP/1.1\r\nHost: y\r\n\r\n",
              "REQ POST /v1/chat/completions 1.1 ka=1 fr=2 cl=0\n H[Host]=[x]\n H[Transfer-Encoding]=[chunked]\n"
              " B[abc0123456789]\nREQ GET / 1.1 ka=1 fr=0 cl=0\n H[Host]=[y]\n B[]\n");
    /* LF-only line ends are line ends here too */
    CHECK_EQ_INT(requests_of(POST_CHUNKED "3\nabc\n0\n\n"), 1);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\nabc\n0\n\n"), 0);
    CHECK_EQ_INT(err_of(POST_CHUNKED "\r\n3\r\nabc\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "g\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "-3\r\nabc\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "0x3\r\nabc\r\n0\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "00000000000000000000003\r\nabc\r\n0\r\n\r\n"), 0); /* leading zeros */
    CHECK_EQ_INT(err_of(POST_CHUNKED "10000000000000000\r\n"), 400); /* 17 significant digits */
    {
        /* a huge chunk is cut by the sink's limit as its data arrives */
        static char huge[DRV_MAX_BODY + 200];
        int n = snprintf(huge, sizeof huge, POST_CHUNKED "ffffffffffffffff\r\n");
        memset(huge + n, 'a', sizeof huge - 1 - (size_t)n);
        char *log = drv_frame(huge, sizeof huge - 1, NULL, 0);
        CHECK(strstr(log, "ERR 413") != NULL);
        free(log);
    }
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\r\nabc\r\n0\r\n X: y\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\r\nabc\r\n0\r\nBad Name: y\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\r\nabc\r\n0\r\nX: \x01\r\n\r\n"), 400);
    CHECK_EQ_INT(err_of(POST_CHUNKED "3\r\nabc\r\n0\r\n\r\r\n"), 400);
    /* a long extension line, and a long trailer, are bounded */
    static char longext[H1_MAX_CHUNK_LINE + 200];
    snprintf(longext, sizeof longext, POST_CHUNKED "3;a=%0*d\r\nabc\r\n0\r\n\r\n", H1_MAX_CHUNK_LINE, 0);
    CHECK_EQ_INT(err_of(longext), 400);
    static char longtr[H1_MAX_TRAILER + 200];
    snprintf(longtr, sizeof longtr, POST_CHUNKED "0\r\nX: %0*d\r\n\r\n", H1_MAX_TRAILER, 0);
    CHECK_EQ_INT(err_of(longtr), 431);
}

static void test_scanning(void)
{
    /* h1_head_end resumes where it stopped and finds both line-end shapes */
    const char *h = "GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
    size_t scan = 0;
    CHECK_EQ_INT(h1_head_end(h, 10, &scan), 0);
    CHECK_EQ_INT(h1_head_end(h, 25, &scan), 0);
    CHECK_EQ_INT(h1_head_end(h, 26, &scan), 0);
    CHECK_EQ_INT(h1_head_end(h, 27, &scan), 27);
    scan = 0;
    CHECK_EQ_INT(h1_head_end("A\n\n", 3, &scan), 3);
    scan = 0;
    CHECK_EQ_INT(h1_head_end("A\r\n\rB\r\n\r\n", 9, &scan), 9);
    CHECK_EQ_INT(h1_skip_empty_lines("\r\n\n\r\nG", 6), 5);
    CHECK_EQ_INT(h1_skip_empty_lines("\r\n\r", 3), 2);
    CHECK_EQ_INT(h1_count_lines("a\nb\r\n\r\n", 7), 3);
    CHECK(http_is_tchar('!') && http_is_tchar('~') && !http_is_tchar(':') && !http_is_tchar(' ') &&
          !http_is_tchar(0) && !http_is_tchar(0x80));
}

static int resp(const char *head, struct h1_response *rs)
{
    struct http_hdr h[8];
    const char *msg;
    size_t scan = 0, n = strlen(head);
    CHECK_EQ_INT(h1_head_end(head, n, &scan), n);
    return h1_parse_response(head, n, rs, h, 8, &msg);
}

static void test_responses(void)
{
    struct h1_response rs;
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", &rs), 0);
    CHECK(rs.status == 200 && rs.framing == H1_LENGTH && rs.content_length == 5 && rs.keep_alive);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", &rs), 0);
    CHECK(rs.framing == H1_CHUNKED && rs.keep_alive);
    /* both: chunked wins, the connection is not reused */
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", &rs), 0);
    CHECK(rs.framing == H1_CHUNKED && !rs.keep_alive);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &rs), 0);
    CHECK(rs.framing == H1_UNTIL_CLOSE && !rs.keep_alive);
    CHECK_EQ_INT(resp("HTTP/1.1 200\r\n\r\n", &rs), 0);
    CHECK(rs.framing == H1_UNTIL_CLOSE && !rs.keep_alive);
    CHECK_EQ_INT(resp("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n", &rs), 0);
    CHECK(rs.framing == H1_NO_BODY && rs.keep_alive && rs.minor == 0);
    CHECK_EQ_INT(resp("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", &rs), 0);
    CHECK(rs.framing == H1_NO_BODY);
    CHECK_EQ_INT(resp("HTTP/1.1 100 Continue\r\n\r\n", &rs), 0);
    CHECK(rs.status == 100 && rs.framing == H1_NO_BODY);
    CHECK_EQ_INT(resp("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 2\r\n\r\n", &rs), 0);
    CHECK(rs.status == 503 && !rs.keep_alive);
    /* what a backend cannot get past */
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nX: a\rY: b\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/2 200 OK\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 600 Nope\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 20 OK\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", &rs), -1);
    CHECK_EQ_INT(resp("ICY 200 OK\r\n\r\n", &rs), -1);
}

int main(void)
{
    test_responses();
    test_basic();
    test_issue9();
    test_head_rules();
    test_chunked();
    test_scanning();
    UNIT_DONE();
}
