/*
 * fault: deterministic fault injection for the reliability tests (tests/sh/faults.sh).
 *
 * FMB_FAULT=NAME:N[,NAME:N...] is read once by main (batch/cli/main.c) and parsed here into a
 * context that the runner and the queue are given; nothing below main reads the environment.
 * A kill point makes the process die by SIGKILL (as kill -9 would: no handler, no cleanup) at
 * the Nth pass of that point; an error point makes the Nth pass fail (sqlite-busy: once, a lock
 * that is busy for a moment; sqlite-full, sqlite-ioerr: that pass and every later one, as a
 * full or failing disk stays so). The SQLite points and checkpoint act through a VFS shim
 * (fmb_queue_fault_vfs in batch/queue_fault.c). Without FMB_FAULT the context is NULL and
 * fmb_fault_hit costs one branch.
 *
 * Passes are counted atomically: points are passed on the runner, engine and heartbeat threads.
 */
#ifndef FMB_FAULT_H
#define FMB_FAULT_H

#include "kernels/base.h"

typedef enum {
    FMB_FAULT_AFTER_CLAIM,        /* queue: a claim statement ran (inside its transaction) */
    FMB_FAULT_AFTER_CLAIM_WINDOW, /* runner: a window's claims were committed */
    FMB_FAULT_BEFORE_COMMIT,      /* runner: a window's rows are written, not committed */
    FMB_FAULT_AFTER_COMMIT,       /* queue: a batch transaction was committed */
    FMB_FAULT_CHECKPOINT,         /* VFS: a write into the database file (a WAL checkpoint) */
    FMB_FAULT_PREFILL,            /* runner: a prefill chunk ended (engine progress callback) */
    FMB_FAULT_DECODE,             /* runner: a decode step ended (task step callback) */
    FMB_FAULT_SQLITE_BUSY,        /* VFS: a write lock is refused with SQLITE_BUSY, once */
    FMB_FAULT_SQLITE_FULL,        /* VFS: writes fail with SQLITE_FULL from the Nth on */
    FMB_FAULT_SQLITE_IOERR,       /* VFS: writes fail with SQLITE_IOERR_WRITE from the Nth on */
    FMB_FAULT_N
} fmb_fault_point;

typedef struct fmb_fault fmb_fault;

/* Parses spec ("after-commit:2,prefill:5"). NULL or "" gives *out = NULL (no faults). Errors
 * name the bad part and the known points. */
FMB_NODISCARD fmb_status fmb_fault_parse(const char *spec, fmb_fault **out, fmb_err *err);
void fmb_fault_free(fmb_fault *f);

/* The point's name ("after-commit"). */
const char *fmb_fault_name(fmb_fault_point p);

/* Whether point p is armed in f (f may be NULL). */
int fmb_fault_armed(const fmb_fault *f, fmb_fault_point p);

/* Counts a pass of p and returns 1 when it must fail: the Nth pass (sqlite-busy), the Nth and
 * every later one (sqlite-full, sqlite-ioerr); kill points die at the Nth pass instead. */
int fmb_fault_pass(fmb_fault *f, fmb_fault_point p);

/* A point in the code: one branch when f is NULL. */
static inline void fmb_fault_hit(fmb_fault *f, fmb_fault_point p)
{
    if (f)
        (void)fmb_fault_pass(f, p);
}

#endif
