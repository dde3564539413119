// The notify datagram parsing: READY=1 and STATUS= lines (docs/UPGRADE.md).
#include "supervisor/notify_server.h"

#include <gtest/gtest.h>

namespace sb::supervisor {
namespace {

TEST(NotifyTest, ReadyIsALineOfItsOwn) {
  EXPECT_TRUE(NotifyHasReady("READY=1"));
  EXPECT_TRUE(NotifyHasReady("STATUS=up\nREADY=1\n"));
  EXPECT_FALSE(NotifyHasReady("READY=10"));
  EXPECT_FALSE(NotifyHasReady("STATUS=READY=1"));
}

TEST(NotifyTest, StatusIsTheValueOfTheLastStatusLine) {
  EXPECT_EQ(NotifyStatus("STATUS=upgraded connections=3 ms=1"), "upgraded connections=3 ms=1");
  EXPECT_EQ(NotifyStatus("READY=1\nSTATUS=a\nSTATUS=b\n"), "b");
  EXPECT_EQ(NotifyStatus("STATUS="), "");
  EXPECT_EQ(NotifyStatus("READY=1"), std::nullopt);
  EXPECT_EQ(NotifyStatus("XSTATUS=a"), std::nullopt);
}

}  // namespace
}  // namespace sb::supervisor
