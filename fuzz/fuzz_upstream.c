// srcs: src/http/upstream.c src/http/httpd.c src/http/h1.c src/core/json.c src/core/loop.c src/core/buf.c src/core/log.c -lssl -lcrypto
/* Fuzz the upstream client with whatever bytes a backend may answer: the
 * response parser (h1.c), header collection, chunked and
 * close-delimited bodies, keep-alive decisions and the pool.  The harness
 * is the backend: a loopback listener that answers each exchange with the
 * input (split in two writes at a position taken from the first byte) and
 * then closes or keeps the connection open. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upstream.h"

static loop_t *loop;
static struct config_backend cfg;
static struct backend be;
static struct up_pool *pool;
static int lfd = -1;
static int done;
static size_t body_bytes;

static void on_head(void *ctx, int status, const struct http_hdr *h, size_t n, int64_t cl)
{
    (void)ctx;
    if (status < 100 || status > 999)
        abort();
    for (size_t i = 0; i < n; i++)
        if (h[i].name_len && !h[i].name)
            abort();
    (void)cl;
}

static void on_body(void *ctx, const char *p, size_t n)
{
    (void)ctx;
    /* touch every byte: ASan checks the pointers handed out */
    for (size_t i = 0; i < n; i++)
        body_bytes += (unsigned char)p[i] == 0xff;
}

static void on_done(void *ctx, enum up_err e)
{
    (void)ctx;
    if (e >= UP__COUNT)
        abort();
    done = 1;
}

static const struct up_handlers handlers = { on_head, on_body, on_done };

static void setup(void)
{
    loop = loop_new();
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 64) < 0)
        abort();
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    memcpy(&cfg.addr, &a, sizeof a);
    cfg.addrlen = sizeof a;
    cfg.host = "127.0.0.1";
    cfg.name = "fuzz";
    cfg.base_path = "";
    cfg.connect_timeout_ms = 200;
    cfg.first_byte_timeout_ms = 200;
    cfg.idle_timeout_ms = 200;
    cfg.total_timeout_ms = 400;
    cfg.max_fails = 1;
    cfg.keepalive_idle_ms = 1000;
    cfg.max_idle_conns = 4;
    be.cfg = &cfg;
    pool = up_pool_new(loop, &be);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loop)
        setup();
    if (size < 2 || size > 32768)
        return 0;
    size_t split = 1 + (size_t)data[0] * (size - 1) / 255;
    int keep_open = data[1] & 1;
    data += 2;
    size -= 2;
    if (split > size)
        split = size;
    static const char req[] = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";
    struct iovec iov = { (void *)req, sizeof req - 1 };
    done = 0;
    struct up_conn *c = up_start(pool, &iov, 1, &handlers, NULL);
    if (!c)
        return 0;
    int peer = -1;
    size_t off = 0;
    char sink[4096];
    /* loopback delivers at once: poll without sleeping, and give up on an
     * exchange that is still waiting once the input is spent (an incomplete
     * response on an open connection would otherwise wait for a timeout) */
    int idle_rounds = 0;
    for (int i = 0; i < 2000 && !done && idle_rounds < 30; i++) {
        if (peer < 0) {
            /* a reused pool connection has its peer from an earlier round:
             * that one was closed, so the exchange fails and we go on */
            peer = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        }
        if (peer >= 0) {
            while (read(peer, sink, sizeof sink) > 0)
                ;
            if (off < size) {
                size_t end = off < split ? split : size;
                ssize_t n = write(peer, data + off, end - off);
                if (n > 0)
                    off += (size_t)n;
            } else if (!keep_open) {
                shutdown(peer, SHUT_WR);
            }
        }
        if (loop_run_once(loop, 0) == 0 && off == size)
            idle_rounds++;
    }
    if (!done)
        up_cancel(c);
    if (peer >= 0)
        close(peer);
    /* drop pooled connections each round: their peers are gone */
    up_pool_free(pool);
    pool = up_pool_new(loop, &be);
    loop_run_once(loop, 0);
    return 0;
}
