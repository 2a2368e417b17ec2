#pragma once
#include <mpi.h>

#include "comm/communicator.h"

namespace moe::comm {

// Collectives over an MPI communicator, on host memory. Each is started non-blocking and
// waited for by polling MPI for a short while, then with short sleeps between polls
// (wait_patiently): a rank that waits for another's compute, or for rank 0's next step while
// the coordinator and clients share its cores, does not hold a core spinning (Open MPI's own
// wait spins, yielding at most, which took a third of a 2-core machine's cycles while serving).
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  void all_to_all_counts(const int64_t* send, int64_t* recv, int n) override;
  using Communicator::all_to_all_counts;
  void all_to_all_v(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    size_t elem_bytes) override;
  void all_reduce(int64_t* data, int n, Op op) override;
  void all_reduce(double* data, int n, Op op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void all_gather(const void* send, void* recv, size_t bytes) override;
  void barrier() override;
  void gather_bytes(const std::string& send, std::vector<std::string>* recv, int root) override;
  void expect_long_waits(bool on) override { long_waits_ = on; }

 private:
  void wait(MPI_Request* req) const;

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  bool long_waits_ = false;
};

}  // namespace moe::comm
