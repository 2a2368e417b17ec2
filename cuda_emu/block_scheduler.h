#pragma once
// Runs a launch's grid on the CPU: blocks one after another, the threads of a block as fibers
// (fiber.h) that run until they reach a barrier or a warp intrinsic (device_api.h), where they
// wait until every thread they name has arrived and then exchange values in lockstep, as a
// GPU's threads do. What a GPU would hang on or leave undefined is reported (report.h) and
// fails the launch:
//   - a block barrier that some thread can never reach (it exited, or waits elsewhere);
//   - threads of a block meeting at different barriers;
//   - a warp intrinsic whose mask names lanes that exited, or not the calling lane, or a
//     shuffle reading a lane the mask does not name;
//   - threads that can never go on (deadlock), each with the line it waits at;
//   - an illegal address (a fault inside the kernel).
// The threads of a block are resumed in thread order, or in a seeded random order
// (control.h: Schedule::kShuffled), which varies what runs between two switch points.
#include <cuda_runtime.h>

#include <string>

#include "cuda_emu/launch.h"

namespace moe::emu {

// What the probe of a kernel's first statement told (launch.h: MOE_EMU_KERNEL_ENTRY).
struct KernelInfo {
  std::string name;  // as the source spells it, with template arguments
  std::string file;
  int line = 0;
  int max_threads = 0;  // __launch_bounds__; 0 where none
};

// The seed of the shuffled schedule (control.h).
uint64_t schedule_seed();

// Runs every block of `r`; cudaSuccess, or the error a GPU would give (after a report).
cudaError_t run_grid(const KernelInfo& kernel, const LaunchRequest& r, uint64_t launch_ordinal);

}  // namespace moe::emu
