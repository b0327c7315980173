/*
 * ident: identity hashes of a model folder and a tokenizer file, for job fingerprints and the
 * provenance columns of result rows.
 *
 * The tokenizer hash covers the whole file. The model hash covers config.json, the shard index
 * if any, and for every *.safetensors file its name, size, header (names, dtypes, shapes,
 * offsets) and 4 KiB samples every 16 MiB plus the last 4 KiB: a changed checkpoint is caught
 * without reading 14 GB of weights on every run.
 */
#ifndef FMB_IDENT_H
#define FMB_IDENT_H

#include "kernels/base.h"

/* out: 32 hex chars + NUL. */
FMB_NODISCARD fmb_status fmb_ident_model(const char *model_dir, char out[33], fmb_err *err);
FMB_NODISCARD fmb_status fmb_ident_file(const char *path, char out[33], fmb_err *err);

#endif
