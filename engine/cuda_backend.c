/* Placeholder so CUDA builds link until the CUDA backend lands (owned by the CUDA backend work:
 * replace this file wholesale). Reports no device, so --backend auto runs on the CPU. */
#ifdef FMB_HAVE_CUDA
#include "engine/backend.h"

int fmb_cuda_available(void)
{
    return 0;
}

const fmb_backend_ops fmb_backend_cuda = {.name = "cuda"};
#endif
