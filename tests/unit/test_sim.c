/* test_sim.c — the simulator's pure parts: deterministic text, embeddings,
 * word counts, base64, option parsing. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>

#include "sim_text.h"
#include "rand.h"
#include "unit.h"

static struct sim_text text_for(const char *prompt, uint64_t seed, uint32_t natural, uint32_t n)
{
    struct sim_text t = { sim_hash(prompt, strlen(prompt), seed), 0, 0.0, natural, n };
    return t;
}

static void test_words(void)
{
    CHECK(sim_nwords >= 150 && sim_nwords <= 256);
    for (size_t i = 0; i < sim_nwords; i++) {
        size_t l = strlen(sim_words[i]);
        CHECK(l >= 1 && l + 2 < SIM_TOKEN_MAX);
        for (size_t k = 0; k < l; k++)
            CHECK(sim_words[i][k] >= 'a' && sim_words[i][k] <= 'z');
    }
}

static void test_deterministic(void)
{
    char a[4096], b[4096], c[4096];
    struct sim_text t = text_for("[{\"role\":\"user\",\"content\":\"hi\"}]", 1, 64, 64);
    size_t la = sim_text_render(&t, a, sizeof a);
    size_t lb = sim_text_render(&t, b, sizeof b);
    CHECK(la > 0);
    CHECK_EQ_INT(la, lb);
    CHECK_EQ_STR(a, b);
    /* another seed or prompt gives another text */
    struct sim_text t2 = text_for("[{\"role\":\"user\",\"content\":\"hi\"}]", 2, 64, 64);
    sim_text_render(&t2, c, sizeof c);
    CHECK(strcmp(a, c) != 0);
    struct sim_text t3 = text_for("[{\"role\":\"user\",\"content\":\"ho\"}]", 1, 64, 64);
    sim_text_render(&t3, c, sizeof c);
    CHECK(strcmp(a, c) != 0);
    /* shape: capitalised, ends with '.', one word per token */
    CHECK(isupper((unsigned char)a[0]));
    CHECK(a[la - 1] == '.');
    size_t words = 0;
    for (size_t i = 0; i < la; i++)
        if (a[i] != ' ' && (i == 0 || a[i - 1] == ' '))
            words++;
    CHECK_EQ_INT(words, 64);
    /* after every ". " comes a capital */
    for (size_t i = 0; i + 2 < la; i++)
        if (a[i] == '.' && a[i + 1] == ' ')
            CHECK(isupper((unsigned char)a[i + 2]));
    /* concatenated tokens == the rendered text (what streaming relies on) */
    char tok[SIM_TOKEN_MAX];
    size_t off = 0;
    for (uint32_t i = 0; i < t.n; i++) {
        size_t l = sim_token(&t, i, tok);
        CHECK(l <= SIM_TOKEN_MAX);
        CHECK(off + l <= la && memcmp(a + off, tok, l) == 0);
        off += l;
    }
    CHECK_EQ_INT(off, la);
}

static void test_cut(void)
{
    char full[4096], cut[4096];
    struct sim_text t = text_for("prompt", 7, 40, 40);
    sim_text_render(&t, full, sizeof full);
    struct sim_text tc = t;
    tc.n = 5;
    size_t lc = sim_text_render(&tc, cut, sizeof cut);
    CHECK(lc > 0 && cut[lc - 1] == '.');
    /* a cut reply is the start of the full one, up to its final '.' */
    CHECK(memcmp(full, cut, lc - 1) == 0);
    struct sim_text t1 = t;
    t1.n = 1;
    t1.natural = 1;
    char one[64];
    size_t l1 = sim_text_render(&t1, one, sizeof one);
    CHECK(l1 >= 2 && isupper((unsigned char)one[0]) && one[l1 - 1] == '.' && !strchr(one, ' '));
    /* too small a buffer is reported, not overrun */
    CHECK_EQ_INT(sim_text_render(&t, full, 10), 0);
}

static void test_vary(void)
{
    struct sim_text base = text_for("vary", 1, 2000, 2000);
    char tb[SIM_TOKEN_MAX], tv[SIM_TOKEN_MAX];
    struct sim_text v = base;
    v.vary = 0.25;
    v.nonce = 12345;
    size_t differ = 0;
    for (uint32_t i = 0; i < base.n; i++) {
        size_t lb = sim_token(&base, i, tb), lv = sim_token(&v, i, tv);
        if (lb != lv || memcmp(tb, tv, lb) != 0)
            differ++;
    }
    /* each word replaced with probability 0.25 by a different word */
    CHECK(differ > 400 && differ < 600);
    /* vary = 1: every word differs */
    v.vary = 1.0;
    differ = 0;
    for (uint32_t i = 0; i < base.n; i++) {
        size_t lb = sim_token(&base, i, tb), lv = sim_token(&v, i, tv);
        if (lb != lv || memcmp(tb, tv, lb) != 0)
            differ++;
    }
    CHECK_EQ_INT(differ, base.n);
}

static void test_count_words(void)
{
#define CW(lit) sim_count_words_json(lit, sizeof(lit) - 1)
    CHECK_EQ_INT(CW("\"\""), 0);
    CHECK_EQ_INT(CW("\"hello\""), 1);
    CHECK_EQ_INT(CW("\"  hello   world  \""), 2);
    CHECK_EQ_INT(CW("\"a\\nb\\tc\""), 3);
    CHECK_EQ_INT(CW("\"say \\\"hi\\\" now\""), 3);
    CHECK_EQ_INT(CW("\"caf\\u00e9 ok\""), 2);
    CHECK_EQ_INT(CW("\"\\n\\n\""), 0);
#undef CW
}

static void test_embed(void)
{
    float v[64], w[64];
    sim_embed(sim_hash("abc", 3, 1), v, 64);
    sim_embed(sim_hash("abc", 3, 1), w, 64);
    CHECK(memcmp(v, w, sizeof v) == 0);
    double s = 0;
    for (int i = 0; i < 64; i++)
        s += (double)v[i] * v[i];
    CHECK(fabs(s - 1.0) < 1e-5);
    sim_embed(sim_hash("abd", 3, 1), w, 64);
    CHECK(memcmp(v, w, sizeof v) != 0);
    sim_embed(7, v, 1);
    CHECK(fabs(fabs((double)v[0]) - 1.0) < 1e-6);
}

static void test_base64(void)
{
    char out[32];
    size_t n = sim_base64("", 0, out);
    CHECK_EQ_INT(n, 0);
    n = sim_base64("f", 1, out);
    out[n] = 0;
    CHECK_EQ_STR(out, "Zg==");
    n = sim_base64("fo", 2, out);
    out[n] = 0;
    CHECK_EQ_STR(out, "Zm8=");
    n = sim_base64("foobar", 6, out);
    out[n] = 0;
    CHECK_EQ_STR(out, "Zm9vYmFy");
    unsigned char hi[3] = { 0xff, 0xfe, 0xfd };
    n = sim_base64(hi, 3, out);
    out[n] = 0;
    CHECK_EQ_STR(out, "//79");
}

static void test_parse(void)
{
    uint64_t u;
    double d;
    CHECK(sim_parse_uint("0", 0, 10, &u) == 0 && u == 0);
    CHECK(sim_parse_uint("10", 0, 10, &u) == 0 && u == 10);
    CHECK(sim_parse_uint("11", 0, 10, &u) < 0);
    CHECK(sim_parse_uint("-1", 0, 10, &u) < 0);
    CHECK(sim_parse_uint("5x", 0, 10, &u) < 0);
    CHECK(sim_parse_uint("", 0, 10, &u) < 0);
    CHECK(sim_parse_uint(" 5", 0, 10, &u) < 0);
    CHECK(sim_parse_uint("99999999999999999999999", 0, UINT64_MAX, &u) < 0);
    CHECK(sim_parse_prob("0", &d) == 0 && d == 0);
    CHECK(sim_parse_prob("1", &d) == 0 && d == 1);
    CHECK(sim_parse_prob("0.25", &d) == 0 && d == 0.25);
    CHECK(sim_parse_prob("1.01", &d) < 0);
    CHECK(sim_parse_prob("-0.1", &d) < 0);
    CHECK(sim_parse_prob("nan", &d) < 0);
    CHECK(sim_parse_prob("0.5x", &d) < 0);
    CHECK(sim_parse_prob("", &d) < 0);
    CHECK(sim_parse_double("inf", 0, 1e9, &d) < 0);
    CHECK(sim_parse_double("1e3", 0, 1e9, &d) == 0 && d == 1000);
    char buf[24];
    size_t n = sim_u64_dec(0, buf);
    buf[n] = 0;
    CHECK_EQ_STR(buf, "0");
    n = sim_u64_dec(UINT64_MAX, buf);
    buf[n] = 0;
    CHECK_EQ_STR(buf, "18446744073709551615");
}

static void test_unit_range(void)
{
    CHECK(sim_unit(0) == 0.0);
    CHECK(sim_unit(UINT64_MAX) < 1.0);
    /* rough uniformity of the fault draw */
    int below = 0;
    for (uint64_t i = 0; i < 10000; i++)
        below += sim_unit(rnd_splitmix64(i)) < 0.3;
    CHECK(below > 2800 && below < 3200);
}

int main(void)
{
    test_words();
    test_deterministic();
    test_cut();
    test_vary();
    test_count_words();
    test_embed();
    test_base64();
    test_parse();
    test_unit_range();
    UNIT_DONE();
}
