/*
 * progress: run progress on stderr. On a TTY a bar redrawn at most 10 times a second (items,
 * tokens/s, ETA when the total is known); otherwise one plain log line every interval seconds
 * (CI and SLURM logs want lines, not carriage returns). Counts are of this run's work. The bar
 * fits the terminal's width (TIOCGWINSZ, else 80 columns), so it never wraps into a new line;
 * the key shown is the one the engine is working on. MACHINE mode is for a parent process
 * (`run --devices`): a line of counts at most four times a second (FMB_PROGRESS_TAG, then the
 * counts as integers), which fmb_progress_parse reads back; the parent draws one combined bar
 * or log line for all its workers (fmb_progress_combine).
 */
#ifndef FMB_PROGRESS_H
#define FMB_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FMB_PROGRESS_AUTO = 0,
    FMB_PROGRESS_BAR,
    FMB_PROGRESS_PLAIN,
    FMB_PROGRESS_NONE,
    FMB_PROGRESS_MACHINE
} fmb_progress_mode;

/* The first bytes of a MACHINE line (an ASCII record separator first, so that no log line
 * starts with it). */
#define FMB_PROGRESS_TAG "\036fmbatch-progress "

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

/* "auto", "bar", "plain", "none" or "machine" into *m: 0, or -1 for another text. */
int fmb_progress_mode_parse(const char *s, fmb_progress_mode *m);

/* Caller frees with fmb_progress_end. */
fmb_progress *fmb_progress_new(fmb_progress_mode mode, double interval);
void fmb_progress_update(fmb_progress *p, const fmb_progress_counts *c, const char *key);
/* The number of documents in the source, once counted (by another thread: safe to call from
 * any thread). The bar and the ETA use the larger of it and counts.total. */
void fmb_progress_set_total(fmb_progress *p, int64_t total);
/* Before another line is printed: clears the bar (bar mode; nothing otherwise). */
void fmb_progress_clear(fmb_progress *p);
/* Prints the final line and frees p (accepts NULL). */
void fmb_progress_end(fmb_progress *p, const fmb_progress_counts *c, const char *how);

/* Writes c's MACHINE line, newline included, into buf (n ≥ 256); returns its length. */
size_t fmb_progress_format(const fmb_progress_counts *c, char *buf, size_t n);
/* Reads a MACHINE line (n bytes, without its newline) into *c: 1, or 0 when it is not one
 * (nine counts in [0, 2^53], one space apart, nothing else; *c is then unchanged). */
int fmb_progress_parse(const char *line, size_t n, fmb_progress_counts *c);
/* The counts of n workers of one job as one run's: done, failed, tokens and the batches
 * summed; seen and total the largest; skipped what the worker that has settled the most
 * (done + failed + skipped: its skips include what the others took) leaves beyond the sums. */
void fmb_progress_combine(const fmb_progress_counts *w, int n, fmb_progress_counts *out);

#endif
