// InterestTable: membership, exactly-once routing, removal and resync.

#include "broker/interest_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace sb::broker {
namespace {

std::vector<LinkId> Interested(const InterestTable& t, std::string_view topic) {
  const std::vector<LinkId>* links = t.Interested(topic);
  return links ? *links : std::vector<LinkId>{};
}

std::vector<LinkId> Route(const InterestTable& t, LinkId origin, std::string_view topic) {
  std::vector<LinkId> out;
  t.Route(origin, topic, &out);
  return out;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

using Topics = std::vector<std::string>;
using Links = std::vector<LinkId>;

TEST(InterestTableTest, EmptyTableHasNobody) {
  InterestTable t;
  EXPECT_EQ(t.Interested("room:1"), nullptr);
  EXPECT_TRUE(Route(t, 1, "room:1").empty());
  EXPECT_EQ(t.topics(), 0u);
  EXPECT_EQ(t.subscriptions(), 0u);
}

TEST(InterestTableTest, InterestedIsInSubscriptionOrder) {
  InterestTable t;
  EXPECT_TRUE(t.Subscribe(3, "room:1"));
  EXPECT_TRUE(t.Subscribe(1, "room:1"));
  EXPECT_TRUE(t.Subscribe(2, "room:1"));
  EXPECT_EQ(Interested(t, "room:1"), (Links{3, 1, 2}));
  EXPECT_EQ(t.topics(), 1u);
  EXPECT_EQ(t.subscriptions(), 3u);
  EXPECT_EQ(t.links(), 3u);
}

TEST(InterestTableTest, SubscribeAndUnsubscribeAreIdempotent) {
  InterestTable t;
  EXPECT_TRUE(t.Subscribe(1, "room:1"));
  EXPECT_FALSE(t.Subscribe(1, "room:1"));
  EXPECT_EQ(Interested(t, "room:1"), (Links{1}));
  EXPECT_EQ(t.subscriptions(), 1u);
  EXPECT_TRUE(t.Unsubscribe(1, "room:1"));
  EXPECT_FALSE(t.Unsubscribe(1, "room:1"));
  EXPECT_FALSE(t.Unsubscribe(2, "room:1"));
  EXPECT_FALSE(t.Unsubscribe(1, "never"));
  EXPECT_EQ(t.topics(), 0u);
  EXPECT_EQ(t.links(), 0u);
}

// The shard counts its local subscribers and subscribes on the first,
// unsubscribes on the last; the broker holds membership only. A duplicate
// subscribe (a resend) must not need a matching second unsubscribe.
TEST(InterestTableTest, MembershipIsNotRefCounted) {
  InterestTable t;
  ASSERT_TRUE(t.Subscribe(1, "room:1"));
  ASSERT_FALSE(t.Subscribe(1, "room:1"));
  EXPECT_TRUE(t.Unsubscribe(1, "room:1"));
  EXPECT_EQ(t.Interested("room:1"), nullptr);
}

TEST(InterestTableTest, ResubscribingGoesToTheBackOfTheOrder) {
  InterestTable t;
  t.Subscribe(1, "room:1");
  t.Subscribe(2, "room:1");
  t.Subscribe(3, "room:1");
  t.Unsubscribe(1, "room:1");
  EXPECT_EQ(Interested(t, "room:1"), (Links{2, 3}));
  EXPECT_TRUE(t.Subscribe(1, "room:1"));
  EXPECT_EQ(Interested(t, "room:1"), (Links{2, 3, 1}));
  EXPECT_EQ(t.subscriptions(), 3u);
}

TEST(InterestTableTest, RouteExcludesTheOriginAndKeepsOrder) {
  InterestTable t;
  for (LinkId l : {4, 2, 7, 5}) t.Subscribe(l, "room:1");
  EXPECT_EQ(Route(t, 7, "room:1"), (Links{4, 2, 5}));
  EXPECT_EQ(Route(t, 4, "room:1"), (Links{2, 7, 5}));
  // An origin that is not interested (a shard publishing to a topic it has
  // no subscriber for) excludes nobody.
  EXPECT_EQ(Route(t, 9, "room:1"), (Links{4, 2, 7, 5}));
  EXPECT_EQ(Route(t, kNoLink, "room:1"), (Links{4, 2, 7, 5}));
  // The only interested link is the origin: nobody else gets it.
  t.Subscribe(1, "solo");
  EXPECT_TRUE(Route(t, 1, "solo").empty());
}

TEST(InterestTableTest, RouteReplacesTheOutputsContents) {
  InterestTable t;
  t.Subscribe(1, "a");
  t.Subscribe(2, "a");
  std::vector<LinkId> out = {99, 98};
  t.Route(1, "a", &out);
  EXPECT_EQ(out, (Links{2}));
  t.Route(1, "nothing", &out);
  EXPECT_TRUE(out.empty());
}

TEST(InterestTableTest, TopicsAreIndependent) {
  InterestTable t;
  t.Subscribe(1, "a");
  t.Subscribe(2, "b");
  t.Subscribe(3, "a");
  EXPECT_EQ(Route(t, 0, "a"), (Links{1, 3}));
  EXPECT_EQ(Route(t, 0, "b"), (Links{2}));
  EXPECT_TRUE(t.IsSubscribed(1, "a"));
  EXPECT_FALSE(t.IsSubscribed(1, "b"));
  EXPECT_EQ(Sorted(t.TopicsOf(1)), (Topics{"a"}));
  EXPECT_TRUE(t.TopicsOf(42).empty());
}

TEST(InterestTableTest, RemoveShardLeavesEveryTopicAndReportsThem) {
  InterestTable t;
  t.Subscribe(1, "a");
  t.Subscribe(1, "b");
  t.Subscribe(1, "c");
  t.Subscribe(2, "b");
  EXPECT_EQ(Sorted(t.RemoveShard(1)), (Topics{"a", "b", "c"}));
  EXPECT_EQ(t.Interested("a"), nullptr);  // emptied topics are gone
  EXPECT_EQ(Interested(t, "b"), (Links{2}));
  EXPECT_EQ(t.topics(), 1u);
  EXPECT_EQ(t.subscriptions(), 1u);
  EXPECT_EQ(t.links(), 1u);
  EXPECT_TRUE(t.RemoveShard(1).empty());
  EXPECT_TRUE(t.RemoveShard(99).empty());
}

TEST(InterestTableTest, ReplaceShardReportsOnlyTheDifference) {
  InterestTable t;
  t.Subscribe(1, "keep");
  t.Subscribe(2, "keep");
  t.Subscribe(1, "drop");
  t.Subscribe(1, "drop2");
  auto r = t.ReplaceShard(1, {"new1", "keep", "new2", "new1"});
  EXPECT_EQ(r.added, (Topics{"new1", "new2"}));
  EXPECT_EQ(Sorted(r.removed), (Topics{"drop", "drop2"}));
  // A kept topic keeps its place; link 1 was first on "keep" and still is.
  EXPECT_EQ(Interested(t, "keep"), (Links{1, 2}));
  EXPECT_EQ(Sorted(t.TopicsOf(1)), (Topics{"keep", "new1", "new2"}));
  EXPECT_EQ(t.Interested("drop"), nullptr);
  EXPECT_EQ(t.subscriptions(), 4u);
  EXPECT_EQ(t.topics(), 3u);
}

TEST(InterestTableTest, ReplaceShardSameSetChangesNothing) {
  InterestTable t;
  t.Subscribe(1, "a");
  t.Subscribe(1, "b");
  auto r = t.ReplaceShard(1, {"b", "a"});
  EXPECT_TRUE(r.added.empty());
  EXPECT_TRUE(r.removed.empty());
}

TEST(InterestTableTest, ReplaceShardWithNothingIsRemoveShard) {
  InterestTable t;
  t.Subscribe(1, "a");
  t.Subscribe(2, "a");
  auto r = t.ReplaceShard(1, {});
  EXPECT_TRUE(r.added.empty());
  EXPECT_EQ(r.removed, (Topics{"a"}));
  EXPECT_EQ(t.links(), 1u);
  // And an unknown link's resync is all additions.
  auto fresh = t.ReplaceShard(5, {"x", "a"});
  EXPECT_EQ(fresh.added, (Topics{"x", "a"}));
  EXPECT_TRUE(fresh.removed.empty());
  EXPECT_EQ(Interested(t, "a"), (Links{2, 5}));
}

// Random operations against a plain model: every topic's list holds each
// subscribed link exactly once, in subscription order, and routing gives
// everyone but the origin exactly once.
TEST(InterestTableTest, RandomOperationsMatchAModel) {
  std::mt19937 rng(20240611);
  InterestTable t;
  std::map<std::string, std::vector<LinkId>> model;
  auto topic_name = [](int i) { return "t" + std::to_string(i); };
  for (int step = 0; step < 20000; ++step) {
    LinkId link = 1 + rng() % 6;
    std::string topic = topic_name(rng() % 12);
    auto& m = model[topic];
    bool in = std::find(m.begin(), m.end(), link) != m.end();
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2:
      case 3:
        EXPECT_EQ(t.Subscribe(link, topic), !in);
        if (!in) m.push_back(link);
        break;
      case 4:
      case 5:
      case 6:
        EXPECT_EQ(t.Unsubscribe(link, topic), in);
        if (in) m.erase(std::find(m.begin(), m.end(), link));
        break;
      case 7: {
        auto removed = t.RemoveShard(link);
        std::set<std::string> expected;
        for (auto& [name, links] : model) {
          auto it = std::find(links.begin(), links.end(), link);
          if (it != links.end()) {
            expected.insert(name);
            links.erase(it);
          }
        }
        EXPECT_EQ(std::set<std::string>(removed.begin(), removed.end()), expected);
        break;
      }
      case 8: {
        std::vector<std::string> wanted;
        for (int i = 0; i < 12; ++i) {
          if (rng() % 3 == 0) wanted.push_back(topic_name(i));
        }
        t.ReplaceShard(link, wanted);
        for (auto& [name, links] : model) {
          bool want = std::find(wanted.begin(), wanted.end(), name) != wanted.end();
          auto it = std::find(links.begin(), links.end(), link);
          if (!want && it != links.end()) links.erase(it);
          if (want && it == links.end()) links.push_back(link);
        }
        break;
      }
      default: {
        std::vector<LinkId> out;
        t.Route(link, topic, &out);
        std::vector<LinkId> expected;
        for (LinkId l : m) {
          if (l != link) expected.push_back(l);
        }
        EXPECT_EQ(out, expected);
        break;
      }
    }
  }
  size_t subs = 0;
  size_t topics = 0;
  for (const auto& [name, links] : model) {
    EXPECT_EQ(Interested(t, name), links) << name;
    subs += links.size();
    topics += !links.empty();
  }
  EXPECT_EQ(t.subscriptions(), subs);
  EXPECT_EQ(t.topics(), topics);
}

}  // namespace
}  // namespace sb::broker
