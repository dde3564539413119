// HistoryStore: the node's per-topic history as its broker, the sequencer,
// holds it (docs/PROTOCOL.md, History).
//
// Owns: per topic, its stream (a random nonzero epoch, from the injected
// source), its top (the last offset given) and the messages it still holds,
// in offset order, with the index of which publish (origin, seq) each is, so
// that a publish re-sent after a broker restart keeps its offset; retention
// by the topic's history::Rule (SIZE messages, TTL) — a topic no rule names
// gets the default and is counted — and by a process-wide byte bound, the
// globally oldest messages going first; fetch answers; what hellos restate
// (positions, then the messages the shards hold) after a restart; the
// counters behind the broker's history metrics.
// With several nodes (docs/CLUSTER.md, History across nodes) it also holds
// copies of streams another node's broker sequences (what that owner sent:
// Accept), tells its own streams from those copies by the node's tag in an
// epoch's high 32 bits, and starts a new stream when asked to sequence a
// topic whose stream it only holds a copy of (ownership moved here).
// Does not: route, pack or read clocks (times are passed in, monotonic µs).
// Plain data on the broker's loop thread; the router owns one. Soft state:
// a new broker rebuilds it from its shards' hellos and restates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "broker/string_map.h"
#include "protocol/history_spec.h"

namespace sb::broker {

// A topic a shard sequences that no broker rule names: kept like this
// (the broker's rules should match the shards'; the count says they do not).
inline constexpr uint32_t kDefaultHistorySize = 1000;
inline constexpr int64_t kDefaultHistoryTtlMs = 10 * 60 * 1000;

struct HistoryOptions {
  history::Rules rules;
  uint64_t max_bytes = history::kDefaultMaxBytes;
  // A new stream's epoch: nonzero, never the same twice in practice (a
  // random 64-bit number); injected so that tests are deterministic.
  std::function<uint64_t()> new_stream;
  // With several nodes: this node's tag (broker/topic_owner NodeStreamTag),
  // the high 32 bits of every stream it starts, so that it (and a restarted
  // broker of the same node) knows which streams it may continue. 0 (a node
  // alone): streams are random 64-bit and all its own.
  uint32_t stream_tag = 0;
};

// Why a held message went.
enum class HistoryEviction : uint8_t {
  kTtl,    // older than its topic's TTL
  kSize,   // its topic holds SIZE newer ones
  kBytes,  // the oldest of any topic, beyond max_bytes
  kEpoch,  // its stream ended: the topic's owner started a new one
  kCount
};

class HistoryStore {
 public:
  explicit HistoryStore(HistoryOptions options);

  // One held message. `body` is the Phoenix message bytes as the origin
  // shard encoded them; `arrival_us` when this broker got it (a restated
  // one: when it was restated, its age being unknown).
  struct Entry {
    uint64_t offset = 0;
    uint64_t origin = 0;
    uint64_t seq = 0;
    uint8_t flags = 0;
    uint64_t stamp = 0;
    std::string body;
    int64_t arrival_us = 0;
    uint64_t serial = 0;  // arrival order, process-wide (the byte bound's FIFO)
  };

  struct Position {
    uint64_t offset = 0;
    uint64_t stream = 0;
  };
  // A sequenced publish of `topic` by `origin` (instance) numbered `seq`:
  // its offset and stream. The topic's next offset, and the message is held
  // — unless the topic holds that very publish already (a re-send after a
  // broker restart, known from the restates): then its offset, unchanged.
  Position Sequence(std::string_view topic, uint64_t origin, uint64_t seq, uint8_t flags,
                    uint64_t stamp, std::string_view body, int64_t now_us);

  struct Answer {
    uint64_t stream = 0;
    uint64_t top = 0;
    uint64_t first = 0;                  // the oldest offset held; top + 1 when none
    std::vector<const Entry*> messages;  // valid until the store next changes
  };
  // A message the topic's owner (another node) sequenced: held as a copy
  // of the owner's stream. A stream other than the one held replaces it
  // (the owner started a new epoch: the old copy's messages go); a message
  // held already is a duplicate (a resend), counted and ignored. False if it
  // was a duplicate.
  bool Accept(std::string_view topic, uint64_t stream, const Entry& entry, int64_t now_us);
  // The owner said `topic` is at `stream`, top `top` (a fetch's answer):
  // the copy takes them as Accept does.
  void AcceptPosition(std::string_view topic, uint64_t stream, uint64_t top);
  // Whether `stream` is one this broker's node started (always, untagged).
  bool Own(uint64_t stream) const;
  // Whether `topic` is known (a stream is held for it).
  bool Knows(std::string_view topic) const { return topics_.find(topic) != topics_.end(); }

  // `topic`'s position and the messages after `after`, at most `limit` (0:
  // the position only), in offset order, whose sizes (each its body plus
  // `overhead` bytes) add up to at most `max_bytes` — but at least one if
  // there is any. An unknown topic gets its stream now (top 0), so that the
  // position a shard learns is the one later offsets continue.
  Answer Fetch(std::string_view topic, uint64_t after, uint32_t limit, size_t max_bytes,
               size_t overhead, int64_t now_us);

  // A hello names `topic` at `stream`, its top `top`: an unknown topic
  // takes them; the same stream takes the higher top; another stream keeps
  // the store's (the first hello's, counted as a conflict).
  void RestatePosition(std::string_view topic, uint64_t stream, uint64_t top);
  // A message a shard holds, restated after its hello: merged by offset
  // when its stream is the topic's (one already held is a duplicate,
  // counted), within retention (not older than the topic's SIZE newest);
  // a topic not known yet takes its stream. Another stream's is dropped.
  void Restate(std::string_view topic, uint64_t stream, const Entry& entry, int64_t now_us);

  // Drops what is older than its topic's TTL at `now_us`. Cheap when
  // nothing is due.
  void Expire(int64_t now_us);

  // --- Introspection (metrics, tests) ---
  struct Counters {
    uint64_t sequenced = 0;    // publishes given a new offset
    uint64_t resequenced = 0;  // re-sent publishes that kept their offset
    uint64_t fetches = 0;
    uint64_t restated = 0;            // restated messages merged
    uint64_t restate_duplicates = 0;  // restated messages already held
    uint64_t evicted[static_cast<size_t>(HistoryEviction::kCount)] = {};
    uint64_t stream_conflicts = 0;     // positions or restates of another stream
    uint64_t unconfigured_topics = 0;  // topics no --history rule names
    // Topics this broker sequenced in a new stream because the one it held
    // was another node's copy: ownership moved here.
    uint64_t taken_over = 0;
    uint64_t accepted = 0;           // messages taken from the owner
    uint64_t accept_duplicates = 0;  // ... already held
    uint64_t replaced = 0;           // copies whose stream the owner replaced
  };
  const Counters& counters() const { return counters_; }
  size_t topics() const { return topics_.size(); }
  // What is held per topic family: one per --history rule, in their
  // order, then the default's (topics no rule names). Bounded by the rules,
  // so a metric label per family stays a handful of series.
  struct Family {
    std::string pattern;  // the rule's, or "" for the default
    size_t messages = 0;
    uint64_t bytes = 0;
  };
  const std::vector<Family>& families() const { return families_; }
  size_t messages() const { return messages_; }
  // The held messages' bodies, the figure max_bytes bounds.
  uint64_t bytes() const { return bytes_; }
  // A topic's state; nullopt if unknown.
  struct TopicView {
    uint64_t stream;
    uint64_t top;
    uint64_t first;
    size_t messages;
  };
  std::optional<TopicView> Find(std::string_view topic) const;

 private:
  struct Publish {
    uint64_t origin;
    uint64_t seq;
    bool operator==(const Publish&) const = default;
  };
  struct PublishHash {
    size_t operator()(const Publish& p) const {
      return std::hash<uint64_t>{}(p.origin * 0x9e3779b97f4a7c15ULL ^ p.seq);
    }
  };
  struct Topic {
    uint64_t stream = 0;
    uint64_t top = 0;
    uint32_t size = 0;
    int64_t ttl_us = 0;
    size_t family = 0;  // index in families_
    // Restates arrive in any order: a map, not a ring buffer.
    std::map<uint64_t, Entry> held;
    std::unordered_map<Publish, uint64_t, PublishHash> by_publish;
  };
  // The byte bound's order: every held message as it arrived (a message
  // already gone is skipped; its serial tells a later one of the same
  // offset apart).
  struct Arrival {
    Topic* topic;
    uint64_t offset;
    uint64_t serial;
  };

  // The topic, created (a new stream, top 0, its rule's retention) if unknown.
  Topic& Get(std::string_view topic);
  Topic& Create(std::string_view topic, uint64_t stream, uint64_t top);
  // Holds `entry` in `t` (offset not held yet), then applies SIZE and the byte bound.
  void Hold(Topic& t, Entry entry);
  void Erase(Topic& t, std::map<uint64_t, Entry>::iterator it, HistoryEviction reason);
  void DropStaleArrivals();
  uint64_t NewStream();
  // `t`'s messages go (counted kEpoch); it continues `stream` from `top`.
  void Replace(Topic& t, uint64_t stream, uint64_t top);

  HistoryOptions options_;
  StringMap<Topic> topics_;  // never erased: a stream and its top outlive the messages
  std::deque<Arrival> arrivals_;
  std::vector<Family> families_;
  size_t messages_ = 0;
  uint64_t bytes_ = 0;
  uint64_t next_serial_ = 1;
  // No message expires before this (monotonic µs): Expire's early out.
  int64_t next_expiry_us_ = 0;
  Counters counters_;
};

}  // namespace sb::broker
