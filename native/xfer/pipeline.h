/* One run of a pipeline: a reader thread, `nworkers` worker threads and the writer on the
 * calling thread, over one ring; the sender and the receiver differ only in their stages. */
#ifndef PLOYZ_XFER_PIPELINE_H
#define PLOYZ_XFER_PIPELINE_H

#include <errno.h>
#include <pthread.h>

#include "ring.h"

typedef struct {
    void *owner; /* the pz_sender or pz_receiver */
    int index;
} pz_worker_arg;

typedef struct {
    void *(*reader)(void *owner);
    void *(*worker)(void *arg);       /* given its pz_worker_arg */
    void (*writer)(void *owner);      /* runs on the calling thread */
    void (*wake)(void *owner);        /* after the stop, before the joins; may be NULL */
    const char *worker_thread;        /* what a worker is, for "cannot start a ..." */
} pz_stages;

/* Starts the stages, runs the writer until it is done or the run failed, then stops every
 * stage and joins them. The first error stays in the ring. */
static void pz_pipeline_run(pz_ring *r, void *owner, int nworkers, const pz_stages *st) {
    pthread_t reader, workers[PZ_MAX_WORKERS];
    pz_worker_arg wargs[PZ_MAX_WORKERS];
    int started = 0, have_reader = 0;
    if (pthread_create(&reader, NULL, st->reader, owner) != 0)
        pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot start the reader thread");
    else
        have_reader = 1;
    for (int i = 0; i < nworkers && !r->err; i++) {
        wargs[i].owner = owner;
        wargs[i].index = i;
        if (pthread_create(&workers[i], NULL, st->worker, &wargs[i]) != 0) {
            pz_ring_fail(r, PZ_E_RESOURCE, errno, "cannot start a %s", st->worker_thread);
            break;
        }
        started++;
    }
    if (!r->err) st->writer(owner);
    pz_ring_fail(r, PZ_OK, 0, "%s", ""); /* stop every stage; keeps the first error */
    if (st->wake) st->wake(owner);
    if (have_reader) pthread_join(reader, NULL);
    for (int i = 0; i < started; i++) pthread_join(workers[i], NULL);
}

#endif
