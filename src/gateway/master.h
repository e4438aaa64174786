/* master.h — `shade serve`: the master process owns the sockets, starts and
 * replaces serving processes (SIGHUP reload, SIGUSR2 binary upgrade). */
#ifndef SHADE_MASTER_H
#define SHADE_MASTER_H

struct config;

int master_run(const char *config_path, char **argv, struct config *cfg);

#endif
