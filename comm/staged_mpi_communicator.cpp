#include "comm/staged_mpi_communicator.h"

#include <cuda_runtime.h>

#include <string>

#include "common/check.h"

namespace moe::comm {

namespace {

// Copies each peer's segment of `counts[p]` elements from src + src_displs[p] to
// dst + dst_displs[p] on `stream`, merging peers whose segments follow each other on both
// sides into one cudaMemcpyAsync.
void copy_segments(void* dst, const int64_t* dst_displs, const void* src,
                   const int64_t* src_displs, const int64_t* counts, int n, size_t elem_bytes,
                   cudaMemcpyKind kind, cudaStream_t stream) {
  int64_t run_dst = 0, run_src = 0, run_len = 0;
  auto flush = [&] {
    if (run_len == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + size_t(run_dst) * elem_bytes,
                               static_cast<const char*>(src) + size_t(run_src) * elem_bytes,
                               size_t(run_len) * elem_bytes, kind, stream));
    run_len = 0;
  };
  for (int p = 0; p < n; ++p) {
    if (counts[p] == 0) continue;
    if (run_len > 0 && dst_displs[p] == run_dst + run_len && src_displs[p] == run_src + run_len) {
      run_len += counts[p];
      continue;
    }
    flush();
    run_dst = dst_displs[p];
    run_src = src_displs[p];
    run_len = counts[p];
  }
  flush();
}

// Prefix sums of counts: the displacements of the same segments packed in peer order. Returns
// the total.
int64_t pack(const int64_t* counts, int n, std::vector<int64_t>& displs) {
  displs.resize(size_t(n));
  int64_t total = 0;
  for (int p = 0; p < n; ++p) {
    displs[size_t(p)] = total;
    total += counts[p];
  }
  return total;
}

}  // namespace

StagedMpiCommunicator::PinnedBuffer::~PinnedBuffer() {
  if (p_) cudaFreeHost(p_);  // an error here has nowhere to go: never throw from a destructor
}

void StagedMpiCommunicator::PinnedBuffer::reserve(size_t bytes) {
  if (bytes <= bytes_) return;
  if (p_) CUDA_CHECK(cudaFreeHost(p_));
  p_ = nullptr;
  bytes_ = 0;
  void* p = nullptr;
  CUDA_CHECK(cudaMallocHost(&p, bytes));
  p_ = static_cast<char*>(p);
  bytes_ = bytes;
}

StagedMpiCommunicator::StagedMpiCommunicator(Communicator& host, cudaStream_t stream)
    : DeviceCommunicator(host, stream) {
  CUDA_CHECK(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming));
  // Recorded once so the first exchange's wait has an event that has completed.
  CUDA_CHECK(cudaEventRecord(uploaded_, stream_));
}

StagedMpiCommunicator::~StagedMpiCommunicator() {
  if (uploaded_) {
    cudaEventSynchronize(uploaded_);  // the uploads read recv_staging_, freed right after
    cudaEventDestroy(uploaded_);
  }
}

void StagedMpiCommunicator::reserve_exchange(size_t bytes) {
  CUDA_CHECK(cudaEventSynchronize(uploaded_));  // the last uploads may still read recv_staging_
  send_staging_.reserve(bytes);
  recv_staging_.reserve(bytes);
}

void StagedMpiCommunicator::all_to_all_v(const void* send, const int64_t* send_counts,
                                         const int64_t* send_displs, void* recv,
                                         const int64_t* recv_counts, const int64_t* recv_displs,
                                         size_t elem_bytes) {
  check_layout(send_counts, send_displs, recv_counts, recv_displs);
  const int n = size();
  if (n == 1) {  // no peer: rank 0's segment stays on the device, on the stream
    MOE_CHECK(send_counts[0] == recv_counts[0],
              "one rank sends " + std::to_string(send_counts[0]) + " rows to itself but expects " +
                  std::to_string(recv_counts[0]));
    copy_segments(recv, recv_displs, send, send_displs, send_counts, 1, elem_bytes,
                  cudaMemcpyDeviceToDevice, stream_);
    return;
  }
  const int64_t send_rows = pack(send_counts, n, packed_send_displs_);
  const int64_t recv_rows = pack(recv_counts, n, packed_recv_displs_);

  // The last exchange's uploads may still read recv_staging_ (and reserve may free it).
  CUDA_CHECK(cudaEventSynchronize(uploaded_));
  send_staging_.reserve(size_t(send_rows) * elem_bytes);
  recv_staging_.reserve(size_t(recv_rows) * elem_bytes);

  // On the compute stream, so the copy starts after the kernels that wrote the rows; the host
  // exchange reads the staging buffer, so wait for it.
  copy_segments(send_staging_.get(), packed_send_displs_.data(), send, send_displs, send_counts,
                n, elem_bytes, cudaMemcpyDeviceToHost, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  staged_bytes_ += (send_rows + recv_rows) * int64_t(elem_bytes);

  // Every rank calls this, even with nothing to send or receive (lockstep).
  host_.all_to_all_v(send_staging_.get(), send_counts, packed_send_displs_.data(),
                     recv_staging_.get(), recv_counts, packed_recv_displs_.data(), elem_bytes);

  copy_segments(recv, recv_displs, recv_staging_.get(), packed_recv_displs_.data(), recv_counts,
                n, elem_bytes, cudaMemcpyHostToDevice, stream_);
  CUDA_CHECK(cudaEventRecord(uploaded_, stream_));
}

}  // namespace moe::comm
