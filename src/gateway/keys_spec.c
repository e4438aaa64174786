/* keys_spec.c — the body of `POST /admin/keys` (and `shade keys create`)
 * parsed and validated into a struct key_spec; the spec written back as
 * JSON (keys_spec.h, doc/keys.md). */
#include "keys_spec.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

const char *const key_period_names[3] = { "day", "week", "month" };

static int fail(struct key_spec_error *e, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct key_spec_error *e, const char *code, const char *param, const char *fmt, ...)
{
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

void key_spec_free(struct key_spec *s)
{
    if (!s)
        return;
    free(s->name);
    for (size_t i = 0; i < s->nmodels; i++)
        free(s->models[i]);
    free(s->models);
    for (size_t i = 0; i < s->nmlim; i++)
        free(s->mlim[i].model);
    free(s->mlim);
    free(s->metadata);
    memset(s, 0, sizeof *s);
    s->priority = -1;
}

int64_t key_spec_duration(const char *s, size_t n)
{
    if (n < 2 || n > 12)
        return -1;
    int64_t v = 0;
    size_t i = 0;
    for (; i < n - 1; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    switch (s[n - 1]) {
    case 's': return v;
    case 'm': return v * 60;
    case 'h': return v * 3600;
    case 'd': return v * 86400;
    case 'w': return v * 7 * 86400;
    default: return -1;
    }
}

/* A string member into a fresh allocation of at most max bytes, with no
 * control characters (and, when token, no whitespace).  NULL after fail(). */
static char *take_str(const struct json_span *v, size_t max, bool token, struct key_spec_error *e, const char *param,
                      const char *what)
{
    if (v->type != JSON_STRING) {
        fail(e, "invalid_type", param, "Invalid type for '%s': expected a string.", param);
        return NULL;
    }
    char *out = malloc(max + 1);
    if (!out) {
        fail(e, "out_of_memory", param, "Out of memory.");
        return NULL;
    }
    long n = json_str_unescape(v, out, max + 1);
    if (n < 0 || n == 0) {
        free(out);
        fail(e, "invalid_value", param, "Invalid '%s': %s must be 1 to %zu bytes long.", param, what, max);
        return NULL;
    }
    for (long i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if (c < 0x20 || c == 0x7f || (token && c == ' ')) {
            free(out);
            fail(e, "invalid_value", param, "Invalid '%s': %s may not contain %s.", param, what,
                 token ? "spaces or control characters" : "control characters");
            return NULL;
        }
    }
    char *fit = realloc(out, (size_t)n + 1);
    return fit ? fit : out;
}

static int take_uint(const struct json_span *v, uint32_t max, uint32_t *out, struct key_spec_error *e,
                     const char *param)
{
    int64_t x;
    if (v->type == JSON_NULL) {
        *out = 0;
        return 0;
    }
    if (v->type != JSON_NUMBER || !json_to_i64(v, &x))
        return fail(e, "invalid_type", param, "Invalid type for '%s': expected an integer.", param);
    if (x < 0 || x > (int64_t)max)
        return fail(e, "invalid_value", param, "Invalid '%s': expected an integer from 0 to %u (0 = no limit).",
                    param, max);
    *out = (uint32_t)x;
    return 0;
}

static int take_usd(const struct json_span *v, double *out, struct key_spec_error *e, const char *param)
{
    double x;
    if (v->type == JSON_NULL) {
        *out = 0;
        return 0;
    }
    if (v->type != JSON_NUMBER)
        return fail(e, "invalid_type", param, "Invalid type for '%s': expected a number.", param);
    if (!json_to_double(v, &x) || !(x >= 0 && x <= 1e9))
        return fail(e, "invalid_value", param, "Invalid '%s': expected a number of USD from 0 to 1e9 (0 = none).",
                    param);
    *out = x;
    return 0;
}

/* One member of an object parsed once: a bit per known name. */
static int member(const struct json_span *key, const char *const *names, size_t n, uint32_t *seen,
                  struct key_spec_error *e, const char *where)
{
    char kb[64];
    long kl = json_str_unescape(key, kb, sizeof kb);
    for (size_t i = 0; kl >= 0 && i < n; i++) {
        if (strcmp(kb, names[i]) != 0)
            continue;
        if (*seen & (1u << i)) {
            char p[96];
            snprintf(p, sizeof p, "%s%s%s", where, *where ? "." : "", names[i]);
            return fail(e, "duplicate_parameter", p, "Parameter '%s' appears more than once.", p);
        }
        *seen |= 1u << i;
        return (int)i;
    }
    /* shown as sent (up to 40 bytes), anything but printable ASCII as '?' */
    char shown[48];
    size_t raw = key->len - 2, sl = raw > 40 ? 40 : raw;
    memcpy(shown, key->p + 1, sl);
    strcpy(shown + sl, raw > 40 ? "..." : "");
    for (char *c = shown; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    char p[96];
    snprintf(p, sizeof p, "%s%s%s", where, *where ? "." : "", shown);
    return fail(e, "unknown_parameter", p, "Unrecognized request argument supplied: %s", p);
}

static const char *const limit_names[] = { "rpm", "tpm", "concurrency", "model" };

/* {"rpm","tpm","concurrency"} — and "model" (required) in a model limit. */
static int parse_limits(const struct json_span *obj, struct key_limits *l, char **model, struct key_spec_error *e,
                        const char *where)
{
    char p[96];
    if (obj->type != JSON_OBJECT)
        return fail(e, "invalid_type", where, "Invalid type for '%s': expected an object.", where);
    uint32_t seen = 0;
    struct json_span k, v;
    for (size_t it = 0; json_next(obj, &it, &k, &v);) {
        int i = member(&k, limit_names, model ? 4 : 3, &seen, e, where);
        if (i < 0)
            return -1;
        snprintf(p, sizeof p, "%s.%s", where, limit_names[i]);
        int rc = i == 0   ? take_uint(&v, 100000000, &l->rpm, e, p)
                 : i == 1 ? take_uint(&v, 2000000000, &l->tpm, e, p)
                 : i == 2 ? take_uint(&v, 1000000, &l->concurrency, e, p)
                          : ((*model = take_str(&v, KS_MODEL_MAX, true, e, p, "a model name")) ? 0 : -1);
        if (rc < 0)
            return -1;
    }
    if (model && !*model) {
        snprintf(p, sizeof p, "%s.model", where);
        return fail(e, "missing_required_parameter", p, "Missing required parameter: '%s'.", p);
    }
    return 0;
}

static int parse_models(const struct json_span *arr, struct key_spec *s, struct key_spec_error *e)
{
    if (arr->type == JSON_NULL)
        return 0;
    if (arr->type != JSON_ARRAY)
        return fail(e, "invalid_type", "models", "Invalid type for 'models': expected an array of model names.");
    size_t n = json_count(arr);
    if (n > KS_MODELS_MAX)
        return fail(e, "invalid_value", "models", "Invalid 'models': at most %d models.", KS_MODELS_MAX);
    s->models = n ? calloc(n, sizeof *s->models) : NULL;
    if (n && !s->models)
        return fail(e, "out_of_memory", NULL, "Out of memory.");
    struct json_span k, v;
    char p[32];
    for (size_t it = 0; json_next(arr, &it, &k, &v);) {
        snprintf(p, sizeof p, "models[%zu]", s->nmodels);
        char *m = take_str(&v, KS_MODEL_MAX, true, e, p, "a model name");
        if (!m)
            return -1;
        for (size_t j = 0; j < s->nmodels; j++)
            if (strcmp(s->models[j], m) == 0) {
                free(m);
                return fail(e, "invalid_value", p, "Invalid '%s': the model '%s' is listed twice.", p, s->models[j]);
            }
        s->models[s->nmodels++] = m;
    }
    return 0;
}

static int parse_model_limits(const struct json_span *arr, struct key_spec *s, struct key_spec_error *e)
{
    if (arr->type == JSON_NULL)
        return 0;
    if (arr->type != JSON_ARRAY)
        return fail(e, "invalid_type", "model_limits",
                    "Invalid type for 'model_limits': expected an array of {\"model\", \"rpm\", \"tpm\", "
                    "\"concurrency\"}.");
    size_t n = json_count(arr);
    if (n > KS_MODELS_MAX)
        return fail(e, "invalid_value", "model_limits", "Invalid 'model_limits': at most %d models.", KS_MODELS_MAX);
    s->mlim = n ? calloc(n, sizeof *s->mlim) : NULL;
    if (n && !s->mlim)
        return fail(e, "out_of_memory", NULL, "Out of memory.");
    struct json_span k, v;
    char p[32];
    for (size_t it = 0; json_next(arr, &it, &k, &v);) {
        snprintf(p, sizeof p, "model_limits[%zu]", s->nmlim);
        struct key_model_limits *ml = &s->mlim[s->nmlim];
        int rc = parse_limits(&v, &ml->lim, &ml->model, e, p);
        if (ml->model)
            s->nmlim++; /* owned by s from now on, freed with it */
        if (rc < 0)
            return -1;
        for (size_t j = 0; j + 1 < s->nmlim; j++)
            if (strcmp(s->mlim[j].model, ml->model) == 0)
                return fail(e, "invalid_value", p, "Invalid '%s': the model '%s' has limits twice.", p, ml->model);
    }
    return 0;
}

static const char *const budget_names[] = { "usd", "soft_usd", "period" };

static int parse_budget(const struct json_span *obj, struct key_budget *b, struct key_spec_error *e)
{
    if (obj->type == JSON_NULL)
        return 0;
    if (obj->type != JSON_OBJECT)
        return fail(e, "invalid_type", "budget",
                    "Invalid type for 'budget': expected an object {\"usd\", \"soft_usd\", \"period\"}.");
    uint32_t seen = 0;
    struct json_span k, v;
    for (size_t it = 0; json_next(obj, &it, &k, &v);) {
        int i = member(&k, budget_names, 3, &seen, e, "budget");
        if (i < 0)
            return -1;
        if (i == 0 && take_usd(&v, &b->usd, e, "budget.usd") < 0)
            return -1;
        if (i == 1 && take_usd(&v, &b->soft_usd, e, "budget.soft_usd") < 0)
            return -1;
        if (i == 2) {
            if (v.type != JSON_STRING)
                return fail(e, "invalid_type", "budget.period",
                            "Invalid type for 'budget.period': expected \"day\", \"week\" or \"month\".");
            int per = -1;
            for (int j = 0; j < 3; j++)
                if (json_str_eq(&v, key_period_names[j]))
                    per = j;
            if (per < 0)
                return fail(e, "invalid_value", "budget.period",
                            "Invalid 'budget.period': expected \"day\", \"week\" or \"month\".");
            b->period = per;
        }
    }
    if (b->usd > 0 && b->soft_usd > b->usd)
        return fail(e, "invalid_value", "budget.soft_usd", "Invalid 'budget.soft_usd': it is above 'budget.usd'.");
    return 0;
}

enum { M_NAME, M_MODELS, M_LIMITS, M_MLIMITS, M_BUDGET, M_EXPIN, M_EXPAT, M_PRIO, M_METRICS, M_META, M__N };
static const char *const top_names[M__N] = { "name",       "models",   "limits",   "model_limits", "budget",
                                             "expires_in", "expires_at", "priority", "metrics",      "metadata" };

static int parse_member(int i, const struct json_span *v, int64_t now, struct key_spec *s, struct key_spec_error *e)
{
    int64_t x;
    switch (i) {
    case M_NAME:
        return (s->name = take_str(v, KS_NAME_MAX, false, e, "name", "a key's name")) ? 0 : -1;
    case M_MODELS:
        return parse_models(v, s, e);
    case M_LIMITS:
        return v->type == JSON_NULL ? 0 : parse_limits(v, &s->lim, NULL, e, "limits");
    case M_MLIMITS:
        return parse_model_limits(v, s, e);
    case M_BUDGET:
        return parse_budget(v, &s->budget, e);
    case M_EXPIN:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type == JSON_STRING)
            x = key_spec_duration(v->p + 1, v->len - 2);
        else if (v->type != JSON_NUMBER || !json_to_i64(v, &x))
            return fail(e, "invalid_type", "expires_in",
                        "Invalid type for 'expires_in': expected a duration such as \"30d\", \"12h\" or \"90m\", "
                        "or an integer number of seconds.");
        if (x <= 0 || x > KS_EXPIRES_MAX)
            return fail(e, "invalid_value", "expires_in",
                        "Invalid 'expires_in': expected a duration from 1s to 3660d (s, m, h, d or w after a whole "
                        "number).");
        s->expires_unix = now + x;
        return 0;
    case M_EXPAT:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_NUMBER || !json_to_i64(v, &x))
            return fail(e, "invalid_type", "expires_at", "Invalid type for 'expires_at': expected a Unix time in seconds.");
        if (x <= now || x > now + KS_EXPIRES_MAX)
            return fail(e, "invalid_value", "expires_at",
                        "Invalid 'expires_at': it must be in the future (and within 10 years).");
        s->expires_unix = x;
        return 0;
    case M_PRIO:
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_NUMBER || !json_to_i64(v, &x))
            return fail(e, "invalid_type", "priority", "Invalid type for 'priority': expected an integer from 0 to 9.");
        if (x < 0 || x > 9)
            return fail(e, "invalid_value", "priority", "Invalid 'priority': expected an integer from 0 to 9.");
        s->priority = (int)x;
        return 0;
    case M_METRICS:
        if (v->type != JSON_TRUE && v->type != JSON_FALSE && v->type != JSON_NULL)
            return fail(e, "invalid_type", "metrics", "Invalid type for 'metrics': expected a boolean.");
        s->metrics = v->type == JSON_TRUE;
        return 0;
    default: /* M_META */
        if (v->type == JSON_NULL)
            return 0;
        if (v->type != JSON_OBJECT)
            return fail(e, "invalid_type", "metadata", "Invalid type for 'metadata': expected an object.");
        if (v->len > KS_METADATA_MAX)
            return fail(e, "invalid_value", "metadata", "Invalid 'metadata': at most %d bytes of JSON.",
                        KS_METADATA_MAX);
        if (!(s->metadata = malloc(v->len + 1)))
            return fail(e, "out_of_memory", NULL, "Out of memory.");
        memcpy(s->metadata, v->p, v->len);
        s->metadata[v->len] = 0;
        return 0;
    }
}

int key_spec_parse(const char *body, size_t len, int64_t now_unix, struct key_spec *out, struct key_spec_error *e)
{
    memset(out, 0, sizeof *out);
    out->priority = -1;
    memset(e, 0, sizeof *e);
    struct json_span root, k, v;
    struct json_error je;
    if (len == 0)
        return fail(e, "invalid_json", NULL, "We could not parse the JSON body of your request: the body is empty.");
    if (len > KS_BODY_MAX)
        return fail(e, "invalid_value", NULL, "The body is over %d bytes.", KS_BODY_MAX);
    if (json_validate(body, len, &root, &je) < 0)
        return fail(e, "invalid_json", NULL, "We could not parse the JSON body of your request: %s at byte %zu.",
                    je.message, je.offset);
    if (root.type != JSON_OBJECT)
        return fail(e, "invalid_type", NULL, "The request body must be a JSON object.");
    uint32_t seen = 0;
    for (size_t it = 0; json_next(&root, &it, &k, &v);) {
        int i = member(&k, top_names, M__N, &seen, e, "");
        if (i < 0 || parse_member(i, &v, now_unix, out, e) < 0) {
            key_spec_free(out);
            return -1;
        }
    }
    if (!out->name) {
        key_spec_free(out);
        return fail(e, "missing_required_parameter", "name", "Missing required parameter: 'name'.");
    }
    if ((seen & (1u << M_EXPIN)) && (seen & (1u << M_EXPAT))) {
        key_spec_free(out);
        return fail(e, "invalid_value", "expires_at", "Give either 'expires_in' or 'expires_at', not both.");
    }
    return 0;
}

/* A number that parses back to the same double. */
static void put_num(struct buf *b, double x)
{
    char s[40];
    snprintf(s, sizeof s, "%.15g", x);
    if (strtod(s, NULL) != x)
        snprintf(s, sizeof s, "%.17g", x);
    buf_append_str(b, s);
}

static void put_limits(struct buf *b, const struct key_limits *l)
{
    buf_printf(b, "\"rpm\":%u,\"tpm\":%u,\"concurrency\":%u", l->rpm, l->tpm, l->concurrency);
}

void key_spec_members(struct buf *b, const struct key_spec *s)
{
    buf_append_str(b, "\"name\":");
    json_buf_str(b, s->name);
    buf_append_str(b, ",\"models\":[");
    for (size_t i = 0; i < s->nmodels; i++) {
        if (i)
            buf_append_str(b, ",");
        json_buf_str(b, s->models[i]);
    }
    buf_append_str(b, "],\"limits\":{");
    put_limits(b, &s->lim);
    buf_append_str(b, "},\"model_limits\":[");
    for (size_t i = 0; i < s->nmlim; i++) {
        buf_append_str(b, i ? ",{\"model\":" : "{\"model\":");
        json_buf_str(b, s->mlim[i].model);
        buf_append_str(b, ",");
        put_limits(b, &s->mlim[i].lim);
        buf_append_str(b, "}");
    }
    buf_append_str(b, "],\"budget\":{\"usd\":");
    put_num(b, s->budget.usd);
    buf_append_str(b, ",\"soft_usd\":");
    put_num(b, s->budget.soft_usd);
    int per = s->budget.period >= 0 && s->budget.period < 3 ? s->budget.period : 0;
    buf_printf(b, ",\"period\":\"%s\"}", key_period_names[per]);
    if (s->expires_unix)
        buf_printf(b, ",\"expires_at\":%lld", (long long)s->expires_unix);
    else
        buf_append_str(b, ",\"expires_at\":null");
    if (s->priority >= 0)
        buf_printf(b, ",\"priority\":%d", s->priority);
    else
        buf_append_str(b, ",\"priority\":null");
    buf_printf(b, ",\"metrics\":%s,\"metadata\":%s", s->metrics ? "true" : "false",
               s->metadata ? s->metadata : "null");
}
