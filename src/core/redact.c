/* redact.c — the store's redaction patterns (redact.h). */
#include "redact.h"

#include <stdio.h>
#include <stdlib.h>

int redactor_init(struct redactor *r, char *const *patterns, size_t n, char *err, size_t errlen)
{
    r->n = 0;
    r->re = calloc(n ? n : 1, sizeof *r->re);
    if (!r->re) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = regcomp(&r->re[i], patterns[i], REG_EXTENDED);
        if (rc != 0) {
            char msg[256];
            regerror(rc, &r->re[i], msg, sizeof msg);
            snprintf(err, errlen, "shadow_store.redact \"%s\": %s", patterns[i], msg);
            redactor_free(r);
            return -1;
        }
        r->n++;
    }
    return 0;
}

void redactor_free(struct redactor *r)
{
    for (size_t i = 0; i < r->n; i++)
        regfree(&r->re[i]);
    free(r->re);
    r->re = NULL;
    r->n = 0;
}

/* Append s to out with every match replaced by [REDACTED], pattern after
 * pattern (no NUL). */
void redactor_apply(const struct redactor *r, struct buf *out, const char *s, size_t n)
{
    struct buf cur = { 0 }, next = { 0 };
    buf_append(&cur, s, n);
    buf_append(&cur, "", 1); /* NUL for regexec */
    for (size_t i = 0; i < r->n; i++) {
        const char *p = buf_data(&cur);
        regmatch_t m;
        buf_reset(&next);
        int flags = 0;
        while (p && *p && regexec(&r->re[i], p, 1, &m, flags) == 0) {
            buf_append(&next, p, (size_t)m.rm_so);
            buf_append_str(&next, "[REDACTED]");
            if (m.rm_eo == m.rm_so) { /* empty match: step one byte */
                if (!p[m.rm_eo])
                    break;
                buf_append(&next, p + m.rm_eo, 1);
                p += m.rm_eo + 1;
            } else {
                p += m.rm_eo;
            }
            flags = REG_NOTBOL;
        }
        if (p)
            buf_append_str(&next, p);
        buf_append(&next, "", 1);
        struct buf t = cur;
        cur = next;
        next = t;
    }
    if (buf_used(&cur))
        buf_append(out, buf_data(&cur), buf_used(&cur) - 1);
    buf_free(&cur);
    buf_free(&next);
}
