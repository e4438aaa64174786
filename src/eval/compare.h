/* compare.h — cheap, deterministic comparison of two answers to the same
 * request: the primary's against the shadow's (or against a second primary
 * answer, the A/A noise floor).  The recorder calls compare_answers() on
 * every stored pair and writes one `comparisons` row (store.h) from the
 * result.  Pure functions: no I/O, no globals, safe from any thread.
 *
 * Conventions
 *   n/a          -1 in an int or double field means "does not apply"; the
 *                recorder stores it as NULL.  Every content field (all but
 *                status_agree and the refusal flags) is n/a unless BOTH legs
 *                succeeded: a failed leg's text is partial or empty, and the
 *                failure itself is already what status_agree records.
 *   text         NULL text is the empty text, whatever len says.
 *   normalising  ASCII letters lowercased; runs of ASCII whitespace (space,
 *                \t \n \v \f \r) become one space; leading and trailing
 *                whitespace trimmed; then a trailing run of sentence
 *                punctuation ( . , ; : ! ? ) and whitespace is stripped from
 *                the whole text, so "Hello,  World" equals "hello, world.".
 *                Closing brackets and quotes are kept (they are content in
 *                code and JSON).  Bytes >= 0x80 are kept as they are: no
 *                Unicode case folding or normalisation.
 *   tokens       the normalised text split into word tokens: a maximal run
 *                of ASCII letters, digits, '_' and bytes >= 0x80 (so UTF-8
 *                words stay whole) is one token; every other non-space byte
 *                (punctuation, control characters) is a token of its own.
 *                "Don't stop." -> don ' t stop.  A token is compared by its
 *                64-bit FNV-1a hash (collisions are ignored).
 *   token cap    edit similarity and ROUGE-L look at the first
 *                COMPARE_MAX_TOKENS (16384) tokens of each text only.  Both
 *                come out of one bit-parallel pass (Myers/Hyyro for
 *                Levenshtein, Hyyro's bit-vector LCS) that does 64 cells of
 *                the n*m matrix per word operation: at most 16384^2/64 = 4M
 *                word steps, about 10-20 ms on one core, which is less than
 *                the old DP's 4000 x 4000 = 16M cells took — and 16384
 *                tokens is all of any prose answer the pair store keeps at
 *                its default response_max_bytes (32 KiB, some 6,000-8,000
 *                word tokens), so in practice nothing is cut.  Realistic
 *                1,500-token answers take about 0.1 ms (bench/compare_bench.c).
 *                length_ratio counts all tokens (linear), exact compares the
 *                whole texts (linear).  A common prefix and suffix are
 *                stripped first (exact for both metrics), so near-identical
 *                answers, the usual A/A case, cost linear time.
 *   memory       compare_answers allocates two token arrays (8 bytes per
 *                token, capped: 256 KiB at most) and, for the differing
 *                middles of m and n tokens (the pattern being the side that
 *                needs fewer steps), a work area of 36 to 60 bytes per
 *                pattern token and 5 per text token (under 1 MiB at the
 *                cap), plus a copy of each tool call's arguments; all are
 *                freed before it returns.
 *
 * Metrics (struct cmp_result)
 *   edit_sim     1 - Levenshtein(a, b) / max(|a|, |b|) over tokens; both
 *                empty -> 1.
 *   rouge_l      ROUGE-L F1 with a as reference and b as candidate:
 *                P = LCS/|b|, R = LCS/|a|, F1 = 2PR/(P+R) = 2 LCS/(|a|+|b|);
 *                both empty -> 1, one empty -> 0.
 *   length_ratio |b| / |a| in tokens (uncapped); a empty: 1 if b is empty
 *                too, else n/a.
 *   JSON         a text is "JSON" when, after trimming whitespace and an
 *                optional Markdown fence (```json or ``` on its own first
 *                line, ``` at the end), it is a valid JSON object or array
 *                (json_validate: strict RFC 8259).  json_same compares the
 *                shape, not the values: the same type tree (true and false
 *                are one type, "boolean"), objects with equal key sets in
 *                any order whose members have the same shape, and arrays
 *                by the shape of their FIRST element only (lengths are
 *                ignored; an empty array only matches an empty array).
 *                Keys are compared decoded ("\u0061" == "a"); a duplicate
 *                key counts once per occurrence.  Shapes are compared as
 *                64-bit order-insensitive hashes, so the check is linear
 *                and allocation-free (up to a copy of a long escaped key).
 *   tool calls   tool_calls is a JSON array of {"name": "...", "arguments":
 *                "<JSON text of an object>"} (OpenAI's {"function": {...}}
 *                wrapper is accepted too; arguments may also be an object).
 *                A leg "has tool calls" when the text is non-empty and not
 *                an empty array.  Each call is reduced to (name, set of
 *                argument keys); tool_agree is 1 iff both legs give the same
 *                multiset of such pairs — so the call order does not matter,
 *                and two calls of one tool must agree call for call.
 *                Missing, null or empty arguments are the empty key set;
 *                arguments that are not a JSON object, or a tool_calls text
 *                that is not an array of objects with a string name, never
 *                agree with anything (tool_agree 0).
 *   refusal      case-insensitive (ASCII) substring match of any pattern
 *                against the whole text; a space in a pattern matches any
 *                run of whitespace, and an apostrophe also matches U+2019
 *                (the typographic one models like to use).  Empty patterns
 *                are ignored.
 */
#ifndef SHADE_COMPARE_H
#define SHADE_COMPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tokens of each side fed to edit similarity and ROUGE-L (see "token cap"). */
#define COMPARE_MAX_TOKENS 16384

struct cmp_answer {
    bool ok;                 /* leg succeeded (2xx, no error) */
    int status;              /* HTTP status, 0 if none */
    const char *error;       /* error kind string (store.h) or NULL */
    const char *text;        /* answer text (may be NULL) */
    size_t len;
    const char *finish;      /* finish_reason or NULL */
    const char *tool_calls;  /* JSON array text (see "tool calls") or NULL */
    size_t tool_len;
};

struct cmp_opts {
    /* Case-insensitive substrings; refusal_patterns == NULL (or o == NULL)
     * selects the built-in defaults (compare.c), which are only a starting
     * point: the config can replace them. */
    const char *const *refusal_patterns;
    size_t nrefusal;
};

struct cmp_result {
    bool status_agree;   /* both ok, or neither ok with the same status and
                            the same error kind (NULL == NULL) */
    int finish_agree;    /* -1 n/a, else finish reasons equal (NULL == NULL) */
    int exact;           /* -1 n/a, else texts equal after normalising */
    double edit_sim;     /* -1 n/a, else in [0, 1] */
    double rouge_l;      /* -1 n/a, else in [0, 1] */
    double length_ratio; /* -1 n/a, else >= 0 */
    int json_valid;      /* -1 unless a's text is JSON; then b's is JSON too */
    int json_same;       /* -1 unless a's text is JSON; then b's has its shape */
    int tool_agree;      /* -1 if neither has tool calls, else 0/1 */
    bool refusal_a, refusal_b; /* text matches a refusal pattern */
};

/* Compare answer b against answer a (a is the primary: the reference for
 * ROUGE-L recall, the denominator of length_ratio, the side whose JSON-ness
 * decides whether the JSON fields apply).  o may be NULL.  Returns 0, or -1
 * when memory ran out: then every content field is -1 (status_agree and the
 * refusal flags need no memory and are still filled in). */
int compare_answers(const struct cmp_answer *a, const struct cmp_answer *b,
                    const struct cmp_opts *o, struct cmp_result *r);

/* ------------------------------------------------ helpers (tests, report) */

/* Write the normalised form of s[0..n) to out, snprintf-style: at most
 * cap - 1 bytes and a terminating NUL (nothing if cap == 0).  Returns the
 * full normalised length, which is <= n; the output is complete iff the
 * result is < cap, so cap = n + 1 always suffices. */
size_t compare_normalise(const char *s, size_t n, char *out, size_t cap);

/* Tokenise the normalised form of s[0..n) (no copy is made) and store the
 * hashes of the first `max` tokens in out (out may be NULL if max == 0).
 * Returns the total number of tokens, which may exceed max. */
size_t compare_tokens(const char *s, size_t n, uint64_t *out, size_t max);

/* Levenshtein distance and LCS length of two token arrays, exactly as the
 * plain O(na*nb) DP gives them, in O(ceil(k/64) * l) time after the common
 * prefix and suffix are stripped (k, l: the two middles' lengths, in the
 * order that is cheaper) and O(na + nb) memory: callers cap the lengths.
 * Returns 0, or -1 if memory ran out. */
int compare_distances(const uint64_t *a, size_t na, const uint64_t *b, size_t nb, size_t *lev,
                      size_t *lcs);

/* The metrics on token arrays (compare_distances, then the formulas under
 * "Metrics").  Both return -1 if memory ran out. */
double compare_edit_sim(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);
double compare_rouge_l(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);

/* Does s[0..n) contain a refusal pattern (o's, or the defaults)? */
bool compare_is_refusal(const char *s, size_t n, const struct cmp_opts *o);

#endif
