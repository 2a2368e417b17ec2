#pragma once
// MPI start-up and shut-down for a rank: init, world rank and size, and the node-local rank
// (ranks sharing a node, found with MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)), which picks
// the GPU on a multi-GPU node. Also works as a singleton, without mpirun.
#include <memory>

#include "comm/communicator.h"

namespace moe::comm {

class MpiContext {
 public:
  MpiContext(int* argc, char*** argv);
  ~MpiContext();
  MpiContext(const MpiContext&) = delete;
  MpiContext& operator=(const MpiContext&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // A communicator over MPI_COMM_WORLD for host memory.
  std::unique_ptr<Communicator> make_communicator() const;

  // Ends every rank of the job: for a fatal error on one rank, so the others do not wait in a
  // collective forever.
  [[noreturn]] static void abort(int code);

 private:
  int world_rank_ = 0, world_size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool owns_init_ = false;
};

}  // namespace moe::comm
