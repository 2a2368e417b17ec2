#pragma once
// A routing made up from a load distribution, for the simulator (moe-sim --loads): every source
// rank routes `tokens_per_rank` tokens per step, each to top_k distinct experts of the layer,
// drawn one after another in proportion to the recorded loads of the experts not yet chosen
// (the same as sampling without replacement; with top_k > 1 the hottest experts are chosen a
// little less often than their share, as a real router's top-k also caps each at one choice per
// token). Deterministic: the choices of (step, layer, source) depend on the seed and on those
// three alone, so any rank count replays the same tokens on the ranks they share.
#include <cstdint>
#include <vector>

namespace moe::runtime {

class SyntheticRouting {
 public:
  // load[layer][expert] >= 0, each layer with some load and at least top_k experts with load
  // (InputError otherwise, naming the layer).
  SyntheticRouting(std::vector<std::vector<double>> load, int top_k, int tokens_per_rank,
                   uint64_t seed);
  // The choices of source `src` at (step, layer): experts [tokens_per_rank, top_k]. Layer l of a
  // model with more layers than the loads replays loads layer l % layers. The reference stays
  // valid until the next call.
  const std::vector<int32_t>& choices(int step, int layer, int src);

  int layers() const { return int(load_.size()); }
  int experts() const { return load_.empty() ? 0 : int(load_[0].size()); }

 private:
  std::vector<std::vector<double>> load_;
  int top_k_, tokens_;
  uint64_t seed_;
  std::vector<int32_t> out_;
  std::vector<double> left_;
};

}  // namespace moe::runtime
