/* bg.c — a background thread's sleep and stop (bg.h). */
#include "bg.h"

#include <time.h>

int bg_start(struct bg *b, void *(*fn)(void *), void *arg)
{
    b->stop = false;
    if (pthread_create(&b->th, NULL, fn, arg) != 0)
        return -1;
    b->running = true;
    return 0;
}

void bg_wait(struct bg *b, double seconds) { cond_wait_for(&b->cond, &b->lock, seconds); }

void cond_wait_for(pthread_cond_t *cond, pthread_mutex_t *lock, double seconds)
{
    if (!(seconds > 0))
        return;
    if (seconds > 86400)
        seconds = 86400;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)seconds;
    ts.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cond, lock, &ts);
}

void bg_wake(struct bg *b)
{
    pthread_mutex_lock(&b->lock);
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

void bg_stop(struct bg *b)
{
    if (!b->running)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = true;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->th, NULL);
    b->running = false;
}
