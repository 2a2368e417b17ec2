#pragma once
// Which ranks share a GPU, told by the devices' UUIDs, not by counting: with one visible device
// per rank (Slurm --gpus-per-task, or a CUDA_VISIBLE_DEVICES per rank) every rank sees a device
// count of 1 while the node holds several ranks, and a rule such as "local_size > device_count"
// would call those GPUs shared, refuse NCCL and split the memory budget for nothing. Needs no
// CUDA header: the UUID comes from device_uuid() (device_bootstrap.h), or from a test.
#include <array>
#include <vector>

#include "comm/communicator.h"

namespace moe::comm {

using DeviceUuid = std::array<unsigned char, 16>;  // cudaDeviceProp::uuid, as bytes

struct DeviceSharing {
  int on_my_device = 1;        // ranks whose device is this rank's, this rank included
  int most_on_one_device = 1;  // the largest such group over all ranks (1: no GPU is shared)
};

// From every rank's UUID in rank order ([ranks]), what rank `me` sees.
DeviceSharing device_sharing(const std::vector<DeviceUuid>& uuids, int me);

// Collective over `comm`: gathers every rank's UUID and returns what this rank sees; every rank
// gets the same most_on_one_device, so a choice made from it (NCCL or not) is agreed. UUIDs
// name a physical GPU (or MIG instance) and differ across nodes, so gathering over all ranks
// finds the same groups as gathering over each node's ranks, without another communicator.
DeviceSharing device_sharing(Communicator& comm, const DeviceUuid& mine);

}  // namespace moe::comm
