/*
 * fuzz_job: libFuzzer target for the TOML shim and the job-file validator.
 *
 * `make fuzz` builds it (build-fuzz/fuzz/fuzz_job; `make test` replays tests/fuzz/corpus_job and
 * crashes/job through tests/fuzz/replay.c). By hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -D_GNU_SOURCE tests/fuzz/fuzz_job.c \
 *     batch/job.c kernels/base.c -x c++ -std=c++17 batch/toml.cc -x none -ljansson -lstdc++ \
 *     -o /tmp/fuzz_job
 *   /tmp/fuzz_job -max_total_time=60 -max_len=4096 tests/fuzz/corpus_job
 * The seed corpus: the files in jobs/. Found so far: "[#" aborted inside toml++ (fixed in
 * batch/toml.cc, regression in tests/test_batch_job.c).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "batch/job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fmb_job *job = NULL;
    fmb_err err;
    if (fmb_job_parse((const char *)data, size, "fuzz.toml", "/tmp", &job, &err) == FMB_OK) {
        char *fp = fmb_job_fingerprint_text(job, "m", "t");
        fmb_job_free(job);
        free(fp);
    }
    return 0;
}
