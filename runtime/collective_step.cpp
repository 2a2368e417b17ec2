#include "runtime/collective_step.h"

#include <string>
#include <vector>

#include "common/error.h"

namespace moe::runtime {

void agree_on_failure(comm::Communicator& comm, std::exception_ptr local) {
  const int n = comm.size(), me = comm.rank();
  int64_t first = local ? me : n;  // the lowest failing rank, or n for none
  comm.all_reduce(&first, 1, comm::Communicator::Op::kMin);
  if (first == n) return;

  // The failing rank tells the others its message and whether it was the user's input.
  std::string msg;
  int64_t input = 0;
  if (me == first) {
    try {
      std::rethrow_exception(local);
    } catch (const InputError& e) {
      msg = e.what();
      input = 1;
    } catch (const std::exception& e) {
      msg = e.what();
    } catch (...) {
      msg = "unknown error";
    }
  }
  int64_t len = int64_t(msg.size());
  const int root = int(first);
  comm.broadcast(&len, sizeof len, root);
  comm.broadcast(&input, sizeof input, root);
  msg.resize(size_t(len));
  if (len > 0) comm.broadcast(msg.data(), size_t(len), root);
  if (n > 1) msg = "rank " + std::to_string(first) + ": " + msg;
  if (input) throw InputError(msg);
  throw std::runtime_error(msg);
}

}  // namespace moe::runtime
