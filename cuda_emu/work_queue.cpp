#include "cuda_emu/work_queue.h"

namespace moe::emu {

uint64_t WorkQueue::enqueue(cudaStream_t stream, std::function<void()> work) {
  const uint64_t seq = next_++;
  items_.push_back({seq, std::move(work)});
  last_[stream] = seq;
  return seq;
}

void WorkQueue::run_until(uint64_t seq) {
  if (running_) return;  // work never waits for work
  running_ = true;
  while (!items_.empty() && items_.front().seq <= seq) {
    Item item = std::move(items_.front());
    items_.pop_front();
    item.work();
  }
  running_ = false;
}

uint64_t WorkQueue::last_of(cudaStream_t stream) const {
  auto it = last_.find(stream);
  if (it == last_.end() || items_.empty() || it->second < items_.front().seq) return 0;
  return it->second;
}

void WorkQueue::drop_all() {
  items_.clear();
  last_.clear();
}

}  // namespace moe::emu
