// A launch as the emulated device takes it (launch.h): the probe of the kernel's first
// statement, the checks a GPU makes at launch (the grid and block against the device's limits
// and the kernel's __launch_bounds__: a bad one fails the launch, as cudaGetLastError then
// says), the check a GPU does not make (pointer arguments that are not device memory, which on
// a GPU fault inside the kernel or read another buffer), then the grid onto its stream.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "cuda_emu/block_scheduler.h"
#include "cuda_emu/control.h"
#include "cuda_emu/device.h"
#include "cuda_emu/report.h"

namespace moe::emu {

namespace {

thread_local KernelInfo* tl_probe = nullptr;
// Launches since the schedule was last set: with its seed, what a shuffled schedule starts from.
uint64_t launch_ordinal = 0;

struct ScheduleSetting {
  Schedule schedule = Schedule::kInOrder;
  uint64_t seed = 0;
  ScheduleSetting() {
    // MOE_EMU_SCHEDULE=shuffle or shuffle:SEED
    const char* v = std::getenv("MOE_EMU_SCHEDULE");
    if (v && std::strncmp(v, "shuffle", 7) == 0) {
      schedule = Schedule::kShuffled;
      if (v[7] == ':') seed = std::strtoull(v + 8, nullptr, 10);
    }
  }
};
ScheduleSetting& schedule_setting() {
  static ScheduleSetting s;
  return s;
}

// "void ns::{anonymous}::attention_kernel(const float*, ...) [with int kPerLane = 4; ...]"
//   -> "attention_kernel [with int kPerLane = 4; ...]"
std::string short_name(const char* pretty) {
  std::string s = pretty;
  std::string with;
  const size_t w = s.find(" [with ");
  if (w != std::string::npos) with = s.substr(w);
  size_t paren = s.find('(');
  std::string head = s.substr(0, paren);
  const size_t colon = head.rfind("::");
  if (colon != std::string::npos) head = head.substr(colon + 2);
  const size_t space = head.rfind(' ');
  if (space != std::string::npos) head = head.substr(space + 1);
  return head + with;
}

std::string dims(const dim3& d) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", d.x, d.y, d.z);
  return buf;
}

std::string site_of(const LaunchRequest& r) {
  std::string f = r.site.file_name();
  const size_t slash = f.rfind('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(r.site.line());
}

// What a GPU refuses at launch, or "".
std::string config_problem(const KernelInfo& k, const LaunchRequest& r, cudaError_t* err) {
  const dim3 b = r.block, g = r.grid;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  *err = cudaErrorInvalidConfiguration;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0)
    return "a block of " + dims(b) + " in a grid of " + dims(g) + ": every dimension must be > 0";
  if (threads > uint64_t(kMaxThreadsPerBlock) || b.x > unsigned(kMaxThreadsPerBlock) ||
      b.y > unsigned(kMaxThreadsPerBlock) || b.z > unsigned(kMaxBlockDimZ))
    return "a block of " + dims(b) + " = " + std::to_string(threads) +
           " threads; the device takes at most " + std::to_string(kMaxThreadsPerBlock) +
           " (and z <= " + std::to_string(kMaxBlockDimZ) + ")";
  if (g.x > 0x7fffffffu || g.y > kMaxGridDimYZ || g.z > kMaxGridDimYZ)
    return "a grid of " + dims(g) + "; the device takes x < 2^31 and y, z <= 65535";
  if (r.shared_bytes > kMaxSharedPerBlock)
    return std::to_string(r.shared_bytes) + " bytes of dynamic shared memory; a block gets " +
           std::to_string(kMaxSharedPerBlock) + " without cudaFuncSetAttribute";
  if (k.max_threads > 0 && threads > uint64_t(k.max_threads)) {
    *err = cudaErrorLaunchOutOfResources;
    return "a block of " + std::to_string(threads) + " threads for a kernel declared " +
           "__launch_bounds__(" + std::to_string(k.max_threads) + ")";
  }
  return "";
}

}  // namespace

void set_schedule(Schedule s, uint64_t seed) {
  std::lock_guard<std::recursive_mutex> lock(Device::get().mu);
  schedule_setting().schedule = s;
  schedule_setting().seed = seed;
  launch_ordinal = 0;
}
Schedule schedule() { return schedule_setting().schedule; }
uint64_t schedule_seed() { return schedule_setting().seed; }

namespace detail {

bool kernel_entry(const char* pretty, const char* file, int line, int max_threads) noexcept {
  if (!tl_probe) return false;
  tl_probe->name = short_name(pretty);
  tl_probe->file = file;
  const size_t slash = tl_probe->file.rfind('/');
  if (slash != std::string::npos) tl_probe->file = tl_probe->file.substr(slash + 1);
  tl_probe->line = line;
  tl_probe->max_threads = max_threads;
  return true;
}

void launch(LaunchRequest&& r) {
  Device& d = Device::get();
  std::lock_guard<std::recursive_mutex> lock(d.mu);
  if (d.sticky != cudaSuccess) {
    fail(d.sticky);
    return;
  }
  auto k = std::make_shared<KernelInfo>();
  tl_probe = k.get();
  r.run();  // returns at the kernel's first statement
  tl_probe = nullptr;

  cudaError_t err = cudaSuccess;
  const std::string bad = config_problem(*k, r, &err);
  if (!bad.empty()) {
    report(Finding::kLaunchConfig,
           "kernel " + k->name + " launched at " + site_of(r) + " with " + bad);
    fail(err);
    return;
  }
  for (const PointerArg& p : r.pointers) {
    if (!p.value || d.memory.find(p.value, 0, /*end_too=*/true)) continue;
    report(Finding::kPointerArg,
           "kernel " + k->name + " launched at " + site_of(r) + ": argument " +
               std::to_string(p.index) + " points to memory that is not the device's (" +
               d.memory.describe(p.value) + "); on a GPU the kernel would fault or read " +
               "another buffer");
    // A GPU takes the launch and faults while it runs: the context breaks at the next wait.
    d.queue.enqueue(r.stream, [&d] {
      if (d.sticky == cudaSuccess) d.sticky = cudaErrorIllegalAddress;
    });
    return;
  }
  const uint64_t mine = launch_ordinal++;
  auto req = std::make_shared<LaunchRequest>(std::move(r));
  d.queue.enqueue(req->stream, [&d, k, req, mine] {
    if (d.sticky != cudaSuccess) return;  // a broken context runs nothing more
    const cudaError_t e = run_grid(*k, *req, mine);
    if (e != cudaSuccess) d.sticky = e;
  });
}

}  // namespace detail

}  // namespace moe::emu
