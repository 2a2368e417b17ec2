#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <exception>
#include <string>

#include "common/check.h"
#include "common/log.h"

namespace moe::comm {

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, cudaStream_t stream)
    : DeviceCommunicator(bootstrap, stream), uncaught_at_init_(std::uncaught_exceptions()) {
  ncclUniqueId id{};
  if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  host_.broadcast(&id, sizeof(id), 0);
  NCCL_CHECK(ncclCommInitRank(&comm_, size(), id, rank()));
  int device = -1;
  NCCL_CHECK(ncclCommCuDevice(comm_, &device));
  spdlog::debug("NCCL communicator: rank {} of {} on CUDA device {}", rank(), size(), device);
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_) return;
  const ncclResult_t r = std::uncaught_exceptions() > uncaught_at_init_ ? ncclCommAbort(comm_)
                                                                          : ncclCommDestroy(comm_);
  if (r != ncclSuccess)
    spdlog::warn("NCCL communicator teardown failed: {}", ncclGetErrorString(r));
}

void NcclCommunicator::all_to_all_v(const void* send, const int64_t* send_counts,
                                    const int64_t* send_displs, void* recv,
                                    const int64_t* recv_counts, const int64_t* recv_displs,
                                    size_t elem_bytes) {
  check_layout(send_counts, send_displs, recv_counts, recv_displs);
  const int n = size();
  const auto* src = static_cast<const char*>(send);
  auto* dst = static_cast<char*>(recv);
  // Every send and receive in one group: NCCL schedules them together, so no pair of ranks
  // waits on the other's order, and the self "send" is a local copy.
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t queued = ncclSuccess;
  int peer = 0;
  for (; peer < n && queued == ncclSuccess; ++peer) {
    if (send_counts[peer] > 0)
      queued = ncclSend(src + size_t(send_displs[peer]) * elem_bytes,
                        size_t(send_counts[peer]) * elem_bytes, ncclUint8, peer, comm_, stream_);
    if (queued == ncclSuccess && recv_counts[peer] > 0)
      queued = ncclRecv(dst + size_t(recv_displs[peer]) * elem_bytes,
                        size_t(recv_counts[peer]) * elem_bytes, ncclUint8, peer, comm_, stream_);
  }
  // Closed even after a failed enqueue, so no group is left open behind the exception.
  const ncclResult_t ended = ncclGroupEnd();
  if (queued != ncclSuccess)
    MOE_THROW("ncclSend/ncclRecv with peer " + std::to_string(peer - 1) + " failed: " +
              ncclGetErrorString(queued) + " (" + ncclGetLastError(comm_) + ")");
  if (ended != ncclSuccess)
    MOE_THROW(std::string("ncclGroupEnd() for all_to_all_v failed: ") +
              ncclGetErrorString(ended) + " (" + ncclGetLastError(comm_) + ")");
}

}  // namespace moe::comm
