// RemotePresence: the other shards' presence per topic, its diffs and
// snapshots, the states and merges built from it, and what it holds.

#include "worker/remote_presence.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "protocol/testing/json.h"

namespace sb::worker {
namespace {

using test::Json;

// A diff with the joins and leaves given as presence_state bodies.
std::string Diff(std::string_view joins, std::string_view leaves) {
  return R"({"joins":)" + std::string(joins) + R"(,"leaves":)" + std::string(leaves) + "}";
}

// What bytes() counts for one key holding the given metas.
size_t Bytes(std::string_view key, const std::vector<std::pair<std::string, std::string>>& metas) {
  size_t n = key.size();
  for (const auto& [ref, json] : metas) n += ref.size() + json.size();
  return n;
}

TEST(RemotePresenceTest, AJoinAddsAMetaAndAJoinOfAKnownRefReplacesItLastUnderItsKey) {
  RemotePresence r;
  EXPECT_FALSE(r.Has("t"));
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1","v":1}]}})", "{}")).ok());
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"2"}]}})", "{}")).ok());
  EXPECT_TRUE(r.Has("t"));
  EXPECT_EQ(r.metas(), 2u);
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1","v":2}]}})", "{}")).ok());
  // The new text goes last under its key, where a client applying the same
  // diff puts it.
  EXPECT_EQ(r.StateJson("t"), R"({"a":{"metas":[{"phx_ref":"2"},{"phx_ref":"1","v":2}]}})");
  EXPECT_EQ(r.metas(), 2u);
  EXPECT_EQ(r.bytes(),
            Bytes("a", {{"2", R"({"phx_ref":"2"})"}, {"1", R"({"phx_ref":"1","v":2})"}}));
  EXPECT_EQ(r.topics(), 1u);
}

TEST(RemotePresenceTest, ALeaveRemovesItsMetaAndTheKeyWithItsLastAndAnUnknownLeaveNothing) {
  RemotePresence r;
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1"},{"phx_ref":"2"}]},
                               "b":{"metas":[{"phx_ref":"3"}]}})",
                                    "{}"))
                  .ok());
  const std::string before = r.StateJson("t");
  const size_t bytes = r.bytes();
  ASSERT_TRUE(r.ApplyDiff("t", Diff("{}", R"({"a":{"metas":[{"phx_ref":"3"}]},
                                              "c":{"metas":[{"phx_ref":"1"}]}})"))
                  .ok());
  EXPECT_EQ(r.StateJson("t"), before) << "a leave of an unknown key or ref changes nothing";
  EXPECT_EQ(r.bytes(), bytes);
  ASSERT_TRUE(r.ApplyDiff("t", Diff("{}", R"({"a":{"metas":[{"phx_ref":"1"}]}})")).ok());
  EXPECT_EQ(Json(r.StateJson("t")),
            Json(R"({"a":{"metas":[{"phx_ref":"2"}]},"b":{"metas":[{"phx_ref":"3"}]}})"));
  ASSERT_TRUE(r.ApplyDiff("t", Diff("{}", R"({"a":{"metas":[{"phx_ref":"2"}]}})")).ok());
  EXPECT_EQ(r.StateJson("t"), R"({"b":{"metas":[{"phx_ref":"3"}]}})");
  EXPECT_EQ(r.metas(), 1u);
  EXPECT_EQ(r.bytes(), Bytes("b", {{"3", R"({"phx_ref":"3"})"}}));
}

TEST(RemotePresenceTest, ADiffAppliesItsJoinsBeforeItsLeaves) {
  RemotePresence r;
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1"}]}})",
                                    R"({"a":{"metas":[{"phx_ref":"1"}]}})"))
                  .ok());
  EXPECT_EQ(r.StateJson("t"), "{}");
  EXPECT_TRUE(r.Has("t")) << "a diff came";
  EXPECT_EQ(r.metas(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
}

TEST(RemotePresenceTest, WhenEveryoneLeavesNothingIsCountedAndDropForgetsTheTopic) {
  RemotePresence r;
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1","n":1}]},
                                       "b\"c":{"metas":[{"phx_ref":"2"}]}})",
                                    "{}"))
                  .ok());
  ASSERT_TRUE(r.Replace("u", R"({"a":{"metas":[{"phx_ref":"9"}]}})").ok());
  EXPECT_EQ(r.metas(), 3u);
  EXPECT_EQ(r.bytes(), Bytes("a", {{"1", R"({"phx_ref":"1","n":1})"}}) +
                           Bytes("b\"c", {{"2", R"({"phx_ref":"2"})"}}) +
                           Bytes("a", {{"9", R"({"phx_ref":"9"})"}}));
  ASSERT_TRUE(r.ApplyDiff("t", Diff("{}", R"({"a":{"metas":[{"phx_ref":"1"}]},
                                              "b\"c":{"metas":[{"phx_ref":"2"}]}})"))
                  .ok());
  EXPECT_EQ(r.metas(), 1u);
  EXPECT_EQ(r.bytes(), Bytes("a", {{"9", R"({"phx_ref":"9"})"}}));
  r.Drop("u");
  EXPECT_FALSE(r.Has("u"));
  EXPECT_EQ(r.StateJson("u"), "{}");
  EXPECT_EQ(r.metas(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
  EXPECT_TRUE(r.Has("t"));
  r.Drop("t");
  r.Drop("never");
  EXPECT_EQ(r.topics(), 0u);
}

TEST(RemotePresenceTest, ReplaceReturnsExactlyWhatChangedFromWhatWasKnown) {
  RemotePresence r;
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1"},{"phx_ref":"2","v":1}]},
                                       "b":{"metas":[{"phx_ref":"3"}]},
                                       "c":{"metas":[{"phx_ref":"4"}]}})",
                                    "{}"))
                  .ok());
  // 1 stays, 2 changes its text, 3 goes, 4 stays, 5 and 6 are new.
  const std::string next = R"({"a":{"metas":[{"phx_ref":"1"},{"phx_ref":"2","v":2},
                                             {"phx_ref":"5"}]},
                               "c":{"metas":[{"phx_ref":"4"}]},
                               "d":{"metas":[{"phx_ref":"6"}]}})";
  auto d = r.Replace("t", next);
  ASSERT_TRUE(d.ok()) << d.status().message();
  ASSERT_TRUE(d.value());
  EXPECT_EQ(Json(*d.value()), Json(R"({"joins":{"a":{"metas":[{"phx_ref":"2","v":2},
                                                             {"phx_ref":"5"}]},
                                                "d":{"metas":[{"phx_ref":"6"}]}},
                                       "leaves":{"b":{"metas":[{"phx_ref":"3"}]}}})"));
  EXPECT_EQ(Json(r.StateJson("t")), Json(next));
  EXPECT_EQ(r.metas(), 5u);
  EXPECT_EQ(r.bytes(), Bytes("a", {{"1", R"({"phx_ref":"1"})"},
                                   {"2", R"({"phx_ref":"2","v":2})"},
                                   {"5", R"({"phx_ref":"5"})"}}) +
                           Bytes("c", {{"4", R"({"phx_ref":"4"})"}}) +
                           Bytes("d", {{"6", R"({"phx_ref":"6"})"}}));

  d = r.Replace("t", next);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d.value()) << "the same state again changes nothing";
  d = r.Replace("t", "{}");
  ASSERT_TRUE(d.ok() && d.value());
  EXPECT_EQ(Json(*d.value()), Json(R"({"joins":{},"leaves":)" + next + "}"));
  EXPECT_TRUE(r.Has("t")) << "a snapshot with nobody is still known";
  EXPECT_EQ(r.metas(), 0u);
  EXPECT_EQ(r.bytes(), 0u);
}

TEST(RemotePresenceTest, ReplaceOfAnUnknownTopicJoinsAllAndAnEmptyOneIsKnownUnchanged) {
  RemotePresence r;
  auto d = r.Replace("t", R"({"a":{"metas":[{"phx_ref":"1"}]}})");
  ASSERT_TRUE(d.ok() && d.value());
  EXPECT_EQ(Json(*d.value()), Json(R"({"joins":{"a":{"metas":[{"phx_ref":"1"}]}},"leaves":{}})"));
  d = r.Replace("u", "{}");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d.value());
  EXPECT_TRUE(r.Has("u"));
  EXPECT_EQ(r.topics(), 2u);
}

// Each is refused with nothing changed: a known topic keeps its state and an
// unknown one stays unknown.
TEST(RemotePresenceTest, MalformedInputIsRefusedAndChangesNothing) {
  std::string deep = R"({"phx_ref":"9","x":)";
  for (int i = 0; i < 70; ++i) deep += '[';
  for (int i = 0; i < 70; ++i) deep += ']';
  deep += '}';
  const std::vector<std::string> states = {
      "",
      "not json",
      "[]",
      R"({"a":[]})",
      R"({"a":{"metas":{}}})",
      R"({"a":{"no_metas":[]}})",
      R"({"a":{"metas":[1]}})",
      R"({"a":{"metas":[{"no_ref":1}]}})",
      R"({"a":{"metas":[{"phx_ref":7}]}})",
      R"({"a":{"metas":[{"phx_ref":"7"}, {"phx_ref":null}]}})",
      R"({"a":{"metas":[)" + deep + "]}}",
  };
  const std::vector<std::string> diffs = {
      "",
      "{",
      "[]",
      R"({"joins":{}})",
      R"({"leaves":{}})",
      R"({"joins":[],"leaves":{}})",
      R"({"joins":{},"leaves":null})",
  };
  RemotePresence r;
  const std::string known = R"({"a":{"metas":[{"phx_ref":"1"}]}})";
  ASSERT_TRUE(r.Replace("t", known).ok());
  const size_t metas = r.metas(), bytes = r.bytes();
  auto unchanged = [&](const std::string& input) {
    EXPECT_EQ(r.StateJson("t"), known) << input;
    EXPECT_FALSE(r.Has("u")) << input;
    EXPECT_EQ(r.metas(), metas) << input;
    EXPECT_EQ(r.bytes(), bytes) << input;
  };
  for (const std::string& s : states) {
    EXPECT_FALSE(r.Replace("t", s).ok()) << s;
    EXPECT_FALSE(r.Replace("u", s).ok()) << s;
    unchanged(s);
    // A state's body is no valid side of a diff either, whichever side.
    if (s.empty() || s[0] != '{' || s == "not json") continue;
    for (const std::string& d : {Diff(s, "{}"), Diff("{}", s)}) {
      EXPECT_FALSE(r.ApplyDiff("t", d).ok()) << d;
      EXPECT_FALSE(r.ApplyDiff("u", d).ok()) << d;
      unchanged(d);
    }
  }
  for (const std::string& d : diffs) {
    EXPECT_FALSE(r.ApplyDiff("t", d).ok()) << d;
    EXPECT_FALSE(r.ApplyDiff("u", d).ok()) << d;
    unchanged(d);
  }
}

TEST(RemotePresenceTest, AMetaNestedWithinTheLimitIsTaken) {
  std::string nested;
  for (int i = 0; i < 60; ++i) nested += '[';
  for (int i = 0; i < 60; ++i) nested += ']';
  RemotePresence r;
  ASSERT_TRUE(r.Replace("t", R"({"a":{"metas":[{"phx_ref":"1","x":)" + nested + "}]}}").ok());
  EXPECT_EQ(r.metas(), 1u);
}

TEST(RemotePresenceTest, StateJsonEscapesKeysAndGroupsEachKeysMetas) {
  RemotePresence r;
  EXPECT_EQ(r.StateJson("t"), "{}");
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a\"b\\c\n":{"metas":[{"phx_ref":"1","s":"\u00e9"}]},
                                       "d":{"metas":[{"phx_ref":"2"}]}})",
                                    "{}"))
                  .ok());
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"d":{"metas":[{"phx_ref":"3"}]}})", "{}")).ok());
  const std::string state = r.StateJson("t");
  EXPECT_EQ(Json(state), Json(R"({"a\"b\\c\n":{"metas":[{"phx_ref":"1","s":"\u00e9"}]},
                                  "d":{"metas":[{"phx_ref":"2"},{"phx_ref":"3"}]}})"));
  // What a hand-off exports, the new process reads back the same.
  RemotePresence copy;
  auto d = copy.Replace("t", state);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(Json(copy.StateJson("t")), Json(state));
  EXPECT_EQ(copy.bytes(), r.bytes());
  d = r.Replace("t", state);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d.value());
}

TEST(RemotePresenceTest, MergedStatePutsLocalMetasFirstUnderAKeyAndAddsRemoteKeys) {
  RemotePresence r;
  ASSERT_TRUE(r.Replace("t", R"({"a":{"metas":[{"phx_ref":"r1"},{"phx_ref":"r2"}]},
                                 "b\"":{"metas":[{"phx_ref":"r3"}]}})")
                  .ok());
  const std::string local = R"({"a":{"metas":[{"phx_ref":"l1","n":1}]},
                                "c":{"metas":[{"phx_ref":"l2"}]},
                                "e":{"metas":[]}})";
  const std::string merged = r.MergedStateJson("t", local);
  EXPECT_EQ(Json(merged), Json(R"({"a":{"metas":[{"phx_ref":"l1","n":1},{"phx_ref":"r1"},
                                                  {"phx_ref":"r2"}]},
                                   "c":{"metas":[{"phx_ref":"l2"}]},
                                   "e":{"metas":[]},
                                   "b\"":{"metas":[{"phx_ref":"r3"}]}})"));
  EXPECT_EQ(Json(r.MergedStateJson("t", "{}")), Json(r.StateJson("t")));
  // The remote metas go into an empty local list as well.
  EXPECT_EQ(Json(r.MergedStateJson("t", R"({"b\"":{"metas":[]}})")),
            Json(R"({"a":{"metas":[{"phx_ref":"r1"},{"phx_ref":"r2"}]},
                     "b\"":{"metas":[{"phx_ref":"r3"}]}})"));
}

TEST(RemotePresenceTest, MergedStateIsTheLocalStateAsGivenWithoutRemoteMetas) {
  // As given, byte for byte: not parsed again when there is nothing to add.
  const std::string local = R"({ "x" : {"metas":[ ]} })";
  RemotePresence r;
  EXPECT_EQ(r.MergedStateJson("t", local), local) << "nothing known";
  ASSERT_TRUE(r.Replace("t", "{}").ok());
  EXPECT_EQ(r.MergedStateJson("t", local), local) << "nobody on the other shards";
  ASSERT_TRUE(r.ApplyDiff("t", Diff(R"({"a":{"metas":[{"phx_ref":"1"}]}})", "{}")).ok());
  EXPECT_EQ(r.MergedStateJson("t", "not json"), "not json") << "an unreadable local state";
  ASSERT_TRUE(r.ApplyDiff("t", Diff("{}", R"({"a":{"metas":[{"phx_ref":"1"}]}})")).ok());
  EXPECT_EQ(r.MergedStateJson("t", local), local) << "everyone left";
}

TEST(RemotePresenceTest, ReplaceReportsWhatChangedAndNothingWhenNothingDid) {
  RemotePresence r;
  auto d = r.Replace("t", R"({"a":{"metas":[{"phx_ref":"1"}]},"b":{"metas":[{"phx_ref":"2"}]}})");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d.value());
  d = r.Replace("t", R"({"a":{"metas":[{"phx_ref":"1"}]},"c":{"metas":[{"phx_ref":"3"}]}})");
  ASSERT_TRUE(d.ok() && d.value());
  EXPECT_EQ(Json(*d.value()), Json(R"({"joins":{"c":{"metas":[{"phx_ref":"3"}]}},
                                        "leaves":{"b":{"metas":[{"phx_ref":"2"}]}}})"));
  d = r.Replace("t", R"({"a":{"metas":[{"phx_ref":"1"}]},"c":{"metas":[{"phx_ref":"3"}]}})");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d.value());
  EXPECT_FALSE(r.Replace("t", R"({"a":{"metas":[{"no_ref":1}]}})").ok());
  EXPECT_EQ(Json(r.StateJson("t")),
            Json(R"({"a":{"metas":[{"phx_ref":"1"}]},"c":{"metas":[{"phx_ref":"3"}]}})"));
}

TEST(RemotePresenceTest, DiffsReplaceByRefAndLeavesEmptyKeysOut) {
  RemotePresence r;
  ASSERT_TRUE(
      r.ApplyDiff("t", R"({"joins":{"a":{"metas":[{"phx_ref":"1","v":1}]}},"leaves":{}})").ok());
  ASSERT_TRUE(
      r.ApplyDiff("t", R"({"joins":{"a":{"metas":[{"phx_ref":"1","v":2}]}},"leaves":{}})").ok());
  EXPECT_EQ(Json(r.StateJson("t")), Json(R"({"a":{"metas":[{"phx_ref":"1","v":2}]}})"));
  ASSERT_TRUE(r.ApplyDiff("t", R"({"joins":{},"leaves":{"a":{"metas":[{"phx_ref":"1"}]}}})").ok());
  EXPECT_EQ(r.StateJson("t"), "{}");
  EXPECT_FALSE(r.ApplyDiff("t", R"({"joins":[]})").ok());
  EXPECT_EQ(Json(r.MergedStateJson("u", R"({"x":{"metas":[]}})")), Json(R"({"x":{"metas":[]}})"));
}

}  // namespace
}  // namespace sb::worker
