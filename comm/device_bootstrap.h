#pragma once
// Binding a rank to its GPU: the node-local rank (MpiContext::local_rank) picks the device.
// Needs no CUDA header, so a caller can bind without compiling against CUDA.
#include "comm/device_sharing.h"

namespace moe::comm {

// Sets the calling thread's CUDA device to local_rank % device_count and returns it. Throws
// moe::Error "no CUDA device" where none is visible. Logs which rank took which device. Whether
// devices are shared is not told here (a device count cannot tell it: each rank may see only its
// own): gather device_uuid() with device_sharing().
int select_device(int local_rank);

// The UUID of CUDA device `device` (cudaDeviceProp::uuid).
DeviceUuid device_uuid(int device);

}  // namespace moe::comm
