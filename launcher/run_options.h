#pragma once
// The run-config flags shared by moe-run and moe-worker: --config FILE plus per-field
// overrides. Flags given on the command line win over the file.
#include <CLI/CLI.hpp>

#include <string>

#include "runtime/run_config.h"

namespace moe::launcher {

struct RunOptions {
  std::string config;       // YAML file, optional
  runtime::RunConfig flags; // values of the override flags
};

void add_run_options(CLI::App& app, RunOptions& o);
// The file (if any) with the flags that were given applied on top. Throws InputError.
runtime::RunConfig resolve_run_config(const CLI::App& app, const RunOptions& o);

}  // namespace moe::launcher
