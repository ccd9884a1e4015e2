/* Token bucket: the bandwidth limit, applied to wire bytes by the sender's writer.
 *
 * A bucket is a sender's own, or shared by the concurrent sends of one migration or drain
 * (``mu`` set): one limit for all of them, which a send that ends no longer takes from, so the
 * others pass its share on at once instead of each keeping a fixed fraction of the limit. */
#ifndef PLOYZ_XFER_BUCKET_H
#define PLOYZ_XFER_BUCKET_H

#include <pthread.h>
#include <time.h>

typedef struct {
    double rate;    /* bytes per second; 0 means unlimited */
    double tokens;
    double burst;
    double last;
    pthread_mutex_t *mu;  /* shared between senders' writers; NULL for a sender's own */
} pz_bucket;

static double pz_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pz_bucket_take(pz_bucket *b, double n, volatile int *stop) {
    if (b->rate <= 0) return;
    for (;;) {
        if (b->mu) pthread_mutex_lock(b->mu);
        double now = pz_now();
        b->tokens += (now - b->last) * b->rate;
        b->last = now;
        if (b->tokens > b->burst) b->tokens = b->burst;
        int taken = b->tokens >= n || *stop;
        if (taken) b->tokens -= n;
        double wait = taken ? 0 : (n - b->tokens) / b->rate;
        if (b->mu) pthread_mutex_unlock(b->mu);
        if (taken) return;
        if (wait > 0.05) wait = 0.05;
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

#endif
