/* canary.c — the rollout decision (canary.h). */
#include "canary.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rand.h"
#include "seq.h"

/* an e-value from its log, for messages: astronomically large ones as 1e300 */
static double ev(double log_e) { return log_e > 690 ? 1e300 : exp(log_e); }

const char *const canary_family_names[CANARY_FAMILIES] = { "failures", "latency", "ttft", "cost", "refusals",
                                                            "quality", "judge" };

bool canary_family_on(const struct canary_rules *r, int f)
{
    return f == CF_REFUSALS ? r->refusals
           : f == CF_QUALITY ? r->quality
           : f == CF_JUDGE   ? r->judge
                             : f >= 0 && f < CANARY_FAMILIES;
}

int canary_families_on(const struct canary_rules *r)
{
    int n = 0;
    for (int f = 0; f < CANARY_FAMILIES; f++)
        n += canary_family_on(r, f);
    return n;
}
const char *const canary_phase_names[] = { "canary", "promoted", "rolled_back", "frozen", "shadow" };
const char *const canary_action_names[] = { "none", "advance", "promote", "rollback", "freeze" };

void canary_rules_default(struct canary_rules *r)
{
    memset(r, 0, sizeof *r);
    r->alpha_rollback = 0.05;
    r->alpha_promote = 0.01;
    r->latency_margin = 1.2;
    r->latency_ratio_max = 1.5;
    r->cost_margin = 1.25;
    r->success_min = 0.95;
    r->srm_alpha = 0.001;
    r->refusals = true;
    r->quality = false;
    r->judge = false;
    r->quality_margin = 0.10;
    static const double shares[] = { 1, 5, 25, 50 };
    for (size_t i = 0; i < 4; i++)
        r->steps[i] = (struct canary_step){ shares[i], 60, 300 };
    r->nsteps = 4;
}

void canary_init(struct canary_state *s, double now)
{
    memset(s, 0, sizeof *s);
    s->phase = CP_CANARY;
    s->step_started = now;
}

void canary_add(struct canary_state *s, const struct canary_counts *d)
{
    struct canary_counts *t[2] = { &s->cur, &s->total };
    for (int i = 0; i < 2; i++) {
        t[i]->base_req += d->base_req;
        t[i]->can_req += d->can_req;
        t[i]->base_fail += d->base_fail;
        t[i]->can_fail += d->can_fail;
        t[i]->lat_slow += d->lat_slow;
        t[i]->lat_other += d->lat_other;
        t[i]->lat_fast += d->lat_fast;
        t[i]->lat_notfast += d->lat_notfast;
        t[i]->ttft_slow += d->ttft_slow;
        t[i]->ttft_other += d->ttft_other;
        t[i]->base_units += d->base_units;
        t[i]->can_units += d->can_units;
        t[i]->cost_high += d->cost_high;
        t[i]->cost_other += d->cost_other;
        t[i]->base_refusal += d->base_refusal;
        t[i]->can_refusal += d->can_refusal;
        t[i]->qual_worse += d->qual_worse;
        t[i]->qual_other += d->qual_other;
        t[i]->judge_loss += d->judge_loss;
        t[i]->judge_win += d->judge_win;
    }
}

double canary_share(const struct canary_state *s, const struct canary_rules *r)
{
    switch (s->phase) {
    case CP_PROMOTED:
        return 100;
    case CP_ROLLED_BACK:
    case CP_SHADOW:
        return 0;
    default:
        return s->step < r->nsteps ? r->steps[s->step].share : 0;
    }
}

uint32_t canary_bucket(const char *salt, size_t salt_len, const char *unit, size_t unit_len)
{
    uint64_t h = rnd_fnv1a64(RND_FNV1A64_INIT, salt, salt_len);
    h = rnd_fnv1a64_byte(h, 0); /* "ab" + "c" must not meet "a" + "bc" */
    h = rnd_fnv1a64(h, unit, unit_len);
    /* FNV's low bits are weak: mix, then map onto [0, 10000) by the high bits */
    return (uint32_t)(((unsigned __int128)rnd_mix64(h) * 10000u) >> 64);
}

/* Two-sided split e-value: the canary's share of requests against w, the
 * average of "above w" and "below w" (an average of e-values is one). */
static double log_srm(uint64_t can, uint64_t base, double w)
{
    double a = seq_log_e((double)can, (double)base, w), b = seq_log_e_below((double)can, (double)base, w);
    double m = a > b ? a : b;
    return m + log(0.5 * (exp(a - m) + exp(b - m)));
}

static void look(struct canary_state *s, const struct canary_rules *r)
{
    const struct canary_counts *c = &s->cur;
    double w = canary_share(s, r) / 100;
    /* failures conditional on the split: from the canary as often as a
     * request is (the step's realized share; w before any request) */
    uint64_t nreq = c->can_req + c->base_req;
    double rw = nreq ? (double)c->can_req / (double)nreq : w;
    /* refusals the same way, among the requests that answered */
    uint64_t can_ok = c->can_req - c->can_fail, base_ok = c->base_req - c->base_fail;
    double ow = can_ok + base_ok ? (double)can_ok / (double)(can_ok + base_ok) : w;
    double cur[CANARY_FAMILIES] = {
        rw > 0 && rw < 1 ? seq_log_e((double)c->can_fail, (double)c->base_fail, rw) : 0,
        seq_log_e_sign((double)c->lat_slow, (double)c->lat_other),
        seq_log_e_sign((double)c->ttft_slow, (double)c->ttft_other),
        seq_log_e_sign((double)c->cost_high, (double)c->cost_other),
        ow > 0 && ow < 1 ? seq_log_e((double)c->can_refusal, (double)c->base_refusal, ow) : 0,
        seq_log_e_sign((double)c->qual_worse, (double)c->qual_other),
        seq_log_e_sign((double)c->judge_loss, (double)c->judge_win),
    };
    for (int f = 0; f < CANARY_FAMILIES; f++) {
        if (!canary_family_on(r, f))
            cur[f] = 0;
        s->log_e[f] = s->log_carry[f] + cur[f];
        if (s->log_e[f] > s->log_e_max[f])
            s->log_e_max[f] = s->log_e[f];
    }
    s->log_srm = w < 1 ? log_srm(c->can_units, c->base_units, w) : 0;
    const struct canary_counts *t = &s->total;
    s->log_promote_success = seq_log_e((double)(t->can_req - t->can_fail), (double)t->can_fail, r->success_min);
    s->log_promote_latency = seq_log_e_sign((double)t->lat_fast, (double)t->lat_notfast);
}

void canary_check(struct canary_state *s, const struct canary_rules *r, double now,
                  struct canary_decision *d)
{
    memset(d, 0, sizeof *d);
    d->family = -1;
    s->checks++;
    if (s->phase != CP_CANARY)
        return;
    look(s, r);
    double w = canary_share(s, r);
    /* rollback: any family, Bonferroni over those tested */
    double thr = log(canary_families_on(r) / r->alpha_rollback);
    for (int f = 0; f < CANARY_FAMILIES; f++)
        if (canary_family_on(r, f) && s->log_e_max[f] >= thr) {
            d->action = CA_ROLLBACK;
            d->family = f;
            s->phase = CP_ROLLED_BACK;
            const struct canary_counts *c = &s->cur;
            if (f == CF_FAILURES)
                snprintf(d->reason, sizeof d->reason,
                         "the canary fails more than the baseline: at %.4g%% of traffic it had %llu of "
                         "%llu failures this step (e-value %.3g >= %.3g)",
                         w, (unsigned long long)c->can_fail,
                         (unsigned long long)(c->can_fail + c->base_fail), ev(s->log_e_max[f]), exp(thr));
            else if (f == CF_REFUSALS)
                snprintf(d->reason, sizeof d->reason,
                         "the canary refuses more than the baseline: at %.4g%% of traffic it gave %llu of "
                         "%llu refusals this step (e-value %.3g >= %.3g)",
                         w, (unsigned long long)c->can_refusal,
                         (unsigned long long)(c->can_refusal + c->base_refusal), ev(s->log_e_max[f]), exp(thr));
            else if (f == CF_QUALITY)
                snprintf(d->reason, sizeof d->reason,
                         "the canary's answers are worse than the baseline's by more than %.2f in most sampled "
                         "pairs (agreement with a baseline answer, against the baseline's own): %llu of %llu "
                         "this step (e-value %.3g >= %.3g)",
                         r->quality_margin, (unsigned long long)c->qual_worse,
                         (unsigned long long)(c->qual_worse + c->qual_other), ev(s->log_e_max[f]), exp(thr));
            else if (f == CF_JUDGE)
                snprintf(d->reason, sizeof d->reason,
                         "the judge prefers the baseline's answers: of the sampled pairs judged the same way in "
                         "both orders, the canary lost %llu and won %llu this step (e-value %.3g >= %.3g)",
                         (unsigned long long)c->judge_loss, (unsigned long long)c->judge_win,
                         ev(s->log_e_max[f]), exp(thr));
            else if (f == CF_COST)
                snprintf(d->reason, sizeof d->reason,
                         "the canary costs more than %.2fx the baseline per request in most pairs: %llu of %llu "
                         "this step (e-value %.3g >= %.3g)",
                         r->cost_margin, (unsigned long long)c->cost_high,
                         (unsigned long long)(c->cost_high + c->cost_other), ev(s->log_e_max[f]), exp(thr));
            else
                snprintf(d->reason, sizeof d->reason,
                         "the canary's %s is more than %.2fx the baseline's in most pairs: %llu of %llu "
                         "this step (e-value %.3g >= %.3g)",
                         f == CF_LATENCY ? "latency" : "time to first token", r->latency_margin,
                         (unsigned long long)(f == CF_LATENCY ? c->lat_slow : c->ttft_slow),
                         (unsigned long long)(f == CF_LATENCY ? c->lat_slow + c->lat_other
                                                              : c->ttft_slow + c->ttft_other),
                         ev(s->log_e_max[f]), exp(thr));
            return;
        }
    /* a broken split invalidates the data: freeze for a person */
    if (s->log_srm >= log(1 / r->srm_alpha)) {
        d->action = CA_FREEZE;
        s->phase = CP_FROZEN;
        snprintf(d->reason, sizeof d->reason,
                 "sample-ratio mismatch: the canary got %llu of %llu new units this step at a share of "
                 "%.4g%% (e-value %.3g >= %.3g): assignment is broken, the data cannot be trusted",
                 (unsigned long long)s->cur.can_units, (unsigned long long)(s->cur.can_units + s->cur.base_units),
                 w, ev(s->log_srm), 1 / r->srm_alpha);
        return;
    }
    const struct canary_step *st = &r->steps[s->step];
    if (now - s->step_started < st->min_seconds || s->cur.can_req < st->min_requests)
        return;
    if (s->step + 1 < r->nsteps) {
        d->action = CA_ADVANCE;
        snprintf(d->reason, sizeof d->reason,
                 "step %zu (%.4g%%) held for %.1f s and %llu canary requests with no alarm: on to %.4g%%",
                 s->step + 1, w, now - s->step_started, (unsigned long long)s->cur.can_req,
                 r->steps[s->step + 1].share);
        for (int f = 0; f < CANARY_FAMILIES; f++)
            s->log_carry[f] = s->log_e[f];
        s->step++;
        s->step_started = now;
        memset(&s->cur, 0, sizeof s->cur);
        return;
    }
    /* the last step: promote once the canary is shown good enough */
    double pthr = log(1 / r->alpha_promote);
    if (s->log_promote_success >= pthr && s->log_promote_latency >= pthr) {
        d->action = CA_PROMOTE;
        s->phase = CP_PROMOTED;
        uint64_t n = s->total.can_req, ok = n - s->total.can_fail;
        snprintf(d->reason, sizeof d->reason,
                 "canary success %llu of %llu shown above %.2f%% (e-value %.3g) and faster than %.2fx "
                 "the baseline in %llu of %llu pairs (e-value %.3g), each >= %.3g, no alarm",
                 (unsigned long long)ok, (unsigned long long)n, 100 * r->success_min,
                 ev(s->log_promote_success), r->latency_ratio_max, (unsigned long long)s->total.lat_fast,
                 (unsigned long long)(s->total.lat_fast + s->total.lat_notfast), ev(s->log_promote_latency),
                 exp(pthr));
    }
}

void canary_begin(struct canary_state *s, double now)
{
    if (s->phase != CP_SHADOW)
        return;
    s->phase = CP_CANARY;
    s->step = 0;
    s->step_started = now;
    memset(&s->cur, 0, sizeof s->cur);
}

void canary_resume(struct canary_state *s, double now)
{
    if (s->phase != CP_FROZEN)
        return;
    s->phase = CP_CANARY;
    s->step_started = now;
    /* the step starts again: its evidence is dropped when it pointed at an
     * alarm (it was gathered on a split nobody trusted) and kept when it
     * pointed away (restarting it at 1 would raise it, which no valid
     * e-process may do) */
    for (int f = 0; f < CANARY_FAMILIES; f++)
        if (s->log_e[f] < s->log_carry[f])
            s->log_carry[f] = s->log_e[f];
    memset(&s->cur, 0, sizeof s->cur);
}
