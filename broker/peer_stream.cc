#include "broker/peer_stream.h"

#include <algorithm>
#include <utility>

namespace sb::broker {

size_t PeerOutbox::Push(std::string packed) {
  bytes_ += packed.size();
  entries_.push_back(Entry{next_seq_++, std::move(packed)});
  size_t dropped = 0;
  while (entries_.size() > 1 &&
         (entries_.size() > options_.max_messages || bytes_ > options_.max_bytes)) {
    PopFront();
    ++dropped;
  }
  dropped_ += dropped;
  return dropped;
}

void PeerOutbox::PopFront() {
  bytes_ -= entries_.front().packed.size();
  entries_.pop_front();
  if (next_ > 0) --next_;
}

void PeerOutbox::Ack(uint64_t seq) {
  while (!entries_.empty() && entries_.front().seq <= seq) PopFront();
}

void PeerOutbox::Resume(uint64_t expected) {
  // The receiver has everything below `expected`. One that claims more than
  // was ever sent (not this stream's numbering) gets everything kept anew.
  if (expected != 0 && expected <= next_seq_) Ack(expected - 1);
  sending_ = true;
  next_ = 0;
}

size_t PeerOutbox::credit() const {
  const size_t n = entries_.size();
  size_t room = n < options_.max_messages ? options_.max_messages - n : 0;
  if (n > 0 && bytes_ > 0) {
    const size_t by_bytes = bytes_ < options_.max_bytes
                                ? (options_.max_bytes - bytes_) / std::max<size_t>(bytes_ / n, 1)
                                : 0;
    room = std::min(room, by_bytes);
  }
  return room;
}

const PeerOutbox::Entry* PeerOutbox::Unsent(size_t i) const {
  if (!sending_ || next_ + i >= entries_.size()) return nullptr;
  return &entries_[next_ + i];
}

size_t PeerOutbox::NextBatch(size_t max_bytes, size_t max_messages) const {
  size_t n = 0, bytes = 0;
  while (n < max_messages) {
    const Entry* e = Unsent(n);
    if (e == nullptr || (n > 0 && bytes + e->packed.size() > max_bytes)) break;
    bytes += e->packed.size();
    ++n;
  }
  return n;
}

uint64_t PeerInbox::OnHello(uint64_t stream, bool* new_stream) {
  *new_stream = stream != stream_;
  if (*new_stream) {
    stream_ = stream;
    expected_ = 0;
    acked_ = 0;
    open_.clear();
    ack_due_ = false;
    return 0;
  }
  return acked_ + 1;
}

PeerInbox::Verdict PeerInbox::OnData(uint64_t seq) {
  if (expected_ != 0 && seq < expected_) {
    ++duplicates_;
    // The sender resent what it thinks unacked: say again what is done.
    ack_due_ = acked_ != 0;
    return Verdict::kDuplicate;
  }
  if (expected_ != 0 && seq > expected_) gaps_ += seq - expected_;
  expected_ = seq + 1;
  ++taken_;
  open_.emplace_back(seq, false);
  return Verdict::kTake;
}

void PeerInbox::Done(uint64_t stream, uint64_t seq) {
  if (stream != stream_) return;
  // Seqs are taken in increasing order, and without a gap consecutively:
  // the offset from the first open one finds it at once (shards consume in
  // order, so that is the common case), else a binary search.
  auto it = open_.end();
  if (!open_.empty() && seq >= open_.front().first && seq - open_.front().first < open_.size() &&
      open_[seq - open_.front().first].first == seq) {
    it = open_.begin() + static_cast<std::ptrdiff_t>(seq - open_.front().first);
  } else {
    it = std::lower_bound(open_.begin(), open_.end(), std::make_pair(seq, false));
    if (it == open_.end() || it->first != seq) return;
  }
  it->second = true;
  if (it != open_.begin()) return;
  while (!open_.empty() && open_.front().second) {
    acked_ = open_.front().first;
    open_.pop_front();
  }
  ack_due_ = true;
}

std::optional<uint64_t> PeerInbox::TakeAck() {
  if (!ack_due_ || acked_ == 0) return std::nullopt;
  ack_due_ = false;
  return acked_;
}

}  // namespace sb::broker
