/* mod_accesslog.h — the access log module's config section (access_log:)
 * and its per-worker buffer, for the code outside the module that needs
 * them: the serving process opens the file (server.c), the router logs the
 * answers it makes itself (router.c). */
#ifndef SHADE_MOD_ACCESSLOG_H
#define SHADE_MOD_ACCESSLOG_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct worker;
struct alog_worker;

/* access_log: one JSON line per request (accesslog.c) */
struct config_access_log {
    char *path;                   /* a file, or "stdout"; NULL = no access log */
    bool prompts;                 /* include the prompt (bounded); default false */
    uint32_t buffer_bytes;        /* per worker; default 32KiB */
    uint32_t flush_ms;            /* default 1s */
};

extern const struct pl_module mod_accesslog;

/* The access_log: section of a config loaded with the gateway's table. */
const struct config_access_log *accesslog_config(const struct config *cfg);
/* This worker's access log buffer, NULL when there is no access log. */
struct alog_worker *accesslog_worker(const struct worker *w);

#endif
