#include "common/process_stats.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace sb {

std::optional<int> OpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return std::nullopt;
  const std::string own = std::to_string(::dirfd(dir));
  int n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.' || own == e->d_name) continue;
    ++n;
  }
  ::closedir(dir);
  return n;
}

std::optional<int64_t> ResidentBytes() {
  // "e": close-on-exec, so a fork/exec on another thread cannot inherit it.
  FILE* f = std::fopen("/proc/self/statm", "re");
  if (!f) return std::nullopt;
  long long size = 0, resident = 0;
  const int got = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  if (got != 2) return std::nullopt;
  return static_cast<int64_t>(resident) * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace sb
