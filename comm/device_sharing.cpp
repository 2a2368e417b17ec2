#include "comm/device_sharing.h"

#include <algorithm>
#include <map>
#include <string>

#include "common/error.h"

namespace moe::comm {

DeviceSharing device_sharing(const std::vector<DeviceUuid>& uuids, int me) {
  MOE_CHECK(me >= 0 && size_t(me) < uuids.size(),
            "rank " + std::to_string(me) + " of " + std::to_string(uuids.size()));
  std::map<DeviceUuid, int> ranks_on;
  for (const DeviceUuid& u : uuids) ++ranks_on[u];
  DeviceSharing s;
  s.on_my_device = ranks_on[uuids[size_t(me)]];
  for (const auto& [uuid, n] : ranks_on) s.most_on_one_device = std::max(s.most_on_one_device, n);
  return s;
}

DeviceSharing device_sharing(Communicator& comm, const DeviceUuid& mine) {
  std::vector<DeviceUuid> all(size_t(comm.size()));
  comm.all_gather(mine.data(), all.data(), sizeof(DeviceUuid));
  return device_sharing(all, comm.rank());
}

}  // namespace moe::comm
