#pragma once
// Requests waiting for a KV slot on one rank. The next one admitted is the one of the lowest
// `priority` (vLLM's convention: lower runs earlier; arrival order among equals), except that
// when the pick would pass over the oldest request for the kOldestEvery-th time in a row, the
// oldest goes instead: work of a lower priority (a large batch behind interactive requests)
// keeps at least one admission in kOldestEvery and is never starved.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

#include "runtime/request.h"

namespace moe::runtime {

class WaitingQueue {
 public:
  static constexpr int kOldestEvery = 4;

  void push(Request r) { q_.push_back(std::move(r)); }
  bool empty() const { return q_.empty(); }
  size_t size() const { return q_.size(); }
  // The next request to admit, removed from the queue. The queue must not be empty.
  Request pop();
  // Removes the request of this id; nullopt when none waits.
  std::optional<Request> erase(int64_t id);

 private:
  std::deque<Request> q_;  // arrival order
  int passed_over_ = 0;    // picks in a row that went past the oldest
};

}  // namespace moe::runtime
