// The host communicator's gather_bytes (run alone and under mpirun -np 2, 4, 8): rank r sends
// r * 37 bytes stamped with its rank (rank 0 nothing at all), and the root receives each rank's
// bytes, whole and in rank order; the other ranks' vectors stay untouched. Also the per-peer
// blocks of all_to_all_counts: rank s sends peer d the block [s, d, s * 100 + d].
#include <string>
#include <vector>

#include "tests/support/test_env.h"

namespace moe::test {
namespace {

TEST(Comm, GatherBytesBringsEveryRanksBytesToTheRoot) {
  comm::Communicator& comm = world();
  const int me = comm.rank(), N = comm.size();
  for (int root : {0, N - 1}) {
    const std::string mine(size_t(me) * 37, char('A' + me % 26));
    std::vector<std::string> got = {"untouched"};
    comm.gather_bytes(mine, &got, root);
    if (me != root) {
      EXPECT_EQ(got, std::vector<std::string>{"untouched"});
      continue;
    }
    ASSERT_EQ(got.size(), size_t(N));
    for (int r = 0; r < N; ++r)
      EXPECT_EQ(got[size_t(r)], std::string(size_t(r) * 37, char('A' + r % 26))) << "rank " << r;
  }
}

TEST(Comm, AllToAllCountsCarriesABlockPerPeer) {
  comm::Communicator& comm = world();
  const int me = comm.rank(), N = comm.size();
  std::vector<int64_t> send, recv(size_t(N) * 3, -1);
  for (int d = 0; d < N; ++d) send.insert(send.end(), {me, d, me * 100 + d});
  comm.all_to_all_counts(send.data(), recv.data(), 3);
  for (int s = 0; s < N; ++s) {
    EXPECT_EQ(recv[size_t(s) * 3 + 0], s);
    EXPECT_EQ(recv[size_t(s) * 3 + 1], me);
    EXPECT_EQ(recv[size_t(s) * 3 + 2], s * 100 + me);
  }
}

}  // namespace
}  // namespace moe::test
