/* decsim.c — the decision simulator (decsim.h).
 *
 * The model of a pair, deliberately plain and written out here so a reader
 * can judge it:
 *   - a prompt has a size factor L ~ lognormal(0, 0.5) shared by every leg
 *     (long prompts are slow for both models), and a determinism d ~
 *     Beta(4m, 4(1-m)): the chance that two samples of the primary are
 *     identical;
 *   - each leg succeeds with its rate; 30 % of the candidate's failures are
 *     timeouts (censored latency), the rest errors;
 *   - latency = 800 ms x L x lognormal(0, sigma) per leg, x lat_factor for
 *     the candidate;
 *   - when both legs of a comparison answered: exact ~ Bernoulli(d) for the
 *     A/A leg, Bernoulli(d - exact_drop) for the candidate; an identical
 *     answer agrees on everything, otherwise edit_sim ~ Beta(5, 2),
 *     rouge_l = edit_sim + N(0, 0.05), finish agrees 95 %, length ratio
 *     lognormal(0, 0.25); 10 % of prompts ask for JSON (json_valid 98 %,
 *     json_same 50 % unless identical), 5 % use tools (agree 97 %),
 *     refusals 2 % per leg; status_agree = both legs have the same outcome.
 *   The A/A leg is a second draw of the primary, so in a null scenario the
 *   candidate and the A/A leg are exchangeable — the property the quality
 *   test relies on.
 */
#include "decsim.h"

#include "simopts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

const struct decsim_scenario decsim_scenarios[] = {
    { "aa", "candidate identical to the primary (A/A)", true, 0.99, 0.99, 1, 0.25, 0.6, 0, 0.5 },
    { "aa_primary97", "A/A, the primary at 97 % success", true, 0.97, 0.97, 1, 0.25, 0.6, 0, 0.5 },
    { "aa_deterministic", "A/A, highly deterministic answers (95 % identical)", true, 0.99, 0.99, 1,
      0.25, 0.95, 0, 0.5 },
    { "aa_noisy_latency", "A/A, very noisy latency (sigma 0.8 per leg)", true, 0.99, 0.99, 1, 0.8,
      0.6, 0, 0.5 },
    { "aa_aa10", "A/A with 10 % A/A legs", true, 0.99, 0.99, 1, 0.25, 0.6, 0, 0.1 },
    { "latency_x1.5", "candidate 1.5x slower", false, 0.99, 0.99, 1.5, 0.25, 0.6, 0, 0.5 },
    { "errors_plus5", "candidate fails 5 points more (94 % vs 99 %)", false, 0.99, 0.94, 1, 0.25,
      0.6, 0, 0.5 },
    { "exact_minus10", "exact match 10 points lower", false, 0.99, 0.99, 1, 0.25, 0.6, 0.10, 0.5 },
    { "exact_minus10_aa10", "exact match 10 points lower, 10 % A/A legs", false, 0.99, 0.99, 1,
      0.25, 0.6, 0.10, 0.1 },
    { "all_three", "latency x1.5, errors +5 points, exact -10 points", false, 0.99, 0.94, 1.5, 0.25,
      0.6, 0.10, 0.5 },
    { "at_stop_bar", "candidate exactly at the auto-stop bar (90 %)", false, 0.99, 0.90, 1, 0.25,
      0.6, 0, 0.5 },
    { "at_success_min", "candidate exactly at success_min (95 %)", false, 0.99, 0.95, 1, 0.25, 0.6,
      0, 0.5 },
    { "dead", "candidate fails half its requests", false, 0.99, 0.50, 1, 0.25, 0.6, 0, 0.5 },
};
const unsigned decsim_nscenarios = sizeof decsim_scenarios / sizeof decsim_scenarios[0];

/* ---------------------------------------------------------------- random */

static double unif(struct stats_rng *r) { return ((double)(stats_rng_next(r) >> 11) + 0.5) * 0x1p-53; }

static double normal(struct stats_rng *r)
{
    return sqrt(-2 * log(unif(r))) * cos(6.283185307179586 * unif(r));
}

/* Marsaglia & Tsang; shape < 1 by the boost x U^(1/shape) */
static double gamma_draw(struct stats_rng *r, double k)
{
    if (k < 1)
        return gamma_draw(r, k + 1) * pow(unif(r), 1 / k);
    double d = k - 1.0 / 3, c = 1 / sqrt(9 * d);
    for (;;) {
        double x = normal(r), v = 1 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = unif(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v;
    }
}

static double beta_draw(struct stats_rng *r, double a, double b)
{
    double x = gamma_draw(r, a), y = gamma_draw(r, b);
    return x / (x + y);
}

static bool bern(struct stats_rng *r, double p) { return unif(r) < p; }

/* ---------------------------------------------------------------- one pair */

struct prompt {
    double L, d;
    bool json, tools;
};

/* The comparison of the primary's answer with another leg's (cand: the
 * candidate, with the scenario's drop; else an A/A draw). */
static void compare(struct stats_rng *r, const struct decsim_scenario *sc, const struct prompt *pr,
                    bool p_ok, bool x_ok, bool cand, double *out)
{
    for (int j = 0; j < VERDICT_NCMP; j++)
        out[j] = NAN;
    out[0] = p_ok == x_ok; /* status_agree */
    if (!p_ok || !x_ok)
        return;
    double pe = pr->d - (cand ? sc->exact_drop : 0);
    bool same = bern(r, pe > 0 ? pe : 0);
    double es = same ? 1 : beta_draw(r, 5, 2);
    double rl = same ? 1 : es + 0.05 * normal(r);
    out[1] = same ? 1 : bern(r, 0.95);                      /* finish_agree */
    out[2] = same;                                          /* exact */
    out[3] = es;                                            /* edit_sim */
    out[4] = rl < 0 ? 0 : rl > 1 ? 1 : rl;                  /* rouge_l */
    out[5] = same ? 1 : exp(0.25 * normal(r));              /* length_ratio */
    if (pr->json) {
        out[6] = bern(r, 0.98);                             /* json_valid */
        out[7] = same ? 1 : bern(r, 0.5);                   /* json_same */
    }
    if (pr->tools)
        out[8] = same ? 1 : bern(r, 0.97);                  /* tool_agree */
    out[9] = bern(r, 0.02);                                 /* refusal_other */
}

static void draw_pair(struct stats_rng *r, const struct decsim_scenario *sc, struct verdict_obs *o)
{
    verdict_obs_clear(o);
    struct prompt pr;
    pr.L = exp(0.5 * normal(r));
    double m = sc->determinism;
    pr.d = beta_draw(r, 4 * m, 4 * (1 - m));
    pr.json = bern(r, 0.10);
    pr.tools = bern(r, 0.05);

    o->p_ok = bern(r, sc->p_ok);
    o->c_ok = bern(r, sc->c_ok);
    o->c_timeout = !o->c_ok && bern(r, 0.3);
    o->p_lat = 800 * pr.L * exp(sc->lat_sigma * normal(r));
    o->c_lat = o->c_ok ? 800 * pr.L * exp(sc->lat_sigma * normal(r)) * sc->lat_factor : NAN;
    if (!o->p_ok)
        o->p_lat = NAN;
    compare(r, sc, &pr, o->p_ok, o->c_ok, true, o->cmp_c);
    if (bern(r, sc->aa_share)) {
        bool a_ok = bern(r, sc->p_ok);
        o->has_aa = true;
        compare(r, sc, &pr, o->p_ok, a_ok, false, o->cmp_aa);
    }
}

/* ---------------------------------------------------------------- runs */

/* percentile q of the n values (sorted in place), NAN when none */
static double pct(double *v, uint32_t n, double q)
{
    stats_sort(v, n);
    return stats_percentile(v, n, q);
}

int decsim_run(const struct decsim_scenario *sc, const struct verdict_rules *rules, uint32_t runs,
               uint32_t pairs, uint64_t seed, struct decsim_result *out)
{
    memset(out, 0, sizeof *out);
    double *alarm_n = calloc(runs ? runs : 1, sizeof *alarm_n);
    double *ready_n = calloc(runs ? runs : 1, sizeof *ready_n);
    double *stop_n = calloc(runs ? runs : 1, sizeof *stop_n);
    struct verdict_state *st = malloc(sizeof *st);
    if (!alarm_n || !ready_n || !stop_n || !st) {
        free(alarm_n);
        free(ready_n);
        free(stop_n);
        free(st);
        return -1;
    }
    uint32_t na = 0, nr = 0, ns = 0;
    for (const char *c = sc->name; *c; c++) /* each scenario its own streams */
        seed = (seed ^ (unsigned char)*c) * 0x100000001b3ull;
    for (uint32_t run = 0; run < runs; run++) {
        struct stats_rng rng;
        stats_rng_seed(&rng, seed ^ (0x9e3779b97f4a7c15ull * (run + 1)));
        verdict_init(st, rules);
        struct verdict_obs o;
        for (uint32_t i = 1; i <= pairs; i++) {
            draw_pair(&rng, sc, &o);
            verdict_add(st, &o);
            if (i % VERDICT_LOOK_EVERY == 0 || i == pairs)
                verdict_look(st);
        }
        if (st->first_alarm_n) {
            struct verdict v;
            verdict_decide(st, &v);
            for (int f = 0; f < VERDICT_FAMILIES; f++)
                if (v.alarm[f]) {
                    out->alarm[f]++;
                    break;
                }
            alarm_n[na++] = (double)st->first_alarm_n;
        }
        if (st->first_ready_n)
            ready_n[nr++] = (double)st->first_ready_n;
        if (st->stop_n)
            stop_n[ns++] = (double)st->stop_n;
    }
    out->runs = runs;
    out->alarms = na;
    out->ready_first = nr;
    out->stops = ns;
    out->alarm_median = pct(alarm_n, na, 0.5);
    out->alarm_p90 = pct(alarm_n, na, 0.9);
    out->ready_median = pct(ready_n, nr, 0.5);
    out->stop_median = pct(stop_n, ns, 0.5);
    free(alarm_n);
    free(ready_n);
    free(stop_n);
    free(st);
    return 0;
}

/* ---------------------------------------------------------------- command */

static const char usage[] =
    "usage: shade simulate-decisions [--runs N] [--pairs N] [--seed N] [--scenario NAME]\n"
    "                                [--format text|json]\n"
    "Feeds synthetic pair streams to the real decision rules, looking every 10 pairs,\n"
    "and prints per scenario: runs with any alarm, the family that fired first, pairs\n"
    "to the first alarm (median, p90), runs declared ready first, auto-stops.\n"
    "Defaults: 1000 runs of up to 2000 pairs, seed 1, every scenario.\n";


static void pn(double x)
{
    if (isnan(x))
        printf("%8s", "-");
    else
        printf("%8.0f", x);
}

int decsim_main(int argc, char **argv)
{
    struct simopts opt = { .runs = 1000, .pairs = 2000, .seed = 1 };
    bool done;
    int rc = simopts_parse(argc, argv, "simulate-decisions", usage, true, &opt, &done);
    if (done)
        return rc;
    uint64_t runs = opt.runs, pairs = opt.pairs, seed = opt.seed;
    const char *only = opt.scenario;
    bool json = opt.json;
    bool found = !only;
    for (unsigned k = 0; k < decsim_nscenarios && !found; k++)
        found = strcmp(decsim_scenarios[k].name, only) == 0;
    if (!found) {
        fprintf(stderr, "shade simulate-decisions: no scenario named '%s'; known:", only);
        for (unsigned k = 0; k < decsim_nscenarios; k++)
            fprintf(stderr, " %s", decsim_scenarios[k].name);
        fputc('\n', stderr);
        return 2;
    }
    struct verdict_rules rules;
    verdict_rules_default(&rules);
    if (json)
        printf("{\"runs\":%llu,\"pairs\":%llu,\"seed\":%llu,\"look_every\":%d,\"scenarios\":[",
               (unsigned long long)runs, (unsigned long long)pairs, (unsigned long long)seed,
               VERDICT_LOOK_EVERY);
    else
        printf("%llu runs of up to %llu pairs, a look every %d pairs, seed %llu\n\n"
               "%-20s %6s  %-30s %8s %8s %7s %8s %6s %8s\n",
               (unsigned long long)runs, (unsigned long long)pairs, VERDICT_LOOK_EVERY,
               (unsigned long long)seed, "scenario", "alarm", "first alarm by family "
               "(s/l/q/j)", "median", "p90", "ready", "median", "stop", "median");
    bool first = true;
    for (unsigned k = 0; k < decsim_nscenarios; k++) {
        const struct decsim_scenario *sc = &decsim_scenarios[k];
        if (only && strcmp(sc->name, only) != 0)
            continue;
        struct decsim_result r;
        if (decsim_run(sc, &rules, (uint32_t)runs, (uint32_t)pairs, seed, &r) < 0) {
            fprintf(stderr, "shade simulate-decisions: out of memory\n");
            return 1;
        }
        double R = (double)r.runs;
        if (json) {
            printf("%s{\"name\":\"%s\",\"null\":%s,\"alarm_rate\":%.4f,\"alarm_by_family\":{",
                   first ? "" : ",", sc->name, sc->null ? "true" : "false", r.alarms / R);
            for (int f = 0; f < VERDICT_FAMILIES; f++)
                printf("%s\"%s\":%.4f", f ? "," : "", verdict_family_names[f], r.alarm[f] / R);
            printf("},\"alarm_median\":");
            isnan(r.alarm_median) ? printf("null") : printf("%.0f", r.alarm_median);
            printf(",\"alarm_p90\":");
            isnan(r.alarm_p90) ? printf("null") : printf("%.0f", r.alarm_p90);
            printf(",\"ready_first_rate\":%.4f,\"ready_median\":", r.ready_first / R);
            isnan(r.ready_median) ? printf("null") : printf("%.0f", r.ready_median);
            printf(",\"stop_rate\":%.4f,\"stop_median\":", r.stops / R);
            isnan(r.stop_median) ? printf("null") : printf("%.0f", r.stop_median);
            printf("}");
        } else {
            char fam[64];
            snprintf(fam, sizeof fam, "%.3f/%.3f/%.3f/%.3f", r.alarm[0] / R, r.alarm[1] / R,
                     r.alarm[2] / R, r.alarm[3] / R);
            printf("%-20s %5.1f%%  %-30s", sc->name, 100 * r.alarms / R, fam);
            pn(r.alarm_median);
            pn(r.alarm_p90);
            printf(" %6.1f%%", 100 * r.ready_first / R);
            pn(r.ready_median);
            printf(" %5.1f%%", 100 * r.stops / R);
            pn(r.stop_median);
            printf("\n");
        }
        fflush(stdout);
        first = false;
    }
    if (json)
        printf("]}\n");
    return 0;
}
