#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

void gather_rows(const GatherRowsParams& p) {
  for (int i = 0; i < p.M; ++i)
    std::memcpy(p.out + int64_t(i) * p.cols, p.src + int64_t(p.index[i]) * p.cols,
                p.cols * sizeof(float));
}

}  // namespace moe::kernels::cpu
