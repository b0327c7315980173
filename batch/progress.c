/* progress: a bar on a TTY, log lines otherwise. See progress.h. */
#include "batch/progress.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kernels/base.h"

struct fmb_progress {
    int bar;
    int none;
    int machine;
    int cols;              /* the terminal's width (bar mode) */
    _Atomic int64_t total; /* the source's count (fmb_progress_set_total), 0: not yet */
    double interval, start, last;
};

int fmb_progress_mode_parse(const char *s, fmb_progress_mode *m)
{
    static const char *const names[] = {"auto", "bar", "plain", "none", "machine"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) {
            *m = (fmb_progress_mode)i; /* the enum's order */
            return 0;
        }
    return -1;
}

fmb_progress *fmb_progress_new(fmb_progress_mode mode, double interval)
{
    fmb_progress *p = fmb_xcalloc(1, sizeof *p);
    p->bar = mode == FMB_PROGRESS_BAR || (mode == FMB_PROGRESS_AUTO && isatty(2));
    p->none = mode == FMB_PROGRESS_NONE;
    p->machine = mode == FMB_PROGRESS_MACHINE;
    p->bar = p->bar && !p->machine;
    p->interval = p->machine ? 0.25 : interval > 0 ? interval : 30;
    p->start = p->last = fmb_now();
    struct winsize ws;
    p->cols = ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20 ? ws.ws_col : 80;
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

/* Cuts s (length n) to at most max bytes, not inside a UTF-8 sequence. */
static void fit_line(char *s, size_t n, size_t max)
{
    if (n <= max)
        return;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    s[k] = 0;
}

void fmb_progress_set_total(fmb_progress *p, int64_t total)
{
    if (p)
        atomic_store(&p->total, total);
}

/* The MACHINE line: FMB_PROGRESS_TAG and the counts in the struct's order. */
size_t fmb_progress_format(const fmb_progress_counts *c, char *buf, size_t n)
{
    FMB_ASSERT(n >= 256);
    int w = snprintf(buf, n, FMB_PROGRESS_TAG "%lld %lld %lld %lld %lld %lld %lld %lld %lld\n",
                     (long long)c->seen, (long long)c->done, (long long)c->failed,
                     (long long)c->skipped, (long long)c->tokens, (long long)c->total,
                     (long long)c->in_flight, (long long)c->in_flight_tokens,
                     (long long)c->in_flight_done);
    FMB_ASSERT(w > 0 && (size_t)w < n);
    return (size_t)w;
}

static void machine_line(const fmb_progress_counts *c)
{
    char buf[256];
    const size_t len = fmb_progress_format(c, buf, sizeof buf);
    fwrite(buf, 1, len, stderr);
    fflush(stderr);
}

int fmb_progress_parse(const char *s, size_t n, fmb_progress_counts *c)
{
    const size_t tl = strlen(FMB_PROGRESS_TAG);
    char buf[256];
    if (n <= tl || n >= sizeof buf || memcmp(s, FMB_PROGRESS_TAG, tl))
        return 0;
    memcpy(buf, s + tl, n - tl);
    buf[n - tl] = 0;
    // nine counts: decimal, one space apart, each in [0, 2^53] (so that the sums of up to 256
    // workers' cannot overflow)
    int64_t v[9];
    const char *p = buf;
    for (int i = 0; i < 9; i++) {
        if (i && *p++ != ' ')
            return 0;
        if (*p < '0' || *p > '9')
            return 0;
        int64_t x = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            x = x * 10 + (*p - '0');
            if (x > ((int64_t)1 << 53))
                return 0;
        }
        v[i] = x;
    }
    if (*p)
        return 0;
    *c = (fmb_progress_counts){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
    return 1;
}

void fmb_progress_combine(const fmb_progress_counts *w, int n, fmb_progress_counts *out)
{
    fmb_progress_counts r = {0};
    int64_t settled = 0;
    for (int i = 0; i < n; i++) {
        r.seen = w[i].seen > r.seen ? w[i].seen : r.seen;
        r.total = w[i].total > r.total ? w[i].total : r.total;
        r.done += w[i].done;
        r.failed += w[i].failed;
        r.tokens += w[i].tokens;
        r.in_flight += w[i].in_flight;
        r.in_flight_tokens += w[i].in_flight_tokens;
        r.in_flight_done += w[i].in_flight_done;
        int64_t s = w[i].done + w[i].failed + w[i].skipped;
        settled = s > settled ? s : settled;
    }
    r.skipped = settled > r.done + r.failed ? settled - r.done - r.failed : 0;
    *out = r;
}

static void line(fmb_progress *p, const fmb_progress_counts *c0, const char *key, int final)
{
    fmb_progress_counts cc = *c0, *c = &cc;
    int64_t counted = atomic_load(&p->total);
    if (counted > c->total)
        c->total = counted;
    if (p->machine) {
        machine_line(c);
        return;
    }
    if (c->total && c->total < c->seen)
        c->total = c->seen;
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
        snprintf(inflight, sizeof inflight,
                 "; %lld documents (%lld tokens, %lld prefilled) in the batch",
                 (long long)c->in_flight, (long long)c->in_flight_tokens,
                 (long long)c->in_flight_done);
    char of[48] = "";
    if (c->total > 0)
        snprintf(of, sizeof of, " of %lld", (long long)c->total);
    if (p->bar && !final) {
        int w = p->cols >= 120 ? 24 : 12, fill = 0;
        if (c->total > 0) {
            fill = (int)((double)(c->done + c->failed + c->skipped) * w / (double)c->total);
            fill = fill < 0 ? 0 : fill > w ? w : fill;
        }
        char bar[32];
        for (int i = 0; i < w; i++)
            bar[i] = c->total > 0 ? (i < fill ? '#' : '-') : (i == (int)el % w ? '#' : '-');
        bar[w] = 0;
        char pre[96] = "";
        if (c->in_flight > 0 && c->in_flight_tokens > 0)
            snprintf(pre, sizeof pre, " prefill %d%%",
                     (int)(100.0 * (double)c->in_flight_done / (double)c->in_flight_tokens));
        char out[512];
        int n =
            snprintf(out, sizeof out,
                     "[%s] %lld/%lld%s done %lld failed  %.0f tok/s  ETA %s  batch %lld%s  %s", bar,
                     (long long)(c->done + c->skipped),
                     (long long)(c->total > 0 ? c->total : c->seen), c->total > 0 ? "" : "+",
                     (long long)c->failed, tps, eta, (long long)c->in_flight, pre, key ? key : "");
        (void)n;
        fit_line(out, strlen(out), (size_t)p->cols - 1);
        fprintf(stderr, "\r%s\033[K", out);
    } else {
        fprintf(stderr,
                "fmbatch run: %lld done, %lld failed, %lld skipped, %lld seen%s; %lld tokens, "
                "%.0f tok/s, %.2f items/s, ETA %s%s\n",
                (long long)c->done, (long long)c->failed, (long long)c->skipped, (long long)c->seen,
                of, (long long)c->tokens, tps, ips, eta, inflight);
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

void fmb_progress_clear(fmb_progress *p)
{
    if (p && p->bar && !p->none)
        fputs("\r\033[K", stderr);
}

void fmb_progress_end(fmb_progress *p, const fmb_progress_counts *c, const char *how)
{
    if (!p)
        return;
    if (p->machine) {
        line(p, c, NULL, 1); /* the final counts; the parent says how it ended */
    } else if (!p->none) {
        if (p->bar)
            fputc('\n', stderr);
        fprintf(stderr, "fmbatch run: %s in %.1f s\n", how, fmb_now() - p->start);
        line(p, c, NULL, 1);
    }
    free(p);
}
