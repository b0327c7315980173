/*
 * test_cuda_backend_avail: the CUDA backend degrades gracefully where there is no GPU (CI):
 * fmb_cuda_available() says 0, --backend cuda fails with a message (no crash), --backend auto
 * runs on the CPU, and --synthetic is refused. On a machine with a GPU it checks that auto picks
 * cuda instead.
 */
#include <string.h>

#include "engine/backend.h"
#include "engine/engine.h"
#ifdef FMB_HAVE_CUDA
#include "kernels/kernels.h"
#endif
#include "tests/check.h"

int main(void)
{
    const char *dir = "tests/fixtures/tiny-a";
    fmb_engine_opts o = {0};
    fmb_engine *e = NULL;
    fmb_err err;
    int have = 0;
#ifdef FMB_HAVE_CUDA
    have = fmb_cuda_available();
    check_note("built with CUDA; device usable: %d", have);
    // cuBLAS is loaded when the backend opens, not linked: the binary starts without it, and
    // a missing library is an error naming it (the CPU backend is unaffected).
    {
        fmb_err be;
        fmb_status bs = fmb_cuda_blas_probe("/nonexistent-cuda-lib", &be);
        check(bs == FMB_EUNSUP && strstr(be.msg, "/nonexistent-cuda-lib/libcublas") &&
                  strstr(be.msg, "--backend cpu"),
              "cuBLAS missing: an error naming the library", "status %d: %s", (int)bs, be.msg);
        bs = fmb_cuda_blas_probe(NULL, &be);
        check_note("cuBLAS on the loader's path: %s", bs == FMB_OK ? "loads" : be.msg);
        if (have)
            check(bs == FMB_OK, "cuBLAS loads on a GPU machine", "%s", be.msg);
    }
#else
    check_note("built without CUDA");
#endif
    o.backend = FMB_BACKEND_AUTO;
    fmb_status s = fmb_engine_open(dir, &o, &e, &err);
    check(s == FMB_OK, "backend auto opens", "%s", err.msg);
    if (s == FMB_OK) {
        const char *want = have ? "cuda" : "cpu";
        check(strcmp(fmb_engine_backend_name(e), want) == 0, "backend auto picks the right one",
              "got %s, want %s", fmb_engine_backend_name(e), want);
        fmb_engine_free(e);
        e = NULL;
    }
    o.backend = FMB_BACKEND_CUDA;
    err.msg[0] = 0;
    s = fmb_engine_open(dir, &o, &e, &err);
    if (have) {
        check(s == FMB_OK, "backend cuda opens on a GPU machine", "%s", err.msg);
    } else {
        check(s == FMB_EUNSUP && err.msg[0], "backend cuda without a device fails cleanly",
              "status %d, message '%s'", (int)s, err.msg);
    }
    fmb_engine_free(e);
    e = NULL;
    if (!have) {
        fmb_config cfg = {0};
        cfg.V = 16, cfg.D = 8, cfg.E = 16, cfg.N = 4, cfg.K = 4, cfg.R = 2, cfg.L = 1;
        s = fmb_engine_open_synthetic(&cfg, NULL, 1, &e, &err);
        check(s == FMB_EUNSUP, "synthetic engine without a device is refused", "status %d", (int)s);
    }
    return check_exit();
}
