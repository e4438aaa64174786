/* test_config.c — config_load(): defaults, every field, every error kind
 * with its exact position, durations, sizes, listen addresses, URLs.
 * Run from the repository root (it also loads examples/basic.yaml). */
#include "config.h"
#include "config_schema.h"
#include "mod_accesslog.h"
#include "mod_trace.h"
#include "module.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <unistd.h>

#define MIN_YAML "models:\n  - name: demo\n    backends:\n      - url: http://127.0.0.1:8001\n"

/* Write text to a fresh file under /tmp; path receives its name. */
static void write_tmp(const char *text, char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/shade_test_config_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        perror("write");
        exit(2);
    }
    close(fd);
}

static void report(int line, const char *yaml, const char *what, const char *got, const char *want)
{
    unit_failures++;
    fprintf(stderr, "%s:%d: %s\n  got:  %s\n  want: %s\n  yaml:\n%s\n", __FILE__, line, what,
            got ? got : "(null)", want ? want : "(success)", yaml);
}

/* Load yaml; it must succeed.  The caller frees the result. */
static struct config *load_ok_at(int line, const char *yaml)
{
    char path[64], err[512];
    struct config *c = NULL;
    write_tmp(yaml, path, sizeof path);
    int rc = config_load(path, &c, err, sizeof err);
    unit_checks++;
    if (rc != 0 || !c) {
        report(line, yaml, "config_load failed", err, NULL);
        c = NULL;
    } else if (strcmp(c->path, path) != 0) {
        report(line, yaml, "config->path", c->path, path);
    }
    unlink(path);
    return c;
}
#define load_ok(yaml) load_ok_at(__LINE__, yaml)

/* Load yaml; it must fail with exactly "TMPFILE:" + want (or, when prefix
 * is set, a message starting with it). */
static void expect_err_at(int line, const char *yaml, const char *want, bool prefix)
{
    char path[64], err[512], full[640];
    struct config *c = (struct config *)&c; /* must be reset to NULL */
    write_tmp(yaml, path, sizeof path);
    int rc = config_load(path, &c, err, sizeof err);
    unlink(path);
    snprintf(full, sizeof full, "%s:%s", path, want);
    unit_checks++;
    if (rc != -1 || c != NULL) {
        report(line, yaml, "config_load succeeded", "(success)", full);
        if (rc == 0) config_free(c);
        return;
    }
    bool same = prefix ? strncmp(err, full, strlen(full)) == 0 : strcmp(err, full) == 0;
    if (!same) report(line, yaml, prefix ? "wrong error prefix" : "wrong error", err, full);
}
#define expect_err(yaml, want) expect_err_at(__LINE__, yaml, want, false)
#define expect_err_prefix(yaml, want) expect_err_at(__LINE__, yaml, want, true)

/* A one-backend model whose backend has one extra line (6 spaces indent). */
static const char *with_backend_line(char *buf, size_t cap, const char *line)
{
    snprintf(buf, cap, "%s        %s\n", MIN_YAML, line);
    return buf;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    const void *a = ss->ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
                                             : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (!inet_ntop(ss->ss_family, a, buf, (socklen_t)cap)) snprintf(buf, cap, "?");
    return buf;
}

static void test_defaults(void)
{
    struct config *c = load_ok(MIN_YAML);
    if (!c) return;
    char a[64];
    CHECK_EQ_STR(c->server.listen, "127.0.0.1:8080");
    CHECK_EQ_INT(c->server.addr.ss_family, AF_INET);
    CHECK_EQ_INT(c->server.addrlen, sizeof(struct sockaddr_in));
    CHECK_EQ_STR(addr_str(&c->server.addr, a, sizeof a), "127.0.0.1");
    CHECK_EQ_INT(port_of(&c->server.addr), 8080);
    CHECK_EQ_INT(c->server.workers, 0);
    CHECK_EQ_INT(c->server.max_connections, 10000);
    CHECK_EQ_INT(c->server.max_header_bytes, 32768);
    CHECK_EQ_INT(c->server.max_headers, 100);
    CHECK_EQ_INT(c->server.max_body_bytes, 16u << 20);
    CHECK_EQ_INT(c->server.header_timeout_ms, 10000);
    CHECK_EQ_INT(c->server.body_timeout_ms, 60000);
    CHECK_EQ_INT(c->server.keepalive_timeout_ms, 75000);
    CHECK_EQ_INT(c->server.shutdown_timeout_ms, 30000);
    CHECK_EQ_STR(c->server.log_level, "info");
    CHECK(!c->server.expose_backend_header);

    CHECK_EQ_INT(c->nmodels, 1);
    const struct config_model *m = &c->models[0];
    CHECK_EQ_STR(m->name, "demo");
    CHECK_EQ_INT(m->balance, BALANCE_ROUND_ROBIN);
    CHECK(m->affinity_header == NULL);
    CHECK_EQ_INT(m->affinity_prefix_bytes, 512);
    CHECK(m->load_factor == 1.25);
    CHECK(m->input_price_per_mtok == 0.0 && m->output_price_per_mtok == 0.0);
    CHECK_EQ_INT(m->nbackends, 1);
    const struct config_backend *b = &m->backends[0];
    CHECK_EQ_STR(b->url, "http://127.0.0.1:8001");
    CHECK(!b->tls);
    CHECK_EQ_STR(b->host, "127.0.0.1");
    CHECK_EQ_INT(b->port, 8001);
    CHECK_EQ_STR(b->base_path, "");
    CHECK_EQ_INT(b->addr.ss_family, AF_INET);
    CHECK_EQ_INT(b->addrlen, sizeof(struct sockaddr_in));
    CHECK_EQ_STR(addr_str(&b->addr, a, sizeof a), "127.0.0.1");
    CHECK_EQ_INT(port_of(&b->addr), 8001);
    CHECK_EQ_STR(b->name, "127.0.0.1:8001");
    CHECK(b->model == NULL);
    CHECK(b->api_key_env == NULL);
    CHECK(b->api_key == NULL);
    CHECK_EQ_INT(b->weight, 1);
    CHECK_EQ_INT(b->max_concurrent, 0);
    CHECK_EQ_INT(b->connect_timeout_ms, 5000);
    CHECK_EQ_INT(b->first_byte_timeout_ms, 120000);
    CHECK_EQ_INT(b->idle_timeout_ms, 60000);
    CHECK_EQ_INT(b->total_timeout_ms, 600000);
    CHECK_EQ_INT(b->max_fails, 1);
    CHECK_EQ_INT(b->fail_timeout_ms, 10000);
    CHECK_EQ_INT(b->keepalive_idle_ms, 60000);
    CHECK_EQ_INT(b->max_idle_conns, 64);
    CHECK(b->tls_verify);
    CHECK(b->ca_file == NULL);
    config_free(c);

    /* an empty or {} server section means all defaults too */
    c = load_ok("server:\n" MIN_YAML);
    if (c) CHECK_EQ_INT(c->server.max_headers, 100);
    config_free(c);
    c = load_ok("server: {}\n" MIN_YAML);
    if (c) CHECK_EQ_STR(c->server.log_level, "info");
    config_free(c);
}

static void test_all_fields(void)
{
    char ca[64], yaml[4096], a[64];
    write_tmp("-----BEGIN CERTIFICATE-----\n", ca, sizeof ca);
    setenv("SHADE_TEST_KEY", "sk-test-123", 1);
    snprintf(yaml, sizeof yaml,
             "server:\n"
             "  listen: \"[::1]:9090\"\n"
             "  workers: 4\n"
             "  max_connections: 500\n"
             "  max_header_bytes: 64KiB\n"
             "  max_headers: 50\n"
             "  max_body_bytes: 1048576\n"
             "  header_timeout: 250ms\n"
             "  body_timeout: 2m\n"
             "  keepalive_timeout: 1h\n"
             "  shutdown_timeout: 5s\n"
             "  log_level: debug\n"
             "  expose_backend_header: true\n"
             "models:\n"
             "  - name: gpt-4o\n"
             "    balance: weighted\n"
             "    price:\n"
             "      input: 2.5\n"
             "      output: 10\n"
             "    backends:\n"
             "      - url: https://127.0.0.1:8443/v1/\n"
             "        name: primary\n"
             "        model: gpt-4o-2024-08-06\n"
             "        api_key_env: SHADE_TEST_KEY\n"
             "        weight: 3\n"
             "        max_concurrent: 100\n"
             "        connect_timeout: 1s\n"
             "        first_byte_timeout: 30s\n"
             "        idle_timeout: 15s\n"
             "        total_timeout: 5m\n"
             "        max_fails: 3\n"
             "        fail_timeout: 20s\n"
             "        keepalive_idle: 30s\n"
             "        max_idle_conns: 0\n"
             "        tls_verify: false\n"
             "        ca_file: %s\n"
             "      - url: http://localhost:8002\n"
             "  - name: other\n"
             "    balance: least_outstanding\n"
             "    price: {input: 0.15, output: 1e-1}\n"
             "    backends:\n"
             "      - url: \"http://[::1]:8001/\"\n"
             "      - {url: \"https://[::1]\", name: v6b}\n",
             ca);
    struct config *c = load_ok(yaml);
    unlink(ca);
    if (!c) return;
    CHECK_EQ_STR(c->server.listen, "[::1]:9090");
    CHECK_EQ_INT(c->server.addr.ss_family, AF_INET6);
    CHECK_EQ_INT(c->server.addrlen, sizeof(struct sockaddr_in6));
    CHECK_EQ_STR(addr_str(&c->server.addr, a, sizeof a), "::1");
    CHECK_EQ_INT(port_of(&c->server.addr), 9090);
    CHECK_EQ_INT(c->server.workers, 4);
    CHECK_EQ_INT(c->server.max_connections, 500);
    CHECK_EQ_INT(c->server.max_header_bytes, 65536);
    CHECK_EQ_INT(c->server.max_headers, 50);
    CHECK_EQ_INT(c->server.max_body_bytes, 1048576);
    CHECK_EQ_INT(c->server.header_timeout_ms, 250);
    CHECK_EQ_INT(c->server.body_timeout_ms, 120000);
    CHECK_EQ_INT(c->server.keepalive_timeout_ms, 3600000);
    CHECK_EQ_INT(c->server.shutdown_timeout_ms, 5000);
    CHECK_EQ_STR(c->server.log_level, "debug");
    CHECK(c->server.expose_backend_header);

    CHECK_EQ_INT(c->nmodels, 2);
    const struct config_model *m = &c->models[0];
    CHECK_EQ_STR(m->name, "gpt-4o");
    CHECK_EQ_INT(m->balance, BALANCE_WEIGHTED);
    CHECK(m->input_price_per_mtok == 2.5);
    CHECK(m->output_price_per_mtok == 10.0);
    CHECK_EQ_INT(m->nbackends, 2);
    const struct config_backend *b = &m->backends[0];
    CHECK_EQ_STR(b->url, "https://127.0.0.1:8443/v1/");
    CHECK(b->tls);
    CHECK_EQ_STR(b->host, "127.0.0.1");
    CHECK_EQ_INT(b->port, 8443);
    CHECK_EQ_STR(b->base_path, "/v1");
    CHECK_EQ_INT(port_of(&b->addr), 8443);
    CHECK_EQ_STR(b->name, "primary");
    CHECK_EQ_STR(b->model, "gpt-4o-2024-08-06");
    CHECK_EQ_STR(b->api_key_env, "SHADE_TEST_KEY");
    CHECK_EQ_STR(b->api_key, "sk-test-123");
    CHECK_EQ_INT(b->weight, 3);
    CHECK_EQ_INT(b->max_concurrent, 100);
    CHECK_EQ_INT(b->connect_timeout_ms, 1000);
    CHECK_EQ_INT(b->first_byte_timeout_ms, 30000);
    CHECK_EQ_INT(b->idle_timeout_ms, 15000);
    CHECK_EQ_INT(b->total_timeout_ms, 300000);
    CHECK_EQ_INT(b->max_fails, 3);
    CHECK_EQ_INT(b->fail_timeout_ms, 20000);
    CHECK_EQ_INT(b->keepalive_idle_ms, 30000);
    CHECK_EQ_INT(b->max_idle_conns, 0);
    CHECK(!b->tls_verify);
    CHECK_EQ_STR(b->ca_file, ca);

    /* a host name is resolved at load time, IPv4 preferred */
    b = &m->backends[1];
    CHECK_EQ_STR(b->host, "localhost");
    CHECK_EQ_INT(b->port, 8002);
    CHECK_EQ_STR(b->name, "localhost:8002");
    CHECK_EQ_INT(b->addr.ss_family, AF_INET);
    CHECK_EQ_STR(addr_str(&b->addr, a, sizeof a), "127.0.0.1");
    CHECK_EQ_INT(port_of(&b->addr), 8002);
    CHECK(b->tls_verify); /* defaults still apply per backend */

    m = &c->models[1];
    CHECK_EQ_STR(m->name, "other");
    CHECK_EQ_INT(m->balance, BALANCE_LEAST_OUTSTANDING);
    CHECK(m->input_price_per_mtok == 0.15);
    CHECK(m->output_price_per_mtok == 0.1);
    CHECK_EQ_INT(m->nbackends, 2);
    b = &m->backends[0];
    CHECK_EQ_STR(b->host, "::1");
    CHECK_EQ_INT(b->port, 8001);
    CHECK_EQ_STR(b->base_path, "");
    CHECK_EQ_STR(b->name, "[::1]:8001");
    CHECK_EQ_INT(b->addr.ss_family, AF_INET6);
    CHECK_EQ_INT(b->addrlen, sizeof(struct sockaddr_in6));
    CHECK_EQ_INT(port_of(&b->addr), 8001);
    b = &m->backends[1];
    CHECK(b->tls);
    CHECK_EQ_INT(b->port, 443);
    CHECK_EQ_INT(port_of(&b->addr), 443);
    CHECK_EQ_STR(b->name, "v6b");

    CHECK(config_find_model(c, "other", 5) == &c->models[1]);
    CHECK(config_find_model(c, "gpt-4o", 6) == &c->models[0]);
    CHECK(config_find_model(c, "gpt-4o-mini", 6) == &c->models[0]); /* len bounds the name */
    CHECK(config_find_model(c, "gpt-4", 5) == NULL);
    CHECK(config_find_model(c, "GPT-4o", 6) == NULL);
    CHECK(config_find_model(c, "othe", 4) == NULL);
    config_free(c);
}

static void test_urls(void)
{
    char y[1024];
    struct config *c;
    /* https: default port 443 and tls; path prefix without trailing '/' */
    c = load_ok("models:\n  - name: m\n    backends:\n      - url: https://127.0.0.1\n"
                "      - url: http://127.0.0.1/\n      - url: HTTP://127.0.0.1:81/a/b//\n");
    if (c) {
        const struct config_backend *b = c->models[0].backends;
        CHECK(b[0].tls);
        CHECK_EQ_INT(b[0].port, 443);
        CHECK_EQ_STR(b[0].base_path, "");
        CHECK_EQ_STR(b[0].name, "127.0.0.1:443");
        CHECK(!b[1].tls);
        CHECK_EQ_INT(b[1].port, 80);
        CHECK_EQ_STR(b[1].base_path, "");
        CHECK_EQ_STR(b[1].name, "127.0.0.1:80");
        CHECK(!b[2].tls);
        CHECK_EQ_INT(b[2].port, 81);
        CHECK_EQ_STR(b[2].base_path, "/a/b");
    }
    config_free(c);

#define URL_ERR(u, msg)                                                                    \
    do {                                                                                   \
        snprintf(y, sizeof y, "models:\n  - name: m\n    backends:\n      - url: %s\n", u); \
        expect_err(y, "4:14: " msg);                                                       \
    } while (0)
    URL_ERR("ftp://127.0.0.1", "\"url\": expected http://HOST[:PORT][/PATH] or https://..., got \"ftp://127.0.0.1\"");
    URL_ERR("127.0.0.1:80", "\"url\": expected http://HOST[:PORT][/PATH] or https://..., got \"127.0.0.1:80\"");
    URL_ERR("http://", "\"url\": invalid host in \"http://\"");
    URL_ERR("http:///v1", "\"url\": invalid host in \"http:///v1\"");
    URL_ERR("http://a!b", "\"url\": invalid host in \"http://a!b\"");
    URL_ERR("http://user:pw@127.0.0.1", "\"url\": user information is not allowed");
    URL_ERR("http://127.0.0.1/v1?x=1", "\"url\": a query or fragment is not allowed");
    URL_ERR("http://127.0.0.1/#frag", "\"url\": a query or fragment is not allowed");
    URL_ERR("http://127.0.0.1:0", "\"url\": port must be 1..65535 in \"http://127.0.0.1:0\"");
    URL_ERR("http://127.0.0.1:65536", "\"url\": port must be 1..65535 in \"http://127.0.0.1:65536\"");
    URL_ERR("\"http://127.0.0.1:\"", "\"url\": port must be 1..65535 in \"http://127.0.0.1:\"");
    URL_ERR("http://127.0.0.1:8x", "\"url\": port must be 1..65535 in \"http://127.0.0.1:8x\"");
    URL_ERR("\"http://[::1\"", "\"url\": invalid host in \"http://[::1\"");
    URL_ERR("\"http://[zz]:80\"", "\"url\": invalid IPv6 address in \"http://[zz]:80\"");
    URL_ERR("http://::1:80", "\"url\": invalid host in \"http://::1:80\"");
    URL_ERR("shade-no-such-host.invalid",
            "\"url\": expected http://HOST[:PORT][/PATH] or https://..., got \"shade-no-such-host.invalid\"");
    /* an unresolvable host is an error at the url's position */
    snprintf(y, sizeof y, "models:\n  - name: m\n    backends:\n      - url: http://shade-no-such-host.invalid:8001\n");
    expect_err_prefix(y, "4:14: cannot resolve host \"shade-no-such-host.invalid\": ");
#undef URL_ERR
}

static void test_api_key_env(void)
{
    char y[1024];
    setenv("SHADE_TEST_KEY2", "secret", 1);
    struct config *c = load_ok(with_backend_line(y, sizeof y, "api_key_env: SHADE_TEST_KEY2"));
    if (c) {
        CHECK_EQ_STR(c->models[0].backends[0].api_key_env, "SHADE_TEST_KEY2");
        CHECK_EQ_STR(c->models[0].backends[0].api_key, "secret");
    }
    config_free(c);
    unsetenv("SHADE_TEST_KEY2");
    expect_err(with_backend_line(y, sizeof y, "api_key_env: SHADE_TEST_KEY2"),
               "5:22: \"api_key_env\": environment variable SHADE_TEST_KEY2 is not set or empty");
    setenv("SHADE_TEST_KEY2", "", 1);
    expect_err(with_backend_line(y, sizeof y, "api_key_env: SHADE_TEST_KEY2"),
               "5:22: \"api_key_env\": environment variable SHADE_TEST_KEY2 is not set or empty");
    unsetenv("SHADE_TEST_KEY2");
    expect_err(with_backend_line(y, sizeof y, "api_key_env: 1BAD-NAME"),
               "5:22: \"api_key_env\": invalid environment variable name \"1BAD-NAME\"");
}

static void test_ca_file(void)
{
    char y[1024];
    expect_err(with_backend_line(y, sizeof y, "ca_file: /nonexistent/shade/ca.pem"),
               "5:18: \"ca_file\": cannot open \"/nonexistent/shade/ca.pem\": No such file or directory");
    expect_err(with_backend_line(y, sizeof y, "ca_file: /tmp"),
               "5:18: \"ca_file\": \"/tmp\" is not a regular file");
}

static void test_durations(void)
{
    static const struct { const char *s; uint64_t ms; } ok[] = {
        {"250ms", 250}, {"10s", 10000}, {"2m", 120000}, {"1h", 3600000},
        {"0ms", 0}, {"0s", 0}, {"86400000ms", 86400000}, {"24h", 86400000},
        {"18446744073709551615ms", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint64_t ms = 12345;
        int rc = config_parse_duration(ok[i].s, &ms);
        CHECK_EQ_INT(rc, 0);
        CHECK(ms == ok[i].ms);
    }
    static const char *const bad[] = {
        "", "10", "s", "ms", "10 s", " 10s", "10s ", "1.5s", "-1s", "+1s", "10sec", "10S",
        "1d", "1h30m", "0x10s", "18446744073709551616ms", "5124095576030432h",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t ms = 777;
        unit_checks++;
        if (config_parse_duration(bad[i], &ms) != -1 || ms != 777) {
            unit_failures++;
            fprintf(stderr, "%s:%d: config_parse_duration(\"%s\") accepted\n", __FILE__, __LINE__, bad[i]);
        }
    }

    /* through the loader: bounds 1ms..24h */
    expect_err("server:\n  header_timeout: 0s\n" MIN_YAML,
               "2:19: \"header_timeout\": 0s is out of range (1ms..24h)");
    expect_err("server:\n  shutdown_timeout: 25h\n" MIN_YAML,
               "2:21: \"shutdown_timeout\": 25h is out of range (1ms..24h)");
    expect_err("server:\n  body_timeout: 99999999999999999999s\n" MIN_YAML,
               "2:17: \"body_timeout\": 99999999999999999999s is out of range (1ms..24h)");
    expect_err("server:\n  body_timeout: 10\n" MIN_YAML,
               "2:17: \"body_timeout\": expected a duration such as 250ms, 10s, 2m or 1h, got \"10\"");
    struct config *c = load_ok("server:\n  keepalive_timeout: 1ms\n  shutdown_timeout: 24h\n" MIN_YAML);
    if (c) {
        CHECK_EQ_INT(c->server.keepalive_timeout_ms, 1);
        CHECK_EQ_INT(c->server.shutdown_timeout_ms, 86400000);
    }
    config_free(c);
}

static void test_sizes(void)
{
    static const struct { const char *s; uint64_t v; } ok[] = {
        {"1024", 1024}, {"512KiB", 524288}, {"16MiB", 16777216}, {"1GiB", 1073741824},
        {"1KiB", 1024}, {"1073741824", 1073741824},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char y[512];
        snprintf(y, sizeof y, "server:\n  max_body_bytes: %s\n%s", ok[i].s, MIN_YAML);
        struct config *c = load_ok(y);
        if (c) CHECK(c->server.max_body_bytes == ok[i].v);
        config_free(c);
    }
    const char *exp = "\"max_body_bytes\": expected a size such as 1048576, 512KiB, 16MiB or 1GiB, got ";
    static const char *const bad[] = {"64KB", "1.5MiB", "0x400", "16mib", "16 MiB", "MiB", "-1KiB", "01024"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char y[512], want[256];
        snprintf(y, sizeof y, "server:\n  max_body_bytes: %s\n%s", bad[i], MIN_YAML);
        snprintf(want, sizeof want, "2:19: %s\"%s\"", exp, bad[i]);
        expect_err(y, want);
    }
    expect_err("server:\n  max_body_bytes: 1023\n" MIN_YAML,
               "2:19: \"max_body_bytes\": 1023 is out of range (1KiB..1GiB)");
    expect_err("server:\n  max_body_bytes: 1025MiB\n" MIN_YAML,
               "2:19: \"max_body_bytes\": 1025MiB is out of range (1KiB..1GiB)");
    expect_err("server:\n  max_header_bytes: 2MiB\n" MIN_YAML,
               "2:21: \"max_header_bytes\": 2MiB is out of range (1KiB..1MiB)");
}

static void test_listen(void)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char a[64];
    CHECK_EQ_INT(config_parse_listen("127.0.0.1:8080", &ss, &len), 0);
    CHECK_EQ_INT(ss.ss_family, AF_INET);
    CHECK_EQ_INT(len, sizeof(struct sockaddr_in));
    CHECK_EQ_STR(addr_str(&ss, a, sizeof a), "127.0.0.1");
    CHECK_EQ_INT(port_of(&ss), 8080);

    CHECK_EQ_INT(config_parse_listen("0.0.0.0:1", &ss, &len), 0);
    CHECK_EQ_STR(addr_str(&ss, a, sizeof a), "0.0.0.0");
    CHECK_EQ_INT(port_of(&ss), 1);

    CHECK_EQ_INT(config_parse_listen("localhost:65535", &ss, &len), 0);
    CHECK_EQ_INT(ss.ss_family, AF_INET);
    CHECK_EQ_STR(addr_str(&ss, a, sizeof a), "127.0.0.1");
    CHECK_EQ_INT(port_of(&ss), 65535);

    CHECK_EQ_INT(config_parse_listen("[::1]:9000", &ss, &len), 0);
    CHECK_EQ_INT(ss.ss_family, AF_INET6);
    CHECK_EQ_INT(len, sizeof(struct sockaddr_in6));
    CHECK_EQ_STR(addr_str(&ss, a, sizeof a), "::1");
    CHECK_EQ_INT(port_of(&ss), 9000);

    CHECK_EQ_INT(config_parse_listen("[::]:80", &ss, &len), 0);
    CHECK_EQ_STR(addr_str(&ss, a, sizeof a), "::");

    CHECK_EQ_INT(config_parse_listen("[2001:db8::7]:443", &ss, &len), 0);
    CHECK_EQ_STR(addr_str(&ss, a, sizeof a), "2001:db8::7");

    static const char *const bad[] = {
        "", "127.0.0.1", "127.0.0.1:", ":8080", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:80x",
        "::1:8080", "[::1]", "[::1]8080", "[::1:80", "[1.2.3.4]:80", "example.com:80",
        "256.1.1.1:80", "127.0.0.1:-1", "localhost", "[zz]:80", "127.0.0.1:123456",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unit_checks++;
        if (config_parse_listen(bad[i], &ss, &len) != -1) {
            unit_failures++;
            fprintf(stderr, "%s:%d: config_parse_listen(\"%s\") accepted\n", __FILE__, __LINE__, bad[i]);
        }
    }

    expect_err("server:\n  listen: 127.0.0.1\n" MIN_YAML,
               "2:11: \"listen\": invalid address \"127.0.0.1\" (expected IPv4:port, [IPv6]:port or "
               "localhost:port; port 1..65535)");
    struct config *c = load_ok("server:\n  listen: localhost:9999\n" MIN_YAML);
    if (c) {
        CHECK_EQ_STR(c->server.listen, "localhost:9999");
        CHECK_EQ_INT(port_of(&c->server.addr), 9999);
    }
    config_free(c);
}

static void test_structure_errors(void)
{
    char path[64], err[512];
    struct config *c = NULL;

    /* a missing file: no line or column */
    CHECK_EQ_INT(config_load("/nonexistent/shade.yaml", &c, err, sizeof err), -1);
    CHECK(c == NULL);
    CHECK_EQ_STR(err, "/nonexistent/shade.yaml: cannot open: No such file or directory");

    expect_err("", "1:1: empty configuration (expected a mapping with at least \"models\")");
    expect_err("# only a comment\n\n", "1:1: empty configuration (expected a mapping with at least \"models\")");
    expect_err("- a\n- b\n", "1:1: the top level must be a mapping (server:, models:)");
    expect_err("\n\nhello\n", "1:1: the top level must be a mapping (server:, models:)");
    expect_err("server:\n  workers: 1\n", "1:1: missing required key \"models\" at top level");
    expect_err("models: []\n", "1:9: \"models\": must not be empty");
    expect_err("models:\n", "1:8: \"models\": expected a sequence, got an empty value");
    expect_err("models: demo\n", "1:9: \"models\": expected a sequence, got \"demo\"");
    expect_err("models:\n  - demo\n", "2:5: \"models\": each entry must be a mapping, got \"demo\"");
    expect_err("models:\n  - name: demo\n", "2:5: missing required key \"backends\" in model");
    expect_err("models:\n  - name: demo\n    backends: []\n", "3:15: \"backends\": must not be empty");
    expect_err("models:\n  - backends:\n      - url: http://127.0.0.1:1\n",
               "2:5: missing required key \"name\" in model");
    expect_err("models:\n  - name: demo\n    backends:\n      - name: x\n",
               "4:9: missing required key \"url\" in backend");
    expect_err("server: 5\n" MIN_YAML, "1:9: \"server\": expected a mapping, got \"5\"");
    expect_err("server: [1]\n" MIN_YAML, "1:9: \"server\": expected a mapping, got a sequence");
    expect_err("? [a]\n: 1\n", "1:3: keys at top level must be plain names");

    /* unknown keys, with and without a suggestion */
    expect_err("modles: []\n", "1:1: unknown key \"modles\" at top level (did you mean \"models\"?)");
    expect_err("server:\n  frobnicate: 1\n" MIN_YAML, "2:3: unknown key \"frobnicate\" in server");
    expect_err("server:\n  max_header: 100\n" MIN_YAML,
               "2:3: unknown key \"max_header\" in server (did you mean \"max_headers\"?)");
    char y[1024];
    expect_err(with_backend_line(y, sizeof y, "weigth: 2"),
               "5:9: unknown key \"weigth\" in backend (did you mean \"weight\"?)");
    expect_err("models:\n  - name: demo\n    price: {input: 1, ouput: 2}\n",
               "3:23: unknown key \"ouput\" in price (did you mean \"output\"?)");

    /* duplicates */
    expect_err("server:\n  workers: 1\n  workers: 2\n" MIN_YAML,
               "3:3: duplicate key \"workers\" in server (first at line 2)");
    expect_err(MIN_YAML "models: []\n", "5:1: duplicate key \"models\" at top level (first at line 1)");
    expect_err(with_backend_line(y, sizeof y, "url: http://127.0.0.1:2"),
               "5:9: duplicate key \"url\" in backend (first at line 4)");
    expect_err("models:\n"
               "  - name: demo\n    backends: [{url: \"http://127.0.0.1:1\"}]\n"
               "  - name: other\n    backends: [{url: \"http://127.0.0.1:1\"}]\n"
               "  - name: demo\n    backends: [{url: \"http://127.0.0.1:1\"}]\n",
               "6:11: duplicate model name \"demo\" (first at line 2)");
    expect_err("models:\n  - name: demo\n    backends:\n"
               "      - url: http://127.0.0.1:1\n        name: a\n"
               "      - url: http://127.0.0.1:2\n        name: a\n",
               "7:15: duplicate backend name \"a\" (first at line 5)");
    /* the default name host:port collides too */
    expect_err("models:\n  - name: demo\n    backends:\n"
               "      - url: http://127.0.0.1:1\n      - url: http://127.0.0.1:1/v1\n",
               "5:9: duplicate backend name \"127.0.0.1:1\" (first at line 4)");
    /* the same backend name in two models is fine */
    c = load_ok("models:\n"
                "  - name: a\n    backends: [{url: \"http://127.0.0.1:1\", name: x}]\n"
                "  - name: b\n    backends: [{url: \"http://127.0.0.1:1\", name: x}]\n");
    if (c) CHECK_EQ_INT(c->nmodels, 2);
    config_free(c);

    /* YAML syntax errors carry libyaml's message and mark */
    expect_err_prefix("server:\n  listen: a\n   workers: 1\n", "3:11: mapping values are not allowed");
    expect_err_prefix("models:\n  - name: \"demo\n", "3:1: found unexpected end of stream");
    expect_err_prefix("server: {a: 1\n", "2:1: did not find expected ',' or '}'");
    expect_err_prefix("a: \xff\n", "1:4: invalid leading UTF-8 octet");
    expect_err(MIN_YAML "---\nserver: {}\n", "5:1: only one YAML document is allowed");

    /* err may be small or absent: always NUL-terminated, never overrun */
    write_tmp("modles: 1\n", path, sizeof path);
    memset(err, 'x', sizeof err);
    CHECK_EQ_INT(config_load(path, &c, err, 8), -1);
    CHECK_EQ_INT(strlen(err), 7);
    CHECK_EQ_INT(err[8], 'x');
    CHECK_EQ_INT(config_load(path, &c, NULL, 0), -1);
    CHECK(c == NULL);
    unlink(path);
}

static void test_value_errors(void)
{
    char y[1024];
    /* integers: decimal only, bounds, no quotes */
    expect_err("server:\n  workers: 12abc\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got \"12abc\"");
    expect_err("server:\n  workers: \"4\"\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got quoted string \"4\"");
    expect_err("server:\n  workers: 0x10\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got \"0x10\"");
    expect_err("server:\n  workers: 010\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got \"010\"");
    expect_err("server:\n  workers: 1.0\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got \"1.0\"");
    expect_err("server:\n  workers: +1\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got \"+1\"");
    expect_err("server:\n  workers:\n" MIN_YAML,
               "2:11: \"workers\": expected a decimal integer, got an empty value");
    expect_err("server:\n  workers: [1]\n" MIN_YAML,
               "2:12: \"workers\": expected a decimal integer, got a sequence");
    expect_err("server:\n  workers: 257\n" MIN_YAML, "2:12: \"workers\": 257 is out of range (0..256)");
    expect_err("server:\n  workers: -1\n" MIN_YAML, "2:12: \"workers\": -1 is out of range (0..256)");
    expect_err("server:\n  workers: 99999999999999999999999\n" MIN_YAML,
               "2:12: \"workers\": 99999999999999999999999 is out of range (0..256)");
    expect_err("server:\n  max_connections: 0\n" MIN_YAML,
               "2:20: \"max_connections\": 0 is out of range (1..1000000)");
    expect_err("server:\n  max_headers: 7\n" MIN_YAML, "2:16: \"max_headers\": 7 is out of range (8..1000)");
    expect_err("server:\n  max_headers: 1001\n" MIN_YAML,
               "2:16: \"max_headers\": 1001 is out of range (8..1000)");
    expect_err(with_backend_line(y, sizeof y, "weight: 0"), "5:17: \"weight\": 0 is out of range (1..1000)");
    expect_err(with_backend_line(y, sizeof y, "weight: 1001"),
               "5:17: \"weight\": 1001 is out of range (1..1000)");
    expect_err(with_backend_line(y, sizeof y, "max_fails: 0"),
               "5:20: \"max_fails\": 0 is out of range (1..1000)");
    expect_err(with_backend_line(y, sizeof y, "max_idle_conns: 10001"),
               "5:25: \"max_idle_conns\": 10001 is out of range (0..10000)");
    expect_err(with_backend_line(y, sizeof y, "max_concurrent: 1000001"),
               "5:25: \"max_concurrent\": 1000001 is out of range (0..1000000)");
    struct config *c = load_ok("server:\n  workers: 256\n  max_headers: 8\n" MIN_YAML);
    if (c) {
        CHECK_EQ_INT(c->server.workers, 256);
        CHECK_EQ_INT(c->server.max_headers, 8);
    }
    config_free(c);

    /* booleans: true/false only */
    expect_err(with_backend_line(y, sizeof y, "tls_verify: yes"),
               "5:21: \"tls_verify\": expected true or false, got \"yes\"");
    expect_err(with_backend_line(y, sizeof y, "tls_verify: True"),
               "5:21: \"tls_verify\": expected true or false, got \"True\"");
    expect_err(with_backend_line(y, sizeof y, "tls_verify: \"false\""),
               "5:21: \"tls_verify\": expected true or false, got quoted string \"false\"");

    /* enumerations */
    expect_err("server:\n  log_level: verbose\n" MIN_YAML,
               "2:14: \"log_level\": expected one of debug, info, warn, error, got \"verbose\"");
    expect_err("models:\n  - name: demo\n    balance: random\n",
               "3:14: \"balance\": expected one of round_robin, weighted, least_outstanding, p2c_ewma, "
               "least_tokens, prefix_affinity, got \"random\"");
    static const struct { const char *name; int kind; } kinds[] = {
        { "round_robin", BALANCE_ROUND_ROBIN },   { "weighted", BALANCE_WEIGHTED },
        { "least_outstanding", BALANCE_LEAST_OUTSTANDING }, { "p2c_ewma", BALANCE_P2C_EWMA },
        { "least_tokens", BALANCE_LEAST_TOKENS }, { "prefix_affinity", BALANCE_PREFIX_AFFINITY },
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(y, sizeof y, "models:\n  - name: demo\n    balance: %s\n    backends:\n"
                              "      - url: http://127.0.0.1:8001\n", kinds[i].name);
        c = load_ok(y);
        if (c) CHECK_EQ_INT(c->models[0].balance, kinds[i].kind);
        config_free(c);
    }
    /* prefix_affinity's keys */
    c = load_ok("models:\n  - name: demo\n    balance: prefix_affinity\n    affinity_header: X-Session-Id\n"
                "    affinity_prefix_bytes: 2048\n    load_factor: 1.5\n    backends:\n"
                "      - url: http://127.0.0.1:8001\n");
    if (c) {
        CHECK_EQ_STR(c->models[0].affinity_header, "X-Session-Id");
        CHECK_EQ_INT(c->models[0].affinity_prefix_bytes, 2048);
        CHECK(c->models[0].load_factor == 1.5);
    }
    config_free(c);
    expect_err("models:\n  - name: demo\n    affinity_header: \"x:session\"\n",
               "3:22: \"affinity_header\": not a valid HTTP header name \"x:session\"");
    expect_err("models:\n  - name: demo\n    affinity_header: \"x session\"\n",
               "3:22: \"affinity_header\": must not contain whitespace or control characters");
    expect_err("models:\n  - name: demo\n    affinity_prefix_bytes: 8\n",
               "3:28: \"affinity_prefix_bytes\": 8 is out of range (16..64KiB)");
    expect_err("models:\n  - name: demo\n    affinity_prefix_bytes: 65537\n",
               "3:28: \"affinity_prefix_bytes\": 65537 is out of range (16..64KiB)");
    expect_err("models:\n  - name: demo\n    load_factor: 0.9\n",
               "3:18: \"load_factor\": 0.9 is out of range (1..10)");
    expect_err("models:\n  - name: demo\n    load_factor: 10.5\n",
               "3:18: \"load_factor\": 10.5 is out of range (1..10)");
    expect_err("models:\n  - name: demo\n    load_factor: lots\n",
               "3:18: \"load_factor\": expected a number, got \"lots\"");
    c = load_ok("server:\n  log_level: error\n" MIN_YAML);
    if (c) CHECK_EQ_STR(c->server.log_level, "error");
    config_free(c);

    /* prices */
    expect_err("models:\n  - name: demo\n    price:\n      input: -0.5\n",
               "4:14: \"input\": -0.5 is out of range (0..1000000)");
    expect_err("models:\n  - name: demo\n    price:\n      output: cheap\n",
               "4:15: \"output\": expected a number, got \"cheap\"");
    expect_err("models:\n  - name: demo\n    price:\n      output: .nan\n",
               "4:15: \"output\": expected a number, got \".nan\"");
    expect_err("models:\n  - name: demo\n    price:\n      output: \"1\"\n",
               "4:15: \"output\": expected a number, got quoted string \"1\"");
    expect_err("models:\n  - name: demo\n    price: 3\n", "3:12: \"price\": expected a mapping, got \"3\"");

    /* names */
    expect_err("models:\n  - name: \"two words\"\n    backends: []\n",
               "2:11: \"name\": must not contain whitespace or control characters");
    expect_err("models:\n  - name: \"tab\\there\"\n    backends: []\n",
               "2:11: \"name\": must not contain whitespace or control characters");
    expect_err("models:\n  - name: \"\"\n    backends: []\n", "2:11: \"name\": must not be empty");
    expect_err("models:\n  - name: \"a\\0b\"\n    backends: []\n", "2:11: \"name\": contains a NUL byte");
    expect_err("models:\n  - name: {a: 1}\n", "2:11: \"name\": expected a string, got a mapping");
    char longname[300];
    memset(longname, 'n', 257);
    longname[257] = '\0';
    snprintf(y, sizeof y, "models:\n  - name: %s\n    backends: []\n", longname);
    expect_err(y, "2:11: \"name\": length must be 1..256 characters");
    longname[256] = '\0';
    snprintf(y, sizeof y, "models:\n  - name: %s\n    backends:\n      - url: http://127.0.0.1:1\n", longname);
    c = load_ok(y);
    if (c) CHECK_EQ_INT(strlen(c->models[0].name), 256);
    config_free(c);
    expect_err(with_backend_line(y, sizeof y, "model: \"a b\""),
               "5:16: \"model\": must not contain whitespace or control characters");
}

static void test_example(void)
{
    char err[512];
    struct config *c = NULL;
    int rc = config_load("examples/basic.yaml", &c, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "  %s (run from the repository root)\n", err);
        return;
    }
    CHECK_EQ_STR(c->server.listen, "127.0.0.1:8080");
    CHECK_EQ_INT(port_of(&c->server.addr), 8080);
    CHECK_EQ_INT(c->nmodels, 1);
    const struct config_model *m = config_find_model(c, "demo", 4);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(m->balance, BALANCE_ROUND_ROBIN);
        CHECK_EQ_INT(m->nbackends, 2);
        if (m->nbackends == 2) {
            CHECK_EQ_STR(m->backends[0].name, "sim-a");
            CHECK_EQ_INT(m->backends[0].port, 8001);
            CHECK_EQ_STR(m->backends[1].name, "sim-b");
            CHECK_EQ_INT(m->backends[1].port, 8002);
        }
    }
    config_free(c);
}

static void test_resilience_keys(void)
{
    /* defaults for retries, fallbacks, keep-alive and admission */
    struct config *c = load_ok("models:\n  - name: a\n    backends:\n      - url: http://127.0.0.1:1\n");
    if (c) {
        const struct config_model *m = &c->models[0];
        CHECK_EQ_INT(m->retry_attempts, 3);
        CHECK(m->retry_on_5xx && m->retry_on_429 && !m->retry_on_timeout);
        CHECK_EQ_INT(m->retry_budget_percent, 20);
        CHECK_EQ_INT(m->retry_after_max_ms, 2000);
        CHECK_EQ_INT(m->nfallbacks, 0);
        CHECK_EQ_INT(m->stream_keepalive_ms, 15000);
        CHECK_EQ_INT(m->max_in_flight, 0);
        CHECK_EQ_INT(m->queue_size, 0);
        CHECK_EQ_INT(m->queue_timeout_ms, 10000);
        CHECK(m->queue_priority_header == NULL);
        CHECK_EQ_INT(m->queue_shed_status, 503);
        config_free(c);
    }
    c = load_ok("models:\n"
                "  - name: a\n"
                "    retry: {attempts: 2, on_5xx: false, on_429: false, on_timeout: true, budget_percent: 5,"
                " retry_after_max: 0s}\n"
                "    fallback: [b]\n"
                "    stream_keepalive: 0s\n"
                "    max_in_flight: 7\n"
                "    queue: {size: 3, timeout: 250ms, priority_header: x-priority, shed_status: 429}\n"
                "    backends:\n      - url: http://127.0.0.1:1\n"
                "  - name: b\n    backends:\n      - url: http://127.0.0.1:2\n");
    if (c) {
        const struct config_model *m = &c->models[0];
        CHECK_EQ_INT(m->retry_attempts, 2);
        CHECK(!m->retry_on_5xx && !m->retry_on_429 && m->retry_on_timeout);
        CHECK_EQ_INT(m->retry_budget_percent, 5);
        CHECK_EQ_INT(m->retry_after_max_ms, 0);
        CHECK_EQ_INT(m->nfallbacks, 1);
        if (m->nfallbacks == 1)
            CHECK_EQ_STR(m->fallbacks[0], "b");
        CHECK_EQ_INT(m->stream_keepalive_ms, 0);
        CHECK_EQ_INT(m->max_in_flight, 7);
        CHECK_EQ_INT(m->queue_size, 3);
        CHECK_EQ_INT(m->queue_timeout_ms, 250);
        CHECK_EQ_STR(m->queue_priority_header, "x-priority");
        CHECK_EQ_INT(m->queue_shed_status, 429);
        config_free(c);
    }
    expect_err("models:\n  - name: a\n    fallback: [a]\n    backends:\n      - url: http://127.0.0.1:1\n",
               "3:16: \"fallback\": model \"a\" cannot fall back to itself");
    expect_err("models:\n  - name: a\n    fallback: [zz]\n    backends:\n      - url: http://127.0.0.1:1\n",
               "3:16: \"fallback\": no model named \"zz\"");
    expect_err_prefix("models:\n  - name: a\n    fallback: [b, b]\n    backends:\n      - url: http://127.0.0.1:1\n",
                      "3:19: \"fallback\": \"b\" is listed twice");
    expect_err("models:\n  - name: a\n    queue: {shed_status: 500}\n    backends:\n      - url: http://127.0.0.1:1\n",
               "3:26: \"shed_status\": must be 429 or 503");
    expect_err_prefix("models:\n  - name: a\n    retry: {attempts: 0}\n    backends:\n      - url: http://127.0.0.1:1\n",
                      "3:23: ");
}

#define SHADOW_BASE MIN_YAML "  - name: other\n    backends:\n      - url: http://127.0.0.1:8009\n"

static void test_shadows(void)
{
    /* an inline pool becomes a hidden model named after the shadow */
    struct config *c = load_ok(SHADOW_BASE
                               "shadows:\n  - name: cand\n    model: demo\n    backends:\n"
                               "      - url: http://127.0.0.1:8003\n        model: v2\n"
                               "    price: { input: 0.2, output: 0.6 }\n"
                               "    sample: 25\n    select: hash\n    hash_header: x-user\n"
                               "    set: { temperature: 0, top_p: 0.5, user: \"probe\", seed: null, note: hello world }\n"
                               "    stream: \"true\"\n    refusal_patterns: [\"no can do\", \"I refuse\"]\n"
                               "    judge: { model: other, sample: 50 }\n"
                               "    analysis: { interval: 250ms, min_pairs: 5, stop_below: 0.8, stop_alpha: 0.01, stop_horizon: 5000 }\n"
                               "    recommend: { alpha: 0.01, latency_margin: 1.3, quality_margin: 0.05 }\n"
                               "shadow_store:\n  path: /tmp/x.db\n  redact: [\"[0-9]{3}-[0-9]{4}\"]\n");
    if (c) {
        CHECK_EQ_INT(c->nmodels, 3);
        CHECK_EQ_INT(c->nshadows, 1);
        const struct config_shadow *sh = &c->shadows[0];
        CHECK_EQ_INT(sh->model_index, 0);
        CHECK_EQ_INT(sh->target_index, 2);
        CHECK_EQ_STR(c->models[2].name, "cand");
        CHECK(c->models[2].hidden && !c->models[0].hidden);
        CHECK_EQ_STR(c->models[2].backends[0].model, "v2");
        CHECK(c->models[2].input_price_per_mtok == 0.2 && c->models[2].output_price_per_mtok == 0.6);
        CHECK_EQ_INT(c->models[2].retry_attempts, 1);
        CHECK(sh->sample_percent == 25 && sh->select == SHADOW_SELECT_HASH);
        CHECK_EQ_STR(sh->hash_header, "x-user");
        CHECK_EQ_INT(sh->nset, 5);
        CHECK_EQ_STR(sh->set[0].json, "0");
        CHECK_EQ_STR(sh->set[1].json, "0.5");
        CHECK_EQ_STR(sh->set[2].json, "\"probe\"");
        CHECK_EQ_STR(sh->set[3].json, "null");
        CHECK_EQ_STR(sh->set[4].json, "\"hello world\"");
        CHECK_EQ_INT(sh->stream, SHADOW_STREAM_ON);
        CHECK_EQ_INT(sh->nrefusal, 2);
        CHECK_EQ_STR(sh->refusal_patterns[0], "no can do");
        CHECK_EQ_STR(sh->judge_model, "other");
        CHECK(sh->judge_sample_percent == 50);
        CHECK_EQ_INT(sh->analysis_interval_ms, 250);
        CHECK(sh->autostop_success_min == 0.8 && sh->autostop_alpha == 0.01 && sh->autostop_horizon == 5000);
        CHECK(sh->rec_alpha == 0.01 && sh->rec_latency_margin == 1.3 && sh->rec_quality_margin == 0.05);
        /* defaults */
        CHECK_EQ_INT(sh->deadline_ms, 60000);
        CHECK_EQ_INT(sh->max_concurrent, 32);
        CHECK(sh->aa_percent == 10 && sh->skip_tool_results && !sh->cancel_on_client_abort);
        CHECK_EQ_STR(sh->opt_out_header, "x-shade-no-shadow");
        CHECK(sh->rec_success_min == 0.95 && sh->rec_latency_ratio_max == 1.5);
        CHECK_EQ_INT(sh->rec_min_pairs, 30);
        CHECK_EQ_INT(c->store.queue_size, 10000);
        CHECK(c->store.queue_max_bytes == 256ull << 20);
        CHECK_EQ_INT(c->store.response_max_bytes, 32768);
        CHECK_EQ_INT(c->store.nredact, 1);
        config_free(c);
    }
    /* a configured model as the target */
    c = load_ok(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n");
    if (c) {
        CHECK_EQ_INT(c->nmodels, 2);
        CHECK_EQ_INT(c->shadows[0].target_index, 1);
        CHECK_EQ_STR(c->store.path, "shade-shadow.db");
        config_free(c);
    }
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n",
               "9:5: shadow \"cand\": give either \"target\" (a configured model) or \"backends\"");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    analysis: { stop_below: 1 }\n",
               "9:5: shadow \"cand\": analysis.stop_below must be below 1 (0 turns auto-stop off)");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    recommend: { alpha: 0.6 }\n",
               "9:5: shadow \"cand\": recommend.alpha must be in (0, 0.5]");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    recommend: { quality_margin: 0 }\n",
               "9:5: shadow \"cand\": recommend.quality_margin must be in (0, 1)");
    expect_err_prefix(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    analysis: { window: 20 }\n",
                      "12:17: unknown key \"window\" in analysis");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: nope\n    target: other\n",
               "9:5: shadow \"cand\": no model named \"nope\"");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: demo\n",
               "9:5: shadow \"cand\": the target is the mirrored model itself");
    expect_err(SHADOW_BASE "shadows:\n  - name: other\n    model: demo\n    backends: [{url: \"http://127.0.0.1:1\"}]\n",
               "9:5: shadow \"other\": a model has the same name (a shadow with backends needs a name of its own)");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    set: { model: x }\n",
               "12:12: \"set\": \"model\" cannot be overridden here (use upstream_model)");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    set: { a: [1] }\n",
               "12:15: \"set\": values must be scalars (numbers, booleans, strings)");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    select: header\n",
               "9:5: shadow \"cand\": select: header needs \"select_header\"");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    sample: 101\n",
               "12:13: \"sample\": 101 is out of range (0..100)");
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n    judge: { model: x }\n",
               "9:5: shadow \"cand\": no judge model named \"x\"");
    c = load_ok(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n"
                            "shadow_store:\n  queue_max_bytes: 2GiB\n");
    if (c) {
        CHECK(c->store.queue_max_bytes == 2ull << 30);
        config_free(c);
    }
    expect_err(SHADOW_BASE "shadows:\n  - name: cand\n    model: demo\n    target: other\n"
                           "shadow_store:\n  queue_max_bytes: 1KiB\n",
               "13:20: \"queue_max_bytes\": 1KiB is out of range (64KiB..1024GiB)");
    expect_err(SHADOW_BASE "admin:\n  key_env: SHADE_TEST_SURELY_UNSET_VAR\n",
               "9:12: \"key_env\": environment variable SHADE_TEST_SURELY_UNSET_VAR is not set or empty");
}

/* ---- a module bringing its own section: parsed with the same tables ---- */

struct fake_conf {
    char *greeting;
    uint32_t limit;
    uint32_t window_ms;
    double ratio;
    bool loud;
    char **names;
    size_t nnames;
};

static int check_greeting(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    const char *v = *(char **)((char *)base + f->offset);
    char sb[CONFIG_SHOW_BYTES];
    if (strncmp(v, "hello", 5) != 0)
        return config_fail(ld, at, "\"greeting\": must start with hello (got \"%s\")", config_show(sb, v, strlen(v)));
    return 0;
}

static int finish_fake(struct loader *ld, const yaml_node_t *map, void *base)
{
    const struct fake_conf *fc = base;
    if (fc->loud && fc->limit > 100)
        return config_fail(ld, map ? &map->start_mark : NULL, "\"loud\" needs \"limit\" of at most 100 in fake");
    return 0;
}

#define S struct fake_conf
static const struct field fake_fields[] = {
    STR(S, "greeting", greeting, 0, 1, 64, check_greeting, "hello world"),
    UINT(S, "limit", limit, 1, 1000, "10"),
    DUR(S, "window", window_ms, "1m"),
    NUM(S, "ratio", ratio, 0, 1, "0.5"),
    BOOL(S, "loud", loud, "false"),
    STRLIST(S, "names", names, nnames, 32),
};
static const struct section fake_section = SECTION("fake", "in fake", fake_fields, S, finish_fake, NULL);
#undef S

static const struct pl_module mod_fake = { .name = "fake", .phase = PH_NONE, .config = &fake_section };
static const struct pl_module mod_plain = { .name = "plain", .phase = PH_NONE };
static const struct section *const fake_sections[] = { &fake_section };

static struct config *load_fake(const char *yaml, char *err, size_t errlen)
{
    char path[64];
    struct config *c = NULL;
    write_tmp(yaml, path, sizeof path);
    int rc = config_load_with(path, fake_sections, 1, &c, err, errlen);
    /* the error names the file first: keep only what follows "FILE:" */
    size_t pl = strlen(path);
    if (rc < 0 && strncmp(err, path, pl) == 0 && err[pl] == ':')
        memmove(err, err + pl + 1, strlen(err + pl + 1) + 1);
    unlink(path);
    return rc == 0 ? c : NULL;
}

static void expect_fake_err(int line, const char *yaml, const char *want)
{
    char err[512];
    struct config *c = load_fake(yaml, err, sizeof err);
    unit_checks++;
    if (c) {
        report(line, yaml, "config_load_with succeeded", "(success)", want);
        config_free(c);
    } else if (strcmp(err, want) != 0) {
        report(line, yaml, "wrong error", err, want);
    }
}

static void test_module_section(void)
{
    char err[512];
    /* every field given */
    struct config *c = load_fake(MIN_YAML "fake:\n  greeting: hello there\n  limit: 50\n  window: 250ms\n"
                                 "  ratio: 0.25\n  loud: true\n  names: [a, b]\n", err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        const struct fake_conf *fc = pl_config(c, &mod_fake);
        CHECK(fc != NULL);
        CHECK_EQ_STR(fc->greeting, "hello there");
        CHECK_EQ_INT(fc->limit, 50);
        CHECK_EQ_INT(fc->window_ms, 250);
        CHECK(fc->ratio == 0.25);
        CHECK(fc->loud);
        CHECK_EQ_INT(fc->nnames, 2);
        CHECK_EQ_STR(fc->names[1], "b");
        CHECK(pl_config(c, &mod_plain) == NULL); /* brings no section */
        config_free(c);
    }
    /* absent, or present and empty: the table's defaults */
    const char *const absent[] = { MIN_YAML, MIN_YAML "fake:\n", MIN_YAML "fake: {}\n" };
    for (size_t i = 0; i < 3; i++) {
        c = load_fake(absent[i], err, sizeof err);
        CHECK(c != NULL);
        if (!c) continue;
        const struct fake_conf *fc = pl_config(c, &mod_fake);
        CHECK(fc != NULL);
        if (fc) {
            CHECK_EQ_STR(fc->greeting, "hello world");
            CHECK_EQ_INT(fc->limit, 10);
            CHECK_EQ_INT(fc->window_ms, 60000);
            CHECK(fc->ratio == 0.5);
            CHECK(!fc->loud);
            CHECK_EQ_INT(fc->nnames, 0);
        }
        config_free(c);
    }
    /* bad values, unknown keys, the module's own checks: file:line:column */
    expect_fake_err(__LINE__, MIN_YAML "fake:\n  limit: 0\n", "6:10: \"limit\": 0 is out of range (1..1000)");
    expect_fake_err(__LINE__, MIN_YAML "fake:\n  window: soon\n",
                    "6:11: \"window\": expected a duration such as 250ms, 10s, 2m or 1h, got \"soon\"");
    expect_fake_err(__LINE__, MIN_YAML "fake:\n  limt: 5\n", "6:3: unknown key \"limt\" in fake (did you mean \"limit\"?)");
    expect_fake_err(__LINE__, MIN_YAML "fake:\n  colour: red\n", "6:3: unknown key \"colour\" in fake");
    expect_fake_err(__LINE__, MIN_YAML "fak:\n  limit: 5\n", "5:1: unknown key \"fak\" at top level (did you mean \"fake\"?)");
    expect_fake_err(__LINE__, MIN_YAML "fake: [1]\n", "5:7: \"fake\": expected a mapping, got a sequence");
    expect_fake_err(__LINE__, MIN_YAML "fake:\n  greeting: bye\n",
                    "6:13: \"greeting\": must start with hello (got \"bye\")");
    expect_fake_err(__LINE__, MIN_YAML "fake:\n  loud: true\n  limit: 500\n",
                    "6:3: \"loud\" needs \"limit\" of at most 100 in fake");
    expect_fake_err(__LINE__, MIN_YAML "fake: {}\nfake: {}\n", "6:1: duplicate key \"fake\" at top level (first at line 5)");
    /* without the module, its key is unknown */
    expect_err(MIN_YAML "fake:\n  limit: 5\n", "5:1: unknown key \"fake\" at top level");
    /* a reload is a new config: blobs of its own */
    struct config *a = load_fake(MIN_YAML "fake:\n  limit: 7\n", err, sizeof err);
    struct config *b = load_fake(MIN_YAML "fake:\n  limit: 8\n", err, sizeof err);
    CHECK(a && b);
    if (a && b) {
        const struct fake_conf *fa = pl_config(a, &mod_fake), *fb = pl_config(b, &mod_fake);
        CHECK(fa != fb);
        CHECK_EQ_INT(fa->limit, 7);
        CHECK_EQ_INT(fb->limit, 8);
    }
    config_free(a);
    config_free(b);
}

/* access_log: and tracing: are the modules' own now, through config_load */
static void test_module_sections_real(void)
{
    struct config *c = load_ok(MIN_YAML);
    if (c) {
        const struct config_access_log *al = accesslog_config(c);
        CHECK(al == pl_config(c, &mod_accesslog));
        CHECK(al->path == NULL);
        CHECK(!al->prompts);
        CHECK_EQ_INT(al->buffer_bytes, 32768);
        CHECK_EQ_INT(al->flush_ms, 1000);
        const struct config_tracing *tr = tracing_config(c);
        CHECK(tr == pl_config(c, &mod_trace));
        CHECK(tr->endpoint == NULL);
        CHECK(tr->sample == 1.0);
        CHECK_EQ_STR(tr->service_name, "shade");
        CHECK_EQ_INT(tr->queue_size, 4096);
        CHECK_EQ_INT(tr->batch_size, 512);
        CHECK_EQ_INT(tr->interval_ms, 1000);
        config_free(c);
    }
    c = load_ok(MIN_YAML "access_log:\n  path: stdout\n  prompts: true\n  buffer: 1KiB\n  flush: 5s\n"
                "tracing:\n  endpoint: http://127.0.0.1:4318/v1/traces\n  sample: 0.1\n  service_name: gw\n");
    if (c) {
        const struct config_access_log *al = accesslog_config(c);
        CHECK_EQ_STR(al->path, "stdout");
        CHECK(al->prompts);
        CHECK_EQ_INT(al->buffer_bytes, 1024);
        CHECK_EQ_INT(al->flush_ms, 5000);
        const struct config_tracing *tr = tracing_config(c);
        CHECK_EQ_STR(tr->endpoint, "http://127.0.0.1:4318/v1/traces");
        CHECK(tr->sample == 0.1);
        CHECK_EQ_STR(tr->service_name, "gw");
        config_free(c);
    }
    expect_err(MIN_YAML "access_log:\n  flush: 0ms\n", "6:10: \"flush\": 0ms is out of range (1ms..24h)");
    expect_err(MIN_YAML "tracing:\n  endpoint: https://x/v1\n",
               "6:13: \"endpoint\": must be http://host[:port]/path (got \"https://x/v1\")");
}

int main(void)
{
    test_defaults();
    test_all_fields();
    test_urls();
    test_api_key_env();
    test_ca_file();
    test_durations();
    test_sizes();
    test_listen();
    test_structure_errors();
    test_value_errors();
    test_example();
    test_resilience_keys();
    test_shadows();
    test_module_section();
    test_module_sections_real();
    config_free(NULL);
    UNIT_DONE();
}
