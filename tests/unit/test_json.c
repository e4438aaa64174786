/* test_json.c — validator corpora (JSONTestSuite-style y_/n_ cases), error
 * offsets, lookups, numbers, unescaping and escaping. */
#include "json.h"
#include "unit.h"

#include <stdbool.h>
#include <stdint.h>

struct sample {
    const char *s;
    size_t n;
};
#define T(lit) {lit, sizeof(lit) - 1}

/* must be accepted */
static const struct sample yes[] = {
    /* structure */
    T("[]"), T("{}"), T("[[]   ]"), T("[\"\"]"), T("[false]"), T("[null]"), T("[true]"),
    T("[null, 1, \"1\", {}]"), T("[1\n]"), T(" [1]"), T("[1,null,null,null,2]"), T("[2] "),
    T("[\"a\"]\n"), T(" [] "), T("\t\r\n [ \t\r\n 1 \t\r\n , \t\r\n 2 \t\r\n ] \t\r\n"),
    T("null"), T("true"), T("false"), T("42"), T("-0.1"), T("\"asd\""), T("\"\""), T(" 0 "),
    T("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"),
    /* objects */
    T("{\"asd\":\"sdf\", \"dfg\":\"fgh\"}"), T("{\"asd\":\"sdf\"}"), T("{\"a\":\"b\",\"a\":\"c\"}"),
    T("{\"a\":\"b\",\"a\":\"b\"}"), T("{\"\":0}"), T("{\"foo\\u0000bar\": 42}"),
    T("{ \"min\": -1.0e+28, \"max\": 1.0e+28 }"), T("{\"x\":[{\"id\": \"xxx\"}], \"id\": \"xxx\"}"),
    T("{\"a\":[]}"), T("{\n\"a\": \"b\"\n}"), T("{\"title\":\"\\u041f\\u043e\\u043b\\u0442\\u043e\\u0440\\u0430 \"}"),
    T("{\"a\":{\"b\":{\"c\":[1,{\"d\":null}]}}}"),
    /* numbers */
    T("[123e65]"), T("[0e+1]"), T("[0e1]"), T("[ 4]"), T("[-0.000000000000000000000000000000000001]\n"),
    T("[20e1]"), T("[-0]"), T("[-123]"), T("[-1]"), T("[1E22]"), T("[1E-2]"), T("[1E+2]"),
    T("[123e45]"), T("[123.456e78]"), T("[1e-2]"), T("[1e+2]"), T("[123]"), T("[123.456789]"),
    T("123"), T("-0"), T("0.5"), T("1e999"), T("-1e-999"), T("[100000000000000000000]"),
    T("[1.0]"), T("[0.0e-0]"), T("0E0"),
    /* strings */
    T("[\"\\u0060\\u012a\\u12AB\"]"), T("[\"\\uD801\\udc37\"]"), T("[\"\\ud83d\\ude39\\ud83d\\udc8d\"]"),
    T("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]"), T("[\"\\\\u0000\"]"), T("[\"\\\"\"]"), T("[\"a/*b*/c/*d//e\"]"),
    T("[\"\\\\a\"]"), T("[\"\\\\n\"]"), T("[\"\\u0012\"]"), T("[\"\\uFFFF\"]"), T("[\"asd\"]"),
    T("[\"\\uDBFF\\uDFFF\"]"), T("[\"new\\u00A0line\"]"), T("[\"\xf4\x8f\xbf\xbf\"]"),
    T("[\"\xef\xbf\xbf\"]"), T("[\"\\u0000\"]"), T("[\"\\u002c\"]"), T("[\"\xcf\x80\"]"),
    T("[\"\xf0\x9b\xbf\xbf\"]"), T("[\"asd \"]"), T("\" \""), T("[\"\\uD834\\uDd1e\"]"),
    T("[\"\\u0821\"]"), T("[\"\\u0123\"]"), T("[\"\xe2\x80\xa8\"]"), T("[\"\xe2\x80\xa9\"]"),
    T("[\"\\u0061\\u30af\\u30EA\\u30b9\"]"), T("[\"new\\u000Aline\"]"), T("[\"\x7f\"]"),
    T("[\"\\uA66D\"]"), T("[\"\\u005C\"]"), T("[\"\xe2\x8d\x82\xe3\x88\xb4\xe2\x8d\x82\"]"),
    T("[\"\\uDBFF\\uDFFE\"]"), T("[\"\\uD83F\\uDFFE\"]"), T("[\"\\u200B\"]"), T("[\"\\u2064\"]"),
    T("[\"\\uFDD0\"]"), T("[\"\\uFFFE\"]"), T("[\"\\u0022\"]"), T("[\"\xe2\x82\xac\xf0\x9d\x84\x9e\"]"),
    T("[\"aa\"]"), T("[\"\xc2\x80\"]"), T("[\"\xdf\xbf\"]"), T("[\"\xe0\xa0\x80\"]"),
    T("[\"\xed\x9f\xbf\"]"), T("[\"\xee\x80\x80\"]"), T("[\"\xf0\x90\x80\x80\"]"),
    T("[\"\xf3\xbf\xbf\xbf\"]"), T("\"0123456789abcdef0123456789abcdef\\\"0123456789abcdef\""),
    T("\"long ascii run long ascii run long ascii run long ascii run\""),
};

/* must be rejected */
static const struct sample no[] = {
    /* arrays */
    T("[1 true]"), T("[a\xe5]"), T("[\"\": 1]"), T("[\"\"],"), T("[,1]"), T("[1,,2]"), T("[\"x\",,]"),
    T("[\"x\"]]"), T("[\"\",]"), T("[\"x\""), T("[x"), T("[3[4]]"), T("[\xff]"), T("[1:2]"), T("[,]"),
    T("[-]"), T("[   , \"\"]"), T("[\"a\",\n4\n,1,"), T("[1,]"), T("[1,,]"), T("[\"\va\"\\f]"), T("[*]"),
    T("[\"\""), T("[1,"), T("[1,\n1\n,1"), T("[{}"), T("[fals]"), T("[nul]"), T("[tru]"),
    T("[1,]\n"), T("[ ]]"), T("]"), T("["), T("[[]"), T("[]]"), T("[1}"), T("{]"),
    /* numbers */
    T("123\0"), T("[++1234]"), T("[+1]"), T("[+Inf]"), T("[-01]"), T("[-1.0.]"), T("[-2.]"),
    T("[-NaN]"), T("[.-1]"), T("[.2e-3]"), T("[0.1.2]"), T("[0.3e+]"), T("[0.3e]"), T("[0.e1]"),
    T("[0E+]"), T("[0E]"), T("[0e+]"), T("[0e]"), T("[1.0e+]"), T("[1.0e-]"), T("[1.0e]"),
    T("[1 000.0]"), T("[1eE2]"), T("[2.e+3]"), T("[2.e-3]"), T("[2.e3]"), T("[9.e+]"), T("[Inf]"),
    T("[NaN]"), T("[\xef\xbc\x91]"), T("[1+2]"), T("[0x1]"), T("[0x42]"), T("[Infinity]"),
    T("[0e+-1]"), T("[-123.123foo]"), T("[123\xe5]"), T("[1e1\xe5]"), T("[0\xe5]"),
    T("[-Infinity]"), T("[-foo]"), T("[- 1]"), T("[-012]"), T("[-.123]"), T("[-1x]"), T("[1ea]"),
    T("[1e\xe5]"), T("[1.]"), T("[.123]"), T("[1.2a-3]"), T("[1.8011670033376514H-308]"),
    T("[012]"), T("00"), T("01"), T("-"), T("1."), T("1e"), T("1e+"), T("+0"), T("0x0"), T(".5"),
    T("1.5e"), T("- 0"), T("--1"), T("1.e5"),
    /* objects */
    T("{[: \"x\"}"), T("{\"x\", null}"), T("{\"x\"::\"b\"}"),
    T("{\xf0\x9f\x87\xa8\xf0\x9f\x87\xad}"), T("{\"a\":\"a\" 123}"), T("{key: 'value'}"),
    T("{\"\xb9\":\"0\",}"), T("{\"a\" b}"), T("{:\"b\"}"), T("{\"a\" \"b\"}"), T("{\"a\":"), T("{\"a\""),
    T("{1:1}"), T("{9999E9999:1}"), T("{null:null,null:null}"), T("{\"id\":0,,,,,}"),
    T("{'a':0}"), T("{\"id\":0,}"), T("{\"a\":\"b\"}/**/"), T("{\"a\":\"b\"}/**//"),
    T("{\"a\":\"b\"}//"), T("{\"a\":\"b\"}/"), T("{\"a\":\"b\",,\"c\":\"d\"}"), T("{a: \"b\"}"),
    T("{\"a\":\"a"), T("{ \"foo\" : \"bar\", \"a\" }"), T("{\"a\":\"b\"}#"), T(" {"), T("{"),
    T("{,"), T("{["), T("{\"a"), T("{'a'"), T("{}}"), T("{\"\":"), T("{\"a\":/*comment*/\"b\"}"),
    T("{\"a\": true} \"x\""), T("{\"x\": true,"), T("{\"asd\":\"asd\""), T("{\"a\":1,}"),
    T("{\"a\" : 1 , }"), T("{\"a\":}"), T("{\"a\"}"), T("{,\"a\":1}"), T("{\"a\":1\"b\":2}"),
    /* strings */
    T("[\"\\uD800\\\"]"), T("[\"\\uD800\\u\"]"), T("[\"\\uD800\\u1\"]"), T("[\"\\uD800\\u1x\"]"),
    T("[\xc3\xa9]"), T("[\"\\\0\"]"), T("[\"\\\\\\\"]"), T("[\"\\x00\"]"), T("[\"\\\"]"),
    T("[\"\\\xe5\"]"), T("[\"\\a\"]"), T("[\"\\uqqqq\"]"), T("[\"\\u\xe5\"]"), T("[\"\\uD834\\uDd\"]"),
    T("[\"\\u00A\"]"), T("[\"\\uD800\\uD800\\x\"]"), T("[\\u0020\"asd\"]"), T("[\\n]"), T("\""),
    T("['single quote']"), T("abc"), T("[\"\\"), T("[\"a\0a\"]"), T("[\"new\nline\"]"),
    T("[\"\t\"]"), T("\"\\UA66D\""), T("\"\"x"), T("\"\x1f\""), T("\"\x7f\x01\""), T("\"\\'\""),
    T("\"\\u12\""), T("\"abc"), T("\"\\"), T("\"\\u"),
    /* lone or misordered surrogate escapes */
    T("[\"\\uD800\"]"), T("[\"\\uDFAA\"]"), T("[\"\\uDC00\\uD800\"]"), T("[\"\\uD800\\uD800\"]"),
    T("[\"\\uD800abc\"]"), T("[\"\\uD800\\n\"]"), T("\"\\udbff\""), T("\"\\uDBFF\\u0041\""),
    T("\"\\uD800\\uE000\""), T("\"\\uD800\\uDBFF\""),
    /* ill-formed UTF-8 */
    T("[\"\xed\xa0\x80\"]"), T("[\"\xed\xbf\xbf\"]"), T("[\"\xc0\xaf\"]"), T("[\"\xc1\xbf\"]"),
    T("[\"\xe0\x80\xaf\"]"), T("[\"\xe0\x9f\xbf\"]"), T("[\"\xf0\x80\x80\xaf\"]"),
    T("[\"\xf0\x8f\xbf\xbf\"]"), T("[\"\xfc\x80\x80\x80\x80\xaf\"]"), T("[\"\xf4\x90\x80\x80\"]"),
    T("[\"\xf4\xbf\xbf\xbf\"]"), T("[\"\xf5\x80\x80\x80\"]"), T("[\"\xf8\x88\x80\x80\x80\"]"),
    T("[\"\xff\"]"), T("[\"\xfe\"]"), T("[\"\x81\"]"), T("[\"\xbf\"]"), T("[\"\xe9\"]"),
    T("[\"\xc2\"]"), T("[\"\xe2\x82\"]"), T("[\"\xf0\x90\x80\"]"), T("[\"\xc2\x41\"]"),
    T("[\"\xe2\x28\xa1\"]"), T("[\"\xf0\x90\x28\xbc\"]"), T("\"\xc2"), T("\"\xf0\x90\x80"),
    T("\"0123456789abcdef0123456789\xc3\""),
    /* structure */
    T(""), T(" "), T("\t\r\n"), T("<.>"), T("[<null>]"), T("[1]x"), T("[\"asd]"), T("a\xc3\xa5"),
    T("[True]"), T("1]"), T("[][]"), T("[][]]"), T("\xef\xbb\xbf"), T("\xef\xbb\xbf{}"), T("\0"),
    T("2 @"), T("['"), T("[,"), T("[{"), T("[\"a"), T("[\"a\""), T("[\"\\{[\"\\{[\"\\{[\"\\{"),
    T("\xe9"), T("*"), T("{\"a\":\"b\"}#{}"), T("[1"), T("[ false, nul"), T("[ true, fals"),
    T("[ false, tru"), T("\xc3\xa5"), T("[\xe2\x81\xa0]"), T("[\x0c]"), T("[\\u000A\"\"]"),
    T("<!DOCTYPE html>"), T("1 2"), T("\"a\" \"b\""), T("{} {}"), T("nul"), T("nulll"), T("truee"),
    T("True"), T("NULL"), T("[\"a\"\x0f]"), T("\x0b[]"), T("[]\x0c"), T("\xc2\xa0[]"), T("'a'"),
};

static void test_corpora(void)
{
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        struct json_error err = {0, NULL};
        struct json_span root;
        int rc = json_validate(yes[i].s, yes[i].n, &root, &err);
        if (rc != 0)
            fprintf(stderr, "yes[%zu] rejected at %zu (%s): %.*s\n", i, err.offset, err.message,
                    (int)yes[i].n, yes[i].s);
        CHECK_EQ_INT(rc, 0);
        CHECK(root.p != NULL && root.type != JSON_INVALID);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        struct json_error err = {(size_t)-1, NULL};
        struct json_span root = {"x", 1, JSON_NULL};
        int rc = json_validate(no[i].s, no[i].n, &root, &err);
        if (rc == 0) fprintf(stderr, "no[%zu] accepted: %.*s\n", i, (int)no[i].n, no[i].s);
        CHECK_EQ_INT(rc, -1);
        CHECK(err.offset <= no[i].n);
        CHECK(err.message != NULL && err.message[0] != '\0');
        CHECK(root.p == NULL && root.type == JSON_INVALID);
    }
    /* NULL err / root are allowed */
    CHECK_EQ_INT(json_validate("[1]", 3, NULL, NULL), 0);
    CHECK_EQ_INT(json_validate("[1", 2, NULL, NULL), -1);
    CHECK_EQ_INT(json_validate(NULL, 0, NULL, NULL), -1);
    /* the length bounds the text: a following NUL or garbage is not read */
    CHECK_EQ_INT(json_validate("[1]xyz", 3, NULL, NULL), 0);
    CHECK_EQ_INT(json_validate("\"abc\"", 4, NULL, NULL), -1);
}

static void test_depth(void)
{
    char buf[2 * (JSON_MAX_DEPTH + 2) + 8];
    struct json_error err;
    /* exactly JSON_MAX_DEPTH levels: fine */
    size_t n = 0;
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf[n++] = '[';
    for (int i = 0; i < JSON_MAX_DEPTH; i++) buf[n++] = ']';
    CHECK_EQ_INT(json_validate(buf, n, NULL, &err), 0);
    /* one more: an error at the opening bracket that is one too deep */
    n = 0;
    for (int i = 0; i <= JSON_MAX_DEPTH; i++) buf[n++] = '[';
    for (int i = 0; i <= JSON_MAX_DEPTH; i++) buf[n++] = ']';
    CHECK_EQ_INT(json_validate(buf, n, NULL, &err), -1);
    CHECK_EQ_INT(err.offset, JSON_MAX_DEPTH);
    CHECK_EQ_STR(err.message, "nesting too deep");
    /* objects and arrays mixed, the bit stack must remember which is which
     * across its 64-bit words */
    static char mix[JSON_MAX_DEPTH * 8 + 8];
    n = 0;
    for (int i = 0; i < JSON_MAX_DEPTH; i++) {
        if (i % 3 == 0) {
            memcpy(mix + n, "{\"k\":", 5);
            n += 5;
        } else {
            mix[n++] = '[';
        }
    }
    mix[n++] = '1';
    for (int i = JSON_MAX_DEPTH - 1; i >= 0; i--) mix[n++] = i % 3 == 0 ? '}' : ']';
    struct json_span root;
    CHECK_EQ_INT(json_validate(mix, n, &root, &err), 0);
    CHECK_EQ_INT(root.type, JSON_OBJECT);
    /* swap one closing bracket for the wrong kind, deep inside */
    mix[n - 100] = mix[n - 100] == ']' ? '}' : ']';
    CHECK_EQ_INT(json_validate(mix, n, &root, &err), -1);
    CHECK_EQ_INT(err.offset, n - 100);
    /* a deep but never-closed text: end of input, not a crash */
    memset(buf, '[', sizeof buf);
    CHECK_EQ_INT(json_validate(buf, JSON_MAX_DEPTH, NULL, &err), -1);
    CHECK_EQ_INT(err.offset, JSON_MAX_DEPTH);
}

static void test_error_offsets(void)
{
    static const struct {
        const char *s;
        size_t off;
        const char *msg;
    } cases[] = {
        {"", 0, "unexpected end of input"},
        {"   ", 3, "unexpected end of input"},
        {"[1,]", 3, "trailing comma"},
        {"[1, ]", 4, "trailing comma"},
        {"{\"a\":1,}", 7, "trailing comma"},
        {"[\"a\x01\"]", 3, "control character in string"},
        {"{\"a\" 1}", 5, "expected ':'"},
        {"{1:1}", 1, "expected string key"},
        {"[01]", 2, "leading zero"},
        {"-01", 2, "leading zero"},
        {"tru", 3, "unexpected end of input"},
        {"trux", 3, "invalid literal"},
        {"[nulL]", 4, "invalid literal"},
        {"[\"\\x\"]", 3, "invalid escape"},
        {"\"\\u12G4\"", 5, "invalid \\u escape"},
        {"\"\\u12", 5, "invalid \\u escape"},
        {"[\"ab\\uD800\"]", 4, "unpaired surrogate"},
        {"[\"ab\\uDC00\"]", 4, "unpaired surrogate"},
        {"\"\\uD800\\u0041\"", 1, "unpaired surrogate"},
        {"\"\\uD800\\uDC0Z\"", 12, "invalid \\u escape"},
        {"[1 2]", 3, "expected ',' or ']'"},
        {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"},
        {"[1]x", 3, "trailing characters"},
        {"[1] ]", 4, "trailing characters"},
        {"[\"\xc0\xaf\"]", 2, "invalid UTF-8"},
        {"[\"ok\xe2\x82\"]", 4, "invalid UTF-8"},
        {"\"0123456789abcdef\xed\xa0\x80\"", 17, "invalid UTF-8"},
        {"\"0123456789abcdef0123456789abcdef\n\"", 33, "control character in string"},
        {"\"abc", 4, "unterminated string"},
        {"\"abc\\", 5, "unterminated string"},
        {"-", 1, "unexpected end of input"},
        {"-x", 1, "expected digit"},
        {"1.", 2, "expected digit after '.'"},
        {"1.e3", 2, "expected digit after '.'"},
        {"1e", 2, "expected digit in exponent"},
        {"1e+x", 3, "expected digit in exponent"},
        {"[+1]", 1, "unexpected character"},
        {"{\"a\":}", 5, "unexpected character"},
        {"[1,", 3, "unexpected end of input"},
        {"{\"a\"", 4, "unexpected end of input"},
        {"\xef\xbb\xbf[]", 0, "unexpected character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct json_error err = {(size_t)-1, NULL};
        int rc = json_validate(cases[i].s, strlen(cases[i].s), NULL, &err);
        CHECK_EQ_INT(rc, -1);
        if (err.offset != cases[i].off || !err.message || strcmp(err.message, cases[i].msg) != 0)
            fprintf(stderr, "case %zu \"%s\": got %zu \"%s\", want %zu \"%s\"\n", i, cases[i].s,
                    err.offset, err.message ? err.message : "(null)", cases[i].off, cases[i].msg);
        CHECK_EQ_INT(err.offset, cases[i].off);
        CHECK_EQ_STR(err.message, cases[i].msg);
    }
}

static struct json_span parse(const char *s)
{
    struct json_span root;
    struct json_error err;
    if (json_validate(s, strlen(s), &root, &err) != 0) {
        fprintf(stderr, "parse failed at %zu: %s\n", err.offset, err.message);
        root.p = NULL;
        root.len = 0;
        root.type = JSON_INVALID;
    }
    return root;
}

static bool span_is(const struct json_span *v, const char *text)
{
    return v->p && v->len == strlen(text) && memcmp(v->p, text, v->len) == 0;
}

static void test_lookups(void)
{
    const char *doc =
        " {\"model\" : \"gpt-4o\", \"stream\":true, \"n\":3, \"temperature\": 0.25,\n"
        "  \"messages\": [ {\"role\":\"system\",\"content\":\"be [brief] {ok}\"},\n"
        "                {\"role\":\"user\",\"content\":\"say \\\"hi\\\" \\\\\"} ],\n"
        "  \"mo\\u0064el\": \"escaped-wins\",\n"
        "  \"nested\": {\"a\": {\"b\": [10, [20, 21], {\"c\": null}]}},\n"
        "  \"empty_obj\": {}, \"empty_arr\": [ ], \"f\": false,\n"
        "  \"\": \"empty key\", \"k\\\"q\": 1, \"tab\\tkey\": 2, \"\\u00e9t\\u00E9\": \"summer\",\n"
        "  \"emoji\\ud83d\\ude00\": 5, \"slash\\/\": 6, \"stream\": false } ";
    struct json_span root = parse(doc);
    struct json_span v, w, k;
    CHECK_EQ_INT(root.type, JSON_OBJECT);
    CHECK(root.p == doc + 1 && root.p[root.len - 1] == '}');

    /* duplicate keys: the last occurrence wins, also when it is escaped */
    CHECK(json_get(&root, "model", &v) && span_is(&v, "\"escaped-wins\""));
    CHECK(json_get(&root, "stream", &v) && v.type == JSON_FALSE && !json_is_true(&v));
    CHECK(json_get(&root, "n", &v) && v.type == JSON_NUMBER && span_is(&v, "3"));
    CHECK(json_get(&root, "temperature", &v) && span_is(&v, "0.25"));
    CHECK(!json_get(&root, "missing", &v));
    CHECK(!json_get(&root, "mode", &v));
    CHECK(!json_get(&root, "modell", &v));
    CHECK(!json_get(&root, "Model", &v));
    /* escaped keys match their decoded form, and only that */
    CHECK(json_get(&root, "", &v) && span_is(&v, "\"empty key\""));
    CHECK(json_get(&root, "k\"q", &v) && span_is(&v, "1"));
    CHECK(!json_get(&root, "k\\\"q", &v));
    CHECK(json_get(&root, "tab\tkey", &v) && span_is(&v, "2"));
    CHECK(!json_get(&root, "tab\\tkey", &v));
    CHECK(json_get(&root, "\xc3\xa9t\xc3\xa9", &v) && span_is(&v, "\"summer\""));
    CHECK(json_get(&root, "emoji\xf0\x9f\x98\x80", &v) && span_is(&v, "5"));
    CHECK(json_get(&root, "slash/", &v) && span_is(&v, "6"));
    CHECK(!json_get(&root, "slash\\/", &v));

    /* arrays and nesting */
    CHECK(json_get(&root, "messages", &v) && v.type == JSON_ARRAY);
    CHECK_EQ_INT(json_count(&v), 2);
    CHECK(json_index(&v, 1, &w) && w.type == JSON_OBJECT);
    CHECK(json_get(&w, "content", &k) && json_str_eq(&k, "say \"hi\" \\"));
    CHECK(json_index(&v, 0, &w) && json_get(&w, "content", &k) && json_str_eq(&k, "be [brief] {ok}"));
    CHECK(!json_index(&v, 2, &w));
    CHECK(!json_index(&v, (size_t)-1, &w));
    CHECK(json_get(&root, "nested", &v) && json_get(&v, "a", &w) && json_get(&w, "b", &k));
    CHECK_EQ_INT(json_count(&k), 3);
    CHECK(json_index(&k, 1, &v) && span_is(&v, "[20, 21]") && json_count(&v) == 2);
    CHECK(json_index(&v, 1, &w) && span_is(&w, "21"));
    CHECK(json_index(&k, 2, &v) && json_get(&v, "c", &w) && w.type == JSON_NULL);
    CHECK(json_get(&root, "empty_obj", &v) && json_count(&v) == 0 && !json_get(&v, "x", &w));
    CHECK(json_get(&root, "empty_arr", &v) && json_count(&v) == 0 && !json_index(&v, 0, &w));
    CHECK(json_get(&root, "f", &v) && v.type == JSON_FALSE);

    /* wrong types are refused, not misread */
    CHECK(!json_index(&root, 0, &v));
    CHECK(json_get(&root, "messages", &v) && !json_get(&v, "role", &w));
    CHECK(json_get(&root, "n", &v) && json_count(&v) == 0 && !json_get(&v, "x", &w));
    CHECK(!json_get(NULL, "x", &v));
    CHECK(!json_get(&root, NULL, &v));
    struct json_span absent = {NULL, 0, JSON_INVALID};
    CHECK(!json_get(&absent, "x", &v) && json_count(&absent) == 0 && !json_is_true(&absent));
    /* out may be NULL: just a membership test */
    CHECK(json_get(&root, "nested", NULL));

    /* iteration */
    size_t it = 0, members = 0;
    int seen_stream = 0;
    while (json_next(&root, &it, &k, &v)) {
        members++;
        CHECK(k.type == JSON_STRING && k.p[0] == '"' && k.p[k.len - 1] == '"');
        if (json_str_eq(&k, "stream")) seen_stream++;
    }
    CHECK_EQ_INT(members, json_count(&root));
    CHECK_EQ_INT(members, 17);
    CHECK_EQ_INT(seen_stream, 2);
    CHECK(!json_next(&root, &it, &k, &v)); /* stays finished */

    struct json_span arr = parse("[ 1 , \"two\" ,[3],{\"4\":4} , null,true,false,-6.5e1 ]");
    static const enum json_type types[] = {JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT,
                                           JSON_NULL,   JSON_TRUE,   JSON_FALSE, JSON_NUMBER};
    static const char *texts[] = {"1", "\"two\"", "[3]", "{\"4\":4}", "null", "true", "false", "-6.5e1"};
    it = 0;
    size_t i = 0;
    while (json_next(&arr, &it, &k, &v)) {
        CHECK(k.p == NULL && k.type == JSON_INVALID);
        if (i < 8) {
            CHECK_EQ_INT(v.type, types[i]);
            CHECK(span_is(&v, texts[i]));
            CHECK(json_index(&arr, i, &w) && w.p == v.p && w.len == v.len);
        }
        i++;
    }
    CHECK_EQ_INT(i, 8);
    CHECK_EQ_INT(json_count(&arr), 8);
    it = 0;
    CHECK(json_next(&arr, &it, NULL, NULL)); /* key/val may be NULL */

    /* scalar roots */
    struct json_span s = parse("  \"str\"  ");
    CHECK(s.type == JSON_STRING && span_is(&s, "\"str\""));
    s = parse("-12");
    CHECK(s.type == JSON_NUMBER && span_is(&s, "-12"));
    it = 0;
    CHECK(!json_next(&s, &it, &k, &v));
}

static void test_numbers(void)
{
    static const struct {
        const char *s;
        bool ok;
        int64_t v;
    } ints[] = {
        {"0", true, 0},
        {"-0", true, 0},
        {"7", true, 7},
        {"-42", true, -42},
        {"1024", true, 1024},
        {"9223372036854775807", true, INT64_MAX},
        {"-9223372036854775808", true, INT64_MIN},
        {"9223372036854775808", false, 0},
        {"-9223372036854775809", false, 0},
        {"10000000000000000000", false, 0},
        {"99999999999999999999999", false, 0},
        {"1.0", false, 0},
        {"1e2", false, 0},
        {"1E2", false, 0},
        {"-0.5", false, 0},
        {"0.0", false, 0},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        struct json_span v = parse(ints[i].s);
        int64_t got = 12345;
        bool ok = json_to_i64(&v, &got);
        if (ok != ints[i].ok) fprintf(stderr, "json_to_i64(%s) = %d\n", ints[i].s, ok);
        CHECK(ok == ints[i].ok);
        if (ints[i].ok) CHECK(got == ints[i].v);
        else CHECK(got == 12345); /* untouched on failure */
    }
    /* in context: the span ends at the number */
    struct json_span doc = parse("{\"max_tokens\":1024,\"t\":0.5,\"s\":\"12\",\"b\":true}"), v;
    int64_t i64;
    double d;
    CHECK(json_get(&doc, "max_tokens", &v) && json_to_i64(&v, &i64) && i64 == 1024);
    CHECK(json_get(&doc, "t", &v) && !json_to_i64(&v, &i64) && json_to_double(&v, &d) && d == 0.5);
    CHECK(json_get(&doc, "s", &v) && !json_to_i64(&v, &i64) && !json_to_double(&v, &d));
    CHECK(json_get(&doc, "b", &v) && !json_to_i64(&v, &i64) && !json_to_double(&v, &d));

    static const struct {
        const char *s;
        bool ok;
        double v;
    } dbls[] = {
        {"0", true, 0.0},          {"-0", true, -0.0},       {"1.5e3", true, 1500.0},
        {"-0.25", true, -0.25},    {"1E-2", true, 0.01},     {"123456789012", true, 123456789012.0},
        {"1e-400", true, 0.0},     {"1e400", false, 0},      {"-1e400", false, 0},
        {"0.1", true, 0.1},        {"2.5E+1", true, 25.0},
    };
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++) {
        struct json_span n = parse(dbls[i].s);
        double got = -1;
        bool ok = json_to_double(&n, &got);
        CHECK(ok == dbls[i].ok);
        if (dbls[i].ok) CHECK(got == dbls[i].v);
    }
    /* a number longer than any stack buffer */
    static char longnum[600];
    longnum[0] = '1';
    longnum[1] = '.';
    memset(longnum + 2, '0', 500);
    memcpy(longnum + 502, "1e2", 4);
    struct json_span ln = parse(longnum);
    CHECK(json_to_double(&ln, &d) && d == 100.0);
    CHECK(!json_to_i64(&ln, &i64));
}

static void test_strings(void)
{
    char out[256];
    struct json_span s = parse("\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\"");
    CHECK_EQ_INT(json_str_unescape(&s, out, sizeof out), 17);
    CHECK(memcmp(out, "a\"b\\c/d\be\ff\ng\rh\ti", 18) == 0);
    CHECK_EQ_INT(json_str_rawlen(&s), 25);

    s = parse("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\\uDBFF\\uDFFF\\uD800\\uDC00x\"");
    long n = json_str_unescape(&s, out, sizeof out);
    const char *want = "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xf0\x90\x80\x80x";
    CHECK_EQ_INT(n, (long)strlen(want));
    CHECK_EQ_STR(out, want);

    /* \u0000 decodes to a NUL inside the returned length */
    s = parse("\"a\\u0000b\"");
    CHECK_EQ_INT(json_str_unescape(&s, out, sizeof out), 3);
    CHECK(memcmp(out, "a\0b", 4) == 0);
    CHECK(!json_str_eq(&s, "a"));

    /* capacity: the decoded text plus a NUL must fit */
    s = parse("\"hello\"");
    CHECK_EQ_INT(json_str_unescape(&s, out, 6), 5);
    CHECK_EQ_STR(out, "hello");
    CHECK_EQ_INT(json_str_unescape(&s, out, 5), -1);
    CHECK_EQ_INT(json_str_unescape(&s, out, 0), -1);
    s = parse("\"\\ud83d\\ude00\"");
    CHECK_EQ_INT(json_str_unescape(&s, out, 5), 4);
    CHECK_EQ_INT(json_str_unescape(&s, out, 4), -1);
    s = parse("\"\"");
    CHECK_EQ_INT(json_str_unescape(&s, out, 1), 0);
    CHECK_EQ_STR(out, "");
    CHECK_EQ_INT(json_str_rawlen(&s), 0);
    struct json_span num = parse("12");
    CHECK_EQ_INT(json_str_unescape(&num, out, sizeof out), -1);
    CHECK_EQ_INT(json_str_rawlen(&num), 0);

    /* json_str_eq decodes */
    s = parse("\"mo\\u0064el\"");
    CHECK(json_str_eq(&s, "model"));
    CHECK(!json_str_eq(&s, "mo\\u0064el"));
    CHECK(!json_str_eq(&s, "mode"));
    CHECK(!json_str_eq(&s, "models"));
    s = parse("\"plain\"");
    CHECK(json_str_eq(&s, "plain") && !json_str_eq(&s, "plai") && !json_str_eq(&s, "plainer"));
    CHECK(!json_str_eq(&num, "12"));
    CHECK(!json_str_eq(&s, NULL));
}

/* escape, validate, unescape: the original comes back */
static void roundtrip(const char *in, size_t n)
{
    size_t cap = 6 * n + 3;
    char *esc = malloc(cap), *back = malloc(n + 1);
    if (!esc || !back) abort();
    long k = json_escape(in, n, esc, cap);
    CHECK(k >= 2);
    struct json_span v;
    struct json_error err;
    CHECK_EQ_INT(json_validate(esc, (size_t)k, &v, &err), 0);
    CHECK_EQ_INT(v.type, JSON_STRING);
    CHECK_EQ_INT(json_str_unescape(&v, back, n + 1), (long)n);
    CHECK(memcmp(back, in, n) == 0);
    /* every shorter capacity fails cleanly (ASan checks it writes nothing
     * outside); the exact size works */
    for (size_t c = 0; c < (size_t)k; c++) {
        char *tight = malloc(c ? c : 1);
        if (!tight) abort();
        CHECK_EQ_INT(json_escape(in, n, tight, c), -1);
        free(tight);
    }
    char *exact = malloc((size_t)k);
    if (!exact) abort();
    CHECK_EQ_INT(json_escape(in, n, exact, (size_t)k), k);
    CHECK(memcmp(exact, esc, (size_t)k) == 0);
    free(exact);
    free(esc);
    free(back);
}

static void test_escape(void)
{
    char out[256];
    CHECK_EQ_INT(json_escape("", 0, out, sizeof out), 2);
    CHECK_EQ_STR(out, "\"\"");
    CHECK_EQ_INT(json_escape(NULL, 0, out, sizeof out), 2);
    long n = json_escape("a\"b\\c\n\t\r\b\f\x01\x1f\x7f/", 14, out, sizeof out);
    CHECK_EQ_STR(out, "\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001\\u001f\x7f/\"");
    CHECK_EQ_INT(n, (long)strlen(out));
    json_escape("\0", 1, out, sizeof out);
    CHECK_EQ_STR(out, "\"\\u0000\"");
    /* valid UTF-8 passes through */
    json_escape("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 13, out, sizeof out);
    CHECK_EQ_STR(out, "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"");
    /* ill-formed UTF-8: one U+FFFD per maximal ill-formed subpart */
    static const struct {
        const char *in, *want;
    } bad[] = {
        {"\xff", "\"\xef\xbf\xbd\""},
        {"a\x80z", "\"a\xef\xbf\xbdz\""},
        {"\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\""},      /* overlong: two */
        {"\xe2\x82", "\"\xef\xbf\xbd\""},                  /* truncated: one */
        {"\xe2\x82z", "\"\xef\xbf\xbdz\""},
        {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* surrogate */
        {"\xf0\x9f\x98", "\"\xef\xbf\xbd\""},
        {"\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},
        {"\xf0\x9f\x98\x80\xf0", "\"\xf0\x9f\x98\x80\xef\xbf\xbd\""},
        {"\xc3\"", "\"\xef\xbf\xbd\\\"\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = json_escape(bad[i].in, strlen(bad[i].in), out, sizeof out);
        CHECK_EQ_STR(out, bad[i].want);
        CHECK_EQ_INT(json_validate(out, (size_t)n, NULL, NULL), 0);
    }
    /* no room for the NUL: still fine, nothing written past cap */
    char four[4];
    CHECK_EQ_INT(json_escape("ab", 2, four, 4), 4);
    CHECK(memcmp(four, "\"ab\"", 4) == 0);
    CHECK_EQ_INT(json_escape("ab", 2, four, 3), -1);
    CHECK_EQ_INT(json_escape("ab", 2, NULL, 0), -1);

    /* round trips */
    static const char *texts[] = {
        "", "plain", "with \"quotes\" and \\backslashes\\", "lines\nand\ttabs\r\n",
        "\x01\x02\x03\x1f\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf",
        "</script>", "\xe2\x80\xa8\xe2\x80\xa9", "a long run of plain ascii text to exercise the fast path",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) roundtrip(texts[i], strlen(texts[i]));
    char all[128];
    for (int i = 0; i < 128; i++) all[i] = (char)i;
    roundtrip(all, sizeof all);

    /* random valid UTF-8 strings (fixed seed) */
    uint32_t seed = 12345;
    for (int iter = 0; iter < 300; iter++) {
        char buf[200];
        size_t len = 0;
        int chars = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 40;
        for (int c = 0; c < chars; c++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t r = seed >> 8, cp;
            switch (r % 4) {
            case 0: cp = r % 0x80; break;
            case 1: cp = 0x80 + r % 0x780; break;
            case 2: cp = 0x800 + r % 0xF800; if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0x41; break;
            default: cp = 0x10000 + r % 0x100000; break;
            }
            if (cp < 0x80) buf[len++] = (char)cp;
            else if (cp < 0x800) {
                buf[len++] = (char)(0xC0 | cp >> 6);
                buf[len++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                buf[len++] = (char)(0xE0 | cp >> 12);
                buf[len++] = (char)(0x80 | (cp >> 6 & 0x3F));
                buf[len++] = (char)(0x80 | (cp & 0x3F));
            } else {
                buf[len++] = (char)(0xF0 | cp >> 18);
                buf[len++] = (char)(0x80 | (cp >> 12 & 0x3F));
                buf[len++] = (char)(0x80 | (cp >> 6 & 0x3F));
                buf[len++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        roundtrip(buf, len);
    }
    /* arbitrary bytes always escape to valid JSON */
    for (int iter = 0; iter < 300; iter++) {
        char buf[64], esc[64 * 6 + 3];
        for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)((seed = seed * 1103515245u + 12345u) >> 24);
        n = json_escape(buf, sizeof buf, esc, sizeof esc);
        CHECK(n > 0 && json_validate(esc, (size_t)n, NULL, NULL) == 0);
    }
}

/* every strict prefix of a valid document is invalid, and the error is at
 * the end (or earlier); every single-byte change either stays valid or
 * yields an offset within the text */
static void test_prefixes(void)
{
    const char *doc = "{\"a\":[1,-2.5e+3,true,false,null,\"x\\u00e9\\n\xc3\xa9\"],\"b\":{}}";
    size_t n = strlen(doc);
    for (size_t i = 0; i < n; i++) {
        struct json_error err;
        CHECK_EQ_INT(json_validate(doc, i, NULL, &err), -1);
        CHECK(err.offset <= i);
    }
    char buf[128];
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 256; c++) {
            memcpy(buf, doc, n);
            buf[i] = (char)c;
            struct json_error err;
            if (json_validate(buf, n, NULL, &err) != 0) CHECK(err.offset <= n);
        }
}

int main(void)
{
    test_corpora();
    test_depth();
    test_error_offsets();
    test_lookups();
    test_numbers();
    test_strings();
    test_escape();
    test_prefixes();
    UNIT_DONE();
}
