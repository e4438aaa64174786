/* config_schema.h — the table machinery config.c walks the YAML with:
 * field types, a section (one table of fields plus its finish/release
 * hooks) and the macros that write the rows.  config.c declares the core's
 * sections with it; a module declares its own top-level section with it
 * too (pl_module.config, doc/modules.md), and config.c parses that section
 * with the same walker into a blob the module reads with pl_config().
 *
 * A table row's default is written as it would be in the file and parsed
 * by the same code; unknown and duplicate keys, wrong types and
 * out-of-range values are rejected with "file:line:column: message".
 * A check hook (T_STR) or a section's finish hook reports its own errors
 * with config_fail().
 */
#ifndef SHADE_CONFIG_SCHEMA_H
#define SHADE_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

enum ftype {
    T_STR,      /* char *, strdup'ed; optional .choices and .check */
    T_UINT,     /* unsigned integer of .width bytes, decimal only */
    T_SIZE,     /* byte count: "1048576", "512KiB", "16MiB", "1GiB" */
    T_DURATION, /* milliseconds in a uint32_t: "250ms", "10s", "2m", "1h" */
    T_BOOL,     /* bool: true | false */
    T_DOUBLE,   /* double, bounds in .min/.max */
    T_ENUM,     /* enum stored as int: index into .choices */
    T_MAP,      /* nested mapping parsed with .sub at base + .offset */
    T_LIST,     /* sequence of mappings: array pointer at .offset, size_t
                   count at .count_offset, elements parsed with .sub */
    T_STRLIST,  /* sequence of strings: char ** at .offset, size_t count at
                   .count_offset; each 1...max characters, no whitespace
                   (unless F_SPACES) */
    T_KVMAP,    /* mapping of name -> scalar: struct config_override * at
                   .offset, size_t count at .count_offset; values kept as
                   JSON text (plain true/false/null/numbers as is, anything
                   else as a JSON string) */
    T_MODULE,   /* top level only: a module's section (pl_module.config),
                   parsed with .sub into the config's blob number .offset;
                   config.c adds these rows itself */
};

#define F_REQUIRED 0x1u /* missing key is an error (else the default applies) */
#define F_UNIQUE   0x2u /* T_STR in a list element: distinct across the list */
#define F_TOKEN    0x4u /* T_STR: no whitespace or control characters */
#define F_SPACES   0x8u /* T_STRLIST: entries may contain spaces (not control characters) */

struct loader;

/* at most this many module sections in one config (config_load_with) */
#define CONFIG_MAX_MODULE_SECTIONS 32
struct field;

/* Runs after a T_STR value has been stored; validates it and fills derived
 * members.  `at` is the value's position (NULL when applying a default). */
typedef int (*check_fn)(struct loader *ld, const struct field *f, const yaml_mark_t *at,
                        void *base);

struct section {
    const char *name;  /* "backend": used in "duplicate backend name ..." */
    const char *where; /* "in backend": used in "unknown key ... in backend" */
    const struct field *fields;
    size_t nfields;    /* at most 64 */
    size_t size;       /* sizeof the struct, for LIST elements */
    /* after all keys are parsed and defaults applied (map may be NULL) */
    int (*finish)(struct loader *ld, const yaml_node_t *map, void *base);
    /* frees what check hooks and finish allocated beyond the table's fields */
    void (*release)(void *base);
};

struct field {
    const char *name;
    enum ftype type;
    unsigned flags;
    size_t offset;               /* of the member in the section's struct */
    size_t width;                /* sizeof the member */
    uint64_t min, max;           /* numbers: value; T_STR: length; T_LIST: count */
    const char *def;             /* default, in file syntax; NULL = zero */
    const char *const *choices;  /* T_ENUM, T_STR: NULL-terminated */
    check_fn check;              /* T_STR */
    const struct section *sub;   /* T_MAP, T_LIST */
    size_t count_offset;         /* T_LIST */
};

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))
#define AT(S, m) .offset = offsetof(S, m), .width = sizeof(((S *)0)->m)
#define MS_1H (60ull * 60 * 1000)

#define STR(S, k, m, fl, lo, hi, chk, d)                                                 \
    { .name = k, .type = T_STR, AT(S, m), .flags = fl, .min = lo, .max = hi, .check = chk, \
      .def = d }
#define CHOICE(S, k, m, names, d)                                                        \
    { .name = k, .type = T_STR, AT(S, m), .min = 1, .max = 64, .choices = names, .def = d }
#define ENUM(S, k, m, names, d) { .name = k, .type = T_ENUM, AT(S, m), .choices = names, .def = d }
#define UINT(S, k, m, lo, hi, d) { .name = k, .type = T_UINT, AT(S, m), .min = lo, .max = hi, .def = d }
#define SIZE(S, k, m, lo, hi, d) { .name = k, .type = T_SIZE, AT(S, m), .min = lo, .max = hi, .def = d }
#define DUR(S, k, m, d) { .name = k, .type = T_DURATION, AT(S, m), .min = 1, .max = 24 * MS_1H, .def = d }
#define BOOL(S, k, m, d) { .name = k, .type = T_BOOL, AT(S, m), .def = d }
#define NUM(S, k, m, lo, hi, d) { .name = k, .type = T_DOUBLE, AT(S, m), .min = lo, .max = hi, .def = d }
#define MAP(S, k, m, sec) { .name = k, .type = T_MAP, AT(S, m), .sub = &(sec) }
/* a nested mapping whose keys are members of the enclosing struct */
#define FLAT(k, sec) { .name = k, .type = T_MAP, .offset = 0, .sub = &(sec) }
#define LIST(S, k, m, n, fl, lo, sec)                                                    \
    { .name = k, .type = T_LIST, AT(S, m), .count_offset = offsetof(S, n), .flags = fl,   \
      .min = lo, .max = SIZE_MAX, .sub = &(sec) }
#define STRLIST(S, k, m, n, maxlen)                                                      \
    { .name = k, .type = T_STRLIST, AT(S, m), .count_offset = offsetof(S, n), .max = maxlen }
#define TEXTLIST(S, k, m, n, maxlen)                                                     \
    { .name = k, .type = T_STRLIST, AT(S, m), .count_offset = offsetof(S, n), .max = maxlen, \
      .flags = F_SPACES }
#define KVMAP(S, k, m, n) { .name = k, .type = T_KVMAP, AT(S, m), .count_offset = offsetof(S, n) }
#define SECTION(nm, wh, tbl, S, fin, rel)                                                \
    { .name = nm, .where = wh, .fields = tbl, .nfields = NFIELDS(tbl), .size = sizeof(S), \
      .finish = fin, .release = rel }

/* Report an error at `at` (NULL: 1:1) as "FILE:LINE:COLUMN: message";
 * returns -1, for `return config_fail(...)` from a hook. */
int config_fail(struct loader *ld, const yaml_mark_t *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A value from the file made safe to quote in a message: control bytes
 * become '?', more than 64 bytes are cut with "...".  buf holds the result. */
#define CONFIG_SHOW_BYTES 68
const char *config_show(char buf[CONFIG_SHOW_BYTES], const char *s, size_t len);
/* The value of environment variable `name` (a valid name, set, not empty),
 * copied into *out (the caller frees it); or the error, for field f at at. */
int config_env(struct loader *ld, const struct field *f, const yaml_mark_t *at, const char *name, char **out);

#endif
