#include "runtime/synthetic_routing.h"

#include <random>
#include <string>

#include "common/error.h"

namespace moe::runtime {

SyntheticRouting::SyntheticRouting(std::vector<std::vector<double>> load, int top_k,
                                   int tokens_per_rank, uint64_t seed)
    : load_(std::move(load)), top_k_(top_k), tokens_(tokens_per_rank), seed_(seed) {
  if (load_.empty() || load_[0].empty()) throw InputError("load distribution: no layers or experts");
  if (top_k_ < 1) throw InputError("top_k is " + std::to_string(top_k_) + ", expected >= 1");
  if (tokens_ < 0) throw InputError("tokens per rank is " + std::to_string(tokens_) + ", expected >= 0");
  for (size_t l = 0; l < load_.size(); ++l) {
    if (load_[l].size() != load_[0].size())
      throw InputError("load distribution: layer " + std::to_string(l) + " has " +
                       std::to_string(load_[l].size()) + " experts, layer 0 " +
                       std::to_string(load_[0].size()));
    int loaded = 0;
    for (double v : load_[l]) {
      if (!(v >= 0)) throw InputError("load distribution: layer " + std::to_string(l) + " has a load below 0");
      loaded += v > 0;
    }
    if (loaded < top_k_)
      throw InputError("load distribution: layer " + std::to_string(l) + " has load on " +
                       std::to_string(loaded) + " experts, fewer than top_k = " +
                       std::to_string(top_k_) + "; expected a recorded run's statistics");
  }
}

const std::vector<int32_t>& SyntheticRouting::choices(int step, int layer, int src) {
  const auto& w = load_[size_t(layer) % load_.size()];
  // One stream per (step, layer, source): mixed into the seed, not drawn in sequence.
  std::seed_seq seq{uint32_t(seed_), uint32_t(seed_ >> 32), uint32_t(step), uint32_t(layer),
                    uint32_t(src)};
  std::mt19937_64 rng(seq);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  out_.resize(size_t(tokens_) * top_k_);
  for (int t = 0; t < tokens_; ++t) {
    left_ = w;
    double total = 0;
    for (double v : left_) total += v;
    for (int j = 0; j < top_k_; ++j) {
      const double x = unit(rng) * total;
      double acc = 0;
      int pick = -1;
      for (size_t e = 0; e < left_.size(); ++e) {
        if (left_[e] <= 0) continue;
        pick = int(e);  // the last expert with load, should rounding leave x past the sum
        acc += left_[e];
        if (x < acc) break;
      }
      out_[size_t(t) * top_k_ + j] = pick;
      total -= left_[size_t(pick)];
      left_[size_t(pick)] = 0;
    }
  }
  return out_;
}

}  // namespace moe::runtime
