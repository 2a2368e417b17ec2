#pragma once
// The main() of every program that runs as an MPI rank (moe-run, moe-worker,
// moe-bench-dispatch): start MPI, run, and turn an escaping exception into one log line and an
// exit code that says whose fault it was.
#include <exception>

#include "comm/mpi_context.h"
#include "common/error.h"
#include "common/log.h"

namespace moe::launcher {

// Exit codes: 0 done, 1 runtime failure, 2 bad input (flags, files, requests).
constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

// Runs `run` on this rank and returns its exit code. An InputError exits kExitBadInput, any
// other exception kExitFailure.
inline int rank_main(int argc, char** argv, int (*run)(int, char**, comm::MpiContext&)) {
  comm::MpiContext mpi(&argc, &argv);
  // NOTES: an exception reaches here on one rank only, while the other ranks are, or soon will
  // be, waiting in a collective for it; returning would leave them waiting forever. So with
  // more than one rank, MPI_Abort ends the whole job with the same code.
  const auto fail = [&](int code) {
    if (mpi.world_size() > 1) comm::MpiContext::abort(code);
    return code;
  };
  try {
    return run(argc, argv, mpi);
  } catch (const InputError& e) {
    spdlog::error("{}", e.what());
    return fail(kExitBadInput);
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return fail(kExitFailure);
  }
}

}  // namespace moe::launcher
