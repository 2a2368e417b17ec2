#pragma once
// Step reports that queued on the worker's link while it was writing go out as one message. The
// link's writes are slower than a small model's steps (at 2 ranks on tiny_a a step takes
// 0.4 ms and a write about as long), and a queue of one report per step grew to 30 reports, so
// tokens reached their clients 10 ms late. Merged, the message carries everything the separate
// ones did: counts and seconds summed, the tokens in order, and the latest step number,
// rebalancing totals and placement.
#include "moe/v1/worker.pb.h"

namespace moe::launcher {

void merge_step(moe::v1::StepReport* into, moe::v1::StepReport&& next);

}  // namespace moe::launcher
