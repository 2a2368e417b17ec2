#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

// Three passes over the tokens: the rank of each choice (the j-th choice of expert e takes wheel
// position j % kRouteWheel), the rows per destination (a token's destination counts once, at its
// first slot bound there), then the rows handed out per destination in token order. A token's
// destinations are visited in ascending rank, which is the order its partial rows are summed in
// at home.
void dispatch_layout(const DispatchLayoutParams& p) {
  const int T = p.T, k = p.k, N = p.n_ranks, E = p.n_experts;
  MOE_CHECK(T >= 0 && k > 0 && k <= kMaxTopK && N > 0 && E > 0,
            "dispatch_layout needs T >= 0, 0 < k <= kMaxTopK, n_ranks > 0 and n_experts > 0");
  int32_t* rows_to = p.counts;       // [N]
  int32_t* choices = p.counts + N;   // [E, N]
  std::fill(p.counts, p.counts + N + int64_t(E) * N, 0);
  std::vector<int64_t> seen(size_t(E), 0);  // choices of each expert so far
  for (int64_t i = 0; i < int64_t(T) * k; ++i) {
    const int32_t e = p.expert[i];
    MOE_CHECK(e >= 0 && e < E, "dispatch_layout: expert " + std::to_string(e) + " outside [0, " +
                                   std::to_string(E) + ")");
    const int32_t d = p.route[int64_t(e) * kRouteWheel + seen[size_t(e)]++ % kRouteWheel];
    MOE_CHECK(d >= 0 && d < N, "dispatch_layout: expert " + std::to_string(e) +
                                   " routed to rank " + std::to_string(d) + " outside [0, " +
                                   std::to_string(N) + ")");
    p.slot_rank[i] = d;
    ++choices[int64_t(e) * N + d];
  }
  const int32_t* dest = p.slot_rank;
  for (int t = 0; t < T; ++t) {
    const int64_t base = int64_t(t) * k;
    for (int s = 0; s < k; ++s) {
      bool first = true;
      for (int s2 = 0; s2 < s && first; ++s2) first = dest[base + s2] != dest[base + s];
      if (first) ++rows_to[dest[base + s]];
    }
  }
  std::vector<int64_t> next(size_t(N), 0);  // the next free send row of each destination
  for (int d = 1; d < N; ++d) next[d] = next[d - 1] + rows_to[d - 1];

  int32_t dests[kMaxTopK];
  for (int t = 0; t < T; ++t) {
    const int64_t base = int64_t(t) * k;
    int n_dest = 0;  // this token's distinct destinations, ascending
    for (int s = 0; s < k; ++s) {
      const int32_t d = dest[base + s];
      if (std::find(dests, dests + n_dest, d) == dests + n_dest) dests[n_dest++] = d;
    }
    std::sort(dests, dests + n_dest);
    for (int j = 0; j < k; ++j) p.home[base + j] = -1;
    for (int j = 0; j < n_dest; ++j) {
      const int32_t d = dests[j];
      const int64_t row = next[d]++;
      p.send_token[row] = t;
      p.home[base + j] = int32_t(row);
      for (int s = 0; s < k; ++s)
        p.send_slots[row * k + s] =
            dest[base + s] == d ? RouteSlot{p.expert[base + s], p.weight[base + s]}
                                : RouteSlot{-1, 0.0f};
    }
  }
}

}  // namespace moe::kernels::cpu
