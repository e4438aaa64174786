/* redact.h — the store's `redact` patterns (POSIX extended regexes): every
 * match in a text becomes [REDACTED] before the text is written anywhere.
 * Used by every writer of prompts and answers: the pair store's recorder,
 * the rollouts' quality samples, the experiments' judge samples. */
#ifndef SHADE_REDACT_H
#define SHADE_REDACT_H

#include <regex.h>
#include <stddef.h>

#include "buf.h"

struct redactor {
    regex_t *re;
    size_t n;
};

/* Compile the patterns.  0, or -1 with a message naming the bad one. */
int redactor_init(struct redactor *r, char *const *patterns, size_t n, char *err, size_t errlen);
/* out = s with every match replaced (NUL-terminated; buf_used counts it). */
void redactor_apply(const struct redactor *r, struct buf *out, const char *s, size_t n);
void redactor_free(struct redactor *r);

#endif
