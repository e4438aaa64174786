// srcs: src/gateway/config.c src/core/json.c -lyaml
/* Fuzz the configuration loader: any bytes as a YAML file must give either a
 * config or one "file:line:column: message" error, never a crash or a leak.
 * Host names are not resolved here: getaddrinfo is replaced (below) so the
 * fuzzer never waits on DNS; numeric addresses still go through. */
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
    if (config_load(path, &cfg, err, sizeof err) == 0) {
        if (!cfg || cfg->nmodels == 0)
            abort(); /* a loaded config always has a model */
        config_free(cfg);
    } else if (strncmp(err, path, strlen(path)) != 0) {
        abort(); /* every error names the file */
    }
    return 0;
}
