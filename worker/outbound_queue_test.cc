#include "worker/outbound_queue.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <random>
#include <string>
#include <vector>

namespace sb::worker {
namespace {

using Kind = OutboundQueue::Kind;
constexpr size_t kSlot = 16;

FrameRef Frame(std::string_view bytes) { return FrameRef::Copy(bytes); }

OutboundQueue::Limits Limit(size_t max_charge, size_t max_owed = 0) {
  return {.max_charge = max_charge, .max_owed = max_owed};
}

// Everything the queue would write, in order, by gathering and consuming it
// `step` bytes at a time.
std::string Drain(OutboundQueue& q, size_t step = SIZE_MAX) {
  std::string out;
  iovec iov[64];
  while (!q.empty()) {
    size_t total = 0;
    const size_t n = q.Gather(iov, 64, &total);
    const size_t take = std::min(step, total);
    size_t left = take;
    for (size_t i = 0; i < n && left > 0; ++i) {
      const size_t len = std::min(iov[i].iov_len, left);
      out.append(static_cast<const char*>(iov[i].iov_base), len);
      left -= len;
    }
    q.Consume(take);
  }
  return out;
}

TEST(OutboundQueue, OverheadCoversWhatMallocReallyTakes) {
  // FrameRef's block is malloc(16 + size): whatever glibc hands out for it
  // must fit in the frame's bytes plus the overhead charged. (Under malloc's
  // mmap threshold, 128 KiB; a larger frame is rounded up to whole pages,
  // under 4 KiB, about 3% of it at worst.)
  for (size_t size : {0, 1, 2, 7, 8, 9, 24, 25, 100, 127, 4096, 65536, 100000}) {
    void* p = std::malloc(FrameRef::kHeaderBytes + size);
    ASSERT_NE(p, nullptr);
    const size_t usable = malloc_usable_size(p);
    std::free(p);
    // A chunk is its usable size plus its 8-byte header.
    EXPECT_LE(usable + 8, size + OutboundQueue::kFrameOverhead) << size;
  }
}

TEST(OutboundQueue, ChargesBytesOverheadAndSlots) {
  OutboundQueue q;
  EXPECT_EQ(q.memory(), 0u);
  ASSERT_TRUE(q.Push(Frame("ab"), Kind::kData, Limit(1 << 20)));
  EXPECT_EQ(q.charged(), 2 + OutboundQueue::kFrameOverhead + 4 * kSlot);
  ASSERT_TRUE(q.Push(Frame(std::string(100, 'x')), Kind::kData, Limit(1 << 20)));
  EXPECT_EQ(q.charged(), 102 + 2 * OutboundQueue::kFrameOverhead + 4 * kSlot);
  EXPECT_EQ(q.frames(), 2u);
  EXPECT_EQ(q.owed(), 0u);
  EXPECT_EQ(q.memory(), q.charged());
}

TEST(OutboundQueue, ASmallFrameFloodStopsAtTheLimitByMemoryNotPayload) {
  // What a client that never reads could make the shard hold in 2-byte
  // frames: counted by payload, a 1 MiB limit let 524,288 of them (about
  // 21 MiB) wait.
  constexpr size_t kLimit = 1 << 20;
  OutboundQueue q;
  size_t accepted = 0;
  while (q.Push(Frame("ab"), Kind::kData, Limit(kLimit))) ++accepted;
  EXPECT_LE(q.charged(), kLimit);
  // Each waits as a 32-byte chunk and a slot: what is held is within the limit.
  EXPECT_LE(accepted * (32 + kSlot), kLimit);
  // The ring doubles: at worst half its slots are spare.
  EXPECT_GT(accepted, kLimit / (2 + OutboundQueue::kFrameOverhead + 2 * kSlot));
  EXPECT_EQ(q.frames(), accepted);
}

TEST(OutboundQueue, RefusesWhatWouldPassTheLimitAndKeepsTheRest) {
  OutboundQueue q;
  const size_t one = 100 + OutboundQueue::kFrameOverhead;
  const auto limit = Limit(2 * one + 4 * kSlot);
  ASSERT_TRUE(q.Push(Frame(std::string(100, 'a')), Kind::kData, limit));
  ASSERT_TRUE(q.Push(Frame(std::string(100, 'b')), Kind::kData, limit));
  EXPECT_FALSE(q.Push(Frame("c"), Kind::kData, limit));
  EXPECT_FALSE(q.Push(Frame("c"), Kind::kPong, limit));
  EXPECT_EQ(q.frames(), 2u);
  EXPECT_EQ(Drain(q), std::string(100, 'a') + std::string(100, 'b'));
}

TEST(OutboundQueue, ForcedFramesAreNeverRefused) {
  OutboundQueue q;
  ASSERT_TRUE(q.Push(Frame(std::string(1000, 'a')), Kind::kForced, Limit(10)));
  EXPECT_GT(q.charged(), 10u);
  EXPECT_FALSE(q.Push(Frame("b"), Kind::kData, Limit(10)));
  EXPECT_EQ(Drain(q), std::string(1000, 'a'));
}

TEST(OutboundQueue, ANewPongReplacesOneNotStarted) {
  OutboundQueue q;
  const auto limit = Limit(1 << 20);
  ASSERT_TRUE(q.Push(Frame("d1"), Kind::kData, limit));
  ASSERT_TRUE(q.Push(Frame("P1"), Kind::kPong, limit));
  ASSERT_TRUE(q.Push(Frame("d2"), Kind::kData, limit));
  const size_t charged = q.charged();
  for (int i = 2; i <= 1000; ++i) {
    ASSERT_TRUE(q.Push(Frame("P" + std::to_string(i)), Kind::kPong, limit));
  }
  EXPECT_EQ(q.frames(), 3u);
  EXPECT_EQ(q.charged(), charged + 3);  // "P1000" is 3 bytes longer than "P1"
  // The pong keeps its place; it carries the latest ping's payload.
  EXPECT_EQ(Drain(q), "d1P1000d2");
}

TEST(OutboundQueue, APongBeingWrittenIsFinishedAndTheNextOneQueued) {
  OutboundQueue q;
  const auto limit = Limit(1 << 20);
  ASSERT_TRUE(q.Push(Frame("pong-a"), Kind::kPong, limit));
  EXPECT_EQ(q.Consume(2), 0u);  // "po" is on the wire
  ASSERT_TRUE(q.Push(Frame("pong-b"), Kind::kPong, limit));
  ASSERT_TRUE(q.Push(Frame("pong-c"), Kind::kPong, limit));
  EXPECT_EQ(q.frames(), 2u);
  EXPECT_EQ(Drain(q), "ng-apong-c");
}

TEST(OutboundQueue, APongWrittenIsNotReplaced) {
  OutboundQueue q;
  const auto limit = Limit(1 << 20);
  ASSERT_TRUE(q.Push(Frame("p1"), Kind::kPong, limit));
  EXPECT_EQ(Drain(q), "p1");
  ASSERT_TRUE(q.Push(Frame("p2"), Kind::kPong, limit));
  EXPECT_EQ(q.frames(), 1u);
  EXPECT_EQ(Drain(q), "p2");
}

// A hand-off (docs/UPGRADE.md): the frames and what is written of the
// first, adopted by a new queue, are the same queue whatever its limits.
OutboundQueue Adopted(const OutboundQueue& old) {
  OutboundQueue q;
  old.ForEachFrame([&](const FrameRef& f, Kind kind) { q.Adopt(f, kind); });
  q.Consume(old.written());
  return q;
}

TEST(OutboundQueue, AnAdoptedQueueWritesAndChargesAsTheOldOne) {
  OutboundQueue old;
  const auto limit = Limit(1 << 20, 4);
  ASSERT_TRUE(old.Push(Frame("pong-a"), Kind::kPong, limit));
  EXPECT_EQ(old.Consume(2), 0u);
  ASSERT_TRUE(old.Push(Frame("d1"), Kind::kData, limit));
  ASSERT_TRUE(old.Push(Frame("pong-b"), Kind::kPong, limit));
  ASSERT_TRUE(old.Push(Frame("owed"), Kind::kOwed, limit));
  ASSERT_TRUE(old.Push(Frame("close"), Kind::kForced, limit));
  std::vector<Kind> kinds;
  old.ForEachFrame([&](const FrameRef&, Kind kind) { kinds.push_back(kind); });
  EXPECT_EQ(kinds,
            (std::vector<Kind>{Kind::kPong, Kind::kData, Kind::kPong, Kind::kOwed, Kind::kForced}));
  EXPECT_EQ(old.written(), 2u);

  OutboundQueue fresh = Adopted(old);
  EXPECT_EQ(fresh.frames(), old.frames());
  EXPECT_EQ(fresh.written(), 2u);
  EXPECT_EQ(fresh.charged(), old.charged());
  EXPECT_EQ(fresh.owed(), old.owed());
  EXPECT_EQ(fresh.owed_frames(), old.owed_frames());
  // Over a limit it could not have queued them under: still refused there.
  EXPECT_FALSE(fresh.Push(Frame("d2"), Kind::kData, Limit(1)));
  // The waiting pong is still the one a newer one replaces.
  ASSERT_TRUE(old.Push(Frame("pong-c"), Kind::kPong, limit));
  ASSERT_TRUE(fresh.Push(Frame("pong-c"), Kind::kPong, limit));
  EXPECT_EQ(fresh.frames(), old.frames());
  EXPECT_EQ(Drain(fresh, 3), Drain(old, 5));
  OutboundQueue drained = Adopted(old);
  EXPECT_TRUE(drained.empty());
}

TEST(OutboundQueue, AnAdoptedQueueWithItsFirstFrameUnstartedKeepsItsPong) {
  OutboundQueue old;
  const auto limit = Limit(1 << 20);
  ASSERT_TRUE(old.Push(Frame("p1"), Kind::kPong, limit));
  OutboundQueue fresh = Adopted(old);
  ASSERT_TRUE(fresh.Push(Frame("p2"), Kind::kPong, limit));
  EXPECT_EQ(fresh.frames(), 1u);
  EXPECT_EQ(Drain(fresh), "p2");
}

TEST(OutboundQueue, OwedFramesPassTheLimitUpToTheirCountAndAreCountedApart) {
  OutboundQueue q;
  const std::string state(100000, 's');
  const auto limit = Limit(1024, /*max_owed=*/2);
  ASSERT_TRUE(q.Push(Frame(state), Kind::kOwed, limit));
  ASSERT_TRUE(q.Push(Frame(state), Kind::kOwed, limit));
  EXPECT_EQ(q.owed_frames(), 2u);
  EXPECT_EQ(q.owed(), 2 * (state.size() + OutboundQueue::kFrameOverhead));
  EXPECT_EQ(q.charged(), 4 * kSlot);
  // Owed frames leave the limit to everything else.
  ASSERT_TRUE(q.Push(Frame("reply"), Kind::kData, limit));
  // A third is charged like any frame, and refused.
  EXPECT_FALSE(q.Push(Frame(state), Kind::kOwed, limit));
  EXPECT_EQ(q.frames(), 3u);
  EXPECT_EQ(Drain(q, 4096), state + state + "reply");
  EXPECT_EQ(q.owed(), 0u);
  EXPECT_EQ(q.owed_frames(), 0u);
  ASSERT_TRUE(q.Push(Frame(state), Kind::kOwed, limit));
  EXPECT_EQ(q.owed_frames(), 1u);
}

TEST(OutboundQueue, DropUnstartedKeepsOnlyAFramePartlyWritten) {
  OutboundQueue q;
  const auto limit = Limit(1 << 20, 10);
  ASSERT_TRUE(q.Push(Frame("first"), Kind::kData, limit));
  ASSERT_TRUE(q.Push(Frame("pong"), Kind::kPong, limit));
  ASSERT_TRUE(q.Push(Frame("owed"), Kind::kOwed, limit));
  q.Consume(2);
  q.DropUnstarted();
  EXPECT_EQ(q.frames(), 1u);
  EXPECT_EQ(q.owed(), 0u);
  EXPECT_EQ(q.charged(), 5 + OutboundQueue::kFrameOverhead + 4 * kSlot);
  ASSERT_TRUE(q.Push(Frame("close"), Kind::kForced, limit));
  EXPECT_EQ(Drain(q), "rstclose");

  ASSERT_TRUE(q.Push(Frame("x"), Kind::kData, limit));
  q.DropUnstarted();
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.charged(), 4 * kSlot);  // a small ring is kept for the next frame
}

TEST(OutboundQueue, AnEmptyQueueKeepsNoBigRing) {
  OutboundQueue q;
  const auto limit = Limit(1 << 20);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(q.Push(Frame("abc"), Kind::kData, limit));
  EXPECT_GE(q.charged(), 1000 * kSlot);
  Drain(q);
  EXPECT_EQ(q.memory(), 0u);
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(q.Push(Frame("abc"), Kind::kData, limit));
  q.Clear();
  EXPECT_EQ(q.memory(), 0u);
  EXPECT_TRUE(q.empty());
}

TEST(OutboundQueue, GatherStopsAtTheIovecCount) {
  OutboundQueue q;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(q.Push(Frame("f"), Kind::kData, Limit(1 << 20)));
  iovec iov[4];
  size_t total = 0;
  EXPECT_EQ(q.Gather(iov, 4, &total), 4u);
  EXPECT_EQ(total, 4u);
  EXPECT_EQ(q.Consume(total), 4u);
  EXPECT_EQ(q.frames(), 6u);
}

// Pushes and partial writes in random order against a plain model: the
// bytes come out in order, the charge is exact, and the ring stays within
// four slots per frame waiting.
TEST(OutboundQueue, MatchesAModelThroughWrapsGrowthAndShrinking) {
  std::mt19937 rng(12);
  OutboundQueue q;
  std::deque<std::string> model;
  size_t model_offset = 0;
  std::string expected, written;
  const auto limit = Limit(SIZE_MAX / 2);
  size_t cost = 0;  // what the model's frames cost
  for (int step = 0; step < 20000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      const int burst = op == 0 ? 100 : 1;  // bursts grow the ring, draining shrinks it
      for (int i = 0; i < burst; ++i) {
        std::string f(1 + rng() % 40, static_cast<char>('a' + rng() % 26));
        ASSERT_TRUE(q.Push(Frame(f), Kind::kData, limit));
        expected += f;
        cost += f.size() + OutboundQueue::kFrameOverhead;
        model.push_back(std::move(f));
      }
    } else {
      iovec iov[64];
      size_t total = 0;
      const size_t n = q.Gather(iov, 64, &total);
      size_t take = total == 0 ? 0 : rng() % (total + 1);
      for (size_t i = 0, left = take; i < n && left > 0; ++i) {
        const size_t len = std::min(iov[i].iov_len, left);
        written.append(static_cast<const char*>(iov[i].iov_base), len);
        left -= len;
      }
      size_t done = 0;
      for (size_t left = take; left > 0;) {
        const size_t rest = model.front().size() - model_offset;
        if (left < rest) {
          model_offset += left;
          break;
        }
        left -= rest;
        model_offset = 0;
        cost -= model.front().size() + OutboundQueue::kFrameOverhead;
        model.pop_front();
        ++done;
      }
      ASSERT_EQ(q.Consume(take), done);
    }
    ASSERT_GE(q.charged(), cost);
    const size_t slot_bytes = q.charged() - cost;
    ASSERT_EQ(slot_bytes % kSlot, 0u) << step;
    ASSERT_EQ(q.frames(), model.size());
    ASSERT_LE(slot_bytes / kSlot, std::max<size_t>(8, 4 * model.size())) << step;
  }
  written += Drain(q);
  EXPECT_EQ(written, expected);
}

}  // namespace
}  // namespace sb::worker
