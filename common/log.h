// Process-wide logging setup and the fatal-error line format.
//
// Owns: configuring spdlog's default logger (stderr, one line per record,
// synchronous: no logging thread, so a daemon's loop stays the only thread)
// and the one-line fatal message "<program>: fatal: unable to <what>: <why>".
#pragma once

#include <string>

namespace sb {

// `level` is an spdlog level name (trace, debug, info, warn, error); LOG_LEVEL
// in the environment overrides it.
void InitLogging(const std::string& program, const std::string& level = "info");

// Prints "<program>: fatal: unable to <what>: <why>" to stderr.
void PrintFatal(const std::string& program, const std::string& what, const std::string& why);

}  // namespace sb
