/* rollsim.c — the rollout simulator (rollsim.h).
 *
 * The model of a rollout, deliberately plain and written out here so a
 * reader can judge it:
 *   - traffic: requests arrive as a Poisson process whose rate swings like
 *     a day compressed into 30 minutes: rate x (1 + 0.7 sin(2 pi (t + phi)
 *     / 1800 s)), between 0.3x and 1.7x, phi random per run, so traffic
 *     changes within a step and between steps (a run lasts 5 to 60
 *     simulated minutes);
 *   - assignment: each request is a unit with a random 8-byte id (or, in
 *     the sticky-users scenario, one of a pool of users drawn with Zipf(1)
 *     weights), and goes to the canary when canary_bucket(salt, unit) <
 *     share x 100 — the real sticky hash, a salt per run; a broken split
 *     uses split_factor x share instead;
 *   - outcome: each arm succeeds with its rate; 30 % of failures are
 *     timeouts; during the "bad hour" (from a uniform time in the first 20
 *     minutes, for 3,600 s) both arms' success is scaled by bad_success /
 *     p_base and both are bad_slow x slower;
 *   - latency = 800 ms x L x lognormal(0, 0.25), L ~ lognormal(0, 0.5) a
 *     per-request size factor, x lat_factor on the canary; half the
 *     requests are streamed, TTFT = 300 ms x lognormal(0, 0.4) x
 *     ttft_factor on the canary;
 *   - pairing, as the gateway does it: each canary request that succeeded
 *     or timed out is paired with the newest baseline request not yet
 *     paired that succeeded (a pending slot, replaced by every newer
 *     baseline success); the pair counts lat_slow when the canary timed
 *     out or took more than latency_margin x the baseline, lat_fast when
 *     it did not time out and took less than latency_ratio_max x; streamed
 *     canary requests are paired the same way, with the newest unpaired
 *     streamed baseline success, on TTFT.  Canary errors that are not
 *     timeouts count only as failures;
 *   - refusals: each answered request is a refusal with chance 2 %, the
 *     canary's + refuse_extra;
 *   - quality: ROLLSIM_QUALITY_SAMPLE of the canary's answered requests are
 *     paired samples; agreement(baseline, canary) and agreement(baseline,
 *     baseline again) are each 0.7 + 0.15 N(0, 1), clamped to [0, 1], the
 *     canary's minus quality_drop; D is their difference, worse when D <
 *     -quality_margin (equal arms: D symmetric about 0);
 *   - the judge (scenarios with judge_loss > 0 only, which turn the judge
 *     family on): every quality sample is judged at once; the two orders
 *     agree on a win or a loss with chance ROLLSIM_JUDGE_AGREE, and an
 *     agreeing verdict is a loss for the canary with chance judge_loss;
 *     a scenario may pair (and judge) a larger share (quality_sample);
 *   - the decision: the counts since the last check are added and
 *     canary_check runs every 10 simulated seconds, under rollsim_rules
 *     (canary_rules_default with 60-second steps); the run ends at the
 *     first promote, rollback or freeze, or undecided after 6 hours.
 *   A baseline request's latency is drawn only when it is paired (it is
 *   independent of everything else), which keeps a run cheap.
 */
#include "rollsim.h"

#include "simopts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

#define PERIOD 1800.0   /* the compressed day */
#define SWING 0.7       /* rate between (1 - SWING) and (1 + SWING) x the mean */
#define BAD_HOUR 3600.0
#define TIMEOUT_SHARE 0.3
#define STREAMED 0.5
#define REFUSE 0.02     /* the baseline's refusals among answered requests */

const struct rollsim_scenario rollsim_scenarios[] = {
    /* name, what, null, expect, rate, p_base, p_can, lat, ttft, split, bad_success, bad_slow, users, cost,
       refuse_extra, quality_drop, judge_loss, quality_sample */
    { "aa", "equal arms, 99 % success, 50 req/s", true, RS_PROMOTE, 50, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "aa_bad_hour", "equal arms; for an hour both fail 10 % and are 2x slower", true, RS_PROMOTE,
      50, 0.99, 0.99, 1, 1, 1, 0.90, 2, 0, 1, 0, 0, 0, 0 },
    { "aa_low_traffic", "equal arms at 5 req/s", true, RS_PROMOTE, 5, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "aa_sticky_users", "equal arms; units are 1,000 users with Zipf(1) traffic", true, RS_PROMOTE,
      50, 0.99, 0.99, 1, 1, 1, 0, 1, 1000, 1, 0, 0, 0, 0 },
    { "latency_x1.5", "the canary 1.5x slower", false, RS_ROLLBACK, 50, 0.99, 0.99, 1.5, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "latency_x2", "the canary 2x slower", false, RS_ROLLBACK, 50, 0.99, 0.99, 2, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "errors_plus5", "the canary fails 5 points more (94 % vs 99 %)", false, RS_ROLLBACK, 50, 0.99,
      0.94, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "errors_plus2", "the canary fails 2 points more (97 % vs 99 %)", false, RS_ROLLBACK, 50, 0.99,
      0.97, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "ttft_x1.2", "the canary's TTFT 1.2x (exactly latency_margin)", false, RS_ROLLBACK, 50, 0.99,
      0.99, 1, 1.2, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "ttft_x1.5", "the canary's TTFT 1.5x", false, RS_ROLLBACK, 50, 0.99, 0.99, 1, 1.5, 1, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "broken_split", "equal arms, the canary gets 1.5x its share", true, RS_FREEZE, 50, 0.99, 0.99, 1,
      1, 1.5, 0, 1, 0, 1, 0, 0, 0, 0 },
    { "cost_x2", "the canary costs 2x per request (says more, or a dearer price)", false, RS_ROLLBACK, 50, 0.99,
      0.99, 1, 1, 1, 0, 1, 0, 2, 0, 0, 0, 0 },
    { "cost_x1.25", "the canary costs 1.25x per request (exactly cost_margin)", false, RS_ROLLBACK, 50, 0.99,
      0.99, 1, 1, 1, 0, 1, 0, 1.25, 0, 0, 0, 0 },
    { "dead", "the canary fails half its requests", false, RS_ROLLBACK, 50, 0.99, 0.50, 1, 1, 1, 0, 1,
      0, 1, 0, 0, 0, 0 },
    { "refuses_plus10", "the canary refuses 10 points more (12 % vs 2 % of answers)", false, RS_ROLLBACK, 50,
      0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0.10, 0, 0, 0 },
    { "refuses_plus2", "the canary refuses 2 points more (4 % vs 2 %)", false, RS_ROLLBACK, 50, 0.99, 0.99, 1,
      1, 1, 0, 1, 0, 1, 0.02, 0, 0, 0 },
    { "quality_drop0.3", "the canary's answers agree 0.3 less with the baseline's (garbled)", false,
      RS_ROLLBACK, 50, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0.3, 0, 0 },
    { "quality_drop0.1", "the canary's answers agree 0.1 less (exactly quality_margin)", false, RS_ROLLBACK, 50,
      0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0.1, 0, 0 },
    { "aa_judged", "equal arms, the quality pairs judged (the judge cannot tell them apart)", true, RS_PROMOTE,
      50, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0.5, 0 },
    { "judge_lose60", "the judge prefers the baseline in 60 % of agreeing verdicts", false, RS_ROLLBACK, 50,
      0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0.6, 0 },
    { "judge_lose55", "the judge prefers the baseline in 55 % of agreeing verdicts", false, RS_ROLLBACK, 50,
      0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0.55, 0 },
    { "aa_judged_s50", "aa_judged with half the canary's answers paired and judged", true, RS_PROMOTE,
      50, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0.5, 0.5 },
    { "judge_lose60_s50", "judge_lose60 with half the canary's answers paired and judged", false, RS_ROLLBACK,
      50, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0.6, 0.5 },
    { "judge_lose55_s50", "judge_lose55 with half the canary's answers paired and judged", false, RS_ROLLBACK,
      50, 0.99, 0.99, 1, 1, 1, 0, 1, 0, 1, 0, 0, 0.55, 0.5 },
};
const unsigned rollsim_nscenarios = sizeof rollsim_scenarios / sizeof rollsim_scenarios[0];

const struct rollsim_scenario *rollsim_find(const char *name)
{
    for (unsigned k = 0; k < rollsim_nscenarios; k++)
        if (strcmp(rollsim_scenarios[k].name, name) == 0)
            return &rollsim_scenarios[k];
    return NULL;
}

void rollsim_rules(struct canary_rules *r)
{
    canary_rules_default(r);
    for (size_t i = 0; i < r->nsteps; i++)
        r->steps[i].min_seconds = 60;
    r->quality = true;
}

/* ---------------------------------------------------------------- random */

static double unif(struct stats_rng *r) { return ((double)(stats_rng_next(r) >> 11) + 0.5) * 0x1p-53; }

static double normal(struct stats_rng *r)
{
    return sqrt(-2 * log(unif(r))) * cos(6.283185307179586 * unif(r));
}

static bool bern(struct stats_rng *r, double p) { return unif(r) < p; }

/* ---------------------------------------------------------------- one run */

struct pending {
    bool have;
    double slow; /* the bad-hour factor when the baseline request ran */
};

struct run_out {
    enum canary_action action; /* CA_NONE: undecided */
    int family;
    uint64_t exposure;
    double share, seconds;
    uint64_t requests;
};

/* the user index for a uniform u: the first k with cdf[k] >= u */
static uint32_t zipf_pick(const double *cdf, uint32_t n, double u)
{
    uint32_t l = 0, r = n - 1;
    while (l < r) {
        uint32_t m = l + (r - l) / 2;
        if (cdf[m] >= u)
            r = m;
        else
            l = m + 1;
    }
    return l;
}

static void one_run(const struct rollsim_scenario *sc, const struct canary_rules *rules,
                    struct stats_rng *rng, const double *zipf_cdf, struct run_out *out)
{
    memset(out, 0, sizeof *out);
    out->action = CA_NONE;
    out->family = -1;
    unsigned char salt[8];
    uint64_t sv = stats_rng_next(rng);
    memcpy(salt, &sv, sizeof salt);
    double phi = unif(rng) * PERIOD;
    double bad_from = sc->bad_success > 0 ? unif(rng) * 1200 : INFINITY;
    double bad_to = bad_from + BAD_HOUR;

    struct canary_state st;
    struct canary_counts delta;
    struct canary_decision d;
    canary_init(&st, 0);
    memset(&delta, 0, sizeof delta);
    struct pending lat = { 0 }, ttft = { 0 };
    /* the units seen in the current step (the split is tested on new units) */
    unsigned char *seen = zipf_cdf ? calloc(sc->users, 1) : NULL;
    size_t seen_step = 0;
    double t = 0, next_check = ROLLSIM_CHECK_EVERY;
    double share = canary_share(&st, rules);
    for (;;) {
        double rate = sc->rate * (1 + SWING * sin(6.283185307179586 * (t + phi) / PERIOD));
        t += -log(unif(rng)) / rate;
        while (t >= next_check) {
            canary_add(&st, &delta);
            memset(&delta, 0, sizeof delta);
            double step_share = canary_share(&st, rules);
            canary_check(&st, rules, next_check, &d);
            if (seen && st.step != seen_step) {
                memset(seen, 0, sc->users);
                seen_step = st.step;
            }
            if (d.action == CA_ROLLBACK || d.action == CA_PROMOTE || d.action == CA_FREEZE) {
                free(seen);
                out->action = d.action;
                out->family = d.family;
                out->exposure = st.total.can_req;
                out->share = step_share;
                out->seconds = next_check;
                return;
            }
            share = canary_share(&st, rules);
            next_check += ROLLSIM_CHECK_EVERY;
            if (next_check > ROLLSIM_MAX_SECONDS) {
                free(seen);
                out->exposure = st.total.can_req;
                out->share = share;
                out->seconds = ROLLSIM_MAX_SECONDS;
                return;
            }
        }
        out->requests++;

        /* assignment: the real sticky hash */
        uint32_t bucket;
        bool new_unit = true;
        if (zipf_cdf) {
            uint32_t user = zipf_pick(zipf_cdf, sc->users, unif(rng));
            if (seen) {
                new_unit = !seen[user];
                seen[user] = 1;
            }
            unsigned char u[4] = { (unsigned char)user, (unsigned char)(user >> 8),
                                   (unsigned char)(user >> 16), (unsigned char)(user >> 24) };
            bucket = canary_bucket((const char *)salt, sizeof salt, (const char *)u, sizeof u);
        } else {
            uint64_t id = stats_rng_next(rng);
            unsigned char u[8];
            memcpy(u, &id, sizeof u);
            bucket = canary_bucket((const char *)salt, sizeof salt, (const char *)u, sizeof u);
        }
        bool can = bucket < share * sc->split_factor * 100;

        bool bad = t >= bad_from && t < bad_to;
        double p = can ? sc->p_can : sc->p_base;
        if (bad)
            p *= sc->bad_success / sc->p_base;
        double slow = bad ? sc->bad_slow : 1;
        bool ok = bern(rng, p);
        bool timeout = !ok && bern(rng, TIMEOUT_SHARE);
        bool streamed = bern(rng, STREAMED);

        if (new_unit) {
            if (can)
                delta.can_units++;
            else
                delta.base_units++;
        }
        bool refused = ok && bern(rng, REFUSE + (can ? sc->refuse_extra : 0));
        if (!can) {
            delta.base_req++;
            delta.base_fail += !ok;
            delta.base_refusal += refused;
            if (ok) {
                lat = (struct pending){ true, slow };
                if (streamed)
                    ttft = (struct pending){ true, slow };
            }
            continue;
        }
        delta.can_req++;
        delta.can_fail += !ok;
        delta.can_refusal += refused;
        if (ok && bern(rng, sc->quality_sample > 0 ? sc->quality_sample : ROLLSIM_QUALITY_SAMPLE)) {
            double gc = 0.7 + 0.15 * normal(rng) - sc->quality_drop, gn = 0.7 + 0.15 * normal(rng);
            gc = gc < 0 ? 0 : gc > 1 ? 1 : gc;
            gn = gn < 0 ? 0 : gn > 1 ? 1 : gn;
            if (gc - gn < -rules->quality_margin)
                delta.qual_worse++;
            else
                delta.qual_other++;
            if (sc->judge_loss > 0 && bern(rng, ROLLSIM_JUDGE_AGREE)) {
                if (bern(rng, sc->judge_loss))
                    delta.judge_loss++;
                else
                    delta.judge_win++;
            }
        }
        if (!ok && !timeout)
            continue;
        if (lat.have) {
            if (!timeout) { /* cost per request: tokens of a request of its own size, x the factor */
                double cb = 0.001 * exp(0.5 * normal(rng)), cc = 0.001 * exp(0.5 * normal(rng)) *
                                                                     (sc->cost_factor > 0 ? sc->cost_factor : 1);
                if (cc > rules->cost_margin * cb)
                    delta.cost_high++;
                else
                    delta.cost_other++;
            }
            double b = 800 * exp(0.5 * normal(rng) + 0.25 * normal(rng)) * lat.slow;
            double c = 800 * exp(0.5 * normal(rng) + 0.25 * normal(rng)) * sc->lat_factor * slow;
            if (timeout || c > rules->latency_margin * b)
                delta.lat_slow++;
            else
                delta.lat_other++;
            if (!timeout && c < rules->latency_ratio_max * b)
                delta.lat_fast++;
            else
                delta.lat_notfast++;
            lat.have = false;
        }
        if (streamed && ttft.have) {
            double b = 300 * exp(0.4 * normal(rng)) * ttft.slow;
            double c = 300 * exp(0.4 * normal(rng)) * sc->ttft_factor * slow;
            if (timeout || c > rules->latency_margin * b)
                delta.ttft_slow++;
            else
                delta.ttft_other++;
            ttft.have = false;
        }
    }
}

/* ---------------------------------------------------------------- runs */

/* percentile q of the n values (sorted in place), NAN when none */
static double pct(double *v, uint32_t n, double q)
{
    stats_sort(v, n);
    return stats_percentile(v, n, q);
}

int rollsim_run(const struct rollsim_scenario *sc, const struct canary_rules *rules, uint32_t runs,
                uint64_t seed, struct rollsim_result *out)
{
    memset(out, 0, sizeof *out);
    size_t n = runs ? runs : 1;
    double *expo = malloc(n * sizeof *expo), *shr = malloc(n * sizeof *shr),
           *secs = malloc(n * sizeof *secs);
    double *cdf = sc->users ? malloc(sc->users * sizeof *cdf) : NULL;
    if (!expo || !shr || !secs || (sc->users && !cdf)) {
        free(expo);
        free(shr);
        free(secs);
        free(cdf);
        return -1;
    }
    if (cdf) {
        double s = 0;
        for (unsigned k = 0; k < sc->users; k++)
            cdf[k] = s += 1.0 / (k + 1);
        for (unsigned k = 0; k < sc->users; k++)
            cdf[k] /= s;
        cdf[sc->users - 1] = 1;
    }
    for (const char *c = sc->name; *c; c++) /* each scenario its own streams */
        seed = (seed ^ (unsigned char)*c) * 0x100000001b3ull;
    uint32_t nd = 0;
    double requests = 0;
    for (uint32_t run = 0; run < runs; run++) {
        struct stats_rng rng;
        stats_rng_seed(&rng, seed ^ (0x9e3779b97f4a7c15ull * (run + 1)));
        struct run_out o;
        struct canary_rules rr = *rules; /* a judged scenario tests the judge family too */
        rr.judge = rr.judge || sc->judge_loss > 0;
        one_run(sc, &rr, &rng, cdf, &o);
        requests += (double)o.requests;
        switch (o.action) {
        case CA_ROLLBACK:
            out->rollbacks++;
            if (o.family >= 0 && o.family < CANARY_FAMILIES)
                out->rollback_family[o.family]++;
            out->rollback_early += o.share < 25;
            break;
        case CA_PROMOTE:
            out->promotions++;
            break;
        case CA_FREEZE:
            out->freezes++;
            break;
        default:
            out->undecided++;
            continue;
        }
        expo[nd] = (double)o.exposure;
        shr[nd] = o.share;
        secs[nd] = o.seconds;
        nd++;
    }
    out->runs = runs;
    out->exposure_p90 = pct(expo, nd, 0.9);
    out->exposure_median = pct(expo, nd, 0.5);
    out->share_median = pct(shr, nd, 0.5);
    out->seconds_median = pct(secs, nd, 0.5);
    out->requests_per_run = runs ? requests / runs : 0;
    free(expo);
    free(shr);
    free(secs);
    free(cdf);
    return 0;
}

/* ---------------------------------------------------------------- command */

static const char usage[] =
    "usage: shade simulate-rollouts [--runs N] [--seed N] [--scenario NAME] [--format text|json]\n"
    "Simulates canary rollouts (traffic swinging 0.3x..1.7x, sticky assignment by\n"
    "canary_bucket, paired latency and TTFT) and runs the real rollout decision every\n"
    "10 simulated seconds.  Prints per scenario: rollbacks (and the family), rollbacks\n"
    "at a step below 25 %, promotions, freezes, undecided runs, canary requests served\n"
    "by the decision (median, p90), the step's share and the seconds at the decision.\n"
    "Defaults: 1000 runs, seed 1, every scenario.\n";


static void pn(double x, int w)
{
    if (isnan(x))
        printf(" %*s", w, "-");
    else
        printf(" %*.0f", w, x);
}

static void jnum(const char *key, double x)
{
    printf(",\"%s\":", key);
    isnan(x) ? printf("null") : printf("%.0f", x);
}

static const char *const expect_names[] = { "promote", "rollback", "freeze" };

int rollsim_main(int argc, char **argv)
{
    struct simopts opt = { .runs = 1000, .seed = 1 };
    bool done;
    int rc = simopts_parse(argc, argv, "simulate-rollouts", usage, false, &opt, &done);
    if (done)
        return rc;
    uint64_t runs = opt.runs, seed = opt.seed;
    const char *only = opt.scenario;
    bool json = opt.json;
    if (only && !rollsim_find(only)) {
        fprintf(stderr, "shade simulate-rollouts: no scenario named '%s'; known:", only);
        for (unsigned k = 0; k < rollsim_nscenarios; k++)
            fprintf(stderr, " %s", rollsim_scenarios[k].name);
        fputc('\n', stderr);
        return 2;
    }
    struct canary_rules rules;
    rollsim_rules(&rules);
    if (json) {
        printf("{\"runs\":%llu,\"seed\":%llu,\"check_every\":%.0f,\"steps\":[",
               (unsigned long long)runs, (unsigned long long)seed, ROLLSIM_CHECK_EVERY);
        for (size_t i = 0; i < rules.nsteps; i++)
            printf("%s{\"share\":%g,\"min_seconds\":%g,\"min_requests\":%llu}", i ? "," : "",
                   rules.steps[i].share, rules.steps[i].min_seconds,
                   (unsigned long long)rules.steps[i].min_requests);
        printf("],\"scenarios\":[");
    } else {
        printf("%llu runs per scenario, a check every %.0f s, steps", (unsigned long long)runs,
               ROLLSIM_CHECK_EVERY);
        for (size_t i = 0; i < rules.nsteps; i++)
            printf("%s %g%%", i ? "," : "", rules.steps[i].share);
        printf(" (>= %.0f s and %llu canary requests each), seed %llu\n\n", rules.steps[0].min_seconds,
               (unsigned long long)rules.steps[0].min_requests, (unsigned long long)seed);
        printf("%-16s %-8s %8s %-41s %7s %8s %7s %7s %8s %8s %6s %7s\n", "scenario", "goal", "rollback",
               " by family f/l/t/c/r/q/j", "<25%", "promote", "freeze", "undec.", "exp.med", "exp.p90", "share",
               "sec.med");
    }
    bool first = true;
    for (unsigned k = 0; k < rollsim_nscenarios; k++) {
        const struct rollsim_scenario *sc = &rollsim_scenarios[k];
        if (only && strcmp(sc->name, only) != 0)
            continue;
        struct rollsim_result r;
        if (rollsim_run(sc, &rules, (uint32_t)runs, seed, &r) < 0) {
            fprintf(stderr, "shade simulate-rollouts: out of memory\n");
            return 1;
        }
        double R = (double)r.runs;
        if (json) {
            printf("%s{\"name\":\"%s\",\"null\":%s,\"goal\":\"%s\",\"rollback_rate\":%.4f,"
                   "\"rollback_by_family\":{",
                   first ? "" : ",", sc->name, sc->null ? "true" : "false", expect_names[sc->expect],
                   r.rollbacks / R);
            for (int f = 0; f < CANARY_FAMILIES; f++)
                printf("%s\"%s\":%.4f", f ? "," : "", canary_family_names[f], r.rollback_family[f] / R);
            printf("},\"rollback_before_25_rate\":%.4f,\"promote_rate\":%.4f,\"freeze_rate\":%.4f,"
                   "\"undecided_rate\":%.4f",
                   r.rollback_early / R, r.promotions / R, r.freezes / R, r.undecided / R);
            jnum("exposure_median", r.exposure_median);
            jnum("exposure_p90", r.exposure_p90);
            jnum("share_median", r.share_median);
            jnum("seconds_median", r.seconds_median);
            printf(",\"requests_per_run\":%.0f}", r.requests_per_run);
        } else {
            char fam[64];
            snprintf(fam, sizeof fam, "%.3f/%.3f/%.3f/%.3f/%.3f/%.3f/%.3f", r.rollback_family[0] / R,
                     r.rollback_family[1] / R, r.rollback_family[2] / R, r.rollback_family[3] / R,
                     r.rollback_family[4] / R, r.rollback_family[5] / R, r.rollback_family[6] / R);
            printf("%-16s %-8s %7.1f%% %-41s %6.1f%% %7.1f%% %6.1f%% %6.1f%%", sc->name,
                   expect_names[sc->expect], 100 * r.rollbacks / R, fam, 100 * r.rollback_early / R,
                   100 * r.promotions / R, 100 * r.freezes / R, 100 * r.undecided / R);
            pn(r.exposure_median, 8);
            pn(r.exposure_p90, 8);
            pn(r.share_median, 6);
            pn(r.seconds_median, 7);
            printf("\n");
        }
        fflush(stdout);
        first = false;
    }
    if (json)
        printf("]}\n");
    return 0;
}
