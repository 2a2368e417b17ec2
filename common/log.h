#pragma once
// Logging through spdlog. Every line carries the rank that spoke ("[r2/4]"), set once at start-up
// with set_log_rank(); before that, and in single-process tools, the tag is empty.
#include <spdlog/spdlog.h>

namespace moe {

void set_log_rank(int rank, int world_size);  // tag "r2/4"
void set_log_name(const std::string& name);      // tag for a process that is not a rank
void set_log_level(const std::string& level);  // trace, debug, info, warn, error, off

}  // namespace moe
