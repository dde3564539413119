#include "worker/broker_link.h"

#include <sys/random.h>

#include <algorithm>

namespace sb::worker {

namespace {
// Messages read per wake-up before client sockets get their turn.
constexpr int kReadBatch = 512;

// The session's secret (mesh::Hello::token). Without randomness the shard
// still works, but cannot prove a reconnect: its session then waits for the
// old one to expire.
std::string NewToken() {
  unsigned char bytes[mesh::kTokenHexDigits / 2];
  if (::getrandom(bytes, sizeof bytes, 0) != sizeof bytes) return {};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 15]);
  }
  return token;
}
}  // namespace

Result<std::unique_ptr<BrokerLink>> BrokerLink::Create(EventLoop* loop, const std::string& endpoint,
                                                       ClusterOptions options,
                                                       ClusterSession::Handler* handler) {
  if (options.token.empty()) options.token = NewToken();
  Result<std::unique_ptr<ZmqSocket>> socket =
      ZmqSocket::Create({.kind = ZmqSocket::Kind::kDealer,
                         .recv_hwm = mesh::kRecvHighWaterMark,
                         .max_frame_bytes = static_cast<int64_t>(mesh::kMaxFrameBytes)});
  if (!socket.ok()) return socket.status();
  if (Status s = socket.value()->Connect(endpoint); !s.ok()) return s;
  std::unique_ptr<BrokerLink> link(
      new BrokerLink(loop, std::move(socket).value(), std::move(options), handler));
  BrokerLink* self = link.get();
  if (Status s = self->socket_->Watch(loop, kReadBatch,
                                      [self](std::span<const std::string_view> frames) {
                                        self->session_.OnMessage(frames, self->NowMs());
                                      });
      !s.ok()) {
    return s;
  }
  self->session_.Start(self->NowMs());
  self->Tick();
  return link;
}

BrokerLink::BrokerLink(EventLoop* loop, std::unique_ptr<ZmqSocket> socket, ClusterOptions options,
                       ClusterSession::Handler* handler)
    : loop_(loop),
      socket_(std::move(socket)),
      session_(options, this, handler),
      // Liveness is judged at a quarter of the interval's resolution.
      tick_(std::max<int64_t>(options.heartbeat_ms / 4, 1)) {}

BrokerLink::~BrokerLink() {
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
}

int64_t BrokerLink::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             EventLoop::Clock::now().time_since_epoch())
      .count();
}

bool BrokerLink::Send(const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  return socket_->Send(frames.views());
}

bool BrokerLink::SendPacked(std::string_view packed) {
  if (!mesh::Unpack(packed, &frames_).ok()) return false;  // the session packed it
  return socket_->Send(frames_);
}

void BrokerLink::Tick() {
  session_.OnTick(NowMs());
  tick_timer_ = loop_->AddTimer(tick_, [this] { Tick(); });
}

void BrokerLink::Flush() {
  session_.Flush();
  socket_->CheckReadable();
}

}  // namespace sb::worker
