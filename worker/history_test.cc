// HistoryStreams: the order of deliveries, gaps and their fills, epoch
// changes, every way a join's recovery is decided and the seam between its
// answer and the live deliveries, the copies' bounds, and a hello's state —
// events in, actions out, no sockets or clocks.

#include "worker/history.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace sb::worker {
namespace {

using Kind = HistoryAction::Kind;

constexpr uint64_t kStream = 0x1111;
constexpr uint64_t kOther = 0x2222;

Sequenced Msg(uint64_t offset, uint64_t stream = kStream, std::string body = "") {
  Sequenced m;
  m.offset = offset;
  m.stream = stream;
  m.origin = 7;
  m.seq = offset;
  m.message = body.empty() ? "m" + std::to_string(offset) : std::move(body);
  return m;
}

std::vector<Sequenced> Range(uint64_t from, uint64_t to, uint64_t stream = kStream) {
  std::vector<Sequenced> out;
  for (uint64_t o = from; o <= to; ++o) out.push_back(Msg(o, stream));
  return out;
}

HistoryOptions Options(uint32_t size = 100, int64_t ttl_ms = 60000, uint64_t max_bytes = 1 << 20,
                       uint32_t recovery_max = 10) {
  HistoryOptions o;
  o.rules = history::Rules({{"room:*", size, ttl_ms}});
  o.recovery_max = recovery_max;
  o.max_bytes = max_bytes;
  return o;
}

// What a list of actions does, in a line each: "deliver 3", "fetch 1 after 2 limit 3",
// "answer 9 top 5 recovered 3,4,5", "reset".
std::vector<std::string> Describe(const std::vector<HistoryAction>& actions) {
  static const char* kRecovery[] = {"not_asked", "recovered", "other_epoch",
                                    "too_old",   "too_many",  "ahead"};
  std::vector<std::string> out;
  for (const HistoryAction& a : actions) {
    switch (a.kind) {
      case Kind::kDeliver:
        out.push_back("deliver " + std::to_string(a.entry->offset));
        break;
      case Kind::kFetch:
        out.push_back("fetch " + std::to_string(a.id) + " after " + std::to_string(a.after) +
                      " limit " + std::to_string(a.limit));
        break;
      case Kind::kAnswer: {
        std::string s = "answer " + std::to_string(a.join) + " top " + std::to_string(a.top) + " " +
                        kRecovery[static_cast<size_t>(a.recovery)];
        for (size_t i = 0; i < a.messages.size(); ++i) {
          s += (i == 0 ? " " : ",") + std::to_string(a.messages[i]->offset);
        }
        out.push_back(s);
        break;
      }
      case Kind::kReset:
        out.push_back("reset");
        break;
    }
  }
  return out;
}

using Lines = std::vector<std::string>;

class HistoryTest : public ::testing::Test {
 protected:
  explicit HistoryTest(HistoryOptions o = Options()) : h_(std::move(o)) {}

  Lines Subscribe() {
    return Run([&](auto* out) { h_.OnSubscribed("room:a", out); });
  }
  Lines Deliver(uint64_t offset, uint64_t stream = kStream) {
    return Run([&](auto* out) { h_.OnDeliver("room:a", Msg(offset, stream), now_, out); });
  }
  Lines History(uint64_t id, uint64_t top, uint64_t first, std::vector<Sequenced> entries,
                uint64_t stream = kStream) {
    return Run([&](auto* out) {
      h_.OnHistory("room:a", id, stream, top, first, std::move(entries), now_, out);
    });
  }
  Lines Join(uint64_t join, std::optional<Recover> r) {
    return Run([&](auto* out) { h_.Join(join, "room:a", r, out); });
  }
  // Subscribed and synced at `top` (fetch 1 answered).
  void Synced(uint64_t top) {
    ASSERT_EQ(Subscribe(), Lines{"fetch 1 after 0 limit 0"});
    ASSERT_EQ(History(1, top, top + 1, {}), Lines{});
  }
  // Gaps detected, filled, unfillable.
  std::vector<uint64_t> Gaps() const {
    return {h_.stats().gaps, h_.stats().gaps_filled, h_.stats().gaps_unfillable};
  }
  template <typename F>
  Lines Run(F f) {
    std::vector<HistoryAction> out;
    f(&out);
    return Describe(out);
  }

  HistoryStreams h_;
  int64_t now_ = 1000;
};

TEST_F(HistoryTest, KeepsOnlyTopicsARuleMatches) {
  EXPECT_TRUE(h_.Keeps("room:a"));
  EXPECT_FALSE(h_.Keeps("lobby"));
  Lines none = Run([&](auto* out) { h_.OnSubscribed("lobby", out); });
  EXPECT_EQ(none, Lines{});
  Lines d = Run([&](auto* out) { h_.OnDeliver("lobby", Msg(1), now_, out); });
  EXPECT_EQ(d, Lines{"deliver 1"}) << "delivered as it comes, not kept";
  EXPECT_EQ(h_.messages(), 0u);
}

TEST(HistoryFamilies, CopiesAreCountedPerRule) {
  HistoryOptions o;
  o.rules = history::Rules({{"room:*", 2, 60000}, {"chat:*", 10, 60000}});
  HistoryStreams h(std::move(o));
  ASSERT_EQ(h.families().size(), 2u);
  std::vector<HistoryAction> out;
  // Unsubscribed topics: the shard's own broadcasts coming back, kept.
  for (uint64_t i = 1; i <= 3; ++i) h.OnDeliver("room:a", Msg(i, kStream, "xx"), 0, &out);
  h.OnDeliver("chat:1", Msg(1, kStream, "yyy"), 0, &out);
  EXPECT_EQ(h.families()[0].messages, 2u) << "room:* keeps its 2 newest";
  EXPECT_EQ(h.families()[0].bytes, 4u);
  EXPECT_EQ(h.families()[1].messages, 1u);
  EXPECT_EQ(h.families()[1].bytes, 3u);
  EXPECT_EQ(h.families()[0].messages + h.families()[1].messages, h.messages());
  h.Expire(60000);
  EXPECT_EQ(h.families()[0].messages, 0u);
  EXPECT_EQ(h.families()[1].bytes, 0u);
}

TEST_F(HistoryTest, DeliveriesAreHeldUntilThePositionAndThoseAtOrBelowItAreNotDelivered) {
  EXPECT_EQ(Subscribe(), Lines{"fetch 1 after 0 limit 0"});
  EXPECT_EQ(Deliver(5), Lines{});
  EXPECT_EQ(Deliver(6), Lines{});
  // The broker sequenced up to 5 before it answered: 6 is the first live one.
  EXPECT_EQ(History(1, 5, 1, {}), Lines{"deliver 6"});
  EXPECT_EQ(Deliver(7), Lines{"deliver 7"});
  EXPECT_EQ(h_.messages(), 3u) << "every one received is kept";
}

TEST_F(HistoryTest, DuplicatesAreDroppedAndCounted) {
  Synced(3);
  EXPECT_EQ(Deliver(4), Lines{"deliver 4"});
  EXPECT_EQ(Deliver(4), Lines{});
  EXPECT_EQ(Deliver(2), Lines{});
  EXPECT_EQ(h_.stats().duplicates, 2u);
}

TEST_F(HistoryTest, AGapIsFetchedAndEverythingOnTheTopicWaitsForIt) {
  Synced(3);
  EXPECT_EQ(Deliver(6), Lines{"fetch 2 after 3 limit 2"});
  EXPECT_EQ(Deliver(7), Lines{}) << "held: the gap is not filled yet";
  EXPECT_EQ(History(2, 7, 1, Range(4, 5)),
            (Lines{"deliver 4", "deliver 5", "deliver 6", "deliver 7"}));
  EXPECT_EQ(Gaps(), (std::vector<uint64_t>{1, 1, 0}));
}

TEST_F(HistoryTest, ATruncatedAnswerIsFetchedOnFromItsLastOffset) {
  Synced(0);
  EXPECT_EQ(Deliver(10), Lines{"fetch 2 after 0 limit 9"});
  EXPECT_EQ(History(2, 10, 1, Range(1, 4)),
            (Lines{"deliver 1", "deliver 2", "deliver 3", "deliver 4", "fetch 3 after 4 limit 5"}));
  EXPECT_EQ(Gaps(), (std::vector<uint64_t>{1, 0, 0})) << "not filled yet";
  Lines rest = History(3, 10, 1, Range(5, 9));
  EXPECT_EQ(rest.size(), 6u);
  EXPECT_EQ(rest.back(), "deliver 10");
  EXPECT_EQ(Gaps(), (std::vector<uint64_t>{1, 1, 0}));
}

TEST_F(HistoryTest, AGapTheBrokerNoLongerHasResetsTheTopicAndGoesOnFromItsFirst) {
  Synced(3);
  EXPECT_EQ(Deliver(9), Lines{"fetch 2 after 3 limit 5"});
  // The broker holds 6.. only: 4 and 5 are lost for this shard.
  EXPECT_EQ(History(2, 9, 6, Range(6, 8)),
            (Lines{"reset", "deliver 6", "deliver 7", "deliver 8", "deliver 9"}));
  EXPECT_EQ(Gaps(), (std::vector<uint64_t>{1, 0, 1}));
  EXPECT_EQ(h_.stats().resets, 1u);
}

TEST_F(HistoryTest, AnAnswerWithNothingOfTheGapResetsRatherThanFetchingForever) {
  Synced(3);
  EXPECT_EQ(Deliver(6), Lines{"fetch 2 after 3 limit 2"});
  EXPECT_EQ(History(2, 6, 7, {}), (Lines{"reset", "deliver 6"}));
}

TEST_F(HistoryTest, ADeliveryOfAnotherStreamResetsAndResyncs) {
  Synced(3);
  EXPECT_EQ(Deliver(4), Lines{"deliver 4"});
  EXPECT_EQ(Deliver(1, kOther), (Lines{"reset", "fetch 2 after 0 limit 0"}));
  EXPECT_EQ(Deliver(2, kOther), Lines{});
  EXPECT_EQ(History(2, 1, 1, {}, kOther), Lines{"deliver 2"});
  EXPECT_EQ(h_.stats().evicted[static_cast<size_t>(HistoryStreams::Evicted::kStream)], 1u)
      << "the old stream's copy went";
  EXPECT_EQ(h_.stats().resets, 1u);
}

TEST_F(HistoryTest, AnAnswerOfAnotherStreamResets) {
  Synced(3);
  EXPECT_EQ(Deliver(5), Lines{"fetch 2 after 3 limit 1"});
  EXPECT_EQ(History(2, 8, 1, {}, kOther), Lines{"reset"});
  EXPECT_EQ(Deliver(9, kOther), Lines{"deliver 9"}) << "going on from the new stream's top";
}

TEST_F(HistoryTest, AnotherStreamFoundWhenSyncingResetsNothing) {
  EXPECT_EQ(Deliver(4), Lines{"deliver 4"});  // its own, unsubscribed
  EXPECT_EQ(Subscribe(), Lines{"fetch 1 after 0 limit 0"});
  EXPECT_EQ(Join(1, Recover{kStream, 4}), Lines{});
  EXPECT_EQ(History(1, 2, 1, {}, kOther), Lines{"answer 1 top 2 other_epoch"})
      << "no channel was answered on the old stream";
  EXPECT_EQ(h_.messages(), 0u);
  EXPECT_EQ(h_.stats().resets, 0u);
}

TEST_F(HistoryTest, AJoinDuringAGapFetchIsAnsweredBeforeTheGapsMessages) {
  Synced(3);
  EXPECT_EQ(Deliver(6), Lines{"fetch 2 after 3 limit 2"});
  EXPECT_EQ(Join(9, Recover{kStream, 3}), Lines{}) << "waits for the gap";
  EXPECT_EQ(History(2, 6, 1, Range(4, 5)),
            (Lines{"answer 9 top 3 recovered", "deliver 4", "deliver 5", "deliver 6"}));
}

TEST_F(HistoryTest, AJoinWithoutRecoverIsAnsweredAtTheLastOffset) {
  Synced(3);
  EXPECT_EQ(Join(9, std::nullopt), Lines{"answer 9 top 3 not_asked"});
  EXPECT_EQ(h_.stats().answers[static_cast<size_t>(Recovery::kNotAsked)], 1u);
}

TEST_F(HistoryTest, AJoinIsRecoveredFromCopies) {
  Synced(0);
  for (uint64_t o = 1; o <= 5; ++o) Deliver(o);
  EXPECT_EQ(Join(9, Recover{kStream, 2}), Lines{"answer 9 top 5 recovered 3,4,5"});
  EXPECT_EQ(Join(10, Recover{kStream, 5}), Lines{"answer 10 top 5 recovered"});
  EXPECT_EQ(Deliver(6), Lines{"deliver 6"}) << "the seam: after the answer, beyond its top";
}

TEST_F(HistoryTest, EveryWayAJoinIsRefused) {
  Synced(0);
  for (uint64_t o = 1; o <= 20; ++o) Deliver(o);
  EXPECT_EQ(Join(1, Recover{kOther, 2}), Lines{"answer 1 top 20 other_epoch"});
  EXPECT_EQ(Join(2, Recover{kStream, 21}), Lines{"answer 2 top 20 ahead"});
  EXPECT_EQ(Join(3, Recover{kStream, 9}), Lines{"answer 3 top 20 too_many"})
      << "11 messages, recovery_max 10";
  EXPECT_EQ(Join(4, Recover{kStream, 10}).front().substr(0, 24), "answer 4 top 20 recovere");
}

TEST_F(HistoryTest, WhatTheCopiesLackIsFetchedAndDeliveriesWaitForTheAnswer) {
  Synced(5);  // this shard joined the topic at 5: it holds nothing before
  Deliver(6);
  EXPECT_EQ(Join(9, Recover{kStream, 2}), Lines{"fetch 2 after 2 limit 4"});
  EXPECT_EQ(Deliver(7), Lines{}) << "held: the answer must come first";
  EXPECT_EQ(History(2, 7, 1, Range(3, 5)),
            (Lines{"answer 9 top 6 recovered 3,4,5,6", "deliver 7"}));
}

TEST_F(HistoryTest, WhatTheBrokerNoLongerHasIsTooOld) {
  Synced(5);
  EXPECT_EQ(Join(9, Recover{kStream, 2}), Lines{"fetch 2 after 2 limit 3"});
  EXPECT_EQ(History(2, 5, 4, Range(4, 5)), Lines{"answer 9 top 5 too_old"});
  EXPECT_EQ(h_.stats().answers[static_cast<size_t>(Recovery::kTooOld)], 1u);
}

TEST_F(HistoryTest, ATruncatedJoinFetchIsFetchedOn) {
  Synced(6);
  EXPECT_EQ(Join(9, Recover{kStream, 0}), Lines{"fetch 2 after 0 limit 6"});
  EXPECT_EQ(History(2, 6, 1, Range(1, 3)), Lines{"fetch 3 after 3 limit 3"});
  EXPECT_EQ(History(3, 6, 1, Range(4, 6)), Lines{"answer 9 top 6 recovered 1,2,3,4,5,6"});
}

TEST_F(HistoryTest, JoinsWhileSyncingAreDecidedInOrderOnceSynced) {
  EXPECT_EQ(Subscribe(), Lines{"fetch 1 after 0 limit 0"});
  EXPECT_EQ(Join(1, std::nullopt), Lines{});
  EXPECT_EQ(Join(2, Recover{kStream, 4}), Lines{});
  EXPECT_EQ(Join(3, Recover{kOther, 4}), Lines{});
  EXPECT_EQ(Join(4, std::nullopt), Lines{});
  h_.ForgetJoin(4);
  EXPECT_EQ(Deliver(6), Lines{});
  // 2 needs 5 fetched; 3 waits behind it, and the live 6 behind both.
  EXPECT_EQ(History(1, 5, 1, {}), (Lines{"answer 1 top 5 not_asked", "fetch 2 after 4 limit 1"}));
  EXPECT_EQ(History(2, 6, 1, Range(5, 5)),
            (Lines{"answer 2 top 5 recovered 5", "answer 3 top 5 other_epoch", "deliver 6"}));
}

TEST_F(HistoryTest, AnAnswerForAForgottenJoinStillReleasesTheTopic) {
  Synced(5);
  EXPECT_EQ(Join(9, Recover{kStream, 3}), Lines{"fetch 2 after 3 limit 2"});
  EXPECT_EQ(Deliver(6), Lines{});
  h_.ForgetJoin(9);
  EXPECT_EQ(History(2, 6, 1, Range(4, 5)), Lines{"deliver 6"});
}

TEST_F(HistoryTest, UnansweredFetchesGoAgainAfterAWelcomeAndOthersAreIgnored) {
  EXPECT_EQ(Subscribe(), Lines{"fetch 1 after 0 limit 0"});
  EXPECT_EQ(Run([&](auto* out) { h_.OnBrokerUp(out); }), Lines{"fetch 1 after 0 limit 0"});
  EXPECT_EQ(History(7, 5, 1, {}), Lines{}) << "not outstanding";
  EXPECT_EQ(Join(1, std::nullopt), Lines{});
  EXPECT_EQ(History(1, 5, 1, {}), Lines{"answer 1 top 5 not_asked"});
  EXPECT_EQ(History(1, 5, 1, {}), Lines{}) << "answered once";
}

TEST_F(HistoryTest, TheOwnPublishOnAnUnsubscribedTopicIsDeliveredAtOnceAndKept) {
  EXPECT_EQ(Deliver(4), Lines{"deliver 4"});
  EXPECT_EQ(Deliver(4), Lines{}) << "a re-sent publish's second delivery";
  EXPECT_EQ(h_.messages(), 1u);
  EXPECT_EQ(h_.topics(), 1u);
  // A later subscriber recovers it from the copy.
  Synced(4);
  EXPECT_EQ(Join(1, Recover{kStream, 3}), Lines{"answer 1 top 4 recovered 4"});
}

TEST_F(HistoryTest, UnsubscribingKeepsCopiesAndDropsJoinsAndHeld) {
  EXPECT_EQ(Subscribe(), Lines{"fetch 1 after 0 limit 0"});
  Join(1, std::nullopt);
  Deliver(3);
  h_.OnUnsubscribed("room:a");
  EXPECT_EQ(History(1, 2, 1, {}), Lines{}) << "the fetch is forgotten";
  EXPECT_EQ(h_.messages(), 1u);
  EXPECT_EQ(Subscribe(), Lines{"fetch 2 after 0 limit 0"});
  EXPECT_EQ(History(2, 3, 1, {}), Lines{}) << "join 1 was dropped";
}

// A hand-off (docs/UPGRADE.md): a new process's stream goes on from the
// old one's position, without a position fetch.
TEST_F(HistoryTest, AnImportedPositionGoesOnInOrderAndFetchesAGap) {
  Synced(3);
  EXPECT_EQ(Deliver(4), Lines{"deliver 4"});
  EXPECT_EQ(Run([&](auto* out) { h_.OnSubscribed("room:b", out); }),
            Lines{"fetch 2 after 0 limit 0"});
  std::vector<handoff::StreamPosition> positions;
  h_.ExportPositions(&positions);
  ASSERT_EQ(positions.size(), 1u) << "room:b is not synced yet";
  EXPECT_EQ(positions[0], (handoff::StreamPosition{"room:a", kStream, 4}));
  positions.push_back({"lobby", kStream, 9});  // not kept here: skipped

  HistoryStreams fresh(Options());
  fresh.ImportPositions(positions);
  std::vector<handoff::StreamPosition> again;
  fresh.ExportPositions(&again);
  EXPECT_EQ(again, std::vector<handoff::StreamPosition>{positions[0]});
  auto run = [&](auto f) {
    std::vector<HistoryAction> out;
    f(&out);
    return Describe(out);
  };
  EXPECT_EQ(run([&](auto* out) { fresh.OnSubscribed("room:a", out); }), Lines{})
      << "already synced";
  EXPECT_EQ(run([&](auto* out) { fresh.OnDeliver("room:a", Msg(4), now_, out); }), Lines{})
      << "delivered by the old process";
  EXPECT_EQ(run([&](auto* out) { fresh.OnDeliver("room:a", Msg(5), now_, out); }),
            Lines{"deliver 5"});
  EXPECT_EQ(run([&](auto* out) { fresh.OnDeliver("room:a", Msg(7), now_, out); }),
            Lines{"fetch 1 after 5 limit 1"});
}

TEST(HistoryEvictionTest, BySizeTtlAndBytes) {
  HistoryStreams h(Options(/*size=*/3, /*ttl_ms=*/1000, /*max_bytes=*/1 << 20));
  std::vector<HistoryAction> out;
  for (uint64_t o = 1; o <= 5; ++o) h.OnDeliver("room:a", Msg(o), 0, &out);
  EXPECT_EQ(h.messages(), 3u);
  EXPECT_EQ(h.stats().evicted[static_cast<size_t>(HistoryStreams::Evicted::kSize)], 2u);
  h.OnDeliver("room:a", Msg(6), 500, &out);
  h.Expire(999);
  EXPECT_EQ(h.messages(), 3u) << "nothing a second old yet";
  h.Expire(1000);
  EXPECT_EQ(h.messages(), 1u);
  EXPECT_EQ(h.stats().evicted[static_cast<size_t>(HistoryStreams::Evicted::kTtl)], 2u);
  h.Expire(1500);
  EXPECT_EQ(h.messages(), 0u);
  EXPECT_EQ(h.topics(), 0u) << "an unsubscribed topic with nothing left is forgotten";

  // 10-byte messages, 25 bytes in all: the oldest of any topic goes first.
  HistoryStreams b(Options(100, 60000, 25));
  b.OnDeliver("room:a", Msg(1, kStream, "aaaaaaaaaa"), 1, &out);
  b.OnDeliver("room:b", Msg(1, kStream, "bbbbbbbbbb"), 2, &out);
  b.OnDeliver("room:a", Msg(2, kStream, "aaaaaaaaaa"), 3, &out);
  EXPECT_EQ(b.bytes(), 20u);
  EXPECT_EQ(b.stats().evicted[static_cast<size_t>(HistoryStreams::Evicted::kBytes)], 1u);
  std::vector<mesh::StreamPosition> pos;
  std::vector<std::string> restated;
  b.State(
      &pos,
      [&](std::string_view t, const Sequenced& m) {
        restated.push_back(std::string(t) + "#" + std::to_string(m.offset));
      },
      1 << 20);
  std::sort(restated.begin(), restated.end());
  EXPECT_EQ(restated, (std::vector<std::string>{"room:a#2", "room:b#1"}));
}

TEST_F(HistoryTest, StateNamesEveryStreamAndRestatesNewestFirstWithinTheBound) {
  Synced(0);
  for (uint64_t o = 1; o <= 3; ++o) Deliver(o);
  std::vector<mesh::StreamPosition> pos;
  std::vector<uint64_t> restated;
  // "room:a" and "m1" make 8 bytes a message: room for two.
  h_.State(
      &pos, [&](std::string_view, const Sequenced& m) { restated.push_back(m.offset); }, 17);
  EXPECT_EQ(pos, (std::vector<mesh::StreamPosition>{{"room:a", kStream, 3}}));
  EXPECT_EQ(restated, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(h_.stats().restate_left_out, 1u);
}

TEST(HistoryWireTest, ARestateAndAHistoryAnswerCarryEveryField) {
  Sequenced m = Msg(5);
  m.flags = mesh::kFlagStamped;
  m.stamp = 99;
  m.seq = 12;
  const std::string packed = PackRestate("room:a", m);
  std::vector<std::string_view> frames;
  ASSERT_TRUE(mesh::Unpack(packed, &frames).ok());
  mesh::Message r;
  ASSERT_TRUE(mesh::Decode(frames, &r).ok());
  EXPECT_EQ(r.type, mesh::Type::kRestate);
  EXPECT_EQ(r.topic, "room:a");
  Sequenced back = SequencedOf(r);
  EXPECT_EQ(back.offset, 5u);
  EXPECT_EQ(back.stream, kStream);
  EXPECT_EQ(back.origin, 7u);
  EXPECT_EQ(back.seq, 12u);
  EXPECT_EQ(back.flags, mesh::kFlagStamped | mesh::kFlagSequenced);
  EXPECT_EQ(back.stamp, 99u);
  EXPECT_EQ(back.message, "m5");

  // A kHistory body: each entry a u32 length then a packed sequenced kDeliver.
  auto entry = [](uint64_t offset, std::string_view topic, uint64_t stream, uint8_t flags) {
    mesh::Message d;
    d.type = mesh::Type::kDeliver;
    d.origin = 7;
    d.seq = offset;
    d.flags = flags;
    d.topic = topic;
    d.body = "x";
    d.offset = offset;
    d.stream = stream;
    std::string p = mesh::Pack(d);
    const uint32_t n = static_cast<uint32_t>(p.size());
    std::string out(reinterpret_cast<const char*>(&n), 4);  // little-endian, as the hosts we run
    return out + p;
  };
  mesh::Message answer;
  answer.type = mesh::Type::kHistory;
  answer.topic = "room:a";
  answer.stream = kStream;
  std::string body = entry(1, "room:a", kStream, mesh::kFlagSequenced) +
                     entry(2, "room:a", kStream, mesh::kFlagSequenced);
  answer.body = body;
  std::vector<Sequenced> got;
  ASSERT_TRUE(DecodeHistory(answer, &got).ok());
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].offset, 2u);
  got.clear();
  body = entry(1, "room:a", kStream, mesh::kFlagSequenced) +
         entry(2, "room:b", kStream, mesh::kFlagSequenced);
  answer.body = body;
  EXPECT_FALSE(DecodeHistory(answer, &got).ok());
  EXPECT_EQ(got.size(), 1u) << "the ones before are kept";
  got.clear();
  body = entry(1, "room:a", kOther, mesh::kFlagSequenced);
  answer.body = body;
  EXPECT_FALSE(DecodeHistory(answer, &got).ok());
  body = entry(1, "room:a", kStream, 0);
  answer.body = body;
  EXPECT_FALSE(DecodeHistory(answer, &got).ok()) << "not sequenced";
  answer.body = "";
  EXPECT_TRUE(DecodeHistory(answer, &got).ok());
  EXPECT_TRUE(got.empty());
}

}  // namespace
}  // namespace sb::worker
