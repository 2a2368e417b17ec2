#pragma once
// The emulation build's forced include (-include cuda_emu/cuda_emu.h) for the .cu sources, which
// it compiles as host C++ after rewrite.cpp has turned their launches into calls: the CUDA
// keywords, the toolkit's own headers for the types, the device API (device_api.h) and the
// launch (launch.h). Nothing in a .cu file knows it is emulated.
#ifndef MOE_CUDA_EMULATION
#error "cuda_emu/cuda_emu.h is the emulation build's forced include"
#endif

// Before the toolkit's headers: host_defines.h keeps a definition it finds.
// NOTES: __shared__ variables become static storage, one per variable for the whole process;
// that is right only because blocks (and kernels) run one at a time (block_scheduler.h).
#define __shared__ static
#define __device__
#define __host__
// rewrite.cpp replaces __global__ in the files it rewrites; one anywhere else fails here.
#define __global__                                                                          \
  static_assert(false, "a __global__ function outside the files the emulation build rewrites " \
                       "(cuda_emu/rewrite.cpp): kernels belong in .cu files");
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "cuda_emu/device_api.h"
#include "cuda_emu/launch.h"
