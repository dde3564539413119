#include "worker/gateway.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstdio>
#include <ctime>
#include <utility>

#include "common/process_stats.h"
#include "protocol/phoenix.h"
#include "protocol/websocket.h"
#include "worker/http_upgrade.h"

namespace sb::worker {

namespace http = boost::beast::http;

namespace {

constexpr size_t kReadBufferSize = 64 * 1024;
constexpr int kMaxReadsPerEvent = 16;    // level-triggered: the rest waits for the next turn
constexpr int kMaxAcceptsPerEvent = 64;  // so a connection storm cannot starve open sockets
constexpr size_t kMaxIov = 64;
constexpr size_t kHeaderLimit = 8192;
constexpr int kFdBits = 24;  // ConnId = sequence << 24 | fd

FrameRef MakeFrame(ws::Opcode op, std::string_view payload) {
  std::string header;  // at most 10 bytes: stays in the small-string buffer
  ws::AppendFrameHeader(header, op, payload.size());
  return FrameRef::Copy(header, payload);
}

FrameRef MakeClose(uint16_t code, std::string_view text) {
  return MakeFrame(ws::Opcode::kClose, ws::ClosePayload(code, text));
}

CloseReason ReasonForCode(uint16_t code) {
  switch (code) {
    case ws::close_code::kMessageTooBig:
      return CloseReason::kTooBig;
    case ws::close_code::kInvalidPayload:
      return CloseReason::kInvalidPayload;
    case ws::close_code::kUnsupportedData:
      return CloseReason::kUnsupportedData;
    default:
      return CloseReason::kProtocolError;
  }
}

}  // namespace

struct HttpState {
  HttpState() {
    parser.header_limit(kHeaderLimit);
    parser.body_limit(0);
  }
  http::request_parser<http::empty_body> parser;
  std::string buf;
};

struct Gateway::Conn {
  Conn(uint64_t id, int fd, size_t max_frame)
      : id(id), fd(fd), parser(ws::Role::kServer, max_frame) {}
  uint64_t id;
  int fd;
  State state = State::kHttp;
  bool writable = false;           // EPOLLOUT registered
  bool dirty = false;              // in dirty_
  bool close_after_flush = false;  // drop the connection once the queue is written
  bool in_hub = false;
  bool input_done = false;  // stop parsing input (after a parse error or a refusal)
  bool dead = false;
  int64_t last_rx_ms = 0;
  int64_t deadline_ms = 0;  // kHttp: handshake; kClosing: close handshake
  std::unique_ptr<HttpState> http;
  ws::MessageParser parser;
  std::vector<FrameRef> out;
  size_t out_offset = 0;  // bytes of out.front() already written
  size_t out_bytes = 0;
};

Gateway::Gateway(EventLoop* loop, int listen_fd, GatewayOptions options, WorkerMetrics* metrics)
    : loop_(loop),
      listen_fd_(listen_fd),
      opt_(std::move(options)),
      metrics_(metrics),
      counters_(metrics->counters()),
      hub_(opt_.hub, opt_.ref_prefix, !opt_.broker_endpoint.empty()),
      read_buf_(new char[kReadBufferSize]) {}

Gateway::~Gateway() {
  for (auto& c : by_fd_) {
    if (c && !c->dead) {
      loop_->Remove(c->fd);
      ::close(c->fd);
    }
  }
  if (accepting_) loop_->Remove(listen_fd_);
}

Result<std::unique_ptr<Gateway>> Gateway::Create(EventLoop* loop, int listen_fd,
                                                 GatewayOptions options, WorkerMetrics* metrics) {
  std::unique_ptr<Gateway> g(new Gateway(loop, listen_fd, std::move(options), metrics));
  Gateway* self = g.get();
  // EPOLLEXCLUSIVE: every shard of a node waits on the same inherited
  // socket; one connection should wake one of them, not all.
  if (Status s = loop->Add(listen_fd, EPOLLIN | EPOLLEXCLUSIVE,
                           [self](uint32_t) { self->OnAcceptable(); });
      !s.ok()) {
    return s;
  }
  if (!self->opt_.broker_endpoint.empty()) {
    Result<std::unique_ptr<BrokerLink>> link =
        BrokerLink::Create(loop, self->opt_.broker_endpoint, self->opt_.cluster, self);
    if (!link.ok()) return link.status();
    self->broker_ = std::move(link).value();
    metrics->counters().clustered.store(true, std::memory_order_relaxed);
  }
  loop->SetBeforeSleep([self] {
    // Credit and publishes to the broker first: the broker's next messages
    // are then on their way while the client sockets are written.
    if (self->broker_) {
      self->broker_->Flush();
      self->PublishClusterMetrics();
    }
    self->FlushAll();
  });
  loop->SetCron(std::chrono::milliseconds(250), [self] { self->Cron(); });
  return g;
}

int64_t Gateway::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             EventLoop::Clock::now().time_since_epoch())
      .count();
}

Gateway::Conn* Gateway::Find(uint64_t id) const {
  size_t fd = id & ((uint64_t{1} << kFdBits) - 1);
  if (fd >= by_fd_.size()) return nullptr;
  Conn* c = by_fd_[fd].get();
  return c && c->id == id && !c->dead ? c : nullptr;
}

// --- Accepting --------------------------------------------------------------

void Gateway::OnAcceptable() {
  for (int i = 0; i < kMaxAcceptsPerEvent && accepting_; ++i) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("accept: {}; pausing accepts for 100 ms", strerror(errno));
        PauseAccept();
      }
      break;  // EAGAIN: another shard took it, or the backlog is empty
    }
    counters_.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (static_cast<size_t>(fd) >= by_fd_.size()) by_fd_.resize(static_cast<size_t>(fd) + 1);
    uint64_t id = (next_seq_++ << kFdBits) | static_cast<uint64_t>(fd);
    auto c = std::make_unique<Conn>(id, fd, opt_.max_frame_bytes);
    const int64_t now = NowMs();
    c->last_rx_ms = now;
    c->deadline_ms = now + opt_.handshake_timeout.count();
    c->http = std::make_unique<HttpState>();
    if (Status s = loop_->Add(fd, EPOLLIN, [this, id](uint32_t ev) { OnEvent(id, ev); }); !s.ok()) {
      ::close(fd);
      continue;
    }
    by_fd_[static_cast<size_t>(fd)] = std::move(c);
    ++live_;
  }
}

// Out of fds: with a level-triggered listening socket the loop would spin on
// accept errors; step back and retry shortly (connections wait in the backlog).
void Gateway::PauseAccept() {
  if (!accepting_) return;
  loop_->Remove(listen_fd_);
  accepting_ = false;
  loop_->AddTimer(std::chrono::milliseconds(100), [this] {
    if (draining_ || accepting_) return;
    if (loop_->Add(listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, [this](uint32_t) { OnAcceptable(); })
            .ok()) {
      accepting_ = true;
    }
  });
}

// --- Input ------------------------------------------------------------------

void Gateway::OnEvent(uint64_t id, uint32_t events) {
  Conn* c = Find(id);
  if (!c) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(c);
  if (!c->dead && (events & EPOLLOUT)) Flush(c);
  Settle();
}

void Gateway::OnReadable(Conn* c) {
  for (int i = 0; i < kMaxReadsPerEvent && !c->dead; ++i) {
    ssize_t n = ::read(c->fd, read_buf_.get(), kReadBufferSize);
    if (n > 0) {
      counters_.bytes_received.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      c->last_rx_ms = NowMs();
      read_time_ns_ = EventLoop::Clock::now().time_since_epoch().count();
      if (c->input_done) {
        // Closing after a parse error or a refusal: input is discarded.
      } else if (c->state == State::kHttp) {
        OnHttpBytes(c, read_buf_.get(), static_cast<size_t>(n));
      } else {
        OnWsBytes(c, read_buf_.get(), static_cast<size_t>(n));
      }
      if (static_cast<size_t>(n) < kReadBufferSize) return;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0 && errno == EINTR) continue;
    // EOF or a reset: the client is gone without (or after) a close handshake.
    EndOpen(c, n == 0 ? CloseReason::kClient : CloseReason::kIoError);
    Destroy(c);
    return;
  }
}

void Gateway::OnHttpBytes(Conn* c, const char* data, size_t n) {
  HttpState& h = *c->http;
  h.buf.append(data, n);
  boost::system::error_code ec;
  size_t used = h.parser.put(boost::asio::buffer(h.buf), ec);
  h.buf.erase(0, used);
  if (ec == http::error::need_more) return;
  HttpDecision d;
  if (ec) {
    d.refusal = Refusal::kBadRequest;
    d.why = "malformed HTTP request: " + ec.message();
    d.response = PlainResponse(400, "Bad Request", d.why + "\n");
  } else if (!h.parser.is_done()) {
    return;
  } else {
    HttpPolicy policy;
    policy.draining = draining_;
    policy.at_capacity = websockets_ >= opt_.max_connections;
    policy.token_secret = opt_.token_secret ? &*opt_.token_secret : nullptr;
    policy.now_unix_s = static_cast<int64_t>(std::time(nullptr));
    d = DecideRequest(h.parser.get(), policy);
  }
  std::string leftover = std::move(h.buf);
  c->http.reset();
  Enqueue(c, FrameRef::Copy(d.response), /*force=*/true);
  if (!d.upgrade) {
    if (d.refusal) {
      metrics_->AddRefusal(*d.refusal);
      spdlog::debug("conn {}: refused: {}", c->fd, d.why);
    }
    c->input_done = true;
    c->close_after_flush = true;
    c->state = State::kClosing;
    c->deadline_ms = NowMs() + opt_.close_timeout.count();
    return;
  }
  c->state = State::kOpen;
  ++websockets_;
  counters_.connections.store(static_cast<int64_t>(websockets_), std::memory_order_relaxed);
  hub_.Connect(c->id, std::move(d.identity));
  c->in_hub = true;
  if (!leftover.empty()) OnWsBytes(c, leftover.data(), leftover.size());
}

void Gateway::OnWsBytes(Conn* c, char* data, size_t n) {
  uint16_t err = c->parser.Feed(data, n, [this, c](const ws::Event& ev) {
    if (c->dead) return;
    counters_.frames_received.fetch_add(1, std::memory_order_relaxed);
    switch (ev.kind) {
      case ws::Event::Kind::kText:
      case ws::Event::Kind::kBinary:
        if (c->state == State::kOpen) {
          OnMessage(c, ev.kind == ws::Event::Kind::kBinary, ev.payload);
        }
        break;
      case ws::Event::Kind::kPing:
        if (c->state == State::kOpen) Enqueue(c, MakeFrame(ws::Opcode::kPong, ev.payload));
        break;
      case ws::Event::Kind::kPong:
        break;
      case ws::Event::Kind::kClose:
        if (c->state == State::kOpen) {
          // The client starts the close: answer with its code and drop the
          // TCP connection once the answer is written (RFC 6455 §7.1.1).
          EndOpen(c, CloseReason::kClient);
          Enqueue(c,
                  ev.close_code == ws::close_code::kNoStatus ? MakeFrame(ws::Opcode::kClose, {})
                                                             : MakeClose(ev.close_code, {}),
                  /*force=*/true);
          c->close_after_flush = true;
          c->input_done = true;
          c->deadline_ms = NowMs() + opt_.close_timeout.count();
        } else {
          Destroy(c);  // the answer to the close we started
        }
        break;
    }
  });
  if (err != 0 && !c->dead) {
    c->input_done = true;
    if (c->state == State::kOpen) {
      CloseWith(c, err, ReasonForCode(err), "invalid frame");
      c->close_after_flush = true;
    } else {
      Destroy(c);
    }
  }
}

void Gateway::OnMessage(Conn* c, bool binary, std::string_view payload) {
  phx::Message msg;
  phx::DecodeError err;
  bool ok = binary ? phx::DecodeBinary(payload, &msg, &err) : phx::DecodeText(payload, &msg, &err);
  if (!ok) {
    spdlog::debug("conn {}: undecodable message: {}", c->fd, err.what);
    c->input_done = true;
    CloseWith(c, err.close_code, ReasonForCode(err.close_code), err.what);
    c->close_after_flush = true;
    return;
  }
  std::vector<Action> actions;
  if (broker_) {
    hub_.SetBroadcastsOpen(broker_->session().CanPublish(msg.payload.size()));
    hub_.SetClusterUp(broker_->session().up());
  }
  hub_.Handle(c->id, msg, NowMs(), &actions);
  // Only a client's own message starts the deliver-latency clock; fan-outs
  // the shard makes itself (presence leaves of a closed socket) do not.
  message_read_ns_ = read_time_ns_;
  Perform(actions);
  message_read_ns_ = 0;
}

// --- Output -----------------------------------------------------------------

void Gateway::Perform(std::vector<Action>& actions) {
  for (Action& a : actions) {
    switch (a.kind) {
      case Action::Kind::kSend: {
        Conn* c = Find(a.conn);
        if (c && c->state == State::kOpen) {
          Enqueue(c, MakeFrame(a.binary ? ws::Opcode::kBinary : ws::Opcode::kText, a.data));
        }
        break;
      }
      case Action::Kind::kFanout: {
        const std::vector<ConnId>* subs = hub_.Subscribers(a.topic);
        if (!subs) {
          if (a.publish && broker_) broker_->session().Publish(a.topic, a.data, a.binary);
          break;
        }
        // Encode once: one frame, one reference per recipient.
        FrameRef frame = MakeFrame(a.binary ? ws::Opcode::kBinary : ws::Opcode::kText, a.data);
        uint64_t delivered = 0;
        for (ConnId id : *subs) {
          if (id == a.conn) continue;
          Conn* c = Find(id);
          if (c && c->state == State::kOpen && Enqueue(c, frame)) ++delivered;
        }
        counters_.deliveries.fetch_add(delivered, std::memory_order_relaxed);
        if (message_read_ns_ != 0) turn_broadcasts_ns_.push_back(message_read_ns_);
        // The rest of the cluster, after the local sockets: the origin
        // never waits for the broker to deliver to its own.
        if (a.publish && broker_) broker_->session().Publish(a.topic, a.data, a.binary);
        break;
      }
      case Action::Kind::kSubscribe:
        if (broker_) broker_->session().Subscribe(a.topic);
        break;
      case Action::Kind::kUnsubscribe:
        if (broker_) broker_->session().Unsubscribe(a.topic);
        break;
      case Action::Kind::kPresence:
        if (broker_) broker_->session().Presence(a.topic, a.data);
        break;
      case Action::Kind::kClose: {
        Conn* c = Find(a.conn);
        if (c) CloseWith(c, a.close_code, CloseReason::kProtocolError, "closed by the shard");
        break;
      }
    }
  }
}

bool Gateway::Enqueue(Conn* c, const FrameRef& frame, bool force) {
  if (!force && c->out_bytes + frame.size() > opt_.max_outbound_bytes) {
    SlowConsumer(c);
    return false;
  }
  c->out.push_back(frame);
  c->out_bytes += frame.size();
  queued_bytes_ += static_cast<int64_t>(frame.size());
  MarkDirty(c);
  return true;
}

void Gateway::MarkDirty(Conn* c) {
  if (c->dirty || c->writable) return;  // EPOLLOUT will flush a socket the kernel stalled
  c->dirty = true;
  dirty_.push_back(c->id);
}

// A client that does not read: its queue is at --max-outbound. Drop what it
// has not started to receive, send 1008 behind the frame being written (if
// any) and give it close_timeout to take it; it never gets more memory.
void Gateway::SlowConsumer(Conn* c) {
  if (c->state != State::kOpen) return;
  size_t keep = c->out_offset > 0 ? 1 : 0;
  for (size_t i = keep; i < c->out.size(); ++i) {
    c->out_bytes -= c->out[i].size() - (i == 0 ? c->out_offset : 0);
    queued_bytes_ -= static_cast<int64_t>(c->out[i].size() - (i == 0 ? c->out_offset : 0));
  }
  c->out.resize(keep);
  spdlog::debug("conn {}: slow consumer, closing", c->fd);
  CloseWith(c, ws::close_code::kPolicyViolation, CloseReason::kSlowConsumer, "slow consumer");
  c->close_after_flush = true;
}

void Gateway::SetWritable(Conn* c, bool want) {
  if (c->writable == want) return;
  if (loop_->Modify(c->fd, want ? (EPOLLIN | EPOLLOUT) : EPOLLIN).ok()) c->writable = want;
}

void Gateway::Flush(Conn* c) {
  iovec iov[kMaxIov];
  uint64_t frames = 0, bytes = 0;
  while (!c->out.empty()) {
    size_t count = 0, total = 0;
    for (size_t i = 0; i < c->out.size() && count < kMaxIov; ++i) {
      size_t off = i == 0 ? c->out_offset : 0;
      iov[count].iov_base = const_cast<char*>(c->out[i].data() + off);
      iov[count].iov_len = c->out[i].size() - off;
      total += iov[count].iov_len;
      ++count;
    }
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = count;
    ssize_t w = ::sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      EndOpen(c, CloseReason::kIoError);
      Destroy(c);
      break;
    }
    bytes += static_cast<uint64_t>(w);
    c->out_bytes -= static_cast<size_t>(w);
    queued_bytes_ -= w;
    size_t left = static_cast<size_t>(w), done = 0, off = c->out_offset;
    while (done < c->out.size()) {
      size_t rem = c->out[done].size() - off;
      if (left < rem) {
        off += left;
        break;
      }
      left -= rem;
      off = 0;
      ++done;
    }
    c->out.erase(c->out.begin(), c->out.begin() + static_cast<ptrdiff_t>(done));
    c->out_offset = off;
    frames += done;
    if (static_cast<size_t>(w) < total) break;  // the kernel buffer is full
  }
  counters_.bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  counters_.frames_sent.fetch_add(frames, std::memory_order_relaxed);
  if (c->dead) return;
  if (!c->out.empty()) {
    SetWritable(c, true);
    return;
  }
  c->out_offset = 0;
  // An idle socket keeps no queue memory (a fan-out burst may have grown it).
  if (c->out.capacity() > 8) std::vector<FrameRef>().swap(c->out);
  SetWritable(c, false);
  if (c->close_after_flush) Destroy(c);
}

void Gateway::FlushAll() {
  // Flushing can fail sockets, whose presence leaves queue more frames:
  // repeat until nothing is pending, so the loop never sleeps on queued data.
  do {
    Settle();
    std::vector<uint64_t> ids;
    ids.swap(dirty_);
    for (uint64_t id : ids) {
      Conn* c = Find(id);
      if (!c) continue;
      c->dirty = false;
      if (!c->writable) Flush(c);
    }
  } while (!dirty_.empty() || !pending_leave_.empty());
  if (!turn_broadcasts_ns_.empty()) {
    const int64_t now = EventLoop::Clock::now().time_since_epoch().count();
    for (int64_t t : turn_broadcasts_ns_) metrics_->ObserveDeliverLatency(now - t);
    turn_broadcasts_ns_.clear();
  }
  graveyard_.clear();
}

// --- Closing ----------------------------------------------------------------

void Gateway::EndOpen(Conn* c, CloseReason reason) {
  if (c->state != State::kOpen) return;
  c->state = State::kClosing;
  --websockets_;
  counters_.connections.store(static_cast<int64_t>(websockets_), std::memory_order_relaxed);
  metrics_->AddClose(reason);
  LeaveHub(c);
}

void Gateway::CloseWith(Conn* c, uint16_t code, CloseReason reason, std::string_view text) {
  if (c->state != State::kOpen) return;
  EndOpen(c, reason);
  Enqueue(c, MakeClose(code, text), /*force=*/true);
  c->deadline_ms = NowMs() + opt_.close_timeout.count();
}

void Gateway::LeaveHub(Conn* c) {
  if (!c->in_hub) return;
  c->in_hub = false;
  pending_leave_.push_back(c->id);
}

void Gateway::Destroy(Conn* c) {
  if (c->dead) return;
  EndOpen(c, CloseReason::kIoError);
  LeaveHub(c);
  loop_->Remove(c->fd);
  ::close(c->fd);
  c->dead = true;
  queued_bytes_ -= static_cast<int64_t>(c->out_bytes);
  c->out.clear();
  c->out_bytes = 0;
  --live_;
  graveyard_.push_back(std::move(by_fd_[static_cast<size_t>(c->fd)]));
}

void Gateway::Settle() {
  if (settling_) return;
  settling_ = true;
  while (!pending_leave_.empty()) {
    std::vector<uint64_t> ids;
    ids.swap(pending_leave_);
    for (uint64_t id : ids) {
      std::vector<Action> actions;
      hub_.Disconnect(id, &actions);
      Perform(actions);
    }
  }
  const Hub::Stats& s = hub_.stats();
  counters_.joins_ok.store(s.joins_ok, std::memory_order_relaxed);
  counters_.joins_unauthorized.store(s.joins_unauthorized, std::memory_order_relaxed);
  counters_.joins_too_many.store(s.joins_too_many, std::memory_order_relaxed);
  counters_.joins_invalid_presence.store(s.joins_invalid_presence, std::memory_order_relaxed);
  counters_.joins_rate_limited.store(s.joins_rate_limited, std::memory_order_relaxed);
  counters_.broadcasts.store(s.broadcasts, std::memory_order_relaxed);
  auto& r = counters_.rejections;
  r[static_cast<size_t>(Rejection::kRateLimited)].store(s.rate_limited, std::memory_order_relaxed);
  r[static_cast<size_t>(Rejection::kUnmatchedTopic)].store(s.unmatched, std::memory_order_relaxed);
  r[static_cast<size_t>(Rejection::kReservedEvent)].store(s.reserved_refused,
                                                          std::memory_order_relaxed);
  r[static_cast<size_t>(Rejection::kStaleJoinRef)].store(s.stale_dropped,
                                                         std::memory_order_relaxed);
  settling_ = false;
  if (draining_ && live_ == 0 && drained_) {
    auto done = std::move(drained_);
    drained_ = nullptr;
    done();
  }
}

// --- Housekeeping -----------------------------------------------------------

// --- The broker ---------------------------------------------------------------

void Gateway::ClusterState(std::vector<std::string>* topics,
                           std::vector<mesh::TopicState>* presence) {
  hub_.ClusterState(topics, presence);
}

void Gateway::Deliver(std::string_view topic, std::string_view message, bool binary) {
  if (hub_.Subscribers(topic) == nullptr) return;  // the last one left since we unsubscribed
  actions_.clear();
  actions_.push_back(Action{.kind = Action::Kind::kFanout,
                            .topic = std::string(topic),
                            .data = std::string(message),
                            .binary = binary});
  Perform(actions_);
  actions_.clear();
  Settle();
}

void Gateway::RemotePresence(std::string_view topic, std::string_view json, bool snapshot) {
  actions_.clear();
  if (snapshot) {
    hub_.RemoteSnapshot(topic, json, &actions_);
  } else {
    hub_.RemoteDiff(topic, json, &actions_);
  }
  Perform(actions_);
  actions_.clear();
  Settle();
}

void Gateway::PublishClusterMetrics() {
  const ClusterSession& s = broker_->session();
  const ClusterSession::Counters& c = s.counters();
  auto set = [](auto& atomic, auto v) { atomic.store(v, std::memory_order_relaxed); };
  set(counters_.broker_up, s.up() ? 1 : 0);
  set(counters_.broker_epoch, s.epoch());
  set(counters_.broker_out_messages, s.outbox_messages());
  set(counters_.broker_out_bytes, s.outbox_bytes());
  set(counters_.broker_in_messages, s.uncredited());
  set(counters_.cluster_published, c.published);
  set(counters_.cluster_acked, c.acked);
  set(counters_.cluster_delivered, c.delivered);
  set(counters_.cluster_duplicates, c.duplicates);
  set(counters_.cluster_presence, c.presence);
  set(counters_.cluster_hellos, c.hellos);
  set(counters_.cluster_epoch_changes, c.epoch_changes);
  set(counters_.cluster_broker_lost, c.broker_lost);
  set(counters_.cluster_bad_frames, c.bad_frames);
  set(counters_.broadcasts_refused, hub_.stats().broadcasts_refused);
}

void Gateway::Cron() {
  const int64_t now = NowMs();
  if (broker_) {
    actions_.clear();
    hub_.SendOverdueStates(now, &actions_);
    Perform(actions_);
    actions_.clear();
  }
  size_t max_queue = 0;
  for (auto& slot : by_fd_) {
    Conn* c = slot.get();
    if (!c || c->dead) continue;
    switch (c->state) {
      case State::kHttp:
        if (now >= c->deadline_ms) {
          metrics_->AddRefusal(Refusal::kTimeout);
          Destroy(c);
        }
        break;
      case State::kOpen:
        if (now - c->last_rx_ms >= opt_.idle_timeout.count()) {
          CloseWith(c, ws::close_code::kGoingAway, CloseReason::kIdleTimeout, "idle timeout");
        }
        break;
      case State::kClosing:
        if (now >= c->deadline_ms) Destroy(c);
        break;
    }
    if (!c->dead && c->out_bytes > max_queue) max_queue = c->out_bytes;
  }
  counters_.client_queue_bytes.store(queued_bytes_, std::memory_order_relaxed);
  counters_.client_queue_max_bytes.store(static_cast<int64_t>(max_queue),
                                         std::memory_order_relaxed);
  counters_.loop_lag_ns.store(loop_->last_timer_lag().count(), std::memory_order_relaxed);
  if (++cron_ticks_ % 4 == 0) {
    counters_.resident_bytes.store(ResidentBytes().value_or(0), std::memory_order_relaxed);
  }
  Settle();
}

void Gateway::Drain(std::function<void()> done) {
  if (draining_) return;
  draining_ = true;
  drained_ = std::move(done);
  if (accepting_) {
    loop_->Remove(listen_fd_);
    accepting_ = false;
  }
  const int64_t deadline = NowMs() + opt_.shutdown_timeout.count();
  for (auto& slot : by_fd_) {
    Conn* c = slot.get();
    if (!c || c->dead) continue;
    if (c->state == State::kHttp) {
      metrics_->AddRefusal(Refusal::kDraining);
      Destroy(c);
    } else if (c->state == State::kOpen) {
      CloseWith(c, ws::close_code::kServiceRestart, CloseReason::kShutdown, "shard restart");
    }
    if (!c->dead) c->deadline_ms = deadline;
  }
  loop_->AddTimer(opt_.shutdown_timeout, [this] {
    for (auto& slot : by_fd_) {
      if (slot && !slot->dead) Destroy(slot.get());
    }
    Settle();
  });
  Settle();
}

}  // namespace sb::worker
