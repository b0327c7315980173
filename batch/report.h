/*
 * report: `fmbatch report`, a job's results as a person reads them: item counts, each task's
 * distribution (score: bits per byte, a histogram, the best and worst documents with a snippet
 * of their text; choice: the answers chosen; generate: extracted fields and generated text),
 * failures by kind and throughput. As plain text for an 80-column terminal, and as one
 * self-contained HTML page (inline CSS and SVG; no script, no network).
 *
 * fmb_report_gather runs every query (the queue's read side, batch/queue.h) and, for the
 * documents it shows, reads their snippets back from the job's source (one pass, stopped when
 * every wanted key is found: the output database does not store document text;
 * docs/DECISIONS.md). The writers only format what was gathered.
 *
 * Ownership: fmb_report_gather returns a report the caller frees with fmb_report_free; the
 * job and queue are borrowed during the call only.
 */
#ifndef FMB_REPORT_H
#define FMB_REPORT_H

#include <stdio.h>

#include "batch/job.h"
#include "batch/queue.h"
#include "kernels/base.h"

typedef struct {
    size_t top;   /* best and worst documents per score task, answers per generate task */
    int snippets; /* 0: do not read the source (keys only) */
    int bold;     /* bold headings in the text report (the caller decides: a TTY, no NO_COLOR) */
} fmb_report_opts;

typedef struct fmb_report fmb_report;

FMB_NODISCARD fmb_status fmb_report_gather(
    const fmb_job *job, fmb_queue *q, const fmb_report_opts *opts, fmb_report **out, fmb_err *err);
void fmb_report_free(fmb_report *r);

/* The text report (lines of at most 80 columns, keys and snippets cut to fit). */
void fmb_report_text(const fmb_report *r, FILE *f);
/* The HTML page. Every text from documents and the database is escaped. */
void fmb_report_html(const fmb_report *r, FILE *f);

#endif
