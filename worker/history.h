// HistoryStreams: a shard's side of per-topic history (docs/PROTOCOL.md,
// History) — for each topic a --history rule matches, the stream's epoch and
// the last offset delivered in order, the copies of its messages (bounded by
// the rule's SIZE/TTL and a process-wide byte bound, oldest first), the
// deliveries held while a gap is fetched or the stream is synced, the one
// fetch outstanding per topic, and the joins waiting to know whether what
// they ask to recover can be given.
//
// Owns: every decision of the above: what is delivered to a topic's sockets
// and in which order, what is fetched, when a topic's channels are reset, what
// a join is answered. Does not: read clocks (times are passed in), send
// anything (it returns actions the shard carries out: kFetch through the
// ClusterSession, deliveries and answers through the hub), or parse Phoenix
// messages. Plain data on the shard's loop thread; the Shard owns one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "protocol/history_spec.h"
#include "protocol/mesh.h"
#include "worker/handoff_state.h"

namespace sb::worker {

struct HistoryOptions {
  history::Rules rules;
  // How many messages after its offset a join may recover (--recovery-max).
  uint32_t recovery_max = history::kDefaultRecoveryMax;
  // Bytes of copies the process keeps in all (--history-max-bytes).
  uint64_t max_bytes = history::kDefaultMaxBytes;
};

// One sequenced message as a shard keeps it (a kDeliver or a kHistory entry
// with mesh::kFlagSequenced).
struct Sequenced {
  uint64_t offset = 0;
  uint64_t stream = 0;
  uint64_t origin = 0;
  uint64_t seq = 0;
  uint8_t flags = 0;  // mesh flags as delivered (kFlagBinary, kFlagStamped, ...)
  uint64_t stamp = 0;
  std::string message;  // the Phoenix message bytes as published
  int64_t at_ms = 0;    // when this shard got it (for the rule's TTL)
};

// A sequenced kDeliver (or kRestate) as kept; its at_ms is 0 (OnDeliver and
// OnHistory set it).
Sequenced SequencedOf(const mesh::Message& msg);
// `m` as a packed kRestate on `topic`: what a hello's restates are
// (ClusterSession::Handler::HistoryState).
std::string PackRestate(std::string_view topic, const Sequenced& m);
// The messages a kHistory answer carries, in its order, appended to `out`.
// Refused, naming what is wrong, at the first that is not a sequenced
// kDeliver on the answer's topic and stream (those before it are kept: a
// broker sends no such thing, and the next fetch asks again).
Status DecodeHistory(const mesh::Message& answer, std::vector<Sequenced>* out);

// What a join asks to recover: its {"recover":{"epoch","offset"}}.
struct Recover {
  uint64_t stream = 0;
  uint64_t offset = 0;
};

// How a join's recovery was decided (its reply's "recovered" is true only
// for kRecovered).
enum class Recovery : uint8_t {
  kNotAsked,    // no recover in the join
  kRecovered,   // every message after its offset follows the reply
  kOtherEpoch,  // it names another stream (the stream was lost since)
  kTooOld,      // the broker no longer holds what it missed
  kTooMany,     // more than recovery_max messages after its offset
  kAhead,       // its offset is beyond the stream's top
  kCount
};

struct HistoryAction {
  enum class Kind : uint8_t {
    kDeliver,  // `entry` to the topic's local subscribers (the sender excepted), in order
    kFetch,    // send kFetch{id, after, limit} on `topic`
    kAnswer,   // answer join `join`: ok {epoch: stream, offset: top, recovered}, then push
               // `messages` to it, in order
    kReset,    // phx_error every channel on `topic`: their clients rejoin and recover
  };
  Kind kind = Kind::kDeliver;
  std::string topic;
  std::shared_ptr<const Sequenced> entry;  // kDeliver
  uint64_t id = 0, after = 0;              // kFetch
  uint32_t limit = 0;                      // kFetch
  uint64_t join = 0, stream = 0, top = 0;  // kAnswer
  Recovery recovery = Recovery::kNotAsked;
  std::vector<std::shared_ptr<const Sequenced>> messages;  // kAnswer
};

class HistoryStreams {
 public:
  using Entry = std::shared_ptr<const Sequenced>;
  using Actions = std::vector<HistoryAction>;

  explicit HistoryStreams(HistoryOptions options);

  // Whether `topic` keeps history (a rule matches it).
  bool Keeps(std::string_view topic) const;

  // The topic's first local subscriber (after the shard's kSubscribe): the
  // stream is synced by a position fetch; deliveries are held until then.
  void OnSubscribed(std::string_view topic, Actions* out);
  // Its last local subscriber left: copies are kept, held deliveries and
  // waiting joins are dropped, an outstanding fetch is forgotten.
  void OnUnsubscribed(std::string_view topic);
  // A sequenced kDeliver.
  void OnDeliver(std::string_view topic, Sequenced message, int64_t now_ms, Actions* out);
  // A kHistory answer: `entries` in offset order, each the stream's. An `id`
  // that is not the topic's outstanding fetch is ignored.
  void OnHistory(std::string_view topic, uint64_t id, uint64_t stream, uint64_t top, uint64_t first,
                 std::vector<Sequenced> entries, int64_t now_ms, Actions* out);
  // A join of `topic` (subscribed: OnSubscribed came first). Answered now
  // when it can be decided, otherwise once it can; every kDeliver on the
  // topic after its kAnswer is beyond the answer's top, and the answer's
  // messages are exactly its offset + 1 .. top.
  void Join(uint64_t join_id, std::string_view topic, std::optional<Recover> recover, Actions* out);
  // Whether `topic`'s stream holds `offset` back for a later kDeliver (a gap
  // or a sync in progress). The shard answers its own broadcast's sender in
  // the stream's order when it is delivered, and at once when the stream
  // will not deliver it (it had it already, or dropped what it held).
  bool Holds(std::string_view topic, uint64_t offset) const;
  // The join's socket is gone, or it left before its answer: never answered.
  void ForgetJoin(uint64_t join_id);
  // A welcome: the fetches not answered are sent again (same ids).
  void OnBrokerUp(Actions* out);
  // Drops copies older than their rule's TTL, and topics with nothing left.
  void Expire(int64_t now_ms);
  // For a hello: every stream this shard holds copies of (top: its highest
  // copy), and the copies themselves through `restate`, newest first per
  // topic, at most `max_restate_bytes` of topic and message in all; the
  // rest is counted (restate_left_out).
  void State(std::vector<mesh::StreamPosition>* positions,
             const std::function<void(std::string_view topic, const Sequenced&)>& restate,
             size_t max_restate_bytes);

  // Hand-off to a new process (docs/UPGRADE.md): every subscribed stream
  // whose position is known, its epoch and the last offset delivered in
  // order, by topic. Copies do not move (the broker holds the stream), nor
  // do parked joins and fetches: the old process finishes those first.
  void ExportPositions(std::vector<handoff::StreamPosition>* out) const;
  // The new process, before any subscribe: each stream its rules keep is
  // synced at its position — the next delivery goes on in order, one beyond
  // it is a gap, fetched. Others are skipped. The shard then calls
  // OnSubscribed for every subscribed history topic: nothing for these, a
  // position fetch for the rest.
  void ImportPositions(std::span<const handoff::StreamPosition> positions);

  enum class Evicted : uint8_t { kSize, kTtl, kBytes, kStream, kCount };
  struct Stats {
    uint64_t duplicates = 0;        // deliveries at or below the last delivered
    uint64_t gaps = 0;              // gaps detected (a delivery beyond the next)
    uint64_t gaps_filled = 0;       // ... filled by a fetch
    uint64_t gaps_unfillable = 0;   // ... the broker no longer had: the topic reset
    uint64_t fetches = 0;           // kFetch emitted (re-sent ones included)
    uint64_t resets = 0;            // kReset emitted
    uint64_t restate_left_out = 0;  // copies a hello had no room for
    uint64_t answers[static_cast<size_t>(Recovery::kCount)] = {};
    uint64_t evicted[static_cast<size_t>(Evicted::kCount)] = {};
  };
  const Stats& stats() const { return stats_; }
  size_t topics() const { return streams_.size(); }
  size_t messages() const { return messages_; }
  uint64_t bytes() const { return bytes_; }
  // The copies held per topic family: one per --history rule, in the rules'
  // order (a copy's topic always matches one).
  struct Family {
    size_t messages = 0;
    uint64_t bytes = 0;
  };
  const std::vector<Family>& families() const { return families_; }

 private:
  enum class Phase : uint8_t { kUnsubscribed, kSyncing, kSynced };
  enum class FetchKind : uint8_t { kPosition, kGap, kJoin };
  struct Fetch {
    uint64_t id = 0;  // 0: none outstanding
    FetchKind kind = FetchKind::kPosition;
    uint64_t after = 0;
    uint32_t limit = 0;
    uint64_t join = 0;  // kJoin: for whom
  };
  struct Parked {
    uint64_t join;
    std::optional<Recover> recover;
    // Messages a join fetch brought that the copies may not keep (bounds).
    std::map<uint64_t, Entry> got;
  };
  struct Stream {
    std::string topic;
    const history::Rule* rule = nullptr;
    Phase state = Phase::kUnsubscribed;
    uint64_t stream = 0;  // the epoch; 0: not known yet
    uint64_t last = 0;    // P: the last offset delivered in order
    std::map<uint64_t, Entry> copies;
    std::map<uint64_t, Entry> held;  // beyond `last`, waiting
    Fetch fetch;
    std::deque<Parked> parked;
    bool indexed = false;    // in oldest_
    int64_t indexed_at = 0;  // the oldest copy's at_ms, as oldest_ knows it
  };

  Stream* Find(std::string_view topic);
  Stream& Get(std::string_view topic);
  void EmitFetch(Stream& s, FetchKind kind, uint64_t after, uint32_t limit, uint64_t join,
                 Actions* out);
  void Reset(Stream& s, Actions* out);
  // Drops every copy (a new stream), counted as kStream.
  void DropCopies(Stream& s);
  void AddCopy(Stream& s, const Entry& e);
  // Index in families_ of a stream with a rule.
  size_t FamilyOf(const Stream& s) const;
  void EraseCopy(Stream& s, std::map<uint64_t, Entry>::iterator it, Evicted why);
  void Reindex(Stream& s);
  void EvictForBytes();
  // Joins, held deliveries and gap fetches, as far as they go without an
  // answer from the broker.
  void Settle(Stream& s, Actions* out);
  // Decides the first parked join; false if it needs a fetch first (emitted).
  bool DecideFront(Stream& s, Actions* out);
  void Answer(Stream& s, uint64_t join, Recovery r, std::vector<Entry> messages, Actions* out);
  // Drops a topic with no subscriber, copy or fetch.
  void MaybeForget(const std::string& topic);

  HistoryOptions options_;
  std::unordered_map<std::string, Stream> streams_;
  // Streams with copies by their oldest copy's time: what --history-max-bytes
  // evicts first.
  std::set<std::pair<int64_t, Stream*>> oldest_;
  std::unordered_map<uint64_t, std::string> join_topics_;
  uint64_t next_fetch_id_ = 1;
  size_t messages_ = 0;
  uint64_t bytes_ = 0;
  std::vector<Family> families_;
  Stats stats_;
};

}  // namespace sb::worker
