/* bg.h — a background thread that sleeps on a condition variable until
 * its next deadline, a wake-up or a stop: the shape of the pair store's
 * writer, the rollout controller and the experiments' writer.
 *
 *   bg_start   create the thread (fn runs with the struct's lock free)
 *   bg_wait    under the lock: sleep up to `seconds`, or until woken
 *   bg_wake    wake it now (work arrived)
 *   bg_stop    ask it to stop (bg->stop, under the lock), wake it, join
 */
#ifndef SHADE_BG_H
#define SHADE_BG_H

#include <pthread.h>
#include <stdbool.h>

struct bg {
    pthread_t th;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running, stop;
};
#define BG_INIT { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER }

/* 0, or -1 when the thread could not be created. */
int bg_start(struct bg *b, void *(*fn)(void *), void *arg);
/* With b->lock held: wait until woken or `seconds` have passed (at once
 * when seconds <= 0). */
void bg_wait(struct bg *b, double seconds);
/* The same on any condition variable (CLOCK_REALTIME, the default). */
void cond_wait_for(pthread_cond_t *cond, pthread_mutex_t *lock, double seconds);
void bg_wake(struct bg *b);
/* Set stop, wake the thread and join it; nothing when it is not running. */
void bg_stop(struct bg *b);

#endif
