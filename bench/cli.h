// Command lines of the bench programs: CLI11, as the programs' own mains
// use it, with the exit codes the bench headers document.
//
// Owns: turning a parse into "go on" or an exit code: 0 after --help (the
// help on stdout), 2 on a usage error (CLI11's message on stderr). Does not:
// declare any option; each bench's main() does. Header-only.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>

namespace sb::bench {

// nullopt: the command line was good, run. Otherwise the exit code.
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return std::nullopt;
}

}  // namespace sb::bench
