#include "bench/client_process.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "protocol/phoenix.h"

namespace sb::bench {

namespace {

constexpr uint64_t kCtlTag = ~0ULL;
constexpr uint64_t kMaxUnackedAtRate = 65536;  // bounds the publisher's queue at a fixed rate

double BucketMid(int b) {
  if (b < 64) return b;
  int e = 6 + (b - 64) / Histogram::kSub;
  double width = std::ldexp(1.0, e - 5);
  return (Histogram::kSub + (b - 64) % Histogram::kSub) * width + width / 2;
}

}  // namespace

void Histogram::Merge(const Histogram& o) {
  for (int i = 0; i < kBuckets; ++i) n[i] += o.n[i];
}

double Histogram::Percentile(double p) const {
  uint64_t total = 0;
  for (uint64_t c : n) total += c;
  if (total == 0) return 0;
  auto rank = std::max<uint64_t>(
      static_cast<uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total))), 1);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += n[i];
    if (seen >= rank) return BucketMid(i);
  }
  return BucketMid(kBuckets - 1);
}

ClientProcess::ClientProcess(const ClientConfig& config, int ctl)
    : config_(config),
      ctl_(ctl),
      rng_(MonoNs() ^ (static_cast<uint64_t>(::getpid()) << 32)),
      conns_(static_cast<size_t>(config.count)),
      phase_(static_cast<size_t>(config.count), Phase::kPending),
      delivered_(config.role == ClientRole::kSubscriber ? static_cast<size_t>(config.count) : 0) {
  src_.sin_family = dst_.sin_family = AF_INET;
  src_.sin_addr.s_addr = config.source;
  dst_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  dst_.sin_port = htons(config.port);
  host_ = "127.0.0.1:" + std::to_string(config.port);
}

int ClientProcess::Run() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kCtlTag;
  ::epoll_ctl(epfd_, EPOLL_CTL_ADD, ctl_, &ev);
  ConnectAll();
  report_.kind = Report::kJoined;
  if (!WriteAll(ctl_, &report_, sizeof report_)) return 1;
  while (!parent_gone_ && MonoNs() < config_.deadline_ns) {
    if (!have_cmd_) {
      Dispatch(MsUntil(config_.deadline_ns, 100));
      continue;
    }
    have_cmd_ = false;
    if (cmd_.op == 'g' && config_.role == ClientRole::kPublisher) Publish();
    if (cmd_.op == 'd') Drain(cmd_.target);
    if (cmd_.op == 's' || cmd_.op == 'd' || config_.role == ClientRole::kPublisher) break;
  }
  return Finish();
}

std::string ClientProcess::Topic(size_t i) const {
  if (config_.role != ClientRole::kIdle) return "fan";
  return "idle:" + std::to_string((static_cast<size_t>(config_.first) + i) % 100);
}

void ClientProcess::ConnectAll() {
  const size_t limit = static_cast<size_t>(std::max(1, config_.inflight));
  size_t next = 0;
  while (joined_ + done_before_join_ < conns_.size() && MonoNs() < config_.deadline_ns &&
         !parent_gone_) {
    while (next < conns_.size() && next - joined_ - done_before_join_ < limit) {
      phase_[next] = Phase::kHandshake;
      if (!conns_[next].Connect(epfd_, next, src_, dst_, host_, rng_)) Ended(next);
      ++next;
    }
    Dispatch(MsUntil(config_.deadline_ns, 100));
  }
}

void ClientProcess::Dispatch(int timeout_ms) {
  epoll_event evs[256];
  int n = ::epoll_wait(epfd_, evs, 256, timeout_ms);
  for (int k = 0; k < n; ++k) {
    if (evs[k].data.u64 == kCtlTag) {
      ReadCommand();
      continue;
    }
    size_t i = evs[k].data.u64;
    if (phase_[i] == Phase::kDone) continue;
    WsClient& c = conns_[i];
    bool was_open = c.state() == WsClient::State::kOpen;
    c.OnEvents(epfd_, evs[k].events, buf_, sizeof buf_,
               [&](const ws::Event& ev) { OnMessage(i, ev.payload); });
    if (!was_open && c.state() == WsClient::State::kOpen) {
      c.SendText(epfd_, "[\"1\",\"1\",\"" + Topic(i) + "\",\"phx_join\",{}]", rng_);
    }
    if (c.state() == WsClient::State::kClosed) Ended(i);
  }
}

void ClientProcess::ReadCommand() {
  ssize_t got = ::read(ctl_, &cmd_, sizeof cmd_);
  if (got == static_cast<ssize_t>(sizeof cmd_)) {
    have_cmd_ = true;
  } else if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
    parent_gone_ = true;
  }
}

namespace {

// Where a fan-out delivery's payload starts: after [null,null,"fan","pub",
// or, on a topic that keeps history, [null,"<offset>","fan","pub",; 0 for
// anything else.
size_t BroadcastPrefix(std::string_view msg) {
  static constexpr std::string_view kHead = "[null,";
  static constexpr std::string_view kTail = ",\"fan\",\"pub\",";
  if (!msg.starts_with(kHead)) return 0;
  size_t at = kHead.size();
  if (msg.substr(at).starts_with("null")) {
    at += 4;
  } else if (at < msg.size() && msg[at] == '"') {
    size_t end = at + 1;
    while (end < msg.size() && msg[end] >= '0' && msg[end] <= '9') ++end;
    if (end == at + 1 || end >= msg.size() || msg[end] != '"') return 0;
    at = end + 1;
  } else {
    return 0;
  }
  return msg.substr(at).starts_with(kTail) ? at + kTail.size() : 0;
}

}  // namespace

void ClientProcess::OnMessage(size_t i, std::string_view msg) {
  if (phase_[i] == Phase::kHandshake) {
    phx::Message m;
    phx::DecodeError err;
    if (!phx::DecodeText(msg, &m, &err) || m.event != "phx_reply" || m.ref != "1") return;
    if (m.payload.starts_with("{\"status\":\"ok\"")) {
      phase_[i] = Phase::kJoined;
      ++joined_;
      ++report_.joined;
      report_.last_join_ns = MonoNs();
    } else {
      ++report_.failed_join;
      conns_[i].Close();
      Ended(i);
    }
  } else if (const size_t body = config_.role == ClientRole::kSubscriber ? BroadcastPrefix(msg) : 0;
             body != 0) {
    uint64_t now = MonoNs();
    ++delivered_[i];
    ++report_.deliveries;
    report_.last_delivery_ns = now;
    size_t k = msg.find("\"t\":", body);
    uint64_t t = 0;
    for (k = k == std::string_view::npos ? msg.size() : k + 4; k < msg.size(); ++k) {
      if (msg[k] < '0' || msg[k] > '9') break;
      t = t * 10 + static_cast<uint64_t>(msg[k] - '0');
    }
    if (t == 0 || t > now) {
      ++report_.unparsed;
    } else {
      report_.latency.Add(now - t);
    }
  } else if (config_.role == ClientRole::kPublisher &&
             msg.find("\"phx_reply\"") != std::string_view::npos) {
    if (msg.find("\"phx_reply\",{\"status\":\"ok\"") != std::string_view::npos) {
      ++report_.acked;
    } else {
      ++report_.nacked;
    }
  }
}

void ClientProcess::Ended(size_t i) {
  if (phase_[i] == Phase::kDone) return;  // a refused join ends the socket before Dispatch sees it
  const WsClient& c = conns_[i];
  if (c.http_status() != 0) report_.last_http_status = c.http_status();
  if (c.close_code() != 0) report_.last_close_code = c.close_code();
  if (phase_[i] == Phase::kJoined) {
    ++report_.closed_after_join;
  } else {
    ++done_before_join_;
    switch (c.end()) {
      case WsClient::End::kConnectFailed:
        ++report_.failed_connect;
        break;
      case WsClient::End::kUpgradeRefused:
        ++report_.failed_upgrade;
        break;
      case WsClient::End::kBadAccept:
        ++report_.failed_accept;
        break;
      case WsClient::End::kLocalClose:  // counted as failed_join already
        break;
      default:
        ++report_.failed_other;
    }
  }
  phase_[i] = Phase::kDone;
}

// Publishes for --duration, then waits (bounded) for the outstanding replies.
void ClientProcess::Publish() {
  WsClient& c = conns_[0];
  if (phase_[0] != Phase::kJoined) return;
  const uint64_t start = MonoNs();
  const uint64_t end = start + static_cast<uint64_t>(config_.duration * 1e9);
  const std::string pad(static_cast<size_t>(std::max(0, config_.payload_bytes)), 'x');
  report_.first_send_ns = start;
  char frame[256];
  while (c.state() == WsClient::State::kOpen && MonoNs() < end && MonoNs() < config_.deadline_ns) {
    uint64_t now = MonoNs();
    uint64_t due =
        config_.rate > 0
            ? static_cast<uint64_t>(static_cast<double>(now - start) * config_.rate / 1e9) + 1
            : ~0ULL;
    uint64_t cap = config_.rate > 0 ? kMaxUnackedAtRate : static_cast<uint64_t>(config_.window);
    bool queued = false;
    while (report_.sent < due && report_.sent - report_.acked - report_.nacked < cap) {
      uint64_t seq = report_.sent++;
      int head = std::snprintf(
          frame, sizeof frame, "[\"1\",\"%llu\",\"fan\",\"pub\",{\"t\":%llu,\"s\":%llu,\"p\":\"",
          static_cast<unsigned long long>(seq + 2), static_cast<unsigned long long>(MonoNs()),
          static_cast<unsigned long long>(seq));
      // The payload is everything from '{' on; pad it to --payload-bytes.
      int payload_so_far = head - static_cast<int>(std::strchr(frame, '{') - frame);
      size_t fill = static_cast<size_t>(std::max(0, config_.payload_bytes - payload_so_far - 2));
      std::string msg(frame, static_cast<size_t>(head));
      msg.append(pad.data(), std::min(fill, pad.size()));
      msg += "\"}]";
      c.QueueText(msg, rng_);
      queued = true;
      report_.last_send_ns = MonoNs();
    }
    if (queued) c.Flush(epfd_);
    int wait_ms = 0;
    if (config_.rate > 0 && report_.sent >= due) {
      uint64_t next = start + static_cast<uint64_t>(static_cast<double>(due) * 1e9 / config_.rate);
      wait_ms = MsUntil(std::min(next, end), 50);
    } else if (report_.sent < due) {
      wait_ms = MsUntil(end, 50);  // window full: wait for replies
    }
    Dispatch(wait_ms);
  }
  const uint64_t drain_end = std::min(MonoNs() + 5 * kSec, config_.deadline_ns);
  while (c.state() == WsClient::State::kOpen && report_.acked + report_.nacked < report_.sent &&
         MonoNs() < drain_end) {
    Dispatch(MsUntil(drain_end, 50));
  }
}

// Reads until every open subscriber has `target` deliveries, or 2 s pass
// with no delivery at all, or the deadline.
void ClientProcess::Drain(uint64_t target) {
  uint64_t last_count = report_.deliveries, last_progress = MonoNs();
  while (MonoNs() < config_.deadline_ns && MonoNs() - last_progress < 2 * kSec) {
    bool all = true;
    for (size_t i = 0; i < conns_.size() && all; ++i) {
      all = phase_[i] != Phase::kJoined || delivered_[i] >= target;
    }
    if (all) break;
    Dispatch(50);
    if (report_.deliveries != last_count) {
      last_count = report_.deliveries;
      last_progress = MonoNs();
    }
  }
}

int ClientProcess::Finish() {
  report_.kind = Report::kFinal;
  report_.min_per_socket = ~0ULL;
  for (size_t i = 0; i < conns_.size(); ++i) {
    if (phase_[i] == Phase::kPending || phase_[i] == Phase::kHandshake) ++report_.unfinished;
    if (phase_[i] != Phase::kJoined) continue;
    ++report_.held;
    if (!delivered_.empty()) {
      report_.min_per_socket = std::min(report_.min_per_socket, delivered_[i]);
      report_.max_per_socket = std::max(report_.max_per_socket, delivered_[i]);
    }
  }
  if (report_.min_per_socket == ~0ULL) report_.min_per_socket = 0;
  for (WsClient& c : conns_) c.Close();
  return WriteAll(ctl_, &report_, sizeof report_) ? 0 : 1;
}

}  // namespace sb::bench
