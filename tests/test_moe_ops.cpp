// The MoE layer's dispatch ops on the CPU (the reference the CUDA ops are held to) against an
// independent statement of what each must produce, on the cases of tests/support/moe_cases.h:
//   dispatch_layout: the j-th choice of expert e is served by its wheel's entry j % kRouteWheel;
//     the send rows are the (destination, token) pairs with a slot of the token served by the
//     destination, sorted by destination then token; a replicated expert's choices split over
//     its replicas in the planned proportions;
//   group_by_expert: the grouped rows are the (local expert, row, slot) triples of the slots
//     this rank holds, sorted;
//   pack_rows / unpack_rows / weighted_combine: values through the wire dtype.
#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include "common/dtype.h"
#include "common/error.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/support/moe_cases.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using kernels::RouteSlot;

struct LayoutOut {
  std::vector<int32_t> counts, slot_rank, send_token, home;
  std::vector<RouteSlot> send_slots;
  int64_t S = 0;
};

LayoutOut run_cpu_layout(const LayoutCase& c) {
  LayoutOut o;
  const int64_t s_max = int64_t(c.T) * std::min(c.k, c.N);
  o.counts.assign(size_t(c.N + c.E * c.N), -7);
  o.slot_rank.assign(size_t(c.T) * c.k, -7);
  o.send_token.assign(size_t(s_max), -7);
  o.send_slots.assign(size_t(s_max * c.k), RouteSlot{-7, -7.0f});
  o.home.assign(size_t(c.T) * c.k, -7);
  kernels::DispatchLayoutParams p;
  p.expert = c.expert.data();
  p.weight = c.weight.data();
  p.route = c.route.data();
  p.counts = o.counts.data();
  p.slot_rank = o.slot_rank.data();
  p.send_token = o.send_token.data();
  p.send_slots = o.send_slots.data();
  p.home = o.home.data();
  p.T = c.T;
  p.k = c.k;
  p.n_experts = c.E;
  p.n_ranks = c.N;
  kernels::cpu::dispatch_layout(p);
  for (int d = 0; d < c.N; ++d) o.S += o.counts[size_t(d)];
  return o;
}

TEST(MoeOps, DispatchLayoutSendsOneRowPerTokenAndDestination) {
  for (const auto& c : layout_cases()) {
    SCOPED_TRACE(c.name);
    const LayoutOut got = run_cpu_layout(c);
    const std::vector<int32_t> dest = slot_ranks(c);
    EXPECT_EQ(got.slot_rank, dest);
    // The rows as a sorted set of (destination, token).
    std::set<std::pair<int, int>> rows;
    std::vector<int32_t> choices(size_t(c.E * c.N), 0);  // [E, N]
    for (int t = 0; t < c.T; ++t)
      for (int s = 0; s < c.k; ++s) {
        const int e = c.expert[size_t(t) * c.k + s];
        const int d = dest[size_t(t) * c.k + s];
        rows.insert({d, t});
        ++choices[size_t(e) * c.N + d];
      }
    ASSERT_EQ(got.S, int64_t(rows.size()));
    std::vector<int32_t> per_dest(size_t(c.N), 0);
    std::map<std::pair<int, int>, int> row_of;
    int i = 0;
    for (const auto& [d, t] : rows) {
      ++per_dest[size_t(d)];
      row_of[{d, t}] = i;
      EXPECT_EQ(got.send_token[size_t(i)], t) << "row " << i;
      for (int s = 0; s < c.k; ++s) {
        const int e = c.expert[size_t(t) * c.k + s];
        const RouteSlot want = dest[size_t(t) * c.k + s] == d
                                   ? RouteSlot{e, c.weight[size_t(t) * c.k + s]}
                                   : RouteSlot{-1, 0.0f};
        const RouteSlot have = got.send_slots[size_t(i) * c.k + s];
        EXPECT_EQ(have.expert, want.expert) << "row " << i << " slot " << s;
        EXPECT_EQ(have.weight, want.weight) << "row " << i << " slot " << s;
      }
      ++i;
    }
    for (int d = 0; d < c.N; ++d) EXPECT_EQ(got.counts[size_t(d)], per_dest[size_t(d)]) << d;
    for (int i = 0; i < c.E * c.N; ++i)
      EXPECT_EQ(got.counts[size_t(c.N + i)], choices[size_t(i)]) << "expert " << i / c.N
                                                                  << " rank " << i % c.N;
    // home: each token's rows by ascending destination, then -1.
    for (int t = 0; t < c.T; ++t) {
      std::vector<int32_t> want;
      for (int d = 0; d < c.N; ++d)
        if (auto it = row_of.find({d, t}); it != row_of.end()) want.push_back(it->second);
      want.resize(size_t(c.k), -1);
      for (int j = 0; j < c.k; ++j)
        EXPECT_EQ(got.home[size_t(t) * c.k + j], want[size_t(j)]) << "token " << t << " j " << j;
    }
  }
}

TEST(MoeOps, DispatchLayoutRefusesAnExpertOutOfRange) {
  LayoutCase c = layout_cases()[0];
  c.expert[3] = c.E;  // one past the last expert
  EXPECT_THROW(run_cpu_layout(c), moe::Error);
  c = layout_cases()[0];
  for (int q = 0; q < kernels::kRouteWheel; ++q)
    c.route[size_t(kernels::kRouteWheel + q)] = c.N;  // expert 1 to a rank outside the world
  c.expert[0] = 1;
  EXPECT_THROW(run_cpu_layout(c), moe::Error);
}


TEST(MoeOps, DispatchLayoutSplitsReplicasInThePlannedProportions) {
  // Every token picks experts 0 and 5 (planned_replicas: expert 0 at 1/2, 1/4, 1/4 on ranks
  // 0, 1, 2; expert 5 at 0.7, 0.3 on ranks 2, 3). 5000 choices each: a whole number of wheels
  // (78 x 64 = 4992) split exactly by the wheel's entries, the last 8 by its first 8 entries.
  const LayoutCase* hot = nullptr;
  const auto cases = layout_cases();
  for (const auto& c : cases)
    if (c.name == "E8_N4_k2_planned_replicas_hot_src3") hot = &c;
  ASSERT_NE(hot, nullptr);
  const LayoutOut got = run_cpu_layout(*hot);
  auto choices = [&](int e, int d) { return got.counts[size_t(hot->N + e * hot->N + d)]; };
  EXPECT_EQ(choices(0, 0) + choices(0, 1) + choices(0, 2), 5000);
  EXPECT_EQ(choices(0, 3), 0);
  EXPECT_NEAR(choices(0, 0), 2500, 8);
  EXPECT_NEAR(choices(0, 1), 1250, 8);
  EXPECT_NEAR(choices(0, 2), 1250, 8);
  // 0.7 of 64 is 44.8: 45 entries (largest remainder), 19 for the 0.3.
  EXPECT_EQ(choices(5, 2) + choices(5, 3), 5000);
  EXPECT_NEAR(choices(5, 2), 78 * 45, 8);
  EXPECT_NEAR(choices(5, 3), 78 * 19, 8);
  // The same run routes the same way.
  EXPECT_EQ(run_cpu_layout(*hot).slot_rank, got.slot_rank);
}

TEST(MoeOps, GroupByExpertIsAStableSortByLocalExpert) {
  for (const auto& c : group_cases()) {
    SCOPED_TRACE(c.name);
    const kernels::RowLayout L{5, c.k, DType::kF32};
    const auto buf = payload_of(c, L, std::vector<float>(size_t(c.R) * 5, 1.0f));
    std::vector<int32_t> offsets(size_t(c.n_local + 1), -7), gather(size_t(c.R) * c.k, -7),
        slot_row(size_t(c.R) * c.k, -7);
    std::vector<float> slot_weight(size_t(c.R) * c.k, -7.0f);
    kernels::GroupByExpertParams p;
    p.payload = buf.data();
    p.layout = L;
    p.local_index = c.local_index.data();
    p.offsets = offsets.data();
    p.gather = gather.data();
    p.slot_row = slot_row.data();
    p.slot_weight = slot_weight.data();
    p.R = c.R;
    p.n_experts = c.E;
    p.n_local = c.n_local;
    kernels::cpu::group_by_expert(p);

    std::vector<std::tuple<int, int, int>> pairs;  // (local expert, row, slot)
    for (int r = 0; r < c.R; ++r)
      for (int s = 0; s < c.k; ++s)
        if (const auto& rs = c.slots[size_t(r) * c.k + s]; rs.expert >= 0)
          pairs.emplace_back(c.local_index[size_t(rs.expert)], r, s);
    std::sort(pairs.begin(), pairs.end());
    std::vector<int32_t> want_offsets(size_t(c.n_local + 1), 0);
    for (const auto& [i, r, s] : pairs) ++want_offsets[size_t(i) + 1];
    for (int i = 0; i < c.n_local; ++i) want_offsets[size_t(i) + 1] += want_offsets[size_t(i)];
    EXPECT_EQ(offsets, want_offsets);
    std::vector<int32_t> want_row(size_t(c.R) * c.k, -1);
    std::vector<float> want_weight(size_t(c.R) * c.k, 0.0f);
    for (size_t g = 0; g < pairs.size(); ++g) {
      const auto [i, r, s] = pairs[g];
      EXPECT_EQ(gather[g], r) << "grouped row " << g;
      want_row[size_t(r) * c.k + s] = int32_t(g);
      want_weight[size_t(r) * c.k + s] = c.slots[size_t(r) * c.k + s].weight;
    }
    EXPECT_EQ(slot_row, want_row);
    EXPECT_EQ(slot_weight, want_weight);
  }
}

TEST(MoeOps, PackAndUnpackCarryRowsInTheWireDtype) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (int hidden : {1, 3, 64, 4097}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " hidden " + std::to_string(hidden));
      const kernels::RowLayout L{hidden, 3, dt};
      EXPECT_EQ(L.stride() % 8, 0u);
      const int T = 9, S = 12;
      std::vector<float> x(size_t(T) * hidden);
      for (auto& v : x) v = nd(rng);
      std::vector<int32_t> token(static_cast<size_t>(S));
      std::vector<RouteSlot> slots(size_t(S) * 3);
      for (int i = 0; i < S; ++i) token[size_t(i)] = (i * 5) % T;
      for (size_t i = 0; i < slots.size(); ++i) slots[i] = {int32_t(i % 7) - 1, 0.25f * float(i)};
      std::vector<char> payload(size_t(S) * L.stride(), char(0x5a));
      kernels::cpu::pack_rows({x.data(), token.data(), slots.data(), payload.data(), L, S});
      std::vector<int32_t> index = {11, 0, -1, 4, 4};
      std::vector<float> out(index.size() * size_t(hidden), -9.0f);
      kernels::cpu::unpack_rows({payload.data(), L, index.data(), out.data(), int(index.size())});
      for (size_t m = 0; m < index.size(); ++m)
        for (int c = 0; c < hidden; ++c) {
          const float src = index[m] < 0 ? 0.0f : x[size_t(token[size_t(index[m])]) * hidden + c];
          const float want = dt == DType::kBF16 ? bf16_to_f32(f32_to_bf16(src)) : src;
          ASSERT_EQ(out[m * hidden + c], want) << "row " << m << " col " << c;
        }
      for (int i = 0; i < S; ++i) {
        const char* row = payload.data() + size_t(i) * L.stride();
        for (size_t b = size_t(hidden) * dtype_size(dt); b < L.slots_offset(); ++b)
          EXPECT_EQ(row[b], 0) << "padding byte " << b << " of row " << i;
        for (int s = 0; s < 3; ++s) {
          RouteSlot rs;
          std::memcpy(&rs, row + L.slots_offset() + size_t(s) * sizeof(RouteSlot), sizeof rs);
          EXPECT_EQ(rs.expert, slots[size_t(i) * 3 + s].expert);
          EXPECT_EQ(rs.weight, slots[size_t(i) * 3 + s].weight);
        }
      }
    }
  }
}

// bf16 in and out: widened exactly, summed in fp32 in slot order, rounded once on store; a null
// weight is 1.
TEST(MoeOps, WeightedCombineThroughBf16) {
  const int cols = 5, k = 2;
  std::vector<float> y = {1.0f, 2.0f, 3.0f, 1.0f / 3.0f, -0.1f, 10.0f, 20.0f, 30.0f, 40.0f, 1e-3f};
  std::vector<uint16_t> yb(y.size());
  for (size_t i = 0; i < y.size(); ++i) yb[i] = f32_to_bf16(y[i]);
  std::vector<int32_t> index = {1, 0, -1, 1};
  std::vector<float> weight = {0.3f, 0.7f, 0.5f, 0.5f};
  for (bool bf16_in : {false, true})
    for (bool bf16_out : {false, true})
      for (bool weighted : {false, true}) {
        SCOPED_TRACE(std::string("in ") + (bf16_in ? "bf16" : "f32") + " out " +
                     (bf16_out ? "bf16" : "f32") + (weighted ? " weighted" : " ones"));
        std::vector<float> out32(size_t(2) * cols, -1.0f);
        std::vector<uint16_t> out16(size_t(2) * cols, 0);
        kernels::WeightedCombineParams p;
        p.y = bf16_in ? static_cast<const void*>(yb.data()) : y.data();
        p.y_dtype = bf16_in ? DType::kBF16 : DType::kF32;
        p.index = index.data();
        p.weight = weighted ? weight.data() : nullptr;
        p.out = bf16_out ? static_cast<void*>(out16.data()) : out32.data();
        p.out_dtype = bf16_out ? DType::kBF16 : DType::kF32;
        p.R = 2;
        p.k = k;
        p.cols = cols;
        kernels::cpu::weighted_combine(p);
        for (int r = 0; r < 2; ++r)
          for (int c = 0; c < cols; ++c) {
            float acc = 0.0f;
            for (int s = 0; s < k; ++s) {
              const int i = index[size_t(r) * k + s];
              if (i < 0) continue;
              const float v = bf16_in ? bf16_to_f32(yb[size_t(i) * cols + c]) : y[size_t(i) * cols + c];
              acc += (weighted ? weight[size_t(r) * k + s] : 1.0f) * v;
            }
            const float got = bf16_out ? bf16_to_f32(out16[size_t(r) * cols + c])
                                       : out32[size_t(r) * cols + c];
            EXPECT_EQ(got, bf16_out ? bf16_to_f32(f32_to_bf16(acc)) : acc) << r << "," << c;
          }
      }
}

}  // namespace
}  // namespace moe::test
