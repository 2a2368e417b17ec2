#pragma once
// Streams and events of the emulated device. Work (kernels, copies, memsets, event records) is
// queued in issue order and runs only when the host waits for it: a stream or device sync, an
// event sync, a synchronous copy. So a host that reads a copy's destination before waiting for
// its stream reads what was there before, as it may on a GPU, instead of the emulation hiding
// the missing sync. One queue for every stream: running a stream's work also runs the work
// issued on other streams before it, which a GPU may do too (concurrency between streams is not
// emulated).
#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>

// The opaque types behind cudaStream_t and cudaEvent_t.
struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  unsigned flags = 0;
  uint64_t seq = 0;    // its record in the queue; 0: never recorded
  bool done = false;   // that record has run
  std::chrono::steady_clock::time_point at;  // when it ran
};

namespace moe::emu {

class WorkQueue {
 public:
  // Queues `work` on `stream`; returns its sequence number.
  uint64_t enqueue(cudaStream_t stream, std::function<void()> work);
  // Runs the queued work up to and including `seq` (every item with kAll).
  static constexpr uint64_t kAll = ~uint64_t(0);
  void run_until(uint64_t seq);
  // The last item queued on `stream` (0 if none is left).
  uint64_t last_of(cudaStream_t stream) const;
  // Drops the queued work unrun (cudaDeviceReset).
  void drop_all();
  bool empty() const { return items_.empty(); }

 private:
  struct Item {
    uint64_t seq;
    std::function<void()> work;
  };
  std::deque<Item> items_;
  uint64_t next_ = 1;
  std::unordered_map<cudaStream_t, uint64_t> last_;
  bool running_ = false;
};

}  // namespace moe::emu
