/* Token bucket: the bandwidth limit, applied to wire bytes by the sender's writer. */
#ifndef PLOYZ_XFER_BUCKET_H
#define PLOYZ_XFER_BUCKET_H

#include <time.h>

typedef struct {
    double rate;    /* bytes per second; 0 means unlimited */
    double tokens;
    double burst;
    double last;
} pz_bucket;

static double pz_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pz_bucket_take(pz_bucket *b, double n, volatile int *stop) {
    if (b->rate <= 0) return;
    for (;;) {
        double now = pz_now();
        b->tokens += (now - b->last) * b->rate;
        b->last = now;
        if (b->tokens > b->burst) b->tokens = b->burst;
        if (b->tokens >= n || *stop) {
            b->tokens -= n;
            return;
        }
        double wait = (n - b->tokens) / b->rate;
        if (wait > 0.05) wait = 0.05;
        struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

#endif
