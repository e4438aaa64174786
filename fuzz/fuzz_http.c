// srcs: src/http/httpd.c src/http/h1.c src/core/loop.c src/core/buf.c src/core/json.c
/* Fuzz the server side of HTTP/1.1: the bytes a client can send, through the
 * real connection code (h1.c framing, httpd limits, pipelining,
 * error responses), over a socketpair.  The handler answers in three ways
 * (whole, streamed, error) so response paths run after every parse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"

static loop_t *loop;
static struct httpd *srv;
static unsigned counter;

static void handler(http_req *r, void *arg)
{
    (void)arg;
    switch (counter++ % 3) {
    case 0:
        http_respond(r, 200, "application/json", r->body, r->body_len);
        break;
    case 1: {
        http_start(r, 200, NULL, 0, -1);
        http_write(r, r->url, r->url_len);
        for (size_t i = 0; i < r->nhdrs; i++)
            http_write(r, r->hdrs[i].value, r->hdrs[i].value_len);
        http_end(r);
        break;
    }
    default:
        http_respond_error(r, 400, "invalid_request_error", NULL, "x", "bad %.*s", (int)r->path_len, r->path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loop) {
        loop = loop_new();
        struct httpd_limits lim = { .max_header_bytes = 4096, .max_headers = 32, .max_body_bytes = 8192,
                                    .header_timeout_ms = 1000, .body_timeout_ms = 1000,
                                    .keepalive_timeout_ms = 1000, .max_connections = 16 };
        srv = httpd_new(loop, &lim, handler, NULL);
    }
    if (size > 60000)
        size = 60000;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int big = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (httpd_adopt(srv, sv[1], NULL) < 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    size_t off = 0;
    char sink[65536];
    /* write, read back, until the server has closed or everything is quiet */
    for (int i = 0; i < 200 && httpd_connections(srv) > 0; i++) {
        if (off < size) {
            ssize_t n = write(sv[0], data + off, size - off);
            if (n > 0)
                off += (size_t)n;
            if (off == size)
                shutdown(sv[0], SHUT_WR);
        } else if (size == 0 && i == 0) {
            shutdown(sv[0], SHUT_WR);
        }
        loop_run_once(loop, 0);
        while (read(sv[0], sink, sizeof sink) > 0)
            ;
    }
    httpd_close_all(srv);
    loop_run_once(loop, 0);
    close(sv[0]);
    return 0;
}
