#include "worker/upgrade.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/mono_time.h"
#include "common/sd_notify.h"
#include "common/unique_fd.h"
#include "worker/gateway.h"

namespace sb::worker {
namespace {

constexpr size_t kHandoffBatch = handoff::kMaxConnectionsPerChunk;
// Sockets records sent ahead per loop turn: about a millisecond of the old
// process's time, between turns of serving.
constexpr int kSocketBatchesPerTurn = 8;

}  // namespace

HandoffPause HandoffPause::FromEnv() {
  HandoffPause p;
  const char* v = std::getenv("SWITCHBOARD_HANDOFF_PAUSE");
  if (v == nullptr) return p;
  std::string_view s(v);
  const size_t counted = s.starts_with("chunks:") ? 7 : s.starts_with("sockets:") ? 8 : 0;
  if (const size_t colon = s.find(':', counted); colon != std::string_view::npos) {
    p.seconds = static_cast<unsigned>(std::strtoul(v + colon + 1, nullptr, 10));
    s = s.substr(0, colon);
  }
  if (s == "acked") p.after_ack = true;
  if (s.starts_with("chunks:")) p.after_chunks = std::strtoull(v + 7, nullptr, 10);
  if (s.starts_with("sockets:")) p.after_sockets = std::strtoull(v + 8, nullptr, 10);
  return p;
}

void HandoffPause::Pause(std::string_view where) const {
  spdlog::warn("hand-off paused {} for {} s (SWITCHBOARD_HANDOFF_PAUSE)", where, seconds);
  ::sleep(seconds);
}

// --- The old process -----------------------------------------------------------

struct HandOff::Outgoing {
  Outgoing(UniqueFd c, int64_t start)
      : conn(std::move(c)),
        start_ms(start),
        sender(conn.get(), start + kHandoffTimeoutMs, start + kHandoffTimeoutMs + kAckGraceMs) {}
  UniqueFd conn;
  int64_t start_ms;
  handoff::StateSender sender;
  std::vector<ConnId> ids;  // to send ahead: from `at` on
  size_t at = 0;
  std::unordered_set<uint64_t> sent;  // the connections whose fds went ahead
  bool ended_ahead = false;           // kSocketsEndMessage sent
  bool awaiting = false;              // the socket is on the loop (Await)
  EventLoop::TimerId deadline_timer = 0;
};

HandOff::HandOff(EventLoop* loop, Shard* shard, std::string path, std::string name,
                 std::function<void()> handed_over)
    : loop_(loop),
      shard_(shard),
      path_(std::move(path)),
      name_(std::move(name)),
      handed_over_(std::move(handed_over)) {}

HandOff::~HandOff() {
  if (out_ && out_->awaiting) loop_->Remove(out_->conn.get());
  if (out_ && out_->deadline_timer != 0) loop_->Cancel(out_->deadline_timer);
}

void HandOff::Start() {
  if (out_) return;
  const int64_t start = MonoNowMs();
  Result<UniqueFd> conn = handoff::ConnectHandoff(path_);
  if (!conn.ok()) {
    spdlog::warn("shard {}: hand-off: {}; serving on", name_, conn.status().message());
    return;
  }
  out_ = std::make_unique<Outgoing>(std::move(conn.value()), start);
  out_->ids = shard_->MovingConnections();
  SendAhead();
}

void HandOff::GiveUp(const Status& why) {
  spdlog::warn("shard {}: hand-off: {}; serving on", name_, why.message());
  out_->sender.Abort();
  if (out_->awaiting) loop_->Remove(out_->conn.get());
  if (out_->deadline_timer != 0) loop_->Cancel(out_->deadline_timer);
  out_.reset();
}

void HandOff::Await(uint32_t events, void (HandOff::*then)()) {
  // Woken by the socket, not polled: the new process reads (or answers)
  // within microseconds of being able to.
  Status s = loop_->Add(out_->conn.get(), events, [this, then](uint32_t) {
    loop_->Remove(out_->conn.get());
    out_->awaiting = false;
    (this->*then)();
  });
  if (!s.ok()) return GiveUp(s);
  out_->awaiting = true;
  if (out_->deadline_timer == 0) {
    const int64_t left = std::max<int64_t>(0, out_->start_ms + kHandoffTimeoutMs - MonoNowMs());
    out_->deadline_timer = loop_->AddTimer(std::chrono::milliseconds(left), [this] {
      out_->deadline_timer = 0;
      if (out_->awaiting) GiveUp(Status::IoError("hand-off: timed out before the pause"));
    });
  }
}

// The fds of every connection that will move, kSocketBatchesPerTurn
// messages of up to 253 a loop turn, so that the new process installs them
// and registers them with epoll (the larger part of taking 10,000 sockets
// over) before anyone waits. Connections opened meanwhile go with their
// state; ones closed meanwhile are dropped by the new process.
Result<HandOff::Ahead> HandOff::SendSocketsAhead() {
  Outgoing& out = *out_;
  std::vector<uint64_t> ids;
  std::vector<int> fds;
  for (int batch = 0; batch < kSocketBatchesPerTurn && out.at < out.ids.size(); ++batch) {
    ids.clear();
    fds.clear();
    size_t end = out.at;
    for (; end < out.ids.size() && ids.size() < kHandoffBatch; ++end) {
      const int fd = shard_->MovingFd(out.ids[end]);
      if (fd < 0) continue;  // closed since
      ids.push_back(out.ids[end]);
      fds.push_back(fd);
    }
    if (!ids.empty()) {
      Result<SendResult> sent = out.sender.TrySendSockets(ids, fds);
      if (!sent.ok()) return sent.status();
      if (*sent == SendResult::kWouldBlock) return Ahead::kNoRoom;
      if (*sent == SendResult::kTooManyInFlight) return Ahead::kTooManyInFlight;
      out.sent.insert(ids.begin(), ids.end());
    }
    out.at = end;
  }
  return out.at == out.ids.size() ? Ahead::kAllSent : Ahead::kMore;
}

void HandOff::SendAhead() {
  Result<Ahead> ahead = SendSocketsAhead();
  if (!ahead.ok()) return GiveUp(ahead.status());
  switch (*ahead) {
    case Ahead::kAllSent:
      return EndAhead();
    case Ahead::kMore:
      // The next ones after a turn of serving.
      loop_->AddTimer(std::chrono::nanoseconds(0), [this] {
        if (out_) SendAhead();
      });
      return;
    case Ahead::kNoRoom:
      return Await(EPOLLOUT, &HandOff::SendAhead);
    case Ahead::kTooManyInFlight:
      // A millisecond later: the new process takes ~250 fds in that time.
      if (MonoNowMs() >= out_->start_ms + kHandoffTimeoutMs) {
        return GiveUp(Status::IoError("hand-off: timed out with fds in flight"));
      }
      loop_->AddTimer(std::chrono::milliseconds(1), [this] {
        if (out_) SendAhead();
      });
      return;
  }
}

// Every fd went: the end of them, then the state once the new process has
// taken them all, so that nobody waits while it still installs sockets.
void HandOff::EndAhead() {
  if (!out_->ended_ahead) {
    Result<bool> sent = out_->sender.TryEndSockets();
    if (!sent.ok()) return GiveUp(sent.status());
    if (!*sent) return Await(EPOLLOUT, &HandOff::EndAhead);
    out_->ended_ahead = true;
  }
  Result<bool> taken = out_->sender.SocketsTaken();
  if (!taken.ok()) return GiveUp(taken.status());
  if (!*taken) return Await(EPOLLIN, &HandOff::EndAhead);
  if (out_->deadline_timer != 0) {
    loop_->Cancel(out_->deadline_timer);
    out_->deadline_timer = 0;
  }
  WhenReady(MonoNowMs() + 1000);
}

void HandOff::WhenReady(int64_t give_up_ms) {
  if (!shard_->ReadyToHandOff()) {
    if (MonoNowMs() >= give_up_ms) {
      return GiveUp(Status::IoError("hand-off: still waiting on the broker"));
    }
    loop_->AddTimer(std::chrono::milliseconds(10), [this, give_up_ms] {
      if (out_) WhenReady(give_up_ms);
    });
    return;
  }
  if (HandOver()) {
    handed_over_();
    return;
  }
  out_.reset();
}

// The last step, everything paused: the session, then the connections a
// batch at a time, each exported while the new process adopts the one
// before — those whose fds went ahead first, without them. True once the
// new process has acknowledged; false, with every connection still served
// here, if anything failed before.
bool HandOff::HandOver() {
  Outgoing& out = *out_;
  const int64_t paused = MonoNowMs();
  Shard::HandoffPlan plan = shard_->BeginHandOff();
  handoff::StateSender& sender = out.sender;
  Status s = sender.Begin(std::move(plan.session), plan.connections.size());
  std::vector<ConnId> ahead, with_fds;
  for (ConnId id : plan.connections) (out.sent.contains(id) ? ahead : with_fds).push_back(id);
  std::vector<handoff::Connection> batch;
  std::vector<int> fds;
  for (const bool sent_ahead : {true, false}) {
    const std::span<const ConnId> ids(sent_ahead ? ahead : with_fds);
    for (size_t at = 0; s.ok() && at < ids.size(); at += kHandoffBatch) {
      batch.clear();
      fds.clear();
      shard_->ExportConnections(ids.subspan(at, std::min(kHandoffBatch, ids.size() - at)), &batch,
                                &fds);
      s = sender.Send(batch, sent_ahead ? std::span<const int>() : std::span<const int>(fds));
    }
  }
  if (s.ok()) s = sender.Finish();
  if (!s.ok()) {
    // The new process acknowledged nothing, so it touched nothing: every
    // connection is still this process's, as it was.
    sender.Abort();
    spdlog::warn("shard {}: hand-off of {} connection(s) failed: {}; serving on all of them", name_,
                 plan.connections.size(), s.message());
    return false;
  }
  const int64_t now = MonoNowMs();
  spdlog::info(
      "shard {}: handed {} connection(s) over in {} ms ({} sent ahead; paused for the last {} "
      "ms); exiting",
      name_, plan.connections.size(), now - out.start_ms, ahead.size(), now - paused);
  shard_->HandedOff();
  return true;
}

// --- The new process -----------------------------------------------------------

void SetSocketHooks(handoff::StateReceiver& receiver, EventLoop* loop) {
  receiver.SetSocketHooks(
      [loop, pause = HandoffPause::FromEnv(), sockets = uint64_t{0}](UniqueFd& fd) mutable {
        if (Status s = Gateway::PrepareAdoption(*loop, fd.get()); !s.ok()) {
          spdlog::warn("hand-off: socket {} not adopted: {}", fd.get(), s.message());
          fd.Reset();
        }
        if (++sockets == pause.after_sockets) pause.Pause("after its sockets");
      },
      [loop](int fd) { loop->Unwatch(fd); });
}

Status TakeOver(handoff::StateReceiver& receiver, int conn, Shard& shard, const std::string& name,
                int64_t start_ms) {
  // Receiving (decoding each chunk; for fds that came with it, the kernel
  // installing them and their registration with epoll) runs on a thread of
  // its own while this one adopts the chunk before (bench/RESULTS.md,
  // "Hand-off, streamed"). The thread touches only the hand-off socket, the
  // chunk's fds and the epoll instance, and hands whole chunks over.
  struct Chunk {
    std::vector<handoff::Connection> conns;
    std::vector<UniqueFd> fds;
  };
  std::mutex mu;
  std::condition_variable arrived;
  std::deque<Chunk> ready;
  bool done = false;
  Status failed;
  const int64_t paused = MonoNowMs();
  const HandoffPause pause = HandoffPause::FromEnv();
  std::thread reader([&] {
    for (uint64_t chunks = 0;; ++chunks) {
      if (chunks > 0 && chunks == pause.after_chunks) pause.Pause("after a chunk");
      Chunk c;
      auto more = receiver.Next(&c.conns, &c.fds);
      std::lock_guard lock(mu);
      if (!more.ok() || !*more) {
        if (!more.ok()) failed = more.status();
        done = true;
        arrived.notify_one();
        return;
      }
      ready.push_back(std::move(c));
      arrived.notify_one();
    }
  });
  for (;;) {
    std::unique_lock lock(mu);
    arrived.wait(lock, [&] { return !ready.empty() || done; });
    if (ready.empty()) break;
    Chunk c = std::move(ready.front());
    ready.pop_front();
    lock.unlock();
    shard.Adopt(c.conns, c.fds);
  }
  reader.join();
  if (!failed.ok()) {
    // The socket closed before the end: if the old process has ended (a
    // crash), what came is this process's alone and is served; if it lives
    // on, it kept everything, and this process takes nothing.
    const bool old_ended =
        failed.code() == Status::Code::kIoError && receiver.OldProcessEnded(/*wait_ms=*/1000);
    if (!old_ended) {
      (void)handoff::SendRefusal(conn, failed.message());
      return failed;
    }
    spdlog::warn(
        "shard {}: the old process ended mid-hand-off ({}): serving the {} connection(s) "
        "that came",
        name, failed.message(), shard.adopted());
  } else if (MonoNowMs() > start_ms + kHandoffTimeoutMs) {
    // The old process may have given up and served on: too late to take.
    (void)handoff::SendRefusal(conn, "taken too late");
    return Status::IoError("taken too late");
  } else if (Status s = handoff::SendAck(conn); !s.ok() && !receiver.OldProcessEnded(1000)) {
    // The old process may still hold the sockets: two processes must not
    // serve them, unless it has ended.
    return Status::IoError("acknowledge the hand-off: " + s.message());
  }
  shard.FinishAdoption();
  if (pause.after_ack) pause.Pause("after the acknowledgement");
  const int64_t now = MonoNowMs();
  spdlog::info("shard {}: upgraded: {} connection(s) taken over in {} ms (the state in {} ms)",
               name, shard.adopted(), now - start_ms, now - paused);
  SdNotify("STATUS=upgraded connections=" + std::to_string(shard.adopted()) +
           " ms=" + std::to_string(now - start_ms));
  return Status::Ok();
}

}  // namespace sb::worker
