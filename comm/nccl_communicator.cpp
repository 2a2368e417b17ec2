#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <exception>
#include <string>

#include "common/check.h"
#include "common/log.h"

namespace moe::comm {

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, cudaStream_t stream)
    : bootstrap_(bootstrap),
      stream_(stream),
      rank_(bootstrap.rank()),
      size_(bootstrap.size()),
      uncaught_at_init_(std::uncaught_exceptions()) {
  ncclUniqueId id{};
  if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  bootstrap_.broadcast(&id, sizeof(id), 0);
  NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
  int device = -1;
  NCCL_CHECK(ncclCommCuDevice(comm_, &device));
  spdlog::debug("NCCL communicator: rank {} of {} on CUDA device {}", rank_, size_, device);
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_) return;
  const ncclResult_t r = std::uncaught_exceptions() > uncaught_at_init_ ? ncclCommAbort(comm_)
                                                                          : ncclCommDestroy(comm_);
  if (r != ncclSuccess)
    spdlog::warn("NCCL communicator teardown failed: {}", ncclGetErrorString(r));
}

void NcclCommunicator::all_to_all_counts(const int64_t* send, int64_t* recv) {
  bootstrap_.all_to_all_counts(send, recv);
}

void NcclCommunicator::all_to_all_v(const void* send, const int64_t* send_counts,
                                    const int64_t* send_displs, void* recv,
                                    const int64_t* recv_counts, const int64_t* recv_displs,
                                    size_t elem_bytes) {
  for (int p = 0; p < size_; ++p)
    MOE_CHECK(send_counts[p] >= 0 && send_displs[p] >= 0 && recv_counts[p] >= 0 &&
                  recv_displs[p] >= 0,
              "negative count or displacement for peer " + std::to_string(p));
  const auto* src = static_cast<const char*>(send);
  auto* dst = static_cast<char*>(recv);
  // Every send and receive in one group: NCCL schedules them together, so no pair of ranks
  // waits on the other's order, and the self "send" is a local copy.
  NCCL_CHECK(ncclGroupStart());
  ncclResult_t queued = ncclSuccess;
  int peer = 0;
  for (; peer < size_ && queued == ncclSuccess; ++peer) {
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

void NcclCommunicator::all_reduce(int64_t* data, int n, Op op) {
  bootstrap_.all_reduce(data, n, op);
}

void NcclCommunicator::all_reduce(double* data, int n, Op op) {
  bootstrap_.all_reduce(data, n, op);
}

void NcclCommunicator::broadcast(void* data, size_t bytes, int root) {
  bootstrap_.broadcast(data, bytes, root);
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t bytes) {
  bootstrap_.all_gather(send, recv, bytes);
}

void NcclCommunicator::barrier() { bootstrap_.barrier(); }

}  // namespace moe::comm
