// RestartIntensity: OTP's add_restart window, with precise time.

#include "supervisor/restart_intensity.h"

#include <gtest/gtest.h>

#include <chrono>

namespace sb::supervisor {
namespace {

using namespace std::chrono_literals;
using Time = RestartIntensity::Time;

TEST(RestartIntensityTest, AllowsUpToIntensityAttemptsWithinThePeriod) {
  RestartIntensity r(2, 5s);
  EXPECT_TRUE(r.Allow(Time{10s}));
  EXPECT_TRUE(r.Allow(Time{11s}));
  EXPECT_FALSE(r.Allow(Time{12s}));  // the third within [7s, 12s]
  EXPECT_EQ(r.CountInWindow(Time{12s}), 2);
}

TEST(RestartIntensityTest, IntensityZeroNeverAllows) {
  RestartIntensity r(0, 5s);
  EXPECT_FALSE(r.Allow(Time{0s}));
  EXPECT_FALSE(r.Allow(Time{100s}));
  EXPECT_EQ(r.CountInWindow(Time{100s}), 0);
}

TEST(RestartIntensityTest, AttemptsExactlyOnePeriodApartShareTheWindow) {
  RestartIntensity r(1, 5s);
  EXPECT_TRUE(r.Allow(Time{10s}));
  EXPECT_FALSE(r.Allow(Time{15s}));  // 10s is within [10s, 15s]
}

TEST(RestartIntensityTest, AttemptsMoreThanOnePeriodApartDoNot) {
  RestartIntensity r(1, 5s);
  EXPECT_TRUE(r.Allow(Time{10s}));
  EXPECT_TRUE(r.Allow(Time{15s} + 1ns));
  EXPECT_TRUE(r.Allow(Time{20s} + 2ns));
  EXPECT_EQ(r.CountInWindow(Time{20s} + 2ns), 1);
}

TEST(RestartIntensityTest, RefusedAttemptsAreNotRecorded) {
  RestartIntensity r(1, 5s);
  EXPECT_TRUE(r.Allow(Time{10s}));
  EXPECT_FALSE(r.Allow(Time{14s}));
  // Had 14s been recorded, 15.5s would still see it.
  EXPECT_TRUE(r.Allow(Time{15s} + 500ms));
}

TEST(RestartIntensityTest, WindowSlidesAttemptByAttempt) {
  RestartIntensity r(2, 5s);
  EXPECT_TRUE(r.Allow(Time{0s}));
  EXPECT_TRUE(r.Allow(Time{3s}));
  EXPECT_FALSE(r.Allow(Time{5s}));       // 0s and 3s are in [0s, 5s]
  EXPECT_TRUE(r.Allow(Time{5s} + 1ns));  // 0s has aged out
  EXPECT_FALSE(r.Allow(Time{6s}));       // 3s and 5s+1ns are in [1s, 6s]
  EXPECT_TRUE(r.Allow(Time{8s} + 1ns));  // 3s has aged out
}

TEST(RestartIntensityTest, CountInWindowAgesEntriesOutWithoutRecording) {
  RestartIntensity r(3, 5s);
  EXPECT_TRUE(r.Allow(Time{0s}));
  EXPECT_TRUE(r.Allow(Time{2s}));
  EXPECT_EQ(r.CountInWindow(Time{2s}), 2);
  EXPECT_EQ(r.CountInWindow(Time{5s}), 2);
  EXPECT_EQ(r.CountInWindow(Time{6s}), 1);
  EXPECT_EQ(r.CountInWindow(Time{7s} + 1ns), 0);
  EXPECT_TRUE(r.Allow(Time{7s} + 1ns));
  EXPECT_TRUE(r.Allow(Time{7s} + 2ns));
  EXPECT_TRUE(r.Allow(Time{7s} + 3ns));
  EXPECT_FALSE(r.Allow(Time{7s} + 4ns));
}

TEST(RestartIntensityTest, NegativeTimesWork) {
  // Monotonic clocks may start anywhere; the arithmetic must not assume t >= period.
  RestartIntensity r(1, 5s);
  EXPECT_TRUE(r.Allow(Time{-3s}));
  EXPECT_FALSE(r.Allow(Time{1s}));
  EXPECT_TRUE(r.Allow(Time{2s} + 1ns));
}

}  // namespace
}  // namespace sb::supervisor
