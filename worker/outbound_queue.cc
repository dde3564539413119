#include "worker/outbound_queue.h"

#include <algorithm>
#include <utility>

namespace sb::worker {

bool OutboundQueue::PushSlow(const FrameRef& frame, Kind kind, const Limits& limits) {
  const size_t cost = Cost(frame);
  if (kind == Kind::kPong && pong_ != kNone) {
    // The client is owed an answer to its latest ping only; the waiting
    // pong keeps its place in the queue and takes the new payload.
    Entry& e = ring_[pong_];
    const size_t old = Cost(e.frame);
    if (cost > old && charged() + (cost - old) > limits.max_charge) return false;
    charged_ = charged_ - old + cost;
    e.frame = frame;
    return true;
  }
  if (kind == Kind::kOwed && owed_count_ >= limits.max_owed) kind = Kind::kData;
  const size_t slots = count_ < ring_.size() ? ring_.size() : std::max<size_t>(ring_.size() * 2, 4);
  if ((kind == Kind::kData || kind == Kind::kPong) &&
      charged_ + cost + slots * sizeof(Entry) > limits.max_charge) {
    return false;
  }
  if (slots != ring_.size()) Resize(slots);
  const auto index = static_cast<uint32_t>((head_ + count_) & (ring_.size() - 1));
  ring_[index] = Entry{frame, kind};
  ++count_;
  if (kind == Kind::kOwed) {
    owed_ += cost;
    ++owed_count_;
  } else {
    charged_ += cost;
  }
  if (kind == Kind::kPong) pong_ = index;
  return true;
}

void OutboundQueue::Adopt(const FrameRef& frame, Kind kind) {
  // Only the newest pong can be waiting unstarted: an older one queued
  // before it had started (ConsumePart let it go).
  if (kind == Kind::kPong) pong_ = kNone;
  const Limits unbounded{.max_charge = SIZE_MAX, .max_owed = SIZE_MAX};
  PushSlow(frame, kind, unbounded);
}

size_t OutboundQueue::ConsumePart(size_t n) {
  offset_ += n;
  // A pong with a byte on the wire must be finished as it is.
  if (offset_ > 0 && pong_ == head_) pong_ = kNone;
  Trim();
  return 0;
}

size_t OutboundQueue::ConsumeAll() {
  const size_t done = count_;
  for (uint32_t i = 0; i < count_; ++i) At(i).frame = FrameRef();
  count_ = 0;
  charged_ = 0;
  owed_ = 0;
  owed_count_ = 0;
  pong_ = kNone;
  Trim();
  return done;
}

void OutboundQueue::DropUnstarted() {
  const uint32_t keep = offset_ > 0 ? 1 : 0;
  while (count_ > keep) PopBack();
  Trim();
}

void OutboundQueue::Clear() {
  while (count_ > 0) PopBack();
  offset_ = 0;
  head_ = 0;
  std::vector<Entry>().swap(ring_);
}

void OutboundQueue::PopBack() {
  const auto index = static_cast<uint32_t>((head_ + count_ - 1) & (ring_.size() - 1));
  Entry& e = ring_[index];
  Uncharge(e);
  e = Entry{};
  if (pong_ == index) pong_ = kNone;
  --count_;
}

void OutboundQueue::Shrink() {
  // To half full or less: far from the next shrink, a burst away from growing.
  size_t slots = kKeptSlots;
  while (slots < 2 * count_) slots *= 2;
  Resize(slots);
}

void OutboundQueue::Resize(size_t slots) {
  if (head_ == 0 && slots > ring_.size()) {
    // Growing a ring that starts at slot 0 (every queue that was written
    // out starts there again): the vector's own relocation keeps the order.
    ring_.resize(slots);
    return;
  }
  std::vector<Entry> next(slots);
  uint32_t pong = kNone;
  for (uint32_t i = 0; i < count_; ++i) {
    const auto from = static_cast<uint32_t>((head_ + i) & (ring_.size() - 1));
    if (from == pong_) pong = i;
    next[i] = std::move(ring_[from]);
  }
  ring_.swap(next);
  head_ = 0;
  pong_ = pong;
}

}  // namespace sb::worker
