// The device-memory communicators against the host one (run alone and under mpirun -np 2).
//
// Stamped rows: rank r sends rank p a count of c(r, p) = (r + 2p) % 3 + (r == p) rows of kCols
// floats, row j being [r, p, j, 1000 r + 100 p + j, ...]. The send buffer leaves a gap of one
// row before every peer's segment, and the receive buffer one after, so the segment copies of
// the staged path are exercised on a non-packed layout. Every received row must carry its
// sender, this rank, its index, and land where the receive displacements say; the gaps must be
// left untouched. The same exchange through MpiCommunicator on host memory must give the same
// bytes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comm/device_bootstrap.h"
#include "comm/staged_mpi_communicator.h"
#include "common/check.h"
#include "tests/support/test_env.h"
#ifdef MOE_HAVE_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace moe::test {
namespace {

constexpr int kCols = 6;
constexpr float kGap = -7.0f;  // what the gaps hold before and after the exchange

int64_t count(int from, int to) { return (from + 2 * to) % 3 + (from == to); }

struct Layout {
  std::vector<int64_t> send_counts, send_displs, recv_counts, recv_displs;
  int64_t send_rows = 0, recv_rows = 0;  // buffer sizes in rows, gaps included
};

// Rows from rank `from` to rank `to`: count_of(from, to).
template <class Count>
Layout make_layout_of(int me, int n, Count count_of) {
  Layout l;
  for (int p = 0; p < n; ++p) {
    l.send_counts.push_back(count_of(me, p));
    l.recv_counts.push_back(count_of(p, me));
  }
  for (int p = 0; p < n; ++p) {
    l.send_displs.push_back(l.send_rows + 1);  // a gap row before each segment
    l.send_rows += 1 + l.send_counts[p];
    l.recv_displs.push_back(l.recv_rows);  // a gap row after each segment
    l.recv_rows += l.recv_counts[p] + 1;
  }
  return l;
}

Layout make_layout(int me, int n, int round) {
  return make_layout_of(me, n, [round](int from, int to) { return count(from, to) + round; });
}

std::vector<float> make_send(int me, int n, const Layout& l) {
  std::vector<float> v(size_t(l.send_rows) * kCols, kGap);
  for (int p = 0; p < n; ++p)
    for (int64_t j = 0; j < l.send_counts[p]; ++j) {
      float* row = v.data() + size_t(l.send_displs[p] + j) * kCols;
      row[0] = float(me);
      row[1] = float(p);
      row[2] = float(j);
      for (int c = 3; c < kCols; ++c) row[c] = float(1000 * me + 100 * p + j + c);
    }
  return v;
}

// Every received row stamped by its sender for this rank, in order; every gap untouched.
::testing::AssertionResult check_received(const std::vector<float>& got, int me, int n,
                                          const Layout& l) {
  std::vector<bool> written(size_t(l.recv_rows), false);
  for (int p = 0; p < n; ++p)
    for (int64_t j = 0; j < l.recv_counts[p]; ++j) {
      const int64_t r = l.recv_displs[p] + j;
      written[size_t(r)] = true;
      const float* row = got.data() + size_t(r) * kCols;
      if (row[0] != float(p) || row[1] != float(me) || row[2] != float(j))
        return ::testing::AssertionFailure()
               << "rank " << me << " row " << r << " should be row " << j << " from rank " << p
               << ", carries [" << row[0] << ", " << row[1] << ", " << row[2] << "]";
      for (int c = 3; c < kCols; ++c)
        if (row[c] != float(1000 * p + 100 * me + j + c))
          return ::testing::AssertionFailure() << "rank " << me << " row " << r << " column "
                                               << c << " corrupted: " << row[c];
    }
  for (int64_t r = 0; r < l.recv_rows; ++r)
    if (!written[size_t(r)])
      for (int c = 0; c < kCols; ++c)
        if (got[size_t(r) * kCols + c] != kGap)
          return ::testing::AssertionFailure()
                 << "rank " << me << " gap row " << r << " was written: "
                 << got[size_t(r) * kCols + c];
  return ::testing::AssertionSuccess();
}

class CommCuda : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    // Agreed over the ranks, so that either all skip or none does (a collective follows).
    int64_t have = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    world().all_reduce(&have, 1, comm::Communicator::Op::kMin);
    if (!have) GTEST_SKIP() << "no CUDA device: device communicator tests skipped";
    device_count_ = n;
    const int device = comm::select_device(mpi().local_rank());
    sharing_ = comm::device_sharing(world(), comm::device_uuid(device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  // Runs three exchanges of growing size (the staging buffers grow between them) through
  // `dev` on device memory and checks each against the stamps and the host exchange.
  void exchange_and_check(comm::Communicator& dev) {
    const int me = world().rank(), n = world().size();
    for (int round = 0; round < 3; ++round) exchange_once(dev, make_layout(me, n, round), round);
    // The host-data collectives pass through: a sum of ranks.
    int64_t sum = me;
    dev.all_reduce(&sum, 1, comm::Communicator::Op::kSum);
    EXPECT_EQ(sum, int64_t(n) * (n - 1) / 2);
  }

  // Exchanges where peers send nothing: an all-zero exchange (every count 0, so no send or
  // receive is posted at all), then one where a rank sends nothing to itself or to the peers of
  // its own parity, and 1 + rank rows to the others (at 1 rank: all zero again). Each must
  // leave every gap untouched.
  void zero_counts_and_check(comm::Communicator& dev) {
    const int me = world().rank(), n = world().size();
    exchange_once(dev, make_layout_of(me, n, [](int, int) { return int64_t(0); }), 0);
    exchange_once(dev,
                  make_layout_of(me, n,
                                 [](int from, int to) {
                                   return (from + to) % 2 == 1 ? int64_t(1 + from) : int64_t(0);
                                 }),
                  1);
  }

  // One exchange of layout `l` through `dev` on device memory, checked against the stamps and
  // against the same exchange through the host communicator.
  void exchange_once(comm::Communicator& dev, const Layout& l, int round) {
    const int me = world().rank(), n = world().size();
    const std::vector<float> send = make_send(me, n, l);
    std::vector<float> host_recv(size_t(l.recv_rows) * kCols, kGap);
    world().all_to_all_v(send.data(), l.send_counts.data(), l.send_displs.data(),
                         host_recv.data(), l.recv_counts.data(), l.recv_displs.data(),
                         kCols * sizeof(float));

    float *d_send = nullptr, *d_recv = nullptr;
    CUDA_CHECK(cudaMalloc(&d_send, send.size() * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&d_recv, host_recv.size() * sizeof(float)));
    const std::vector<float> gaps(host_recv.size(), kGap);
    // On the exchange's stream: it is non-blocking, so nothing orders it after a copy on the
    // legacy stream, and a plain cudaMemcpy from pageable memory may return before its DMA
    // has landed.
    CUDA_CHECK(cudaMemcpyAsync(d_send, send.data(), send.size() * sizeof(float),
                               cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaMemcpyAsync(d_recv, gaps.data(), gaps.size() * sizeof(float),
                               cudaMemcpyHostToDevice, stream_));
    dev.all_to_all_v(d_send, l.send_counts.data(), l.send_displs.data(), d_recv,
                     l.recv_counts.data(), l.recv_displs.data(), kCols * sizeof(float));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<float> got(host_recv.size());
    CUDA_CHECK(cudaMemcpyAsync(got.data(), d_recv, got.size() * sizeof(float),
                               cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    cudaFree(d_send);
    cudaFree(d_recv);

    EXPECT_TRUE(check_received(host_recv, me, n, l)) << "host MPI, round " << round;
    EXPECT_TRUE(check_received(got, me, n, l)) << dev.name() << ", round " << round;
    EXPECT_EQ(got, host_recv) << dev.name() << " differs from host MPI, round " << round;
  }

  int device_count_ = 0;
  comm::DeviceSharing sharing_;
  cudaStream_t stream_ = nullptr;
};

TEST_F(CommCuda, StagedMpiMovesDeviceRowsLikeHostMpi) {
  comm::StagedMpiCommunicator dev(world(), stream_);
  exchange_and_check(dev);
  // Alone, a rank's rows never leave the device; with peers every exchanged row is staged.
  if (world().size() == 1)
    EXPECT_EQ(dev.staged_bytes(), 0) << "one rank's rows went through host memory";
  else
    EXPECT_GT(dev.staged_bytes(), 0);
}

TEST_F(CommCuda, StagedMpiZeroCountPeersAndAllZeroExchange) {
  comm::StagedMpiCommunicator dev(world(), stream_);
  zero_counts_and_check(dev);
}

TEST_F(CommCuda, NcclZeroCountPeersAndAllZeroExchange) {
#ifndef MOE_HAVE_NCCL
  GTEST_SKIP() << "built without NCCL";
#else
  if (!comm::NcclCommunicator::usable(sharing_.most_on_one_device))
    GTEST_SKIP() << sharing_.most_on_one_device << " ranks on one GPU: NCCL refuses them";
  comm::NcclCommunicator dev(world(), stream_);
  zero_counts_and_check(dev);
#endif
}

TEST_F(CommCuda, NcclMovesDeviceRowsLikeHostMpi) {
#ifndef MOE_HAVE_NCCL
  GTEST_SKIP() << "built without NCCL";
#else
  // most_on_one_device is gathered over every rank: all skip or none does.
  if (!comm::NcclCommunicator::usable(sharing_.most_on_one_device))
    GTEST_SKIP() << sharing_.most_on_one_device
                 << " ranks on one GPU: NCCL refuses two ranks on one GPU (the staged test "
                    "covers this)";
  comm::NcclCommunicator dev(world(), stream_);
  exchange_and_check(dev);
#endif
}

// Where NCCL cannot be set up on a rank (here: no GPU to join with), every rank fails with an
// error, and none is left waiting inside NCCL for the others: the set-up's phases are agreed
// and the join is non-blocking with a time limit. Runs where there is NO device (the CPU
// machines of CI), alone and under mpirun.
TEST(NcclSetUp, FailsOnEveryRankInsteadOfHanging) {
#ifndef MOE_HAVE_NCCL
  GTEST_SKIP() << "built without NCCL";
#else
  int n = 0;
  int64_t have = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  world().all_reduce(&have, 1, comm::Communicator::Op::kMax);
  if (have) GTEST_SKIP() << "a CUDA device is present: this checks the failure without one";
  std::string err;
  try {
    comm::NcclCommunicator dev(world(), nullptr);
  } catch (const std::exception& e) {
    err = e.what();
  }
  EXPECT_FALSE(err.empty()) << "a NCCL communicator was made without a GPU";
  // Every rank got here, and the host communicator still works.
  int64_t failed = !err.empty();
  world().all_reduce(&failed, 1, comm::Communicator::Op::kSum);
  EXPECT_EQ(failed, world().size()) << err;
#endif
}

}  // namespace
}  // namespace moe::test
