// PeerOutbox and PeerInbox: the two ends of one node-to-node stream — what
// one broker sends another over its uplink (interest, forwarded broadcasts,
// presence), exactly once and in order across reconnects (docs/PROTOCOL.md,
// Peer links: routing).
//
// PeerOutbox owns the sender's end: every message is given the stream's next
// seq (1, 2, …) and kept until the receiver acks it, within a bound in
// messages and bytes (the oldest go first past it, counted); which message
// goes next — none while the link is down, and on each new connection the
// first one the receiver's welcome says it expects — and how many of the
// next go together in one batch (one ZeroMQ message for many: libzmq's
// cost, CURVE's box included, is per message and per frame).
//
// PeerInbox owns the receiver's end: which stream of the sender it holds (a
// sender's restart is a new stream, taken from its first seq), the seq it
// takes next, what is a duplicate (below it: dropped), what is a gap (above
// it: taken, the missing ones counted — the sender dropped them, and waiting
// would wait forever), and the cumulative ack owed: a message taken is acked
// once it is *done* (a broadcast: every local recipient consumed it), and
// the ack covers the longest run of done messages from the last ack on — so
// a broker that dies before its shards have a message leaves it unacked, and
// the sender sends it again to the next broker.
//
// Does not: own sockets, read clocks or decode the messages it carries
// (broker/router does, with the effects in broker/mesh_server). Plain data
// on the broker's loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>

namespace sb::broker {

struct PeerOutboxOptions {
  size_t max_messages = 100000;         // --peer-outbox-messages
  size_t max_bytes = size_t{64} << 20;  // --peer-outbox-bytes
};

class PeerOutbox {
 public:
  struct Entry {
    uint64_t seq;
    std::string packed;  // one packed mesh message (mesh::Pack)
  };

  explicit PeerOutbox(PeerOutboxOptions options) : options_(options) {}

  // Keeps `packed` under the next seq. Past the bound, the oldest entries
  // are dropped (sent or not; the newest one always stays): returns how many.
  size_t Push(std::string packed);
  // The receiver took everything up to `seq`: forgotten.
  void Ack(uint64_t seq);
  // A new connection was welcomed; the receiver takes `expected` next (0: it
  // holds nothing of this stream). Entries below it were taken (forgotten);
  // sending resumes at the first entry kept.
  void Resume(uint64_t expected);
  // The connection is down: nothing goes until the next Resume.
  void Pause() { sending_ = false; }

  // The next entry to send, nullptr if none (down, or everything sent).
  const Entry* Next() const { return Unsent(0); }
  // The `i`-th entry not yet sent (0: Next()), nullptr past the last.
  const Entry* Unsent(size_t i) const;
  // How many entries from Next() on go in the next batch: as many as fit in
  // `max_bytes` of packed messages, at most `max_messages`, and at least one
  // (however large) when any is unsent; 0 when none is or the link is down.
  size_t NextBatch(size_t max_bytes, size_t max_messages) const;
  // The next `n` entries were handed to the connection.
  void Sent(size_t n = 1) { next_ += n; }

  bool sending() const { return sending_; }
  size_t messages() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  // Entries not yet handed to the current connection.
  size_t unsent() const { return sending_ ? entries_.size() - next_ : entries_.size(); }
  // Entries handed to the current connection and not yet acked.
  size_t in_flight() const { return sending_ ? next_ : 0; }
  // The link's credit: entries the outbox still takes before its oldest are
  // dropped, by the message bound or by the byte bound at this outbox's
  // mean entry size, whichever comes first. An empty outbox has the whole
  // message bound. The receiver grants no window (it acks what its shards
  // consumed), so this is what bounds a member that does not keep up.
  size_t credit() const;
  uint64_t last_seq() const { return next_seq_ - 1; }
  uint64_t dropped() const { return dropped_; }

 private:
  void PopFront();
  PeerOutboxOptions options_;
  std::deque<Entry> entries_;
  size_t bytes_ = 0;
  size_t next_ = 0;  // index in entries_ of the next to send
  bool sending_ = false;
  uint64_t next_seq_ = 1;
  uint64_t dropped_ = 0;
};

class PeerInbox {
 public:
  enum class Verdict { kTake, kDuplicate };

  // A hello on a new connection names the sender's `stream`. Returns the
  // welcome's "expected": the first seq not done yet, from which the sender
  // resends (what was taken and not done comes again and is dropped as a
  // duplicate, but stays in the sender's outbox until done: this broker may
  // die before it is); 0 for a stream other than the one held (the sender
  // restarted): the next seq that comes starts it. `*new_stream` says which.
  uint64_t OnHello(uint64_t stream, bool* new_stream);
  // One kPeerData. A seq below the expected is a duplicate; above it, the
  // ones between are counted as a gap and this one is taken (not done yet).
  Verdict OnData(uint64_t seq);
  // The message `seq` of `stream`, taken, is done. Ignored for another
  // stream than the one held (it was started anew meanwhile).
  void Done(uint64_t stream, uint64_t seq);
  // The cumulative ack owed, once per change (or after a duplicate: the
  // sender is told again what is done): the last seq of the run of done
  // messages taken.
  std::optional<uint64_t> TakeAck();
  // Messages taken and not yet done.
  size_t open() const { return open_.size(); }

  uint64_t stream() const { return stream_; }
  uint64_t expected() const { return expected_; }
  uint64_t duplicates() const { return duplicates_; }
  uint64_t gaps() const { return gaps_; }  // messages missing, summed
  uint64_t taken() const { return taken_; }

 private:
  uint64_t stream_ = 0;
  uint64_t expected_ = 0;  // 0: no seq seen on this stream yet
  uint64_t acked_ = 0;     // the last seq acked (0: none)
  // Taken and not acked yet, in seq order: seq and whether done.
  std::deque<std::pair<uint64_t, bool>> open_;
  bool ack_due_ = false;
  uint64_t duplicates_ = 0, gaps_ = 0, taken_ = 0;
};

}  // namespace sb::broker
