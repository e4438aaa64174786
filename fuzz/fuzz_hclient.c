// srcs: src/http/hclient.c src/http/h1.c src/core/buf.c
/* Fuzz the blocking client of the background threads (judge, OTLP
 * exporter) with whatever an endpoint may answer: a loopback server thread
 * reads the request, answers with the input (split in two writes at a
 * position taken from the first byte) and closes.  hc_call must return
 * without crashing or leaking, keep at most max_response body bytes, and
 * report a status only in 100..599. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "hclient.h"

static int lfd = -1;
static struct hc_addrs addrs;
static const uint8_t *answer;
static size_t answer_len, cut;

static void *serve(void *arg)
{
    (void)arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    char req[4096];
    (void)!read(fd, req, sizeof req); /* the request: head and a small body */
    (void)!write(fd, answer, cut);
    usleep(100);
    (void)!write(fd, answer + cut, answer_len - cut);
    close(fd);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (lfd < 0) {
        lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 8) < 0 ||
            getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
            abort();
        memcpy(&addrs.addr[0], &a, sizeof a);
        addrs.len[0] = sizeof a;
        addrs.n = 1;
    }
    if (size < 1 || size > 65536)
        return 0;
    answer = data + 1;
    answer_len = size - 1;
    cut = answer_len ? data[0] % (answer_len + 1) : 0;
    pthread_t t;
    if (pthread_create(&t, NULL, serve, NULL) != 0)
        return 0;
    struct hc_request rq = {
        .addrs = &addrs, .method = "POST", .path = "/v1/traces", .authority = "127.0.0.1",
        .content_type = "application/json", .body = "{}", .body_len = 2,
        .deadline_ms = hc_now_ms() + 2000, .max_response = 1024, .cancel_fd = -1,
    };
    struct hc_response rs = { 0 };
    enum hc_err e = hc_call(&rq, &rs);
    pthread_join(t, NULL);
    if (rs.status && (rs.status < 100 || rs.status > 599))
        abort();
    if (buf_used(&rs.body) > rq.max_response)
        abort();
    if (e == HC_OK && rs.status < 200)
        abort();
    buf_free(&rs.body);
    return 0;
}
