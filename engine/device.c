/* device: device count, memory and a ballast for the commands. See device.h. */
#include "engine/device.h"

#ifdef FMB_HAVE_CUDA
#include "kernels/kernels.h"
#endif

int fmb_device_count(void)
{
#ifdef FMB_HAVE_CUDA
    return fmb_cuda_device_count();
#else
    return 0;
#endif
}

int fmb_device_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
#ifdef FMB_HAVE_CUDA
    if (fmb_cuda_device_count() == 0)
        return 0;
    fmb_cuda_mem_info(free_bytes, total_bytes);
    return 1;
#else
    return 0;
#endif
}

void *fmb_device_ballast_new(size_t bytes)
{
#ifdef FMB_HAVE_CUDA
    return fmb_cuda_device_count() > 0 ? fmb_cuda_try_malloc(bytes) : NULL;
#else
    (void)bytes;
    return NULL;
#endif
}

void fmb_device_ballast_free(void *b)
{
#ifdef FMB_HAVE_CUDA
    fmb_cuda_free(b);
#else
    (void)b;
#endif
}

const char *fmb_device_backend_for(fmb_backend_kind kind)
{
    if (kind == FMB_BACKEND_CUDA || (kind == FMB_BACKEND_AUTO && fmb_device_count() > 0))
        return "cuda";
    return "cpu";
}
