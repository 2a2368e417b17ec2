#pragma once
// The row exchange on DEVICE memory through NCCL, one GPU per rank; the host collectives go
// through the bootstrap communicator (DeviceCommunicator).
#include <cuda_runtime.h>
#include <nccl.h>

#include "comm/device_communicator.h"

namespace moe::comm {

class NcclCommunicator final : public DeviceCommunicator {
 public:
  // Collective over `bootstrap`'s ranks: rank 0 makes the NCCL id, bootstrap.broadcast hands it
  // to every rank, and every rank joins with ncclCommInitRank on the calling thread's current
  // device, so bind it first (select_device). `bootstrap` carries the host collectives after
  // (DeviceCommunicator) and must outlive this object; the rows move on `stream` (the compute
  // stream), which must outlive it too. NCCL refuses two ranks on one device: check usable()
  // first, on every rank, and agree on the answer.
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

  std::string name() const override { return "nccl"; }

  // One ncclSend/ncclRecv (bytes) per peer with a nonzero count, in one NCCL group, on stream();
  // returns without synchronising.
  void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    size_t elem_bytes) override;

 private:
  ncclComm_t comm_ = nullptr;
  int uncaught_at_init_ = 0;  // std::uncaught_exceptions() when built: tells unwinding apart
};

}  // namespace moe::comm
