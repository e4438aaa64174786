/* simopts.c — the simulators' shared options (simopts.h). */
#include "simopts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int parse_u(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v > max || *s == '-')
        return -1;
    *out = v;
    return 0;
}

int simopts_parse(int argc, char **argv, const char *cmd, const char *usage, bool with_pairs, struct simopts *o,
                  bool *done)
{
    *done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            *done = true;
            return 0;
        }
        bool bad = !v;
        if (!bad && strcmp(a, "--runs") == 0)
            bad = parse_u(v, 1000000, &o->runs) < 0 || o->runs == 0;
        else if (!bad && with_pairs && strcmp(a, "--pairs") == 0)
            bad = parse_u(v, 10000000, &o->pairs) < 0 || o->pairs == 0;
        else if (!bad && strcmp(a, "--seed") == 0)
            bad = parse_u(v, UINT64_MAX, &o->seed) < 0;
        else if (!bad && strcmp(a, "--scenario") == 0)
            o->scenario = v;
        else if (!bad && strcmp(a, "--format") == 0) {
            bad = strcmp(v, "text") != 0 && strcmp(v, "json") != 0;
            o->json = strcmp(v, "json") == 0;
        } else
            bad = true;
        if (bad) {
            fprintf(stderr, "shade %s: bad or unknown option '%s'\n%s", cmd, a, usage);
            *done = true;
            return 2;
        }
        i++;
    }
    return 0;
}
