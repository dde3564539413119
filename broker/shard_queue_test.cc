// ShardQueue: credit is never exceeded, depth is exact, overload is counted.

#include "broker/shard_queue.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>
#include <string>
#include <vector>

namespace sb::broker {
namespace {

QueuedMessage Msg(std::string text, int64_t now_ms = 0) {
  size_t bytes = text.size();
  return QueuedMessage{std::make_shared<const std::string>(std::move(text)), bytes, now_ms};
}

std::vector<std::string> Texts(const std::vector<QueuedMessage>& msgs) {
  std::vector<std::string> out;
  for (const auto& m : msgs) out.push_back(*m.payload);
  return out;
}

using Strings = std::vector<std::string>;

QueuePolicy Policy(size_t max_messages, size_t max_bytes,
                   OverloadPolicy overload = OverloadPolicy::kShedOldest) {
  return QueuePolicy{.max_messages = max_messages, .max_bytes = max_bytes, .overload = overload};
}

TEST(ShardQueueTest, PolicyValidation) {
  EXPECT_TRUE(ValidateQueuePolicy(QueuePolicy{}).ok());
  EXPECT_EQ(ValidateQueuePolicy(Policy(0, 10)).code(), Status::Code::kInvalidConfig);
  EXPECT_EQ(ValidateQueuePolicy(Policy(10, 0)).code(), Status::Code::kInvalidConfig);
}

TEST(ShardQueueTest, NothingIsSentWithoutCredit) {
  ShardQueue q(Policy(100, 1000));
  EXPECT_EQ(q.Push(Msg("a")).outcome, PushOutcome::kQueued);
  EXPECT_EQ(q.Push(Msg("bb")).outcome, PushOutcome::kQueued);
  std::vector<QueuedMessage> out;
  EXPECT_EQ(q.PopSendable(&out), 0u);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(q.depth_messages(), 2u);
  EXPECT_EQ(q.depth_bytes(), 3u);
}

TEST(ShardQueueTest, EachSentMessageConsumesOneCreditInOrder) {
  ShardQueue q(Policy(100, 1000));
  for (const char* s : {"a", "bb", "ccc"}) ASSERT_EQ(q.Push(Msg(s)).outcome, PushOutcome::kQueued);
  q.Grant(2);
  std::vector<QueuedMessage> out;
  EXPECT_EQ(q.PopSendable(&out), 2u);
  EXPECT_EQ(Texts(out), (Strings{"a", "bb"}));
  EXPECT_EQ(q.credit(), 0u);
  EXPECT_EQ(q.depth_messages(), 1u);
  EXPECT_EQ(q.depth_bytes(), 3u);
  // Credit left over waits for the next message.
  q.Grant(5);
  out.clear();
  EXPECT_EQ(q.PopSendable(&out), 1u);
  EXPECT_EQ(Texts(out), (Strings{"ccc"}));
  EXPECT_EQ(q.credit(), 4u);
  ASSERT_EQ(q.Push(Msg("d")).outcome, PushOutcome::kQueued);
  out.clear();
  EXPECT_EQ(q.PopSendable(&out), 1u);
  EXPECT_EQ(q.credit(), 3u);
  EXPECT_EQ(q.counters().sent, 4u);
  EXPECT_EQ(q.counters().sent_bytes, 7u);
  EXPECT_EQ(q.depth_messages(), 0u);
  EXPECT_EQ(q.depth_bytes(), 0u);
}

TEST(ShardQueueTest, PopSendableHonoursItsBatchLimitAndAppends) {
  ShardQueue q(Policy(100, 1000));
  for (const char* s : {"a", "b", "c"}) ASSERT_EQ(q.Push(Msg(s)).outcome, PushOutcome::kQueued);
  q.Grant(10);
  std::vector<QueuedMessage> out;
  out.push_back(Msg("already"));
  EXPECT_EQ(q.PopSendable(&out, 2), 2u);
  EXPECT_EQ(Texts(out), (Strings{"already", "a", "b"}));
  EXPECT_EQ(q.credit(), 8u);
}

TEST(ShardQueueTest, RequeuedMessagesGoBackToTheHeadInOrderAndCountAsNotSent) {
  ShardQueue q(Policy(2, 1000));
  ASSERT_EQ(q.Push(Msg("a")).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(Msg("b")).outcome, PushOutcome::kQueued);
  q.Grant(2);
  std::vector<QueuedMessage> out;
  ASSERT_EQ(q.PopSendable(&out), 2u);
  ASSERT_EQ(q.Push(Msg("c")).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(Msg("d")).outcome, PushOutcome::kQueued);
  // Past the message bound: they were queued before, so nothing is shed.
  q.Requeue(std::move(out));
  EXPECT_EQ(q.depth_messages(), 4u);
  EXPECT_EQ(q.depth_bytes(), 4u);
  EXPECT_EQ(q.counters().sent, 0u);
  EXPECT_EQ(q.counters().dropped_shed, 0u);
  q.Grant(4);
  out.clear();
  ASSERT_EQ(q.PopSendable(&out), 4u);
  EXPECT_EQ(Texts(out), (Strings{"a", "b", "c", "d"}));
  // Into a closed queue: dropped and counted.
  std::vector<QueuedMessage> back(out.begin(), out.begin() + 1);
  (void)q.Close();
  q.Requeue(std::move(back));
  EXPECT_EQ(q.depth_messages(), 0u);
  const auto& c = q.counters();
  EXPECT_EQ(c.pushed, c.sent + c.dropped_shed + c.dropped_disconnect + c.dropped_too_large);
}

TEST(ShardQueueTest, GrantSaturates) {
  ShardQueue q(Policy(10, 10));
  q.Grant(std::numeric_limits<uint64_t>::max() - 1);
  q.Grant(5);
  EXPECT_EQ(q.credit(), std::numeric_limits<uint64_t>::max());
}

TEST(ShardQueueTest, OneBufferIsSharedByEveryQueue) {
  auto payload = std::make_shared<const std::string>("broadcast");
  std::vector<ShardQueue> queues(5, ShardQueue(Policy(10, 100)));
  for (auto& q : queues) {
    ASSERT_EQ(q.Push(QueuedMessage{payload, payload->size(), 0}).outcome, PushOutcome::kQueued);
  }
  EXPECT_EQ(payload.use_count(), 6);
  std::vector<QueuedMessage> out;
  for (auto& q : queues) {
    q.Grant(1);
    q.PopSendable(&out);
  }
  for (const auto& m : out) EXPECT_EQ(m.payload.get(), payload.get());
  out.clear();
  EXPECT_EQ(payload.use_count(), 1);
}

TEST(ShardQueueTest, OldestEnqueueTimeIsTheHeads) {
  ShardQueue q(Policy(10, 100));
  EXPECT_EQ(q.oldest_enqueued_us(), std::nullopt);
  ASSERT_EQ(q.Push(Msg("a", 100)).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(Msg("b", 150)).outcome, PushOutcome::kQueued);
  EXPECT_EQ(q.oldest_enqueued_us(), 100);
  q.Grant(1);
  std::vector<QueuedMessage> out;
  q.PopSendable(&out);
  EXPECT_EQ(q.oldest_enqueued_us(), 150);
}

TEST(ShardQueueTest, ShedOldestByMessageCount) {
  ShardQueue q(Policy(3, 1000));
  for (const char* s : {"1", "2", "3"}) ASSERT_EQ(q.Push(Msg(s)).outcome, PushOutcome::kQueued);
  PushResult r = q.Push(Msg("4"));
  EXPECT_EQ(r.outcome, PushOutcome::kShed);
  EXPECT_EQ(r.dropped, 1u);
  EXPECT_EQ(q.depth_messages(), 3u);
  EXPECT_EQ(q.depth_bytes(), 3u);
  EXPECT_EQ(q.counters().dropped_shed, 1u);
  EXPECT_EQ(q.counters().dropped_bytes, 1u);
  q.Grant(10);
  std::vector<QueuedMessage> out;
  q.PopSendable(&out);
  EXPECT_EQ(Texts(out), (Strings{"2", "3", "4"}));
}

TEST(ShardQueueTest, ShedOldestByBytesDropsAsManyAsNeeded) {
  ShardQueue q(Policy(100, 10));
  for (const char* s : {"aaa", "bbb", "cc", "d"}) {
    ASSERT_EQ(q.Push(Msg(s)).outcome, PushOutcome::kQueued);
  }
  EXPECT_EQ(q.depth_bytes(), 9u);
  // 9 + 7 > 10: the head goes until at most 3 bytes are left ("aaa" and
  // "bbb"), leaving "cc", "d" and the new one: exactly 10.
  PushResult r = q.Push(Msg("eeeeeee"));
  EXPECT_EQ(r.outcome, PushOutcome::kShed);
  EXPECT_EQ(r.dropped, 2u);
  EXPECT_EQ(q.depth_messages(), 3u);
  EXPECT_EQ(q.depth_bytes(), 10u);
  EXPECT_EQ(q.counters().dropped_shed, 2u);
  EXPECT_EQ(q.counters().dropped_bytes, 6u);
  // Exactly at the bound is allowed; one more byte sheds.
  r = q.Push(Msg("f"));
  EXPECT_EQ(r.outcome, PushOutcome::kShed);
  EXPECT_EQ(r.dropped, 1u);
  EXPECT_EQ(q.depth_bytes(), 9u);
}

TEST(ShardQueueTest, AMessageLargerThanTheBoundIsRefusedAloneUnderEitherPolicy) {
  for (OverloadPolicy p : {OverloadPolicy::kShedOldest, OverloadPolicy::kDisconnect}) {
    ShardQueue q(Policy(10, 4, p));
    ASSERT_EQ(q.Push(Msg("ab")).outcome, PushOutcome::kQueued);
    PushResult r = q.Push(Msg("12345"));
    EXPECT_EQ(r.outcome, PushOutcome::kTooLarge);
    EXPECT_EQ(r.dropped, 0u);
    EXPECT_EQ(q.depth_messages(), 1u);
    EXPECT_EQ(q.depth_bytes(), 2u);
    EXPECT_FALSE(q.closed());
    EXPECT_EQ(q.counters().dropped_too_large, 1u);
    EXPECT_EQ(q.counters().dropped_bytes, 5u);
  }
}

TEST(ShardQueueTest, DisconnectPolicyDropsTheQueueAndCloses) {
  ShardQueue q(Policy(2, 1000, OverloadPolicy::kDisconnect));
  q.Grant(1);
  ASSERT_EQ(q.Push(Msg("a")).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(Msg("bb")).outcome, PushOutcome::kQueued);
  PushResult r = q.Push(Msg("ccc"));
  EXPECT_EQ(r.outcome, PushOutcome::kDisconnect);
  EXPECT_EQ(r.dropped, 3u);
  EXPECT_TRUE(q.closed());
  EXPECT_EQ(q.depth_messages(), 0u);
  EXPECT_EQ(q.depth_bytes(), 0u);
  EXPECT_EQ(q.oldest_enqueued_us(), std::nullopt);
  EXPECT_EQ(q.counters().dropped_disconnect, 3u);
  EXPECT_EQ(q.counters().dropped_bytes, 6u);
  EXPECT_EQ(q.counters().dropped_shed, 0u);
  // Closed until the caller removes the link: nothing more goes in or out.
  r = q.Push(Msg("d"));
  EXPECT_EQ(r.outcome, PushOutcome::kDisconnect);
  EXPECT_EQ(r.dropped, 1u);
  q.Grant(10);
  std::vector<QueuedMessage> out;
  EXPECT_EQ(q.PopSendable(&out), 0u);
  EXPECT_EQ(q.counters().dropped_disconnect, 4u);
  EXPECT_EQ(q.counters().pushed, 4u);
}

TEST(ShardQueueTest, DisconnectPolicyByBytes) {
  ShardQueue q(Policy(100, 5, OverloadPolicy::kDisconnect));
  ASSERT_EQ(q.Push(Msg("abc")).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(Msg("de")).outcome, PushOutcome::kQueued);  // exactly at the bound
  EXPECT_EQ(q.Push(Msg("f")).outcome, PushOutcome::kDisconnect);
}

// Random pushes, grants and pops against a model queue. Invariants after
// every step: total sent never exceeds total granted; every pop is within
// the credit held; depth in messages and bytes equals the model's; the
// bounds hold; order is FIFO minus drops; every pushed message is
// accounted for exactly once.
TEST(ShardQueueTest, RandomOperationsNeverExceedCreditAndKeepExactDepth) {
  for (OverloadPolicy policy : {OverloadPolicy::kShedOldest, OverloadPolicy::kDisconnect}) {
    std::mt19937 rng(7);
    const size_t kMaxMessages = 50;
    const size_t kMaxBytes = 2000;
    ShardQueue q(Policy(kMaxMessages, kMaxBytes, policy));
    std::deque<std::pair<uint64_t, size_t>> model;  // seq, bytes
    uint64_t granted = 0;
    uint64_t sent = 0;
    uint64_t next_seq = 0;
    uint64_t last_sent_seq = 0;
    bool any_sent = false;
    int64_t now = 0;
    for (int step = 0; step < 50000 && !q.closed(); ++step) {
      now += rng() % 3;
      switch (rng() % 4) {
        case 0:
        case 1: {
          size_t bytes = rng() % 120;
          uint64_t seq = next_seq++;
          PushResult r = q.Push(
              QueuedMessage{std::make_shared<const std::string>(std::to_string(seq)), bytes, now});
          switch (r.outcome) {
            case PushOutcome::kQueued:
              EXPECT_EQ(r.dropped, 0u);
              model.emplace_back(seq, bytes);
              break;
            case PushOutcome::kShed:
              ASSERT_EQ(policy, OverloadPolicy::kShedOldest);
              ASSERT_GE(model.size(), r.dropped);
              ASSERT_GT(r.dropped, 0u);
              for (size_t i = 0; i < r.dropped; ++i) model.pop_front();
              model.emplace_back(seq, bytes);
              break;
            case PushOutcome::kTooLarge:
              FAIL() << "no message is larger than the bound";
            case PushOutcome::kDisconnect:
              ASSERT_EQ(policy, OverloadPolicy::kDisconnect);
              EXPECT_EQ(r.dropped, model.size() + 1);
              model.clear();
              break;
          }
          break;
        }
        case 2: {
          // Every other stretch of 2,000 steps the link stops granting:
          // a stalled shard, whose queue must fill and overflow.
          if ((step / 2000) % 2 == 1) break;
          uint64_t n = rng() % 8;
          q.Grant(n);
          if (!q.closed()) granted += n;
          break;
        }
        default: {
          uint64_t credit_before = q.credit();
          std::vector<QueuedMessage> out;
          size_t n = q.PopSendable(&out, 1 + rng() % 10);
          ASSERT_EQ(n, out.size());
          ASSERT_LE(n, credit_before);
          EXPECT_EQ(q.credit(), credit_before - n);
          for (const auto& m : out) {
            ASSERT_FALSE(model.empty());
            uint64_t seq = std::stoull(*m.payload);
            EXPECT_EQ(seq, model.front().first);
            EXPECT_EQ(m.bytes, model.front().second);
            if (any_sent) {
              EXPECT_GT(seq, last_sent_seq);
            }
            last_sent_seq = seq;
            any_sent = true;
            model.pop_front();
          }
          sent += n;
          break;
        }
      }
      ASSERT_LE(sent, granted);
      EXPECT_EQ(q.counters().sent, sent);
      EXPECT_EQ(granted - sent, q.credit());
      size_t bytes = 0;
      for (const auto& [seq, b] : model) bytes += b;
      ASSERT_EQ(q.depth_messages(), model.size());
      ASSERT_EQ(q.depth_bytes(), bytes);
      ASSERT_LE(q.depth_messages(), kMaxMessages);
      ASSERT_LE(q.depth_bytes(), kMaxBytes);
      const auto& c = q.counters();
      ASSERT_EQ(c.pushed, c.sent + c.dropped_shed + c.dropped_disconnect + c.dropped_too_large +
                              q.depth_messages());
    }
    if (policy == OverloadPolicy::kShedOldest) {
      EXPECT_GT(q.counters().dropped_shed, 0u) << "the run should have overloaded the queue";
      EXPECT_GT(sent, 1000u);
    } else {
      EXPECT_TRUE(q.closed()) << "the run should have overloaded the queue";
    }
  }
}

TEST(ShardQueueTest, EveryDroppedMessageIsHandedBackWithItsTag) {
  ShardQueue q(Policy(2, 1000));
  auto tagged = [](std::string text, uint64_t tag) {
    QueuedMessage m = Msg(std::move(text));
    m.tag = tag;
    return m;
  };
  std::vector<QueuedMessage> dropped;
  ASSERT_EQ(q.Push(tagged("a", 1), &dropped).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(tagged("b", 2), &dropped).outcome, PushOutcome::kQueued);
  EXPECT_TRUE(dropped.empty());
  ASSERT_EQ(q.Push(tagged("c", 3), &dropped).outcome, PushOutcome::kShed);
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].tag, 1u);
  EXPECT_EQ(*dropped[0].payload, "a");

  // Too large alone: the new message itself comes back.
  ShardQueue small(Policy(10, 3));
  dropped.clear();
  ASSERT_EQ(small.Push(tagged("toolong", 7), &dropped).outcome, PushOutcome::kTooLarge);
  ASSERT_EQ(dropped.size(), 1u);
  EXPECT_EQ(dropped[0].tag, 7u);
}

TEST(ShardQueueTest, DisconnectHandsBackTheQueueAndTheNewMessage) {
  ShardQueue q(Policy(2, 1000, OverloadPolicy::kDisconnect));
  std::vector<QueuedMessage> dropped;
  ASSERT_EQ(q.Push(Msg("a")).outcome, PushOutcome::kQueued);
  ASSERT_EQ(q.Push(Msg("b")).outcome, PushOutcome::kQueued);
  PushResult r = q.Push(Msg("c"), &dropped);
  EXPECT_EQ(r.outcome, PushOutcome::kDisconnect);
  EXPECT_EQ(r.dropped, 3u);
  EXPECT_EQ(Texts(dropped), (Strings{"a", "b", "c"}));
  EXPECT_EQ(q.counters().dropped_disconnect, 3u);
  EXPECT_EQ(q.counters().dropped_bytes, 3u);
  EXPECT_TRUE(q.closed());
}

TEST(ShardQueueTest, CloseDropsEverythingQueuedAndCountsIt) {
  ShardQueue q(Policy(10, 1000));
  for (const char* s : {"a", "bb"}) ASSERT_EQ(q.Push(Msg(s)).outcome, PushOutcome::kQueued);
  q.Grant(5);
  std::vector<QueuedMessage> gone = q.Close();
  EXPECT_EQ(Texts(gone), (Strings{"a", "bb"}));
  EXPECT_EQ(q.depth_messages(), 0u);
  EXPECT_EQ(q.depth_bytes(), 0u);
  EXPECT_EQ(q.credit(), 0u);
  EXPECT_EQ(q.counters().dropped_disconnect, 2u);
  EXPECT_EQ(q.counters().dropped_bytes, 3u);
  EXPECT_EQ(q.Push(Msg("c")).outcome, PushOutcome::kDisconnect);
}

TEST(ShardQueueTest, ResetCreditReplacesWhatWasGranted) {
  ShardQueue q(Policy(10, 1000));
  q.Grant(7);
  q.ResetCredit(3);
  EXPECT_EQ(q.credit(), 3u);
  q.Grant(1);
  EXPECT_EQ(q.credit(), 4u);
}

}  // namespace
}  // namespace sb::broker
