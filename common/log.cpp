#include "common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace moe {

void set_log_name(const std::string& name) {
  // Logs go to stderr so that stdout stays the program's output (ids, tables, JSON).
  auto logger = spdlog::stderr_color_mt("moe-" + name);
  logger->set_pattern("[%H:%M:%S.%e] [" + name + "] [%^%l%$] %v");
  logger->set_level(spdlog::default_logger()->level());
  spdlog::set_default_logger(logger);
}

void set_log_rank(int rank, int world_size) {
  set_log_name("r" + std::to_string(rank) + "/" + std::to_string(world_size));
}

void set_log_level(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level));
}

}  // namespace moe
