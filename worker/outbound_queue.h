// OutboundQueue: the frames waiting to be written to one client socket, and
// what they cost.
//
// Owns: the queue (a ring of FrameRefs, each shared with every other socket
// the frame goes to), how much of the first frame is written, and the
// queue's charge against --max-outbound: every frame its bytes plus
// kFrameOverhead (its heap block's header and malloc's share), and the ring's
// slots as allocated. So --max-outbound bounds memory, not payload: a queue
// of 2-byte pongs costs 41 bytes each (plus a 16-byte slot), not 2. Two rules
// on what waits: at most one pong not yet started (a newer one replaces it,
// RFC 6455 §5.5.3), and owed frames (a joiner's presence_state) are queued
// past the limit, up to a count, and counted apart (owed()).
// Does not: write to the socket (the gateway gathers iovecs from the front
// and reports what the kernel took) or decide what a socket over its limit
// gets (the gateway closes it). Plain data on the shard's loop thread; each
// gateway connection owns one.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "worker/frame_ref.h"

namespace sb::worker {

class OutboundQueue {
 public:
  enum class Kind : uint8_t {
    kData,    // refused if it would take the charge past the limit
    kPong,    // like kData; replaces a pong that waits with no byte written
    kOwed,    // queued past the limit while fewer than max_owed wait; counted apart
    kForced,  // never refused, charged: close frames and HTTP responses
  };
  struct Limits {
    size_t max_charge = 0;  // --max-outbound
    size_t max_owed = 0;    // owed frames that may wait at once; more are kData
  };

  // What a frame's heap block costs beyond the frame's bytes: FrameRef's
  // header (16), glibc malloc's chunk header (8) and the rounding of the
  // chunk up to a multiple of 16 (at most 15). A 2-byte pong takes a
  // 32-byte chunk and is charged 41: never less than it costs.
  static constexpr size_t kFrameOverhead = FrameRef::kHeaderBytes + 8 + 15;

  // Appends `frame`. Returns false, queuing nothing, if the frame is kData
  // or kPong (or kOwed with max_owed already waiting) and would take
  // charged() past limits.max_charge. A kPong replaces, in its place, a
  // pong queued earlier that has not started to be written.
  bool Push(const FrameRef& frame, Kind kind, const Limits& limits) {
    // The fan-out path, inline: a data frame into a ring with room.
    if (kind == Kind::kData && count_ < ring_.size()) {
      const size_t cost = Cost(frame);
      if (charged_ + cost + ring_.size() * sizeof(Entry) > limits.max_charge) return false;
      Entry& e = At(count_);
      e.frame = frame;
      e.kind = kind;
      ++count_;
      charged_ += cost;
      return true;
    }
    return PushSlow(frame, kind, limits);
  }

  // Fills up to `max_iov` iovecs with what is to be written next (the rest
  // of the first frame, then whole frames); returns how many, and their
  // total length in *bytes. Valid until the queue changes.
  size_t Gather(iovec* iov, size_t max_iov, size_t* bytes) const {
    const size_t n = count_ < max_iov ? count_ : max_iov;
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      const FrameRef& f = At(i).frame;
      const size_t off = i == 0 ? offset_ : 0;
      iov[i].iov_base = const_cast<char*>(f.data() + off);
      iov[i].iov_len = f.size() - off;
      total += iov[i].iov_len;
    }
    *bytes = total;
    return n;
  }
  // The kernel took `n` bytes (at most what Gather offered). Returns how
  // many frames that finished.
  size_t Consume(size_t n) {
    // The common case, inline: everything queued was written.
    size_t done = 0;
    while (count_ > 0) {
      const size_t rest = At(0).frame.size() - offset_;
      if (n < rest) return done + ConsumePart(n);
      n -= rest;
      offset_ = 0;
      PopFront();
      ++done;
    }
    Trim();
    return done;
  }
  // The kernel took everything queued (what Gather offered was the whole
  // queue): releases every frame at once. Returns how many.
  size_t ConsumeAll();
  // Drops every frame but one partly written (whose rest must go before
  // anything else can).
  void DropUnstarted();
  // Drops everything and frees the ring.
  void Clear();

  // A hand-off of the connection to a new process (docs/UPGRADE.md): the
  // frames waiting, oldest first, with their kinds; `written` bytes of the
  // first are on the wire. The new process Adopts each, in order, then
  // Consume(written): the same frames, charged the same way, whatever its
  // limits (the old process accepted them), and a pong waiting with no byte
  // written is still the one a newer pong replaces.
  template <typename Fn>
  void ForEachFrame(Fn&& fn) const {
    for (size_t i = 0; i < count_; ++i) fn(At(i).frame, At(i).kind);
  }
  size_t written() const { return offset_; }
  void Adopt(const FrameRef& frame, Kind kind);

  bool empty() const { return count_ == 0; }
  size_t frames() const { return count_; }
  // What counts against the limit: kData, kPong and kForced frames with
  // their overhead, and the ring's slots.
  size_t charged() const { return charged_ + ring_.size() * sizeof(Entry); }
  // Owed frames waiting, with their overhead.
  size_t owed() const { return owed_; }
  size_t owed_frames() const { return owed_count_; }
  // All the memory the queue holds.
  size_t memory() const { return charged() + owed_; }

 private:
  struct Entry {
    FrameRef frame;
    Kind kind = Kind::kData;
  };
  static_assert(sizeof(Entry) == 16, "a queue slot: one pointer and a kind");
  static constexpr uint32_t kNone = UINT32_MAX;
  // An empty queue keeps a ring this small (a socket that answers a
  // message at a time reuses it); a bigger one is freed.
  static constexpr size_t kKeptSlots = 8;

  static size_t Cost(const FrameRef& f) { return f.size() + kFrameOverhead; }
  Entry& At(size_t logical) { return ring_[(head_ + logical) & (ring_.size() - 1)]; }
  const Entry& At(size_t logical) const { return ring_[(head_ + logical) & (ring_.size() - 1)]; }
  // Moves the entries to a ring of `slots` (a power of two >= count_).
  void Resize(size_t slots);
  bool PushSlow(const FrameRef& frame, Kind kind, const Limits& limits);
  // The first frame was written in part (`n` bytes of it); returns 0.
  size_t ConsumePart(size_t n);
  // Removes the first frame (written) or the last (dropped).
  void PopFront() {
    Entry& e = ring_[head_];
    Uncharge(e);
    e.frame = FrameRef();
    if (pong_ == head_) pong_ = kNone;
    head_ = static_cast<uint32_t>((head_ + 1) & (ring_.size() - 1));
    --count_;
  }
  void PopBack();
  void Uncharge(const Entry& e) {
    const size_t cost = Cost(e.frame);
    if (e.kind == Kind::kOwed) {
      owed_ -= cost;
      --owed_count_;
    } else {
      charged_ -= cost;
    }
  }
  // After frames left: frees the ring of an empty queue, shrinks one a
  // quarter full, so the slots stay within 4 per frame waiting.
  void Trim() {
    if (count_ == 0) {
      head_ = 0;
      offset_ = 0;
      if (ring_.size() > kKeptSlots) std::vector<Entry>().swap(ring_);
    } else if (ring_.size() > kKeptSlots && count_ <= ring_.size() / 4) {
      Shrink();
    }
  }
  void Shrink();

  std::vector<Entry> ring_;  // size: a power of two, or 0
  uint32_t head_ = 0;        // ring index of the first frame
  uint32_t count_ = 0;
  size_t offset_ = 0;      // bytes of the first frame already written
  uint32_t pong_ = kNone;  // ring index of a pong with no byte written
  uint32_t owed_count_ = 0;
  size_t charged_ = 0;  // Cost of kData, kPong and kForced frames
  size_t owed_ = 0;     // Cost of kOwed frames
};

}  // namespace sb::worker
