/* answer.c — reading a model's answer from its response (see answer.h). */
#include "answer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

void shadow_answer_init(struct shadow_answer *a, size_t text_max)
{
    memset(a, 0, sizeof *a);
    a->usage_in = a->usage_out = -1;
    a->text_max = text_max;
}

void shadow_answer_free(struct shadow_answer *a)
{
    buf_free(&a->text);
    buf_free(&a->tools);
    for (int i = 0; i < 4; i++) {
        buf_free(&a->tc_name[i]);
        buf_free(&a->tc_args[i]);
    }
}

/* Append a JSON string's decoded content, bounded.  Once *truncated is set
 * nothing more is appended: the kept text stays a prefix of the whole (a
 * later piece that happens to fit would splice non-adjacent text). */
static void append_str(struct buf *b, const struct json_span *s, size_t max, bool *truncated)
{
    if (s->type != JSON_STRING || (truncated && *truncated))
        return;
    size_t room = max > buf_used(b) ? max - buf_used(b) : 0;
    size_t need = json_str_rawlen(s) + 1;
    if (room == 0) {
        if (truncated && need > 1)
            *truncated = true;
        return;
    }
    char *tmp = malloc(need);
    if (!tmp)
        return;
    long n = json_str_unescape(s, tmp, need);
    if (n > 0) {
        size_t take = (size_t)n <= room ? (size_t)n : room;
        while (take < (size_t)n && take > 0 && ((unsigned char)tmp[take] & 0xC0) == 0x80)
            take--; /* never cut a UTF-8 character */
        buf_append(b, tmp, take);
        if (take < (size_t)n && truncated)
            *truncated = true;
    }
    free(tmp);
}

static void read_usage(struct shadow_answer *a, const struct json_span *root)
{
    struct json_span u, v;
    int64_t x;
    if (!json_get(root, "usage", &u) || u.type != JSON_OBJECT)
        return;
    if (json_get(&u, "prompt_tokens", &v) && json_to_i64(&v, &x))
        a->usage_in = x;
    if (json_get(&u, "completion_tokens", &v) && json_to_i64(&v, &x))
        a->usage_out = x;
}

static void set_finish(struct shadow_answer *a, const struct json_span *choice)
{
    struct json_span f;
    if (json_get(choice, "finish_reason", &f) && f.type == JSON_STRING) {
        char tmp[sizeof a->finish];
        if (json_str_unescape(&f, tmp, sizeof tmp) >= 0)
            memcpy(a->finish, tmp, sizeof tmp);
    }
}

/* The longest prefix of the escaped JSON string e (quotes included) that
 * fits in max bytes with its closing quote, never splitting an escape
 * sequence or a UTF-8 character; returns its new length. */
static size_t cut_escaped(char *e, size_t len, size_t max)
{
    size_t i = 1;
    while (i + 1 < len) {
        unsigned char c = (unsigned char)e[i];
        size_t tok = c == '\\' ? (e[i + 1] == 'u' ? 6 : 2) : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (i + tok + 1 > max)
            break;
        i += tok;
    }
    e[i] = '"';
    return i + 1;
}

/* Tool calls as the store keeps them: [{"name":..,"arguments":".."}], at
 * most text_max bytes with the closing bracket.  Whole calls only, in
 * order; the first call that does not fit closes the array — except a first
 * call too large alone, which keeps its name and a cut of its arguments. */
static void tools_add(struct shadow_answer *a, const char *name, size_t nlen, const char *args, size_t alen)
{
    if (a->tools_full) {
        a->tools_truncated = true;
        return;
    }
    char *en = malloc(nlen * 6 + 3), *ea = malloc(alen * 6 + 3);
    long nl = en ? json_escape(name, nlen, en, nlen * 6 + 3) : -1;
    long al = ea ? json_escape(args, alen, ea, alen * 6 + 3) : -1;
    if (nl > 0 && al > 0) {
        /* "[" or ",", {"name":, ,"arguments":, "}", and the final "]" */
        size_t fixed = 1 + 8 + (size_t)nl + 13 + 1 + 1, used = buf_used(&a->tools);
        if (used + fixed + (size_t)al > a->text_max) {
            a->tools_full = true;
            a->tools_truncated = true;
            al = used == 0 && fixed + 2 <= a->text_max ? (long)cut_escaped(ea, (size_t)al, a->text_max - fixed) : -1;
        }
    }
    if (nl > 0 && al > 0) {
        buf_append(&a->tools, buf_used(&a->tools) ? "," : "[", 1);
        buf_append_str(&a->tools, "{\"name\":");
        buf_append(&a->tools, en, (size_t)nl);
        buf_append_str(&a->tools, ",\"arguments\":");
        buf_append(&a->tools, ea, (size_t)al);
        buf_append(&a->tools, "}", 1);
    }
    free(en);
    free(ea);
}

static void tools_close(struct shadow_answer *a)
{
    if (buf_used(&a->tools) && buf_data(&a->tools)[buf_used(&a->tools) - 1] != ']')
        buf_append(&a->tools, "]", 1);
}

void shadow_answer_sse(struct shadow_answer *a, const char *data, size_t len, uint64_t now_ns)
{
    struct json_span root;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0)
        return;
    if (json_validate(data, len, &root, NULL) == 0 && root.type == JSON_OBJECT)
        shadow_answer_sse_root(a, &root, now_ns);
}

void shadow_answer_sse_root(struct shadow_answer *a, const struct json_span *root, uint64_t now_ns)
{
    struct json_span choices, c0, d, v, key;
    read_usage(a, root);
    if (!json_get(root, "choices", &choices) || choices.type != JSON_ARRAY || !json_index(&choices, 0, &c0) ||
        c0.type != JSON_OBJECT)
        return;
    set_finish(a, &c0);
    bool out = false;
    size_t before = buf_used(&a->text);
    if (json_get(&c0, "delta", &d) && d.type == JSON_OBJECT) {
        if (json_get(&d, "content", &v) && v.type == JSON_STRING) {
            append_str(&a->text, &v, a->text_max, &a->text_truncated);
            out |= v.len > 2;
        }
        if (json_get(&d, "tool_calls", &v) && v.type == JSON_ARRAY) {
            size_t it = 0;
            struct json_span tc, fn, x;
            while (json_next(&v, &it, &key, &tc)) {
                int64_t idx = 0;
                if (tc.type != JSON_OBJECT)
                    continue;
                if (json_get(&tc, "index", &x))
                    json_to_i64(&x, &idx);
                if (idx < 0 || idx >= 4) {
                    a->tools_truncated = true; /* only the first four calls are kept */
                    continue;
                }
                if (idx >= a->tc_n)
                    a->tc_n = (int)idx + 1;
                if (json_get(&tc, "function", &fn) && fn.type == JSON_OBJECT) {
                    /* pieces of one call arrive in order: after a cut,
                     * nothing more of the calls is kept (a prefix, flagged) */
                    if (json_get(&fn, "name", &x))
                        append_str(&a->tc_name[idx], &x, 256, &a->tools_truncated);
                    if (json_get(&fn, "arguments", &x))
                        append_str(&a->tc_args[idx], &x, 65536, &a->tools_truncated);
                }
                out = true;
            }
        }
        if (json_get(&d, "reasoning_content", &v) && v.type == JSON_STRING && v.len > 2)
            out = true;
    } else if (json_get(&c0, "text", &v) && v.type == JSON_STRING) {
        append_str(&a->text, &v, a->text_max, &a->text_truncated);
        out |= v.len > 2;
    }
    (void)before;
    if (!out)
        return;
    a->events_out++;
    if (a->t_first_ns) {
        double gap = (double)(now_ns - a->t_last_ns) / 1e6;
        a->itl_sum_ms += gap;
        a->itl_n++;
        if (gap > a->itl_max_ms)
            a->itl_max_ms = gap;
    } else {
        a->t_first_ns = now_ns;
    }
    a->t_last_ns = now_ns;
}

void shadow_answer_gap(struct shadow_answer *a)
{
    a->text_truncated = true;
    a->tools_truncated = true;
}

/* Streamed tool calls, assembled from their pieces, into the tools array. */
void shadow_answer_finish_stream(struct shadow_answer *a)
{
    for (int i = 0; i < a->tc_n; i++)
        tools_add(a, buf_data(&a->tc_name[i]) ? buf_data(&a->tc_name[i]) : "", buf_used(&a->tc_name[i]),
                  buf_data(&a->tc_args[i]) ? buf_data(&a->tc_args[i]) : "", buf_used(&a->tc_args[i]));
    for (int i = 0; i < 4; i++) { /* assembled: the pieces need not wait for the writer */
        buf_free(&a->tc_name[i]);
        buf_free(&a->tc_args[i]);
    }
    a->tc_n = 0;
    tools_close(a);
}

void shadow_answer_json(struct shadow_answer *a, const char *body, size_t len)
{
    struct json_span root;
    if (json_validate(body, len, &root, NULL) == 0 && root.type == JSON_OBJECT)
        shadow_answer_json_root(a, &root);
}

void shadow_answer_json_root(struct shadow_answer *a, const struct json_span *root)
{
    struct json_span choices, c0, msg, v, key, tc, fn, nm, args;
    read_usage(a, root);
    if (!json_get(root, "choices", &choices) || choices.type != JSON_ARRAY || !json_index(&choices, 0, &c0) ||
        c0.type != JSON_OBJECT)
        return;
    set_finish(a, &c0);
    if (json_get(&c0, "message", &msg) && msg.type == JSON_OBJECT) {
        if (json_get(&msg, "content", &v))
            append_str(&a->text, &v, a->text_max, &a->text_truncated);
        if (json_get(&msg, "tool_calls", &v) && v.type == JSON_ARRAY) {
            size_t it = 0;
            while (json_next(&v, &it, &key, &tc) && !a->tools_full) {
                if (tc.type != JSON_OBJECT || !json_get(&tc, "function", &fn) || fn.type != JSON_OBJECT)
                    continue;
                struct buf n = { 0 }, ar = { 0 };
                bool ncut = false, acut = false;
                if (json_get(&fn, "name", &nm))
                    append_str(&n, &nm, 256, &ncut);
                if (json_get(&fn, "arguments", &args))
                    append_str(&ar, &args, 65536, &acut);
                if (ncut || acut)
                    a->tools_truncated = true;
                tools_add(a, buf_data(&n) ? buf_data(&n) : "", buf_used(&n), buf_data(&ar) ? buf_data(&ar) : "",
                          buf_used(&ar));
                buf_free(&n);
                buf_free(&ar);
            }
            tools_close(a);
        }
    } else if (json_get(&c0, "text", &v)) {
        append_str(&a->text, &v, a->text_max, &a->text_truncated);
    }
}

