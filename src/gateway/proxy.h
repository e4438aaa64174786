/* proxy.h — the API request pipeline (decode → admission → select → proxy
 * → respond → record) for POST /v1/chat/completions, /v1/completions and
 * /v1/embeddings; doc/request-lifecycle.md. */
#ifndef SHADE_PROXY_H
#define SHADE_PROXY_H

#include "httpd.h"
#include "metrics.h"

struct worker;

/* Run one API request of endpoint ep (router.c's rows); it answers,
 * counts and logs the request itself when it finishes. */
void api_request(struct worker *w, http_req *r, enum met_endpoint ep);
/* per-worker admission queues (server.c sets them up) */
int proxy_worker_init(struct worker *w);
void proxy_worker_free(struct worker *w);

#endif
