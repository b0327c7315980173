/*
 * progress: run progress on stderr. On a TTY a bar redrawn at most 10 times a second (items,
 * tokens/s, ETA when the total is known); otherwise one plain log line every interval seconds
 * (CI and SLURM logs want lines, not carriage returns). Counts are of this run's work. The bar
 * fits the terminal's width (TIOCGWINSZ, else 80 columns), so it never wraps into a new line;
 * the key shown is the one the engine is working on.
 */
#ifndef FMB_PROGRESS_H
#define FMB_PROGRESS_H

#include <stdint.h>

typedef enum {
    FMB_PROGRESS_AUTO = 0,
    FMB_PROGRESS_BAR,
    FMB_PROGRESS_PLAIN,
    FMB_PROGRESS_NONE
} fmb_progress_mode;

typedef struct fmb_progress fmb_progress;

typedef struct {
    int64_t seen;             /* documents the source yielded */
    int64_t done;             /* done by this run */
    int64_t failed;           /* failed (or dead) by this run */
    int64_t skipped;          /* already done, busy elsewhere, or failed before */
    int64_t tokens;           /* document tokens processed by this run */
    int64_t total;            /* documents expected (0: unknown) */
    int64_t in_flight;        /* documents in the batch on the engine now */
    int64_t in_flight_tokens; /* their tokens (after truncation) */
    int64_t in_flight_done;   /* of those, prefilled so far (moves within a long document) */
} fmb_progress_counts;

/* Caller frees with fmb_progress_end. */
fmb_progress *fmb_progress_new(fmb_progress_mode mode, double interval);
void fmb_progress_update(fmb_progress *p, const fmb_progress_counts *c, const char *key);
/* The number of documents in the source, once counted (by another thread: safe to call from
 * any thread). The bar and the ETA use the larger of it and counts.total. */
void fmb_progress_set_total(fmb_progress *p, int64_t total);
/* Prints the final line and frees p (accepts NULL). */
void fmb_progress_end(fmb_progress *p, const fmb_progress_counts *c, const char *how);

#endif
