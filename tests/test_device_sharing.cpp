// Which ranks share a GPU, from the devices' UUIDs (comm/device_sharing.h), with fake device
// lists on the CPU; run alone and under mpirun -np 2, 4, 8. The case that matters: one visible
// device per rank (Slurm --gpus-per-task, a CUDA_VISIBLE_DEVICES per rank), where every rank
// sees a device count of 1 on a node of several ranks, yet no GPU is shared.
#include <vector>

#include "comm/device_sharing.h"
#include "common/error.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

comm::DeviceUuid uuid(int gpu) {
  comm::DeviceUuid u{};
  u.fill(0xA5);
  u[3] = static_cast<unsigned char>(gpu);  // a GPU per value: only the identity matters
  return u;
}

TEST(DeviceSharing, OneVisibleDevicePerRankIsNotShared) {
  // 4 ranks on one node, each seeing only its own GPU as device 0: distinct UUIDs.
  const std::vector<comm::DeviceUuid> uuids = {uuid(0), uuid(1), uuid(2), uuid(3)};
  for (int me = 0; me < 4; ++me) {
    const comm::DeviceSharing s = comm::device_sharing(uuids, me);
    EXPECT_EQ(s.on_my_device, 1) << "rank " << me;
    EXPECT_EQ(s.most_on_one_device, 1) << "rank " << me;
  }
}

TEST(DeviceSharing, RanksOnTheSameUuidShare) {
  // 4 ranks on 3 GPUs: ranks 0 and 2 on GPU 7, rank 1 on GPU 8, rank 3 on GPU 9.
  const std::vector<comm::DeviceUuid> uuids = {uuid(7), uuid(8), uuid(7), uuid(9)};
  const int want[] = {2, 1, 2, 1};
  for (int me = 0; me < 4; ++me) {
    const comm::DeviceSharing s = comm::device_sharing(uuids, me);
    EXPECT_EQ(s.on_my_device, want[me]) << "rank " << me;
    EXPECT_EQ(s.most_on_one_device, 2) << "rank " << me << ": NCCL must be refused everywhere";
  }
  // Every rank on one GPU (the one-GPU box with mpirun -np 3).
  const std::vector<comm::DeviceUuid> one = {uuid(5), uuid(5), uuid(5)};
  EXPECT_EQ(comm::device_sharing(one, 1).on_my_device, 3);
  EXPECT_EQ(comm::device_sharing(one, 1).most_on_one_device, 3);
}

TEST(DeviceSharing, RankOutsideTheListIsRefused) {
  const std::vector<comm::DeviceUuid> uuids = {uuid(0)};
  EXPECT_THROW(comm::device_sharing(uuids, 1), Error);
  EXPECT_THROW(comm::device_sharing(uuids, -1), Error);
}

// Through the world communicator, every rank presenting a fake UUID.
TEST(DeviceSharing, GatheredOverRanks) {
  const int me = world().rank(), n = world().size();
  // A GPU per rank, as with per-rank visible devices.
  comm::DeviceSharing s = comm::device_sharing(world(), uuid(me));
  EXPECT_EQ(s.on_my_device, 1);
  EXPECT_EQ(s.most_on_one_device, 1);
  // Pairs of ranks on one GPU (rank r on GPU r / 2): a last odd rank has its GPU to itself.
  s = comm::device_sharing(world(), uuid(me / 2));
  EXPECT_EQ(s.on_my_device, (me / 2) * 2 + 1 < n ? 2 : 1);
  EXPECT_EQ(s.most_on_one_device, n >= 2 ? 2 : 1);
  // Every rank on one GPU.
  s = comm::device_sharing(world(), uuid(42));
  EXPECT_EQ(s.on_my_device, n);
  EXPECT_EQ(s.most_on_one_device, n);
}

}  // namespace
}  // namespace moe::test
