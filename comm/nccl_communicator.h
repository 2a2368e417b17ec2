#pragma once
// The row exchange on DEVICE memory through NCCL, one GPU per rank; the host collectives go
// through the bootstrap communicator (DeviceCommunicator). NCCL itself is loaded on first use
// (nccl_library.h), so nothing that never makes one of these needs libnccl.so.2.
#include <cuda_runtime.h>
#include <nccl.h>

#include "comm/device_communicator.h"

namespace moe::comm {

class NcclCommunicator final : public DeviceCommunicator {
 public:
  // Set-up in phases, so that a failure on one rank can be agreed on between them (the runtime
  // wraps each in collective_step) instead of leaving the others waiting inside NCCL:
  //  1. make_id (local): loads NCCL; on the root rank, also makes the communicator's id.
  //  2. the caller broadcasts the root's id over the host communicator.
  //  3. the constructor (collective over `bootstrap`'s ranks) joins with a non-blocking
  //     ncclCommInitRankConfig on the calling thread's current device (bind it first,
  //     select_device) and waits at most init_timeout_s() for it: a peer that failed or never
  //     came makes this rank fail too, not hang. Any throw after the join aborts the
  //     communicator, so nothing leaks.
  static ncclUniqueId make_id(bool root);
  NcclCommunicator(Communicator& bootstrap, cudaStream_t stream, const ncclUniqueId& id);
  // The three phases at once, for callers that handle their own failures (tests): a failure of
  // phase 1 on any rank is agreed (every rank throws) before anyone joins.
  NcclCommunicator(Communicator& bootstrap, cudaStream_t stream);
  // `bootstrap` carries the host collectives after (DeviceCommunicator) and must outlive this
  // object; the rows move on `stream` (the compute stream), which must outlive it too.
  //
  // ncclCommDestroy waits for the communicator to go quiet on every rank, so all ranks destroy
  // it together. While an exception unwinds, peers may never get there: then ncclCommAbort,
  // which frees this rank's side without waiting. Never throws.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // NCCL 2.28 fails ncclCommInitRank with "Duplicate GPU detected" where two ranks share a GPU.
  // `most_on_one_device` is DeviceSharing::most_on_one_device (device_sharing.h), the same on
  // every rank, so every rank makes the same choice between NCCL and StagedMpiCommunicator.
  static bool usable(int most_on_one_device) { return most_on_one_device == 1; }

  // Seconds the join waits for every rank: MOE_NCCL_INIT_TIMEOUT_S, 300 by default.
  static double init_timeout_s();

  std::string name() const override { return "nccl"; }

  // One ncclSend/ncclRecv (bytes) per peer with a nonzero count, in one NCCL group, on stream();
  // returns without synchronising.
  void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    size_t elem_bytes) override;

 private:
  // The communicator is non-blocking (so the join can be timed): a call may return
  // ncclInProgress, and its outcome comes later from ncclCommGetAsyncError. Waits for it, at
  // most timeout_s, and throws naming `what` on failure.
  void wait_ready(const char* what, ncclResult_t started, double timeout_s) const;

  ncclComm_t comm_ = nullptr;
  double timeout_s_ = 300.0;  // init_timeout_s(), read once when built
  int uncaught_at_init_ = 0;  // std::uncaught_exceptions() when built: tells unwinding apart
};

}  // namespace moe::comm
