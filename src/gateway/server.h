/* server.h — the serving process: gateway set-up, worker threads, signals,
 * drain (listening sockets inherited from the master through
 * SHADE_LISTEN_FDS, readiness reported on SHADE_READY_FD). */
#ifndef SHADE_SERVER_H
#define SHADE_SERVER_H

#include <stddef.h>

struct config;
struct gateway;

int server_run(struct config *cfg);
/* Build the runtime (models, backends, balancer rings, metric layout,
 * shadows) from a loaded config; gateway_free undoes it. */
int gateway_init(struct gateway *gw, struct config *cfg, char *err, size_t errlen);
void gateway_free(struct gateway *gw);

#endif
