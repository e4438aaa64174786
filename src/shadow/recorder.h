/* recorder.h — the pair store's writer: a background thread that owns the
 * SQLite file (store.h), compares every pair (compare.c), analyses each
 * shadow periodically (report.c) and stops a failing one.
 *
 * Queue policy: workers hand finished pairs to a bounded FIFO
 * (shadow_store.queue_size pairs, and shadow_store.queue_max_bytes bytes
 * held by the pairs queued and by the batch being written — a pair holds a
 * bounded prompt prefix and bounded answers, never the client's body).
 * When either bound is reached the new pair is dropped and counted
 * (shade_shadow_dropped_total{reason="queue_full"}): the worker never waits
 * for the disk.  The writer takes everything queued at once and
 * writes it in one transaction.  On shutdown it writes what is left, then
 * the counters, then checkpoints the WAL and closes the file.
 */
#ifndef SHADE_RECORDER_H
#define SHADE_RECORDER_H

#include <stddef.h>
#include <stdint.h>

struct gateway;
struct shadow_pair;
struct shadow_rt;

/* Open (create) the store, restore each shadow's last run-time state, start
 * the writer.  A no-op without shadows. */
int recorder_start(struct gateway *gw, char *err, size_t errlen);
/* Flush everything queued, persist counters, close.  Workers must be done. */
void recorder_stop(void);
/* From a worker: the pair is complete; the recorder owns it now. */
void recorder_submit(struct shadow_pair *p);
/* A mirrored request that will not become a pair (enum shadow_drop). */
void recorder_drop(struct shadow_rt *sh, int reason);
/* A state change, written to the events table. */
void recorder_event(struct shadow_rt *sh, const char *kind, const char *detail);
/* Change a shadow's state (admin API, auto-stop): logged, and recorded as
 * an event of `kind` (NULL: "start" | "pause" | "stop" after the new state).
 * Here, beside the events table and the state restored at start, so that
 * the writer's auto-stop needs nothing of the worker side (shadow.c). */
void recorder_set_state(struct shadow_rt *sh, int state, const char *kind, const char *why);
/* Pairs waiting for the writer, and the bytes they and the batch being
 * written hold (metrics, admin). */
size_t recorder_queue_depth(void);
uint64_t recorder_queue_bytes(void);

#endif
