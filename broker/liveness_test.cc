// Liveness: silence beyond interval x misses, and the heartbeat schedule.

#include "broker/liveness.h"

#include <gtest/gtest.h>

namespace sb::broker {
namespace {

using Links = std::vector<LinkId>;

TEST(LivenessTest, PolicyValidation) {
  EXPECT_TRUE(ValidateLivenessPolicy({}).ok());
  EXPECT_EQ(ValidateLivenessPolicy({.interval_ms = 0, .misses = 3}).code(),
            Status::Code::kInvalidConfig);
  EXPECT_EQ(ValidateLivenessPolicy({.interval_ms = 100, .misses = 0}).code(),
            Status::Code::kInvalidConfig);
}

TEST(LivenessTest, ALinkIsDeadOnlyAfterMoreThanIntervalTimesMisses) {
  Liveness l({.interval_ms = 100, .misses = 3});
  l.OnHeard(1, 1000);
  EXPECT_TRUE(l.Expired(1300).empty());  // exactly 3 intervals: still alive
  EXPECT_EQ(l.Expired(1301), (Links{1}));
  EXPECT_FALSE(l.tracked(1));
  EXPECT_TRUE(l.Expired(5000).empty());  // reported once
}

TEST(LivenessTest, HearingAnythingResetsTheClock) {
  Liveness l({.interval_ms = 100, .misses = 3});
  l.OnHeard(1, 1000);
  l.OnHeard(1, 1250);
  EXPECT_TRUE(l.Expired(1400).empty());
  EXPECT_TRUE(l.Expired(1550).empty());
  EXPECT_EQ(l.Expired(1551), (Links{1}));
}

TEST(LivenessTest, TimeDoesNotGoBack) {
  Liveness l({.interval_ms = 100, .misses = 2});
  l.OnHeard(1, 1000);
  l.OnHeard(1, 500);  // a stale timestamp must not age the link
  EXPECT_TRUE(l.Expired(1200).empty());
  EXPECT_EQ(l.Expired(1201), (Links{1}));
}

TEST(LivenessTest, OnlySilentLinksExpireInIdOrder) {
  Liveness l({.interval_ms = 10, .misses = 2});
  l.OnHeard(5, 0);
  l.OnHeard(2, 0);
  l.OnHeard(3, 0);
  l.OnHeard(9, 0);
  l.OnHeard(3, 15);
  EXPECT_EQ(l.Expired(21), (Links{2, 5, 9}));
  EXPECT_EQ(l.size(), 1u);
  EXPECT_EQ(l.Expired(36), (Links{3}));
  EXPECT_EQ(l.size(), 0u);
}

TEST(LivenessTest, RemovedLinksNeverExpire) {
  Liveness l({.interval_ms = 10, .misses = 1});
  l.OnHeard(1, 0);
  l.Remove(1);
  l.Remove(2);  // unknown: no-op
  EXPECT_TRUE(l.Expired(1000).empty());
  EXPECT_EQ(l.NextExpiry(), std::nullopt);
}

TEST(LivenessTest, NextExpiryIsTheFirstInstantExpiredReportsIt) {
  Liveness l({.interval_ms = 100, .misses = 3});
  EXPECT_EQ(l.NextExpiry(), std::nullopt);
  l.OnHeard(1, 1000);
  l.OnHeard(2, 900);
  ASSERT_EQ(l.NextExpiry(), 1201);
  EXPECT_TRUE(l.Expired(1200).empty());
  EXPECT_EQ(l.Expired(*l.NextExpiry()), (Links{2}));
  EXPECT_EQ(l.NextExpiry(), 1301);
}

TEST(LivenessTest, HeartbeatsAreDueEveryInterval) {
  Liveness l({.interval_ms = 100, .misses = 3});
  EXPECT_EQ(l.NextHeartbeatDue(50), 50);  // never sent: now
  l.OnHeartbeatSent(50);
  EXPECT_EQ(l.NextHeartbeatDue(60), 150);
  EXPECT_EQ(l.NextHeartbeatDue(150), 150);
  EXPECT_EQ(l.NextHeartbeatDue(400), 400);  // overdue: now
  l.OnHeartbeatSent(400);
  EXPECT_EQ(l.NextHeartbeatDue(401), 500);
}

}  // namespace
}  // namespace sb::broker
