/* kopts: the kernel choices' text form. See kopts.h. */
#include "kernels/kopts.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *key;
    size_t off;               /* offsetof the int field */
    const char *const *names; /* value names by value (NULL-terminated) */
    int numeric;              /* 1: the key changes numbers */
} kopt_key;

static const char *const scan_names[] = {"auto", "quad", "seg", "tile", "tile1", NULL};
static const char *const matvec_names[] = {"auto", "cc", "mma", "gemm", NULL};
static const char *const gemm_names[] = {"fixed", "fixedws", "cublas", NULL};
static const char *const pdl_names[] = {"auto", "off", "on", NULL};
static const char *const on_names[] = {"off", "on", NULL};
static const char *const graphs_names[] = {"on", "off", NULL}; /* no_graphs: 0 = on */
static const char *const smem_names[] = {"off", "sm86", NULL};

static const kopt_key keys[] = {
    {"scan", offsetof(fmb_kernel_opts, scan), scan_names, 1},
    {"matvec", offsetof(fmb_kernel_opts, matvec), matvec_names, 1},
    {"gemm", offsetof(fmb_kernel_opts, gemm), gemm_names, 1},
    {"pdl", offsetof(fmb_kernel_opts, pdl), pdl_names, 0},
    {"graphs", offsetof(fmb_kernel_opts, no_graphs), graphs_names, 0},
    {"debug-sync", offsetof(fmb_kernel_opts, debug_sync), on_names, 0},
    {"gemm-verbose", offsetof(fmb_kernel_opts, gemm_verbose), on_names, 0},
    {"smem-cap", offsetof(fmb_kernel_opts, smem_cap), smem_names, 0},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static int *field(fmb_kernel_opts *o, const kopt_key *k)
{
    return (int *)((char *)o + k->off);
}

static int value_of(const kopt_key *k, const char *v, size_t len)
{
    for (int i = 0; k->names[i]; i++)
        if (strlen(k->names[i]) == len && !strncmp(k->names[i], v, len))
            return k->names == pdl_names && i == FMB_PDL_ON ? FMB_PDL_AUTO : i;
    // 1/0 for the on/off keys (pdl: 1 = auto, on where it works)
    if (len == 1 && (v[0] == '0' || v[0] == '1')) {
        int on = v[0] == '1';
        if (k->names == on_names)
            return on;
        if (k->names == graphs_names)
            return !on;
        if (k->names == pdl_names)
            return on ? FMB_PDL_AUTO : FMB_PDL_OFF;
    }
    return -1;
}

fmb_status fmb_kernel_opts_parse(const char *text, fmb_kernel_opts *o, fmb_err *err)
{
    fmb_kernel_opts r = *o;
    const char *p = text ? text : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        const kopt_key *k = NULL;
        for (size_t i = 0; eq && i < NKEYS && !k; i++)
            if (strlen(keys[i].key) == (size_t)(eq - p) && !strncmp(keys[i].key, p, eq - p))
                k = &keys[i];
        if (!k) {
            if (len == 0)
                return fmb_fail(err, FMB_EINVAL, "kernel options '%s': empty item", text);
            return fmb_fail(err, FMB_EINVAL,
                            "kernel options: '%.*s' is not key=value with a key of scan, matvec, "
                            "gemm, pdl, graphs, debug-sync, gemm-verbose, smem-cap",
                            (int)len, p);
        }
        int v = value_of(k, eq + 1, len - (size_t)(eq + 1 - p));
        if (v < 0) {
            char allowed[96] = "";
            for (int i = 0; k->names[i]; i++)
                if (!(k->names == pdl_names && i == FMB_PDL_ON))
                    snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s",
                             i ? "|" : "", k->names[i]);
            return fmb_fail(err, FMB_EINVAL, "kernel options: '%.*s': %s must be %s", (int)len, p,
                            k->key, allowed);
        }
        *field(&r, k) = v;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p)
                return fmb_fail(err, FMB_EINVAL, "kernel options '%s': empty item", text);
        }
    }
    *o = r;
    return FMB_OK;
}

void fmb_kernel_opts_fill(fmb_kernel_opts *o, const fmb_kernel_opts *dflt)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (*field(o, &keys[i]) == 0)
            *field(o, &keys[i]) = *field((fmb_kernel_opts *)dflt, &keys[i]);
}

char *fmb_kernel_opts_format(const fmb_kernel_opts *o, int which, char *buf, size_t n)
{
    FMB_ASSERT(n >= 128);
    size_t len = 0;
    buf[0] = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        int v = *field((fmb_kernel_opts *)o, &keys[i]);
        if (which != FMB_KOPTS_ALL && v == 0)
            continue;
        if (which == FMB_KOPTS_NUMERIC && !keys[i].numeric)
            continue;
        int nv = 0;
        while (keys[i].names[nv])
            nv++;
        const char *name = v >= 0 && v < nv ? keys[i].names[v] : "?";
        int w = snprintf(buf + len, n - len, "%s%s=%s", len ? "," : "", keys[i].key, name);
        FMB_ASSERT(w > 0 && (size_t)w < n - len);
        len += (size_t)w;
    }
    return buf;
}
