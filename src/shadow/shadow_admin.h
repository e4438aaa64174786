/* shadow_admin.h — the shadows' admin API (/admin/shadows…) and their
 * /metrics families; only reads what shadow.c and recorder.c keep. */
#ifndef SHADE_SHADOW_ADMIN_H
#define SHADE_SHADOW_ADMIN_H

#include "buf.h"
#include "httpd.h"

struct gateway;
struct worker;

/* /admin/shadows and everything below it (a row of router.c's table);
 * answers r and returns the status it answered with */
int shadow_admin(struct worker *w, http_req *r);
/* /metrics: the shadow and judge families */
void shadow_metrics_render(const struct gateway *gw, struct buf *o);

#endif
