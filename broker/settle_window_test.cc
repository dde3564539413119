// SettleWindow: the window's length from the heartbeats the shards announce,
// its bound, and that it never opens again.

#include "broker/settle_window.h"

#include <gtest/gtest.h>

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
  w.OnHello(2000, kStartUs + 300'000);
  EXPECT_EQ(w.window_ms(), 4500);
  EXPECT_TRUE(w.Settling(kStartUs + 4'000'000));
  w.OnHello(50, kStartUs + 4'100'000);  // shorter: changes nothing
  w.OnHello(0, kStartUs + 4'200'000);   // an older shard: says nothing
  EXPECT_EQ(w.window_ms(), 4500);
  EXPECT_FALSE(w.Settling(kStartUs + 4'500'000));
}

TEST(SettleWindowTest, OnceOverItNeverOpensAgain) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  EXPECT_TRUE(w.Settling(kStartUs));
  EXPECT_FALSE(w.Settling(kStartUs + 800'000));
  w.OnHello(5000, kStartUs + 900'000);  // would reach past now
  EXPECT_FALSE(w.Settling(kStartUs + 900'000));
  EXPECT_EQ(w.window_ms(), 700);
}

TEST(SettleWindowTest, WhatAHelloAnnouncesIsBounded) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = kMaxSettleMs});
  w.OnHello(INT64_MAX / 2, kStartUs);
  EXPECT_EQ(w.window_ms(), kMaxSettleMs);
  EXPECT_TRUE(w.Settling(kStartUs + (kMaxSettleMs - 1) * 1000));
  EXPECT_FALSE(w.Settling(kStartUs + kMaxSettleMs * 1000));
}

TEST(SettleWindowTest, ABoundOfZeroNeverSettles) {
  SettleWindow w({.heartbeat_ms = 100, .margin_ms = 500, .max_ms = 0});
  w.OnHello(1000, kStartUs);
  EXPECT_FALSE(w.Settling(kStartUs));
}

}  // namespace
}  // namespace sb::broker
