#include "comm/mpi_context.h"

#include <mpi.h>

#include <cstdlib>

#include "comm/mpi_communicator.h"
#include "common/check.h"

namespace moe::comm {

MpiContext::MpiContext(int* argc, char*** argv) {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    // Our collectives wait by polling MPI_Test and then sleeping (MpiCommunicator): Open MPI's
    // yield when idle (which mpirun turns on when ranks outnumber cores) would make every poll
    // a sched_yield, and the polling rank then takes its core back from the very processes it
    // waits for (moe-bench-serving on 2 cores: 1300 instead of 1700 req/s).
    setenv("OMPI_MCA_mpi_yield_when_idle", "0", 1);
    int provided = 0;
    // One thread calls MPI; FUNNELED leaves the others (BLAS, gRPC) free.
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_init_ = true;
  }
  // Errors come back as codes and become exceptions with MPI's own message (MPI_CHECK).
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  MPI_Comm local;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank_,
                                MPI_INFO_NULL, &local));
  MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  MPI_CHECK(MPI_Comm_size(local, &local_size_));
  MPI_Comm_free(&local);
}

MpiContext::~MpiContext() {
  if (owns_init_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
}

std::unique_ptr<Communicator> MpiContext::make_communicator() const {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

void MpiContext::abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace moe::comm
