#pragma once
// Command-line parsing as every executable here does it: CLI11, --help with every option and its
// default, and a bad flag reported on one line with the way out and exit code 2.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <optional>
#include <string>

namespace moe::launcher {

// Parses argv into `app`. Returns nullopt to go on, or the exit code to return now: 0 after
// --help, 2 (bad input) after a bad flag, printed as "PROGRAM: ERROR (see --help)". Only
// `print` callers say anything (rank 0 of an MPI job).
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                             bool print = true) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    if (print) app.exit(e);
    return 0;
  } catch (const CLI::CallForAllHelp& e) {
    if (print) app.exit(e);
    return 0;
  } catch (const CLI::ParseError& e) {
    if (print) {
      const std::string name = app.get_name().empty() ? std::string(argv[0]) : app.get_name();
      std::fprintf(stderr, "%s: %s (see --help)\n", name.c_str(), e.what());
    }
    return 2;
  }
  return std::nullopt;
}

}  // namespace moe::launcher
