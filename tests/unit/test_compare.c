/* test_compare.c — answer comparison: normalising, tokens, edit similarity
 * and ROUGE-L against hand-computed values, JSON shapes, tool calls,
 * refusals, status agreement, n/a cases, and the token cap on large texts;
 * the bit-parallel edit distance and LCS against the plain DP they replaced
 * (compare_ref.h) on many random and adversarial token arrays. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "compare.h"
#include "compare_ref.h"
#include "unit.h"

#define CHECK_NEAR(x, want) do { double _x = (x), _w = (want); unit_checks++; \
    if (!(fabs(_x - _w) <= 1e-9)) { unit_failures++; fprintf(stderr, \
    "%s:%d: %s == %.12f, expected %.12f\n", __FILE__, __LINE__, #x, _x, _w); } } while (0)

/* a successful leg answering text */
static struct cmp_answer ok(const char *text)
{
    struct cmp_answer a = {0};
    a.ok = true;
    a.status = 200;
    a.text = text;
    a.len = text ? strlen(text) : 0;
    a.finish = "stop";
    return a;
}

static struct cmp_answer failed(int status, const char *error)
{
    struct cmp_answer a = {0};
    a.status = status;
    a.error = error;
    return a;
}

static struct cmp_answer tools(const char *tool_calls)
{
    struct cmp_answer a = ok("");
    a.tool_calls = tool_calls;
    a.tool_len = tool_calls ? strlen(tool_calls) : 0;
    a.finish = "tool_calls";
    return a;
}

static struct cmp_result cmp(struct cmp_answer a, struct cmp_answer b)
{
    struct cmp_result r;
    memset(&r, 0x5A, sizeof r); /* every field must be written */
    CHECK_EQ_INT(compare_answers(&a, &b, NULL, &r), 0);
    return r;
}

static struct cmp_result cmp_text(const char *a, const char *b) { return cmp(ok(a), ok(b)); }

static const char *norm(const char *s)
{
    static char out[256];
    size_t n = compare_normalise(s, strlen(s), out, sizeof out);
    CHECK(n < sizeof out && strlen(out) == n);
    return out;
}

static size_t ntok(const char *s) { return compare_tokens(s, strlen(s), NULL, 0); }

static bool same_tokens(const char *a, const char *b)
{
    uint64_t ta[64], tb[64];
    size_t na = compare_tokens(a, strlen(a), ta, 64), nb = compare_tokens(b, strlen(b), tb, 64);
    return na == nb && na <= 64 && memcmp(ta, tb, na * sizeof ta[0]) == 0;
}

static void test_normalise(void)
{
    CHECK_EQ_STR(norm("Hello,  World"), "hello, world");
    CHECK_EQ_STR(norm("  Hello,\t\n  World!!  "), "hello, world");
    CHECK_EQ_STR(norm("hello, world."), "hello, world");
    /* the whole trailing run of punctuation and spaces goes, inner stays */
    CHECK_EQ_STR(norm("Wait... what ?! "), "wait... what");
    CHECK_EQ_STR(norm("..."), "");
    CHECK_EQ_STR(norm(""), "");
    CHECK_EQ_STR(norm(" \r\n\t "), "");
    /* closing brackets and quotes are content */
    CHECK_EQ_STR(norm("Call f(x)."), "call f(x)");
    CHECK_EQ_STR(norm("{\"A\": 1}"), "{\"a\": 1}");
    /* UTF-8 bytes are kept as they are: only ASCII is lowercased */
    CHECK_EQ_STR(norm("\xC3\x89" "COLE  Caf\xC3\xA9."), "\xC3\x89" "cole caf\xC3\xA9");

    /* snprintf-style: the full length is returned, the output is cut */
    char out[6];
    CHECK_EQ_INT(compare_normalise("Hello World", 11, out, sizeof out), 11);
    CHECK_EQ_STR(out, "hello");
    CHECK_EQ_INT(compare_normalise("Hello World", 11, NULL, 0), 11);
    CHECK_EQ_INT(compare_normalise(NULL, 5, out, sizeof out), 0);
    CHECK_EQ_STR(out, "");
    /* the length given is honoured: no NUL needed, none read past */
    CHECK_EQ_INT(compare_normalise("AB CD", 2, out, sizeof out), 2);
    CHECK_EQ_STR(out, "ab");
}

static void test_tokens(void)
{
    CHECK_EQ_INT(ntok("the cat sat"), 3);
    CHECK_EQ_INT(ntok("Don't stop."), 4);          /* don ' t stop (final . stripped) */
    CHECK_EQ_INT(ntok("a,b"), 3);                  /* a , b */
    CHECK_EQ_INT(ntok("x = f(y_1);"), 6);          /* x = f ( y_1 ) — ';' stripped */
    CHECK_EQ_INT(ntok("na\xC3\xAFve caf\xC3\xA9"), 2); /* UTF-8 stays inside words */
    CHECK_EQ_INT(ntok(""), 0);
    CHECK_EQ_INT(ntok("  ...  "), 0);
    CHECK_EQ_INT(compare_tokens(NULL, 3, NULL, 0), 0);
    /* case, spacing and the final punctuation do not matter */
    CHECK(same_tokens("DON'T  STOP", "don't stop!"));
    CHECK(same_tokens("a , b", "a,b"));
    CHECK(!same_tokens("cat", "cats"));
    CHECK(!same_tokens("a b", "b a"));
    /* only max hashes are stored, all tokens are counted */
    uint64_t t[4] = {0, 0, 0, 77};
    CHECK_EQ_INT(compare_tokens("a b c d e", 9, t, 3), 5);
    CHECK(t[0] != 0 && t[1] != 0 && t[2] != 0 && t[0] != t[1]);
    CHECK_EQ_INT(t[3], 77);
}

static void test_metrics(void)
{
    /* the brief's example: a = the cat sat (3), b = the cat sat down (4) */
    struct cmp_result r = cmp_text("the cat sat", "the cat sat down");
    CHECK_NEAR(r.edit_sim, 0.75);               /* 1 - 1 insertion / max(3,4) = 1 - 1/4 */
    CHECK_NEAR(r.rouge_l, 6.0 / 7.0);           /* LCS 3: P = 3/4, R = 3/3,
                                                   F1 = 2*(3/4)*1/(3/4+1) = 1.5/1.75 = 0.857142857 */
    CHECK_NEAR(r.length_ratio, 4.0 / 3.0);      /* 4 tokens / 3 tokens */
    CHECK_EQ_INT(r.exact, 0);
    CHECK_EQ_INT(r.finish_agree, 1);
    CHECK(r.status_agree);

    /* kitten/sitting with one-letter tokens: a = k i t t e n (6), b = s i t t i n g (7) */
    r = cmp_text("k i t t e n", "s i t t i n g");
    CHECK_NEAR(r.edit_sim, 1.0 - 3.0 / 7.0);    /* k->s, e->i, +g: 3 edits; 1 - 3/7 = 0.571428571 */
    CHECK_NEAR(r.rouge_l, 8.0 / 13.0);          /* LCS "i t t n" = 4: 2*4/(6+7) = 8/13 = 0.615384615 */
    CHECK_NEAR(r.length_ratio, 7.0 / 6.0);

    /* swapped words: a = a b c, b = b a c */
    r = cmp_text("a b c", "b a c");
    CHECK_NEAR(r.edit_sim, 1.0 / 3.0);          /* 2 substitutions: 1 - 2/3 */
    CHECK_NEAR(r.rouge_l, 2.0 / 3.0);           /* LCS 2 ("a c"): 2*2/(3+3) = 4/6 */
    CHECK_NEAR(r.length_ratio, 1.0);

    /* common prefix and suffix around the change: x a b y vs x b a y */
    r = cmp_text("x a b y", "x b a y");
    CHECK_NEAR(r.edit_sim, 0.5);                /* 2 substitutions: 1 - 2/4 */
    CHECK_NEAR(r.rouge_l, 0.75);                /* LCS 3 ("x a y"): 2*3/(4+4) = 6/8 */

    /* a number splits into three tokens: b = one two 2 . 5 three four (7) */
    r = cmp_text("One two three four", "one two 2.5 three four");
    CHECK_NEAR(r.edit_sim, 4.0 / 7.0);          /* 3 insertions: 1 - 3/7 */
    CHECK_NEAR(r.rouge_l, 8.0 / 11.0);          /* LCS 4: 2*4/(4+7) = 8/11 = 0.727272727 */
    CHECK_NEAR(r.length_ratio, 1.75);           /* 7/4 */

    /* exact after normalising; the token metrics agree */
    r = cmp_text("Hello,  World", "hello, world.");
    CHECK_EQ_INT(r.exact, 1);
    CHECK_NEAR(r.edit_sim, 1.0);
    CHECK_NEAR(r.rouge_l, 1.0);
    CHECK_NEAR(r.length_ratio, 1.0);            /* hello , world: 3/3 */
    r = cmp_text("Hello, World", "Hello World");
    CHECK_EQ_INT(r.exact, 0);                   /* the inner comma is content */
    CHECK_NEAR(r.edit_sim, 2.0 / 3.0);          /* 1 deletion: 1 - 1/3 */
    CHECK_NEAR(r.rouge_l, 0.8);                 /* LCS 2: 2*2/(3+2) = 4/5 */

    /* empty texts */
    r = cmp_text("", "");
    CHECK_EQ_INT(r.exact, 1);
    CHECK_NEAR(r.edit_sim, 1.0);                /* both empty -> 1 */
    CHECK_NEAR(r.rouge_l, 1.0);
    CHECK_NEAR(r.length_ratio, 1.0);            /* a empty, b empty -> 1 */
    r = cmp_text(NULL, "  .  ");                /* NULL text == "" == only punctuation */
    CHECK_EQ_INT(r.exact, 1);
    CHECK_NEAR(r.length_ratio, 1.0);
    r = cmp_text("", "word");
    CHECK_NEAR(r.edit_sim, 0.0);                /* 1 insertion: 1 - 1/1 */
    CHECK_NEAR(r.rouge_l, 0.0);                 /* LCS 0 */
    CHECK_NEAR(r.length_ratio, -1.0);           /* a empty, b not -> n/a */
    r = cmp_text("word", "");
    CHECK_NEAR(r.edit_sim, 0.0);
    CHECK_NEAR(r.rouge_l, 0.0);
    CHECK_NEAR(r.length_ratio, 0.0);            /* 0/1 */
    struct cmp_answer na = ok(NULL);
    na.len = 99; /* NULL text is empty whatever len says */
    r = cmp(na, ok(""));
    CHECK_EQ_INT(r.exact, 1);

    /* the array helpers on their own */
    uint64_t x[] = {1, 2, 3}, y[] = {1, 3};
    CHECK_NEAR(compare_edit_sim(x, 3, y, 2), 1.0 - 1.0 / 3.0);  /* 1 deletion */
    CHECK_NEAR(compare_rouge_l(x, 3, y, 2), 0.8);               /* LCS 2: 4/5 */
    CHECK_NEAR(compare_edit_sim(y, 2, x, 3), 1.0 - 1.0 / 3.0);  /* symmetric */
    CHECK_NEAR(compare_edit_sim(NULL, 0, NULL, 0), 1.0);
    CHECK_NEAR(compare_rouge_l(NULL, 0, NULL, 0), 1.0);
    CHECK_NEAR(compare_rouge_l(x, 3, NULL, 0), 0.0);
    CHECK_NEAR(compare_edit_sim(x, 3, x, 3), 1.0);
}

static void test_finish(void)
{
    struct cmp_answer a = ok("x"), b = ok("x");
    struct cmp_result r = cmp(a, b);
    CHECK_EQ_INT(r.finish_agree, 1);
    b.finish = "length";
    CHECK_EQ_INT(cmp(a, b).finish_agree, 0);
    a.finish = b.finish = NULL;
    CHECK_EQ_INT(cmp(a, b).finish_agree, 1);    /* both NULL agree */
    b.finish = "stop";
    CHECK_EQ_INT(cmp(a, b).finish_agree, 0);
}

/* json_valid and json_same for a's and b's texts */
static void check_json(const char *a, const char *b, int valid, int same, int line)
{
    struct cmp_result r = cmp_text(a, b);
    if (r.json_valid != valid || r.json_same != same) {
        unit_failures++;
        fprintf(stderr, "%s:%d: json_valid %d json_same %d, expected %d %d\n", __FILE__, line,
                r.json_valid, r.json_same, valid, same);
    }
    unit_checks++;
}
#define JSON(a, b, valid, same) check_json(a, b, valid, same, __LINE__)

static void test_json(void)
{
    const char *obj = "{\"a\": 1, \"b\": [{\"c\": \"x\"}], \"d\": null}";
    /* values differ, key order differs, extra array elements: same shape */
    JSON(obj, "{\"d\":null,\"b\":[{\"c\":\"y\"},{\"z\":1}],\"a\":2.5}", 1, 1);
    JSON(obj, "{\"a\": 1, \"b\": [{\"c\": \"x\"}]}", 1, 0);          /* key missing */
    JSON(obj, "{\"a\":1,\"b\":[{\"c\":\"x\"}],\"d\":null,\"e\":0}", 1, 0); /* key extra */
    JSON(obj, "{\"a\":\"1\",\"b\":[{\"c\":\"x\"}],\"d\":null}", 1, 0);    /* number vs string */
    JSON(obj, "{\"a\":1,\"b\":[{\"C\":\"x\"}],\"d\":null}", 1, 0);      /* nested key differs */
    JSON(obj, "{\"a\":1,\"b\":[],\"d\":null}", 1, 0);                   /* empty vs non-empty */
    JSON(obj, "Sure! Here it is: {\"a\": 1}", 0, 0);                    /* b not JSON */
    JSON(obj, "[1]", 1, 0);                                              /* array vs object */
    JSON(obj, "42", 0, 0);                                               /* scalar: not JSON here */
    JSON(obj, "{\"a\":1,}", 0, 0);                                       /* strict: trailing comma */
    /* a not an object/array: n/a */
    JSON("Hello", "{}", -1, -1);
    JSON("42", "42", -1, -1);
    JSON("\"str\"", "\"str\"", -1, -1);
    JSON("", "", -1, -1);
    /* booleans are one type; keys compare decoded */
    JSON("{\"x\": true}", "{\"x\": false}", 1, 1);
    JSON("{\"x\": true}", "{\"x\": null}", 1, 0);
    JSON("{\"\\u0061\": 1}", "{\"a\": 2}", 1, 1);
    /* arrays: shape of the first element only */
    JSON("[1, \"x\", {}]", "[2]", 1, 1);
    JSON("[]", "[]", 1, 1);
    JSON("[]", "[1]", 1, 0);
    JSON("[[1]]", "[[]]", 1, 0);
    JSON("[{\"a\":[1]}]", "[{\"a\":[5,6]}, 3]", 1, 1);
    /* duplicate keys count per occurrence (documented) */
    JSON("{\"a\":1,\"a\":1}", "{\"a\":1}", 1, 0);
    /* fences, either side, with or without the language tag */
    JSON("```json\n{\"a\": 1}\n```", "{\"a\": 2}", 1, 1);
    JSON("{\"a\": 1}", "  ```json\n{\"a\": 2}\n```\n", 1, 1);
    JSON("```\n[1]\n```", "```JSON\r\n[3]\r\n```", 1, 1);
    JSON("```json\n{\"a\": 1}\n```", "```json\n{\"a\": true}\n```", 1, 0);
    JSON("```json\n{\"a\": 1}", "{\"a\": 1}", -1, -1);                   /* unclosed fence */
    JSON("```python\n{\"a\": 1}\n```", "{\"a\": 1}", -1, -1);            /* another language */
    JSON("```json {\"a\": 1}```", "{\"a\": 1}", -1, -1);                 /* not on its own line */
    JSON("{\"a\": 1}", "```json\n{\"a\": 1}\n``` hope this helps", 0, 0);
    /* whitespace around JSON is fine */
    JSON("\n  {\"k\": [true]}  \n", "{\"k\":[false,true]}", 1, 1);
}

static int tool_agree(const char *a, const char *b) { return cmp(tools(a), tools(b)).tool_agree; }

static void test_tools(void)
{
    const char *wx = "[{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"}]";
    /* other values, other key order: agree */
    CHECK_EQ_INT(tool_agree(wx, "[{\"name\":\"get_weather\",\"arguments\":"
                                "\"{\\\"unit\\\":\\\"f\\\", \\\"city\\\":\\\"Rome\\\"}\"}]"), 1);
    CHECK_EQ_INT(tool_agree(wx, wx), 1);
    /* different argument keys */
    CHECK_EQ_INT(tool_agree(wx, "[{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}]"), 0);
    CHECK_EQ_INT(tool_agree(wx, "[{\"name\":\"get_weather\",\"arguments\":"
                                "\"{\\\"city\\\":\\\"Paris\\\",\\\"units\\\":\\\"c\\\"}\"}]"), 0);
    /* different name */
    CHECK_EQ_INT(tool_agree(wx, "[{\"name\":\"get_forecast\",\"arguments\":"
                                "\"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":\\\"c\\\"}\"}]"), 0);
    /* order-insensitive over calls */
    const char *fg = "[{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"},{\"name\":\"g\",\"arguments\":\"{}\"}]";
    const char *gf = "[{\"name\":\"g\",\"arguments\":\"\"},{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":2}\"}]";
    CHECK_EQ_INT(tool_agree(fg, gf), 1);         /* "" and "{}" are both no keys */
    /* a multiset: calling f twice is not calling it once */
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\"},{\"name\":\"f\"}]", "[{\"name\":\"f\"}]"), 0);
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\"},{\"name\":\"f\"}]", "[{\"name\":\"f\"},{\"name\":\"f\"}]"), 1);
    /* per call: f{x} f{y} is not f{x} f{x} */
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\",\"arguments\":{\"x\":1}},{\"name\":\"f\",\"arguments\":{\"y\":1}}]",
                            "[{\"name\":\"f\",\"arguments\":{\"x\":1}},{\"name\":\"f\",\"arguments\":{\"x\":2}}]"), 0);
    /* arguments as an object, as a string, in OpenAI's wrapper: all alike */
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\",\"arguments\":{\"x\":1}}]",
                            "[{\"type\":\"function\",\"id\":\"call_1\",\"function\":"
                            "{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":[1]}\"}}]"), 1);
    /* missing or null arguments are no keys */
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\"}]", "[{\"name\":\"f\",\"arguments\":null}]"), 1);
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\"}]", "[{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":1}\"}]"), 0);
    /* escaped names compare decoded */
    CHECK_EQ_INT(tool_agree("[{\"name\":\"\\u0066\"}]", "[{\"name\":\"f\"}]"), 1);
    /* neither has tool calls: n/a */
    CHECK_EQ_INT(tool_agree(NULL, NULL), -1);
    CHECK_EQ_INT(tool_agree("[]", NULL), -1);
    CHECK_EQ_INT(tool_agree(" [ ] ", "[]"), -1);
    CHECK_EQ_INT(tool_agree("", "  "), -1);
    /* only one has */
    CHECK_EQ_INT(tool_agree(wx, NULL), 0);
    CHECK_EQ_INT(tool_agree("[]", wx), 0);
    /* malformed never agrees */
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\",\"arguments\":\"{oops\"}]", "[{\"name\":\"f\",\"arguments\":\"{oops\"}]"), 0);
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\",\"arguments\":\"[1]\"}]", "[{\"name\":\"f\",\"arguments\":\"[1]\"}]"), 0);
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\",\"arguments\":3}]", "[{\"name\":\"f\"}]"), 0);
    CHECK_EQ_INT(tool_agree("[{\"name\":7}]", "[{\"name\":7}]"), 0);
    CHECK_EQ_INT(tool_agree("[\"f\"]", "[\"f\"]"), 0);
    CHECK_EQ_INT(tool_agree("{\"name\":\"f\"}", "{\"name\":\"f\"}"), 0);
    CHECK_EQ_INT(tool_agree("[{\"name\":\"f\"}", "[{\"name\":\"f\"}]"), 0);
    /* tool_len is honoured (no NUL needed) */
    struct cmp_answer a = tools("[{\"name\":\"f\"}]XXXX"), b = tools("[{\"name\":\"f\"}]");
    a.tool_len -= 4;
    CHECK_EQ_INT(cmp(a, b).tool_agree, 1);
}

static void test_refusal(void)
{
    const char *s = "I'm sorry, but I can't help with that.";
    CHECK(compare_is_refusal(s, strlen(s), NULL));
    s = "I CANNOT   assist with this request";
    CHECK(compare_is_refusal(s, strlen(s), NULL));  /* case and spacing */
    s = "Well, I can\xE2\x80\x99t help with that one.";
    CHECK(compare_is_refusal(s, strlen(s), NULL));  /* typographic apostrophe */
    s = "Sure! As an AI language model, I think...";
    CHECK(compare_is_refusal(s, strlen(s), NULL));  /* anywhere in the text */
    s = "I won't be able\nto do that";
    CHECK(compare_is_refusal(s, strlen(s), NULL));  /* a newline is a space */
    s = "Sure, here is the answer: 42.";
    CHECK(!compare_is_refusal(s, strlen(s), NULL));
    CHECK(!compare_is_refusal("I can't help", 12, NULL)); /* pattern cut by the end */
    CHECK(!compare_is_refusal("I can't help with", 16, NULL)); /* len honoured */
    CHECK(compare_is_refusal("I can't help with", 17, NULL));
    CHECK(!compare_is_refusal(NULL, 10, NULL));
    CHECK(!compare_is_refusal("", 0, NULL));

    /* custom patterns replace the defaults */
    const char *const pats[] = {"nope", NULL, "", "policy  forbids"};
    struct cmp_opts o = {pats, 4};
    CHECK(compare_is_refusal("NOPE.", 5, &o));
    s = "Our policy forbids it";
    CHECK(compare_is_refusal(s, strlen(s), &o));    /* pattern spaces collapse too */
    s = "I can't help with that";
    CHECK(!compare_is_refusal(s, strlen(s), &o));
    CHECK(!compare_is_refusal("anything", 8, &o)); /* NULL and "" patterns ignored */
    struct cmp_opts none = {pats, 0};
    CHECK(!compare_is_refusal("nope", 4, &none)); /* an empty list disables it */
    struct cmp_opts dflt = {NULL, 3};
    CHECK(compare_is_refusal(s, strlen(s), &dflt)); /* NULL list: defaults */

    /* what a match may start with: a space (any whitespace), an apostrophe
     * (also U+2019), an upper-case letter (either case), any byte */
    const char *const odd[] = {" no", "'tis", "X", "\xC3\xA9t\xC3\xA9"};
    struct cmp_opts op = {odd, 1};
    CHECK(compare_is_refusal("say\t\nNO", 9, &op));
    CHECK(!compare_is_refusal("no", 2, &op));
    op.refusal_patterns = odd + 1;
    s = "\xE2\x80\x99Tis so";
    CHECK(compare_is_refusal(s, strlen(s), &op));
    CHECK(compare_is_refusal("'TIS", 4, &op));
    CHECK(!compare_is_refusal("\xE2\x80tis", 5, &op));
    op.refusal_patterns = odd + 2;
    CHECK(compare_is_refusal("a x b", 5, &op));
    CHECK(compare_is_refusal("aXb", 3, &op));
    CHECK(!compare_is_refusal("abc", 3, &op));
    op.refusal_patterns = odd + 3;
    s = "un \xC3\x89t\xC3\xA9 / \xC3\xA9t\xC3\xA9";
    CHECK(compare_is_refusal(s, strlen(s), &op));
    CHECK(!compare_is_refusal(s, strlen(s) - 1, &op));

    /* through compare_answers, for each side, with the options */
    struct cmp_answer a = ok("I cannot help with that."), b = ok("Here you go.");
    struct cmp_result r = cmp(a, b);
    CHECK(r.refusal_a && !r.refusal_b);
    r = cmp(b, a);
    CHECK(!r.refusal_a && r.refusal_b);
    CHECK_EQ_INT(compare_answers(&a, &b, &o, &r), 0);
    CHECK(!r.refusal_a && !r.refusal_b);
    /* a failed leg's text is still checked */
    a.ok = false;
    a.status = 400;
    a.error = "http_4xx";
    r = cmp(a, b);
    CHECK(r.refusal_a && !r.status_agree);
}

static void check_all_na(const struct cmp_result *r)
{
    CHECK_EQ_INT(r->finish_agree, -1);
    CHECK_EQ_INT(r->exact, -1);
    CHECK_NEAR(r->edit_sim, -1);
    CHECK_NEAR(r->rouge_l, -1);
    CHECK_NEAR(r->length_ratio, -1);
    CHECK_EQ_INT(r->json_valid, -1);
    CHECK_EQ_INT(r->json_same, -1);
    CHECK_EQ_INT(r->tool_agree, -1);
}

static void test_status(void)
{
    struct cmp_result r = cmp(ok("x"), ok("y"));
    CHECK(r.status_agree);
    struct cmp_answer ok201 = ok("x");
    ok201.status = 201;
    CHECK(cmp(ok("x"), ok201).status_agree);       /* success is success */

    r = cmp(failed(504, "timeout"), failed(504, "timeout"));
    CHECK(r.status_agree);
    check_all_na(&r);
    CHECK(!r.refusal_a && !r.refusal_b);
    CHECK(cmp(failed(0, "connect"), failed(0, "connect")).status_agree);
    CHECK(cmp(failed(500, NULL), failed(500, NULL)).status_agree);
    CHECK(!cmp(failed(0, "connect"), failed(0, "timeout")).status_agree);
    CHECK(!cmp(failed(500, "http_5xx"), failed(503, "http_5xx")).status_agree);
    CHECK(!cmp(failed(500, "http_5xx"), failed(500, NULL)).status_agree);

    /* one leg failed: disagree, every content field n/a even with JSON,
     * tool calls and the same text on both sides */
    struct cmp_answer a = ok("{\"a\":1}"), b = ok("{\"a\":1}");
    a.tool_calls = b.tool_calls = "[{\"name\":\"f\"}]";
    a.tool_len = b.tool_len = strlen(a.tool_calls);
    r = cmp(a, b);
    CHECK_EQ_INT(r.exact, 1);
    CHECK_EQ_INT(r.json_same, 1);
    CHECK_EQ_INT(r.tool_agree, 1);
    b.ok = false;
    b.status = 200;
    b.error = "closed";                            /* cut mid-answer */
    r = cmp(a, b);
    CHECK(!r.status_agree);
    check_all_na(&r);
    r = cmp(b, a);
    CHECK(!r.status_agree);
    check_all_na(&r);
}


/* ------------------------------------------- bit-parallel vs the plain DP */

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint64_t rnd(void)
{
    /* xorshift64*: reproducible, no libc state */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* A token from an alphabet of k symbols.  Small numbers are fine as tokens:
 * only equality matters, but spread them so the token map sees collisions
 * in its low bits too. */
static uint64_t sym(size_t v) { return (uint64_t)v << 40 | (uint64_t)v; }

static int dist_failures;

/* compare_distances against the reference on a and b, both orders */
static void check_dist(const uint64_t *a, size_t na, const uint64_t *b, size_t nb, const char *what)
{
    size_t lev, lcs, rlev, rlcs, lev2, lcs2;
    int rc = compare_distances(a, na, b, nb, &lev, &lcs);
    int rc2 = compare_distances(b, nb, a, na, &lev2, &lcs2);
    int rrc = compare_ref_dp(a, na, b, nb, &rlev, &rlcs);
    unit_checks++;
    if (rc != 0 || rc2 != 0 || rrc != 0 || lev != rlev || lcs != rlcs || lev2 != rlev ||
        lcs2 != rlcs) {
        unit_failures++;
        if (dist_failures++ < 10)
            fprintf(stderr, "%s:%d: %s, %zu x %zu tokens: lev %zu/%zu lcs %zu/%zu, reference lev %zu lcs %zu\n",
                    __FILE__, __LINE__, what, na, nb, lev, lev2, lcs, lcs2, rlev, rlcs);
    }
    /* the public metrics are the same formulas on the same integers */
    size_t m = na > nb ? na : nb;
    double es = m ? 1.0 - (double)rlev / (double)m : 1.0;
    double rl = na + nb ? 2.0 * (double)rlcs / ((double)na + (double)nb) : 1.0;
    CHECK(compare_edit_sim(a, na, b, nb) == es);
    CHECK(compare_rouge_l(a, na, b, nb) == rl);
}

/* b = a with about pct% of its tokens edited (substituted, deleted, or a
 * token inserted), drawn from an alphabet of k; returns b's length */
static size_t mutate(const uint64_t *a, size_t na, uint64_t *b, size_t cap, unsigned pct, size_t k)
{
    size_t nb = 0;
    for (size_t i = 0; i < na && nb < cap; i++) {
        if (rnd_below(100) >= pct) {
            b[nb++] = a[i];
            continue;
        }
        switch (rnd_below(3)) {
        case 0: b[nb++] = sym(rnd_below(k)); break;             /* substitute */
        case 1: break;                                           /* delete */
        default:                                                 /* insert */
            b[nb++] = sym(rnd_below(k));
            if (nb < cap) b[nb++] = a[i];
        }
    }
    return nb;
}

static void test_bit_parallel(void)
{
    /* the lengths where blocks begin and end, and long ones */
    static const size_t lens[] = {0, 1, 2, 3, 31, 63, 64, 65, 127, 128, 129, 191, 192, 193, 300, 1000, 1500};
    static const size_t alphabets[] = {1, 2, 4, 26, 1000000};
    enum { NL = sizeof lens / sizeof lens[0], CAP = 4200 };
    uint64_t *a = malloc(CAP * sizeof *a), *b = malloc(CAP * sizeof *b);
    if (!a || !b) abort();

    /* every pair of lengths, random over small and large alphabets; the
     * first and last tokens are made to differ (when both have them) so
     * that prefix and suffix stripping leave the whole arrays to the
     * bit-parallel code */
    for (size_t ai = 0; ai < NL; ai++)
        for (size_t bi = 0; bi < NL; bi++) {
            size_t na = lens[ai], nb = lens[bi];
            if (na * nb > 300 * 1500) continue; /* the long ones below */
            size_t k = alphabets[rnd_below(sizeof alphabets / sizeof alphabets[0])];
            for (size_t i = 0; i < na; i++) a[i] = sym(rnd_below(k));
            for (size_t i = 0; i < nb; i++) b[i] = sym(rnd_below(k));
            if (na && nb) {
                a[0] = sym(k + 1);
                b[0] = sym(k + 2);
                a[na - 1] = sym(k + 3);
                b[nb - 1] = sym(k + 4);
            }
            check_dist(a, na, b, nb, "random");
        }

    /* many short random pairs of random lengths, alphabets 1..6 */
    for (int t = 0; t < 3000; t++) {
        size_t na = rnd_below(200), nb = rnd_below(200), k = 1 + rnd_below(6);
        for (size_t i = 0; i < na; i++) a[i] = sym(rnd_below(k));
        for (size_t i = 0; i < nb; i++) b[i] = sym(rnd_below(k));
        check_dist(a, na, b, nb, "short random");
    }

    /* realistic: b is a with 1-40% of tokens edited, 1000-4000 tokens */
    static const size_t big[] = {1000, 1500, 1500, 2049, 4000};
    for (size_t t = 0; t < sizeof big / sizeof big[0]; t++) {
        size_t na = big[t], k = t == 2 ? 3 : 5000;
        for (size_t i = 0; i < na; i++) a[i] = sym(rnd_below(k));
        size_t nb = mutate(a, na, b, CAP, 1 + (unsigned)rnd_below(40), k);
        check_dist(a, na, b, nb, "edited");
    }

    /* adversarial shapes */
    size_t n = 1500;
    for (size_t i = 0; i < n; i++) a[i] = b[i] = sym(7);
    check_dist(a, n, b, n - 1, "one symbol, lengths differ by 1");
    check_dist(a, 64, b, 129, "one symbol, 64 x 129");
    for (size_t i = 0; i < n; i++) {
        a[i] = sym(i);
        b[i] = sym(n + i);
    }
    check_dist(a, n, b, n, "disjoint");
    check_dist(a, 65, b, 1000, "disjoint 65 x 1000");
    for (size_t i = 0; i < n; i++) b[i] = a[n - 1 - i];
    check_dist(a, n, b, n, "reversed");
    for (size_t i = 0; i < n; i++) {
        a[i] = sym(i % 64);
        b[i] = sym(i % 65);
    }
    check_dist(a, n, b, n, "periods 64 and 65");
    for (size_t i = 0; i < n; i++) {
        a[i] = sym(i % 2);
        b[i] = sym((i + 1) % 2);
    }
    check_dist(a, n, b, n, "alternating, shifted by one");
    for (size_t i = 0; i < n; i++) b[i] = sym(i < n / 2 ? 0 : 1);
    check_dist(a, n, b, n, "alternating vs two runs");
    /* a rotation: a long common run, far from both ends */
    for (size_t i = 0; i < n; i++) {
        a[i] = sym(i);
        b[i] = sym((i + 100) % n);
    }
    check_dist(a, n, b, n, "rotated by 100");
    /* the same token everywhere but one block boundary */
    for (size_t i = 0; i < 200; i++) a[i] = b[i] = sym(1);
    a[63] = sym(2);
    b[64] = sym(2);
    check_dist(a, 200, b, 200, "one mark moved across a block boundary");
    /* a common prefix and suffix around a random middle */
    for (size_t i = 0; i < n; i++) a[i] = b[i] = sym(rnd_below(4));
    for (size_t i = 600; i < 900; i++) b[i] = sym(rnd_below(4));
    check_dist(a, n, b, n, "edited middle");
    check_dist(a, n, b, n - 300, "edited middle, b shorter");
    CHECK_EQ_INT(dist_failures, 0);
    free(a);
    free(b);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n bytes of words w0..w9 from a fixed LCG, space-separated */
static char *words(size_t n, uint32_t seed)
{
    char *s = malloc(n + 1);
    if (!s) abort();
    for (size_t i = 0; i + 3 <= n; i += 3) {
        seed = seed * 1664525u + 1013904223u;
        s[i] = 'w';
        s[i + 1] = (char)('0' + (seed >> 24) % 10);
        s[i + 2] = ' ';
    }
    for (size_t i = n - n % 3; i < n; i++) s[i] = ' ';
    s[n] = '\0';
    return s;
}

static void test_large(void)
{
    const size_t n = 200 * 1024;                   /* 68266 words of 3 bytes */
    size_t nw = n / 3;
    char *a = words(n, 1), *b = words(n, 1), *c = words(n, 2);
    CHECK_EQ_INT(ntok(a), nw);

    /* one change at the start: within the cap, 1 substitution in
     * COMPARE_MAX_TOKENS (nw is well above the cap) */
    const double cap = COMPARE_MAX_TOKENS;
    CHECK(nw > COMPARE_MAX_TOKENS + 1000);
    b[1] = b[1] == '0' ? '1' : '0';
    double t0 = now();
    struct cmp_result r = cmp_text(a, b);
    CHECK_EQ_INT(r.exact, 0);
    CHECK_NEAR(r.edit_sim, 1.0 - 1.0 / cap);      /* 1 - 1/max(cap, cap) */
    CHECK_NEAR(r.rouge_l, (cap - 1.0) / cap);     /* LCS cap-1: 2*(cap-1)/(2*cap) */
    CHECK_NEAR(r.length_ratio, 1.0);              /* uncapped: nw/nw */

    /* a change after the cap is invisible to the capped metrics, but the
     * length ratio counts every token */
    b[1] = a[1];
    size_t after = 3 * (COMPARE_MAX_TOKENS + 1000) + 1;
    b[after] = b[after] == '0' ? '1' : '0';
    b[n - 1] = 'x';                               /* a 68267th token */
    r = cmp_text(a, b);
    CHECK_EQ_INT(r.exact, 0);
    CHECK_NEAR(r.edit_sim, 1.0);
    CHECK_NEAR(r.rouge_l, 1.0);
    CHECK_NEAR(r.length_ratio, (double)(nw + 1) / (double)nw);

    /* unrelated texts: the whole capped matrix, the worst case */
    r = cmp_text(a, c);
    CHECK(r.edit_sim > 0.0 && r.edit_sim < 1.0);
    CHECK(r.rouge_l > 0.0 && r.rouge_l < 1.0);
    CHECK_NEAR(r.length_ratio, 1.0);

    /* identical: exact, linear */
    r = cmp_text(a, a);
    CHECK_EQ_INT(r.exact, 1);
    CHECK_NEAR(r.edit_sim, 1.0);

    /* one huge unbroken token and a huge punctuation run */
    memset(c, 'z', n);
    r = cmp_text(c, a);
    CHECK_NEAR(r.length_ratio, (double)nw);       /* nw tokens / 1 token */
    memset(c, '-', n);
    CHECK_EQ_INT(ntok(c), n);
    r = cmp_text(c, a);
    CHECK(r.edit_sim >= 0.0 && r.edit_sim < 0.01);
    CHECK_EQ_INT(r.json_valid, -1);

    /* big JSON: a 200 KB array of objects and a deep one */
    char *j = malloc(n + 64), *k = malloc(n + 64);
    if (!j || !k) abort();
    size_t o = 0;
    j[o++] = '[';
    while (o + 16 < n) o += (size_t)sprintf(j + o, "{\"k%zu\":1},", o % 7);
    j[o - 1] = ']';
    j[o] = '\0';
    memcpy(k, j, o + 1);
    k[3] = 'q';                                   /* first element's key */
    r = cmp_text(j, j);
    CHECK_EQ_INT(r.json_same, 1);
    r = cmp_text(j, k);
    CHECK_EQ_INT(r.json_same, 0);
    o = 0;
    for (int d = 0; d < 120; d++) o += (size_t)sprintf(j + o, "{\"a\":");
    j[o++] = '1';
    for (int d = 0; d < 120; d++) j[o++] = '}';
    j[o] = '\0';
    r = cmp_text(j, j);
    CHECK_EQ_INT(r.json_same, 1);
    double el = now() - t0;
    CHECK(el < 3.0);
    printf("large inputs: %.0f ms\n", el * 1000);
    free(j);
    free(k);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    test_normalise();
    test_tokens();
    test_metrics();
    test_finish();
    test_json();
    test_tools();
    test_refusal();
    test_status();
    test_bit_parallel();
    test_large();
    UNIT_DONE();
}
