// SettleWindow: how long a new broker holds publishes and snapshots.
//
// Owns: when the broker's settle window ends (docs/PROTOCOL.md, Publish),
// and how it ended. It starts with the broker's first event and ends as
// soon as every shard the hellos name as expected (the union of their
// "members" lists: the shards the previous broker had) has said hello — or,
// as a bound, after twice the longest heartbeat interval any shard has
// announced in its hello (the broker's own interval until a hello says
// more) plus a margin, within kMaxSettleMs: every live shard heartbeats
// within its interval, is answered with a reset and reconnects within
// libzmq's back-off, so by then each has said hello. A hello without a
// members list (a fresh shard, a cold start) expects nobody and does not
// end the window by itself: at a cold start nobody knows the others, and
// the bound applies.
// Does not: hold or release anything (the router does), or read clocks
// (times are passed in). Plain data on the broker's loop thread; the router
// owns one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <string_view>

namespace sb::broker {

// The longest window: twice the longest heartbeat interval the programs
// accept (--heartbeat-ms, 60 s) and the margin. Announced intervals beyond
// that (a shard may say anything) extend it no further.
inline constexpr int64_t kMaxSettleMs = 2 * 60'000 + 500;
// The most shard names a window expects or has heard from: past it, the
// window ends by the bound only (hellos from a node of a thousand shards,
// or a hostile one, cost no more memory than this).
inline constexpr size_t kMaxSettleNames = 4096;

struct SettlePolicy {
  int64_t heartbeat_ms = 0;  // the broker's own interval: the floor until hellos say more
  int64_t margin_ms = 0;     // libzmq's reconnect back-off and the reset round trip
  int64_t max_ms = 0;        // the bound; 0: a broker that never settles
};

// How a window ended.
enum class SettleEnd : uint8_t {
  kNotYet,    // still settling, or never asked
  kAllHello,  // every expected shard said hello
  kTimeout,   // the bound
};

class SettleWindow {
 public:
  explicit SettleWindow(SettlePolicy policy);

  // A hello from shard `name` announcing its heartbeat interval (0: the
  // hello did not say) and the shards it was told of (`members`, empty for
  // none) at `now_us`. Extends the bound while the window lasts, and ends
  // the window if every expected shard has now said hello; once over, a
  // window never opens again. A shard whose hello announces restates
  // (`restating`: history messages follow it) has said hello only once
  // OnRestated says they came: the history it holds is part of its state.
  void OnHello(std::string_view name, int64_t heartbeat_ms, std::span<const std::string> members,
               int64_t now_us, bool restating = false);
  // Every restate shard `name`'s hello announced has come.
  void OnRestated(std::string_view name, int64_t now_us);
  // Whether the broker is still settling at `now_us` (monotonic). The first
  // call, or OnHello, starts the window.
  bool Settling(int64_t now_us);
  // The bound's length as things stand.
  int64_t window_ms() const;
  SettleEnd end() const { return end_; }
  // The shards expected and not heard from yet (empty once over): a broker
  // that settles tells its shards of them too, so that a broker killed
  // before they said hello is replaced by one that expects them still.
  const std::set<std::string, std::less<>>& missing() const { return missing_; }

 private:
  void EndIfAllHeard();

  SettlePolicy policy_;
  int64_t longest_heartbeat_ms_;
  int64_t start_us_ = -1;
  SettleEnd end_ = SettleEnd::kNotYet;
  bool overflow_ = false;      // more names than kMaxSettleNames: the bound decides
  bool expected_any_ = false;  // a hello has named the shards to expect
  std::set<std::string, std::less<>> heard_;
  std::set<std::string, std::less<>> missing_;
};

}  // namespace sb::broker
