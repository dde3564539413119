// PendingPresence: a shard's unsent presence changes, merged per topic.

#include "broker/pending_presence.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>
#include <vector>

namespace sb::broker {
namespace {

PresenceMeta M(std::string key, std::string ref, std::string text = "") {
  if (text.empty()) text = "{\"phx_ref\":\"" + ref + "\"}";
  return PresenceMeta{std::move(key), std::move(ref), std::move(text)};
}
PresenceDelta Joins(std::vector<PresenceMeta> joins) { return {std::move(joins), {}}; }
PresenceDelta Leaves(std::vector<PresenceMeta> leaves) { return {{}, std::move(leaves)}; }

// What a client holds of one topic after applying diffs as phoenix.js does
// (joins by phx_ref first, then leaves): key → phx_ref → text.
using View = std::map<std::string, std::map<std::string, std::string>>;
void ApplyTo(View& view, const PresenceDelta& d) {
  for (const PresenceMeta& m : d.joins) view[m.key][m.phx_ref] = m.meta_json;
  for (const PresenceMeta& m : d.leaves) {
    auto k = view.find(m.key);
    if (k == view.end()) continue;
    k->second.erase(m.phx_ref);
    if (k->second.empty()) view.erase(k);
  }
}

TEST(PendingPresenceTest, ChangesOfOneTopicGoAsOneDiff) {
  PendingPresence p;
  p.Add("room:1", Joins({M("a", "1")}), 10);
  p.Add("room:1", Joins({M("b", "2")}), 20);
  p.Add("room:1", Leaves({M("c", "3")}), 30);
  EXPECT_EQ(p.topics(), 1u);
  EXPECT_EQ(p.metas(), 3u);
  EXPECT_EQ(p.oldest_us(), 10);
  std::vector<TopicDiff> out = p.Take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "room:1");
  EXPECT_EQ(out[0].delta.joins.size(), 2u);
  ASSERT_EQ(out[0].delta.leaves.size(), 1u);
  EXPECT_EQ(out[0].delta.leaves[0].key, "c");
  EXPECT_TRUE(p.empty());
  EXPECT_EQ(p.metas(), 0u);
}

TEST(PendingPresenceTest, AJoinThatLeavesBeforeItIsSentCancelsOut) {
  PendingPresence p;
  p.Add("t", Joins({M("a", "1")}), 1);
  p.Add("t", Leaves({M("a", "1")}), 2);
  EXPECT_TRUE(p.empty());
  EXPECT_TRUE(p.Take().empty());
  // The next change starts a new age.
  p.Add("t", Joins({M("b", "2")}), 50);
  EXPECT_EQ(p.oldest_us(), 50);
}

TEST(PendingPresenceTest, ALeaveAndTheSameMetaBackCancelsOut) {
  // A shard's resync after its link was dropped: every meta leaves, then
  // comes back as it was. The other shards need hear nothing of it.
  PendingPresence p;
  p.Add("t", Leaves({M("a", "1", R"({"phx_ref":"1","v":1})")}), 1);
  p.Add("t", Joins({M("a", "1", R"({"phx_ref":"1","v":1})")}), 2);
  EXPECT_TRUE(p.empty());
}

TEST(PendingPresenceTest, ALeaveAndTheMetaBackChangedIsAReplacement) {
  PendingPresence p;
  p.Add("t", Leaves({M("a", "1", R"({"phx_ref":"1","v":1})")}), 1);
  p.Add("t", Joins({M("a", "1", R"({"phx_ref":"1","v":2})")}), 2);
  std::vector<TopicDiff> out = p.Take();
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].delta.joins.size(), 1u);
  EXPECT_TRUE(out[0].delta.leaves.empty());
  EXPECT_EQ(out[0].delta.joins[0].meta_json, R"({"phx_ref":"1","v":2})");
  EXPECT_TRUE(out[0].delta.joins[0].replaces);
}

TEST(PendingPresenceTest, AReplacedMetaThatLeavesIsStillALeave) {
  // The shard has the old text: it must hear the leave.
  PendingPresence p;
  PresenceMeta replaced = M("a", "1", R"({"phx_ref":"1","v":2})");
  replaced.replaces = true;
  p.Add("t", Joins({replaced}), 1);
  p.Add("t", Leaves({M("a", "1", R"({"phx_ref":"1","v":2})")}), 2);
  std::vector<TopicDiff> out = p.Take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].delta.joins.empty());
  ASSERT_EQ(out[0].delta.leaves.size(), 1u);
  EXPECT_EQ(out[0].delta.leaves[0].phx_ref, "1");
}

TEST(PendingPresenceTest, AJoinWaitingTakesTheNewerText) {
  PendingPresence p;
  p.Add("t", Joins({M("a", "1", R"({"phx_ref":"1","v":1})")}), 1);
  PresenceMeta again = M("a", "1", R"({"phx_ref":"1","v":2})");
  again.replaces = true;
  p.Add("t", Joins({again}), 2);
  std::vector<TopicDiff> out = p.Take();
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].delta.joins.size(), 1u);
  EXPECT_EQ(out[0].delta.joins[0].meta_json, R"({"phx_ref":"1","v":2})");
  // First heard of as new: still new to the shard.
  EXPECT_FALSE(out[0].delta.joins[0].replaces);
}

TEST(PendingPresenceTest, TopicsComeInTheOrderTheyFirstChanged) {
  PendingPresence p;
  for (const char* t : {"c", "a", "d", "b"}) p.Add(t, Joins({M("k", t)}), 1);
  p.Add("c", Joins({M("k2", "x")}), 2);
  std::vector<std::string> order;
  for (const TopicDiff& d : p.Take()) order.push_back(d.topic);
  EXPECT_EQ(order, (std::vector<std::string>{"c", "a", "d", "b"}));
}

TEST(PendingPresenceTest, ASnapshotDropsWhatWaitsForItsTopic) {
  PendingPresence p;
  p.Add("a", Joins({M("k", "1"), M("k", "2")}), 1);
  p.Add("b", Joins({M("k", "3")}), 1);
  p.Drop("a");
  p.Drop("nothing");
  EXPECT_EQ(p.topics(), 1u);
  EXPECT_EQ(p.metas(), 1u);
  std::vector<TopicDiff> out = p.Take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].topic, "b");
}

TEST(PendingPresenceTest, KeysThatLookAlikeStayApart) {
  // ("a1", "2") and ("a", "12") must not be one entry.
  PendingPresence p;
  p.Add("t", Joins({M("a1", "2"), M("a", "12")}), 1);
  EXPECT_EQ(p.metas(), 2u);
  p.Add("t", Leaves({M("a", "12")}), 2);
  std::vector<TopicDiff> out = p.Take();
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].delta.joins.size(), 1u);
  EXPECT_EQ(out[0].delta.joins[0].key, "a1");
}

// Whatever the registry reports, and wherever the sends fall, a shard sent
// the merged diffs ends up holding what a shard sent every diff holds, and
// what the registry holds.
TEST(PendingPresenceTest, MergedDiffsLeaveAShardWhereEveryDiffWould) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    PresenceRegistry registry;
    PendingPresence pending;
    std::map<std::string, View> every;   // sent each diff as it happened
    std::map<std::string, View> merged;  // sent what waits, now and then
    const std::vector<std::string> topics = {"a", "b", "c"};
    auto pick = [&](int n) { return static_cast<int>(rng() % n); };
    for (int step = 0; step < 400; ++step) {
      const std::string topic = topics[pick(3)];
      const LinkId link = 1 + pick(3);
      const std::string key = "k" + std::to_string(pick(4));
      const std::string ref = std::to_string(link) + "-" + std::to_string(pick(5));
      const std::string text =
          "{\"phx_ref\":\"" + ref + "\",\"v\":" + std::to_string(pick(2)) + "}";
      std::vector<TopicDiff> changes;
      switch (pick(10)) {
        case 0:  // a link goes
          changes = registry.RemoveShard(link);
          break;
        case 1:
        case 2:
        case 3: {  // a leave
          auto r = registry.ApplyDiff(link, topic, {}, {PresenceMeta{key, ref, ""}});
          ASSERT_TRUE(r.ok());
          if (r.value()) changes.push_back({topic, *r.value()});
          break;
        }
        default: {  // a join, new or with a changed text
          auto r = registry.ApplyDiff(link, topic, {PresenceMeta{key, ref, text}}, {});
          ASSERT_TRUE(r.ok());
          if (r.value()) changes.push_back({topic, *r.value()});
        }
      }
      for (const TopicDiff& d : changes) {
        ApplyTo(every[d.topic], d.delta);
        pending.Add(d.topic, d.delta, step);
      }
      if (pick(7) == 0) {
        for (const TopicDiff& d : pending.Take()) ApplyTo(merged[d.topic], d.delta);
      }
    }
    for (const TopicDiff& d : pending.Take()) ApplyTo(merged[d.topic], d.delta);
    for (const std::string& t : topics) {
      EXPECT_EQ(merged[t], every[t]) << "seed " << seed << " topic " << t;
      View held;
      for (const PresenceMeta& m : registry.Metas(t, [](LinkId) { return true; })) {
        held[m.key][m.phx_ref] = m.meta_json;
      }
      EXPECT_EQ(merged[t], held) << "seed " << seed << " topic " << t;
    }
  }
}

}  // namespace
}  // namespace sb::broker
