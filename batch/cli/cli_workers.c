/*
 * cli_workers: `fmbatch run JOB --devices all|0,1,...`: one worker process per device on one
 * host, all claiming from the job's one output under the queue's leases (batch/queue.h).
 *
 * Each worker is this program again (/proc/self/exe) with the same arguments, --devices taken out
 * and --device N put in (the engine's CUDA context on device N; the CPU backend ignores it, so
 * `--devices 0,0` is two CPU workers). A worker runs in a process group of its own, so that a
 * terminal's Ctrl-C reaches only this parent, which forwards SIGINT/SIGTERM once to every worker
 * (each releases its items and exits 130/143, as a single run does); a worker is sent SIGTERM
 * should this parent die (PR_SET_PDEATHSIG). Each worker's stderr comes through a pipe and is
 * printed line by line prefixed "[worker K device N] ", but for its progress: the workers run
 * with --progress machine, and this parent draws one bar or log line for them all (the user's
 * --progress and --progress-interval; batch/progress.h says how the counts combine). Worker K
 * of N runs with --worker-slot K/N: its first pass takes every N-th document of the source, so
 * that a job smaller than one window is shared too; its later passes take what is left.
 * Nothing is restarted: a worker that dies is reported and its items go back to the queue (for
 * the other workers' next pass or the next run); the exit code is the workers' combined one:
 * 128 + the signal forwarded; else 1 if a worker died or failed fatally, else 2 if one had a
 * usage error, else 3 if one had failed items, else 0.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "batch/cli/cli.h"
#include "batch/progress.h"
#include "engine/device.h"

#define FMB_MAX_WORKERS 256

static volatile sig_atomic_t workers_signal;

static void on_workers_signal(int sig)
{
    workers_signal = sig;
}

/* Parses "all" or "0,1,3" into devs; returns the count, or -1 after an error message. */
static int parse_devices(const char *cmd, const char *spec, int *devs)
{
    if (!strcmp(spec, "all")) {
        int n = fmb_device_count();
        if (n <= 0) {
            fmb_cli_error(cmd, "--devices all: no CUDA device here (on the CPU, --devices 0,0 "
                               "runs two CPU workers)");
            return -1;
        }
        n = n < FMB_MAX_WORKERS ? n : FMB_MAX_WORKERS;
        for (int i = 0; i < n; i++)
            devs[i] = i;
        return n;
    }
    int n = 0;
    for (const char *p = spec; *p;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 4096 || (*end && *end != ',') || n == FMB_MAX_WORKERS) {
            fmb_cli_error(cmd, "--devices must be all or device numbers such as 0,1,2 (at most %d)",
                          FMB_MAX_WORKERS);
            return -1;
        }
        devs[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (!n)
        fmb_cli_error(cmd, "--devices: no device given");
    return n ? n : -1;
}

typedef struct {
    pid_t pid;
    int fd; /* its stderr; -1 once at EOF */
    int device;
    char buf[4096];
    size_t len;
    int status;
    fmb_progress_counts *pc; /* its last progress line (an element of the parent's array) */
} worker;

/* One line of w's: its progress (taken, *moved set), else printed prefixed. */
static void worker_line(worker *w, int k, const char *s, size_t n, fmb_progress *pg, int *moved)
{
    if (fmb_progress_parse(s, n, w->pc)) {
        *moved = 1;
        return;
    }
    fmb_progress_clear(pg);
    fprintf(stderr, "[worker %d device %d] %.*s\n", k, w->device, (int)n, s);
}

/* Handles w's complete lines (all: the rest too). */
static void flush_lines(worker *w, int k, int all, fmb_progress *pg, int *moved)
{
    size_t start = 0;
    for (size_t i = 0; i < w->len; i++)
        if (w->buf[i] == '\n') {
            worker_line(w, k, w->buf + start, i - start, pg, moved);
            start = i + 1;
        }
    if ((all || (start == 0 && w->len == sizeof w->buf)) && start < w->len) {
        /* the end, or a line longer than the buffer: as it is */
        worker_line(w, k, w->buf + start, w->len - start, pg, moved);
        start = w->len;
    }
    memmove(w->buf, w->buf + start, w->len - start);
    w->len -= start;
}

int fmb_cli_run_workers(int argc, char **argv, const char *devices)
{
    const char *cmd = argv[0];
    int devs[FMB_MAX_WORKERS];
    int n = parse_devices(cmd, devices, devs);
    if (n < 0)
        return FMB_EXIT_USAGE;
    /* the workers' arguments: "fmbatch" argv[0..] without --devices and --progress, then
     * --device N --progress machine; the user's --progress (-interval) is this parent's */
    char **wargv = fmb_xcalloc((size_t)argc + 8, sizeof *wargv);
    int wn = 0;
    char devbuf[16], slotbuf[32];
    fmb_progress_mode mode = FMB_PROGRESS_AUTO;
    double interval = 30;
    wargv[wn++] = (char *)"fmbatch";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strncmp(a, "--devices=", 10))
            continue;
        if (!strcmp(a, "--devices")) {
            i++;
            continue;
        }
        if (!strncmp(a, "--progress=", 11))
            v = a + 11;
        else if (!strcmp(a, "--progress") && i + 1 < argc)
            v = argv[++i];
        if (v) { /* the workers check the value too: a bad one is their usage error */
            fmb_progress_mode_parse(v, &mode);
            continue;
        }
        if (!strncmp(a, "--progress-interval=", 20))
            v = a + 20;
        else if (!strcmp(a, "--progress-interval") && i + 1 < argc)
            v = argv[i + 1];
        if (v) {
            double d;
            if (!fmb_cli_parse_float(v, &d) && d > 0)
                interval = d;
        }
        wargv[wn++] = argv[i];
    }
    wargv[wn++] = (char *)"--device";
    wargv[wn++] = devbuf;
    wargv[wn++] = (char *)"--progress";
    wargv[wn++] = (char *)"machine";
    wargv[wn++] = (char *)"--worker-slot";
    wargv[wn++] = slotbuf;
    wargv[wn] = NULL;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_workers_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    worker *w = fmb_xcalloc((size_t)n, sizeof *w);
    fmb_progress_counts *pcs = fmb_xcalloc((size_t)n, sizeof *pcs); /* the workers' counts */
    const pid_t parent = getpid();
    int started = 0, rc = 0;
    fflush(NULL);
    for (int k = 0; k < n; k++) {
        int p[2];
        if (pipe(p)) {
            fmb_cli_error(cmd, "pipe: %s", strerror(errno));
            rc = FMB_EXIT_FATAL;
            break;
        }
        snprintf(devbuf, sizeof devbuf, "%d", devs[k]);
        snprintf(slotbuf, sizeof slotbuf, "%d/%d", k, n);
        pid_t pid = fork();
        if (pid < 0) {
            fmb_cli_error(cmd, "fork: %s", strerror(errno));
            close(p[0]);
            close(p[1]);
            rc = FMB_EXIT_FATAL;
            break;
        }
        if (pid == 0) {
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(FMB_EXIT_FATAL);
            sigaction(SIGINT, &old_int, NULL);
            sigaction(SIGTERM, &old_term, NULL);
            dup2(p[1], STDERR_FILENO);
            close(p[0]);
            close(p[1]);
            for (int j = 0; j < k; j++)
                close(w[j].fd);
            execv("/proc/self/exe", wargv);
            fprintf(stderr, "cannot start a worker: %s\n", strerror(errno));
            _exit(FMB_EXIT_FATAL);
        }
        close(p[1]);
        w[k].pid = pid;
        w[k].fd = p[0];
        w[k].device = devs[k];
        w[k].pc = &pcs[k];
        started++;
    }
    fprintf(stderr, "fmbatch %s: %d workers (devices %s) on one output\n", cmd, started, devices);
    fmb_progress *pg = fmb_progress_new(mode, interval);
    fmb_progress_counts all = {0};
    int forwarded = 0;
    struct pollfd pf[FMB_MAX_WORKERS];
    int who[FMB_MAX_WORKERS];
    for (;;) {
        if (workers_signal && !forwarded) {
            forwarded = workers_signal;
            for (int k = 0; k < started; k++)
                kill(w[k].pid, forwarded);
        }
        int np = 0;
        for (int k = 0; k < started; k++)
            if (w[k].fd >= 0) {
                who[np] = k;
                pf[np++] = (struct pollfd){w[k].fd, POLLIN, 0};
            }
        if (!np)
            break;
        if (poll(pf, (nfds_t)np, 1000) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        int moved = 0;
        for (int j = 0; j < np; j++) {
            worker *x = &w[who[j]];
            if (!(pf[j].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(x->fd, x->buf + x->len, sizeof x->buf - x->len);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                flush_lines(x, who[j], 1, pg, &moved);
                close(x->fd);
                x->fd = -1;
                continue;
            }
            x->len += (size_t)r;
            flush_lines(x, who[j], 0, pg, &moved);
        }
        if (moved) {
            fmb_progress_combine(pcs, started, &all);
            fmb_progress_update(pg, &all, NULL);
        }
    }
    int any_fatal = rc != 0, any_usage = 0, any_failed = 0;
    for (int k = 0; k < started; k++) {
        while (waitpid(w[k].pid, &w[k].status, 0) < 0 && errno == EINTR) {
        }
        const int st = w[k].status;
        if (WIFSIGNALED(st)) {
            fmb_cli_error(cmd,
                          "worker %d (device %d) died of signal %d; not restarted: its items go "
                          "back to the queue for the next run",
                          k, w[k].device, WTERMSIG(st));
            any_fatal = 1;
        } else if (WIFEXITED(st) && WEXITSTATUS(st)) {
            const int c = WEXITSTATUS(st);
            if (c == FMB_EXIT_USAGE)
                any_usage = 1;
            else if (c == FMB_EXIT_ITEMS_FAILED)
                any_failed = 1;
            else if (!(forwarded && c == 128 + forwarded))
                any_fatal = 1;
            fprintf(stderr, "fmbatch %s: worker %d (device %d) exited %d\n", cmd, k, w[k].device,
                    c);
        }
    }
    fmb_progress_end(pg, &all,
                     forwarded   ? "interrupted (the workers released their current items)"
                     : any_fatal ? "stopped by an error"
                                 : "finished");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(pcs);
    free(w);
    free(wargv);
    if (forwarded)
        return 128 + forwarded;
    return any_fatal    ? FMB_EXIT_FATAL
           : any_usage  ? FMB_EXIT_USAGE
           : any_failed ? FMB_EXIT_ITEMS_FAILED
                        : FMB_EXIT_OK;
}
