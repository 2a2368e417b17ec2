#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

// A stable counting sort of the received (row, slot) pairs by local expert: count, scan, then
// scatter in (row, slot) order, so each expert's group keeps the order rows arrived in.
void group_by_expert(const GroupByExpertParams& p) {
  const RowLayout& L = p.layout;
  const int k = L.k;
  MOE_CHECK(p.R >= 0 && k > 0 && p.n_experts > 0 && p.n_local >= 0,
            "group_by_expert needs R >= 0, k > 0, n_experts > 0 and n_local >= 0");
  const size_t stride = L.stride();
  auto slot = [&](int64_t r, int s) {
    RouteSlot rs;
    std::memcpy(&rs, static_cast<const char*>(p.payload) + size_t(r) * stride + L.slots_offset() +
                         size_t(s) * sizeof(RouteSlot),
                sizeof rs);
    return rs;
  };
  auto local = [&](int32_t e) {
    if (e < 0) return -1;
    MOE_CHECK(e < p.n_experts, "group_by_expert: a received slot names expert " +
                                   std::to_string(e) + ", outside [0, " +
                                   std::to_string(p.n_experts) + ")");
    return int(p.local_index[e]);
  };
  std::fill(p.offsets, p.offsets + p.n_local + 1, 0);
  for (int64_t r = 0; r < p.R; ++r)
    for (int s = 0; s < k; ++s)
      if (const int i = local(slot(r, s).expert); i >= 0) ++p.offsets[i + 1];
  for (int i = 0; i < p.n_local; ++i) p.offsets[i + 1] += p.offsets[i];

  std::vector<int32_t> next(p.offsets, p.offsets + std::max(p.n_local, 0));
  for (int64_t r = 0; r < p.R; ++r) {
    for (int s = 0; s < k; ++s) {
      const RouteSlot rs = slot(r, s);
      const int i = local(rs.expert);
      int32_t g = -1;
      float w = 0.0f;
      if (i >= 0) {
        g = next[i]++;
        p.gather[g] = int32_t(r);
        w = rs.weight;
      }
      p.slot_row[r * k + s] = g;
      p.slot_weight[r * k + s] = w;
    }
  }
}

}  // namespace moe::kernels::cpu
