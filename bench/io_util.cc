#include "bench/io_util.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "common/mono_time.h"

namespace sb::bench {

uint64_t MonoNs() { return static_cast<uint64_t>(MonoNowNs()); }

void SleepNs(uint64_t ns) {
  timespec ts{static_cast<time_t>(ns / kSec), static_cast<long>(ns % kSec)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

int MsUntil(uint64_t deadline_ns, int cap_ms) {
  uint64_t now = MonoNs();
  if (now >= deadline_ns) return 0;
  return static_cast<int>(std::min<uint64_t>((deadline_ns - now) / 1000000 + 1, cap_ms));
}

bool WriteAll(int fd, const void* p, size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly n bytes unless the deadline passes or the peer goes away.
bool ReadAll(int fd, void* p, size_t n, uint64_t deadline_ns) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    int r = ::poll(&pfd, 1, MsUntil(deadline_ns, 1000));
    if (r < 0 && errno != EINTR) return false;
    if (r <= 0) {
      if (MonoNs() >= deadline_ns) return false;
      continue;
    }
    ssize_t got = ::read(fd, c, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    c += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

}  // namespace sb::bench
