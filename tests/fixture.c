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
