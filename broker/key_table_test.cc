#include "broker/key_table.h"

#include <gtest/gtest.h>

namespace sb::broker {
namespace {

using V = KeyTable::Verdict;
constexpr int64_t kTtl = mesh::kKeyTtlMs;

TEST(KeyTable, TheFirstPublishOfAClaimIsRoutedARepeatIsNot) {
  KeyTable t;
  EXPECT_EQ(t.Claim("k", "room:a", 1, 1, 0), V::kFirst);
  EXPECT_EQ(t.Claim("k", "room:a", 2, 1, 10), V::kRepeat);  // another shard
  EXPECT_EQ(t.Claim("k", "room:a", 1, 2, 10), V::kRepeat);  // the same shard, another publish
  EXPECT_EQ(t.Claim("k", "room:a", 1, 1, 10), V::kSame);    // the same publish, re-sent
  // A key covers each topic of a request on its own.
  EXPECT_EQ(t.Claim("k", "room:b", 2, 2, 10), V::kFirst);
  EXPECT_EQ(t.Claim("other", "room:a", 2, 3, 10), V::kFirst);
  EXPECT_EQ(t.size(), 3u);
}

TEST(KeyTable, KeyAndTopicNeverRunTogether) {
  KeyTable t;
  EXPECT_EQ(t.Claim("ab", "c", 1, 1, 0), V::kFirst);
  EXPECT_EQ(t.Claim("a", "bc", 1, 2, 0), V::kFirst);
}

TEST(KeyTable, AClaimLastsTheTtl) {
  KeyTable t;
  EXPECT_EQ(t.Claim("k", "t", 1, 1, 1000), V::kFirst);
  EXPECT_EQ(t.Claim("k", "t", 2, 1, 1000 + kTtl - 1), V::kRepeat);
  EXPECT_EQ(t.Claim("k", "t", 2, 2, 1000 + kTtl), V::kFirst);
  EXPECT_EQ(t.size(), 1u);
}

TEST(KeyTable, TheOldestIsForgottenWhenFull) {
  KeyTable t(2);
  EXPECT_EQ(t.Claim("a", "t", 1, 1, 0), V::kFirst);
  EXPECT_EQ(t.Claim("b", "t", 1, 2, 1), V::kFirst);
  EXPECT_EQ(t.Claim("c", "t", 1, 3, 2), V::kFirst);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.evicted(), 1u);
  EXPECT_EQ(t.Claim("b", "t", 2, 1, 3), V::kRepeat);
  EXPECT_EQ(t.Claim("a", "t", 2, 2, 3), V::kFirst);  // forgotten early
}

TEST(KeyTable, HellosRestoreClaimsWithTheirAge) {
  const int64_t now = 10 * kTtl;
  KeyTable t;
  t.Restore("k", "t", 7, 3, 1000, now);
  EXPECT_EQ(t.Claim("k", "t", 8, 1, now), V::kRepeat);
  EXPECT_EQ(t.Claim("k", "t", 7, 3, now), V::kSame);  // the restating shard's own re-send
  // It expires when its first acceptance is kKeyTtlMs old, not a TTL after the hello.
  EXPECT_EQ(t.Claim("k", "t", 8, 2, now + kTtl - 1000), V::kFirst);
  // Past the TTL already: ignored.
  t.Restore("old", "t", 7, 4, static_cast<uint32_t>(kTtl), now);
  EXPECT_EQ(t.Claim("old", "t", 8, 3, now), V::kFirst);
  // Restated twice: the older acceptance is the original.
  t.Restore("old", "t", 9, 9, 0, now);
  EXPECT_EQ(t.Claim("old", "t", 8, 3, now), V::kSame);
  t.Restore("k2", "t", 5, 1, 100, now);
  t.Restore("k2", "t", 6, 1, 900, now);
  t.Restore("k2", "t", 7, 1, 500, now);
  EXPECT_EQ(t.Claim("k2", "t", 5, 1, now), V::kRepeat);
  EXPECT_EQ(t.Claim("k2", "t", 6, 1, now), V::kSame);
  EXPECT_EQ(t.size(), 3u);
  // It expires by its age, the older one's.
  EXPECT_EQ(t.Claim("k2", "t", 8, 9, now + kTtl - 900), V::kFirst);
}

TEST(KeyTable, RestoredClaimsExpireInAgeOrderAndStayBounded) {
  const int64_t now = 10 * kTtl;
  KeyTable t(2);
  t.Restore("young", "t", 1, 1, 10, now);
  t.Restore("old", "t", 2, 1, 5000, now);
  // Full: an even older one is the one forgotten.
  t.Restore("oldest", "t", 3, 1, 9000, now);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.evicted(), 1u);
  EXPECT_EQ(t.Claim("oldest", "t", 4, 1, now), V::kFirst);  // evicts "old"
  EXPECT_EQ(t.evicted(), 2u);
  EXPECT_EQ(t.Claim("young", "t", 4, 2, now), V::kRepeat);
  EXPECT_EQ(t.Claim("old", "t", 4, 3, now), V::kFirst);
}

}  // namespace
}  // namespace sb::broker
