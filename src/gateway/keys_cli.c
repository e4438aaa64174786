/* keys_cli.c — `shade keys create|list|show|revoke|rotate|usage`: the
 * virtual keys in the store, written directly (a serving gateway sees a
 * change within a second: it polls key_meta.version); doc/keys.md. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "buf.h"
#include "config.h"
#include "json.h"
#include "keys.h"
#include "keys_spec.h"
#include "keys_store.h"

static const char usage_keys[] =
    "usage: shade keys COMMAND (-c FILE | --db FILE) [options]\n"
    "\n"
    "Virtual API keys, kept in the store (shadow_store.path of the config, or\n"
    "--db).  A running gateway with auth.virtual_keys: true sees every change\n"
    "within a second.\n"
    "\n"
    "commands:\n"
    "  create --name NAME [options]   a new key; its secret is printed once\n"
    "  list                           every key (id, name, prefix, state, limits)\n"
    "  show ID                        one key\n"
    "  revoke ID                      the key stops working\n"
    "  rotate ID                      a new secret for the key (the old one stops working)\n"
    "  usage ID [--days N]            spend per day and model (default 30 days)\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   the gateway's configuration (for the store's path)\n"
    "  --db FILE           the store itself\n"
    "  --json              machine-readable output (the admin API's JSON)\n"
    "  -h, --help          this help (also: shade keys COMMAND --help)\n";

static const char usage_create[] =
    "usage: shade keys create (-c FILE | --db FILE) --name NAME [options]\n"
    "\n"
    "Create a virtual key and print its secret (only this once: store it).\n"
    "\n"
    "options:\n"
    "  --name NAME          the team or app (logs, metrics, errors); unique among live keys\n"
    "  --models A,B         the models it may use (default: all)\n"
    "  --rpm N              requests per minute (0 = no limit)\n"
    "  --tpm N              tokens per minute\n"
    "  --concurrency N      requests in flight\n"
    "  --budget-usd X       hard budget per period, in USD\n"
    "  --soft-usd X         soft budget (an alert) per period\n"
    "  --period P           day, week or month (UTC; default day)\n"
    "  --expires-in D       e.g. 30d, 12h, 90m, 2w (default: never)\n"
    "  --priority N         0-9 in the admission queue (default: the request's own)\n"
    "  --metrics            its own label in the per-key metrics\n"
    "  --metadata JSON      a JSON object kept with the key\n"
    "  --json               print the key as JSON\n";

static const char usage_list[] =
    "usage: shade keys list (-c FILE | --db FILE) [--json]\n"
    "\n"
    "Every key in the store: id, name, prefix, state (active, revoked, expired),\n"
    "limits, budget and expiry.  Never a secret.\n";

static const char usage_id[] =
    "usage: shade keys show|revoke|rotate ID (-c FILE | --db FILE) [--json]\n"
    "\n"
    "show: one key.  revoke: it stops working at once (a running gateway\n"
    "refuses it within a second).  rotate: a new secret for the same key, id,\n"
    "limits and ledger; the old secret stops working; the new one is printed\n"
    "once.\n";

static const char usage_usage[] =
    "usage: shade keys usage ID (-c FILE | --db FILE) [--days N] [--json]\n"
    "\n"
    "The key's spend ledger: requests, tokens and USD per UTC day and model,\n"
    "for the last N days (default 30), and the totals.\n";

static bool is_help(const char *a) { return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0; }

struct opts {
    const char *cmd, *config, *db, *id;
    bool json, metrics;
    const char *name, *models, *rpm, *tpm, *conc, *budget, *soft, *period, *expires, *prio, *metadata, *days;
};

static int bad(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *usage, const char *fmt, ...)
{
    fprintf(stderr, "shade keys: ");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", usage);
    return 2;
}

static bool integer(const char *s)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    (void)v;
    return !*end && !errno;
}

static bool number(const char *s)
{
    if (!s || !*s)
        return false;
    char *end;
    double v = strtod(s, &end);
    return !*end && v == v && v - v == 0; /* finite */
}

/* The flags of create as the admin API's body. */
static int body_of(const struct opts *o, struct buf *b)
{
    static const struct { const char *flag; size_t off; } ints[] = {
        { "--rpm", offsetof(struct opts, rpm) },
        { "--tpm", offsetof(struct opts, tpm) },
        { "--concurrency", offsetof(struct opts, conc) },
        { "--priority", offsetof(struct opts, prio) },
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const char *v = *(const char *const *)((const char *)o + ints[i].off);
        if (v && !integer(v))
            return bad(usage_create, "%s: expected an integer", ints[i].flag);
    }
    if (o->budget && !number(o->budget))
        return bad(usage_create, "%s: expected a number", "--budget-usd");
    if (o->soft && !number(o->soft))
        return bad(usage_create, "%s: expected a number", "--soft-usd");
    buf_append_str(b, "{\"name\":");
    json_buf_str(b, o->name);
    if (o->models) {
        buf_append_str(b, ",\"models\":[");
        const char *p = o->models;
        for (int n = 0; *p; n++) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            char *m = strndup(p, len);
            if (!m)
                return 1;
            if (n)
                buf_append_str(b, ",");
            json_buf_str(b, m);
            free(m);
            p += len + (comma ? 1 : 0);
        }
        buf_append_str(b, "]");
    }
    if (o->rpm || o->tpm || o->conc) {
        buf_append_str(b, ",\"limits\":{");
        const char *sep = "";
        if (o->rpm)
            buf_printf(b, "\"rpm\":%s", o->rpm), sep = ",";
        if (o->tpm)
            buf_printf(b, "%s\"tpm\":%s", sep, o->tpm), sep = ",";
        if (o->conc)
            buf_printf(b, "%s\"concurrency\":%s", sep, o->conc);
        buf_append_str(b, "}");
    }
    if (o->budget || o->soft || o->period) {
        buf_append_str(b, ",\"budget\":{");
        const char *sep = "";
        if (o->budget)
            buf_printf(b, "\"usd\":%s", o->budget), sep = ",";
        if (o->soft)
            buf_printf(b, "%s\"soft_usd\":%s", sep, o->soft), sep = ",";
        if (o->period) {
            buf_printf(b, "%s\"period\":", sep);
            json_buf_str(b, o->period);
        }
        buf_append_str(b, "}");
    }
    if (o->expires) {
        buf_append_str(b, ",\"expires_in\":");
        json_buf_str(b, o->expires);
    }
    if (o->prio)
        buf_printf(b, ",\"priority\":%s", o->prio);
    if (o->metrics)
        buf_append_str(b, ",\"metrics\":true");
    if (o->metadata) {
        buf_append_str(b, ",\"metadata\":");
        buf_append_str(b, o->metadata);
    }
    buf_append_str(b, "}");
    return buf_data(b) ? 0 : 1;
}

static void print_key(const struct ks_key *k, const char *secret, bool json)
{
    int64_t now = (int64_t)time(NULL);
    if (json) {
        struct buf b = { 0 };
        ks_key_json(&b, k, now, secret);
        printf("%.*s\n", (int)buf_used(&b), buf_data(&b));
        buf_free(&b);
        return;
    }
    printf("id:       %s\nname:     %s\nprefix:   %s\nstate:    %s\n", k->id, k->spec.name, k->prefix,
           ks_state(k, now));
    if (secret)
        printf("key:      %s\n", secret);
    printf("models:   ");
    for (size_t i = 0; i < k->spec.nmodels; i++)
        printf("%s%s", i ? "," : "", k->spec.models[i]);
    printf("%s\nlimits:   rpm %u, tpm %u, concurrency %u\n", k->spec.nmodels ? "" : "(all)", k->spec.lim.rpm,
           k->spec.lim.tpm, k->spec.lim.concurrency);
    for (size_t i = 0; i < k->spec.nmlim; i++)
        printf("          %s: rpm %u, tpm %u, concurrency %u\n", k->spec.mlim[i].model, k->spec.mlim[i].lim.rpm,
               k->spec.mlim[i].lim.tpm, k->spec.mlim[i].lim.concurrency);
    if (k->spec.budget.usd > 0 || k->spec.budget.soft_usd > 0)
        printf("budget:   $%.2f (soft $%.2f) per %s\n", k->spec.budget.usd, k->spec.budget.soft_usd,
               key_period_names[k->spec.budget.period % 3]);
    if (k->spec.expires_unix) {
        char t[32];
        time_t e = (time_t)k->spec.expires_unix;
        struct tm tm;
        strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&e, &tm));
        printf("expires:  %s\n", t);
    }
    if (secret)
        printf("\nThe key is shown only this once: store it now.\n");
}

static int list_row(struct ks_key *k, void *arg)
{
    int64_t now = *(int64_t *)arg;
    char lim[48], budget[40] = "-", exp[24] = "never";
    snprintf(lim, sizeof lim, "%u/%u/%u", k->spec.lim.rpm, k->spec.lim.tpm, k->spec.lim.concurrency);
    if (k->spec.budget.usd > 0)
        snprintf(budget, sizeof budget, "$%.2f/%s", k->spec.budget.usd, key_period_names[k->spec.budget.period % 3]);
    if (k->spec.expires_unix) {
        time_t e = (time_t)k->spec.expires_unix;
        struct tm tm;
        strftime(exp, sizeof exp, "%Y-%m-%d %H:%M", gmtime_r(&e, &tm));
    }
    printf("%-17s %-24s %-13s %-8s %-20s %-14s %s\n", k->id, k->spec.name, k->prefix, ks_state(k, now), lim, budget,
           exp);
    return 0;
}

static int list_json(struct ks_key *k, void *arg)
{
    struct buf *b = arg;
    if (buf_used(b) > 1)
        buf_append_str(b, ",");
    ks_key_json(b, k, (int64_t)time(NULL), NULL);
    return 0;
}

struct usage_acc {
    bool json;
    struct buf *b;
    struct ks_usage t;
};

static int usage_row(const struct ks_spend *s, void *arg)
{
    struct usage_acc *u = arg;
    if (!u->json) {
        char day[11];
        ks_day_str(s->day, day);
        printf("%-10s  %-24s %10lld %12lld %12lld %12.6f\n", day, s->model, (long long)s->requests,
               (long long)s->tokens_in, (long long)s->tokens_out, s->cost_usd);
    }
    ks_usage_row(u->json ? u->b : NULL, &u->t, s);
    return 0;
}

static int run(const struct opts *o, sqlite3 *db, const struct config *cfg)
{
    int64_t now = (int64_t)time(NULL);
    struct ks_key k;
    char secret[KS_SECRET_LEN + 1] = "";
    int rc;
    if (strcmp(o->cmd, "create") == 0) {
        struct buf b = { 0 };
        if ((rc = body_of(o, &b)) != 0) {
            buf_free(&b);
            return rc;
        }
        struct key_spec spec;
        struct key_spec_error e;
        rc = key_spec_parse(buf_data(&b), buf_used(&b), now, &spec, &e);
        buf_free(&b);
        if (rc < 0) {
            fprintf(stderr, "shade keys create: %s\n", e.message);
            return 2;
        }
        const struct config_auth *a = cfg ? auth_config(cfg) : NULL;
        for (size_t i = 0; a && i < a->nkeys; i++)
            if (strcmp(a->keys[i].name, spec.name) == 0) {
                fprintf(stderr, "shade keys create: a key in the configuration (auth.keys) is named '%s'\n",
                        spec.name);
                key_spec_free(&spec);
                return 1;
            }
        rc = ks_create(db, &spec, now, &k, secret);
        if (rc == KS_CONFLICT)
            fprintf(stderr, "shade keys create: a live key is already named '%s' (rotate it, or revoke it first)\n",
                    spec.name);
        else if (rc != KS_OK)
            fprintf(stderr, "shade keys create: %s\n", ks_errmsg(db));
        key_spec_free(&spec);
        if (rc != KS_OK)
            return 1;
        print_key(&k, secret, o->json);
        memset(secret, 0, sizeof secret);
        ks_key_free(&k);
        return 0;
    }
    if (strcmp(o->cmd, "list") == 0) {
        if (o->json) {
            struct buf b = { 0 };
            buf_append_str(&b, "[");
            rc = ks_each(db, 0, list_json, &b);
            buf_append_str(&b, "]");
            if (rc == 0)
                printf("{\"object\":\"list\",\"data\":%.*s}\n", (int)buf_used(&b), buf_data(&b));
            buf_free(&b);
        } else {
            printf("%-17s %-24s %-13s %-8s %-20s %-14s %s\n", "ID", "NAME", "PREFIX", "STATE", "RPM/TPM/CONC",
                   "BUDGET", "EXPIRES (UTC)");
            rc = ks_each(db, 0, list_row, &now);
        }
        if (rc < 0)
            fprintf(stderr, "shade keys list: %s\n", ks_errmsg(db));
        return rc < 0 ? 1 : 0;
    }
    if (strcmp(o->cmd, "usage") == 0) {
        int days = 30;
        if (o->days && (!integer(o->days) || (days = atoi(o->days)) < 1 || days > 366))
            return bad(usage_usage, "%s: expected an integer from 1 to 366", "--days");
        rc = strncmp(o->id, "cfg:", 4) == 0 ? KS_OK : ks_get(db, o->id, &k);
        if (rc == KS_NOT_FOUND) {
            fprintf(stderr, "shade keys usage: no key has the id '%s'\n", o->id);
            return 1;
        }
        if (rc != KS_OK) {
            fprintf(stderr, "shade keys usage: %s\n", ks_errmsg(db));
            return 1;
        }
        bool own = strncmp(o->id, "cfg:", 4) != 0;
        int64_t from = now / 86400 - (days - 1);
        char d0[11];
        ks_day_str(from, d0);
        struct buf b = { 0 };
        struct usage_acc u = { .json = o->json, .b = &b };
        if (o->json) {
            buf_append_str(&b, "{\"object\":\"key_usage\",\"id\":");
            json_buf_str(&b, o->id);
            buf_printf(&b, ",\"days\":%d,\"from\":\"%s\",\"data\":[", days, d0);
        } else {
            printf("%s%s%s, from %s (%d days):\n%-10s  %-24s %10s %12s %12s %12s\n", o->id, own ? " " : "",
                   own ? k.spec.name : "", d0, days, "DAY", "MODEL", "REQUESTS", "TOKENS_IN", "TOKENS_OUT", "USD");
        }
        rc = ks_spend_each(db, o->id, from, usage_row, &u);
        if (own)
            ks_key_free(&k);
        if (rc < 0) {
            buf_free(&b);
            fprintf(stderr, "shade keys usage: %s\n", ks_errmsg(db));
            return 1;
        }
        if (o->json) {
            buf_append_str(&b, "],");
            ks_usage_total(&b, &u.t);
            printf("%.*s}\n", (int)buf_used(&b), buf_data(&b));
        } else {
            printf("%-10s  %-24s %10lld %12lld %12lld %12.6f\n", "total", "", (long long)u.t.requests,
                   (long long)u.t.tokens_in, (long long)u.t.tokens_out, u.t.cost_usd);
        }
        buf_free(&b);
        return 0;
    }
    /* show, revoke, rotate */
    bool rotate = strcmp(o->cmd, "rotate") == 0;
    rc = strcmp(o->cmd, "revoke") == 0 ? ks_revoke(db, o->id, now, &k)
         : rotate                      ? ks_rotate(db, o->id, now, &k, secret)
                                       : ks_get(db, o->id, &k);
    if (rc == KS_NOT_FOUND)
        fprintf(stderr, "shade keys %s: no key has the id '%s'\n", o->cmd, o->id);
    else if (rc == KS_CONFLICT)
        fprintf(stderr, "shade keys %s: the key is revoked\n", o->cmd);
    else if (rc != KS_OK)
        fprintf(stderr, "shade keys %s: %s\n", o->cmd, ks_errmsg(db));
    if (rc != KS_OK)
        return 1;
    print_key(&k, rotate ? secret : NULL, o->json);
    memset(secret, 0, sizeof secret);
    ks_key_free(&k);
    return 0;
}

int keys_cli(const char *config_path, int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1])) {
        fputs(usage_keys, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    struct opts o = { .cmd = argv[1], .config = config_path };
    const char *usage = strcmp(o.cmd, "create") == 0   ? usage_create
                        : strcmp(o.cmd, "list") == 0   ? usage_list
                        : strcmp(o.cmd, "usage") == 0  ? usage_usage
                        : strcmp(o.cmd, "show") == 0 || strcmp(o.cmd, "revoke") == 0 ||
                                strcmp(o.cmd, "rotate") == 0
                            ? usage_id
                            : NULL;
    if (!usage)
        return bad(usage_keys, "unknown command '%s'", o.cmd);
    bool create = usage == usage_create;
    static const struct { const char *flag; size_t off; bool create; } vals[] = {
        { "-c", offsetof(struct opts, config), false },
        { "--config", offsetof(struct opts, config), false },
        { "--db", offsetof(struct opts, db), false },
        { "--name", offsetof(struct opts, name), true },
        { "--models", offsetof(struct opts, models), true },
        { "--rpm", offsetof(struct opts, rpm), true },
        { "--tpm", offsetof(struct opts, tpm), true },
        { "--concurrency", offsetof(struct opts, conc), true },
        { "--budget-usd", offsetof(struct opts, budget), true },
        { "--soft-usd", offsetof(struct opts, soft), true },
        { "--period", offsetof(struct opts, period), true },
        { "--expires-in", offsetof(struct opts, expires), true },
        { "--priority", offsetof(struct opts, prio), true },
        { "--metadata", offsetof(struct opts, metadata), true },
    };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (is_help(a)) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(a, "--json") == 0) {
            o.json = true;
            continue;
        }
        if (create && strcmp(a, "--metrics") == 0) {
            o.metrics = true;
            continue;
        }
        if (usage == usage_usage && strcmp(a, "--days") == 0 && i + 1 < argc) {
            o.days = argv[++i];
            continue;
        }
        bool found = false;
        for (size_t v = 0; v < sizeof vals / sizeof vals[0] && !found; v++)
            if (strcmp(a, vals[v].flag) == 0 && (create || !vals[v].create)) {
                if (i + 1 >= argc)
                    return bad(usage, "%s needs a value", a);
                *(const char **)((char *)&o + vals[v].off) = argv[++i];
                found = true;
            }
        if (found)
            continue;
        if (a[0] != '-' && !o.id && !create && usage != usage_list) {
            o.id = a;
            continue;
        }
        return bad(usage, "unexpected argument '%s'", a);
    }
    if (create && !o.name)
        return bad(usage, "%s", "missing --name NAME");
    if (!create && usage != usage_list && !o.id)
        return bad(usage, "%s", "missing the key's ID");
    if (!o.config && !o.db)
        return bad(usage, "%s", "missing -c FILE or --db FILE");
    struct config *cfg = NULL;
    if (o.config) {
        char err[1024];
        if (config_load(o.config, &cfg, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    const char *path = o.db ? o.db : cfg->store.path;
    sqlite3 *db = NULL;
    char err[600];
    int rc;
    if (ks_open(path, 5000, true, &db, err, sizeof err) < 0) {
        fprintf(stderr, "shade keys: %s\n", err);
        rc = 1;
    } else {
        rc = run(&o, db, cfg);
    }
    ks_close(db);
    config_free(cfg);
    return rc;
}
