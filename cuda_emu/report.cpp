#include "cuda_emu/report.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "cuda_emu/control.h"

namespace moe::emu {

namespace {
std::mutex report_mu;
std::string last;
std::atomic<size_t> count{0};
}  // namespace

const char* finding_name(Finding f) {
  switch (f) {
    case Finding::kLaunchConfig: return "launch configuration";
    case Finding::kPointerArg: return "kernel argument";
    case Finding::kDeadlock: return "deadlock";
    case Finding::kBarrier: return "barrier";
    case Finding::kWarpMask: return "warp mask";
    case Finding::kFault: return "illegal address";
    case Finding::kTrap: return "trap";
    case Finding::kCopy: return "copy";
    case Finding::kFree: return "free";
    case Finding::kUnsupported: return "unsupported";
  }
  return "?";
}

void report(Finding f, const std::string& details) {
  const std::string line = std::string("cuda-emu: ") + finding_name(f) + ": " + details;
  {
    std::lock_guard<std::mutex> lock(report_mu);
    last = line;
    count.fetch_add(1);
  }
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
  const char* abort_env = std::getenv("MOE_EMU_ABORT");
  if (abort_env && std::strcmp(abort_env, "1") == 0) std::abort();
}

size_t report_count() { return count.load(); }

std::string last_report() {
  std::lock_guard<std::mutex> lock(report_mu);
  return last;
}

bool active() { return true; }

}  // namespace moe::emu
