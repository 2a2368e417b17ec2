#pragma once
// Binding a rank to its GPU: the node-local rank (MpiContext::local_rank) picks the device.
// Needs no CUDA header, so a caller can bind without compiling against CUDA.

namespace moe::comm {

// Sets the calling thread's CUDA device to local_rank % device_count and returns it. Throws
// moe::Error "no CUDA device" where none is visible. Logs which rank took which device. With
// local_size (ranks on this node; 0 = not known) every rank can tell, and warns, whether devices
// are shared (local_size > device_count): then NCCL cannot be used (NcclCommunicator::usable)
// and device buffers go through StagedMpiCommunicator instead. Without it only the ranks past
// the last device can tell.
int select_device(int local_rank, int local_size = 0);

}  // namespace moe::comm
