#include "runtime/waiting_queue.h"

#include "common/error.h"

namespace moe::runtime {

Request WaitingQueue::pop() {
  MOE_CHECK(!q_.empty(), "WaitingQueue::pop on an empty queue");
  size_t best = 0;
  for (size_t i = 1; i < q_.size(); ++i)
    if (q_[i].priority.value_or(0) < q_[best].priority.value_or(0)) best = i;
  if (best != 0 && passed_over_ == kOldestEvery - 1) best = 0;  // the oldest's turn
  passed_over_ = best == 0 ? 0 : passed_over_ + 1;
  Request r = std::move(q_[best]);
  q_.erase(q_.begin() + long(best));
  return r;
}

std::optional<Request> WaitingQueue::erase(int64_t id) {
  for (auto it = q_.begin(); it != q_.end(); ++it)
    if (it->id == id) {
      Request r = std::move(*it);
      q_.erase(it);
      return r;
    }
  return std::nullopt;
}

}  // namespace moe::runtime
