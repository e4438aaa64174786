/* simopts.h — the options the simulators' commands share
 * (`shade simulate-decisions`, `shade simulate-rollouts`):
 * --runs N, [--pairs N], --seed N, --scenario NAME, --format text|json. */
#ifndef SHADE_SIMOPTS_H
#define SHADE_SIMOPTS_H

#include <stdbool.h>
#include <stdint.h>

struct simopts {
    uint64_t runs, pairs, seed;  /* set the defaults before parsing */
    const char *scenario;        /* NULL: every scenario */
    bool json;
};

/* Parse argv[1..]; with_pairs accepts --pairs.  Returns 0 to go on, or the
 * exit status: 0 after --help (usage printed), 2 after a usage error (the
 * option and the usage printed on stderr, prefixed by cmd). */
int simopts_parse(int argc, char **argv, const char *cmd, const char *usage, bool with_pairs, struct simopts *o,
                  bool *done);

#endif
