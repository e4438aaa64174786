/* main.c — the command line: serve, check, sim. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "master.h"
#include "decsim.h"
#include "experiment.h"
#include "keys.h"
#include "report.h"
#include "rollout.h"
#include "rollsim.h"
#include "server.h"
#include "sim.h"

static const char usage_main[] =
    "usage: shade <command> [options]\n"
    "\n"
    "An OpenAI-compatible LLM gateway.\n"
    "\n"
    "commands:\n"
    "  serve -c FILE   run the gateway with the configuration in FILE\n"
    "  check -c FILE   validate FILE and report errors as file:line:column: message\n"
    "  sim [options]   run the model server simulator (see `shade sim --help`)\n"
    "  report --db F   report on a shadow pair store (see `shade report --help`)\n"
    "  rollout status|replay --db F   a rollout's stored decisions (see `shade rollout --help`)\n"
    "  experiment report --db F       an A/B experiment's arms compared (see `shade experiment --help`)\n"
    "  keys create|list|show|revoke|rotate|usage -c FILE   virtual API keys (see `shade keys --help`)\n"
    "\n"
    "options:\n"
    "  -h, --help      show this help (also: shade <command> --help)\n"
    "  -V, --version   print the version\n";

static const char usage_serve[] =
    "usage: shade serve -c FILE\n"
    "\n"
    "Run the gateway.  FILE is a YAML configuration (doc/config.md).\n"
    "SIGTERM or SIGINT stops accepting, lets requests in flight finish for up to\n"
    "server.shutdown_timeout, then exits.\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   configuration file (required)\n"
    "  -h, --help          show this help\n";

static const char usage_check[] =
    "usage: shade check -c FILE\n"
    "\n"
    "Validate a configuration file without starting anything.  Prints\n"
    "\"FILE: ok\" and exits 0, or prints \"FILE:LINE:COLUMN: message\" and exits 1.\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   configuration file (required)\n"
    "  -h, --help          show this help\n";

static int is_help(const char *a) { return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0; }

/* Parse "-c FILE" for serve/check; prints usage on error. */
static const char *config_arg(int argc, char **argv, const char *usage, int *exit_code)
{
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            fputs(usage, stdout);
            *exit_code = 0;
            return NULL;
        }
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            file = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            file = argv[i] + 9;
        } else {
            fprintf(stderr, "shade %s: unexpected argument '%s'\n\n%s", argv[0], argv[i], usage);
            *exit_code = 2;
            return NULL;
        }
    }
    if (!file) {
        fprintf(stderr, "shade %s: missing -c FILE\n\n%s", argv[0], usage);
        *exit_code = 2;
    }
    return file;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_main, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (is_help(cmd)) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0) {
        printf("shade %s\n", SHADE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "sim") == 0)
        return sim_main(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0)
        return report_main(argc - 1, argv + 1);
    if (strcmp(cmd, "rollout") == 0)
        return rollout_main(argc - 1, argv + 1);
    if (strcmp(cmd, "experiment") == 0)
        return experiment_main(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return keys_cli(NULL, argc - 1, argv + 1);
    if (strcmp(cmd, "simulate-decisions") == 0)
        return decsim_main(argc - 1, argv + 1);
    if (strcmp(cmd, "simulate-rollouts") == 0)
        return rollsim_main(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0 || strcmp(cmd, "check") == 0) {
        int code = 0;
        bool serve = strcmp(cmd, "serve") == 0;
        const char *file = config_arg(argc - 1, argv + 1, serve ? usage_serve : usage_check, &code);
        if (!file)
            return code;
        struct config *cfg = NULL;
        char err[1024];
        if (config_load(file, &cfg, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        if (!serve) {
            size_t nm = 0;
            for (size_t i = 0; i < cfg->nmodels; i++)
                nm += !cfg->models[i].hidden;
            printf("%s: ok (%zu model%s", file, nm, nm == 1 ? "" : "s");
            if (cfg->nshadows)
                printf(", %zu shadow%s", cfg->nshadows, cfg->nshadows == 1 ? "" : "s");
            printf(")\n");
            if (auth_listener_open(cfg))
                fprintf(stderr, "%s: warning: server.listen %s is reachable from outside this machine and no "
                                "API key is required (auth:): anyone who reaches it may call every model\n",
                        file, cfg->server.listen);
            config_free(cfg);
            return 0;
        }
        /* the master starts serving processes: the same command, with the
         * sockets passed in the environment */
        int rc = getenv("SHADE_LISTEN_FDS") ? server_run(cfg) : master_run(file, argv, cfg);
        config_free(cfg);
        return rc;
    }
    fprintf(stderr, "shade: unknown command '%s'\n\n%s", cmd, usage_main);
    return 2;
}
