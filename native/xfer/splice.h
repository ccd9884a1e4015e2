/* Raw frames between pipes: the slot pipes, and moving a frame through one by splice(2) and
 * tee(2) instead of through memory (docs/protocol.md, "Data path"). */
#ifndef PLOYZ_XFER_SPLICE_H
#define PLOYZ_XFER_SPLICE_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ring.h"

static void pz_close(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

/* A pipe that holds at least one frame. A frame of full pages needs `frame` bytes of pipe, one
 * split into partly filled pages (a `zfs send` record header on a page of its own, a network
 * segment per page) needs more, so the pipe gets four times that if it may (without privilege
 * pipes stop at /proc/sys/fs/pipe-max-size). */
static int pz_pipe_open(int *rd, int *wr, size_t frame) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    for (size_t size = 4 * frame; size >= frame; size /= 2) {
        if (fcntl(fds[1], F_SETPIPE_SZ, (int)size) >= (int)frame) {
            *rd = fds[0];
            *wr = fds[1];
            return 0;
        }
    }
    close(fds[0]);
    close(fds[1]);
    return -1;
}

static void pz_ring_close_pipes(pz_ring *r) {
    for (int i = 0; i < r->nslots; i++) {
        pz_close(&r->slots[i].pipe_rd);
        pz_close(&r->slots[i].pipe_wr);
    }
    pz_close(&r->check_rd);
    pz_close(&r->check_wr);
    pz_close(&r->discard_fd);
    r->piped = 0;
}

/* Gives every slot a pipe (and the ring its check pipe) when `piped` asks for it; without them
 * (no pipes left, a size the kernel refuses) the ring simply moves every frame through memory. */
static void pz_ring_open_pipes(pz_ring *r, size_t frame) {
    r->piped = 1;
    for (int i = 0; i < r->nslots && r->piped; i++)
        r->piped = pz_pipe_open(&r->slots[i].pipe_rd, &r->slots[i].pipe_wr, frame) == 0;
    if (r->piped) r->piped = pz_pipe_open(&r->check_rd, &r->check_wr, frame) == 0;
    if (r->piped) r->piped = (r->discard_fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) >= 0;
    if (!r->piped) pz_ring_close_pipes(r);
}

static int pz_is_pipe(int fd) {
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

static ssize_t pz_read_full(int fd, unsigned char *buf, size_t want) {
    size_t got = 0;
    while (got < want) {
        ssize_t n = read(fd, buf + got, want - got);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Waits until `fd` has `events`. Gives up after `timeout_ms` (-1: never) with errno EAGAIN, or
 * when `wake_fd` (-1: none) becomes readable, with errno ECANCELED. */
static int pz_wait_fd(int fd, short events, int wake_fd, int timeout_ms) {
    for (;;) {
        struct pollfd fds[2] = {{fd, events, 0}, {wake_fd, POLLIN, 0}};
        int ready = poll(fds, wake_fd >= 0 ? 2 : 1, timeout_ms);
        if (ready < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (ready == 0) {
            errno = EAGAIN;
            return -1;
        }
        if (wake_fd >= 0 && fds[1].revents) {
            errno = ECANCELED;
            return -1;
        }
        return 0;
    }
}

/* Splices up to `want` bytes from `from` into a slot pipe, waiting for `from` as pz_wait_fd
 * does (so a blocking socket's receive timeout and the receiver's wake pipe still apply).
 * Returns the bytes moved: fewer than `want` when `from` ended, or when the slot pipe ran out of
 * room (`*full`); -1 with errno on failure. */
static ssize_t pz_splice_fill(int from, int pipe_wr, size_t want, int wake_fd, int idle_ms,
                              int *full) {
    size_t got = 0;
    *full = 0;
    while (got < want) {
        if (pz_wait_fd(from, POLLIN, wake_fd, idle_ms) != 0) return -1;
        ssize_t n = splice(from, NULL, pipe_wr, NULL, want - got,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0) break;
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return -1;
        struct pollfd room = {pipe_wr, POLLOUT, 0};
        if (poll(&room, 1, 0) == 0) {
            *full = 1;
            break;
        }
    }
    return (ssize_t)got;
}

/* Reads the `len` bytes a slot pipe holds into the slot's memory and leaves them in the pipe:
 * tee(2) into the ring's check pipe (as large as a slot pipe, and empty), then read that. */
static int pz_pipe_peek(pz_ring *r, pz_slot *slot, size_t len) {
    ssize_t n = tee(slot->pipe_rd, r->check_wr, len, SPLICE_F_NONBLOCK);
    if (n < 0) return -1;
    if (pz_read_full(r->check_rd, slot->raw, (size_t)n) != n) return -1;
    if ((size_t)n != len) {
        errno = ENOSPC;
        return -1;
    }
    return 0;
}

/* Takes a slot pipe's `len` bytes out into the slot's memory: the frame goes on as one that was
 * never in a pipe. */
static int pz_pipe_unload(pz_slot *slot, size_t len) {
    slot->in_pipe = 0;
    return pz_read_full(slot->pipe_rd, slot->raw, len) == (ssize_t)len ? 0 : -1;
}

/* Fills a slot with `want` bytes from `from` through its pipe: the bytes end up both in the pipe
 * (`in_pipe`) and in memory, or, if they did not fit the pipe, in memory only, the rest read by
 * `read_rest`. Returns the bytes filled, fewer than `want` only where `from` ended. */
static ssize_t pz_slot_fill(pz_ring *r, pz_slot *slot, int from, size_t want, int wake_fd,
                            int idle_ms, ssize_t (*read_rest)(void *, unsigned char *, size_t),
                            void *ctx) {
    int full;
    ssize_t n = pz_splice_fill(from, slot->pipe_wr, want, wake_fd, idle_ms, &full);
    if (n < 0) return -1;
    slot->in_pipe = n > 0;
    if (full) {
        if (pz_pipe_unload(slot, (size_t)n) != 0) return -1;
        ssize_t rest = read_rest(ctx, slot->raw + n, want - (size_t)n);
        return rest < 0 ? -1 : n + rest;
    }
    if (n > 0 && pz_pipe_peek(r, slot, (size_t)n) != 0 &&
        pz_pipe_unload(slot, (size_t)n) != 0)
        return -1;
    return n;
}

/* Moves `len` bytes from a slot pipe to `to` (a socket, a pipe or /dev/null). */
static int pz_splice_out(int pipe_rd, int to, size_t len) {
    while (len > 0) {
        ssize_t n = splice(pipe_rd, NULL, to, NULL, len, SPLICE_F_MOVE);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EPIPE;
            return -1;
        }
        len -= (size_t)n;
    }
    return 0;
}

#endif
