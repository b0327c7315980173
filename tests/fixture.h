/*
 * fixture: reading the HF reference tensors in tests/fixtures/tiny-X/ref.safetensors (see
 * ref.json beside each). A missing tensor prints a FAIL line and exits: the fixture is broken.
 */
#ifndef FMB_TEST_FIXTURE_H
#define FMB_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/safetensors.h"

/* The tensor called name (borrowed from st). */
const fmb_tensor *fixture_ref(const fmb_st *st, const char *name);
/* A copy of an I32 tensor (caller frees); *n receives its length. */
int32_t *fixture_ids(const fmb_st *st, const char *name, size_t *n);
/* Element i of an F32 or F64 tensor, as double. */
double fixture_at(const fmb_tensor *t, size_t i);

#endif
