/* keys_store.c — the virtual keys' tables in the SQLite store, their
 * writes, the spend ledger (keys_store.h, doc/keys.md). */
#include "keys_store.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "buf.h"
#include "json.h"
#include "log.h"

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS api_keys ("
    " id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " prefix TEXT NOT NULL,"
    " digest BLOB NOT NULL UNIQUE,"
    " models TEXT NOT NULL DEFAULT '[]',"
    " rpm INTEGER NOT NULL DEFAULT 0, tpm INTEGER NOT NULL DEFAULT 0, concurrency INTEGER NOT NULL DEFAULT 0,"
    " model_limits TEXT NOT NULL DEFAULT '[]',"
    " budget_usd REAL NOT NULL DEFAULT 0, budget_soft_usd REAL NOT NULL DEFAULT 0,"
    " budget_period TEXT NOT NULL DEFAULT 'day',"
    " expires_unix INTEGER,"
    " priority INTEGER NOT NULL DEFAULT -1,"
    " metrics INTEGER NOT NULL DEFAULT 0,"
    " metadata TEXT,"
    " created_unix INTEGER NOT NULL,"
    " revoked_unix INTEGER,"
    " rotated_unix INTEGER,"
    " rotated_from TEXT);"
    "CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys(name);"
    "CREATE TABLE IF NOT EXISTS key_meta (one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO key_meta VALUES (1, 0);"
    "CREATE TABLE IF NOT EXISTS key_spend ("
    " key_id TEXT NOT NULL, model TEXT NOT NULL, day TEXT NOT NULL,"
    " requests INTEGER NOT NULL DEFAULT 0, tokens_in INTEGER NOT NULL DEFAULT 0,"
    " tokens_out INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0,"
    " PRIMARY KEY (key_id, model, day)) WITHOUT ROWID;";

#define COLS                                                                                                   \
    "id, name, prefix, digest, models, rpm, tpm, concurrency, model_limits, budget_usd, budget_soft_usd, "      \
    "budget_period, expires_unix, priority, metrics, metadata, created_unix, revoked_unix, rotated_unix, "      \
    "rotated_from"

int ks_open(const char *path, int busy_ms, bool create, sqlite3 **db, char *err, size_t errlen)
{
    *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, db, flags, NULL) == SQLITE_OK && sqlite3_busy_timeout(*db, busy_ms) == SQLITE_OK &&
        (!create || (sqlite3_exec(*db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) == SQLITE_OK &&
                     sqlite3_exec(*db, schema_sql, NULL, NULL, NULL) == SQLITE_OK)))
        return 0;
    snprintf(err, errlen, "keys: store %s: %s", path, *db ? sqlite3_errmsg(*db) : "cannot open");
    sqlite3_close(*db);
    *db = NULL;
    return -1;
}

void ks_close(sqlite3 *db)
{
    sqlite3_close(db);
}

const char *ks_errmsg(sqlite3 *db)
{
    return db ? sqlite3_errmsg(db) : "no store";
}

int ks_version(sqlite3 *db, int64_t *v)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "SELECT version FROM key_meta WHERE one = 1", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        *v = sqlite3_column_int64(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---------------------------------------------------------------- secrets */

int ks_random_chars(char *out, size_t n, const char *alphabet)
{
    size_t k = strlen(alphabet), lim = 256 - 256 % k, o = 0;
    unsigned char r[64];
    while (o < n) {
        ssize_t got = getrandom(r, sizeof r, 0);
        if (got <= 0)
            return -1;
        for (ssize_t i = 0; i < got && o < n; i++)
            if (r[i] < lim) /* no modulo bias */
                out[o++] = alphabet[r[i] % k];
    }
    out[n] = 0;
    return 0;
}

static const char base62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
static const char base32[] = "abcdefghijklmnopqrstuvwxyz234567";

/* A fresh secret, its digest and its prefix. */
static int new_secret(char secret[KS_SECRET_LEN + 1], unsigned char digest[32], char prefix[KS_PREFIX_LEN + 1])
{
    memcpy(secret, KS_SECRET_PREFIX, 9);
    unsigned int dl = 0;
    if (ks_random_chars(secret + 9, KS_SECRET_LEN - 9, base62) < 0 ||
        !EVP_Digest(secret, KS_SECRET_LEN, digest, &dl, EVP_sha256(), NULL) || dl != 32) {
        OPENSSL_cleanse(secret, KS_SECRET_LEN + 1);
        return -1;
    }
    memcpy(prefix, secret, KS_PREFIX_LEN);
    prefix[KS_PREFIX_LEN] = 0;
    return 0;
}

/* ---------------------------------------------------------------- rows */

static void text_col(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    snprintf(out, cap, "%s", s ? s : "");
}

static void raw_json(struct buf *b, sqlite3_stmt *st, int i, const char *dflt)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    buf_append_str(b, s && *s ? s : dflt);
}

/* A row (COLS order) into k: the spec read back through the body parser,
 * so a row edited by hand is checked like a request.  0, or -1. */
static int read_row(sqlite3_stmt *st, struct ks_key *k)
{
    memset(k, 0, sizeof *k);
    text_col(st, 0, k->id, sizeof k->id);
    text_col(st, 2, k->prefix, sizeof k->prefix);
    if (sqlite3_column_bytes(st, 3) != 32)
        return -1;
    memcpy(k->digest, sqlite3_column_blob(st, 3), 32);
    struct buf b = { 0 };
    buf_append_str(&b, "{\"name\":");
    json_buf_str(&b, (const char *)sqlite3_column_text(st, 1));
    buf_append_str(&b, ",\"models\":");
    raw_json(&b, st, 4, "[]");
    buf_printf(&b, ",\"limits\":{\"rpm\":%lld,\"tpm\":%lld,\"concurrency\":%lld},\"model_limits\":",
               (long long)sqlite3_column_int64(st, 5), (long long)sqlite3_column_int64(st, 6),
               (long long)sqlite3_column_int64(st, 7));
    raw_json(&b, st, 8, "[]");
    buf_printf(&b, ",\"budget\":{\"usd\":%.17g,\"soft_usd\":%.17g,\"period\":", sqlite3_column_double(st, 9),
               sqlite3_column_double(st, 10));
    json_buf_str(&b, (const char *)sqlite3_column_text(st, 11));
    int64_t prio = sqlite3_column_int64(st, 13);
    if (prio >= 0)
        buf_printf(&b, "},\"priority\":%lld", (long long)prio);
    else
        buf_append_str(&b, "},\"priority\":null");
    buf_printf(&b, ",\"metrics\":%s,\"metadata\":", sqlite3_column_int(st, 14) ? "true" : "false");
    raw_json(&b, st, 15, "null");
    buf_append_str(&b, "}");
    struct key_spec_error e;
    int rc = buf_data(&b) ? key_spec_parse(buf_data(&b), buf_used(&b), 0, &k->spec, &e) : -1;
    buf_free(&b);
    if (rc < 0) {
        log_warn("keys: key %s in the store is not valid (%s: %s); skipped", k->id, e.param, e.message);
        return -1;
    }
    k->spec.expires_unix = sqlite3_column_int64(st, 12);
    k->created_unix = sqlite3_column_int64(st, 16);
    k->revoked_unix = sqlite3_column_int64(st, 17);
    k->rotated_unix = sqlite3_column_int64(st, 18);
    text_col(st, 19, k->rotated_from, sizeof k->rotated_from);
    return 0;
}

void ks_key_free(struct ks_key *k)
{
    if (k)
        key_spec_free(&k->spec);
}

int ks_get(sqlite3 *db, const char *id, struct ks_key *out)
{
    sqlite3_stmt *st = NULL;
    int rc = KS_ERROR;
    memset(out, 0, sizeof *out);
    if (sqlite3_prepare_v2(db, "SELECT " COLS " FROM api_keys WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
        return KS_ERROR;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW)
        rc = read_row(st, out) == 0 ? KS_OK : KS_ERROR;
    else if (s == SQLITE_DONE)
        rc = KS_NOT_FOUND;
    sqlite3_finalize(st);
    return rc;
}

int ks_each(sqlite3 *db, int64_t live_at, int (*fn)(struct ks_key *k, void *arg), void *arg)
{
    sqlite3_stmt *st = NULL;
    const char *sql = live_at > 0 ? "SELECT " COLS " FROM api_keys WHERE revoked_unix IS NULL AND "
                                    "(expires_unix IS NULL OR expires_unix = 0 OR expires_unix > ?1) "
                                    "ORDER BY created_unix, rowid"
                                  : "SELECT " COLS " FROM api_keys ORDER BY created_unix, rowid";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (live_at > 0)
        sqlite3_bind_int64(st, 1, live_at);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        struct ks_key k;
        if (read_row(st, &k) < 0) {
            ks_key_free(&k);
            continue;
        }
        int stop = fn(&k, arg);
        ks_key_free(&k);
        if (stop)
            break;
    }
    sqlite3_finalize(st);
    return s == SQLITE_ROW || s == SQLITE_DONE ? 0 : -1;
}

/* ---------------------------------------------------------------- writes */

static int begin(sqlite3 *db)
{
    return sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Bump the version and commit (or roll back when !ok). */
static int finish(sqlite3 *db, bool ok)
{
    if (ok && sqlite3_exec(db, "UPDATE key_meta SET version = version + 1 WHERE one = 1", NULL, NULL, NULL) ==
                  SQLITE_OK &&
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static bool name_taken(sqlite3 *db, const char *name, int64_t now)
{
    sqlite3_stmt *st = NULL;
    bool taken = false;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM api_keys WHERE name = ?1 AND revoked_unix IS NULL AND "
                           "(expires_unix IS NULL OR expires_unix = 0 OR expires_unix > ?2)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        taken = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return taken;
}

int ks_create(sqlite3 *db, const struct key_spec *spec, int64_t now, struct ks_key *out,
              char secret[KS_SECRET_LEN + 1])
{
    memset(out, 0, sizeof *out);
    unsigned char digest[32];
    char prefix[KS_PREFIX_LEN + 1], id[KS_ID_LEN + 1];
    memcpy(id, "key_", 4);
    if (new_secret(secret, digest, prefix) < 0 || ks_random_chars(id + 4, KS_ID_LEN - 4, base32) < 0)
        return KS_ERROR;
    struct buf models = { 0 }, mlim = { 0 };
    buf_append_str(&models, "[");
    for (size_t i = 0; i < spec->nmodels; i++) {
        if (i)
            buf_append_str(&models, ",");
        json_buf_str(&models, spec->models[i]);
    }
    buf_append_str(&models, "]");
    buf_append_str(&mlim, "[");
    for (size_t i = 0; i < spec->nmlim; i++) {
        buf_append_str(&mlim, i ? ",{\"model\":" : "{\"model\":");
        json_buf_str(&mlim, spec->mlim[i].model);
        buf_printf(&mlim, ",\"rpm\":%u,\"tpm\":%u,\"concurrency\":%u}", spec->mlim[i].lim.rpm,
                   spec->mlim[i].lim.tpm, spec->mlim[i].lim.concurrency);
    }
    buf_append_str(&mlim, "]");
    int rc = KS_ERROR;
    sqlite3_stmt *st = NULL;
    if (!buf_data(&models) || !buf_data(&mlim) || begin(db) < 0)
        goto out;
    if (name_taken(db, spec->name, now)) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        rc = KS_CONFLICT;
        goto out;
    }
    bool ok = sqlite3_prepare_v2(db,
                                 "INSERT INTO api_keys (" COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                                 "?11, ?12, ?13, ?14, ?15, ?16, ?17, NULL, NULL, NULL)",
                                 -1, &st, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, spec->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, prefix, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, digest, 32, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, buf_data(&models), (int)buf_used(&models), SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, spec->lim.rpm);
        sqlite3_bind_int64(st, 7, spec->lim.tpm);
        sqlite3_bind_int64(st, 8, spec->lim.concurrency);
        sqlite3_bind_text(st, 9, buf_data(&mlim), (int)buf_used(&mlim), SQLITE_STATIC);
        sqlite3_bind_double(st, 10, spec->budget.usd);
        sqlite3_bind_double(st, 11, spec->budget.soft_usd);
        sqlite3_bind_text(st, 12, key_period_names[spec->budget.period % 3], -1, SQLITE_STATIC);
        if (spec->expires_unix)
            sqlite3_bind_int64(st, 13, spec->expires_unix);
        sqlite3_bind_int64(st, 14, spec->priority);
        sqlite3_bind_int(st, 15, spec->metrics);
        if (spec->metadata)
            sqlite3_bind_text(st, 16, spec->metadata, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 17, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (finish(db, ok) < 0)
        goto out;
    rc = ks_get(db, id, out);
out:
    buf_free(&models);
    buf_free(&mlim);
    if (rc != KS_OK)
        OPENSSL_cleanse(secret, KS_SECRET_LEN + 1);
    return rc;
}

int ks_revoke(sqlite3 *db, const char *id, int64_t now, struct ks_key *out)
{
    if (begin(db) < 0)
        return KS_ERROR;
    int rc = ks_get(db, id, out);
    if (rc != KS_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (out->revoked_unix) { /* already: nothing changes */
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return KS_OK;
    }
    ks_key_free(out);
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db, "UPDATE api_keys SET revoked_unix = ?2 WHERE id = ?1", -1, &st, NULL) ==
              SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    if (finish(db, ok) < 0)
        return KS_ERROR;
    return ks_get(db, id, out);
}

int ks_rotate(sqlite3 *db, const char *id, int64_t now, struct ks_key *out, char secret[KS_SECRET_LEN + 1])
{
    unsigned char digest[32];
    char prefix[KS_PREFIX_LEN + 1];
    if (new_secret(secret, digest, prefix) < 0)
        return KS_ERROR;
    if (begin(db) < 0) {
        OPENSSL_cleanse(secret, KS_SECRET_LEN + 1);
        return KS_ERROR;
    }
    int rc = ks_get(db, id, out);
    if (rc == KS_OK && out->revoked_unix) {
        ks_key_free(out);
        rc = KS_CONFLICT;
    }
    if (rc != KS_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        OPENSSL_cleanse(secret, KS_SECRET_LEN + 1);
        return rc;
    }
    ks_key_free(out);
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db,
                                 "UPDATE api_keys SET digest = ?2, prefix = ?3, rotated_from = prefix, "
                                 "rotated_unix = ?4 WHERE id = ?1",
                                 -1, &st, NULL) == SQLITE_OK;
    if (ok) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, digest, 32, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, prefix, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    if (finish(db, ok) < 0 || (rc = ks_get(db, id, out)) != KS_OK) {
        OPENSSL_cleanse(secret, KS_SECRET_LEN + 1);
        return KS_ERROR;
    }
    return KS_OK;
}

/* ---------------------------------------------------------------- JSON */

const char *ks_state(const struct ks_key *k, int64_t now)
{
    return k->revoked_unix                                          ? "revoked"
           : k->spec.expires_unix && k->spec.expires_unix <= now ? "expired"
                                                                   : "active";
}

void ks_key_json(struct buf *b, const struct ks_key *k, int64_t now, const char *secret)
{
    buf_append_str(b, "{\"id\":");
    json_buf_str(b, k->id);
    buf_append_str(b, ",\"object\":\"api_key\",");
    if (secret)
        buf_printf(b, "\"key\":\"%s\",", secret);
    buf_append_str(b, "\"prefix\":");
    json_buf_str(b, k->prefix);
    buf_printf(b, ",\"state\":\"%s\",", ks_state(k, now));
    key_spec_members(b, &k->spec);
    buf_printf(b, ",\"created_at\":%lld", (long long)k->created_unix);
    if (k->revoked_unix)
        buf_printf(b, ",\"revoked_at\":%lld", (long long)k->revoked_unix);
    else
        buf_append_str(b, ",\"revoked_at\":null");
    if (k->rotated_unix) {
        buf_printf(b, ",\"rotated_at\":%lld,\"rotated_from\":", (long long)k->rotated_unix);
        json_buf_str(b, k->rotated_from);
        buf_append_str(b, "}");
    } else
        buf_append_str(b, ",\"rotated_at\":null,\"rotated_from\":null}");
}

/* ---------------------------------------------------------------- ledger */

void ks_day_str(int64_t day, char out[11])
{
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    gmtime_r(&t, &tm);
    unsigned y = (unsigned)(tm.tm_year + 1900) % 10000u, m = (unsigned)(tm.tm_mon + 1) % 100u,
             d = (unsigned)tm.tm_mday % 100u;
    snprintf(out, 11, "%04u-%02u-%02u", y, m, d);
}

int64_t ks_day_of(const char *s)
{
    int y, m, d;
    char tail;
    if (!s || sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3 || m < 1 || m > 12 || d < 1 || d > 31)
        return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d };
    return (int64_t)timegm(&tm) / 86400;
}

int ks_spend_add(sqlite3 *db, const struct ks_spend *rows, size_t n)
{
    if (!n)
        return 0;
    if (begin(db) < 0)
        return -1;
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db,
                                 "INSERT INTO key_spend (key_id, model, day, requests, tokens_in, tokens_out, "
                                 "cost_usd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key_id, model, day) DO "
                                 "UPDATE SET requests = requests + excluded.requests, tokens_in = tokens_in + "
                                 "excluded.tokens_in, tokens_out = tokens_out + excluded.tokens_out, cost_usd = "
                                 "cost_usd + excluded.cost_usd",
                                 -1, &st, NULL) == SQLITE_OK;
    for (size_t i = 0; ok && i < n; i++) {
        char day[11];
        ks_day_str(rows[i].day, day);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, rows[i].key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, rows[i].model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, day, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 4, rows[i].requests);
        sqlite3_bind_int64(st, 5, rows[i].tokens_in);
        sqlite3_bind_int64(st, 6, rows[i].tokens_out);
        sqlite3_bind_double(st, 7, rows[i].cost_usd);
        ok = sqlite3_step(st) == SQLITE_DONE;
    }
    sqlite3_finalize(st);
    if (ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int ks_spend_each(sqlite3 *db, const char *key_id, int64_t from_day, int (*fn)(const struct ks_spend *s, void *arg),
                  void *arg)
{
    sqlite3_stmt *st = NULL;
    const char *sql = key_id ? "SELECT key_id, model, day, requests, tokens_in, tokens_out, cost_usd FROM key_spend "
                               "WHERE key_id = ?2 AND day >= ?1 ORDER BY day, model"
                             : "SELECT key_id, model, day, requests, tokens_in, tokens_out, cost_usd FROM key_spend "
                               "WHERE day >= ?1 ORDER BY key_id, day, model";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    char day[11];
    ks_day_str(from_day, day);
    sqlite3_bind_text(st, 1, day, -1, SQLITE_STATIC);
    if (key_id)
        sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        struct ks_spend r = {
            .key_id = (const char *)sqlite3_column_text(st, 0),
            .model = (const char *)sqlite3_column_text(st, 1),
            .day = ks_day_of((const char *)sqlite3_column_text(st, 2)),
            .requests = sqlite3_column_int64(st, 3),
            .tokens_in = sqlite3_column_int64(st, 4),
            .tokens_out = sqlite3_column_int64(st, 5),
            .cost_usd = sqlite3_column_double(st, 6),
        };
        if (!r.key_id || !r.model || r.day < 0)
            continue;
        if (fn(&r, arg))
            break;
    }
    sqlite3_finalize(st);
    return s == SQLITE_ROW || s == SQLITE_DONE ? 0 : -1;
}

void ks_usage_row(struct buf *b, struct ks_usage *t, const struct ks_spend *s)
{
    char day[11];
    ks_day_str(s->day, day);
    if (b) {
        buf_printf(b, "%s{\"day\":\"%s\",\"model\":", t->n ? "," : "", day);
        json_buf_str(b, s->model);
        buf_printf(b, ",\"requests\":%lld,\"tokens_in\":%lld,\"tokens_out\":%lld,\"cost_usd\":%.9g}",
                   (long long)s->requests, (long long)s->tokens_in, (long long)s->tokens_out, s->cost_usd);
    }
    t->n++;
    t->requests += s->requests;
    t->tokens_in += s->tokens_in;
    t->tokens_out += s->tokens_out;
    t->cost_usd += s->cost_usd;
}

void ks_usage_total(struct buf *b, const struct ks_usage *t)
{
    buf_printf(b, "\"total\":{\"requests\":%lld,\"tokens_in\":%lld,\"tokens_out\":%lld,\"cost_usd\":%.9g}",
               (long long)t->requests, (long long)t->tokens_in, (long long)t->tokens_out, t->cost_usd);
}
