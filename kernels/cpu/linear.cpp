#include <cblas.h>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void linear(const LinearParams& p) {
  MOE_CHECK(p.w.dtype == DType::kF32, "cpu linear weight must be fp32");
  if (p.M == 0 || p.w.rows == 0) return;
  // out[M, N] = x[M, K] @ W[N, K]^T: W is row-major [N, K], so it enters transposed.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.M, int(p.w.rows), int(p.w.cols), 1.0f,
              p.x, int(p.w.cols), static_cast<const float*>(p.w.data), int(p.w.cols),
              p.accumulate ? 1.0f : 0.0f, p.out, int(p.w.rows));
}

}  // namespace moe::kernels::cpu
