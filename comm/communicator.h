#pragma once
// The collectives the runtime needs, behind one interface: MPI on CPUs, NCCL on GPUs.
// Every rank calls every collective in the same order; a rank with nothing to send still calls
// with zero counts (lockstep), which is what keeps ranks with uneven work from hanging.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moe::comm {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;

  // recv[i * n + j] = what rank i put in its send[rank() * n + j]: n int64 per peer, e.g. row
  // counts, or a row count followed by per-expert counts.
  virtual void all_to_all_counts(const int64_t* send, int64_t* recv, int n) = 0;  // [size() * n]
  void all_to_all_counts(const int64_t* send, int64_t* recv) { all_to_all_counts(send, recv, 1); }

  // Variable all-to-all of fixed-size elements (rows): send_counts[i] elements from
  // send + send_displs[i] go to rank i; recv_counts[i] elements from rank i land at
  // recv + recv_displs[i]. Counts and displacements are in elements of elem_bytes.
  virtual void all_to_all_v(const void* send, const int64_t* send_counts,
                            const int64_t* send_displs, void* recv, const int64_t* recv_counts,
                            const int64_t* recv_displs, size_t elem_bytes) = 0;

  // Prepares for all_to_all_v exchanges of up to `bytes` sent and `bytes` received, so that none
  // allocates later (a communicator staging through host memory sizes its buffers); a larger
  // exchange still works. Nothing to do for most.
  virtual void reserve_exchange(size_t bytes) { (void)bytes; }

  enum class Op { kSum, kMax, kMin };
  virtual void all_reduce(int64_t* data, int n, Op op) = 0;
  virtual void all_reduce(double* data, int n, Op op) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Every rank's `bytes` gathered on every rank, in rank order: [size() * bytes].
  virtual void all_gather(const void* send, void* recv, size_t bytes) = 0;
  // Every rank's `send`, of any length, to `root` alone: recv[i] is rank i's (left untouched on
  // the other ranks). One exchange of lengths and one of the bytes, whatever the rank count.
  virtual void gather_bytes(const std::string& send, std::vector<std::string>* recv, int root) = 0;
  virtual void barrier() = 0;

  // A hint for the collectives that follow: they may wait long for another rank (a worker loop
  // with no work, waiting for rank 0 to find some), so a communicator that polls may poll
  // seldom. Off until set; nothing to do for most.
  virtual void expect_long_waits(bool on) { (void)on; }
};

}  // namespace moe::comm
