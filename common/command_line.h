// Command lines of every Switchboard program: CLI11, with the exit codes
// common/exit_codes.h documents.
//
// Owns: turning a parse into "go on" or an exit code: 0 after --help (the
// help on stdout), kExitUsage (2) on a usage error (CLI11's message on
// stderr) — CLI11's own codes (105, 106, ...) would tell scripts nothing.
// Does not: declare any option; each program's main() does. Header-only.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>

#include "common/exit_codes.h"

namespace sb {

// nullopt: the command line was good, run. Otherwise the exit code.
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  return std::nullopt;
}

}  // namespace sb
