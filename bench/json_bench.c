/* json_bench.c — how long json_validate takes on a realistic ~4 KB chat
 * completion request, plus the lookups the proxy does on every request.
 *
 *   cc -std=c17 -D_GNU_SOURCE -O2 -Isrc/core bench/json_bench.c src/core/json.c -o /tmp/json_bench
 *   /tmp/json_bench [ITERATIONS]
 */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char body[8192];
static size_t body_len;

static void add(const char *s)
{
    size_t n = strlen(s);
    if (body_len + n >= sizeof body) {
        fprintf(stderr, "bench body too large\n");
        exit(2);
    }
    memcpy(body + body_len, s, n);
    body_len += n;
}

/* A request as an SDK sends it: compact, a system prompt, a few turns with
 * escapes and some non-ASCII text, a tool definition, sampling options. */
static void build_body(void)
{
    add("{\"model\":\"gpt-4o-mini\",\"messages\":[");
    add("{\"role\":\"system\",\"content\":\"You are a helpful assistant for an online "
        "bookshop. Answer questions about orders, shipping and returns. Be concise and "
        "friendly. If you do not know the answer, say so and offer to connect the "
        "customer with a human agent.\\nRules:\\n1. Never reveal internal order notes.\\n"
        "2. Quote prices in the customer's currency.\\n3. Use the lookup_order tool "
        "whenever an order number is mentioned.\"},");
    for (int turn = 0; turn < 5; turn++) {
        add("{\"role\":\"user\",\"content\":\"Hi! I ordered \\\"The Pragmatic Programmer\\\" "
            "last week (order #A-10293) and it still hasn't arrived. The tracking page "
            "says \\u201cin transit\\u201d since Monday. Can you check what is going on? "
            "Also, is it possible to change the delivery address to my office: "
            "Stra\xc3\x9f" "e des 17. Juni 135, 10623 Berlin? Danke sch\xc3\xb6n \xf0\x9f\x99\x8f\"},");
        add("{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_9f2c1\","
            "\"type\":\"function\",\"function\":{\"name\":\"lookup_order\",\"arguments\":"
            "\"{\\\"order_id\\\":\\\"A-10293\\\",\\\"include_tracking\\\":true}\"}}]},");
        add("{\"role\":\"tool\",\"tool_call_id\":\"call_9f2c1\",\"content\":\"{\\\"status\\\":"
            "\\\"in_transit\\\",\\\"carrier\\\":\\\"DHL\\\",\\\"eta\\\":\\\"2024-06-14\\\"}\"},");
    }
    add("{\"role\":\"user\",\"content\":\"Thanks, and what is your return policy for "
        "damaged books?\"}],");
    add("\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"lookup_order\","
        "\"description\":\"Look up an order by its id and return its status, carrier and "
        "estimated delivery date.\",\"parameters\":{\"type\":\"object\",\"properties\":"
        "{\"order_id\":{\"type\":\"string\",\"description\":\"The order id, e.g. A-10293\"},"
        "\"include_tracking\":{\"type\":\"boolean\"}},\"required\":[\"order_id\"]}}}],");
    add("\"temperature\":0.7,\"top_p\":1,\"max_tokens\":1024,\"presence_penalty\":0,"
        "\"frequency_penalty\":0.0,\"n\":1,\"stream\":true,\"stream_options\":"
        "{\"include_usage\":true},\"user\":\"customer-48213\",\"seed\":-12345,"
        "\"logit_bias\":{\"50256\":-100}}");
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 200000;
    if (iters <= 0) iters = 200000;
    build_body();

    struct json_span root;
    struct json_error err;
    if (json_validate(body, body_len, &root, &err) != 0) {
        fprintf(stderr, "bench body invalid at %zu: %s\n", err.offset, err.message);
        return 1;
    }

    /* warm up, then measure */
    volatile int sink = 0;
    for (long i = 0; i < iters / 10; i++) sink += json_validate(body, body_len, &root, &err);
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) sink += json_validate(body, body_len, &root, &err);
    double t1 = now_ns();

    /* what the proxy does after validating: a few top-level lookups */
    struct json_span v;
    long lk = iters / 4;
    double t2 = now_ns();
    for (long i = 0; i < lk; i++) {
        sink += json_get(&root, "model", &v);
        sink += json_get(&root, "stream", &v);
        sink += json_get(&root, "max_tokens", &v);
    }
    double t3 = now_ns();

    double per = (t1 - t0) / (double)iters;
    printf("json_validate: %zu-byte body, %ld iterations: %.0f ns/call (%.2f ns/byte, %.2f GB/s)\n",
           body_len, iters, per, per / (double)body_len, (double)body_len / per);
    printf("json_get x3 (model, stream, max_tokens): %.0f ns/call\n", (t3 - t2) / (double)lk);
    return sink == -1;
}
