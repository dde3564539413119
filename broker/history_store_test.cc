#include "broker/history_store.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sb::broker {
namespace {

constexpr int64_t kSecond = 1'000'000;

// Rules as a broker takes them from --history; streams numbered 100, 101, …
HistoryOptions Options(std::vector<std::string> rules = {"room:*=3/10s"},
                       uint64_t max_bytes = history::kDefaultMaxBytes) {
  HistoryOptions o;
  o.rules = history::Rules::Parse(rules).value();
  o.max_bytes = max_bytes;
  o.new_stream = [n = uint64_t{99}]() mutable { return ++n; };
  return o;
}

std::vector<uint64_t> Offsets(const HistoryStore::Answer& a) {
  std::vector<uint64_t> out;
  for (const HistoryStore::Entry* e : a.messages) out.push_back(e->offset);
  return out;
}

HistoryStore::Entry Held(uint64_t offset, uint64_t origin, uint64_t seq, std::string body = "m") {
  return {.offset = offset, .origin = origin, .seq = seq, .body = std::move(body)};
}

size_t Evicted(const HistoryStore& s, HistoryEviction r) {
  return s.counters().evicted[static_cast<size_t>(r)];
}

TEST(HistoryStore, EachTopicCountsItsOwnOffsetsInOneStream) {
  HistoryStore s(Options());
  auto a1 = s.Sequence("room:a", 1, 1, 0, 0, "x", 0);
  auto a2 = s.Sequence("room:a", 2, 1, 0, 0, "y", 0);
  auto b1 = s.Sequence("room:b", 1, 2, 0, 0, "z", 0);
  EXPECT_EQ(a1.offset, 1u);
  EXPECT_EQ(a2.offset, 2u);
  EXPECT_EQ(b1.offset, 1u);
  EXPECT_EQ(a1.stream, 100u);
  EXPECT_EQ(a2.stream, 100u);
  EXPECT_EQ(b1.stream, 101u) << "a stream per topic";
  EXPECT_EQ(s.topics(), 2u);
  EXPECT_EQ(s.messages(), 3u);
  EXPECT_EQ(s.bytes(), 3u);
  EXPECT_EQ(s.counters().sequenced, 3u);
  EXPECT_EQ(s.counters().unconfigured_topics, 0u);
}

TEST(HistoryStore, AReSentPublishKeepsItsOffset) {
  HistoryStore s(Options());
  s.Sequence("room:a", 1, 7, 0, 0, "x", 0);
  s.Sequence("room:a", 2, 7, 0, 0, "y", 0);  // another origin, the same seq
  auto again = s.Sequence("room:a", 1, 7, 0, 0, "x", 0);
  EXPECT_EQ(again.offset, 1u);
  EXPECT_EQ(again.stream, 100u);
  EXPECT_EQ(s.messages(), 2u) << "not held twice";
  EXPECT_EQ(s.Sequence("room:a", 1, 8, 0, 0, "z", 0).offset, 3u);
  EXPECT_EQ(s.counters().sequenced, 3u);
  EXPECT_EQ(s.counters().resequenced, 1u);
}

TEST(HistoryStore, ATopicNoRuleNamesIsKeptByTheDefaultAndCounted) {
  HistoryStore s(Options({"room:*=3/10s"}));
  for (uint64_t i = 1; i <= kDefaultHistorySize + 5; ++i) s.Sequence("other", 1, i, 0, 0, "x", 0);
  EXPECT_EQ(s.counters().unconfigured_topics, 1u) << "once per topic";
  EXPECT_EQ(s.Find("other")->messages, kDefaultHistorySize);
  s.Expire(kDefaultHistoryTtlMs * 1000 - 1);
  EXPECT_EQ(s.messages(), kDefaultHistorySize);
  s.Expire(kDefaultHistoryTtlMs * 1000);
  EXPECT_EQ(s.messages(), 0u);
}

TEST(HistoryStore, WhatIsHeldIsCountedPerTopicFamily) {
  HistoryStore s(Options({"room:*=3/10s", "chat:*=10/10s"}));
  ASSERT_EQ(s.families().size(), 3u) << "one per rule, then the default";
  s.Sequence("room:a", 1, 1, 0, 0, "xx", 0);
  s.Sequence("room:b", 1, 2, 0, 0, "xxx", 0);
  s.Sequence("chat:1", 1, 3, 0, 0, "y", 0);
  s.Sequence("other", 1, 4, 0, 0, "zzzz", 0);
  for (uint64_t i = 5; i <= 8; ++i) s.Sequence("room:a", 1, i, 0, 0, "xx", 0);  // SIZE 3 evicts
  const auto& f = s.families();
  EXPECT_EQ(f[0].pattern, "room:*");
  EXPECT_EQ(f[0].messages, 4u);  // room:a's 3 newest, room:b's 1
  EXPECT_EQ(f[0].bytes, 9u);
  EXPECT_EQ(f[1].pattern, "chat:*");
  EXPECT_EQ(f[1].messages, 1u);
  EXPECT_EQ(f[1].bytes, 1u);
  EXPECT_EQ(f[2].pattern, "");
  EXPECT_EQ(f[2].messages, 1u);
  EXPECT_EQ(f[2].bytes, 4u);
  EXPECT_EQ(f[0].messages + f[1].messages + f[2].messages, s.messages());
  EXPECT_EQ(f[0].bytes + f[1].bytes + f[2].bytes, s.bytes());
}

TEST(HistoryStore, ATopicKeepsItsSizeNewest) {
  HistoryStore s(Options({"room:*=3/10s"}));
  for (uint64_t i = 1; i <= 5; ++i) s.Sequence("room:a", 1, i, 0, 0, "x", 0);
  auto v = s.Find("room:a");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->messages, 3u);
  EXPECT_EQ(v->first, 3u);
  EXPECT_EQ(v->top, 5u);
  EXPECT_EQ(Evicted(s, HistoryEviction::kSize), 2u);
  // The index went with them: seq 1 again is a new publish now.
  EXPECT_EQ(s.Sequence("room:a", 1, 1, 0, 0, "x", 0).offset, 6u);
}

TEST(HistoryStore, MessagesGoByTheirTopicsTtl) {
  HistoryStore s(Options({"room:short=10/1s", "room:*=10/10s"}));
  s.Sequence("room:short", 1, 1, 0, 0, "x", 0);
  s.Sequence("room:long", 1, 2, 0, 0, "x", 0);
  s.Sequence("room:short", 1, 3, 0, 0, "x", kSecond / 2);
  s.Expire(kSecond - 1);
  EXPECT_EQ(s.messages(), 3u);
  s.Expire(kSecond);
  EXPECT_EQ(s.Find("room:short")->messages, 1u);
  EXPECT_EQ(s.Find("room:short")->first, 2u);
  s.Expire(kSecond + kSecond / 2);
  EXPECT_EQ(s.Find("room:short")->messages, 0u);
  EXPECT_EQ(s.Find("room:short")->first, 3u) << "top + 1 when none";
  EXPECT_EQ(s.Find("room:long")->messages, 1u);
  s.Expire(10 * kSecond);
  EXPECT_EQ(s.messages(), 0u);
  EXPECT_EQ(s.bytes(), 0u);
  EXPECT_EQ(Evicted(s, HistoryEviction::kTtl), 3u);
  // The stream and its top stay: offsets go on.
  EXPECT_EQ(s.Sequence("room:short", 1, 4, 0, 0, "x", 11 * kSecond).offset, 3u);
  EXPECT_EQ(s.Find("room:short")->stream, 100u);
}

TEST(HistoryStore, TheByteBoundEvictsTheOldestOfAnyTopic) {
  HistoryStore s(Options({"room:*=100/1h"}, 10));
  s.Sequence("room:a", 1, 1, 0, 0, "aaaa", 0);
  s.Sequence("room:b", 1, 2, 0, 0, "bbbb", 1);
  s.Sequence("room:a", 1, 3, 0, 0, "cc", 2);
  EXPECT_EQ(s.bytes(), 10u);
  s.Sequence("room:b", 1, 4, 0, 0, "d", 3);
  EXPECT_EQ(s.bytes(), 7u);
  EXPECT_EQ(s.Find("room:a")->first, 2u) << "room:a's first went";
  EXPECT_EQ(s.Find("room:b")->messages, 2u);
  EXPECT_EQ(Evicted(s, HistoryEviction::kBytes), 1u);
  // A message gone by SIZE or TTL is skipped in that order, not counted twice.
  HistoryStore t(Options({"room:*=1/1h"}, 3));
  t.Sequence("room:a", 1, 1, 0, 0, "aa", 0);
  t.Sequence("room:a", 1, 2, 0, 0, "bb", 1);  // room:a's 1 goes by SIZE
  t.Sequence("room:b", 1, 3, 0, 0, "cc", 2);  // 4 > 3: room:a's 2 goes by bytes
  EXPECT_EQ(Evicted(t, HistoryEviction::kSize), 1u);
  EXPECT_EQ(Evicted(t, HistoryEviction::kBytes), 1u);
  EXPECT_EQ(t.messages(), 1u);
  EXPECT_EQ(t.bytes(), 2u);
}

TEST(HistoryStore, FetchGivesWhatFollowsWithinItsBounds) {
  HistoryStore s(Options({"room:*=100/1h"}));
  for (uint64_t i = 1; i <= 5; ++i) s.Sequence("room:a", 1, i, 0, 0, "12345", 0);
  auto all = s.Fetch("room:a", 0, 100, 1000, 0, 0);
  EXPECT_EQ(all.stream, 100u);
  EXPECT_EQ(all.top, 5u);
  EXPECT_EQ(all.first, 1u);
  EXPECT_EQ(Offsets(all), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(Offsets(s.Fetch("room:a", 2, 2, 1000, 0, 0)), (std::vector<uint64_t>{3, 4}));
  EXPECT_TRUE(s.Fetch("room:a", 0, 0, 1000, 0, 0).messages.empty()) << "limit 0: position only";
  EXPECT_TRUE(s.Fetch("room:a", 5, 10, 1000, 0, 0).messages.empty());
  // Bytes: each is its body and the overhead (5 + 5); 25 holds two.
  EXPECT_EQ(Offsets(s.Fetch("room:a", 0, 100, 25, 5, 0)), (std::vector<uint64_t>{1, 2}));
  // One at least, even past the bound.
  EXPECT_EQ(Offsets(s.Fetch("room:a", 3, 100, 1, 5, 0)), (std::vector<uint64_t>{4}));
  EXPECT_EQ(s.counters().fetches, 6u);
}

TEST(HistoryStore, FetchingAnUnknownTopicStartsItsStream) {
  HistoryStore s(Options());
  auto a = s.Fetch("room:new", 0, 10, 1000, 0, 0);
  EXPECT_EQ(a.stream, 100u);
  EXPECT_EQ(a.top, 0u);
  EXPECT_EQ(a.first, 1u);
  EXPECT_TRUE(a.messages.empty());
  auto p = s.Sequence("room:new", 1, 1, 0, 0, "x", 0);
  EXPECT_EQ(p.stream, 100u) << "the stream the fetch told of";
  EXPECT_EQ(p.offset, 1u);
}

TEST(HistoryStore, FetchDoesNotGiveWhatExpired) {
  HistoryStore s(Options({"room:*=10/1s"}));
  s.Sequence("room:a", 1, 1, 0, 0, "x", 0);
  s.Sequence("room:a", 1, 2, 0, 0, "x", kSecond / 2);
  auto a = s.Fetch("room:a", 0, 10, 1000, 0, kSecond);
  EXPECT_EQ(a.first, 2u);
  EXPECT_EQ(Offsets(a), (std::vector<uint64_t>{2}));
}

TEST(HistoryStore, HellosRestatePositionsTheFirstStreamAndTheHighestTop) {
  HistoryStore s(Options());
  s.RestatePosition("room:a", 555, 7);
  s.RestatePosition("room:a", 555, 9);
  s.RestatePosition("room:a", 555, 8);
  s.RestatePosition("room:a", 666, 20);  // a lost stream: the first stays
  auto v = s.Find("room:a");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->stream, 555u);
  EXPECT_EQ(v->top, 9u);
  EXPECT_EQ(v->first, 10u);
  EXPECT_EQ(s.counters().stream_conflicts, 1u);
  auto p = s.Sequence("room:a", 1, 1, 0, 0, "x", 0);
  EXPECT_EQ(p.offset, 10u) << "offsets go on from the highest top";
  EXPECT_EQ(p.stream, 555u);
}

TEST(HistoryStore, RestatesRebuildTheHistoryByOffset) {
  HistoryStore s(Options({"room:*=3/10s"}));
  s.RestatePosition("room:a", 555, 4);
  // Two shards restate what each holds, in any order.
  s.Restate("room:a", 555, Held(3, 1, 13, "c"), 0);
  s.Restate("room:a", 555, Held(4, 2, 14, "d"), 0);
  s.Restate("room:a", 555, Held(2, 1, 12, "b"), 0);
  s.Restate("room:a", 555, Held(3, 1, 13, "c"), 0);
  s.Restate("room:a", 666, Held(1, 9, 9, "other stream"), 0);
  // Older than the topic's SIZE newest: not kept.
  s.Restate("room:a", 555, Held(1, 1, 11, "a"), 0);
  EXPECT_EQ(s.counters().restated, 4u);
  EXPECT_EQ(s.counters().restate_duplicates, 1u);
  EXPECT_EQ(s.counters().stream_conflicts, 1u);
  EXPECT_EQ(Evicted(s, HistoryEviction::kSize), 1u);
  auto a = s.Fetch("room:a", 0, 10, 1000, 0, 0);
  EXPECT_EQ(a.stream, 555u);
  EXPECT_EQ(a.first, 2u);
  EXPECT_EQ(a.top, 4u);
  ASSERT_EQ(Offsets(a), (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(a.messages[0]->body, "b");
  EXPECT_EQ(a.messages[2]->origin, 2u);
  // A publish the last broker sequenced, re-sent: its offset, not a new one.
  EXPECT_EQ(s.Sequence("room:a", 2, 14, 0, 0, "d", 0).offset, 4u);
  EXPECT_EQ(s.Sequence("room:a", 2, 15, 0, 0, "e", 0).offset, 5u);
  EXPECT_EQ(s.counters().resequenced, 1u);
}

TEST(HistoryStore, ARestateOfAnUnknownTopicTakesItsStreamAndRaisesTheTop) {
  HistoryStore s(Options());
  s.Restate("room:a", 555, Held(6, 1, 1), 0);
  auto v = s.Find("room:a");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->stream, 555u);
  EXPECT_EQ(v->top, 6u);
  s.Restate("room:a", 555, Held(8, 1, 2), 0);
  EXPECT_EQ(s.Find("room:a")->top, 8u);
  // Restated messages age from their restate.
  s.Expire(10 * kSecond - 1);
  EXPECT_EQ(s.messages(), 2u);
  s.Expire(10 * kSecond);
  EXPECT_EQ(s.messages(), 0u);
}

}  // namespace
}  // namespace sb::broker

namespace sb::broker {
namespace {

HistoryOptions TaggedOptions(uint32_t tag) {
  HistoryOptions o;
  o.rules = history::Rules::Parse({"room:*=3/10s"}).value();
  o.new_stream = [n = uint64_t{99}]() mutable { return ++n; };
  o.stream_tag = tag;
  return o;
}

TEST(HistoryStoreOwnerTest, ATaggedNodesStreamsCarryItsTagAndAreItsOwn) {
  HistoryStore s(TaggedOptions(0xabcd));
  HistoryStore::Position p = s.Sequence("room:1", 1, 1, 0, 0, "m", 0);
  EXPECT_EQ(p.stream, (uint64_t{0xabcd} << 32) | 100);
  EXPECT_TRUE(s.Own(p.stream));
  EXPECT_FALSE(s.Own((uint64_t{0x1234} << 32) | 100));
  HistoryStore alone(TaggedOptions(0));
  EXPECT_TRUE(alone.Own(12345)) << "untagged: every stream is its own";
}

TEST(HistoryStoreOwnerTest, CopiesOfTheOwnersStreamAreMergedAndReplacedByANewEpoch) {
  HistoryStore s(TaggedOptions(1));
  const uint64_t theirs = (uint64_t{2} << 32) | 7;
  EXPECT_TRUE(s.Accept("room:1", theirs, {.offset = 5, .origin = 9, .seq = 1, .body = "a"}, 0));
  EXPECT_FALSE(s.Accept("room:1", theirs, {.offset = 5, .origin = 9, .seq = 1, .body = "a"}, 0));
  EXPECT_TRUE(s.Accept("room:1", theirs, {.offset = 6, .origin = 9, .seq = 2, .body = "b"}, 0));
  s.AcceptPosition("room:1", theirs, 8);
  auto v = s.Find("room:1");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->stream, theirs);
  EXPECT_EQ(v->top, 8u);
  EXPECT_EQ(v->messages, 2u);
  EXPECT_EQ(s.counters().accept_duplicates, 1u);
  // The owner started a new epoch: the old copy goes.
  const uint64_t next = (uint64_t{2} << 32) | 8;
  EXPECT_TRUE(s.Accept("room:1", next, {.offset = 1, .origin = 9, .seq = 3, .body = "c"}, 0));
  v = s.Find("room:1");
  EXPECT_EQ(v->stream, next);
  EXPECT_EQ(v->top, 1u);
  EXPECT_EQ(v->messages, 1u);
  EXPECT_EQ(s.counters().replaced, 1u);
  EXPECT_EQ(s.counters().evicted[static_cast<size_t>(HistoryEviction::kEpoch)], 2u);
}

TEST(HistoryStoreOwnerTest, SequencingACopiedTopicStartsANewStreamOfItsOwn) {
  HistoryStore s(TaggedOptions(1));
  const uint64_t theirs = (uint64_t{2} << 32) | 7;
  s.Accept("room:1", theirs, {.offset = 5, .origin = 9, .seq = 1, .body = "a"}, 0);
  // A restarted broker of node 1 restating its own stream continues it.
  s.RestatePosition("room:2", (uint64_t{1} << 32) | 50, 4);
  HistoryStore::Position p = s.Sequence("room:1", 3, 1, 0, 0, "m", 0);
  EXPECT_NE(p.stream, theirs);
  EXPECT_TRUE(s.Own(p.stream));
  EXPECT_EQ(p.offset, 1u);
  EXPECT_EQ(s.Find("room:1")->messages, 1u);
  EXPECT_EQ(s.counters().taken_over, 1u);
  p = s.Sequence("room:2", 3, 2, 0, 0, "m", 0);
  EXPECT_EQ(p.stream, (uint64_t{1} << 32) | 50);
  EXPECT_EQ(p.offset, 5u);
  EXPECT_EQ(s.counters().taken_over, 1u);
}

}  // namespace
}  // namespace sb::broker
