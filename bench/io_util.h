// Small process and time helpers every bench program uses: monotonic
// nanoseconds, sleeping, and whole reads and writes on the pipes and
// socketpairs between a bench and its forked children, bounded by deadlines.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sb::bench {

inline constexpr uint64_t kSec = 1'000'000'000;  // ns

uint64_t MonoNs();
void SleepNs(uint64_t ns);
// Milliseconds from now until `deadline_ns` (rounded up), at most `cap_ms`.
int MsUntil(uint64_t deadline_ns, int cap_ms);
bool WriteAll(int fd, const void* p, size_t n);
// Reads exactly n bytes unless the deadline passes or the peer goes away.
bool ReadAll(int fd, void* p, size_t n, uint64_t deadline_ns);

}  // namespace sb::bench
