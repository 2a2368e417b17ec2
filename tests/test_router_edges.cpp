// The CPU router (kernels/cpu/topk_router.cpp) on logits that are not finite: each case has a
// defined outcome, the one the CUDA op is held to as well (tests/cuda/test_cuda_edges.cpp).
//   NaN          counts as -inf: never chosen over an expert with a score
//   +inf         the +inf experts share the probability equally, the rest get 0
//   all -inf/NaN every expert equally likely: experts 0..k-1 (ties to the lower id)
// In every case the k weights are finite and sum to 1.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct Routed {
  std::vector<int32_t> expert;
  std::vector<float> weight;
};

Routed route(const std::vector<float>& logits, int k) {
  Routed r{std::vector<int32_t>(k), std::vector<float>(k)};
  TopKRouterParams p;
  p.logits = logits.data();
  p.expert = r.expert.data();
  p.weight = r.weight.data();
  p.T = 1;
  p.n_experts = int(logits.size());
  p.k = k;
  cpu::topk_router(p);
  return r;
}

TEST(RouterEdges, NanLogitIsNeverPreferred) {
  // Expert 1 would win by far if its NaN were read as a number.
  const Routed r = route({0.5f, kNaN, 2.0f, -1.0f}, 2);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{2, 0}));
  for (float w : r.weight) EXPECT_TRUE(std::isfinite(w));
  EXPECT_FLOAT_EQ(r.weight[0] + r.weight[1], 1.0f);
  EXPECT_GT(r.weight[0], r.weight[1]);
}

TEST(RouterEdges, InfiniteLogitsShareTheProbability) {
  // Two +inf experts: each half; with k = 3 the third is the lowest-id zero.
  Routed r = route({1.0f, kInf, -kInf, kInf, 3.0f}, 3);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(r.weight, (std::vector<float>{0.5f, 0.5f, 0.0f}));
  // One +inf expert takes everything.
  r = route({kNaN, 2.0f, kInf}, 1);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{2}));
  EXPECT_EQ(r.weight, (std::vector<float>{1.0f}));
  // -inf experts get exactly 0 beside finite ones.
  r = route({-kInf, 0.0f, -kInf, 0.0f}, 3);
  EXPECT_EQ(r.expert, (std::vector<int32_t>{1, 3, 0}));
  EXPECT_EQ(r.weight, (std::vector<float>{0.5f, 0.5f, 0.0f}));
}

TEST(RouterEdges, NoFiniteLogitIsUniform) {
  for (const std::vector<float>& logits :
       {std::vector<float>(60, -kInf), std::vector<float>(60, kNaN),
        std::vector<float>{kNaN, -kInf, kNaN, -kInf, -kInf, kNaN, kNaN, -kInf}}) {
    const Routed r = route(logits, 2);
    EXPECT_EQ(r.expert, (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(r.weight, (std::vector<float>{0.5f, 0.5f}));
  }
}

}  // namespace
}  // namespace moe::kernels
