#pragma once
// Set-up work that may fail on some ranks only (a file one node cannot read, a GPU that is out
// of memory) followed by collectives: a rank that threw alone would leave the others waiting in
// the next collective forever. collective_step runs the work on every rank and then agrees on
// the outcome, so either every rank goes on or every rank throws the same error.
#include <exception>
#include <utility>

#include "comm/communicator.h"

namespace moe::runtime {

// Every rank calls it with what its own step threw (null for success). Returns where no rank
// failed; otherwise every rank throws the error of the lowest failing rank (its message,
// prefixed "rank R: " when there are several ranks; an InputError stays an InputError).
void agree_on_failure(comm::Communicator& comm, std::exception_ptr local);

template <class F>
void collective_step(comm::Communicator& comm, F&& step) {
  std::exception_ptr err;
  try {
    std::forward<F>(step)();
  } catch (...) {
    err = std::current_exception();
  }
  agree_on_failure(comm, err);
}

}  // namespace moe::runtime
