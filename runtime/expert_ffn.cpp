#include "runtime/expert_ffn.h"

#include <algorithm>

namespace moe::runtime {

void run_expert_ffns(kernels::Ops& ops, const ExpertFfnParams& p) {
  const int64_t H = p.hidden, I = p.intermediate;
  for (size_t i = 0; i < p.w13->size(); ++i) {
    for (int64_t b = p.group_begin[i]; b < p.group_begin[i + 1]; b += kExpertChunkRows) {
      const int n = int(std::min<int64_t>(kExpertChunkRows, p.group_begin[i + 1] - b));
      ops.linear({p.x + b * H, (*p.w13)[i], p.gate_up, n});
      ops.silu_mul({p.gate_up, p.act, n, int(I)});
      ops.linear({p.act, (*p.w2)[i], p.y + b * H, n});
    }
  }
}

}  // namespace moe::runtime
