/* sim_text.c — deterministic text, embeddings and helpers for `shade sim`. */
#include "sim_text.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rand.h"

const char *const sim_words[] = {
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he",
    "was", "for", "on", "are", "as", "with", "his", "they", "at", "be",
    "this", "have", "from", "or", "one", "had", "by", "word", "but", "not",
    "what", "all", "were", "we", "when", "your", "can", "said", "there", "use",
    "an", "each", "which", "she", "do", "how", "their", "if", "will", "up",
    "other", "about", "out", "many", "then", "them", "these", "so", "some", "her",
    "would", "make", "like", "him", "into", "time", "has", "look", "two", "more",
    "write", "go", "see", "number", "no", "way", "could", "people", "my", "than",
    "first", "water", "been", "call", "who", "its", "now", "find", "long", "down",
    "day", "did", "get", "come", "made", "may", "part", "over", "new", "sound",
    "take", "only", "little", "work", "know", "place", "year", "live", "me", "back",
    "give", "most", "very", "after", "thing", "our", "just", "name", "good", "sentence",
    "man", "think", "say", "great", "where", "help", "through", "much", "before", "line",
    "right", "too", "mean", "old", "any", "same", "tell", "boy", "follow", "came",
    "want", "show", "also", "around", "form", "three", "small", "set", "put", "end",
    "does", "another", "well", "large", "must", "big", "even", "such", "because", "turn",
    "here", "why", "ask", "went", "men", "read", "need", "land", "different", "home",
    "us", "move", "try", "kind", "hand", "picture", "again", "change", "off", "play",
    "spell", "air", "away", "animal", "house", "point", "page", "letter", "mother", "answer",
    "found", "study", "still", "learn", "should", "world", "high", "every", "near", "add",
};
const size_t sim_nwords = sizeof sim_words / sizeof sim_words[0];

double sim_unit(uint64_t x) { return (double)(x >> 11) * 0x1.0p-53; }

uint64_t sim_hash(const void *p, size_t n, uint64_t seed)
{
    return rnd_splitmix64(rnd_fnv1a64(RND_FNV1A64_INIT, p, n) ^ rnd_splitmix64(seed));
}

/* independent streams of per-position values */
#define K_WORD  0x5851f42d4c957f2dull
#define K_BREAK 0x14057b7ef767814full
#define K_VARY  0xd1b54a32d192ed03ull
#define K_ALT   0x8cb92ba72f3d8dd7ull
#define K_GARB  0x2545f4914f6cdd1dull

static bool sentence_break(const struct sim_text *t, uint32_t i)
{
    /* about one word in nine ends a sentence, never the last two */
    if (i + 2 >= t->natural)
        return false;
    return rnd_splitmix64(t->hash ^ ((uint64_t)i * K_BREAK)) % 9 == 0;
}

size_t sim_token(const struct sim_text *t, uint32_t i, char *out) { return sim_token_garbled(t, 0, i, out); }

size_t sim_token_garbled(const struct sim_text *t, double garble, uint32_t i, char *out)
{
    size_t w = (size_t)(rnd_splitmix64(t->hash + (uint64_t)i * K_WORD) % sim_nwords);
    if (t->vary > 0) {
        uint64_t v = rnd_splitmix64(t->nonce ^ ((uint64_t)i * K_VARY));
        if (sim_unit(v) < t->vary) {
            size_t shift = 1 + (size_t)(rnd_splitmix64(v ^ K_ALT) % (sim_nwords - 1));
            w = (w + shift) % sim_nwords;
        }
    }
    if (garble > 0) {
        /* --quality: a word not kept becomes a filler, the same for every
         * call with this prompt (hash-based, not nonce-based) */
        uint64_t g = rnd_splitmix64(t->hash ^ ((uint64_t)i * K_GARB));
        if (sim_unit(g) < garble)
            w = (size_t)(rnd_splitmix64(g ^ K_ALT) % SIM_FILLERS);
    }
    const char *word = sim_words[w];
    size_t len = strlen(word);
    memcpy(out, word, len);
    if (i == 0 || sentence_break(t, i - 1))
        out[0] = (char)(out[0] - 'a' + 'A');
    if (i + 1 >= t->n) {
        out[len++] = '.';
    } else if (sentence_break(t, i)) {
        out[len++] = '.';
        out[len++] = ' ';
    } else {
        out[len++] = ' ';
    }
    return len;
}

size_t sim_text_render(const struct sim_text *t, char *out, size_t cap)
{
    size_t n = 0;
    char tok[SIM_TOKEN_MAX];
    for (uint32_t i = 0; i < t->n; i++) {
        size_t l = sim_token(t, i, tok);
        if (n + l >= cap)
            return 0;
        memcpy(out + n, tok, l);
        n += l;
    }
    if (n >= cap)
        return 0;
    out[n] = '\0';
    return n;
}

/* ---------- the simulated judge ---------- */

static bool word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

size_t sim_distinct_words(const char *s, size_t n)
{
    /* hash every word (FNV-1a over case-folded bytes), sort, count runs */
    uint64_t *h = malloc((n / 2 + 1) * sizeof *h);
    if (!h)
        return SIZE_MAX;
    size_t nw = 0;
    for (size_t i = 0; i < n;) {
        if (!word_byte((unsigned char)s[i])) {
            i++;
            continue;
        }
        uint64_t x = RND_FNV1A64_INIT;
        for (; i < n && word_byte((unsigned char)s[i]); i++) {
            unsigned char c = (unsigned char)s[i];
            x = rnd_fnv1a64_byte(x, (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32u : c));
        }
        h[nw++] = x;
    }
    qsort(h, nw, sizeof *h, cmp_u64);
    size_t distinct = 0;
    for (size_t i = 0; i < nw; i++)
        if (i == 0 || h[i] != h[i - 1])
            distinct++;
    free(h);
    return distinct;
}

static const char *find(const char *hay, const char *end, const char *needle)
{
    size_t nl = strlen(needle);
    for (const char *p = hay; p && (size_t)(end - p) >= nl; p++) {
        p = memchr(p, needle[0], (size_t)(end - p) - nl + 1);
        if (!p)
            return NULL;
        if (memcmp(p, needle, nl) == 0)
            return p;
    }
    return NULL;
}

int sim_judge(const char *text, size_t n, enum sim_bias bias, double margin, struct sim_judgement *out)
{
    memset(out, 0, sizeof *out);
    const char *end = text + n;
    const char *a = find(text, end, "[Answer A]");
    const char *b = a ? find(a + 10, end, "[Answer B]") : NULL;
    if (!b)
        return -1;
    const char *e = find(b + 10, end, "[End]");
    if (!e)
        e = end;
    out->words_a = sim_distinct_words(a + 10, (size_t)(b - (a + 10)));
    out->words_b = sim_distinct_words(b + 10, (size_t)(e - (b + 10)));
    if (out->words_a == SIZE_MAX || out->words_b == SIZE_MAX) {
        out->words_a = SIZE_MAX;
        return -1;
    }
    double x = (double)out->words_a, y = (double)out->words_b;
    if (bias == SIM_BIAS_FIRST)
        out->verdict = SIM_VERDICT_A;
    else if (bias == SIM_BIAS_SECOND)
        out->verdict = SIM_VERDICT_B;
    else if (fabs(x - y) <= margin * (x > y ? x : y))
        out->verdict = SIM_VERDICT_TIE;
    else
        out->verdict = x > y ? SIM_VERDICT_A : SIM_VERDICT_B;
    return 0;
}

size_t sim_count_words_json(const char *raw, size_t len)
{
    if (len < 2)
        return 0;
    const char *p = raw + 1, *end = raw + len - 1;
    size_t words = 0;
    bool in_word = false;
    while (p < end) {
        bool space;
        if (*p == '\\' && p + 1 < end) {
            char e = p[1];
            space = e == 'n' || e == 't' || e == 'r' || e == 'f' || e == 'b';
            p += e == 'u' ? 6 : 2;
        } else {
            space = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r';
            p++;
        }
        if (space) {
            in_word = false;
        } else if (!in_word) {
            in_word = true;
            words++;
        }
    }
    return words;
}

void sim_embed(uint64_t hash, float *out, size_t dim)
{
    double sum = 0;
    for (size_t k = 0; k < dim; k++) {
        double v = sim_unit(rnd_splitmix64(hash ^ ((uint64_t)(k + 1) * K_WORD))) * 2.0 - 1.0;
        out[k] = (float)v;
        sum += (double)out[k] * (double)out[k];
    }
    if (sum <= 0) {
        for (size_t k = 0; k < dim; k++)
            out[k] = k == 0 ? 1.0f : 0.0f;
        return;
    }
    double inv = 1.0 / sqrt(sum);
    for (size_t k = 0; k < dim; k++)
        out[k] = (float)((double)out[k] * inv);
}

size_t sim_base64(const void *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = '=';
    }
    return o;
}

int sim_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sim_parse_double(const char *s, double min, double max, double *out)
{
    if (!s || !*s || *s == ' ' || *s == '\t')
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sim_parse_prob(const char *s, double *out) { return sim_parse_double(s, 0.0, 1.0, out); }

size_t sim_u64_dec(uint64_t v, char *out)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}
