#include "bench/presence_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace sb::bench {

namespace {

constexpr uint64_t kCtlTag = ~0ULL;
constexpr uint64_t kMs = 1'000'000;  // ns

// Within the first bytes of a message: its join_ref, ref and topic are short.
bool EventIs(std::string_view msg, std::string_view quoted_event) {
  return msg.substr(0, 96).find(quoted_event) != std::string_view::npos;
}

}  // namespace

uint64_t PresenceClients::BackoffMs(int tries) {
  static constexpr uint64_t kSteps[] = {10, 50, 100, 150, 200, 250, 500, 1000, 2000};
  if (tries < 1) return kSteps[0];
  return tries <= 9 ? kSteps[tries - 1] : 5000;
}

PresenceClients::PresenceClients(const NodeClientConfig& config, int ctl)
    : config_(config),
      ctl_(ctl),
      rng_(MonoNs() ^ (static_cast<uint64_t>(::getpid()) << 32)),
      conns_(static_cast<size_t>(config.count)),
      slots_(static_cast<size_t>(config.count)) {
  src_.sin_family = dst_.sin_family = AF_INET;
  src_.sin_addr.s_addr = config.source;
  dst_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  dst_.sin_port = htons(config.port);
  host_ = "127.0.0.1:" + std::to_string(config.port);
}

int PresenceClients::Run() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kCtlTag;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, ctl_, &ev);
  // Connect phase: at most `inflight` handshakes at once, failures retried.
  const size_t limit = static_cast<size_t>(std::max(1, config_.inflight));
  while (report_.joined_first < conns_.size() && MonoNs() < config_.deadline_ns && !parent_gone_) {
    while (started_ < conns_.size() && started_ - report_.joined_first < limit) Start(started_++);
    Dispatch(MsUntil(config_.deadline_ns, 20));
    RunTimers();
  }
  SendReport(NodeReport::kJoined);
  while (!stop_ && !parent_gone_ && MonoNs() < config_.deadline_ns) {
    if (config_.ticker) Tick();
    int wait = MsUntil(config_.deadline_ns, config_.ticker ? 2 : 100);
    if (!timers_.empty()) {
      uint64_t now = MonoNs();
      uint64_t next = timers_.top().first;
      wait = next <= now ? 0 : std::min<int>(wait, static_cast<int>((next - now + kMs - 1) / kMs));
    }
    Dispatch(wait);
    RunTimers();
  }
  for (WsClient& c : conns_) c.Close();
  SendReport(NodeReport::kFinal);
  return 0;
}

void PresenceClients::Start(size_t i) {
  Slot& s = slots_[i];
  WsClient& c = conns_[i];
  if (c.state() != WsClient::State::kNew) c.Reset();
  s.phase = Phase::kHandshake;
  if (!c.Connect(epfd_, i, src_, dst_, host_, rng_)) Lost(i);
}

void PresenceClients::RunTimers() {
  const uint64_t now = MonoNs();
  while (!timers_.empty() && timers_.top().first <= now) {
    uint32_t i = timers_.top().second;
    timers_.pop();
    Start(i);
  }
}

void PresenceClients::Dispatch(int timeout_ms) {
  epoll_event evs[256];
  int n = ::epoll_wait(epfd_, evs, 256, timeout_ms);
  for (int k = 0; k < n; ++k) {
    if (evs[k].data.u64 == kCtlTag) {
      ReadCommand();
      continue;
    }
    size_t i = evs[k].data.u64;
    Slot& s = slots_[i];
    if (s.phase == Phase::kWaiting) continue;  // an event of a socket closed in this batch
    WsClient& c = conns_[i];
    bool was_open = c.state() == WsClient::State::kOpen;
    c.OnEvents(epfd_, evs[k].events, buf_, sizeof buf_,
               [&](const ws::Event& ev) { OnMessage(i, ev.payload); });
    if (!was_open && c.state() == WsClient::State::kOpen) {
      // phoenix.js: a new join_ref per join; ref = join_ref here.
      ++s.join_ref;
      const std::string ref = std::to_string(s.join_ref);
      const size_t g = static_cast<size_t>(config_.first) + i;
      const std::string key = std::to_string(g);
      if (config_.ticker || !config_.presence) {
        const std::string topic =
            config_.ticker ? "tick"
                           : "room:" + std::to_string(g % static_cast<size_t>(config_.topics));
        c.SendText(epfd_, "[\"" + ref + "\",\"" + ref + "\",\"" + topic + "\",\"phx_join\",{}]",
                   rng_);
      } else {
        c.SendText(epfd_,
                   "[\"" + ref + "\",\"" + ref +
                       "\",\"room:" + std::to_string(g % static_cast<size_t>(config_.topics)) +
                       "\",\"phx_join\",{\"presence\":{\"key\":\"u" + key +
                       "\",\"meta\":{\"n\":" + key + "}}}]",
                   rng_);
      }
    }
    if (c.state() == WsClient::State::kClosed && s.phase != Phase::kWaiting) Lost(i);
  }
}

void PresenceClients::ReadCommand() {
  NodeCommand cmd;
  ssize_t got = ::read(ctl_, &cmd, sizeof cmd);
  if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
    parent_gone_ = true;
    return;
  }
  if (got != static_cast<ssize_t>(sizeof cmd)) return;  // writes this small are not split
  if (cmd.op == 'a') {
    armed_ = true;
    SendReport(NodeReport::kStatus);
  } else if (cmd.op == 'k') {
    kill_ns_ = cmd.arg;
  } else if (cmd.op == 'q') {
    SendReport(NodeReport::kStatus);
  } else if (cmd.op == 's') {
    stop_ = true;
  }
}

void PresenceClients::OnMessage(size_t i, std::string_view msg) {
  Slot& s = slots_[i];
  ++report_.messages;
  if (msg.starts_with("[null,null,")) {
    if (config_.ticker) return OnTick(s, msg);
    if (!EventIs(msg, "\"presence_diff\"")) return;
    ++report_.diffs;
    if (!armed_ || s.closed_after_kill) return;
    size_t at = msg.find("\"leaves\":{");
    if (at == std::string_view::npos || at + 10 >= msg.size() || msg[at + 10] == '}') return;
    const uint64_t now = MonoNs();
    if (s.leave_diffs == 0) s.first_leave_ns = now;
    if (s.leave_diffs < 255) ++s.leave_diffs;
    ++report_.leave_diffs;
    for (size_t k = msg.find("\"metas\"", at); k != std::string_view::npos;
         k = msg.find("\"metas\"", k + 7)) {
      ++report_.leave_keys;
    }
    return;
  }
  if (EventIs(msg, "\"presence_state\"")) {
    ++report_.states;
    report_.state_bytes += msg.size();
    return;
  }
  if (s.phase != Phase::kHandshake || !EventIs(msg, "\"phx_reply\"")) return;
  const std::string head = "[\"" + std::to_string(s.join_ref) + "\",\"";
  if (!msg.starts_with(head)) return;
  if (msg.find("\"phx_reply\",{\"status\":\"ok\"") == std::string_view::npos) {
    ++report_.failed_join;
    conns_[i].Close();
    Lost(i);
    return;
  }
  const uint64_t now = MonoNs();
  s.phase = Phase::kJoined;
  s.tries = 0;
  ++report_.held;
  if (!s.joined_once) {
    s.joined_once = true;
    ++report_.joined_first;
    report_.last_first_join_ns = now;
  }
  if (s.closed_after_kill && s.rejoin_ns == 0) {
    s.rejoin_ns = now;
    ++report_.rejoined;
  }
}

// The socket of connection `i` closed (or never opened): count why, then
// reconnect after phoenix.js's back-off.
void PresenceClients::Lost(size_t i) {
  Slot& s = slots_[i];
  const WsClient& c = conns_[i];
  if (c.http_status() != 0 && c.http_status() != 101) report_.last_http_status = c.http_status();
  if (c.close_code() != 0) report_.last_close_code = c.close_code();
  if (s.phase == Phase::kJoined) {
    --report_.held;
    if (config_.ticker && i < kTickPublishers && armed_) ++report_.tick_publisher_closed;
    // Armed, every close is the kill's: nothing else closes sockets then.
    if (!armed_) {
      ++report_.closed_before_kill;
    } else if (!s.closed_after_kill) {
      s.closed_after_kill = true;
      ++report_.closed_after_kill;
    }
  } else if (s.phase == Phase::kHandshake) {
    switch (c.end()) {
      case WsClient::End::kConnectFailed:
        ++report_.failed_connect;
        break;
      case WsClient::End::kUpgradeRefused:
        ++report_.failed_upgrade;
        break;
      case WsClient::End::kLocalClose:  // a refused join, counted already
        break;
      default:
        ++report_.failed_other;
    }
  }
  s.phase = Phase::kWaiting;
  s.tries = static_cast<uint8_t>(std::min(s.tries + 1, 200));
  timers_.emplace(MonoNs() + BackoffMs(s.tries) * kMs, static_cast<uint32_t>(i));
}

void PresenceClients::SendReport(uint32_t kind) {
  report_.kind = kind;
  report_.survivors = report_.leave_diffs_0 = report_.leave_diffs_1 = report_.leave_diffs_more = 0;
  report_.leave = report_.rejoin = Histogram{};
  report_.leave_max_ns = report_.rejoin_max_ns = report_.tick_receivers_open = 0;
  // Times count from the kill, which the parent sends after it: until then
  // only counts are meaningful.
  if (kill_ns_ != 0) {
    const uint64_t now = MonoNs();
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.rejoin_ns != 0) {
        const uint64_t took = s.rejoin_ns - std::min(s.rejoin_ns, kill_ns_);
        report_.rejoin.Add(took);
        report_.rejoin_max_ns = std::max(report_.rejoin_max_ns, took);
      }
      if (s.closed_after_kill || !s.joined_once) continue;
      if (config_.ticker) {
        // A receiver that stopped hearing ticks: its gap runs until now.
        if (s.last_tick_ns != 0) {
          ++report_.tick_receivers_open;
          report_.tick_gap_max_ns = std::max(report_.tick_gap_max_ns, now - s.last_tick_ns);
        }
        continue;
      }
      ++report_.survivors;
      if (s.leave_diffs == 0) {
        ++report_.leave_diffs_0;
        continue;
      }
      ++(s.leave_diffs == 1 ? report_.leave_diffs_1 : report_.leave_diffs_more);
      const uint64_t took = s.first_leave_ns - std::min(s.first_leave_ns, kill_ns_);
      report_.leave.Add(took);
      report_.leave_max_ns = std::max(report_.leave_max_ns, took);
    }
  }
  if (!WriteAll(ctl_, &report_, sizeof report_)) parent_gone_ = true;
}

// Publishes one stamped tick when due from each of connections 0 and 1 once
// joined: two publishers, so that the ticks go on, every `tick_ms` from the
// one left, when a kill closes the other.
void PresenceClients::Tick() {
  const uint64_t now = MonoNs();
  for (size_t i = 0; i < std::min<size_t>(kTickPublishers, slots_.size()); ++i) {
    if (slots_[i].phase != Phase::kJoined || now < next_tick_ns_[i]) continue;
    next_tick_ns_[i] = now + static_cast<uint64_t>(config_.tick_ms) * kMs;
    if (armed_) ++report_.ticks_sent;
    conns_[i].SendText(epfd_,
                       "[\"" + std::to_string(slots_[i].join_ref) + "\",\"" +
                           std::to_string(++tick_ref_) +
                           "\",\"tick\",\"t\",{\"t\":" + std::to_string(now) + "}]",
                       rng_);
  }
}

void PresenceClients::OnTick(Slot& s, std::string_view msg) {
  if (!armed_) return;
  const uint64_t now = MonoNs();
  size_t at = msg.find("{\"t\":");
  uint64_t t = 0;
  for (at = at == std::string_view::npos ? msg.size() : at + 5; at < msg.size(); ++at) {
    if (msg[at] < '0' || msg[at] > '9') break;
    t = t * 10 + static_cast<uint64_t>(msg[at] - '0');
  }
  ++report_.ticks_received;
  if (t != 0 && t <= now) {
    report_.tick_latency.Add(now - t);
    report_.tick_latency_max_ns = std::max(report_.tick_latency_max_ns, now - t);
  }
  // Gaps only on sockets that stayed open: a rejoiner's gap is its rejoin.
  if (s.last_tick_ns != 0 && !s.closed_after_kill) {
    report_.tick_gap_max_ns = std::max(report_.tick_gap_max_ns, now - s.last_tick_ns);
  }
  s.last_tick_ns = now;
}

}  // namespace sb::bench
