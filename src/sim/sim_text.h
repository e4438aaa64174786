/* sim_text.h — the pure parts of `shade sim`: deterministic text and
 * embeddings, prompt-size estimates, option parsing.  No I/O, no globals
 * beyond the constant word list, so they are unit-tested on their own.
 */
#ifndef SHADE_SIM_TEXT_H
#define SHADE_SIM_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fixed vocabulary: lower-case ASCII words, one token each. */
extern const char *const sim_words[];
extern const size_t sim_nwords;

/* Uniform double in [0, 1) from 64 random bits. */
double sim_unit(uint64_t x);
/* FNV-1a over the bytes, then mixed with the seed. */
uint64_t sim_hash(const void *p, size_t n, uint64_t seed);

/* One reply: `natural` tokens long unless cut to `n` (n <= natural).
 * Word i is a function of (hash, i); with vary > 0 each word is replaced,
 * with probability vary, by a different word chosen from `nonce`. */
struct sim_text {
    uint64_t hash;     /* sim_hash(prompt bytes, seed) */
    uint64_t nonce;    /* per-call randomness for vary */
    double vary;       /* 0..1 */
    uint32_t natural;  /* length the model "wants" (>= 1) */
    uint32_t n;        /* tokens actually produced (1..natural) */
};

#define SIM_FILLERS 8  /* sim_words[0 .. 7]: "the of and to in is you that" */

#define SIM_TOKEN_MAX 32  /* longest token text, including ". " */

/* Text of token i (0 <= i < n): the word, capitalised at the start of a
 * sentence, followed by " ", ". " (sentence break) or, for the last token,
 * ".".  Returns its length; out needs SIM_TOKEN_MAX bytes (not terminated). */
size_t sim_token(const struct sim_text *t, uint32_t i, char *out);
/* sim_token for `--quality` (= 1 - garble): after vary, each word is
 * replaced, with probability garble, by one of the SIM_FILLERS commonest
 * words, chosen from (hash, i): a prompt is always garbled the same way. */
size_t sim_token_garbled(const struct sim_text *t, double garble, uint32_t i, char *out);
/* The whole reply (tokens concatenated) into out (cap bytes, terminated);
 * returns the length, or 0 if it does not fit. */
size_t sim_text_render(const struct sim_text *t, char *out, size_t cap);

/* The simulated judge (`shade sim --judge`).
 *
 * `text` is the judge prompt (the last user message, unescaped).  Answer A
 * is the text after the first "[Answer A]" up to the next "[Answer B]";
 * answer B runs from there to the next "[End]" (or the end of the text).
 * Each answer scores its number of distinct words (sim_distinct_words); the
 * higher score wins unless |a - b| <= margin * max(a, b), which is a tie.
 * bias SIM_BIAS_FIRST / SIM_BIAS_SECOND always picks A / B (the scores are
 * still computed).  Returns 0, or -1 when a section is missing (verdict
 * SIM_VERDICT_NONE) or memory ran out (words_a == SIZE_MAX). */
enum sim_bias { SIM_BIAS_NONE = 0, SIM_BIAS_FIRST, SIM_BIAS_SECOND };
enum sim_verdict { SIM_VERDICT_NONE = 0, SIM_VERDICT_A, SIM_VERDICT_B, SIM_VERDICT_TIE };
struct sim_judgement {
    enum sim_verdict verdict;
    size_t words_a, words_b;
};
int sim_judge(const char *text, size_t n, enum sim_bias bias, double margin, struct sim_judgement *out);
/* Distinct words in s: maximal runs of ASCII letters and digits and of
 * non-ASCII bytes, ASCII case folded.  SIZE_MAX if memory ran out. */
size_t sim_distinct_words(const char *s, size_t n);

/* Count whitespace-separated words in a JSON string span (with quotes,
 * escapes as written: \n \t \r \f \b separate words). */
size_t sim_count_words_json(const char *raw, size_t len);

/* A deterministic unit-length vector of dim floats from a hash. */
void sim_embed(uint64_t hash, float *out, size_t dim);
/* Standard base64 (with padding); out needs 4*((n+2)/3) bytes.  Returns
 * the length written (not terminated). */
size_t sim_base64(const void *in, size_t n, char *out);

/* Option values.  0 on success, -1 on a malformed or out-of-range value. */
int sim_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);
int sim_parse_prob(const char *s, double *out);           /* [0, 1] */
int sim_parse_double(const char *s, double min, double max, double *out);

/* Append the decimal form of v to out; returns the length (<= 20). */
size_t sim_u64_dec(uint64_t v, char *out);

#endif
