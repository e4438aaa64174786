/* test_keys.c — virtual keys: the create body (keys_spec.c), the store and
 * its ledger (keys_store.c), and a serving process's table with its spend
 * (keys_table.c), on a scratch SQLite file.  The admin API, the CLI and
 * the gateway are tested black-box (tests/bb/test_vkeys.py). */
#include "buf.h"
#include "config.h"
#include "keys.h"
#include "keys_spec.h"
#include "keys_store.h"
#include "unit.h"

#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOW 1700000000LL /* 2023-11-14, a Tuesday */

static int parse(const char *body, struct key_spec *s, struct key_spec_error *e)
{
    return key_spec_parse(body, strlen(body), NOW, s, e);
}

static void test_spec(void)
{
    struct key_spec s;
    struct key_spec_error e;
    CHECK(parse("{\"name\":\"team-a\",\"models\":[\"demo\",\"x\"],\"limits\":{\"rpm\":10,\"tpm\":1000},"
                "\"model_limits\":[{\"model\":\"demo\",\"concurrency\":2}],\"budget\":{\"usd\":5,\"soft_usd\":4,"
                "\"period\":\"week\"},\"expires_in\":\"2d\",\"priority\":7,\"metrics\":true,\"metadata\":{\"a\":[1]}}",
                &s, &e) == 0);
    CHECK_EQ_STR(s.name, "team-a");
    CHECK_EQ_INT(s.nmodels, 2);
    CHECK_EQ_STR(s.models[1], "x");
    CHECK_EQ_INT(s.lim.rpm, 10);
    CHECK_EQ_INT(s.lim.tpm, 1000);
    CHECK_EQ_INT(s.nmlim, 1);
    CHECK_EQ_STR(s.mlim[0].model, "demo");
    CHECK_EQ_INT(s.mlim[0].lim.concurrency, 2);
    CHECK(s.budget.usd == 5 && s.budget.soft_usd == 4 && s.budget.period == KEY_PERIOD_WEEK);
    CHECK_EQ_INT(s.expires_unix, NOW + 2 * 86400);
    CHECK_EQ_INT(s.priority, 7);
    CHECK(s.metrics);
    CHECK_EQ_STR(s.metadata, "{\"a\":[1]}");
    /* written back, it parses to the same */
    struct buf b = { 0 };
    buf_append_str(&b, "{");
    key_spec_members(&b, &s);
    buf_append_str(&b, "}");
    struct key_spec s2;
    CHECK(key_spec_parse(buf_data(&b), buf_used(&b), NOW, &s2, &e) == 0);
    CHECK(s2.expires_unix == s.expires_unix && s2.budget.period == KEY_PERIOD_WEEK && s2.nmlim == 1);
    key_spec_free(&s2);
    buf_free(&b);
    key_spec_free(&s);

    CHECK(parse("{\"name\":\"only\"}", &s, &e) == 0);
    CHECK(s.priority == -1 && !s.metrics && !s.expires_unix && !s.metadata && !s.nmodels);
    key_spec_free(&s);

    static const struct { const char *body, *code, *param; } bad[] = {
        { "{}", "missing_required_parameter", "name" },
        { "{\"name\":\"x\",\"zz\":1}", "unknown_parameter", "zz" },
        { "{\"name\":\"x\",\"limits\":{\"rpm\":1,\"rpm\":2}}", "duplicate_parameter", "limits.rpm" },
        { "{\"name\":\"x\",\"limits\":{\"tpm\":2000000001}}", "invalid_value", "limits.tpm" },
        { "{\"name\":\"x\",\"model_limits\":[{\"model\":\"a\",\"zz\":1}]}", "unknown_parameter", "model_limits[0].zz" },
        { "{\"name\":\"x\",\"budget\":{\"usd\":1e400}}", "invalid_value", "budget.usd" },
        { "{\"name\":\"x\",\"expires_in\":\"0d\"}", "invalid_value", "expires_in" },
        { "{\"name\":\"x\",\"expires_in\":\"99999999999w\"}", "invalid_value", "expires_in" },
        { "{\"name\":\"x\",\"priority\":-1}", "invalid_value", "priority" },
        { "{\"name\":\"\\u0000\"}", "invalid_value", "name" },
        { "\"name\"", "invalid_type", "" },
        { "{\"name\":\"x\",}", "invalid_json", "" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        CHECK(parse(bad[i].body, &s, &e) < 0);
        CHECK_EQ_STR(e.code, bad[i].code);
        CHECK_EQ_STR(e.param, bad[i].param);
        CHECK(e.message[0] != 0);
    }
    CHECK_EQ_INT(key_spec_duration("30d", 3), 30 * 86400);
    CHECK_EQ_INT(key_spec_duration("2w", 2), 14 * 86400);
    CHECK_EQ_INT(key_spec_duration("90m", 3), 5400);
    CHECK_EQ_INT(key_spec_duration("d", 1), -1);
    CHECK_EQ_INT(key_spec_duration("1y", 2), -1);
    CHECK_EQ_INT(key_spec_duration("-1s", 3), -1);
}

static void digest(const char *secret, unsigned char d[32])
{
    unsigned int n = 0;
    EVP_Digest(secret, strlen(secret), d, &n, EVP_sha256(), NULL);
}

struct count {
    size_t n;
    char names[8][32];
};

static int count_key(struct ks_key *k, void *arg)
{
    struct count *c = arg;
    if (c->n < 8)
        snprintf(c->names[c->n], sizeof c->names[0], "%s", k->spec.name);
    c->n++;
    return 0;
}

static int sum_spend(const struct ks_spend *s, void *arg)
{
    double *x = arg;
    x[0] += (double)s->requests;
    x[1] += s->cost_usd;
    return 0;
}

static void test_store(const char *path)
{
    sqlite3 *db;
    char err[256];
    CHECK(ks_open(path, 1000, true, &db, err, sizeof err) == 0);
    int64_t v0 = -1, v1 = -1;
    CHECK(ks_version(db, &v0) == 0 && v0 == 0);
    struct key_spec s;
    struct key_spec_error e;
    CHECK(parse("{\"name\":\"a\",\"models\":[\"demo\"],\"limits\":{\"rpm\":5}}", &s, &e) == 0);
    struct ks_key k, k2;
    char secret[KS_SECRET_LEN + 1], secret2[KS_SECRET_LEN + 1];
    CHECK(ks_create(db, &s, NOW, &k, secret) == KS_OK);
    CHECK(strlen(secret) == KS_SECRET_LEN && strncmp(secret, "sk-shade-", 9) == 0);
    CHECK(strncmp(k.prefix, secret, 12) == 0 && strlen(k.prefix) == 12);
    CHECK(strncmp(k.id, "key_", 4) == 0 && strlen(k.id) == 16);
    unsigned char d[32];
    digest(secret, d);
    CHECK(memcmp(d, k.digest, 32) == 0);
    CHECK(ks_version(db, &v1) == 0 && v1 == v0 + 1);
    /* a second live key with the name: refused, the version unchanged */
    CHECK(ks_create(db, &s, NOW, &k2, secret2) == KS_CONFLICT);
    CHECK(ks_version(db, &v1) == 0 && v1 == v0 + 1);
    /* the secret is nowhere in the file: only its digest */
    sqlite3_stmt *st;
    CHECK(sqlite3_prepare_v2(db, "SELECT count(*) FROM api_keys WHERE instr(CAST(digest AS TEXT), ?1) OR "
                                 "instr(prefix, ?1) OR instr(id, ?1) OR instr(name, ?1)",
                             -1, &st, NULL) == SQLITE_OK);
    sqlite3_bind_text(st, 1, secret + 12, -1, SQLITE_STATIC);
    CHECK(sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 0);
    sqlite3_finalize(st);
    /* show: no secret, no digest */
    struct buf b = { 0 };
    ks_key_json(&b, &k, NOW, NULL);
    buf_append(&b, "", 1);
    CHECK(strstr(buf_data(&b), secret + 9) == NULL && strstr(buf_data(&b), "\"key\"") == NULL);
    CHECK(strstr(buf_data(&b), "\"state\":\"active\"") != NULL);
    buf_free(&b);
    /* rotate: a new secret, the same id; the old prefix kept */
    CHECK(ks_rotate(db, k.id, NOW + 1, &k2, secret2) == KS_OK);
    CHECK(strcmp(k2.id, k.id) == 0 && strcmp(secret, secret2) != 0 && memcmp(k2.digest, k.digest, 32) != 0);
    CHECK_EQ_STR(k2.rotated_from, k.prefix);
    CHECK(k2.spec.lim.rpm == 5 && k2.spec.nmodels == 1);
    ks_key_free(&k2);
    /* revoke, twice; a revoked key cannot rotate; its name is free again */
    CHECK(ks_revoke(db, k.id, NOW + 2, &k2) == KS_OK && k2.revoked_unix == NOW + 2);
    CHECK_EQ_STR(ks_state(&k2, NOW + 3), "revoked");
    ks_key_free(&k2);
    CHECK(ks_revoke(db, k.id, NOW + 5, &k2) == KS_OK && k2.revoked_unix == NOW + 2);
    ks_key_free(&k2);
    CHECK(ks_rotate(db, k.id, NOW, &k2, secret2) == KS_CONFLICT);
    CHECK(ks_revoke(db, "key_nope", NOW, &k2) == KS_NOT_FOUND);
    CHECK(ks_get(db, "key_nope", &k2) == KS_NOT_FOUND);
    key_spec_free(&s);
    CHECK(parse("{\"name\":\"a\",\"expires_in\":\"10s\"}", &s, &e) == 0);
    CHECK(ks_create(db, &s, NOW, &k2, secret2) == KS_OK);
    CHECK_EQ_STR(ks_state(&k2, NOW + 10), "expired");
    ks_key_free(&k2);
    key_spec_free(&s);
    struct count c = { 0 };
    CHECK(ks_each(db, 0, count_key, &c) == 0 && c.n == 2);
    memset(&c, 0, sizeof c);
    CHECK(ks_each(db, NOW + 1, count_key, &c) == 0 && c.n == 1); /* the revoked one is not live */
    memset(&c, 0, sizeof c);
    CHECK(ks_each(db, NOW + 11, count_key, &c) == 0 && c.n == 0); /* nor the expired one */
    ks_key_free(&k);

    /* the ledger: upserts add up */
    struct ks_spend rows[2] = { { "key_a", "demo", 19000, 2, 10, 20, 0.5 }, { "key_a", "other", 19000, 1, 1, 1, 0.25 } };
    CHECK(ks_spend_add(db, rows, 2) == 0);
    CHECK(ks_spend_add(db, rows, 1) == 0);
    double x[2] = { 0, 0 };
    CHECK(ks_spend_each(db, "key_a", 19000, sum_spend, x) == 0);
    CHECK(x[0] == 5 && x[1] == 1.25);
    x[0] = x[1] = 0;
    CHECK(ks_spend_each(db, "key_a", 19001, sum_spend, x) == 0 && x[0] == 0);
    char day[11];
    ks_day_str(0, day);
    CHECK_EQ_STR(day, "1970-01-01");
    ks_day_str(19723, day);
    CHECK_EQ_STR(day, "2024-01-01");
    CHECK_EQ_INT(ks_day_of("2024-01-01"), 19723);
    CHECK_EQ_INT(ks_day_of("2024-13-01"), -1);
    CHECK_EQ_INT(ks_day_of("x"), -1);
    ks_close(db);
}

/* A serving process's table on the same file. */
static void test_table(const char *dir, const char *path)
{
    char yaml[512], cfgpath[300];
    snprintf(cfgpath, sizeof cfgpath, "%s/gw.yaml", dir);
    snprintf(yaml, sizeof yaml,
             "server: { listen: 127.0.0.1:1 }\nmodels:\n  - name: demo\n    backends: [{ url: http://127.0.0.1:2 }]\n"
             "auth: { virtual_keys: true }\nshadow_store: { path: %s }\n",
             path);
    FILE *f = fopen(cfgpath, "w");
    CHECK(f != NULL);
    fputs(yaml, f);
    fclose(f);
    struct config *cfg = NULL;
    char err[512];
    CHECK(config_load(cfgpath, &cfg, err, sizeof err) == 0);
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    sqlite3 *db;
    CHECK(ks_open(path, 1000, true, &db, err, sizeof err) == 0);
    struct key_spec s;
    struct key_spec_error e;
    CHECK(parse("{\"name\":\"t\",\"budget\":{\"usd\":10,\"period\":\"month\"}}", &s, &e) == 0);
    struct ks_key k;
    char secret[KS_SECRET_LEN + 1];
    CHECK(ks_create(db, &s, (int64_t)time(NULL), &k, secret) == KS_OK);
    key_spec_free(&s);
    /* last month's spend and today's, already in the ledger */
    int64_t today = (int64_t)time(NULL) / 86400;
    struct ks_spend rows[2] = { { k.id, "demo", today, 1, 1, 1, 2.0 }, { k.id, "demo", today - 45, 1, 1, 1, 100.0 } };
    CHECK(ks_spend_add(db, rows, 2) == 0);

    CHECK(keys_start(cfg, err, sizeof err) == 0);
    CHECK(keys_running());
    unsigned char d[32];
    digest(secret, d);
    const struct key_rec *r = keys_acquire(d);
    CHECK(r != NULL);
    if (!r)
        goto out;
    CHECK_EQ_STR(r->id, k.id);
    CHECK_EQ_STR(r->name, "t");
    CHECK(r->budget.period == KEY_PERIOD_MONTH && r->budget.usd == 10);
    CHECK(keys_period_spend(r, (int64_t)time(NULL)) == 2.0);
    keys_record_usage(r, "demo", 10, 20, 0.5);
    keys_record_usage(r, "demo", 10, 20, 0.25);
    CHECK(keys_period_spend(r, (int64_t)time(NULL)) == 2.75);
    unsigned char wrong[32] = { 0 };
    CHECK(keys_acquire(wrong) == NULL);
    /* revoked by this process: out of the table at once; the holder keeps
     * its record (ASan would see a use after free) */
    struct ks_key kr;
    CHECK(ks_revoke(db, k.id, (int64_t)time(NULL), &kr) == KS_OK);
    keys_apply(&kr);
    ks_key_free(&kr);
    CHECK(keys_acquire(d) == NULL);
    CHECK_EQ_STR(r->name, "t");
    /* the spend is still counted (by id) */
    CHECK(keys_period_spend(r, (int64_t)time(NULL)) == 2.75);
    /* stop: the ledger written; started again: read back */
    keys_stop();
    CHECK(!keys_running());
    double x[2] = { 0, 0 };
    CHECK(ks_spend_each(db, k.id, today, sum_spend, x) == 0);
    CHECK(x[0] == 3 && x[1] == 2.75);
    CHECK(keys_start(cfg, err, sizeof err) == 0);
    CHECK(keys_period_spend(r, (int64_t)time(NULL)) == 2.75);
    CHECK(keys_acquire(d) == NULL); /* revoked in the store */
    /* a key made by another process: seen within a second */
    CHECK(parse("{\"name\":\"late\"}", &s, &e) == 0);
    struct ks_key k2;
    char secret2[KS_SECRET_LEN + 1];
    CHECK(ks_create(db, &s, (int64_t)time(NULL), &k2, secret2) == KS_OK);
    key_spec_free(&s);
    digest(secret2, d);
    const struct key_rec *r2 = NULL;
    for (int i = 0; i < 100 && !r2; i++) {
        usleep(10000);
        r2 = keys_acquire(d);
    }
    CHECK(r2 != NULL);
    key_release(r2);
    ks_key_free(&k2);
    keys_stop();
    key_release(r);
out:
    ks_key_free(&k);
    ks_close(db);
    config_free(cfg);
}

int main(void)
{
    test_spec();
    char dir[] = "/tmp/shade-test-keys-XXXXXX", path[300];
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/store.db", dir);
    test_store(path);
    test_table(dir, path);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    UNIT_DONE();
}
