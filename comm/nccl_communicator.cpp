#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "comm/nccl_library.h"
#include "common/error.h"
#include "common/log.h"

namespace moe::comm {

ncclUniqueId NcclCommunicator::make_id(bool root) {
  const NcclLibrary& nccl = nccl_library();
  ncclUniqueId id{};
  if (root) {
    const ncclResult_t r = nccl.get_unique_id(&id);
    if (r != ncclSuccess) MOE_THROW(nccl.describe("ncclGetUniqueId", r));
  }
  return id;
}

double NcclCommunicator::init_timeout_s() {
  const char* v = std::getenv("MOE_NCCL_INIT_TIMEOUT_S");
  if (!v || !*v) return 300.0;
  char* end = nullptr;
  const double s = std::strtod(v, &end);
  MOE_CHECK(end && *end == '\0' && s > 0, std::string("MOE_NCCL_INIT_TIMEOUT_S='") + v +
                                              "': expected a positive number of seconds");
  return s;
}

void NcclCommunicator::wait_ready(const char* what, ncclResult_t started, double timeout_s) const {
  const NcclLibrary& nccl = nccl_library();
  ncclResult_t state = started;
  const auto t0 = std::chrono::steady_clock::now();
  // An exchange's enqueue finishes within microseconds, a join within seconds: ask at once,
  // then yield the core for the first couple of milliseconds, then poll every millisecond.
  while (state == ncclInProgress) {
    const ncclResult_t q = nccl.comm_get_async_error(comm_, &state);
    if (q != ncclSuccess) MOE_THROW(nccl.describe("ncclCommGetAsyncError", q, comm_));
    if (state != ncclInProgress) break;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (waited > timeout_s)
      MOE_THROW(std::string(what) + " did not finish within " + std::to_string(int(timeout_s)) +
                " s (MOE_NCCL_INIT_TIMEOUT_S): a peer rank failed or never joined");
    if (waited < 2e-3)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (state != ncclSuccess) MOE_THROW(nccl.describe(what, state, comm_));
}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, cudaStream_t stream)
    : NcclCommunicator(bootstrap, stream, [&] {
        // Agreed before the broadcast: a root that could not make the id would otherwise leave
        // the others waiting in it.
        ncclUniqueId id{};
        std::string err;
        try {
          id = make_id(bootstrap.rank() == 0);
        } catch (const std::exception& e) {
          err = e.what();
        }
        int64_t failed = !err.empty();
        bootstrap.all_reduce(&failed, 1, Op::kMax);
        if (failed) MOE_THROW(err.empty() ? "NCCL could not be set up on another rank" : err);
        bootstrap.broadcast(&id, sizeof(id), 0);
        return id;
      }()) {}

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, cudaStream_t stream,
                                   const ncclUniqueId& id)
    : DeviceCommunicator(bootstrap, stream),
      timeout_s_(init_timeout_s()),
      uncaught_at_init_(std::uncaught_exceptions()) {
  const NcclLibrary& nccl = nccl_library();
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclUniqueId id_copy = id;
  const ncclResult_t started = nccl.comm_init_rank_config(&comm_, size(), id_copy, rank(), &config);
  if (started != ncclSuccess && started != ncclInProgress) {
    // Whatever NCCL made of the communicator before failing is released, not leaked.
    if (comm_) nccl.comm_abort(comm_);
    comm_ = nullptr;
    MOE_THROW(nccl.describe("ncclCommInitRankConfig", started));
  }
  // The destructor does not run for a constructor that throws: abort here.
  try {
    wait_ready("ncclCommInitRankConfig", started, timeout_s_);
    int device = -1;
    const ncclResult_t r = nccl.comm_cu_device(comm_, &device);
    if (r != ncclSuccess) MOE_THROW(nccl.describe("ncclCommCuDevice", r, comm_));
    int version = 0;
    nccl.get_version(&version);
    spdlog::debug("NCCL {} ({}): rank {} of {} on CUDA device {}", version, nccl.path, rank(),
                  size(), device);
  } catch (...) {
    nccl.comm_abort(comm_);
    comm_ = nullptr;
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (!comm_) return;
  const NcclLibrary& nccl = nccl_library();  // loaded: comm_ exists
  ncclResult_t r;
  if (std::uncaught_exceptions() > uncaught_at_init_) {
    r = nccl.comm_abort(comm_);
  } else {
    // Non-blocking: finalize may return ncclInProgress; it is done when the async error is.
    r = nccl.comm_finalize(comm_);
    for (int spins = 0; r == ncclInProgress && spins < 60000; ++spins) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (nccl.comm_get_async_error(comm_, &r) != ncclSuccess) break;
    }
    r = r == ncclSuccess ? nccl.comm_destroy(comm_) : nccl.comm_abort(comm_);
  }
  if (r != ncclSuccess && r != ncclInProgress)
    spdlog::warn("NCCL communicator teardown failed: {}", nccl.get_error_string(r));
}

void NcclCommunicator::all_to_all_v(const void* send, const int64_t* send_counts,
                                    const int64_t* send_displs, void* recv,
                                    const int64_t* recv_counts, const int64_t* recv_displs,
                                    size_t elem_bytes) {
  check_layout(send_counts, send_displs, recv_counts, recv_displs);
  const NcclLibrary& nccl = nccl_library();
  const int n = size();
  const auto* src = static_cast<const char*>(send);
  auto* dst = static_cast<char*>(recv);
  // Every send and receive in one group: NCCL schedules them together, so no pair of ranks
  // waits on the other's order, and the self "send" is a local copy.
  const ncclResult_t opened = nccl.group_start();
  if (opened != ncclSuccess) MOE_THROW(nccl.describe("ncclGroupStart", opened, comm_));
  ncclResult_t queued = ncclSuccess;
  int peer = 0;
  // Inside a group a non-blocking communicator queues without blocking, so ncclInProgress is a
  // success here; the group's end reports the outcome.
  auto ok = [](ncclResult_t r) { return r == ncclSuccess || r == ncclInProgress; };
  for (; peer < n && ok(queued); ++peer) {
    if (send_counts[peer] > 0)
      queued = nccl.send(src + size_t(send_displs[peer]) * elem_bytes,
                         size_t(send_counts[peer]) * elem_bytes, ncclUint8, peer, comm_, stream_);
    if (ok(queued) && recv_counts[peer] > 0)
      queued = nccl.recv(dst + size_t(recv_displs[peer]) * elem_bytes,
                         size_t(recv_counts[peer]) * elem_bytes, ncclUint8, peer, comm_, stream_);
  }
  // Closed even after a failed enqueue, so no group is left open behind the exception.
  const ncclResult_t ended = nccl.group_end();
  if (!ok(queued))
    MOE_THROW("ncclSend/ncclRecv with peer " + std::to_string(peer - 1) + ": " +
              nccl.describe("enqueue", queued, comm_));
  // The enqueue finishes on the host within moments; the transfer itself runs on the stream.
  wait_ready("ncclGroupEnd for all_to_all_v", ended, timeout_s_);
}

}  // namespace moe::comm
