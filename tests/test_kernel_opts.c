/* test_kernel_opts: the kernel choices' text form (kernels/kopts.h), the --kernel flag and the
 * legacy environment variables as batch/cli reads them, and what a CPU engine reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/cli/cli.h"
#include "kernels/kopts.h"
#include "tests/check.h"

static void t_parse(void)
{
    fmb_kernel_opts k = {0};
    fmb_err err = {{0}};
    check(!fmb_kernel_opts_parse("", &k, &err) && !fmb_kernel_opts_parse(NULL, &k, &err) &&
              !memcmp(&k, &(fmb_kernel_opts){0}, sizeof k),
          "empty text: defaults", "%s", err.msg);
    check(!fmb_kernel_opts_parse("scan=tile1,matvec=mma,gemm=cublas,pdl=off,graphs=off,"
                                 "debug-sync=on,gemm-verbose=1",
                                 &k, &err),
          "every key parses", "%s", err.msg);
    check(k.scan == FMB_SCAN_TILE1 && k.matvec == FMB_MATVEC_MMA && k.gemm == FMB_GEMM_CUBLAS &&
              k.pdl == FMB_PDL_OFF && k.no_graphs == 1 && k.debug_sync == 1 && k.gemm_verbose == 1,
          "every key lands in its field", "scan %d matvec %d gemm %d pdl %d", k.scan, k.matvec,
          k.gemm, k.pdl);
    // later items and later calls win; keys not named keep their value
    check(!fmb_kernel_opts_parse("scan=quad,scan=seg,graphs=1", &k, &err) &&
              k.scan == FMB_SCAN_SEG && k.no_graphs == 0 && k.gemm == FMB_GEMM_CUBLAS,
          "parse applies on top", "scan %d graphs %d", k.scan, k.no_graphs);
    check(!fmb_kernel_opts_parse("pdl=on", &k, &err) && k.pdl == FMB_PDL_AUTO,
          "pdl=on means auto (on where it works)", "pdl %d", k.pdl);

    const char *bad[] = {"scan=fast",
                         "scan",
                         "=seg",
                         "warp=2",
                         "scan=seg,",
                         ",scan=seg",
                         "scan=seg,,gemm=fixed",
                         "debug-sync=yes",
                         "matvec=",
                         "scan=seg gemm=fixed"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fmb_kernel_opts b = {0};
        b.gemm = FMB_GEMM_FIXEDWS;
        fmb_status s = fmb_kernel_opts_parse(bad[i], &b, &err);
        char name[96];
        snprintf(name, sizeof name, "bad kernel options rejected: '%s'", bad[i]);
        check(s == FMB_EINVAL && b.gemm == FMB_GEMM_FIXEDWS && b.scan == FMB_SCAN_AUTO, name,
              "status %d (%s)", s, err.msg);
    }
    check(fmb_kernel_opts_parse("scan=fast", &k, &err) == FMB_EINVAL &&
              strstr(err.msg, "scan must be auto|quad|seg|tile|tile1") != NULL,
          "bad value: the message lists the choices", "%s", err.msg);
}

static void t_format(void)
{
    char buf[256];
    fmb_kernel_opts k = {0};
    check(!strcmp(fmb_kernel_opts_format(&k, FMB_KOPTS_ALL, buf, sizeof buf),
                  "scan=auto,matvec=auto,gemm=fixed,pdl=auto,graphs=on,debug-sync=off,"
                  "gemm-verbose=off,smem-cap=off"),
          "format ALL of the defaults", "%s", buf);
    check(!strcmp(fmb_kernel_opts_format(&k, FMB_KOPTS_NONDEFAULT, buf, sizeof buf), ""),
          "format NONDEFAULT of the defaults is empty", "%s", buf);
    k.gemm = FMB_GEMM_FIXEDWS, k.pdl = FMB_PDL_OFF, k.debug_sync = 1;
    check(!strcmp(fmb_kernel_opts_format(&k, FMB_KOPTS_NONDEFAULT, buf, sizeof buf),
                  "gemm=fixedws,pdl=off,debug-sync=on"),
          "format NONDEFAULT", "%s", buf);
    check(!strcmp(fmb_kernel_opts_format(&k, FMB_KOPTS_NUMERIC, buf, sizeof buf), "gemm=fixedws"),
          "format NUMERIC: only the keys that change numbers", "%s", buf);
    k.pdl = FMB_PDL_ON;
    check(strstr(fmb_kernel_opts_format(&k, FMB_KOPTS_ALL, buf, sizeof buf), "pdl=on") != NULL,
          "an engine's resolved pdl prints as on", "%s", buf);
    // every value of every key round-trips
    const char *all[] = {"scan=quad",    "scan=seg",   "scan=tile",     "scan=tile1",
                         "matvec=cc",    "matvec=mma", "gemm=fixedws",  "gemm=cublas",
                         "pdl=off",      "graphs=off", "debug-sync=on", "gemm-verbose=on",
                         "smem-cap=sm86"};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        fmb_kernel_opts r = {0};
        fmb_err err;
        int ok = !fmb_kernel_opts_parse(all[i], &r, &err);
        fmb_kernel_opts_format(&r, FMB_KOPTS_NONDEFAULT, buf, sizeof buf);
        char name[64];
        snprintf(name, sizeof name, "round trip %s", all[i]);
        check(ok && !strcmp(buf, all[i]), name, "got '%s'", buf);
    }
}

static void t_fill(void)
{
    fmb_kernel_opts o = {0}, d = {0};
    o.scan = FMB_SCAN_SEG;
    d.scan = FMB_SCAN_QUAD, d.gemm = FMB_GEMM_CUBLAS, d.no_graphs = 1;
    fmb_kernel_opts_fill(&o, &d);
    check(o.scan == FMB_SCAN_SEG && o.gemm == FMB_GEMM_CUBLAS && o.no_graphs == 1 &&
              o.matvec == FMB_MATVEC_AUTO,
          "fill takes the lower-priority source where o is at its default", "scan %d gemm %d",
          o.scan, o.gemm);
}

static void clear_env(void)
{
    const char *v[] = {"FMB_SCAN",        "FMB_MATVEC",     "FMB_GEMM",        "FMB_PDL",
                       "FMB_CUDA_GRAPHS", "FMB_DEBUG_SYNC", "FMB_GEMM_VERBOSE"};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        unsetenv(v[i]);
}

static void t_cli(void)
{
    fmb_engine_opts eo = {0};
    int bad = 0;
    check(fmb_cli_engine_opt("kernel", "scan=quad,pdl=off", &eo, &bad) == 1 && !bad &&
              eo.kernel.scan == FMB_SCAN_QUAD && eo.kernel.pdl == FMB_PDL_OFF,
          "--kernel is an engine option", "bad %d scan %d", bad, eo.kernel.scan);
    check(fmb_cli_engine_opt("kernel", "gemm=cublas", &eo, &bad) == 1 && !bad &&
              eo.kernel.scan == FMB_SCAN_QUAD && eo.kernel.gemm == FMB_GEMM_CUBLAS,
          "--kernel repeats and accumulates", "scan %d gemm %d", eo.kernel.scan, eo.kernel.gemm);
    check(fmb_cli_engine_opt("kernel", "scan=nope", &eo, &bad) == 1 && bad &&
              eo.kernel.scan == FMB_SCAN_QUAD,
          "--kernel with a bad value", "bad %d", bad);

    clear_env();
    fmb_engine_opts e0 = {0};
    check(fmb_cli_engine_env("test", &e0) == 0 &&
              !memcmp(&e0.kernel, &(fmb_kernel_opts){0}, sizeof e0.kernel),
          "no environment: default choices", "%s", "");
    setenv("FMB_SCAN", "tile1", 1);
    setenv("FMB_MATVEC", "mma", 1);
    setenv("FMB_GEMM", "fixedws", 1);
    setenv("FMB_PDL", "0", 1);
    setenv("FMB_CUDA_GRAPHS", "0", 1);
    setenv("FMB_DEBUG_SYNC", "1", 1);
    setenv("FMB_GEMM_VERBOSE", "yes", 1);
    fmb_engine_opts e1 = {0};
    check(fmb_cli_engine_env("test", &e1) == 0 && e1.kernel.scan == FMB_SCAN_TILE1 &&
              e1.kernel.matvec == FMB_MATVEC_MMA && e1.kernel.gemm == FMB_GEMM_FIXEDWS &&
              e1.kernel.pdl == FMB_PDL_OFF && e1.kernel.no_graphs && e1.kernel.debug_sync &&
              e1.kernel.gemm_verbose,
          "the legacy variables map onto the choices", "scan %d matvec %d gemm %d", e1.kernel.scan,
          e1.kernel.matvec, e1.kernel.gemm);
    clear_env();
    setenv("FMB_PDL", "1", 1);        // anything but 0: as before, auto
    setenv("FMB_DEBUG_SYNC", "0", 1); // 0: off
    setenv("FMB_CUDA_GRAPHS", "1", 1);
    fmb_engine_opts e2 = {0};
    check(fmb_cli_engine_env("test", &e2) == 0 && e2.kernel.pdl == FMB_PDL_AUTO &&
              !e2.kernel.debug_sync && !e2.kernel.no_graphs,
          "legacy booleans read as before", "pdl %d", e2.kernel.pdl);
    clear_env();
    setenv("FMB_SCAN", "fastest", 1);
    fmb_engine_opts e3 = {0};
    check(fmb_cli_engine_env("test", &e3) == -1, "a bad legacy value is an error, not auto", "%s",
          "");
    setenv("FMB_SCAN", "seg,gemm=cublas", 1);
    check(fmb_cli_engine_env("test", &e3) == -1 && e3.kernel.gemm == FMB_GEMM_FIXED,
          "a legacy variable holds one value", "%s", "");
    clear_env();
}

static void t_cpu_report(void)
{
    fmb_engine_opts eo = {0};
    eo.backend = FMB_BACKEND_CPU;
    eo.kernel.scan = FMB_SCAN_SEG;
    fmb_engine *e = NULL;
    fmb_err err;
    if (!check(!fmb_engine_open("tests/fixtures/tiny-a", &eo, &e, &err), "open tiny-a on cpu", "%s",
               err.msg))
        return;
    fmb_kernel_opts k;
    char buf[256];
    check(fmb_engine_kernel_choices(e, &k) == 0, "a cpu engine has no kernel choices", "%s", "");
    check(!strcmp(fmb_cli_kernel_report(e, buf, sizeof buf), "n/a (cpu backend)"),
          "cpu engine reports kernels as n/a", "%s", buf);
    fmb_engine_free(e);
}

int main(void)
{
    t_parse();
    t_format();
    t_fill();
    t_cli();
    t_cpu_report();
    return check_exit();
}
