#pragma once
// Collectives on DEVICE memory through NCCL, for the GPU backend. Only the row exchange
// (all_to_all_v) moves device data; every other method carries host data (counts, scalars,
// small blobs) and goes through the bootstrap communicator (MPI), see below.
#include <cuda_runtime.h>
#include <nccl.h>

#include "comm/communicator.h"

namespace moe::comm {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`'s ranks: rank 0 makes the NCCL id, bootstrap.broadcast hands it
  // to every rank, and every rank joins with ncclCommInitRank on the calling thread's current
  // device, so bind it first (select_device). `bootstrap` must outlive this object; the rows
  // move on `stream` (the compute stream), which must outlive it too. NCCL refuses two ranks on
  // one device: check usable() first, on every rank, and agree on the answer.
  NcclCommunicator(Communicator& bootstrap, cudaStream_t stream);
  // ncclCommDestroy waits for the communicator to go quiet on every rank, so all ranks destroy
  // it together. While an exception unwinds, peers may never get there: then ncclCommAbort,
  // which frees this rank's side without waiting. Never throws.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // False where two ranks of a node would share a GPU (local_size ranks on device_count
  // devices): NCCL 2.28 fails ncclCommInitRank with "Duplicate GPU detected". Ranks on
  // different nodes can disagree, so reduce the answer (Op::kMin) over all ranks before choosing
  // NCCL or StagedMpiCommunicator: every rank must build the same kind.
  static bool usable(int local_size, int device_count) {
    return device_count > 0 && local_size <= device_count;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }
  cudaStream_t stream() const { return stream_; }

  // HOST int64 counts, through the bootstrap: the MoE layer needs the row counts on the host to
  // size the receive buffer and the displacements before the row exchange, so moving them on
  // the device would only add a device->host copy and a sync.
  void all_to_all_counts(const int64_t* send, int64_t* recv) override;

  // DEVICE buffers: one ncclSend/ncclRecv (bytes) per peer with a nonzero count, in one NCCL
  // group, enqueued on stream(). Returns without synchronising: the caller's next op on the
  // stream runs after the exchange; host reads of `recv` need a stream sync first. Counts and
  // displacements are host arrays [size()].
  void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    size_t elem_bytes) override;

  // HOST data (step agreement, stats, config blobs): delegated to the bootstrap communicator.
  // These are a few scalars; NCCL would need them staged to the device and back.
  void all_reduce(int64_t* data, int n, Op op) override;
  void all_reduce(double* data, int n, Op op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void all_gather(const void* send, void* recv, size_t bytes) override;
  void barrier() override;

 private:
  Communicator& bootstrap_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
  int uncaught_at_init_ = 0;  // std::uncaught_exceptions() when built: tells unwinding apart
};

}  // namespace moe::comm
