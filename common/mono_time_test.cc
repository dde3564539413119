// MonoTime: the one clock, and its integer and floating forms agree.

#include "common/mono_time.h"

#include <gtest/gtest.h>
#include <time.h>

#include <chrono>

namespace sb {
namespace {

TEST(MonoTimeTest, TheUnitsOfOneInstantAgree) {
  const MonoTime t{std::chrono::nanoseconds(1'234'567'890'123)};
  EXPECT_EQ(ToNs(t), 1'234'567'890'123);
  EXPECT_EQ(ToUs(t), 1'234'567'890);
  EXPECT_EQ(ToMs(t), 1'234'567);
  EXPECT_DOUBLE_EQ(ToSeconds(t), 1234.567890123);
}

TEST(MonoTimeTest, IntegerFormsTruncateTowardTheEpoch) {
  const MonoTime t{std::chrono::nanoseconds(1'999'999)};
  EXPECT_EQ(ToUs(t), 1'999);
  EXPECT_EQ(ToMs(t), 1);
  EXPECT_EQ(ToMs(MonoTime{}), 0);
}

TEST(MonoTimeTest, ItIsClockMonotonic) {
  // The events file's "ts" and the tests' own readings are compared as
  // CLOCK_MONOTONIC seconds: MonoNow must read that clock.
  timespec before{}, after{};
  ASSERT_EQ(::clock_gettime(CLOCK_MONOTONIC, &before), 0);
  const int64_t ns = MonoNowNs();
  ASSERT_EQ(::clock_gettime(CLOCK_MONOTONIC, &after), 0);
  EXPECT_LE(before.tv_sec * 1'000'000'000LL + before.tv_nsec, ns);
  EXPECT_GE(after.tv_sec * 1'000'000'000LL + after.tv_nsec, ns);
}

TEST(MonoTimeTest, SuccessiveReadingsInCoarserUnitsNeverGoBack) {
  const int64_t ns = MonoNowNs();
  const int64_t us = MonoNowUs();
  const int64_t ms = MonoNowMs();
  const double s = ToSeconds(MonoNow());
  EXPECT_LE(ns / 1000, us);
  EXPECT_LE(us / 1000, ms);
  EXPECT_LE(static_cast<double>(ms) / 1e3, s);
}

}  // namespace
}  // namespace sb
