/* keys_store.h — the virtual keys in the SQLite store (keys_store.c,
 * doc/keys.md): the tables, a key's row, its writes (each one small
 * transaction that also bumps key_meta.version, which every serving
 * process polls), the spend ledger, and a key written as JSON.
 *
 *   api_keys   one row per key: id, name, prefix, digest (SHA-256 of the
 *              secret: the secret itself is never stored), the spec
 *              (keys_spec.h), created / revoked / rotated
 *   key_meta   one row: version, bumped by every change
 *   key_spend  the ledger: (key_id, model, day) -> requests, tokens, USD
 *
 * A connection is used by one thread at a time (the caller's).
 */
#ifndef SHADE_KEYS_STORE_H
#define SHADE_KEYS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys_spec.h"

struct sqlite3;
struct buf;

#define KS_SECRET_PREFIX "sk-shade-"
#define KS_SECRET_LEN (9 + 32)   /* "sk-shade-" + 32 base62 characters */
#define KS_PREFIX_LEN 12         /* what is shown of a secret */
#define KS_ID_LEN (4 + 12)       /* "key_" + 12 base32 characters */

struct ks_key {
    char id[KS_ID_LEN + 1];
    char prefix[KS_PREFIX_LEN + 1];
    unsigned char digest[32];
    struct key_spec spec;
    int64_t created_unix;
    int64_t revoked_unix;        /* 0 = live */
    int64_t rotated_unix;        /* 0 = never rotated */
    char rotated_from[KS_PREFIX_LEN + 1]; /* the previous secret's prefix, "" = none */
};

enum { KS_OK = 0, KS_ERROR = -1, KS_NOT_FOUND = -2, KS_CONFLICT = -3 };

/* Open with a busy timeout; with create, also make the file (WAL) and the
 * tables when missing (a write: the admin API opens without, the tables
 * being made when the serving process starts).  0, or -1 with err set. */
int ks_open(const char *path, int busy_ms, bool create, struct sqlite3 **db, char *err, size_t errlen);
void ks_close(struct sqlite3 *db);
/* The error of the last call on db, for messages. */
const char *ks_errmsg(struct sqlite3 *db);

/* key_meta.version.  0, or -1. */
int ks_version(struct sqlite3 *db, int64_t *v);

/* A new key: a fresh id and secret (getrandom), the digest and prefix
 * stored, the secret given back once in secret.  KS_CONFLICT: a live key
 * already has this name. */
int ks_create(struct sqlite3 *db, const struct key_spec *spec, int64_t now, struct ks_key *out,
              char secret[KS_SECRET_LEN + 1]);
/* Revoke (again: nothing changes), or a new secret for the same key
 * (KS_CONFLICT when it is revoked).  The key as it is after, in out. */
int ks_revoke(struct sqlite3 *db, const char *id, int64_t now, struct ks_key *out);
int ks_rotate(struct sqlite3 *db, const char *id, int64_t now, struct ks_key *out, char secret[KS_SECRET_LEN + 1]);
/* One key by id (KS_NOT_FOUND), or each key, oldest first (live_at > 0:
 * only those neither revoked nor expired at that time).  fn returns
 * nonzero to stop.  A row that does not read back as a spec is skipped
 * (logged). */
int ks_get(struct sqlite3 *db, const char *id, struct ks_key *out);
int ks_each(struct sqlite3 *db, int64_t live_at, int (*fn)(struct ks_key *k, void *arg), void *arg);
void ks_key_free(struct ks_key *k);

/* "active", "revoked" or "expired" at now. */
const char *ks_state(const struct ks_key *k, int64_t now);
/* The key as the admin API shows it (an object, braces included): never
 * the digest; the secret only when given (creation, rotation). */
void ks_key_json(struct buf *b, const struct ks_key *k, int64_t now, const char *secret);

/* ---- the ledger ---- */

struct ks_spend {
    const char *key_id, *model;
    int64_t day;                 /* days since 1970-01-01, UTC */
    int64_t requests, tokens_in, tokens_out;
    double cost_usd;
};
/* Add the rows to the ledger (upserts), in one transaction.  0, or -1. */
int ks_spend_add(struct sqlite3 *db, const struct ks_spend *rows, size_t n);
/* The ledger's rows from day from_day on, for one key (key_id) or all
 * (NULL), ordered by key, day, model.  fn returns nonzero to stop. */
int ks_spend_each(struct sqlite3 *db, const char *key_id, int64_t from_day,
                  int (*fn)(const struct ks_spend *s, void *arg), void *arg);

/* Days since the epoch <-> "YYYY-MM-DD" (UTC). */
void ks_day_str(int64_t day, char out[11]);

/* A usage listing (the admin API's and `shade keys usage --json`): each
 * row as a JSON object appended to b (comma-separated), summed in t. */
struct ks_usage {
    size_t n;
    int64_t requests, tokens_in, tokens_out;
    double cost_usd;
};
struct buf;
void ks_usage_row(struct buf *b, struct ks_usage *t, const struct ks_spend *s);
/* The totals as `"total":{...}`. */
void ks_usage_total(struct buf *b, const struct ks_usage *t);
int64_t ks_day_of(const char *s);

/* Fill n bytes with random characters of the alphabet (getrandom, no
 * modulo bias).  0, or -1. */
int ks_random_chars(char *out, size_t n, const char *alphabet);

#endif
