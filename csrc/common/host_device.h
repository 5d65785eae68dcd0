// GN_HOST_DEVICE marks the plain functions that the CPU kernels, the CUDA kernels (nvcc) and the
// CPU-side execution of the CUDA kernels (tests/simt, g++) all compile from one definition.
#pragma once

#if defined(__CUDACC__)
#define GN_HOST_DEVICE __host__ __device__
#else
#define GN_HOST_DEVICE
#endif
