#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

namespace moe::kernels::cpu {

// As transformers' Mixtral block: softmax in fp32 over all experts, the top k of it, then
// renormalised to sum to one. Ties go to the lower expert id.
//
// Logits that are not finite have a defined outcome (the CUDA op's too), where a plain softmax
// would give NaN weights and an unordered sort: a NaN logit counts as -inf (an expert with no
// score is never preferred to one with a score); where some logit is +inf, the +inf experts
// share the probability equally and the rest get 0 (the softmax's limit); where every logit is
// -inf (or NaN), all experts are equally likely. Ties, as always, go to the lower id.
void topk_router(const TopKRouterParams& p) {
  std::vector<float> prob(p.n_experts);
  std::vector<int> order(p.n_experts);
  for (int t = 0; t < p.T; ++t) {
    const float* l = p.logits + int64_t(t) * p.n_experts;
    auto logit = [&](int e) { return std::isnan(l[e]) ? -INFINITY : l[e]; };
    float mx = -INFINITY;
    for (int e = 0; e < p.n_experts; ++e) mx = std::max(mx, logit(e));
    float sum = 0.0f;
    for (int e = 0; e < p.n_experts; ++e) {
      if (mx == INFINITY)
        prob[e] = logit(e) == INFINITY ? 1.0f : 0.0f;
      else if (mx == -INFINITY)
        prob[e] = 1.0f;
      else
        prob[e] = std::exp(logit(e) - mx);
      sum += prob[e];
    }
    for (int e = 0; e < p.n_experts; ++e) prob[e] /= sum;
    for (int e = 0; e < p.n_experts; ++e) order[e] = e;
    std::partial_sort(order.begin(), order.begin() + p.k, order.end(), [&](int a, int b) {
      return prob[a] > prob[b] || (prob[a] == prob[b] && a < b);
    });
    float top = 0.0f;
    for (int j = 0; j < p.k; ++j) top += prob[order[j]];
    for (int j = 0; j < p.k; ++j) {
      p.expert[int64_t(t) * p.k + j] = order[j];
      p.weight[int64_t(t) * p.k + j] = prob[order[j]] / top;
    }
  }
}

}  // namespace moe::kernels::cpu
