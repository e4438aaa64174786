/* mod_trace.h — the tracing module's config section (tracing:), for the
 * code outside the module that needs it: the serving process starts the
 * span exporter (server.c), the core samples new traces and writes the
 * upstream attempts' spans (proxy.c). */
#ifndef SHADE_MOD_TRACE_H
#define SHADE_MOD_TRACE_H

#include <stdint.h>

struct config;

/* tracing: OpenTelemetry spans over OTLP/HTTP (trace.c) */
struct config_tracing {
    char *endpoint;               /* http://host:port/v1/traces; NULL = no export */
    double sample;                /* ratio of new traces sampled, 0..1; default 1 */
    char *service_name;           /* default "shade" */
    uint32_t queue_size;          /* spans waiting for the exporter; default 4096 */
    uint32_t batch_size;          /* default 512 */
    uint32_t interval_ms;         /* default 1s */
};

extern const struct pl_module mod_trace;

/* The tracing: section of a config loaded with the gateway's table. */
const struct config_tracing *tracing_config(const struct config *cfg);

#endif
