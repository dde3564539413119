// PresenceRegistry: cluster presence per topic and link, and its diffs.

#include "broker/presence_registry.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "protocol/testing/json.h"

namespace sb::broker {
namespace {

using test::Json;

// A meta as a shard stores it: phx_ref first, then the client's fields.
PresenceMeta Join(std::string key, std::string ref, std::string fields = "") {
  std::string json = "{\"phx_ref\":\"" + ref + "\"" + (fields.empty() ? "" : "," + fields) + "}";
  return PresenceMeta{std::move(key), std::move(ref), std::move(json)};
}
PresenceMeta Leave(std::string key, std::string ref) {
  return PresenceMeta{std::move(key), std::move(ref), ""};
}

std::optional<std::string> Apply(PresenceRegistry& r, LinkId link, std::string_view topic,
                                 std::vector<PresenceMeta> joins,
                                 std::vector<PresenceMeta> leaves = {}) {
  auto result = r.ApplyDiff(link, topic, joins, leaves);
  EXPECT_TRUE(result.ok()) << result.status().message();
  if (!result.ok() || !result.value()) return std::nullopt;
  return DiffJson(*result.value());
}

std::map<std::string, std::string> ByTopic(const std::vector<TopicDiff>& diffs) {
  std::map<std::string, std::string> out;
  for (const auto& d : diffs) {
    EXPECT_TRUE(out.emplace(d.topic, DiffJson(d.delta)).second) << "two diffs for " << d.topic;
  }
  return out;
}

TEST(PresenceRegistryTest, JoinReturnsThePhoenixDiffShape) {
  PresenceRegistry r;
  auto diff = Apply(r, 1, "room:1", {Join("alice", "a1", R"("device":"web")")});
  ASSERT_TRUE(diff);
  EXPECT_EQ(*diff,
            R"({"joins":{"alice":{"metas":[{"phx_ref":"a1","device":"web"}]}},"leaves":{}})");
  EXPECT_EQ(r.StateJson("room:1"), R"({"alice":{"metas":[{"phx_ref":"a1","device":"web"}]}})");
  EXPECT_EQ(r.topics(), 1u);
  EXPECT_EQ(r.metas(), 1u);
}

TEST(PresenceRegistryTest, LeavesCarryTheStoredMeta) {
  PresenceRegistry r;
  Apply(r, 1, "room:1", {Join("alice", "a1", R"("n":1)")});
  auto diff = Apply(r, 1, "room:1", {}, {Leave("alice", "a1")});
  ASSERT_TRUE(diff);
  EXPECT_EQ(*diff, R"({"joins":{},"leaves":{"alice":{"metas":[{"phx_ref":"a1","n":1}]}}})");
  EXPECT_EQ(r.StateJson("room:1"), "{}");
  // Emptied: the topic and the link's index are released.
  EXPECT_EQ(r.topics(), 0u);
  EXPECT_EQ(r.metas(), 0u);
  EXPECT_EQ(r.links(), 0u);
}

TEST(PresenceRegistryTest, ResentJoinsAndUnknownLeavesChangeNothing) {
  PresenceRegistry r;
  Apply(r, 1, "room:1", {Join("alice", "a1")});
  EXPECT_EQ(Apply(r, 1, "room:1", {Join("alice", "a1")}), std::nullopt);
  EXPECT_EQ(Apply(r, 1, "room:1", {}, {Leave("alice", "zz")}), std::nullopt);
  EXPECT_EQ(Apply(r, 1, "room:1", {}, {Leave("bob", "a1")}), std::nullopt);
  EXPECT_EQ(Apply(r, 1, "other", {}, {Leave("alice", "a1")}), std::nullopt);
  // The same ref reported by another link is that link's meta, not this one's.
  EXPECT_EQ(Apply(r, 2, "room:1", {}, {Leave("alice", "a1")}), std::nullopt);
  EXPECT_EQ(r.topics(), 1u);  // the no-op leave on "other" created nothing
  EXPECT_EQ(r.metas(), 1u);
}

TEST(PresenceRegistryTest, AJoinWithTheSameRefAndNewTextReplacesTheMeta) {
  PresenceRegistry r;
  Apply(r, 1, "room:1", {Join("alice", "a1", R"("s":"away")")});
  auto diff = Apply(r, 1, "room:1", {Join("alice", "a1", R"("s":"here")")});
  ASSERT_TRUE(diff);
  EXPECT_EQ(Json(*diff),
            Json(R"({"joins":{"alice":{"metas":[{"phx_ref":"a1","s":"here"}]}},"leaves":{}})"));
  EXPECT_EQ(r.metas(), 1u);
  EXPECT_EQ(Json(r.StateJson("room:1")),
            Json(R"({"alice":{"metas":[{"phx_ref":"a1","s":"here"}]}})"));
}

TEST(PresenceRegistryTest, OneDiffGroupsJoinsAndLeavesByKey) {
  PresenceRegistry r;
  Apply(r, 1, "room:1", {Join("alice", "a1"), Join("bob", "b1")});
  auto diff = Apply(r, 1, "room:1", {Join("alice", "a2"), Join("carol", "c1"), Join("alice", "a3")},
                    {Leave("bob", "b1"), Leave("alice", "a1")});
  ASSERT_TRUE(diff);
  EXPECT_EQ(
      *diff,
      R"({"joins":{"alice":{"metas":[{"phx_ref":"a2"},{"phx_ref":"a3"}]},)"
      R"("carol":{"metas":[{"phx_ref":"c1"}]}},)"
      R"("leaves":{"bob":{"metas":[{"phx_ref":"b1"}]},"alice":{"metas":[{"phx_ref":"a1"}]}}})");
  EXPECT_EQ(r.metas(), 3u);
}

TEST(PresenceRegistryTest, InvalidJoinsAreRefusedAndNothingChanges) {
  PresenceRegistry r;
  Apply(r, 1, "room:1", {Join("alice", "a1")});
  std::vector<PresenceMeta> bad = {
      PresenceMeta{"bob", "b1", "[1]"},
      PresenceMeta{"bob", "b1", "{"},
      PresenceMeta{"bob", "b1", ""},
      PresenceMeta{"bob", "b1", R"({"x":1})"},              // no phx_ref
      PresenceMeta{"bob", "b1", R"({"phx_ref":"other"})"},  // not the one given
      PresenceMeta{"bob", "b1", R"({"phx_ref":1})"},        // not a string
      PresenceMeta{"bob", "", R"({"phx_ref":""})"},         // empty ref
  };
  for (const PresenceMeta& m : bad) {
    auto result = r.ApplyDiff(1, "room:1", {Join("carol", "c1"), m}, {Leave("alice", "a1")});
    ASSERT_FALSE(result.ok()) << m.meta_json;
    EXPECT_EQ(result.status().code(), Status::Code::kRefused);
  }
  EXPECT_EQ(r.StateJson("room:1"), R"({"alice":{"metas":[{"phx_ref":"a1"}]}})");
  EXPECT_EQ(r.metas(), 1u);
}

TEST(PresenceRegistryTest, KeysAreEscaped) {
  PresenceRegistry r;
  auto diff = Apply(r, 1, "room:1", {Join("a\"b\\c", "r1")});
  ASSERT_TRUE(diff);
  auto v = Json(*diff);
  EXPECT_TRUE(v.at("joins").as_object().contains("a\"b\\c"));
}

TEST(PresenceRegistryTest, StateMergesAKeyAcrossLinks) {
  PresenceRegistry r;
  Apply(r, 2, "room:1", {Join("alice", "s2.1", R"("d":"phone")")});
  Apply(r, 1, "room:1", {Join("alice", "s1.1", R"("d":"web")"), Join("bob", "s1.2")});
  Apply(r, 3, "room:1", {Join("carol", "s3.1")});
  Apply(r, 3, "elsewhere", {Join("dave", "s3.2")});
  // alice's metas: link 2's first (it reported first), then link 1's.
  EXPECT_EQ(
      Json(r.StateJson("room:1")),
      Json(R"({"alice":{"metas":[{"phx_ref":"s2.1","d":"phone"},{"phx_ref":"s1.1","d":"web"}]},
                     "bob":{"metas":[{"phx_ref":"s1.2"}]},
                     "carol":{"metas":[{"phx_ref":"s3.1"}]}})"));
  // What the other links report, for a shard that knows its own.
  EXPECT_EQ(Json(r.StateJson("room:1", 1)),
            Json(R"({"alice":{"metas":[{"phx_ref":"s2.1","d":"phone"}]},
                     "carol":{"metas":[{"phx_ref":"s3.1"}]}})"));
  EXPECT_EQ(r.StateJson("nobody"), "{}");
  EXPECT_EQ(r.topics(), 2u);
  EXPECT_EQ(r.links(), 3u);
}

TEST(PresenceRegistryTest, RemoveShardGivesOneDiffPerTopicWithEveryLeave) {
  PresenceRegistry r;
  Apply(r, 1, "room:1", {Join("alice", "a1"), Join("alice", "a2"), Join("bob", "b1")});
  Apply(r, 1, "room:2", {Join("carol", "c1")});
  Apply(r, 2, "room:1", {Join("alice", "x1")});
  Apply(r, 2, "room:3", {Join("zed", "z1")});
  auto diffs = ByTopic(r.RemoveShard(1));
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_EQ(Json(diffs["room:1"]), Json(R"({"joins":{},"leaves":{
                      "alice":{"metas":[{"phx_ref":"a1"},{"phx_ref":"a2"}]},
                      "bob":{"metas":[{"phx_ref":"b1"}]}}})"));
  EXPECT_EQ(Json(diffs["room:2"]),
            Json(R"({"joins":{},"leaves":{"carol":{"metas":[{"phx_ref":"c1"}]}}})"));
  // Link 2's metas stay, alice included; room:2 is released.
  EXPECT_EQ(r.StateJson("room:1"), R"({"alice":{"metas":[{"phx_ref":"x1"}]}})");
  EXPECT_EQ(r.StateJson("room:2"), "{}");
  EXPECT_EQ(r.topics(), 2u);
  EXPECT_EQ(r.metas(), 2u);
  EXPECT_EQ(r.links(), 1u);
  EXPECT_TRUE(r.RemoveShard(1).empty());
  EXPECT_TRUE(r.RemoveShard(42).empty());
}

TEST(PresenceRegistryTest, RemoveShardWithManyMetasStillOneDiff) {
  PresenceRegistry r;
  std::vector<PresenceMeta> joins;
  for (int i = 0; i < 1000; ++i)
    joins.push_back(Join("user" + std::to_string(i % 300), "r" + std::to_string(i)));
  Apply(r, 7, "big", joins);
  auto diffs = r.RemoveShard(7);
  ASSERT_EQ(diffs.size(), 1u);
  auto leaves = Json(DiffJson(diffs[0].delta)).at("leaves").as_object();
  EXPECT_EQ(leaves.size(), 300u);
  size_t metas = 0;
  for (const auto& kv : leaves) metas += kv.value().at("metas").as_array().size();
  EXPECT_EQ(metas, 1000u);
  EXPECT_EQ(r.topics(), 0u);
  EXPECT_EQ(r.metas(), 0u);
}

TEST(PresenceRegistryTest, ReplaceShardDiffsAgainstWhatWasKnown) {
  PresenceRegistry r;
  Apply(r, 1, "kept", {Join("alice", "a1"), Join("bob", "b1"), Join("carol", "c1", R"("v":1)")});
  Apply(r, 1, "dropped", {Join("dave", "d1")});
  Apply(r, 1, "same", {Join("erin", "e1")});
  Apply(r, 2, "kept", {Join("alice", "x1")});
  auto result = r.ReplaceShard(
      1,
      {
          TopicPresence{
              "kept", {Join("alice", "a1"), Join("carol", "c1", R"("v":2)"), Join("frank", "f1")}},
          TopicPresence{"same", {Join("erin", "e1")}},
          TopicPresence{"new", {Join("gina", "g1")}},
      });
  ASSERT_TRUE(result.ok()) << result.status().message();
  auto diffs = ByTopic(result.value());
  ASSERT_EQ(diffs.size(), 3u);  // nothing for "same"
  EXPECT_EQ(Json(diffs["kept"]), Json(R"({"joins":{"carol":{"metas":[{"phx_ref":"c1","v":2}]},
                              "frank":{"metas":[{"phx_ref":"f1"}]}},
                     "leaves":{"bob":{"metas":[{"phx_ref":"b1"}]}}})"));
  EXPECT_EQ(Json(diffs["dropped"]),
            Json(R"({"joins":{},"leaves":{"dave":{"metas":[{"phx_ref":"d1"}]}}})"));
  EXPECT_EQ(Json(diffs["new"]),
            Json(R"({"joins":{"gina":{"metas":[{"phx_ref":"g1"}]}},"leaves":{}})"));
  // Link 1 reported first on "kept" and stays first: its resync kept metas there.
  EXPECT_EQ(Json(r.StateJson("kept")),
            Json(R"({"alice":{"metas":[{"phx_ref":"a1"},{"phx_ref":"x1"}]},
                     "carol":{"metas":[{"phx_ref":"c1","v":2}]},
                     "frank":{"metas":[{"phx_ref":"f1"}]}})"));
  EXPECT_EQ(r.StateJson("dropped"), "{}");
  EXPECT_EQ(r.topics(), 3u);  // kept, same, new
  EXPECT_EQ(r.metas(), 6u);   // x1 a1 c1 f1 e1 g1
}

TEST(PresenceRegistryTest, ReplaceShardWithTheSameStateIsSilent) {
  PresenceRegistry r;
  Apply(r, 1, "a", {Join("k", "1"), Join("k", "2")});
  auto result = r.ReplaceShard(1, {TopicPresence{"a", {Join("k", "2"), Join("k", "1")}}});
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result.value().empty());
  // An unknown link's resync is all joins; an empty resync is RemoveShard.
  auto fresh = r.ReplaceShard(9, {TopicPresence{"a", {Join("k", "9")}}});
  ASSERT_TRUE(fresh.ok());
  ASSERT_EQ(fresh.value().size(), 1u);
  auto gone = r.ReplaceShard(1, {});
  ASSERT_TRUE(gone.ok());
  ASSERT_EQ(gone.value().size(), 1u);
  EXPECT_EQ(Json(DiffJson(gone.value()[0].delta)),
            Json(R"({"joins":{},"leaves":{"k":{"metas":[{"phx_ref":"1"},{"phx_ref":"2"}]}}})"));
  EXPECT_EQ(r.StateJson("a"), R"({"k":{"metas":[{"phx_ref":"9"}]}})");
}

TEST(PresenceRegistryTest, ReplaceShardMergesRepeatsLastTextWins) {
  PresenceRegistry r;
  auto result =
      r.ReplaceShard(1, {TopicPresence{"a", {Join("k", "1", R"("v":1)")}},
                         TopicPresence{"a", {Join("k", "1", R"("v":2)"), Join("k", "2")}}});
  ASSERT_TRUE(result.ok());
  ASSERT_EQ(result.value().size(), 1u);
  EXPECT_EQ(Json(DiffJson(result.value()[0].delta)),
            Json(R"({"joins":{"k":{"metas":[{"phx_ref":"1","v":2},{"phx_ref":"2"}]}},
                     "leaves":{}})"));
  EXPECT_EQ(r.metas(), 2u);
}

TEST(PresenceRegistryTest, ReplaceShardRefusesAnInvalidMetaAndChangesNothing) {
  PresenceRegistry r;
  Apply(r, 1, "a", {Join("k", "1")});
  auto result = r.ReplaceShard(1, {TopicPresence{"b", {Join("k", "2")}},
                                   TopicPresence{"c", {PresenceMeta{"k", "3", "nope"}}}});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), Status::Code::kRefused);
  EXPECT_EQ(r.StateJson("a"), R"({"k":{"metas":[{"phx_ref":"1"}]}})");
  EXPECT_EQ(r.topics(), 1u);
}

// A Phoenix client's Presence.syncDiff (phoenix.js): joins first (a join
// replaces metas with the same phx_ref), then leaves.
void SyncDiff(boost::json::object& state, const boost::json::value& diff) {
  for (const auto& [key, joined] : diff.at("joins").as_object()) {
    boost::json::array metas;
    if (auto* cur = state.if_contains(key)) {
      for (const auto& m : cur->at("metas").as_array()) {
        bool replaced = false;
        for (const auto& j : joined.at("metas").as_array()) {
          replaced |= j.at("phx_ref") == m.at("phx_ref");
        }
        if (!replaced) metas.push_back(m);
      }
    }
    for (const auto& j : joined.at("metas").as_array()) metas.push_back(j);
    state[key] = boost::json::object{{"metas", std::move(metas)}};
  }
  for (const auto& [key, left] : diff.at("leaves").as_object()) {
    auto* cur = state.if_contains(key);
    if (!cur) continue;
    boost::json::array kept;
    for (const auto& m : cur->at("metas").as_array()) {
      bool gone = false;
      for (const auto& l : left.at("metas").as_array()) gone |= l.at("phx_ref") == m.at("phx_ref");
      if (!gone) kept.push_back(m);
    }
    if (kept.empty()) {
      state.erase(key);
    } else {
      cur->at("metas").as_array() = std::move(kept);
    }
  }
}

// Key -> sorted meta texts: states compared regardless of meta order.
std::map<std::string, std::vector<std::string>> Canonical(const boost::json::object& state) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [key, v] : state) {
    auto& metas = out[std::string(key)];
    for (const auto& m : v.at("metas").as_array()) metas.push_back(boost::json::serialize(m));
    std::sort(metas.begin(), metas.end());
  }
  return out;
}

// Random diffs, deaths and resyncs from several links. A client that took
// each topic's state once, at the start, and then applied every diff the
// registry returned must always see exactly the registry's state.
TEST(PresenceRegistryTest, ClientsApplyingTheDiffsStayInSync) {
  std::mt19937 rng(99);
  PresenceRegistry r;
  const std::vector<std::string> topics = {"t0", "t1", "t2"};
  std::map<std::string, boost::json::object> views;  // the clients' states, all empty at start
  auto meta = [&](LinkId link) {
    return Join("k" + std::to_string(rng() % 5),
                std::to_string(link) + "." + std::to_string(rng() % 8),
                "\"v\":" + std::to_string(rng() % 3));
  };
  auto sync = [&](const std::string& topic, const std::string& diff) {
    SyncDiff(views[topic], Json(diff));
  };
  for (int step = 0; step < 3000; ++step) {
    LinkId link = 1 + rng() % 4;
    const std::string& topic = topics[rng() % topics.size()];
    switch (rng() % 8) {
      case 6:
        for (const auto& d : r.RemoveShard(link)) sync(d.topic, DiffJson(d.delta));
        break;
      case 7: {
        std::vector<TopicPresence> state;
        for (const auto& t : topics) {
          if (rng() % 2) continue;
          TopicPresence tp{t, {}};
          for (int i = rng() % 6; i > 0; --i) tp.metas.push_back(meta(link));
          state.push_back(std::move(tp));
        }
        auto result = r.ReplaceShard(link, state);
        ASSERT_TRUE(result.ok()) << result.status().message();
        for (const auto& d : result.value()) sync(d.topic, DiffJson(d.delta));
        break;
      }
      default: {
        std::vector<PresenceMeta> joins;
        std::vector<PresenceMeta> leaves;
        for (int i = rng() % 4; i > 0; --i) joins.push_back(meta(link));
        for (int i = rng() % 4; i > 0; --i) leaves.push_back(meta(link));
        if (auto diff = Apply(r, link, topic, joins, leaves)) sync(topic, *diff);
        break;
      }
    }
    for (const auto& t : topics) {
      ASSERT_EQ(Canonical(views[t]), Canonical(Json(r.StateJson(t)).as_object()))
          << "step " << step << " topic " << t;
    }
  }
  for (LinkId link = 1; link <= 4; ++link) {
    for (const auto& d : r.RemoveShard(link)) sync(d.topic, DiffJson(d.delta));
  }
  for (const auto& t : topics) EXPECT_TRUE(views[t].empty()) << t;
  EXPECT_EQ(r.topics(), 0u);
  EXPECT_EQ(r.metas(), 0u);
  EXPECT_EQ(r.links(), 0u);
}

}  // namespace
}  // namespace sb::broker
