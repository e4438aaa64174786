/* verdict.c — the shadow decision (verdict.h). */
#include "verdict.h"

#include <math.h>
#include <string.h>

#include "stats.h"

const char *const verdict_cmp_names[VERDICT_NCMP] = {
    "status_agree", "finish_agree", "exact",     "edit_sim",   "rouge_l",
    "length_ratio", "json_valid",   "json_same", "tool_agree", "refusal_other",
};
const enum verdict_cmp_better verdict_cmp_better[VERDICT_NCMP] = {
    VC_HIGHER, VC_HIGHER,  VC_HIGHER, VC_HIGHER, VC_HIGHER,
    VC_NEAR_ONE, VC_HIGHER, VC_HIGHER, VC_HIGHER, VC_LOWER,
};
const char *const verdict_family_names[VERDICT_FAMILIES] = { "success", "latency", "quality",
                                                             "judge" };

/* a comparator difference this small is a tie, not a sign */
#define TIE_EPS 1e-9
/* the spread assumed for planning when the paired differences so far are
 * all equal (a few pairs say little about it) */
#define SD_FLOOR 0.05
#define POWER 0.8
#define Z80 0.8416212335729143

double verdict_agreement(int cmp, double raw)
{
    if (isnan(raw))
        return NAN;
    switch (verdict_cmp_better[cmp]) {
    case VC_LOWER:
        return 1 - raw;
    case VC_NEAR_ONE: {
        double g = 1 - fabs(raw - 1);
        return g > 0 ? g : 0;
    }
    default:
        return raw;
    }
}

void verdict_rules_default(struct verdict_rules *r)
{
    r->alpha = 0.05;
    r->alpha_ready = 0.05;
    r->success_min = 0.95;
    r->latency_margin = 1.2;
    r->latency_ratio_max = 1.5;
    r->quality_margin = 0.10;
    r->min_pairs = 30;
    r->stop_below = 0.90;
    r->stop_alpha = 0.05;
    r->stop_horizon = 100000;
}

/* How alpha is split between the alarm families (Bonferroni with
 * weights): success and latency alarms are strong signals that need little
 * of it, the comparators' signs are weak and need more. */
static const double family_w[VERDICT_FAMILIES] = { 0.15, 0.15, 0.55, 0.15 };

double verdict_alarm_log_thr(const struct verdict_rules *r, int family)
{
    return log(1 / (family_w[family] * r->alpha));
}

double verdict_ready_log_thr(const struct verdict_rules *r) { return log(1 / r->alpha_ready); }

void verdict_obs_clear(struct verdict_obs *o)
{
    memset(o, 0, sizeof *o);
    o->p_lat = o->c_lat = NAN;
    for (int j = 0; j < VERDICT_NCMP; j++)
        o->cmp_c[j] = o->cmp_aa[j] = NAN;
}

void verdict_init(struct verdict_state *s, const struct verdict_rules *r)
{
    memset(s, 0, sizeof *s);
    s->rules = *r;
    for (int j = 0; j < VERDICT_NCMP; j++)
        seq_bet_init(&s->cmp_ni[j], r->quality_margin);
    seq_cusum_init(&s->cusum, r->stop_below, r->stop_horizon, r->stop_alpha);
}

/* ---------------------------------------------------------------- counts */

/* Recompute a count's e-value and its running maximum (a look). */
static void count_look(struct verdict_count *c, double p0)
{
    c->log_e = seq_log_e((double)c->a, (double)c->b, p0);
    if (c->log_e > c->log_e_max)
        c->log_e_max = c->log_e;
}

static void count(struct verdict_count *c, bool for_alt)
{
    if (for_alt)
        c->a++;
    else
        c->b++;
}

/* The quality family's e-value: a weighted average of the comparators' own
 * e-values (an average of e-processes with fixed weights is one).  The
 * text comparators carry most of the weight because a drop in answer
 * quality shows there first; the structural ones (JSON, tools, finish,
 * refusals) share the rest.  COMPOSITE_W of it goes to the sign of the
 * mean difference over the comparators that apply, which catches many
 * small drops at once. */
static const double cmp_weight[VERDICT_NCMP] = {
    /* status_agree finish exact edit_sim rouge_l length json_valid json_same tool refusal */
    0.05, 0.05, 0.20, 0.20, 0.20, 0.06, 0.06, 0.06, 0.06, 0.06,
};
#define COMPOSITE_W 0.25

static double quality_log_e(const struct verdict_state *s)
{
    double m = s->cmp_all_worse.log_e, sum = 0;
    for (int j = 0; j < VERDICT_NCMP; j++)
        if (s->cmp_worse[j].log_e > m)
            m = s->cmp_worse[j].log_e;
    for (int j = 0; j < VERDICT_NCMP; j++)
        sum += cmp_weight[j] * exp(s->cmp_worse[j].log_e - m);
    return m + log(COMPOSITE_W * exp(s->cmp_all_worse.log_e - m) + (1 - COMPOSITE_W) * sum);
}

static bool any_alarm(const struct verdict_state *s, bool out[VERDICT_FAMILIES])
{
    const struct verdict_rules *r = &s->rules;
    bool a[VERDICT_FAMILIES] = {
        s->succ_worse.log_e_max >= verdict_alarm_log_thr(r, VF_SUCCESS),
        s->lat_slow.log_e_max >= verdict_alarm_log_thr(r, VF_LATENCY),
        s->quality_log_e_max >= verdict_alarm_log_thr(r, VF_QUALITY),
        s->judge_worse.log_e_max >= verdict_alarm_log_thr(r, VF_JUDGE),
    };
    bool any = false;
    for (int f = 0; f < VERDICT_FAMILIES; f++) {
        if (out)
            out[f] = a[f];
        any = any || a[f];
    }
    return any;
}

static bool cmp_applicable(const struct verdict_state *s, int j) { return s->cmp_applies[j] > 0; }

static bool cmp_ready(const struct verdict_state *s, int j)
{
    return !cmp_applicable(s, j) || s->cmp_ni[j].log_e_max >= verdict_ready_log_thr(&s->rules);
}

static bool quality_ready(const struct verdict_state *s)
{
    bool any = false;
    for (int j = 0; j < VERDICT_NCMP; j++) {
        if (!cmp_ready(s, j))
            return false;
        any = any || cmp_applicable(s, j);
    }
    return any; /* no A/A comparison at all: the noise floor is unknown */
}

static bool is_ready(const struct verdict_state *s)
{
    double thr = verdict_ready_log_thr(&s->rules);
    return s->n >= s->rules.min_pairs && s->succ_ready.log_e_max >= thr &&
           s->lat_fast.log_e_max >= thr && quality_ready(s);
}

void verdict_add(struct verdict_state *s, const struct verdict_obs *o)
{
    const struct verdict_rules *r = &s->rules;
    s->n++;
    s->p_ok += o->p_ok;
    s->c_ok += o->c_ok;

    /* success: discordant pairs, and the candidate's own rate */
    if (o->p_ok != o->c_ok)
        count(&s->succ_worse, o->p_ok);
    count(&s->succ_ready, o->c_ok);
    if (r->stop_below > 0 && seq_cusum_add(&s->cusum, o->c_ok) && !s->stop_n)
        s->stop_n = s->n;

    /* latency: pairs where the primary answered and the candidate either
     * answered or ran out of time (censored: slower than anything) */
    bool p_lat = o->p_ok && isfinite(o->p_lat) && o->p_lat >= 0;
    bool c_lat = o->c_ok && isfinite(o->c_lat);
    if (p_lat && (c_lat || o->c_timeout)) {
        bool slow = !c_lat || o->c_lat > r->latency_margin * o->p_lat;
        bool fast = c_lat && o->c_lat < r->latency_ratio_max * o->p_lat;
        count(&s->lat_slow, slow);
        count(&s->lat_fast, fast);
    }

    /* comparators, on pairs compared both ways: the sign of each
     * comparator's difference where it applies (alarms), the sign of their
     * mean (the composite alarm), and the traffic-level difference for
     * non-inferiority, where "does not apply" is no difference */
    if (o->has_aa) {
        double sum = 0;
        int k = 0;
        for (int j = 0; j < VERDICT_NCMP; j++) {
            double gc = verdict_agreement(j, o->cmp_c[j]), ga = verdict_agreement(j, o->cmp_aa[j]);
            double d = isnan(gc) || isnan(ga) ? 0 : gc - ga;
            seq_bet_add(&s->cmp_ni[j], d);
            if (isnan(gc) || isnan(ga))
                continue;
            s->cmp_applies[j]++;
            sum += d;
            k++;
            if (d < -TIE_EPS || d > TIE_EPS)
                count(&s->cmp_worse[j], d < 0);
        }
        if (k && (sum < -TIE_EPS || sum > TIE_EPS))
            count(&s->cmp_all_worse, sum < 0);
    }
    if (o->judge)
        count(&s->judge_worse, o->judge < 0);
}

void verdict_look(struct verdict_state *s)
{
    const struct verdict_rules *r = &s->rules;
    if (s->looked_at == s->n)
        return;
    s->looked_at = s->n;
    count_look(&s->succ_worse, 0.5);
    count_look(&s->succ_ready, r->success_min);
    count_look(&s->lat_slow, 0.5);
    count_look(&s->lat_fast, 0.5);
    for (int j = 0; j < VERDICT_NCMP; j++)
        count_look(&s->cmp_worse[j], 0.5);
    count_look(&s->cmp_all_worse, 0.5);
    count_look(&s->judge_worse, 0.5);
    s->quality_log_e = quality_log_e(s);
    if (s->quality_log_e > s->quality_log_e_max)
        s->quality_log_e_max = s->quality_log_e;
    if (!s->first_alarm_n && any_alarm(s, NULL))
        s->first_alarm_n = s->n;
    if (!s->first_ready_n && !s->first_alarm_n && is_ready(s))
        s->first_ready_n = s->n;
}

/* ---------------------------------------------------------------- decision */

/* The one-sided 80 % Wilson lower bound: a pessimistic but plausible
 * planning value (the point estimate would give only about even odds). */
static double plan_rate(uint64_t k, uint64_t n)
{
    double lo, hi;
    stats_wilson((double)k, (double)n, Z80, &lo, &hi);
    return lo;
}

static int64_t more_for_rate(uint64_t k, uint64_t m, double p0, double log_thr, double per_pair,
                             uint64_t n)
{
    double p = plan_rate(k, m);
    uint64_t need = seq_n_for_power(p, p0, log_thr, POWER);
    if (!need || !(per_pair > 0))
        return -1;
    double pairs = ceil((double)need / per_pair);
    if (pairs > 9e15)
        return -1;
    int64_t more = (int64_t)pairs - (int64_t)n;
    return more < 1 ? 1 : more;
}

static double cmp_sd(const struct seq_bet *b)
{
    if (b->n < 2)
        return 1; /* nothing known: the widest spread of a difference in [-1, 1] */
    double n = (double)b->n, var = (b->sumsq - b->sum * b->sum / n) / (n - 1);
    double sd = var > 0 ? sqrt(var) : 0;
    return sd > SD_FLOOR ? sd : SD_FLOOR;
}

void verdict_decide(const struct verdict_state *s, struct verdict *v)
{
    const struct verdict_rules *r = &s->rules;
    double rthr = verdict_ready_log_thr(r);
    memset(v, 0, sizeof *v);
    v->more = -1;

    any_alarm(s, v->alarm);
    double athr = verdict_alarm_log_thr(r, VF_QUALITY);
    for (int j = 0; j < VERDICT_NCMP; j++) {
        v->cmp_applicable[j] = cmp_applicable(s, j);
        v->cmp_ready[j] = cmp_ready(s, j);
        /* the comparators that carry the family's alarm: those whose own
         * e-value is above the family's threshold, or the largest one */
        v->cmp_alarm[j] = v->alarm[VF_QUALITY] && s->cmp_worse[j].log_e_max >= athr;
        v->cmp_mde[j] = v->cmp_applicable[j]
                            ? seq_bet_mde(s->cmp_ni[j].n, cmp_sd(&s->cmp_ni[j]), rthr, POWER)
                            : NAN;
    }
    if (v->alarm[VF_QUALITY]) {
        bool named = false;
        int best = 0;
        for (int j = 0; j < VERDICT_NCMP; j++) {
            named = named || v->cmp_alarm[j];
            if (s->cmp_worse[j].log_e_max > s->cmp_worse[best].log_e_max)
                best = j;
        }
        if (!named)
            v->cmp_alarm[best] = true;
    }
    v->ready_success = s->succ_ready.log_e_max >= rthr;
    v->ready_latency = s->lat_fast.log_e_max >= rthr;
    v->ready_quality = quality_ready(s);

    if (v->alarm[VF_SUCCESS]) {
        v->action = VA_INVESTIGATE;
        v->rule = "success_rate";
    } else if (v->alarm[VF_LATENCY]) {
        v->action = VA_TOO_SLOW;
        v->rule = "latency_ratio";
    } else if (v->alarm[VF_QUALITY] || v->alarm[VF_JUDGE]) {
        v->action = VA_INVESTIGATE;
        v->rule = "quality_regression";
    } else if (is_ready(s)) {
        v->action = VA_READY;
        v->rule = "no_regression";
    } else {
        v->action = VA_KEEP_COLLECTING;
        v->rule = s->n < r->min_pairs ? "insufficient_data" : "keep_collecting";
    }
    static const char *const names[] = { "keep_collecting", "investigate", "too_slow",
                                         "ready_for_canary" };
    v->action_name = names[v->action];
    if (v->action != VA_KEEP_COLLECTING)
        return;

    /* what is missing, and how many more pairs give it 80 % power */
    int64_t worst = 0;
    bool cannot = false;
    const char *crit = NULL, *cannot_crit = NULL;
#define NEED(name, m)                                                                   \
    do {                                                                                \
        int64_t m_ = (m);                                                               \
        if (m_ < 0) {                                                                   \
            if (!cannot)                                                                \
                cannot_crit = (name);                                                   \
            cannot = true;                                                              \
        } else if (m_ > worst || !crit) {                                               \
            if (m_ > worst)                                                             \
                worst = m_;                                                             \
            crit = (name);                                                              \
        }                                                                               \
    } while (0)
    if (s->n < r->min_pairs)
        NEED("min_pairs", (int64_t)(r->min_pairs - s->n));
    if (!v->ready_success)
        NEED("success_ci", more_for_rate(s->succ_ready.a, s->n, r->success_min, rthr, 1.0, s->n));
    if (!v->ready_latency) {
        uint64_t m = s->lat_fast.a + s->lat_fast.b;
        double per = s->n ? (double)m / (double)s->n : 0;
        NEED("latency_ci", m ? more_for_rate(s->lat_fast.a, m, 0.5, rthr, per, s->n) : -1);
    }
    bool any_cmp = false;
    for (int j = 0; j < VERDICT_NCMP; j++) {
        any_cmp = any_cmp || v->cmp_applicable[j];
        if (v->cmp_ready[j])
            continue;
        const struct seq_bet *b = &s->cmp_ni[j];
        uint64_t need = seq_bet_n_needed(r->quality_margin, cmp_sd(b), rthr, POWER);
        double per = (double)b->n / (double)s->n;
        int64_t more = -1;
        if (need < SEQ_N_MAX && per > 0) {
            double pairs = ceil((double)need / per);
            more = pairs > 9e15 ? -1 : (int64_t)pairs - (int64_t)s->n;
            if (more < 1 && more != -1)
                more = 1;
        }
        NEED("quality", more);
        /* A/A legs come with a fraction of pairs only: when they are what
         * the wait is for, sending more of them is the cure */
        if (per < 0.5)
            v->raise_aa = true;
    }
    if (!any_cmp)
        NEED("noise_floor", -1);
#undef NEED
    v->criterion = cannot ? cannot_crit : crit;
    v->more = cannot ? -1 : worst;
    /* too few pairs to plan from: at least min_pairs, whatever else */
    if (cannot && s->n < r->min_pairs) {
        v->criterion = "min_pairs";
        v->more = (int64_t)(r->min_pairs - s->n);
    }
    if (v->raise_aa && (!v->criterion || strcmp(v->criterion, "quality") != 0))
        v->raise_aa = false;
}
