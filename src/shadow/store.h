/* store.h — the shadow pair store: one SQLite file in WAL mode.
 *
 * The serving process writes it from one background thread (recorder.c);
 * `shade report` (report.c) and the judge (judge.c) read it; the judge also
 * writes its verdicts.  This header is the contract between them: the
 * schema, and the meaning of every column.  doc/shadow.md explains it for
 * people.
 *
 * Conventions
 *   times        ts: unix seconds (REAL); durations: milliseconds (REAL)
 *   success      a leg succeeded when error IS NULL and 200 <= status < 300
 *   legs         'primary' (what the user got), 'shadow' (the candidate),
 *                'aa' (the same request sent to the primary a second time:
 *                the noise floor)
 *   error kinds  NULL (none) | 'connect' | 'timeout' (upstream first-byte or
 *                idle timeout) | 'deadline' (the shadow deadline ended the
 *                leg) | 'http_5xx' | 'http_429' | 'http_4xx' | 'protocol' |
 *                'closed' (connection closed mid-answer) | 'no_backend' |
 *                'aborted' (client went away / leg cancelled) | 'shutdown' |
 *                'too_large' (a 2xx non-streamed answer larger than the
 *                gateway reads for a pair — 4 MiB for shadow / A/A legs,
 *                SHADOW_LEG_CAPTURE_MAX; 8 MiB for the primary, proxy.c
 *                CAPTURE_MAX — was not parsed: status kept, response empty,
 *                response_truncated 1, tokens estimated from its size).
 *                'protocol' also marks a 2xx non-streamed answer that is not
 *                a JSON object: an answer that could not be read is never
 *                stored as a success with an empty response.
 *   bounds       every stored column is bounded: names (shadow, model,
 *                target, backend, upstream_model, judge) by the config's
 *                limits (128 / 256 bytes); request_id 131 bytes; prompt
 *                prompt_max_bytes (the gateway keeps the first
 *                prompt_max_bytes + 16 KiB of a prompt, redacts that and cuts
 *                it: prompt_truncated = 1 whenever the prompt was longer; the
 *                hash is still of the whole); response and tool_calls
 *                response_max_bytes each; finish_reason 31 bytes; error,
 *                leg, endpoint and verdicts are fixed words; events.detail
 *                255 bytes.
 *   truncation   what is stored is always a prefix, never a splice: once a
 *                part of an answer was cut nothing later was appended to it.
 *                response_truncated = 1 when the stored answer is not all of
 *                it: text cut, tool calls cut (see tool_calls), an event of
 *                the stream lost (over 1 MiB, the SSE reader's bound: the
 *                answer stops before it), or not read at all (too_large).
 *   tokens       tokens_exact 1: from the upstream's usage.  0: estimated —
 *                prompt JSON bytes / 4 in; output events (streams), answer
 *                text bytes / 4, or answer bytes / 4 (too_large) out; 0 for
 *                other failed legs (an estimate would be invented).
 *   comparisons  one row per (pair, against): 'shadow' compares primary with
 *                shadow, 'aa' compares primary with the A/A leg.  Columns
 *                that do not apply (e.g. json_same when the primary did not
 *                answer JSON) are NULL.
 *   judgements   order1: A = primary, B = shadow; order2: A = shadow,
 *                B = primary.  verdicts 'A' | 'B' | 'tie' | 'invalid'.
 *                outcome (for the shadow): 'win' (order1 B and order2 A),
 *                'loss' (order1 A and order2 B), 'tie' (both tie),
 *                'inconsistent' (any other combination of valid verdicts),
 *                'error' (a call failed or a verdict was invalid).
 *   counters     cumulative per shadow, added to by every serving process:
 *                'mirrored' (selected for shadowing), 'stored' (pairs
 *                written), 'dropped_<reason>' (reasons: cap, budget,
 *                queue_full, shutdown, db_error, nomem).  Invariant once the
 *                writer has flushed: mirrored = stored + sum(dropped_*).
 *   events       state changes: kind 'start' | 'pause' | 'stop' | 'auto_stop';
 *                detail is free text (the rule that fired, who asked).
 */
#ifndef SHADE_STORE_H
#define SHADE_STORE_H

#define STORE_SCHEMA_VERSION 1

#define STORE_SCHEMA_SQL                                                                  \
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);\n"               \
    "CREATE TABLE IF NOT EXISTS pairs (\n"                                                \
    "  id INTEGER PRIMARY KEY,\n"                                                         \
    "  shadow TEXT NOT NULL,\n"          /* shadow name from the config */                \
    "  request_id TEXT NOT NULL,\n"                                                       \
    "  ts REAL NOT NULL,\n"              /* when the request arrived */                   \
    "  model TEXT NOT NULL,\n"           /* the public model the client asked for */      \
    "  endpoint TEXT NOT NULL,\n"        /* 'chat' | 'completions' */                     \
    "  prompt TEXT,\n"                   /* messages / prompt JSON, redacted, bounded */  \
    "  prompt_hash TEXT NOT NULL,\n"     /* sha256 hex of the unredacted prompt JSON */   \
    "  prompt_truncated INTEGER NOT NULL DEFAULT 0\n"                                     \
    ");\n"                                                                                \
    "CREATE INDEX IF NOT EXISTS pairs_shadow_ts ON pairs(shadow, ts);\n"                  \
    "CREATE TABLE IF NOT EXISTS legs (\n"                                                 \
    "  pair_id INTEGER NOT NULL,\n"                                                       \
    "  leg TEXT NOT NULL,\n"             /* 'primary' | 'shadow' | 'aa' */                \
    "  target TEXT,\n"                   /* model that served the leg */                  \
    "  backend TEXT,\n"                  /* backend name, NULL if none was picked */      \
    "  upstream_model TEXT,\n"           /* model name sent upstream, NULL = unchanged */ \
    "  streamed INTEGER NOT NULL,\n"                                                      \
    "  status INTEGER NOT NULL,\n"       /* HTTP status, 0 when there was none */         \
    "  error TEXT,\n"                    /* error kind, NULL on success */                \
    "  latency_ms REAL,\n"               /* request sent (primary: read) -> last byte */  \
    "  ttft_ms REAL,\n"                  /* -> first output token (streams only) */       \
    "  itl_ms REAL,\n"                   /* mean gap between output events */             \
    "  itl_max_ms REAL,\n"                                                                \
    "  tokens_in INTEGER,\n"                                                              \
    "  tokens_out INTEGER,\n"                                                             \
    "  tokens_exact INTEGER NOT NULL DEFAULT 0,\n" /* 1: from usage, 0: estimated */      \
    "  cost_usd REAL,\n"                                                                  \
    "  finish_reason TEXT,\n"                                                             \
    "  response TEXT,\n"                 /* answer text, redacted, bounded */             \
    "  response_truncated INTEGER NOT NULL DEFAULT 0,\n"                                  \
    "  tool_calls TEXT,\n"               /* JSON [{\"name\":..,\"arguments\":\"..\"}] */  \
    /* tool_calls: at most response_max_bytes, whole calls in order (a first  */        \
    /* call too large alone keeps its name and a cut of its arguments); a     */        \
    /* call's arguments at most 64 KiB, its name 256 bytes; of a stream, the  */        \
    /* first four calls.  Any cut sets response_truncated.  Always valid JSON. */        \
    "  PRIMARY KEY (pair_id, leg)\n"                                                      \
    ");\n"                                                                                \
    "CREATE TABLE IF NOT EXISTS comparisons (\n"                                          \
    "  pair_id INTEGER NOT NULL,\n"                                                       \
    "  against TEXT NOT NULL,\n"         /* 'shadow' | 'aa' */                            \
    "  status_agree INTEGER NOT NULL,\n" /* both succeeded, or same status+error */      \
    "  finish_agree INTEGER,\n"                                                           \
    "  exact INTEGER,\n"                 /* equal after normalisation */                  \
    "  edit_sim REAL,\n"                 /* 1 - token edit distance / max tokens */       \
    "  rouge_l REAL,\n"                  /* ROUGE-L F1 over tokens */                     \
    "  length_ratio REAL,\n"             /* other tokens / primary tokens */              \
    "  json_valid INTEGER,\n"            /* other answer is JSON (when primary is) */     \
    "  json_same INTEGER,\n"             /* same JSON structure (when primary is) */      \
    "  tool_agree INTEGER,\n"            /* same tool names and argument keys */          \
    "  refusal_primary INTEGER,\n"                                                        \
    "  refusal_other INTEGER,\n"                                                          \
    "  PRIMARY KEY (pair_id, against)\n"                                                  \
    ");\n"                                                                                \
    "CREATE TABLE IF NOT EXISTS judgements (\n"                                           \
    "  pair_id INTEGER PRIMARY KEY,\n"                                                    \
    "  judge TEXT NOT NULL,\n"           /* judge model name */                           \
    "  order1 TEXT,\n"                                                                    \
    "  order2 TEXT,\n"                                                                    \
    "  outcome TEXT NOT NULL,\n"                                                          \
    "  ts REAL NOT NULL\n"                                                                \
    ");\n"                                                                                \
    "CREATE TABLE IF NOT EXISTS counters (\n"                                             \
    "  shadow TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,\n"               \
    "  PRIMARY KEY (shadow, name)\n"                                                      \
    ");\n"                                                                                \
    "CREATE TABLE IF NOT EXISTS events (\n"                                               \
    "  ts REAL NOT NULL, shadow TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT\n"         \
    ");\n"

#endif
