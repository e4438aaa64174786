/* router.h — every endpoint of the gateway as a row of one table (router.c):
 * which path (or path prefix), which methods, whether the admin key is
 * needed, and the handler.  The router answers what no row or no method
 * matches (404, 405) and refuses a wrong admin key (401) itself.
 */
#ifndef SHADE_ROUTER_H
#define SHADE_ROUTER_H

#include <stdbool.h>

#include "httpd.h"

struct worker;

/* methods a row allows (bits); ROUTE_ANY: the handler checks them itself */
enum { ROUTE_ANY = 0, ROUTE_GET = 1u << 0, ROUTE_HEAD = 1u << 1, ROUTE_POST = 1u << 2 };

struct route {
    unsigned methods;   /* ROUTE_* bits */
    const char *path;   /* without the query string */
    bool prefix;        /* also every path below it: path + "/…" (or path…, when it ends in '/') */
    bool admin;         /* needs the admin key when admin.key_env is set */
    /* Answers r.  Returns the status for the router to count (metrics, access
     * log), or 0 when the handler counted it itself (the API pipeline counts
     * at its finish; /metrics before rendering, so a scrape sees itself). */
    int (*handler)(struct worker *w, http_req *r);
};

/* httpd's request handler on every worker (arg: the worker). */
void route_handle(http_req *r, void *arg);

/* The path of r below a prefix route of prefix_len bytes, read as
 * PREFIX[/NAME[/ACTION]]: 0 for the collection itself (PREFIX or
 * PREFIX/); 1 with *name and *action ("" when there is none); -1 when the
 * path goes on without a '/'. */
int route_below(const http_req *r, size_t prefix_len, const char **name, size_t *nl, const char **action,
                size_t *al);

#endif
