#pragma once
// The emulator's findings: what a GPU would crash on, hang on or hide, each printed once to
// stderr with the kernel, the place and the values that show it, counted, and kept for tests
// (control.h). MOE_EMU_ABORT=1 aborts at the first one.
#include <string>

namespace moe::emu {

enum class Finding {
  kLaunchConfig,  // a launch over the device's limits or the kernel's __launch_bounds__
  kPointerArg,    // a kernel pointer argument that is not device memory
  kDeadlock,      // threads that can never go on (a barrier or warp intrinsic not reached)
  kBarrier,       // a block barrier met at different places, or after threads exited
  kWarpMask,      // a warp intrinsic's mask naming lanes that exited, or not the caller
  kFault,         // an illegal address inside a kernel
  kTrap,          // a kernel that called __trap()
  kCopy,          // a copy outside an allocation, or in the wrong direction
  kFree,          // freeing what is not an allocation
  kUnsupported,   // a CUDA call the emulation does not have
};

const char* finding_name(Finding f);
void report(Finding f, const std::string& details);

}  // namespace moe::emu
