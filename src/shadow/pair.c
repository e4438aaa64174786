/* pair.c — the shadow pair's names, memory and token rule (pair.h). */
#include "pair.h"

#include <stdlib.h>

const char *const shadow_skip_names[SKIP__COUNT] = {
    "paused", "stopped", "endpoint", "opt_out", "not_selected", "sampled_out", "no_user_key", "tool_results",
};
const char *const shadow_drop_names[DROP__COUNT] = {
    "cap", "budget", "queue_full", "shutdown", "db_error", "nomem",
};
const char *const shadow_leg_names[LEG__COUNT] = { "primary", "shadow", "aa" };
const char *const shadow_outcome_names[OUT__COUNT] = { "ok", "error", "timeout", "deadline", "cancelled" };
const char *const shadow_state_names_rt[3] = { "running", "paused", "stopped" };

void shadow_pair_free(struct shadow_pair *p)
{
    if (!p)
        return;
    for (int i = 0; i < LEG__COUNT; i++)
        shadow_answer_free(&p->leg[i].ans);
    free(p->prompt);
    free(p);
}

static size_t answer_bytes(const struct shadow_answer *a)
{
    size_t n = a->text.cap + a->tools.cap;
    for (int i = 0; i < 4; i++)
        n += a->tc_name[i].cap + a->tc_args[i].cap;
    return n;
}

size_t shadow_pair_bytes(const struct shadow_pair *p)
{
    size_t n = sizeof *p + p->prompt_len;
    for (int i = 0; i < LEG__COUNT; i++)
        n += answer_bytes(&p->leg[i].ans);
    return n;
}

void shadow_leg_tokens(const struct shadow_leg_result *res, size_t prompt_bytes, int64_t *in, int64_t *out)
{
    /* the upstream's usage, else estimates: 4 bytes of prompt JSON per
     * token in, one output event (streams) or 4 bytes of text per token out;
     * an answer too large to be read: 4 bytes of it per token (mostly text) */
    *in = res->ans.usage_in >= 0 ? res->ans.usage_in : (int64_t)(prompt_bytes / 4);
    *out = res->ans.usage_out >= 0 ? res->ans.usage_out
           : res->streamed         ? res->ans.events_out
           : res->ans.too_large    ? (int64_t)(res->ans.body_bytes / 4)
                                   : (int64_t)(buf_used(&res->ans.text) / 4);
}
