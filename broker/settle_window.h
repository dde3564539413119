// SettleWindow: how long a new broker holds publishes and snapshots.
//
// Owns: when the broker's settle window ends (docs/PROTOCOL.md, Publish). It
// starts with the broker's first event and lasts twice the longest
// heartbeat interval any shard has announced in its hello (the broker's own
// interval until a hello says more), plus a margin, within a bound: every
// live shard heartbeats within its interval, is answered with a reset and
// reconnects within libzmq's back-off, so by then each has said hello.
// Does not: hold or release anything (the router does), or read clocks
// (times are passed in). Plain data on the broker's loop thread; the router
// owns one.
//
// The rule lives here alone so that it can change in one place (say, to end
// as soon as every expected shard has said hello).
#pragma once

#include <cstdint>

namespace sb::broker {

// The longest window: twice the longest heartbeat interval the programs
// accept (--heartbeat-ms, 60 s) and the margin. Announced intervals beyond
// that (a shard may say anything) extend it no further.
inline constexpr int64_t kMaxSettleMs = 2 * 60'000 + 500;

struct SettlePolicy {
  int64_t heartbeat_ms = 0;  // the broker's own interval: the floor until hellos say more
  int64_t margin_ms = 0;     // libzmq's reconnect back-off and the reset round trip
  int64_t max_ms = 0;        // the bound; 0: a broker that never settles
};

class SettleWindow {
 public:
  explicit SettleWindow(SettlePolicy policy);

  // A hello announcing the shard's heartbeat interval (0: the hello did not
  // say) at `now_us`. Extends the window while it lasts; once over, a
  // window never opens again.
  void OnHello(int64_t heartbeat_ms, int64_t now_us);
  // Whether the broker is still settling at `now_us` (monotonic). The first
  // call, or OnHello, starts the window.
  bool Settling(int64_t now_us);
  // The window's length as things stand.
  int64_t window_ms() const;

 private:
  SettlePolicy policy_;
  int64_t longest_heartbeat_ms_;
  int64_t start_us_ = -1;
  bool over_ = false;
};

}  // namespace sb::broker
