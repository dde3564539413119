#include "broker/topic_owner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace sb::broker {
namespace {

std::string Topic(int i) { return "room:" + std::to_string(i); }

TEST(TopicOwnerTest, Fnv1aMatchesTheReferenceVectors) {
  // The published FNV-1a 64 test vectors: every node must hash alike.
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(TopicOwnerTest, DeterministicAndIndependentOfOrder) {
  const std::vector<std::string> a = {"n1", "n2", "n3"};
  const std::vector<std::string> b = {"n3", "n1", "n2"};
  for (int i = 0; i < 200; ++i) {
    EXPECT_EQ(TopicOwner(a, Topic(i)), TopicOwner(b, Topic(i))) << Topic(i);
  }
  // Pinned: a change of the hash would split a mixed-version cluster's owners.
  EXPECT_EQ(OwnerScore("n1", "room:lobby"), OwnerScore("n1", "room:lobby"));
  EXPECT_NE(OwnerScore("n1", "room:lobby"), OwnerScore("n2", "room:lobby"));
  EXPECT_NE(OwnerScore("n1", "room:lobby"), OwnerScore("n1", "room:lobbz"));
}

TEST(TopicOwnerTest, NoNodesNoOwnerOneNodeOwnsAll) {
  EXPECT_EQ(TopicOwner({}, "room:1"), "");
  const std::vector<std::string> one = {"solo"};
  EXPECT_EQ(TopicOwner(one, "room:1"), "solo");
}

TEST(TopicOwnerTest, BalancedOverManyTopics) {
  const std::vector<std::string> nodes = {"node-a", "node-b", "node-c", "node-d", "node-e"};
  constexpr int kTopics = 50'000;
  std::map<std::string, int> count;
  for (int i = 0; i < kTopics; ++i) ++count[std::string(TopicOwner(nodes, Topic(i)))];
  ASSERT_EQ(count.size(), nodes.size());
  // 10,000 expected each; a binomial's sd is ~89, so ±5% is > 5 sd.
  for (const auto& [node, n] : count) {
    EXPECT_GT(n, 9500) << node;
    EXPECT_LT(n, 10500) << node;
  }
}

TEST(TopicOwnerTest, ALeavingNodeMovesOnlyItsTopics) {
  const std::vector<std::string> all = {"n1", "n2", "n3", "n4"};
  const std::vector<std::string> without_n3 = {"n1", "n2", "n4"};
  int moved = 0;
  for (int i = 0; i < 20'000; ++i) {
    const std::string_view before = TopicOwner(all, Topic(i));
    const std::string_view after = TopicOwner(without_n3, Topic(i));
    if (before == "n3") {
      ++moved;
      EXPECT_NE(after, "n3");
    } else {
      EXPECT_EQ(before, after) << Topic(i);
    }
  }
  EXPECT_GT(moved, 4500);  // about a quarter
  EXPECT_LT(moved, 5500);
}

TEST(TopicOwnerTest, AJoiningNodeTakesOnlyTopicsItWins) {
  const std::vector<std::string> before = {"n1", "n2", "n3"};
  const std::vector<std::string> after = {"n1", "n2", "n3", "n4"};
  int taken = 0;
  for (int i = 0; i < 20'000; ++i) {
    const std::string_view a = TopicOwner(before, Topic(i));
    const std::string_view b = TopicOwner(after, Topic(i));
    if (a != b) {
      EXPECT_EQ(b, "n4") << Topic(i);
      ++taken;
    }
  }
  EXPECT_GT(taken, 4500);  // about a quarter
  EXPECT_LT(taken, 5500);
}

TEST(TopicOwnerTest, StreamTagsAreNonzeroAndDiffer) {
  EXPECT_NE(NodeStreamTag("n1"), 0u);
  EXPECT_NE(NodeStreamTag("n1"), NodeStreamTag("n2"));
  EXPECT_EQ(NodeStreamTag("n1"), NodeStreamTag("n1"));
}

}  // namespace
}  // namespace sb::broker
