#pragma once
// Loads and stores of the two element types device tensors come in (fp32 and bf16), so one
// kernel template serves both, and the dispatch from a runtime DType to the template. fp32
// arithmetic either way: a bf16 element is widened on load and rounded to nearest even on store.
#include <cuda_bf16.h>

#include <string>

#include "common/dtype.h"
#include "common/error.h"

namespace moe::kernels::cuda {

__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_f32(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, float v) {
  *p = __float2bfloat16_rn(v);
}

// Calls f(T{}) with T = float for kF32 and __nv_bfloat16 for kBF16; any other dtype is refused
// naming `what`.
template <class F>
void dispatch_f32_bf16(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::kF32: f(float{}); return;
    case DType::kBF16: f(__nv_bfloat16{}); return;
    default:
      MOE_THROW(std::string(what) + ": dtype " + dtype_name(t) + " (expected F32 or BF16)");
  }
}

}  // namespace moe::kernels::cuda
