/*
 * k_blas: the run-time loader of cuBLAS / cublasLt (k_blas.cuh says why).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "kernels/k_blas.cuh"

#define FMB_STR2(x) #x
#define FMB_STR(x)  FMB_STR2(x) // expands the v2 mapping: "cublasCreate_v2"

fmb_status fmb_blas_load(fmb_blas_api *a, const char *dir, fmb_err *err)
{
    memset(a, 0, sizeof *a);
    // The sonames of the toolkit the build used (CUDA 13: libcublas.so.13).
    static const char *const names[2] = {"libcublas.so." FMB_STR(CUBLAS_VER_MAJOR),
                                         "libcublasLt.so." FMB_STR(CUBLAS_VER_MAJOR)};
    for (int l = 1; l >= 0; l--) { // Lt first: libcublas needs it
        char path[4096];
        snprintf(path, sizeof path, "%s%s%s", dir ? dir : "", dir ? "/" : "", names[l]);
        a->lib[l] = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!a->lib[l])
            return fmb_fail(err, FMB_EUNSUP,
                            "the CUDA backend needs %s, which could not be loaded (%s); "
                            "install the CUDA toolkit's cuBLAS or use --backend cpu",
                            path, dlerror());
    }
#define FMB_BLAS_SYM(l, f, t)                                                                      \
    a->f = (t)dlsym(a->lib[l], FMB_STR(f));                                                        \
    if (!a->f)                                                                                     \
        return fmb_fail(err, FMB_EUNSUP, "%s has no symbol %s (a cuBLAS older than the build's?)", \
                        names[l], FMB_STR(f));
    FMB_BLAS_FUNCS(FMB_BLAS_SYM)
#undef FMB_BLAS_SYM
    return FMB_OK;
}

extern "C" fmb_status fmb_cuda_blas_probe(const char *dir, fmb_err *err)
{
    fmb_blas_api a;
    return fmb_blas_load(&a, dir, err);
}
