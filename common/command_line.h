// Command lines of every Switchboard program: CLI11, with the exit codes
// common/exit_codes.h documents.
//
// Owns: turning a parse into "go on" or an exit code: 0 after --help (the
// help on stdout) or --version (common/build_info.h's line on stdout, which
// every program therefore answers), kExitUsage (2) on a usage error (CLI11's
// message on stderr) — CLI11's own codes (105, 106, ...) would tell scripts
// nothing. Does not: declare any other option; each program's main() does.
// Header-only.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string_view>

#include "common/build_info.h"
#include "common/exit_codes.h"

namespace sb {

// nullopt: the command line was good, run. Otherwise the exit code.
// The program is named as it was invoked (argv[0]'s file name).
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, char** argv) {
  std::string_view program = argc > 0 ? argv[0] : "";
  program = program.substr(program.rfind('/') + 1);  // npos + 1 == 0: no '/'
  app.set_version_flag("--version", VersionLine(program),
                       "print the version and the build commit, then exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  return std::nullopt;
}

}  // namespace sb
