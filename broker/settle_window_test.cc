// SettleWindow: the window ends once every shard the hellos' member lists
// name has said hello; the bound from the heartbeats the shards announce,
// at a cold start and for a shard that never comes; it never opens again.

#include "broker/settle_window.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace sb::broker {
namespace {

constexpr int64_t kStartUs = 5'000'000;

TEST(SettleWindowTest, TwiceTheBrokersOwnHeartbeatAndTheMarginUntilAShardSaysMore) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  EXPECT_TRUE(w.Settling(kStartUs));
  EXPECT_EQ(w.window_ms(), 700);
  EXPECT_TRUE(w.Settling(kStartUs + 699'999));
  EXPECT_FALSE(w.Settling(kStartUs + 700'000));
}

TEST(SettleWindowTest, AShardWithALongerHeartbeatExtendsTheWindow) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  EXPECT_TRUE(w.Settling(kStartUs));
  w.OnHello("0", 2000, {}, kStartUs + 300'000);
  EXPECT_EQ(w.window_ms(), 4500);
  EXPECT_TRUE(w.Settling(kStartUs + 4'000'000));
  w.OnHello("0", 50, {}, kStartUs + 4'100'000);  // shorter: changes nothing
  w.OnHello("0", 0, {}, kStartUs + 4'200'000);   // an older shard: says nothing
  EXPECT_EQ(w.window_ms(), 4500);
  EXPECT_FALSE(w.Settling(kStartUs + 4'500'000));
}

TEST(SettleWindowTest, OnceOverItNeverOpensAgain) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  EXPECT_TRUE(w.Settling(kStartUs));
  EXPECT_FALSE(w.Settling(kStartUs + 800'000));
  w.OnHello("0", 5000, {}, kStartUs + 900'000);  // would reach past now
  EXPECT_FALSE(w.Settling(kStartUs + 900'000));
  EXPECT_EQ(w.window_ms(), 700);
}

TEST(SettleWindowTest, WhatAHelloAnnouncesIsBounded) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("0", INT64_MAX / 2, {}, kStartUs);
  EXPECT_EQ(w.window_ms(), kMaxSettleMs);
  EXPECT_TRUE(w.Settling(kStartUs + (kMaxSettleMs - 1) * 1000));
  EXPECT_FALSE(w.Settling(kStartUs + kMaxSettleMs * 1000));
}

TEST(SettleWindowTest, ABoundOfZeroNeverSettles) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = 0});
  w.OnHello("0", 1000, {}, kStartUs);
  EXPECT_FALSE(w.Settling(kStartUs));
}

const std::vector<std::string> kThree = {"0", "1", "2"};

TEST(SettleWindowTest, EndsOnceEveryListedShardHasSaidHello) {
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("1", 1000, kThree, kStartUs + 1000);
  EXPECT_TRUE(w.Settling(kStartUs + 1000));
  EXPECT_EQ(w.missing(), (std::set<std::string, std::less<>>{"0", "2"}));
  w.OnHello("0", 1000, kThree, kStartUs + 2000);
  EXPECT_TRUE(w.Settling(kStartUs + 2000));
  EXPECT_EQ(w.end(), SettleEnd::kNotYet);
  w.OnHello("2", 1000, kThree, kStartUs + 3000);
  EXPECT_FALSE(w.Settling(kStartUs + 3000));
  EXPECT_EQ(w.end(), SettleEnd::kAllHello);
  EXPECT_TRUE(w.missing().empty());
}

TEST(SettleWindowTest, TheExpectedAreTheUnionOfTheLists) {
  // Shard 2 was told of shard 3 (which joined last); shard 0 was not yet.
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("0", 1000, kThree, kStartUs);
  w.OnHello("1", 1000, kThree, kStartUs);
  w.OnHello("2", 1000, std::vector<std::string>{"0", "1", "2", "3"}, kStartUs);
  EXPECT_TRUE(w.Settling(kStartUs));
  w.OnHello("3", 1000, std::vector<std::string>{"0", "1", "2", "3"}, kStartUs);
  EXPECT_FALSE(w.Settling(kStartUs));
  EXPECT_EQ(w.end(), SettleEnd::kAllHello);
}

TEST(SettleWindowTest, AShardRestartedWithTheBrokerCountsByName) {
  // Shard 1's new process knows no list; its name is what the others expect.
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("0", 1000, kThree, kStartUs);
  w.OnHello("2", 1000, kThree, kStartUs);
  w.OnHello("1", 1000, {}, kStartUs);
  EXPECT_FALSE(w.Settling(kStartUs));
  EXPECT_EQ(w.end(), SettleEnd::kAllHello);
}

TEST(SettleWindowTest, HellosWithoutListsNeverEndItAColdStartWaitsForTheBound) {
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  for (const std::string& name : kThree) w.OnHello(name, 1000, {}, kStartUs);
  EXPECT_TRUE(w.Settling(kStartUs + 2'499'999));
  EXPECT_EQ(w.end(), SettleEnd::kNotYet);
  EXPECT_FALSE(w.Settling(kStartUs + 2'500'000));
  EXPECT_EQ(w.end(), SettleEnd::kTimeout);
}

TEST(SettleWindowTest, AListedShardThatNeverComesHoldsItUntilTheBound) {
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("0", 1000, kThree, kStartUs);
  w.OnHello("1", 1000, kThree, kStartUs);
  EXPECT_TRUE(w.Settling(kStartUs + 2'499'999));
  EXPECT_FALSE(w.Settling(kStartUs + 2'500'000));
  EXPECT_EQ(w.end(), SettleEnd::kTimeout);
  EXPECT_TRUE(w.missing().empty());
  w.OnHello("2", 1000, kThree, kStartUs + 2'600'000);  // late: changes nothing
  EXPECT_EQ(w.end(), SettleEnd::kTimeout);
}

TEST(SettleWindowTest, AListFromALaterHelloEndsItWhenEveryoneHasSpoken) {
  // The fresh shards spoke first; the one that knows the list comes last.
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("0", 1000, {}, kStartUs);
  w.OnHello("1", 1000, {}, kStartUs);
  EXPECT_TRUE(w.Settling(kStartUs));
  w.OnHello("2", 1000, kThree, kStartUs);
  EXPECT_FALSE(w.Settling(kStartUs));
  EXPECT_EQ(w.end(), SettleEnd::kAllHello);
}

TEST(SettleWindowTest, TooManyNamesLeaveItToTheBound) {
  SettleWindow w({.heartbeat_ms = 1000, .margin_ms = 500, .max_ms = kMaxSettleMs});
  std::vector<std::string> many;
  for (size_t i = 0; i <= kMaxSettleNames; ++i) many.push_back(std::to_string(i));
  w.OnHello("0", 1000, many, kStartUs);
  for (const std::string& name : many) w.OnHello(name, 1000, {}, kStartUs);
  EXPECT_TRUE(w.Settling(kStartUs + 2'499'999));
  EXPECT_EQ(w.end(), SettleEnd::kNotYet);
  EXPECT_FALSE(w.Settling(kStartUs + 2'500'000));
  EXPECT_EQ(w.end(), SettleEnd::kTimeout);
}

TEST(SettleWindowTest, AShardThatRestatesHistoryHasSaidHelloOnceItsRestatesCame) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  const std::vector<std::string> members = {"0", "1"};
  w.OnHello("0", 100, members, kStartUs, /*restating=*/true);
  w.OnHello("1", 100, members, kStartUs + 10);
  EXPECT_TRUE(w.Settling(kStartUs + 20));
  EXPECT_EQ(w.missing(), (std::set<std::string, std::less<>>{"0"}));
  w.OnRestated("1", kStartUs + 30);  // not waited for: changes nothing
  EXPECT_TRUE(w.Settling(kStartUs + 30));
  w.OnRestated("0", kStartUs + 40);
  EXPECT_FALSE(w.Settling(kStartUs + 40));
  EXPECT_EQ(w.end(), SettleEnd::kAllHello);
}

TEST(SettleWindowTest, RestatesThatNeverComeAreWaitedForWithinTheBound) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello("0", 100, std::vector<std::string>{"0"}, kStartUs, /*restating=*/true);
  EXPECT_TRUE(w.Settling(kStartUs + 699'999));
  EXPECT_FALSE(w.Settling(kStartUs + 700'000));
  EXPECT_EQ(w.end(), SettleEnd::kTimeout);
}

}  // namespace
}  // namespace sb::broker
