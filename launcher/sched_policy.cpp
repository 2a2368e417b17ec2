#include "launcher/sched_policy.h"

#include <dirent.h>
#include <sched.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/error.h"

namespace moe::launcher {

namespace {
int to_linux(SchedPolicy p) { return p == SchedPolicy::kBatch ? SCHED_BATCH : SCHED_OTHER; }

// This process's thread ids, from /proc/self/task.
std::vector<pid_t> thread_ids() {
  std::vector<pid_t> ids;
  DIR* d = opendir("/proc/self/task");
  MOE_CHECK(d != nullptr, std::string("cannot list /proc/self/task: ") + std::strerror(errno));
  while (const dirent* e = readdir(d))
    if (e->d_name[0] != '.') ids.push_back(pid_t(std::atoi(e->d_name)));
  closedir(d);
  return ids;
}
}  // namespace

SchedPolicy parse_sched_policy(const std::string& name, const std::string& backend) {
  if (name == "normal") return SchedPolicy::kNormal;
  if (name == "batch") return SchedPolicy::kBatch;
  if (name == "auto") return backend == "cpu" ? SchedPolicy::kBatch : SchedPolicy::kNormal;
  throw InputError("scheduling policy '" + name + "': expected auto, batch or normal");
}

const char* sched_policy_name(SchedPolicy p) {
  return p == SchedPolicy::kBatch ? "batch" : "normal";
}

int set_process_sched_policy(SchedPolicy p) {
  const sched_param prio{};  // both policies take priority 0
  int moved = 0;
  for (pid_t tid : thread_ids()) {
    // A thread that ended since the listing is no longer there to move.
    if (sched_setscheduler(tid, to_linux(p), &prio) == 0) {
      ++moved;
    } else if (errno != ESRCH) {
      MOE_THROW(std::string("cannot move thread ") + std::to_string(tid) + " to SCHED_" +
                (p == SchedPolicy::kBatch ? "BATCH" : "OTHER") + ": " + std::strerror(errno));
    }
  }
  return moved;
}

SchedPolicy current_sched_policy() {
  return sched_getscheduler(0) == SCHED_BATCH ? SchedPolicy::kBatch : SchedPolicy::kNormal;
}

}  // namespace moe::launcher
