/* json.h — a validating, non-allocating JSON scanner.
 *
 * The gateway forwards the client's bytes unchanged; it only needs to know
 * that the body is valid JSON and where a few members are.  So instead of
 * building a tree, json_validate() checks the whole text once (RFC 8259,
 * strict: no trailing commas, no comments, no leading zeros, UTF-8 checked,
 * lone surrogates in \u escapes rejected, nesting depth bounded), and the
 * lookups below walk the already-validated text to find a value's span.
 * A span points into the caller's buffer; nothing is copied.
 */
#ifndef SHADE_JSON_H
#define SHADE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum json_type {
    JSON_INVALID = 0,
    JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
};

/* A value's raw text: for strings it includes the quotes, for containers the
 * brackets.  p == NULL / type == JSON_INVALID means "absent". */
struct json_span {
    const char *p;
    size_t len;
    enum json_type type;
};

#define JSON_MAX_DEPTH 128

struct json_error {
    size_t offset;       /* byte offset of the problem */
    const char *message; /* static string, e.g. "unexpected character" */
};

/* Validate a complete JSON text (one value, optional surrounding whitespace).
 * Returns 0 and fills *root (may be NULL) on success; -1 and *err otherwise. */
int json_validate(const char *s, size_t n, struct json_span *root, struct json_error *err);

/* Lookups on validated spans.  Return true and fill *out when found. */
bool json_get(const struct json_span *obj, const char *key, struct json_span *out);
bool json_index(const struct json_span *arr, size_t i, struct json_span *out);
size_t json_count(const struct json_span *container); /* elements / members */

/* Iterate an object's members or an array's elements.  *it starts at 0.
 * For arrays, key->p is NULL. */
bool json_next(const struct json_span *container, size_t *it, struct json_span *key,
               struct json_span *val);

/* Value helpers on validated spans. */
bool json_is_true(const struct json_span *v);
bool json_to_i64(const struct json_span *v, int64_t *out);   /* integers only */
bool json_to_double(const struct json_span *v, double *out);
/* Compare a string span (with quotes, maybe escapes) to a NUL-terminated literal. */
bool json_str_eq(const struct json_span *v, const char *lit);
/* Unescape a string span into out (NUL-terminated).  Returns the decoded
 * length, or -1 if it does not fit in cap-1 bytes. */
long json_str_unescape(const struct json_span *v, char *out, size_t cap);
/* Length of the string's decoded content in bytes (cheap estimate: raw length
 * minus quotes; escapes counted as written). */
size_t json_str_rawlen(const struct json_span *v);

/* Write s (len bytes, UTF-8) as a JSON string with quotes into out; returns
 * bytes written or -1 if cap is too small.  Control characters are escaped. */
long json_escape(const char *s, size_t len, char *out, size_t cap);
/* Append s (NULL: "") as a JSON string to b.  0, or -1 out of memory. */
struct buf;
int json_buf_str(struct buf *b, const char *s);
/* Append x with 6 significant digits, or null when it is not finite. */
int json_buf_num(struct buf *b, double x);

#endif
