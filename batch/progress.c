/* progress: a bar on a TTY, log lines otherwise. See progress.h. */
#include "batch/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kernels/base.h"

struct fmb_progress {
    int bar;
    int none;
    double interval, start, last;
};

fmb_progress *fmb_progress_new(fmb_progress_mode mode, double interval)
{
    fmb_progress *p = fmb_xcalloc(1, sizeof *p);
    p->bar = mode == FMB_PROGRESS_BAR || (mode == FMB_PROGRESS_AUTO && isatty(2));
    p->none = mode == FMB_PROGRESS_NONE;
    p->interval = interval > 0 ? interval : 30;
    p->start = p->last = fmb_now();
    return p;
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)s;
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void line(fmb_progress *p, const fmb_progress_counts *c, const char *key, int final)
{
    double el = fmb_now() - p->start;
    double tps = el > 0 ? (double)c->tokens / el : 0;
    double ips = el > 0 ? (double)c->done / el : 0;
    char eta[32] = "?";
    if (c->total > 0 && ips > 0) {
        int64_t left = c->total - c->done - c->failed - c->skipped;
        fmt_eta(eta, sizeof eta, left > 0 ? (double)left / ips : 0);
    }
    char inflight[96] = "";
    if (c->in_flight > 0 && !final)
        snprintf(inflight, sizeof inflight, "; %lld documents (%lld tokens) in the batch",
                 (long long)c->in_flight, (long long)c->in_flight_tokens);
    if (p->bar && !final) {
        int w = 24, fill = 0;
        if (c->total > 0) {
            fill = (int)((double)(c->done + c->failed + c->skipped) * w / (double)c->total);
            fill = fill < 0 ? 0 : fill > w ? w : fill;
        }
        char bar[32];
        for (int i = 0; i < w; i++)
            bar[i] = c->total > 0 ? (i < fill ? '#' : '-') : (i == (int)el % w ? '#' : '-');
        bar[w] = 0;
        fprintf(stderr,
                "\r[%s] %lld done %lld failed %lld skipped / %lld%s  %.0f tok/s  batch %lld  "
                "ETA %s  %.32s\033[K",
                bar, (long long)c->done, (long long)c->failed, (long long)c->skipped,
                (long long)c->seen, c->total > 0 ? "" : "+", tps, (long long)c->in_flight, eta,
                key ? key : "");
    } else {
        fprintf(stderr,
                "fmbatch run: %s%lld done, %lld failed, %lld skipped, %lld seen; %lld tokens, "
                "%.0f tok/s, %.2f items/s, ETA %s%s\n",
                final ? "" : "", (long long)c->done, (long long)c->failed, (long long)c->skipped,
                (long long)c->seen, (long long)c->tokens, tps, ips, eta, inflight);
    }
    fflush(stderr);
}

void fmb_progress_update(fmb_progress *p, const fmb_progress_counts *c, const char *key)
{
    if (p->none)
        return;
    double now = fmb_now();
    if (now - p->last < (p->bar ? 0.1 : p->interval))
        return;
    p->last = now;
    line(p, c, key, 0);
}

void fmb_progress_end(fmb_progress *p, const fmb_progress_counts *c, const char *how)
{
    if (!p)
        return;
    if (!p->none) {
        if (p->bar)
            fputc('\n', stderr);
        fprintf(stderr, "fmbatch run: %s in %.1f s\n", how, fmb_now() - p->start);
        line(p, c, NULL, 1);
    }
    free(p);
}
