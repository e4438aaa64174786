/* keys_spec.h — what a virtual key is made of, as an admin writes it: the
 * body of `POST /admin/keys` (and of `shade keys create`, whose flags are
 * turned into the same JSON), parsed and validated in one place
 * (keys_spec.c, doc/keys.md).  Pure: no store, no process state; fuzzed
 * (fuzz/fuzz_keyspec.c).
 *
 * {"name": "team-a",                          required, 1..128 bytes, no control characters
 *  "models": ["demo", ...],                   allowed models (none: all), unique, <= 256
 *  "limits": {"rpm": N, "tpm": N, "concurrency": N},
 *  "model_limits": [{"model": "demo", "rpm": N, "tpm": N, "concurrency": N}, ...],
 *  "budget": {"usd": X, "soft_usd": X, "period": "day|week|month"},
 *  "expires_in": "30d" (s, m, h, d, w; or a number of seconds) | "expires_at": UNIX,
 *  "priority": 0..9,
 *  "metrics": true|false,
 *  "metadata": {...}}                         any JSON object, <= 4 KiB
 *
 * Every member is optional but name; an unknown member, a member given
 * twice, a wrong type or a value out of bounds is refused with the member's
 * path (param: "limits.rpm", "model_limits[1].model").
 */
#ifndef SHADE_KEYS_SPEC_H
#define SHADE_KEYS_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"

struct buf;

#define KS_NAME_MAX 128
#define KS_MODEL_MAX 256         /* bytes of a model name */
#define KS_MODELS_MAX 256        /* models, and model limits, per key */
#define KS_METADATA_MAX 4096     /* bytes of the metadata object */
#define KS_BODY_MAX 65536        /* bytes of a create body */
#define KS_EXPIRES_MAX (10LL * 366 * 86400) /* a key lives at most ~10 years */

struct key_spec {
    char *name;
    char **models;
    size_t nmodels;
    struct key_limits lim;
    struct key_model_limits *mlim;
    size_t nmlim;
    struct key_budget budget;
    int64_t expires_unix;    /* 0 = never */
    int priority;            /* 0-9, -1 = the request's own */
    bool metrics;
    char *metadata;          /* a JSON object as sent (validated), NULL = none */
};

/* Why a body was refused: an OpenAI error's code, param and message. */
struct key_spec_error {
    const char *code;        /* invalid_type, invalid_value, unknown_parameter, ... */
    char param[96];          /* "" = none */
    char message[256];
};

/* Parse a create body.  now_unix turns expires_in into expires_unix and
 * bounds expires_at.  0, or -1 with *e filled (nothing to free then). */
int key_spec_parse(const char *body, size_t len, int64_t now_unix, struct key_spec *out, struct key_spec_error *e);
void key_spec_free(struct key_spec *s);

/* The spec's members as the body would write them (expires as
 * "expires_at"), comma-separated, without braces: what the admin API shows
 * of a key and what parses back to the same spec. */
void key_spec_members(struct buf *b, const struct key_spec *s);

/* "30d", "12h", "90m", "3600s", "2w" -> seconds; -1 when malformed. */
int64_t key_spec_duration(const char *s, size_t n);

extern const char *const key_period_names[3]; /* "day", "week", "month" */

#endif
