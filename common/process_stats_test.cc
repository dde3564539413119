// Process stats: open fds and resident memory of the test process itself.

#include "common/process_stats.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>

namespace sb {
namespace {

TEST(ProcessStatsTest, OpenFdsCountsEveryOpenFd) {
  std::optional<int> before = OpenFds();
  ASSERT_TRUE(before.has_value());
  EXPECT_GE(*before, 3);  // at least stdin, stdout and stderr
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  EXPECT_EQ(OpenFds(), *before + 2);
  ::close(p[0]);
  ::close(p[1]);
  // The directory listing's own fd is not counted, and not left open.
  EXPECT_EQ(OpenFds(), *before);
}

TEST(ProcessStatsTest, ResidentBytesArePagesAndGrowWithTouchedMemory) {
  std::optional<int64_t> before = ResidentBytes();
  ASSERT_TRUE(before.has_value());
  EXPECT_GT(*before, 0);
  EXPECT_EQ(*before % ::sysconf(_SC_PAGESIZE), 0);
  // 64 MiB written: every page of it is resident until freed.
  constexpr size_t kBytes = 64 << 20;
  std::unique_ptr<char[]> block(new char[kBytes]);
  std::memset(block.get(), 1, kBytes);
  std::optional<int64_t> after = ResidentBytes();
  ASSERT_TRUE(after.has_value());
  EXPECT_GE(*after - *before, static_cast<int64_t>(kBytes) / 2);
  EXPECT_EQ(block[kBytes - 1], 1);
}

}  // namespace
}  // namespace sb
