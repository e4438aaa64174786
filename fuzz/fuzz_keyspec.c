// srcs: src/gateway/keys_spec.c src/core/json.c src/core/buf.c
/* fuzz_keyspec.c — the body of POST /admin/keys (key_spec_parse): any
 * bytes are refused with an error (code, message) or accepted; an accepted
 * spec keeps its bounds, and written back (key_spec_members) parses again
 * to the same spec, written the same way. */
#include "buf.h"
#include "json.h"
#include "keys_spec.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", \
    __FILE__, __LINE__, #c); abort(); } } while (0)

#define NOW 1700000000LL

static void check_bounds(const struct key_spec *s)
{
    REQUIRE(s->name && strlen(s->name) >= 1 && strlen(s->name) <= KS_NAME_MAX);
    for (const char *c = s->name; *c; c++)
        REQUIRE((unsigned char)*c >= 0x20 && *c != 0x7f);
    REQUIRE(s->nmodels <= KS_MODELS_MAX && s->nmlim <= KS_MODELS_MAX);
    for (size_t i = 0; i < s->nmodels; i++) {
        REQUIRE(s->models[i] && *s->models[i] && strlen(s->models[i]) <= KS_MODEL_MAX);
        for (size_t j = 0; j < i; j++)
            REQUIRE(strcmp(s->models[i], s->models[j]) != 0);
    }
    for (size_t i = 0; i < s->nmlim; i++)
        REQUIRE(s->mlim[i].model && *s->mlim[i].model);
    REQUIRE(s->lim.rpm <= 100000000 && s->lim.tpm <= 2000000000 && s->lim.concurrency <= 1000000);
    REQUIRE(s->budget.usd >= 0 && s->budget.usd <= 1e9 && s->budget.soft_usd >= 0 && s->budget.soft_usd <= 1e9);
    REQUIRE(s->budget.period >= 0 && s->budget.period <= 2);
    REQUIRE(!(s->budget.usd > 0 && s->budget.soft_usd > s->budget.usd));
    REQUIRE(s->expires_unix == 0 || (s->expires_unix > NOW && s->expires_unix <= NOW + KS_EXPIRES_MAX));
    REQUIRE(s->priority >= -1 && s->priority <= 9);
    if (s->metadata) {
        struct json_span r;
        struct json_error e;
        REQUIRE(json_validate(s->metadata, strlen(s->metadata), &r, &e) == 0 && r.type == JSON_OBJECT);
        REQUIRE(strlen(s->metadata) <= KS_METADATA_MAX);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly size bytes: ASan sees any read past the end */
    char *v = malloc(size ? size : 1);
    REQUIRE(v);
    if (size)
        memcpy(v, data, size);
    struct key_spec s, again;
    struct key_spec_error e;
    if (key_spec_parse(v, size, NOW, &s, &e) < 0) {
        REQUIRE(e.code && *e.code && e.message[0]);
        REQUIRE(memchr(e.message, 0, sizeof e.message) && memchr(e.param, 0, sizeof e.param));
        REQUIRE(s.name == NULL && s.models == NULL && s.mlim == NULL && s.metadata == NULL);
    } else {
        check_bounds(&s);
        struct buf b = { 0 }, b2 = { 0 };
        buf_append_str(&b, "{");
        key_spec_members(&b, &s);
        buf_append_str(&b, "}");
        struct json_span root;
        struct json_error je;
        REQUIRE(json_validate(buf_data(&b), buf_used(&b), &root, &je) == 0);
        if (key_spec_parse(buf_data(&b), buf_used(&b), NOW, &again, &e) != 0) {
            fprintf(stderr, "written back, refused: %s (%s)\n%.*s\n", e.message, e.param, (int)buf_used(&b),
                    buf_data(&b));
            abort();
        }
        buf_append_str(&b2, "{");
        key_spec_members(&b2, &again);
        buf_append_str(&b2, "}");
        REQUIRE(buf_used(&b) == buf_used(&b2) && memcmp(buf_data(&b), buf_data(&b2), buf_used(&b)) == 0);
        REQUIRE(strcmp(s.name, again.name) == 0 && s.nmodels == again.nmodels && s.nmlim == again.nmlim);
        REQUIRE(s.budget.usd == again.budget.usd && s.budget.soft_usd == again.budget.soft_usd);
        REQUIRE(s.expires_unix == again.expires_unix && s.priority == again.priority);
        key_spec_free(&again);
        buf_free(&b);
        buf_free(&b2);
        key_spec_free(&s);
    }
    /* the duration reader on the raw bytes */
    int64_t d = key_spec_duration(v, size);
    REQUIRE(d >= -1);
    free(v);
    return 0;
}
