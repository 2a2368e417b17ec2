#pragma once
// Collectives on DEVICE memory through a host communicator (MPI), for when NCCL cannot be used:
// ranks sharing one GPU (NcclCommunicator::usable is false). The row exchange is staged through
// pinned host memory; every other method carries host data and is passed straight through.
//
// Cost of all_to_all_v, on top of the host exchange itself: every sent row crosses PCIe
// device->host and every received row host->device (two copies of the exchanged bytes), and
// the host blocks on the stream before the exchange (everything queued ahead of it on the
// stream must finish first, so compute cannot overlap the exchange). With NCCL on one GPU per
// rank the rows move device to device and nothing blocks the host.
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "comm/communicator.h"

namespace moe::comm {

class StagedMpiCommunicator final : public Communicator {
 public:
  // `host` is a communicator on host memory (MpiCommunicator); it and `stream` (the compute
  // stream, on the calling thread's current device) must outlive this object.
  StagedMpiCommunicator(Communicator& host, cudaStream_t stream);
  ~StagedMpiCommunicator() override;  // waits for the last upload, frees the pinned buffers
  StagedMpiCommunicator(const StagedMpiCommunicator&) = delete;
  StagedMpiCommunicator& operator=(const StagedMpiCommunicator&) = delete;

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string name() const override { return "mpi-staged"; }
  cudaStream_t stream() const { return stream_; }

  // HOST counts: passed through (the MoE layer keeps counts on the host).
  void all_to_all_counts(const int64_t* send, int64_t* recv) override;

  // DEVICE buffers, host counts and displacements [size()]. The send rows are copied to pinned
  // host memory on stream() (ordered after the kernels that produced them), the host waits for
  // that copy, the host communicator exchanges them packed by peer, and the received rows are
  // copied back to `recv` on stream() without waiting: as with NCCL, the caller's next op on
  // the stream runs after them, and host reads of `recv` need a stream sync first. Segments
  // contiguous in the device layout move in one copy, so the usual packed layout costs one
  // copy each way.
  void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    size_t elem_bytes) override;

  // HOST data: passed through.
  void all_reduce(int64_t* data, int n, Op op) override;
  void all_reduce(double* data, int n, Op op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void all_gather(const void* send, void* recv, size_t bytes) override;
  void barrier() override;

 private:
  // Page-locked host memory, grown to the largest exchange seen and never shrunk, so steady
  // state allocates nothing (cudaMallocHost is slow and synchronises the device).
  class PinnedBuffer {
   public:
    PinnedBuffer() = default;
    ~PinnedBuffer();
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    void reserve(size_t bytes);
    char* get() const { return p_; }

   private:
    char* p_ = nullptr;
    size_t bytes_ = 0;
  };

  Communicator& host_;
  cudaStream_t stream_;
  // Recorded after the uploads of the last exchange, which still read recv_staging_ when the
  // call returns: the next call waits on it before the host exchange writes there again.
  cudaEvent_t uploaded_ = nullptr;
  PinnedBuffer send_staging_;  // [sum send_counts * elem_bytes] packed by peer
  PinnedBuffer recv_staging_;  // [sum recv_counts * elem_bytes] packed by peer
  std::vector<int64_t> packed_send_displs_, packed_recv_displs_;  // [size()] in elements
};

}  // namespace moe::comm
