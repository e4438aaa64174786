/* prometheus.h — GET /metrics: every family of doc/metrics.md as Prometheus
 * text, summed over the workers' shards at scrape time. */
#ifndef SHADE_PROMETHEUS_H
#define SHADE_PROMETHEUS_H

#include "buf.h"

struct gateway;

/* Prometheus text exposition of all shards and of the gateway's state. */
void prometheus_render(const struct gateway *gw, struct buf *out);

#endif
