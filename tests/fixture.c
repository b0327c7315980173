/* fixture: see fixture.h. */
#include "tests/fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const fmb_tensor *fixture_ref(const fmb_st *st, const char *name)
{
    const fmb_tensor *t = fmb_st_find(st, name);
    if (!t) {
        printf("FAIL fixture: %s missing\n", name);
        exit(1);
    }
    return t;
}

int32_t *fixture_ids(const fmb_st *st, const char *name, size_t *n)
{
    const fmb_tensor *t = fixture_ref(st, name);
    *n = t->numel;
    int32_t *v = malloc((t->numel ? t->numel : 1) * sizeof *v);
    if (!v)
        abort();
    memcpy(v, t->data, t->numel * sizeof *v);
    return v;
}

double fixture_at(const fmb_tensor *t, size_t i)
{
    if (t->nbytes == t->numel * 8) {
        double d;
        memcpy(&d, (const char *)t->data + i * 8, 8);
        return d;
    }
    float f;
    memcpy(&f, (const char *)t->data + i * 4, 4);
    return f;
}

static int env_on(const char *v)
{
    return v && *v && strcmp(v, "0") != 0;
}

fmb_kernel_opts fixture_kernel_env(void)
{
    fmb_kernel_opts k = {0};
    const char *vars[3] = {"FMB_SCAN", "FMB_MATVEC", "FMB_GEMM"},
               *keys[3] = {"scan", "matvec", "gemm"};
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        char item[128];
        fmb_err err;
        snprintf(item, sizeof item, "%s=%s", keys[i], v ? v : "");
        if (v && *v && fmb_kernel_opts_parse(item, &k, &err)) {
            printf("FAIL %s: %s\n", vars[i], err.msg);
            exit(1);
        }
    }
    const char *pdl = getenv("FMB_PDL"), *graphs = getenv("FMB_CUDA_GRAPHS");
    k.pdl = pdl && !strcmp(pdl, "0") ? FMB_PDL_OFF : FMB_PDL_AUTO;
    k.no_graphs = graphs && !strcmp(graphs, "0");
    k.debug_sync = env_on(getenv("FMB_DEBUG_SYNC"));
    k.gemm_verbose = env_on(getenv("FMB_GEMM_VERBOSE"));
    // FMB_SMEM_CAP=sm86: every launch checked against the 24 GB cards' 99 KB a block
    const char *cap = getenv("FMB_SMEM_CAP");
    k.smem_cap = cap && !strcmp(cap, "sm86") ? FMB_SMEM_CAP_SM86 : FMB_SMEM_CAP_OFF;
    return k;
}
