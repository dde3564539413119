#include "supervisor/line_splitter.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sb::supervisor {
namespace {

struct Collected {
  std::vector<std::string> lines;
  std::vector<bool> cut;
  LineSplitter::LineFn fn() {
    return [this](std::string_view l, bool c) {
      lines.emplace_back(l);
      cut.push_back(c);
    };
  }
};

TEST(LineSplitter, SplitsAcrossChunks) {
  LineSplitter s;
  Collected c;
  s.Feed("hel", c.fn());
  s.Feed("lo\nwor", c.fn());
  s.Feed("ld\r\n\nlast", c.fn());
  EXPECT_EQ(c.lines, (std::vector<std::string>{"hello", "world", ""}));
  s.Finish(c.fn());
  EXPECT_EQ(c.lines.back(), "last");
}

TEST(LineSplitter, LongLineWithoutNewlineIsCutAndMemoryStaysBounded) {
  LineSplitter s(16);
  Collected c;
  std::string flood(1000, 'x');
  for (int i = 0; i < 100; ++i) {
    s.Feed(flood, c.fn());
    EXPECT_LT(s.buffered(), 16u);
  }
  EXPECT_EQ(c.lines.size(), 100u * 1000u / 16u);
  for (size_t i = 0; i < c.lines.size(); ++i) {
    EXPECT_EQ(c.lines[i].size(), 16u);
    EXPECT_TRUE(c.cut[i]);
  }
}

TEST(LineSplitter, LineOfExactlyMaxIsNotCut) {
  LineSplitter s(4);
  Collected c;
  s.Feed("abcd\nef\n", c.fn());
  ASSERT_EQ(c.lines.size(), 2u);
  EXPECT_EQ(c.lines[0], "abcd");
  EXPECT_FALSE(c.cut[0]);
}

}  // namespace
}  // namespace sb::supervisor
