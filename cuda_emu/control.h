#pragma once
// What a test or a tool may ask of the CUDA emulation (the emulation build's runtime,
// libmoe_cuda_emu): the schedule of a block's threads and the emulator's reports. The same
// settings come from the environment, so a test binary runs differently without a rebuild:
//   MOE_EMU_SCHEDULE=shuffle:SEED   threads picked in a seeded random order at every switch
//                                   point (default: in order, thread 0 first)
//   MOE_EMU_ABORT=1                 abort() at the first report (a core at the finding)
//   MOE_EMU_DEVICE_MEMORY=BYTES     the emulated device's memory (default 8 GiB; K/M/G suffixes)
#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::emu {

enum class Schedule { kInOrder, kShuffled };
// Takes effect at the next launch; a shuffled schedule is seeded with `seed` and the count of
// launches since this call, so a run is repeatable.
void set_schedule(Schedule schedule, uint64_t seed = 0);
Schedule schedule();

// Reports: every finding is printed to stderr as "cuda-emu: <what>: <details>" and kept here.
size_t report_count();
std::string last_report();

// Whether this process runs on the emulation (always true where this header links).
bool active();

}  // namespace moe::emu
