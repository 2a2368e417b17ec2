#pragma once
// How a rank's GPU memory is shared out, as plain arithmetic on the sizes the device reports
// (so it is tested without a GPU): whether the weights fit, and how many KV cache slots the rest
// holds. Every refusal is an InputError that names the sizes and the way out.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/dtype.h"

namespace moe::runtime {

struct DeviceMemory {
  size_t free = 0, total = 0;  // bytes, as cudaMemGetInfo reports them (MemAvailable on cpu)
  int device = 0;              // for messages; -1: the host's memory (cpu backend)
  int ranks_sharing = 1;       // ranks of this job on this device
};

// Bytes of the weights one rank holds.
struct WeightBytes {
  size_t shared = 0, experts = 0;
  int n_experts = 0;  // expert FFNs held, over all layers
  DType dtype = DType::kBF16;
  size_t total() const { return shared + experts; }
};

// Throws unless `w` fits in this rank's share of the free memory (free / ranks_sharing).
void check_weights_fit(const WeightBytes& w, const DeviceMemory& m, int rank);

// On the host (CPU backend), once the weights are in place: throws unless `slots` KV slots of
// `bytes_per_slot` fit in this rank's share of the free memory, naming the sizes and the
// fields that set them (max_seqs, max_seq_len).
void check_host_kv_fits(size_t bytes_per_slot, int slots, int max_len, const DeviceMemory& m,
                        int rank);

// What a rank keeps free beyond its weights and workspace, for a later need (a live
// rebalance's moves), and what for ("" for nothing).
struct Reserve {
  size_t bytes = 0;
  std::string what;
};

// KV cache slots that fit once weights and workspace are in place: what the job may still use
// (utilization of the total, less what is in use now, split among the ranks sharing the device,
// less this rank's `reserve`) divided by one slot's bytes. max_seqs > 0 must fit and is
// returned; max_seqs = 0 returns as many as fit, at most max_auto. Throws where max_seqs, or not
// even one slot, fits.
int kv_cache_slots(const DeviceMemory& m, double utilization, size_t bytes_per_slot, int max_len,
                   int max_seqs, int max_auto, const Reserve& reserve = {});

// "1.50 GiB"
std::string gib(double bytes);

}  // namespace moe::runtime
