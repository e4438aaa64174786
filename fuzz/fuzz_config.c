// srcs: src/gateway/config.c src/core/json.c src/http/hclient.c src/http/h1.c src/core/buf.c -lyaml
/* Fuzz the configuration loader: any bytes as a YAML file must give either a
 * config or one "file:line:column: message" error, never a crash or a leak.
 * Host names are not resolved here: getaddrinfo is replaced (below) so the
 * fuzzer never waits on DNS; numeric addresses still go through.  The
 * loader runs with two stand-in module sections shaped like access_log:
 * and tracing: (the real modules would pull in the whole gateway), so
 * module sections are fuzzed too. */
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "config.h"
#include "config_schema.h"

struct fz_log { char *path; bool prompts; uint32_t buffer_bytes, flush_ms; };
struct fz_trace { char *endpoint; double sample; char *service_name; uint32_t queue_size; char **tags; size_t ntags; };

static int check_endpoint(struct loader *ld, const struct field *f, const yaml_mark_t *at, void *base)
{
    const char *v = *(char **)((char *)base + f->offset);
    char sb[CONFIG_SHOW_BYTES];
    if (strncmp(v, "http://", 7) != 0)
        return config_fail(ld, at, "\"endpoint\": must be http://... (got \"%s\")", config_show(sb, v, strlen(v)));
    return 0;
}

#define S struct fz_log
static const struct field log_fields[] = {
    STR(S, "path", path, 0, 1, 4096, NULL, NULL),
    BOOL(S, "prompts", prompts, "false"),
    SIZE(S, "buffer", buffer_bytes, 0, 16777216, "32KiB"),
    DUR(S, "flush", flush_ms, "1s"),
};
static const struct section log_section = SECTION("access_log", "in access_log", log_fields, S, NULL, NULL);
#undef S
#define S struct fz_trace
static const struct field trace_fields[] = {
    STR(S, "endpoint", endpoint, F_TOKEN, 8, 2048, check_endpoint, NULL),
    NUM(S, "sample", sample, 0, 1, "1"),
    STR(S, "service_name", service_name, 0, 1, 128, NULL, "shade"),
    UINT(S, "queue_size", queue_size, 16, 10000000, "4096"),
    STRLIST(S, "tags", tags, ntags, 64),
};
static const struct section trace_section = SECTION("tracing", "in tracing", trace_fields, S, NULL, NULL);
#undef S

static const struct section *const fz_sections[] = { &log_section, &trace_section };

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
    (void)service;
    (void)hints;
    struct in_addr a4;
    if (!node || inet_pton(AF_INET, node, &a4) != 1)
        return EAI_NONAME;
    struct addrinfo *ai = calloc(1, sizeof *ai + sizeof(struct sockaddr_in));
    if (!ai)
        return EAI_MEMORY;
    struct sockaddr_in *sin = (struct sockaddr_in *)(ai + 1);
    sin->sin_family = AF_INET;
    sin->sin_addr = a4;
    ai->ai_family = AF_INET;
    ai->ai_socktype = SOCK_STREAM;
    ai->ai_addr = (struct sockaddr *)sin;
    ai->ai_addrlen = sizeof *sin;
    *res = ai;
    return 0;
}

void freeaddrinfo(struct addrinfo *res) { free(res); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("fuzz-config", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) < 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    struct config *cfg = NULL;
    char err[512];
    if (config_load_with(path, fz_sections, 2, &cfg, err, sizeof err) == 0) {
        if (!cfg || cfg->nmodels == 0)
            abort(); /* a loaded config always has a model */
        if (cfg->nmod_conf != 2 || !cfg->mod_conf[0] || !cfg->mod_conf[1])
            abort(); /* a blob for each module section, defaults applied */
        config_free(cfg);
    } else if (strncmp(err, path, strlen(path)) != 0) {
        abort(); /* every error names the file */
    }
    return 0;
}
