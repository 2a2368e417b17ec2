#pragma once
// The row exchange on DEVICE memory through a host communicator (MPI), for when NCCL cannot be
// used: ranks sharing one GPU (NcclCommunicator::usable is false). The rows are staged through
// pinned host memory; the host collectives go straight through (DeviceCommunicator).
//
// Cost of all_to_all_v, on top of the host exchange itself: every sent row crosses PCIe
// device->host and every received row host->device (two copies of the exchanged bytes), and
// the host blocks on the stream before the exchange (everything queued ahead of it on the
// stream must finish first, so compute cannot overlap the exchange). With NCCL on one GPU per
// rank the rows move device to device and nothing blocks the host. A world of one rank has no
// peer: its rows are copied device to device on the stream, with no staging and no wait.
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "comm/device_communicator.h"

namespace moe::comm {

class StagedMpiCommunicator final : public DeviceCommunicator {
 public:
  // `host` is a communicator on host memory (MpiCommunicator); it and `stream` (the compute
  // stream, on the calling thread's current device) must outlive this object.
  StagedMpiCommunicator(Communicator& host, cudaStream_t stream);
  ~StagedMpiCommunicator() override;  // waits for the last upload, frees the pinned buffers
  StagedMpiCommunicator(const StagedMpiCommunicator&) = delete;
  StagedMpiCommunicator& operator=(const StagedMpiCommunicator&) = delete;

  std::string name() const override { return "mpi-staged"; }
  // Both pinned buffers sized up front (cudaMallocHost is slow and synchronises the device).
  void reserve_exchange(size_t bytes) override;

  // The send rows are copied to pinned host memory on stream() (ordered after the kernels that
  // produced them), the host waits for that copy, the host communicator exchanges them packed
  // by peer, and the received rows are copied back to `recv` on stream() without waiting. Segments
  // contiguous in the device layout move in one copy, so the usual packed layout costs one copy
  // each way.
  void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    size_t elem_bytes) override;

  // Bytes that have gone through host memory so far (both ways): 0 at one rank.
  int64_t staged_bytes() const { return staged_bytes_; }

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

  // Recorded after the uploads of the last exchange, which still read recv_staging_ when the
  // call returns: the next call waits on it before the host exchange writes there again.
  cudaEvent_t uploaded_ = nullptr;
  PinnedBuffer send_staging_;  // [sum send_counts * elem_bytes] packed by peer
  PinnedBuffer recv_staging_;  // [sum recv_counts * elem_bytes] packed by peer
  std::vector<int64_t> packed_send_displs_, packed_recv_displs_;  // [size()] in elements
  int64_t staged_bytes_ = 0;
};

}  // namespace moe::comm
