#pragma once
// What the communicators for DEVICE memory share: only the row exchange (all_to_all_v) moves
// device data, enqueued on the compute stream; every other collective carries host data (row
// counts, the step agreement, statistics, config blobs), which is where the MoE layer and the
// engine keep it, so it goes through the host communicator (MPI) as it is. Moving a few host
// scalars over NCCL would cost a copy to the device, one back and a sync, for nothing.
#include <cuda_runtime.h>

#include "comm/communicator.h"

namespace moe::comm {

class DeviceCommunicator : public Communicator {
 public:
  // `host` (a host-memory communicator over the same ranks) and `stream` (the compute stream)
  // must outlive this object.
  DeviceCommunicator(Communicator& host, cudaStream_t stream) : host_(host), stream_(stream) {}

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  cudaStream_t stream() const { return stream_; }

  // HOST data, through the host communicator.
  void all_to_all_counts(const int64_t* send, int64_t* recv, int n) override {
    host_.all_to_all_counts(send, recv, n);
  }
  using Communicator::all_to_all_counts;
  void all_reduce(int64_t* data, int n, Op op) override { host_.all_reduce(data, n, op); }
  void all_reduce(double* data, int n, Op op) override { host_.all_reduce(data, n, op); }
  void broadcast(void* data, size_t bytes, int root) override {
    host_.broadcast(data, bytes, root);
  }
  void all_gather(const void* send, void* recv, size_t bytes) override {
    host_.all_gather(send, recv, bytes);
  }
  void barrier() override { host_.barrier(); }
  void gather_bytes(const std::string& send, std::vector<std::string>* recv, int root) override {
    host_.gather_bytes(send, recv, root);
  }

  // all_to_all_v: DEVICE buffers, host counts and displacements [size()], enqueued on stream():
  // the caller's next op on the stream runs after the exchange; host reads of `recv` need a
  // stream sync first.

 protected:
  // Refuses a negative count or displacement (before anything is enqueued).
  void check_layout(const int64_t* send_counts, const int64_t* send_displs,
                    const int64_t* recv_counts, const int64_t* recv_displs) const;

  Communicator& host_;
  cudaStream_t stream_;
};

}  // namespace moe::comm
