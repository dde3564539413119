#include "common/build_info.h"

// Generated into the build tree (common/CMakeLists.txt); only this file
// includes it.
#include "common/build_info_generated.h"

namespace sb {

std::string_view BuildVersion() { return kGeneratedBuildVersion; }

std::string_view BuildCommit() { return kGeneratedBuildCommit; }

std::string FormatVersionLine(std::string_view program, std::string_view version,
                              std::string_view commit) {
  std::string line(program);
  line += ' ';
  line += version;
  line += " (commit ";
  line += commit;
  line += ')';
  return line;
}

std::string VersionLine(std::string_view program) {
  return FormatVersionLine(program, BuildVersion(), BuildCommit());
}

}  // namespace sb
