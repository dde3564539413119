// Presence: metas per key for one topic, and the Phoenix diff/state texts.

#include "worker/presence.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "protocol/testing/json.h"

namespace sb::worker {
namespace {

using test::Json;

TEST(PresenceTest, TrackReturnsAJoinDiffWithOurPhxRefFirst) {
  Presence p;
  auto diff = p.Track("alice", "r1", R"({"device":"web","n":2})");
  ASSERT_TRUE(diff.ok()) << diff.status().message();
  EXPECT_EQ(diff.value(),
            R"({"joins":{"alice":{"metas":[{"phx_ref":"r1","device":"web","n":2}]}},"leaves":{}})");
  EXPECT_EQ(p.StateJson(), R"({"alice":{"metas":[{"phx_ref":"r1","device":"web","n":2}]}})");
  EXPECT_EQ(p.keys(), 1u);
}

TEST(PresenceTest, AbsentMetaIsAnEmptyObject) {
  Presence p;
  auto diff = p.Track("alice", "r1", "");
  ASSERT_TRUE(diff.ok());
  EXPECT_EQ(diff.value(), R"({"joins":{"alice":{"metas":[{"phx_ref":"r1"}]}},"leaves":{}})");
  ASSERT_TRUE(p.Track("bob", "r2", "{}").ok());
  EXPECT_EQ(Json(p.StateJson()), Json(R"({"alice":{"metas":[{"phx_ref":"r1"}]},
                                          "bob":{"metas":[{"phx_ref":"r2"}]}})"));
}

TEST(PresenceTest, OurPhxRefReplacesTheClients) {
  Presence p;
  auto diff = p.Track("alice", "r1", R"({"a":1,"phx_ref":"forged","b":2})");
  ASSERT_TRUE(diff.ok());
  EXPECT_EQ(diff.value(),
            R"({"joins":{"alice":{"metas":[{"phx_ref":"r1","a":1,"b":2}]}},"leaves":{}})");
  // Removable by our ref, not by the forged one.
  EXPECT_FALSE(p.Untrack("alice", "forged").has_value());
  EXPECT_TRUE(p.Untrack("alice", "r1").has_value());
}

TEST(PresenceTest, MetaThatIsNotAnObjectIsRefusedAndNothingIsTracked) {
  Presence p;
  for (const char* bad : {"[1,2]", "null", "\"x\"", "3", "{", "{} {}", " "}) {
    auto diff = p.Track("alice", "r1", bad);
    EXPECT_FALSE(diff.ok()) << bad;
    EXPECT_EQ(diff.status().code(), Status::Code::kRefused) << bad;
  }
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(p.StateJson(), "{}");
}

TEST(PresenceTest, NestedMetaValuesSurvive) {
  Presence p;
  auto diff = p.Track("alice", "r1", R"({"profile":{"name":"Al","tags":["x",null,true]},"k":-7})");
  ASSERT_TRUE(diff.ok());
  EXPECT_EQ(Json(p.StateJson()), Json(R"({"alice":{"metas":[{"phx_ref":"r1","profile":{"name":"Al",
                    "tags":["x",null,true]},"k":-7}]}})"));
}

TEST(PresenceTest, KeysAreEscaped) {
  Presence p;
  const std::string key = "a\"b\\c\n\x01\xc3\xa9";
  auto diff = p.Track(key, "r\"1", "");
  ASSERT_TRUE(diff.ok());
  boost::json::value v = Json(diff.value());
  const auto& joins = v.at("joins").as_object();
  ASSERT_EQ(joins.size(), 1u);
  EXPECT_EQ(joins.begin()->key(), key);
  EXPECT_EQ(joins.begin()->value().at("metas").at(0).at("phx_ref").as_string(), "r\"1");
  EXPECT_EQ(Json(p.StateJson()).as_object().begin()->key(), key);
  auto leave = p.Untrack(key, "r\"1");
  ASSERT_TRUE(leave.has_value());
  EXPECT_EQ(Json(*leave).at("leaves").as_object().begin()->key(), key);
}

TEST(PresenceTest, OneKeyHoldsSeveralMetasInTrackOrder) {
  Presence p;
  ASSERT_TRUE(p.Track("alice", "r1", R"({"tab":1})").ok());
  ASSERT_TRUE(p.Track("alice", "r2", R"({"tab":2})").ok());
  EXPECT_EQ(p.keys(), 1u);
  EXPECT_EQ(p.StateJson(),
            R"({"alice":{"metas":[{"phx_ref":"r1","tab":1},{"phx_ref":"r2","tab":2}]}})");

  auto leave = p.Untrack("alice", "r1");
  ASSERT_TRUE(leave.has_value());
  EXPECT_EQ(*leave, R"({"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"r1","tab":1}]}}})");
  EXPECT_EQ(p.StateJson(), R"({"alice":{"metas":[{"phx_ref":"r2","tab":2}]}})");

  ASSERT_TRUE(p.Untrack("alice", "r2").has_value());
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(p.StateJson(), "{}");
}

TEST(PresenceTest, UntrackOfWhatIsNotTrackedIsNothing) {
  Presence p;
  ASSERT_TRUE(p.Track("alice", "r1", "").ok());
  EXPECT_FALSE(p.Untrack("bob", "r1").has_value());
  EXPECT_FALSE(p.Untrack("alice", "r2").has_value());
  ASSERT_TRUE(p.Untrack("alice", "r1").has_value());
  EXPECT_FALSE(p.Untrack("alice", "r1").has_value());  // twice
}

TEST(PresenceTest, UntrackManyBuildsOneDiffGroupedByKey) {
  Presence p;
  ASSERT_TRUE(p.Track("alice", "r1", R"({"tab":1})").ok());
  ASSERT_TRUE(p.Track("bob", "r2", "").ok());
  ASSERT_TRUE(p.Track("alice", "r3", R"({"tab":3})").ok());
  ASSERT_TRUE(p.Track("carol", "r4", "").ok());

  auto diff = p.UntrackMany({{"alice", "r1"}, {"bob", "r2"}, {"nobody", "x"}, {"alice", "r3"}});
  ASSERT_TRUE(diff.has_value());
  EXPECT_EQ(*diff, R"({"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"r1","tab":1},)"
                   R"({"phx_ref":"r3","tab":3}]},"bob":{"metas":[{"phx_ref":"r2"}]}}})");
  EXPECT_EQ(p.StateJson(), R"({"carol":{"metas":[{"phx_ref":"r4"}]}})");
  EXPECT_EQ(p.keys(), 1u);
}

TEST(PresenceTest, UntrackManyOfNothingTrackedIsNothing) {
  Presence p;
  EXPECT_FALSE(p.UntrackMany({}).has_value());
  ASSERT_TRUE(p.Track("alice", "r1", "").ok());
  EXPECT_FALSE(p.UntrackMany({{"alice", "r9"}, {"bob", "r1"}}).has_value());
  EXPECT_EQ(p.keys(), 1u);
}

TEST(PresenceTest, StateOfManyKeys) {
  Presence p;
  boost::json::object expected;
  for (int i = 0; i < 100; ++i) {
    std::string key = "user" + std::to_string(i);
    std::string ref = "r" + std::to_string(i);
    ASSERT_TRUE(p.Track(key, ref, R"({"i":)" + std::to_string(i) + "}").ok());
    expected[key] =
        Json(R"({"metas":[{"phx_ref":")" + ref + R"(","i":)" + std::to_string(i) + "}]}");
  }
  EXPECT_EQ(Json(p.StateJson()), expected);
}

}  // namespace
}  // namespace sb::worker
