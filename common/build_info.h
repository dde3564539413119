// Build info: the version and the commit this binary was built from, as
// every program reports them (`--version`, a shard's /healthz, the
// switchboard_build_info metric).
//
// Owns: the two strings and the one-line `--version` format. The version is
// CMake's project version (plus SWITCHBOARD_VERSION_SUFFIX when configured);
// the commit is computed at build time (cmake/BuildCommit.cmake), so it is
// right after new commits without re-running cmake, and "unknown" outside a
// git checkout. Only build_info.cc sees the generated header: a new commit
// recompiles that one file and relinks the programs, nothing more.
#pragma once

#include <string>
#include <string_view>

namespace sb {

// "0.1.0", or "0.1.0-rc1" with -DSWITCHBOARD_VERSION_SUFFIX=-rc1.
std::string_view BuildVersion();
// `git describe --always --dirty --abbrev=12` of the source tree with tags
// ignored ("28ee336abcde", "28ee336abcde-dirty"), or "unknown".
std::string_view BuildCommit();

// "<program> <version> (commit <commit>)": the line `--version` prints.
std::string FormatVersionLine(std::string_view program, std::string_view version,
                              std::string_view commit);
// The same for this build.
std::string VersionLine(std::string_view program);

}  // namespace sb
