/* test_engine_batch on the CUDA backend: packed chunks of several sequences (see
 * tests/test_engine_batch.c, which this builds with FMB_TEST_BACKEND = CUDA). */
#define FMB_TEST_BACKEND FMB_BACKEND_CUDA
#define FMB_TEST_CUDA    1
#include "tests/test_engine_batch.c"
