#include "runtime/memory_plan.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"

namespace moe::runtime {

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

namespace {
std::string sharing(const DeviceMemory& m) {
  return m.ranks_sharing > 1 ? ", shared by " + std::to_string(m.ranks_sharing) + " ranks" : "";
}
}  // namespace

void check_weights_fit(const WeightBytes& w, const DeviceMemory& m, int rank) {
  const size_t share = m.free / size_t(std::max(m.ranks_sharing, 1));
  if (w.total() <= share) return;
  throw InputError("rank " + std::to_string(rank) + ": the weights it holds need " +
                   gib(double(w.total())) + " (shared " + gib(double(w.shared)) + " + " +
                   std::to_string(w.n_experts) + " expert FFNs over all layers " +
                   gib(double(w.experts)) + ", " + dtype_name(w.dtype) + ") but " +
                   (m.device >= 0 ? "CUDA device " + std::to_string(m.device)
                                  : std::string("this machine")) +
                   " has " + gib(double(m.free)) + " free of " +
                   gib(double(m.total)) + sharing(m) +
                   "; expected more ranks (the experts spread thinner), a placement giving this "
                   "rank fewer experts, or, with synthetic weights, fewer num_layers");
}

void check_host_kv_fits(size_t bytes_per_slot, int slots, int max_len, const DeviceMemory& m,
                        int rank) {
  const size_t share = m.free / size_t(std::max(m.ranks_sharing, 1));
  const double need = double(bytes_per_slot) * double(slots);
  if (need <= double(share)) return;
  throw InputError("rank " + std::to_string(rank) + ": the KV cache of " + std::to_string(slots) +
                   " sequences x " + std::to_string(max_len) + " positions needs " + gib(need) +
                   " but this machine has " + gib(double(m.free)) + " free of " +
                   gib(double(m.total)) + sharing(m) +
                   " once the weights are loaded; expected a smaller max_seqs or max_seq_len");
}

int kv_cache_slots(const DeviceMemory& m, double utilization, size_t bytes_per_slot, int max_len,
                   int max_seqs, int max_auto, const Reserve& reserve) {
  MOE_CHECK(bytes_per_slot > 0 && m.free <= m.total, "KV sizing given impossible sizes");
  const double in_use = double(m.total - m.free);
  const double budget = std::max(0.0, std::max(0.0, utilization * double(m.total) - in_use) /
                                              double(std::max(m.ranks_sharing, 1)) -
                                          double(reserve.bytes));
  const int64_t fit = int64_t(budget / double(bytes_per_slot));
  char util[16];
  std::snprintf(util, sizeof util, "%.2f", utilization);
  const std::string sizes = gib(budget) + " is left for the KV cache on CUDA device " +
                            std::to_string(m.device) + " (gpu_memory_utilization " + util +
                            " of " + gib(double(m.total)) + ", " + gib(in_use) +
                            " in use after weights and workspace" + sharing(m) +
                            (reserve.bytes ? ", " + gib(double(reserve.bytes)) + " kept for " +
                                                 reserve.what
                                           : std::string()) +
                            ")";
  if (max_seqs > 0) {
    if (fit < max_seqs)
      throw InputError("KV cache: max_seqs " + std::to_string(max_seqs) + " sequences of " +
                       std::to_string(max_len) + " positions need " +
                       gib(double(bytes_per_slot) * max_seqs) + " but " + sizes +
                       "; expected a smaller max_seqs or max_seq_len, or a higher "
                       "gpu_memory_utilization");
    return max_seqs;
  }
  if (fit < 1)
    throw InputError("KV cache: not one sequence of " + std::to_string(max_len) +
                     " positions (" + gib(double(bytes_per_slot)) + ") fits: " + sizes +
                     "; expected a shorter max_seq_len or a higher gpu_memory_utilization");
  return int(std::min<int64_t>(fit, max_auto));
}

}  // namespace moe::runtime
