#pragma once
// Inputs for the MoE dispatch ops' tests, shared by the CPU tests (against an independent
// reference written here) and the CUDA tests (against the CPU ops). Each case names its shape.
//
// Layout cases: T tokens of a source rank, their top-k experts (distinct per token) and
// weights, and the route wheels of that source (Placement::route_wheel), over
//   - experts dividing evenly over ranks, and not (8 over 3);
//   - k larger than N (a token's 4 experts on 2 ranks);
//   - replicas (N > E: 4 experts on 8 ranks, routed by source rank);
//   - planned replicas (a hot expert on 3 ranks at shares 1/2, 1/4, 1/4, another on 2 at 0.7,
//     0.3: each source splits its choices of them by the wheel);
//   - every token to the same expert(s) (one destination takes everything, others nothing);
//   - a rank no expert routes to (it receives nothing);
//   - T = 0.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/params.h"
#include "runtime/placement.h"

namespace moe::test {

struct LayoutCase {
  std::string name;
  int T = 0, k = 0, E = 0, N = 0;
  std::vector<int32_t> expert;  // [T, k]
  std::vector<float> weight;    // [T, k]
  std::vector<int32_t> route;   // [E, kRouteWheel]
  // The rank serving the j-th choice of expert e: route[e, j % kRouteWheel].
  int rank_of(int e, int64_t j) const {
    return route[size_t(e) * kernels::kRouteWheel + size_t(j % kernels::kRouteWheel)];
  }
};

// The rank serving each choice of a case, [T, k], as the layout's contract states it.
inline std::vector<int32_t> slot_ranks(const LayoutCase& c) {
  std::vector<int32_t> out;
  std::vector<int64_t> seen(size_t(c.E), 0);
  for (int32_t e : c.expert) out.push_back(c.rank_of(e, seen[size_t(e)]++));
  return out;
}

inline LayoutCase make_layout_case(const std::string& name, int T, int k, int N, int src,
                                   const runtime::Placement& placement, std::mt19937& rng,
                                   const std::vector<int>& forced = {}) {
  const int E = placement.n_experts();
  LayoutCase c{name, T, k, E, N, {}, {}, placement.route_wheel(0, src)};
  std::uniform_real_distribution<float> w(0.01f, 1.0f);
  std::vector<int> ids(static_cast<size_t>(E));
  for (int t = 0; t < T; ++t) {
    if (forced.empty()) {
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
    } else {
      ids = forced;
    }
    for (int s = 0; s < k; ++s) {
      c.expert.push_back(ids[size_t(s)]);
      c.weight.push_back(w(rng));
    }
  }
  return c;
}

inline LayoutCase make_layout_case(const std::string& name, int T, int k, int E, int N, int src,
                                   runtime::Placement::Kind kind, std::mt19937& rng,
                                   const std::vector<int>& forced = {}) {
  return make_layout_case(name, T, k, N, src, runtime::Placement::make(kind, 1, E, N), rng,
                          forced);
}

// 8 experts on 4 ranks, expert 0 on ranks 0, 1, 2 at shares 1/2, 1/4, 1/4 and expert 5 on
// ranks 2 and 3 at 0.7, 0.3; the rest one rank each.
inline runtime::Placement planned_replicas() {
  return runtime::Placement::from_map(
      {{{0, 1, 2}, {0}, {1}, {1}, {2}, {2, 3}, {3}, {3}}}, 4,
      {{{0.5, 0.25, 0.25}, {1}, {1}, {1}, {1}, {0.7, 0.3}, {1}, {1}}});
}

inline std::vector<LayoutCase> layout_cases() {
  using K = runtime::Placement::Kind;
  std::mt19937 rng(2024);
  std::vector<LayoutCase> v;
  v.push_back(make_layout_case("E8_N2_k2", 37, 2, 8, 2, 1, K::kContiguous, rng));
  v.push_back(make_layout_case("E8_N3_k2_uneven", 300, 2, 8, 3, 2, K::kContiguous, rng));
  v.push_back(make_layout_case("E8_N4_k2_round_robin", 513, 2, 8, 4, 0, K::kRoundRobin, rng));
  v.push_back(make_layout_case("E8_N2_k4_k_above_N", 64, 4, 8, 2, 0, K::kContiguous, rng));
  v.push_back(make_layout_case("E4_N8_k2_replicas_src5", 50, 2, 4, 8, 5, K::kContiguous, rng));
  v.push_back(make_layout_case("E60_N8_k4", 129, 4, 60, 8, 3, K::kContiguous, rng));
  v.push_back(make_layout_case("E8_N4_k2_all_to_one_pair", 100, 2, 8, 4, 1, K::kContiguous, rng,
                               {3, 5}));
  v.push_back(make_layout_case("E8_N4_k1_all_to_one", 1000, 1, 8, 4, 2, K::kContiguous, rng, {7}));
  v.push_back(make_layout_case("E8_N1_k2_single_rank", 20, 2, 8, 1, 0, K::kContiguous, rng));
  v.push_back(make_layout_case("T0", 0, 2, 8, 4, 0, K::kContiguous, rng));
  v.push_back(make_layout_case("E8_N2_k2_large", 20000, 2, 8, 2, 0, K::kContiguous, rng));
  v.push_back(make_layout_case("E8_N4_k2_planned_replicas_src1", 333, 2, 4, 1,
                               planned_replicas(), rng));
  v.push_back(make_layout_case("E8_N4_k2_planned_replicas_hot_src3", 5000, 2, 4, 3,
                               planned_replicas(), rng, {0, 5}));
  // Rank 2 of 4 serves nothing for this source: its experts are routed elsewhere.
  LayoutCase idle = make_layout_case("E8_N4_k2_rank2_idle", 77, 2, 8, 4, 0, K::kContiguous, rng);
  for (auto& d : idle.route)
    if (d == 2) d = 3;
  v.push_back(idle);
  return v;
}

// The received side: R rows with k slots each, every slot an expert this rank holds or -1, and
// the local index table of the rank.
struct GroupCase {
  std::string name;
  int R = 0, k = 0, E = 0, n_local = 0;
  std::vector<kernels::RouteSlot> slots;  // [R, k]
  std::vector<int32_t> local_index;       // [E]
};

inline GroupCase make_group_case(const std::string& name, int R, int k, int E,
                                 const std::vector<int>& local, std::mt19937& rng,
                                 double empty = 0.3) {
  GroupCase c{name, R, k, E, int(local.size()), {}, std::vector<int32_t>(size_t(E), -1)};
  for (size_t i = 0; i < local.size(); ++i) c.local_index[size_t(local[i])] = int32_t(i);
  std::bernoulli_distribution none(empty);
  std::uniform_real_distribution<float> w(0.01f, 1.0f);
  for (int r = 0; r < R; ++r) {
    std::vector<int> ids = local;
    std::shuffle(ids.begin(), ids.end(), rng);
    int used = 0;
    for (int s = 0; s < k; ++s) {
      const bool skip = local.empty() || used >= int(ids.size()) || none(rng);
      c.slots.push_back(skip ? kernels::RouteSlot{-1, 0.0f}
                             : kernels::RouteSlot{ids[size_t(used++)], w(rng)});
    }
  }
  return c;
}

inline std::vector<GroupCase> group_cases() {
  std::mt19937 rng(77);
  std::vector<GroupCase> v;
  v.push_back(make_group_case("E8_local2_k2", 91, 2, 8, {2, 3}, rng));
  v.push_back(make_group_case("E8_local3_k2_uneven", 400, 2, 8, {5, 6, 7}, rng));
  v.push_back(make_group_case("E8_local4_k4", 70, 4, 8, {0, 2, 4, 6}, rng));
  v.push_back(make_group_case("E8_all_local_k2", 33, 2, 8, {0, 1, 2, 3, 4, 5, 6, 7}, rng, 0.0));
  v.push_back(make_group_case("E60_local8_k4", 513, 4, 60, {8, 9, 10, 11, 12, 13, 14, 15}, rng));
  v.push_back(make_group_case("R0_receives_nothing", 0, 2, 8, {0, 1}, rng));
  v.push_back(make_group_case("E4_replica_local1", 200, 2, 4, {1}, rng));
  v.push_back(make_group_case("E8_local2_k2_large", 30000, 2, 8, {0, 1}, rng));
  return v;
}

// A payload of R rows carrying `c.slots`, with `hidden` values of `dtype` from `values`.
inline std::vector<char> payload_of(const GroupCase& c, const kernels::RowLayout& L,
                                    const std::vector<float>& values) {
  std::vector<char> buf(size_t(c.R) * L.stride());
  std::vector<int32_t> token(static_cast<size_t>(c.R));
  for (int r = 0; r < c.R; ++r) token[size_t(r)] = r;
  kernels::cpu::pack_rows({values.data(), token.data(), c.slots.data(), buf.data(), L, c.R});
  return buf;
}

}  // namespace moe::test
