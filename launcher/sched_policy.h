#pragma once
// The Linux scheduling policy of a rank's threads.
//
// On a host that the ranks share with the coordinator and its clients, every wake-up of a rank
// thread (after a sleep in a collective's wait, or of its gRPC link) may preempt a coordinator
// or client thread that is passing a token on, and the ranks of a lockstep step wait for the one
// preempted. SCHED_BATCH threads get the same share of the CPU but do not preempt on wake-up: the
// serving path's short, latency-bound work runs when it is ready, and the ranks take the rest.
// Any user may move their own threads to SCHED_BATCH (no privilege needed).
#include <string>

namespace moe::launcher {

enum class SchedPolicy { kNormal, kBatch };

// "normal" or "batch"; "auto" picks batch on the cpu backend (ranks busy on the host's cores)
// and normal on cuda. Anything else is an InputError naming the choices.
SchedPolicy parse_sched_policy(const std::string& name, const std::string& backend);
const char* sched_policy_name(SchedPolicy p);

// Moves every thread of this process to `p` (threads started later inherit the policy of the
// thread that starts them). Returns how many threads it moved; throws when one refuses.
int set_process_sched_policy(SchedPolicy p);

// The calling thread's policy now.
SchedPolicy current_sched_policy();

}  // namespace moe::launcher
