#include "comm/device_communicator.h"

#include <string>

#include "common/error.h"

namespace moe::comm {

void DeviceCommunicator::check_layout(const int64_t* send_counts, const int64_t* send_displs,
                                      const int64_t* recv_counts,
                                      const int64_t* recv_displs) const {
  for (int p = 0; p < size(); ++p)
    MOE_CHECK(send_counts[p] >= 0 && send_displs[p] >= 0 && recv_counts[p] >= 0 &&
                  recv_displs[p] >= 0,
              "negative count or displacement for peer " + std::to_string(p));
}

}  // namespace moe::comm
