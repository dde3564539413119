// RateLimiter: a token bucket driven by the caller's clock.

#include "worker/rate_limiter.h"

#include <gtest/gtest.h>

#include <limits>

namespace sb::worker {
namespace {

TEST(RateLimiterTest, BucketStartsFullAndEmptiesAfterBurst) {
  RateLimiter r(10, 3);
  EXPECT_TRUE(r.Allow(1000));
  EXPECT_TRUE(r.Allow(1000));
  EXPECT_TRUE(r.Allow(1000));
  EXPECT_FALSE(r.Allow(1000));
}

TEST(RateLimiterTest, RefillsAtTheRate) {
  RateLimiter r(10, 1);  // one token every 100 ms
  EXPECT_TRUE(r.Allow(5000));
  EXPECT_FALSE(r.Allow(5050));
  EXPECT_TRUE(r.Allow(5100));
  EXPECT_FALSE(r.Allow(5100));
  EXPECT_FALSE(r.Allow(5199));
  EXPECT_TRUE(r.Allow(5200));
}

TEST(RateLimiterTest, RefusedMessagesDoNotCostTokens) {
  RateLimiter r(10, 1);
  EXPECT_TRUE(r.Allow(0));
  for (int t = 10; t < 100; t += 10) EXPECT_FALSE(r.Allow(t));
  EXPECT_TRUE(r.Allow(100));
}

TEST(RateLimiterTest, RefillIsCappedAtBurst) {
  RateLimiter r(100, 2);
  EXPECT_TRUE(r.Allow(0));
  EXPECT_TRUE(r.Allow(0));
  // An hour idle still leaves only two tokens.
  EXPECT_TRUE(r.Allow(3'600'000));
  EXPECT_TRUE(r.Allow(3'600'000));
  EXPECT_FALSE(r.Allow(3'600'000));
}

TEST(RateLimiterTest, SustainedRateMatchesConfiguration) {
  RateLimiter r(100, 10);
  int allowed = 0;
  // 1,000 attempts per second for 10 s: the burst plus 100 per second.
  for (int64_t t = 0; t < 10'000; ++t) allowed += r.Allow(t) ? 1 : 0;
  EXPECT_GE(allowed, 1000);
  EXPECT_LE(allowed, 1010);
}

TEST(RateLimiterTest, FractionalRates) {
  RateLimiter r(0.5, 1);  // one message every two seconds
  EXPECT_TRUE(r.Allow(10'000));
  EXPECT_FALSE(r.Allow(11'999));
  EXPECT_TRUE(r.Allow(12'000));
}

TEST(RateLimiterTest, ZeroOrNegativeRateAllowsEverything) {
  RateLimiter zero(0, 1);
  RateLimiter negative(-5, 1);
  for (int i = 0; i < 10'000; ++i) {
    EXPECT_TRUE(zero.Allow(0));
    EXPECT_TRUE(negative.Allow(0));
  }
}

TEST(RateLimiterTest, BurstBelowOneStillLetsOneMessageThrough) {
  RateLimiter r(1, 0);
  EXPECT_TRUE(r.Allow(0));
  EXPECT_FALSE(r.Allow(500));
  EXPECT_TRUE(r.Allow(1000));
}

TEST(RateLimiterTest, TimeGoingBackwardsRefillsNothing) {
  RateLimiter r(10, 1);
  EXPECT_TRUE(r.Allow(10'000));
  EXPECT_FALSE(r.Allow(0));
  // Had 0 been remembered, 10,000 would look like 10 s later.
  EXPECT_FALSE(r.Allow(10'000));
  EXPECT_TRUE(r.Allow(10'100));
}

TEST(RateLimiterTest, RestoredStateAllowsWhatTheOriginalWould) {
  RateLimiter old(1, 3);
  EXPECT_TRUE(old.Allow(1000));
  EXPECT_TRUE(old.Allow(1000));
  RateLimiter fresh(1, 3);
  fresh.Restore(old.state());
  for (int64_t now : {1000, 1000, 1500, 2000, 2000})
    EXPECT_EQ(fresh.Allow(now), old.Allow(now)) << now;
}

TEST(RateLimiterTest, RestoreCapsAtTheBurstAndRefusesNonsense) {
  RateLimiter r(1, 2);
  r.Restore({.tokens = 50, .last_ms = 0});
  EXPECT_EQ(r.state().tokens, 2);
  r.Restore({.tokens = -1, .last_ms = 100});
  EXPECT_EQ(r.state().tokens, 0);
  EXPECT_FALSE(r.Allow(100));
  r.Restore({.tokens = std::numeric_limits<double>::quiet_NaN(), .last_ms = 100});
  EXPECT_FALSE(r.Allow(100));
}

}  // namespace
}  // namespace sb::worker
