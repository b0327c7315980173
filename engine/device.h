/*
 * device: what a command may ask of the accelerator without an engine and without the kernel
 * facade (kernels/kernels.h): how many devices, their memory as the driver sees it, and a
 * ballast allocation that leaves a chosen amount free (`fmbatch bench --ballast-free`, a
 * smaller card simulated on a big one). Built with and without CUDA: without, there is no
 * device.
 */
#ifndef FMB_DEVICE_H
#define FMB_DEVICE_H

#include <stddef.h>

#include "engine/engine.h"
#include "kernels/base.h"

/* Usable CUDA devices; 0 without a driver, a device or CUDA support in this build. */
int fmb_device_count(void);
/* Device 0's free and total bytes (cudaMemGetInfo); returns 0 (and zeroes) without a device. */
int fmb_device_mem_info(size_t *free_bytes, size_t *total_bytes);
/* Allocates bytes of device memory and holds it; NULL when that fails or there is no device. */
void *fmb_device_ballast_new(size_t bytes);
void fmb_device_ballast_free(void *b); /* accepts NULL */
/* The backend fmb_engine_open would pick for kind without opening one: "cuda" for
 * FMB_BACKEND_CUDA, or AUTO with a usable device; else "cpu". */
const char *fmb_device_backend_for(fmb_backend_kind kind);

#endif
