#include "comm/mpi_communicator.h"

#include <sys/prctl.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <thread>
#include <vector>

#include "common/check.h"

namespace moe::comm {

namespace {
MPI_Op to_mpi(Communicator::Op op) {
  switch (op) {
    case Communicator::Op::kSum: return MPI_SUM;
    case Communicator::Op::kMax: return MPI_MAX;
    case Communicator::Op::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

// Polls a started collective to completion: MPI_Test for up to kSpin (most waits inside a
// step are shorter: they cost what a blocking call costs), then sleeps between polls, doubling
// from kFirstSleep to kMaxSleep (a wait within a step ends at most about kMaxSleep late). Where
// long waits are expected (an idle rank waiting for rank 0 to find work) there is no spin and
// the sleeps go from kIdleFirstSleep to kIdleSleep: an idle rank wakes a few hundred times a
// second rather than 20,000 (27% of a core before; each MPI_Test costs tens of microseconds),
// and the first step after idleness starts at most about kIdleSleep late.
constexpr auto kSpin = std::chrono::microseconds(50);
constexpr auto kFirstSleep = std::chrono::microseconds(5);
constexpr auto kMaxSleep = std::chrono::microseconds(50);
constexpr auto kIdleFirstSleep = std::chrono::microseconds(500);
constexpr auto kIdleSleep = std::chrono::microseconds(5000);

void wait_patiently(MPI_Request* req, bool long_wait) {
  using Clock = std::chrono::steady_clock;
  int done = 0;
  const auto spin_until = Clock::now() + (long_wait ? std::chrono::microseconds(0) : kSpin);
  do {
    MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return;
  } while (Clock::now() < spin_until);
  const auto max_sleep = long_wait ? kIdleSleep : kMaxSleep;
  auto sleep = long_wait ? kIdleFirstSleep : kFirstSleep;
  for (;;) {
    std::this_thread::sleep_for(sleep);
    MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    sleep = std::min(sleep * 2, max_sleep);
  }
}

int to_int(int64_t v, const char* what) {
  MOE_CHECK(v >= 0 && v <= INT_MAX, std::string(what) + " = " + std::to_string(v) +
                                        " does not fit MPI's int counts");
  return int(v);
}
}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
  // The sleeps of wait_patiently are a few microseconds: without this the kernel may stretch
  // each by its default 50 us of timer slack. (This thread's: the one that runs collectives.)
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
}

void MpiCommunicator::wait(MPI_Request* req) const {
  wait_patiently(req, long_waits_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_to_all_counts(const int64_t* send, int64_t* recv, int n) {
  MOE_CHECK(n >= 1, "all_to_all_counts needs n >= 1 counts per peer");
  MPI_Request req;
  MPI_CHECK(MPI_Ialltoall(send, n, MPI_INT64_T, recv, n, MPI_INT64_T, comm_, &req));
  wait(&req);
}

void MpiCommunicator::all_to_all_v(const void* send, const int64_t* send_counts,
                                   const int64_t* send_displs, void* recv,
                                   const int64_t* recv_counts, const int64_t* recv_displs,
                                   size_t elem_bytes) {
  // Counts in elements of a contiguous type of elem_bytes keep MPI's int counts for large rows.
  MPI_Datatype row;
  MPI_CHECK(MPI_Type_contiguous(to_int(int64_t(elem_bytes), "element bytes"), MPI_BYTE, &row));
  MPI_CHECK(MPI_Type_commit(&row));
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  for (int i = 0; i < size_; ++i) {
    sc[i] = to_int(send_counts[i], "send count");
    sd[i] = to_int(send_displs[i], "send displacement");
    rc[i] = to_int(recv_counts[i], "recv count");
    rd[i] = to_int(recv_displs[i], "recv displacement");
  }
  MPI_Request req;
  const int rc_mpi = MPI_Ialltoallv(send, sc.data(), sd.data(), row, recv, rc.data(), rd.data(),
                                    row, comm_, &req);
  if (rc_mpi == MPI_SUCCESS) wait(&req);
  MPI_Type_free(&row);
  MPI_CHECK(rc_mpi);
}

void MpiCommunicator::all_reduce(int64_t* data, int n, Op op) {
  MPI_Request req;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, n, MPI_INT64_T, to_mpi(op), comm_, &req));
  wait(&req);
}

void MpiCommunicator::all_reduce(double* data, int n, Op op) {
  MPI_Request req;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, n, MPI_DOUBLE, to_mpi(op), comm_, &req));
  wait(&req);
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  MPI_Request req;
  MPI_CHECK(MPI_Ibcast(data, to_int(int64_t(bytes), "broadcast bytes"), MPI_BYTE, root, comm_,
                       &req));
  wait(&req);
}

void MpiCommunicator::all_gather(const void* send, void* recv, size_t bytes) {
  const int n = to_int(int64_t(bytes), "all_gather bytes");
  MPI_Request req;
  MPI_CHECK(MPI_Iallgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_, &req));
  wait(&req);
}

void MpiCommunicator::barrier() {
  MPI_Request req;
  MPI_CHECK(MPI_Ibarrier(comm_, &req));
  wait(&req);
}

void MpiCommunicator::gather_bytes(const std::string& send, std::vector<std::string>* recv,
                                   int root) {
  const int n = to_int(int64_t(send.size()), "gather_bytes length");
  std::vector<int> lens(rank_ == root ? size_ : 0), displs(lens.size());
  MPI_Request req;
  MPI_CHECK(MPI_Igather(&n, 1, MPI_INT, lens.data(), 1, MPI_INT, root, comm_, &req));
  wait(&req);
  std::string all;
  if (rank_ == root) {
    int64_t total = 0;
    for (int i = 0; i < size_; ++i) {
      displs[i] = to_int(total, "gather_bytes total");
      total += lens[i];
    }
    all.resize(size_t(to_int(total, "gather_bytes total")));
  }
  MPI_CHECK(MPI_Igatherv(send.data(), n, MPI_BYTE, all.data(), lens.data(), displs.data(),
                         MPI_BYTE, root, comm_, &req));
  wait(&req);
  if (rank_ != root) return;
  recv->resize(size_t(size_));
  for (int i = 0; i < size_; ++i) (*recv)[i] = all.substr(size_t(displs[i]), size_t(lens[i]));
}

}  // namespace moe::comm
