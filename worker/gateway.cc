#include "worker/gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "common/build_info.h"
#include "common/mono_time.h"
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

}  // namespace

// One HTTP request being read. The header is parsed with an empty body;
// an /api/* request's parser then takes the header over with a string body
// bounded by --max-frame (Beast's converting constructor), so upgrade
// requests never buffer a body.
struct HttpState {
  HttpState() {
    header.header_limit(kHeaderLimit);
    // Bounded below: an upgrade has no body (empty_body refuses one), an
    // API body is bounded once its path is known.
    header.body_limit(boost::none);
  }
  http::request_parser<http::empty_body> header;
  std::optional<http::request_parser<http::string_body>> api;
  // The bytes received and not yet answered, from the first byte of the
  // request in progress: kept whole (the parser copies what it takes) so
  // that a hand-off can give them to a new process, which parses them again.
  std::string buf;
  size_t parsed = 0;       // bytes of buf the parser has taken
  uint32_t requests = 0;   // API requests answered on this connection
  bool waiting = false;    // an API request is with the listener
  bool continued = false;  // "100 Continue" sent for the request in progress
  bool keep_alive = false;
  ApiEndpoint endpoint = ApiEndpoint::kOther;
};

std::string_view TargetPath(const HttpRequest& req) {
  std::string_view target(req.target().data(), req.target().size());
  return target.substr(0, target.find('?'));
}

// A request static serving answers (--static): the answer is counted by
// status and, like every answer that is not an upgrade, ends the connection.
HttpDecision ServeStatic(const StaticRoot& root, const HttpRequest& req, WorkerMetrics* metrics) {
  StaticMethod method = req.method() == http::verb::get    ? StaticMethod::kGet
                        : req.method() == http::verb::head ? StaticMethod::kHead
                                                           : StaticMethod::kOther;
  std::optional<std::string_view> if_none_match;
  if (auto it = req.find(http::field::if_none_match); it != req.end()) {
    if_none_match = std::string_view(it->value().data(), it->value().size());
  }
  StaticAnswer a = root.Answer(method, {req.target().data(), req.target().size()}, if_none_match);
  metrics->AddStaticRequest(a.status);
  if (!a.why.empty()) spdlog::debug("static {}: {}: {}", a.status, TargetPath(req), a.why);
  HttpDecision d;
  d.response = std::move(a.head);
  d.response += a.body;
  return d;
}

struct Gateway::Conn {
  Conn(ConnId id, int fd, size_t max_frame)
      : id(id), fd(fd), parser(ws::Role::kServer, max_frame) {}
  ConnId id;
  int fd;
  State state = State::kHttp;
  bool writable = false;           // EPOLLOUT registered: the kernel buffer was full
  bool dirty = false;              // in dirty_
  bool close_after_flush = false;  // drop the connection once the queue is written
  // With close_after_flush: half-close and wait for the client's EOF (or
  // close_timeout) instead, so an unread request body does not make the
  // kernel reset the connection before the client has read the answer.
  bool linger = false;
  bool input_done = false;  // stop parsing input (after a parse error or a refusal)
  bool dead = false;
  bool parsing = false;   // ParseHttp is on the stack for this connection
  bool upgraded = false;  // a WebSocket (open or closing), not an HTTP connection
  int64_t last_rx_ms = 0;
  // While writable: when the kernel last took bytes (or the buffer filled).
  int64_t last_tx_ms = 0;
  int64_t message_since_ms = 0;               // when the data message being received began; 0: none
  int64_t deadline_ms = 0;                    // kHttp: handshake; kClosing: close handshake
  std::optional<AddressCounts::Key> address;  // counted in per_address_
  std::unique_ptr<HttpState> http;
  ws::MessageParser parser;
  OutboundQueue out;
};

Gateway::Gateway(EventLoop* loop, int listen_fd, GatewayOptions options, Listener* listener,
                 WorkerMetrics* metrics)
    : loop_(loop),
      listen_fd_(listen_fd),
      opt_(std::move(options)),
      listener_(listener),
      metrics_(metrics),
      counters_(metrics->counters()),
      per_address_(opt_.max_connections_per_address),
      queue_limits_{.max_charge = opt_.max_outbound_bytes, .max_owed = opt_.max_owed_frames},
      read_buf_(new char[kReadBufferSize]) {}

Gateway::~Gateway() {
  for (auto& c : by_fd_) {
    if (c && !c->dead) {
      loop_->Remove(c->fd);
      ::close(c->fd);
    }
  }
  if (accepting_) loop_->Remove(listen_fd_);
  if (parse_timer_ != 0) loop_->Cancel(parse_timer_);
}

Result<std::unique_ptr<Gateway>> Gateway::Create(EventLoop* loop, int listen_fd,
                                                 GatewayOptions options, Listener* listener,
                                                 WorkerMetrics* metrics) {
  std::unique_ptr<Gateway> g(new Gateway(loop, listen_fd, std::move(options), listener, metrics));
  Gateway* self = g.get();
  // EPOLLEXCLUSIVE: with a `balance: shared` socket every shard of a node
  // waits on the same inherited socket; one connection should wake one of
  // them, not all. With round_robin the socket is this shard's own member
  // and this epoll its only waiter, which the flag always wakes.
  if (Status s = loop->Add(listen_fd, EPOLLIN | EPOLLEXCLUSIVE,
                           [self](uint32_t) { self->OnAcceptable(); });
      !s.ok()) {
    return s;
  }
  return g;
}

Gateway::Conn* Gateway::Find(ConnId id) const {
  size_t fd = id & ((uint64_t{1} << kFdBits) - 1);
  if (fd >= by_fd_.size()) return nullptr;
  Conn* c = by_fd_[fd].get();
  return c && c->id == id && !c->dead ? c : nullptr;
}

Gateway::Conn* Gateway::FindOpen(ConnId id) const {
  Conn* c = Find(id);
  return c && c->state == State::kOpen ? c : nullptr;
}

// --- Accepting --------------------------------------------------------------

void Gateway::OnAcceptable() {
  const size_t max_sockets = opt_.max_connections + kSocketAllowance;
  for (int i = 0; i < kMaxAcceptsPerEvent && accepting_ && live_ < max_sockets; ++i) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("accept: {}; pausing accepts for 100 ms", strerror(errno));
        PauseAccept();
      }
      break;  // EAGAIN: another shard took it, or the backlog is empty
    }
    counters_.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    // Over its address's limit: closed before anything is read or kept.
    // The client is most likely the one holding the other sockets, and an
    // HTTP answer would cost a socket slot and a parser until it sent a
    // request; phoenix.js cannot see an upgrade's status anyway and retries
    // with backoff either way.
    std::optional<AddressCounts::Key> address =
        AddressCounts::KeyOf(reinterpret_cast<const sockaddr*>(&peer), peer_len);
    if (address && !per_address_.Add(*address)) {
      metrics_->AddRefusal(Refusal::kAddressLimit);
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (static_cast<size_t>(fd) >= by_fd_.size()) by_fd_.resize(static_cast<size_t>(fd) + 1);
    ConnId id = (next_seq_++ << kFdBits) | static_cast<uint64_t>(fd);
    auto c = std::make_unique<Conn>(id, fd, opt_.max_frame_bytes);
    const int64_t now = MonoNowMs();
    c->last_rx_ms = now;
    c->deadline_ms = now + opt_.handshake_timeout.count();
    c->http = std::make_unique<HttpState>();
    if (Status s = loop_->Add(fd, EPOLLIN, [this, id](uint32_t ev) { OnEvent(id, ev); }); !s.ok()) {
      if (address) per_address_.Remove(*address);
      ::close(fd);
      continue;
    }
    c->address = address;
    by_fd_[static_cast<size_t>(fd)] = std::move(c);
    ++live_;
  }
  counters_.sockets.store(static_cast<int64_t>(live_), std::memory_order_relaxed);
  UpdateAccepting();
}

// Out of fds: with a level-triggered listening socket the loop would spin on
// accept errors; step back and retry shortly (connections wait in the backlog).
void Gateway::PauseAccept() {
  if (accept_paused_) return;
  accept_paused_ = true;
  UpdateAccepting();
  loop_->AddTimer(std::chrono::milliseconds(100), [this] {
    accept_paused_ = false;
    UpdateAccepting();
  });
}

void Gateway::UpdateAccepting() {
  const bool want = !draining_ && !accept_paused_ && !accept_stopped_ &&
                    live_ < opt_.max_connections + kSocketAllowance;
  if (want == accepting_) return;
  if (!want) {
    loop_->Remove(listen_fd_);
    accepting_ = false;
  } else if (loop_->Add(listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, [this](uint32_t) { OnAcceptable(); })
                 .ok()) {
    accepting_ = true;
  }
}

// --- Input ------------------------------------------------------------------

void Gateway::OnEvent(ConnId id, uint32_t events) {
  Conn* c = Find(id);
  if (!c) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) OnReadable(c);
  if (!c->dead && (events & EPOLLOUT)) Flush(c);
  read_time_ns_ = 0;
  Settle();
}

void Gateway::OnReadable(Conn* c) {
  for (int i = 0; i < kMaxReadsPerEvent && !c->dead; ++i) {
    ssize_t n = ::read(c->fd, read_buf_.get(), kReadBufferSize);
    if (n > 0) {
      counters_.bytes_received.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      const MonoTime now = MonoNow();
      c->last_rx_ms = ToMs(now);
      read_time_ns_ = ToNs(now);
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
  // A client that pipelines while its request is with the listener: what
  // it may send ahead is bounded by one request.
  if (h.waiting && h.buf.size() > kHeaderLimit + opt_.max_frame_bytes) {
    c->input_done = true;
    h.keep_alive = false;
    h.buf.clear();
    return;
  }
  c->parsing = true;
  ParseHttp(c);
  c->parsing = false;
}

void Gateway::ParseHttp(Conn* c) {
  while (!c->dead && !c->input_done && c->http && !c->http->waiting) {
    HttpState& h = *c->http;
    boost::system::error_code ec;
    if (!h.api) {
      const size_t used =
          h.header.put(boost::asio::buffer(h.buf.data() + h.parsed, h.buf.size() - h.parsed), ec);
      h.parsed += used;
      if (ec == http::error::need_more) return;
      if (!ec && !h.header.is_header_done()) return;
      std::string_view target;
      if (!ec) target = {h.header.get().target().data(), h.header.get().target().size()};
      if (!ec && IsApiTarget(target)) {
        // Answered from the header, before any body is read or buffered:
        // the API off, a wrong key, a body too large. The connection then
        // closes (its body is never read).
        const auto& head = h.header.get();
        std::optional<std::string_view> authorization;
        if (auto it = head.find(http::field::authorization); it != head.end()) {
          authorization = std::string_view(it->value().data(), it->value().size());
        }
        const auto length = h.header.content_length();
        int status = 0;
        std::string body;
        if (!opt_.api_key) {
          status = 404;
          body = ApiErrorBody("not_found", "the API is off");
        } else if (!ApiKeyAccepted(authorization, *opt_.api_key)) {
          status = 401;
          body = ApiErrorBody("unauthorized", "missing or wrong API key");
        } else if (length && *length > opt_.max_frame_bytes) {
          status = 413;
          body = ApiErrorBody("too_large", "body over --max-frame (" +
                                               std::to_string(opt_.max_frame_bytes) + " bytes)");
        }
        if (status != 0 && !h.header.is_done()) {
          h.keep_alive = false;
          h.waiting = true;
          RespondApi(c->id, ApiEndpointOf(target), status, body);
          return;
        }
        h.api.emplace(std::move(h.header));
        h.api->body_limit(opt_.max_frame_bytes);
        // curl and most HTTP clients hold back a body over 1 KiB for a
        // second unless told to go on (RFC 9110 §10.1.1).
        const auto& req = h.api->get();
        if (auto expect = req.find(http::field::expect);
            expect != req.end() && !h.api->is_done() && !h.continued &&
            boost::beast::iequals(expect->value(), "100-continue")) {
          // Not again when a new process parses the request once more.
          h.continued = true;
          Enqueue(c, FrameRef::Copy("HTTP/1.1 100 Continue\r\n\r\n"), OutboundQueue::Kind::kForced);
        }
        continue;
      }
      if (!ec && !h.header.is_done()) {
        if (used == 0) return;
        continue;
      }
      HttpDecision d;
      if (ec) {
        d.refusal = Refusal::kBadRequest;
        d.why = "malformed HTTP request: " + ec.message();
        d.response = PlainResponse(400, "Bad Request", d.why + "\n");
      } else if (opt_.static_root && IsStaticPath(TargetPath(h.header.get()))) {
        d = ServeStatic(*opt_.static_root, h.header.get(), metrics_);
      } else {
        HttpPolicy policy;
        policy.draining = draining_;
        policy.at_capacity = websockets_ >= opt_.max_connections;
        policy.token = opt_.token ? &*opt_.token : nullptr;
        policy.origin = &opt_.origin;
        policy.now_unix_s = static_cast<int64_t>(std::time(nullptr));
        policy.version = BuildVersion();
        policy.commit = BuildCommit();
        d = DecideRequest(h.header.get(), policy);
      }
      FinishHttp(c, std::move(d));
      return;
    }
    // A request without a body is done with its header.
    if (!h.api->is_done()) {
      const size_t used =
          h.api->put(boost::asio::buffer(h.buf.data() + h.parsed, h.buf.size() - h.parsed), ec);
      h.parsed += used;
      if (ec == http::error::need_more) return;
      if (ec) {
        h.keep_alive = false;
        h.waiting = true;
        const bool too_large = ec == http::error::body_limit;
        const ApiEndpoint endpoint =
            ApiEndpointOf({h.api->get().target().data(), h.api->get().target().size()});
        if (!opt_.api_key) {
          RespondApi(c->id, endpoint, 404, ApiErrorBody("not_found", "the API is off"));
        } else {
          RespondApi(c->id, endpoint, too_large ? 413 : 400,
                     too_large
                         ? ApiErrorBody("too_large", "body over --max-frame")
                         : ApiErrorBody("bad_request", "malformed HTTP request: " + ec.message()));
        }
        return;
      }
      if (!h.api->is_done()) {
        if (used == 0) return;
        continue;
      }
    }
    HandleApi(c);
  }
}

void Gateway::HandleApi(Conn* c) {
  HttpState& h = *c->http;
  // The request is whole in the parser: its bytes are done with.
  h.buf.erase(0, h.parsed);
  h.parsed = 0;
  const auto& req = h.api->get();
  std::string_view target(req.target().data(), req.target().size());
  std::string_view method(req.method_string().data(), req.method_string().size());
  std::optional<std::string_view> authorization;
  if (auto it = req.find(http::field::authorization); it != req.end()) {
    authorization = std::string_view(it->value().data(), it->value().size());
  }
  ApiPolicy policy;
  policy.key = opt_.api_key ? &*opt_.api_key : nullptr;
  policy.max_body = opt_.max_frame_bytes;
  ApiDecision d = DecideApi(method, target, authorization, req.body(), policy);
  ++h.requests;
  h.keep_alive =
      req.keep_alive() && h.requests < opt_.max_api_requests_per_connection && !draining_;
  h.endpoint = d.endpoint;
  h.waiting = true;
  if (d.request) {
    listener_->OnApiRequest(c->id, std::move(*d.request));
  } else {
    RespondApi(c->id, d.endpoint, d.status, d.body);
  }
}

void Gateway::RespondApi(ConnId conn, ApiEndpoint endpoint, int status, std::string_view body) {
  Conn* c = Find(conn);
  if (!c || c->state != State::kHttp || !c->http || !c->http->waiting) return;
  metrics_->AddApiRequest(endpoint, status);
  const bool keep_alive = c->http->keep_alive && !draining_;
  Enqueue(c, FrameRef::Copy(ApiResponse(status, body, keep_alive)), OutboundQueue::Kind::kForced);
  if (!keep_alive) {
    c->http.reset();
    c->input_done = true;
    c->close_after_flush = true;
    c->linger = true;
    c->state = State::kClosing;
    c->deadline_ms = MonoNowMs() + opt_.close_timeout.count();
    return;
  }
  // The next request: a fresh parser over what the client sent ahead.
  auto next = std::make_unique<HttpState>();
  next->buf = std::move(c->http->buf);
  next->buf.erase(0, c->http->parsed);
  next->requests = c->http->requests;
  c->http = std::move(next);
  c->deadline_ms = MonoNowMs() + opt_.handshake_timeout.count();
  // Answered during the listener's call: the parse loop that made it goes
  // on. Answered later: parse what waited meanwhile.
  if (!c->parsing) {
    c->parsing = true;
    ParseHttp(c);
    c->parsing = false;
  }
}

void Gateway::FinishHttp(Conn* c, HttpDecision d) {
  std::string leftover = c->http->buf.substr(c->http->parsed);
  c->http.reset();
  Enqueue(c, FrameRef::Copy(d.response), OutboundQueue::Kind::kForced);
  if (!d.upgrade) {
    if (d.refusal) {
      metrics_->AddRefusal(*d.refusal);
      if (d.token_failure) metrics_->AddTokenRefusal(*d.token_failure);
      spdlog::debug("conn {}: refused: {}", c->fd, d.why);
    }
    c->input_done = true;
    c->close_after_flush = true;
    c->state = State::kClosing;
    c->deadline_ms = MonoNowMs() + opt_.close_timeout.count();
    return;
  }
  c->state = State::kOpen;
  c->upgraded = true;
  ++websockets_;
  counters_.connections.store(static_cast<int64_t>(websockets_), std::memory_order_relaxed);
  listener_->OnOpen(c->id, std::move(d.identity));
  if (!leftover.empty()) OnWsBytes(c, leftover.data(), leftover.size());
}

void Gateway::OnWsBytes(Conn* c, char* data, size_t n) {
  bool completed = false;  // a data message ended in these bytes
  uint16_t err = c->parser.Feed(data, n, [this, c, &completed](const ws::Event& ev) {
    if (c->dead) return;
    counters_.frames_received.fetch_add(1, std::memory_order_relaxed);
    switch (ev.kind) {
      case ws::Event::Kind::kText:
      case ws::Event::Kind::kBinary:
        completed = true;
        if (c->state == State::kOpen) {
          listener_->OnMessage(c->id, ev.kind == ws::Event::Kind::kBinary, ev.payload);
        }
        break;
      case ws::Event::Kind::kPing:
        if (c->state == State::kOpen) {
          Enqueue(c, MakeFrame(ws::Opcode::kPong, ev.payload), OutboundQueue::Kind::kPong);
        }
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
                  OutboundQueue::Kind::kForced);
          c->close_after_flush = true;
          c->input_done = true;
          c->deadline_ms = MonoNowMs() + opt_.close_timeout.count();
        } else {
          Destroy(c);  // the answer to the close we started
        }
        break;
    }
  });
  if (err != 0 && !c->dead) {
    c->input_done = true;
    if (c->state == State::kOpen) {
      CloseWith(c, err, ReasonForCloseCode(err), "invalid frame");
      c->close_after_flush = true;
    } else {
      Destroy(c);
    }
    return;
  }
  // The message clock starts with a message's first bytes and stops when
  // it completes; pings between fragments do not reset it (they reset the
  // idle clock only).
  if (!c->parser.message_in_progress()) {
    c->message_since_ms = 0;
  } else if (completed || c->message_since_ms == 0) {
    c->message_since_ms = c->last_rx_ms;
  }
}

// --- Output -----------------------------------------------------------------

void Gateway::Send(ConnId conn, bool binary, std::string_view message, bool owed) {
  if (Conn* c = FindOpen(conn)) {
    Enqueue(c, MakeFrame(binary ? ws::Opcode::kBinary : ws::Opcode::kText, message),
            owed ? OutboundQueue::Kind::kOwed : OutboundQueue::Kind::kData);
  }
}

uint64_t Gateway::Deliver(std::span<const ConnId> to, ConnId except, bool binary,
                          std::string_view message) {
  if (to.empty()) return 0;
  // Encode once: one frame, one reference per recipient.
  FrameRef frame = MakeFrame(binary ? ws::Opcode::kBinary : ws::Opcode::kText, message);
  uint64_t delivered = 0;
  for (ConnId id : to) {
    if (id == except) continue;
    Conn* c = FindOpen(id);
    if (c && Enqueue(c, frame)) ++delivered;
  }
  return delivered;
}

void Gateway::Close(ConnId conn, uint16_t code, CloseReason reason, std::string_view text) {
  if (Conn* c = FindOpen(conn)) {
    c->input_done = true;
    CloseWith(c, code, reason, text);
    c->close_after_flush = true;
  }
}

bool Gateway::Enqueue(Conn* c, const FrameRef& frame, OutboundQueue::Kind kind) {
  if (!c->out.Push(frame, kind, queue_limits_)) {
    SlowConsumer(c);
    return false;
  }
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
  c->out.DropUnstarted();
  spdlog::debug("conn {}: slow consumer, closing", c->fd);
  CloseWith(c, ws::close_code::kPolicyViolation, CloseReason::kSlowConsumer, "slow consumer");
  c->close_after_flush = true;
}

void Gateway::SetWritable(Conn* c, bool want) {
  if (c->writable == want) return;
  if (!loop_->Modify(c->fd, want ? (EPOLLIN | EPOLLOUT) : EPOLLIN).ok()) return;
  c->writable = want;
  blocked_ = want ? blocked_ + 1 : blocked_ - 1;
  counters_.blocked_sockets.store(static_cast<int64_t>(blocked_), std::memory_order_relaxed);
}

void Gateway::Flush(Conn* c) {
  iovec iov[kMaxIov];
  uint64_t frames = 0, bytes = 0;
  while (!c->out.empty()) {
    size_t total = 0;
    const size_t count = c->out.Gather(iov, kMaxIov, &total);
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
    frames += static_cast<size_t>(w) == total && count == c->out.frames()
                  ? c->out.ConsumeAll()
                  : c->out.Consume(static_cast<size_t>(w));
    if (static_cast<size_t>(w) < total) break;  // the kernel buffer is full
  }
  counters_.bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
  counters_.frames_sent.fetch_add(frames, std::memory_order_relaxed);
  if (c->dead) return;
  if (!c->out.empty()) {
    // The stalled-write clock: from when the buffer filled, restarted
    // whenever the kernel takes more.
    if (bytes > 0 || !c->writable) c->last_tx_ms = MonoNowMs();
    SetWritable(c, true);
    return;
  }
  SetWritable(c, false);
  if (!c->close_after_flush) return;
  if (c->linger) {
    // Input is discarded until EOF (OnReadable) or the deadline (Sweep).
    ::shutdown(c->fd, SHUT_WR);
    c->close_after_flush = false;
    c->deadline_ms = MonoNowMs() + opt_.close_timeout.count();
    return;
  }
  Destroy(c);
}

void Gateway::FlushAll() {
  // Flushing can fail sockets, whose presence leaves queue more frames:
  // repeat until nothing is pending, so the loop never sleeps on queued data.
  do {
    Settle();
    std::vector<ConnId> ids;
    ids.swap(dirty_);
    for (ConnId id : ids) {
      Conn* c = Find(id);
      if (!c) continue;
      c->dirty = false;
      if (!c->writable) Flush(c);
    }
  } while (!dirty_.empty() || !closed_.empty());
  graveyard_.clear();
}

// --- Closing ----------------------------------------------------------------

void Gateway::EndOpen(Conn* c, CloseReason reason) {
  if (c->state != State::kOpen) return;
  c->state = State::kClosing;
  --websockets_;
  counters_.connections.store(static_cast<int64_t>(websockets_), std::memory_order_relaxed);
  metrics_->AddClose(reason);
  closed_.push_back(c->id);
}

void Gateway::CloseWith(Conn* c, uint16_t code, CloseReason reason, std::string_view text) {
  if (c->state != State::kOpen) return;
  EndOpen(c, reason);
  Enqueue(c, MakeClose(code, text), OutboundQueue::Kind::kForced);
  c->deadline_ms = MonoNowMs() + opt_.close_timeout.count();
}

void Gateway::Destroy(Conn* c) {
  if (c->dead) return;
  EndOpen(c, CloseReason::kIoError);
  loop_->Remove(c->fd);
  ::close(c->fd);
  c->dead = true;
  c->out.Clear();
  if (c->writable) {
    --blocked_;
    counters_.blocked_sockets.store(static_cast<int64_t>(blocked_), std::memory_order_relaxed);
  }
  if (c->address) per_address_.Remove(*c->address);
  --live_;
  counters_.sockets.store(static_cast<int64_t>(live_), std::memory_order_relaxed);
  graveyard_.push_back(std::move(by_fd_[static_cast<size_t>(c->fd)]));
  UpdateAccepting();
}

void Gateway::Settle() {
  if (settling_) return;
  settling_ = true;
  // What the listener does for a closed socket (presence leaves) can close
  // more sockets (slow consumers): until none is left.
  while (!closed_.empty()) {
    std::vector<ConnId> ids;
    ids.swap(closed_);
    for (ConnId id : ids) listener_->OnClosed(id);
  }
  settling_ = false;
  if (draining_ && live_ == 0 && drained_) {
    auto done = std::move(drained_);
    drained_ = nullptr;
    done();
  }
}

// --- Housekeeping -----------------------------------------------------------

void Gateway::Sweep() {
  const int64_t now = MonoNowMs();
  size_t max_queue = 0, queued = 0;
  for (auto& slot : by_fd_) {
    Conn* c = slot.get();
    if (!c || c->dead) continue;
    switch (c->state) {
      case State::kHttp:
        if (now >= c->deadline_ms) {
          // A keep-alive API connection idle between requests is not refused.
          if (!c->http || c->http->requests == 0) metrics_->AddRefusal(Refusal::kTimeout);
          Destroy(c);
        }
        break;
      case State::kOpen:
        if (now - c->last_rx_ms >= opt_.idle_timeout.count()) {
          CloseWith(c, ws::close_code::kGoingAway, CloseReason::kIdleTimeout, "idle timeout");
        } else if (c->message_since_ms != 0 &&
                   now - c->message_since_ms >= opt_.message_timeout.count()) {
          // Fragments kept alive by pings (or a frame trickled in) would
          // otherwise hold up to 2 × --max-frame for as long as the client likes.
          c->input_done = true;
          CloseWith(c, ws::close_code::kPolicyViolation, CloseReason::kMessageTimeout,
                    "message timeout");
          c->close_after_flush = true;
        } else if (c->writable && now - c->last_tx_ms >= opt_.idle_timeout.count()) {
          // The client reads nothing, yet sends (pings, whose single pong
          // never grows the queue to --max-outbound): its kernel buffers,
          // megabytes, would stay pinned for as long as it keeps sending.
          SlowConsumer(c);
        }
        break;
      case State::kClosing:
        if (now >= c->deadline_ms) Destroy(c);
        break;
    }
    if (c->dead) continue;
    // An empty queue's few kept slots are the socket's, not queued bytes.
    const size_t memory = c->out.empty() ? 0 : c->out.memory();
    queued += memory;
    if (memory > max_queue) max_queue = memory;
  }
  counters_.client_queue_bytes.store(static_cast<int64_t>(queued), std::memory_order_relaxed);
  counters_.client_queue_max_bytes.store(static_cast<int64_t>(max_queue),
                                         std::memory_order_relaxed);
  Settle();
}

void Gateway::Drain(std::function<void()> done) {
  if (draining_) return;
  draining_ = true;
  drained_ = std::move(done);
  UpdateAccepting();
  const int64_t deadline = MonoNowMs() + opt_.shutdown_timeout.count();
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

// --- Hand-off ---------------------------------------------------------------

std::vector<ConnId> Gateway::OpenConnections() const {
  std::vector<ConnId> ids;
  for (const auto& slot : by_fd_) {
    if (slot && !slot->dead && slot->state == State::kOpen) ids.push_back(slot->id);
  }
  return ids;
}

bool Gateway::Moves(const Conn& c) {
  if (c.dead) return false;
  switch (c.state) {
    case State::kOpen:
      return true;
    case State::kHttp:
      // Its answer is with the listener, which stays behind.
      return c.http != nullptr && !c.http->waiting;
    case State::kClosing:
      // An HTTP answer being written (or lingering); not a WebSocket's close
      // handshake, which the old process's exit ends as well as it would.
      return !c.upgraded && (c.close_after_flush || c.linger);
  }
  return false;
}

std::vector<ConnId> Gateway::HandoffConnections() const {
  std::vector<ConnId> ids;
  for (const auto& slot : by_fd_) {
    if (slot && Moves(*slot)) ids.push_back(slot->id);
  }
  return ids;
}

bool Gateway::AnswersPending() const {
  for (const auto& slot : by_fd_) {
    if (slot && !slot->dead && slot->state == State::kHttp && slot->http && slot->http->waiting) {
      return true;
    }
  }
  return false;
}

int Gateway::ExportConnection(ConnId conn, handoff::Connection* out) const {
  const Conn* c = Find(conn);
  if (c == nullptr || !Moves(*c)) return -1;
  out->id = c->id;
  out->address.clear();
  if (c->address) out->address.assign(reinterpret_cast<const char*>(c->address->data()), 16);
  out->last_rx_ms = c->last_rx_ms;
  out->last_tx_ms = c->last_tx_ms;
  out->outbound.clear();
  c->out.ForEachFrame([out](const FrameRef& f, OutboundQueue::Kind kind) {
    out->outbound.push_back({static_cast<uint8_t>(kind), std::string(f.data(), f.size())});
  });
  out->written = c->out.written();
  if (c->state == State::kOpen) {
    out->message_since_ms = c->message_since_ms;
    ws::MessageParser::Leftovers left = c->parser.leftovers();
    out->parser_tail = std::move(left.tail);
    out->parser_message = std::move(left.message);
    out->in_message = left.in_message;
    out->message_opcode = static_cast<uint8_t>(left.opcode);
    out->http.reset();
    return c->fd;
  }
  out->message_since_ms = 0;
  out->parser_tail.clear();
  out->parser_message.clear();
  out->in_message = false;
  out->message_opcode = 1;
  handoff::HttpPhase& h = out->http.emplace();
  h.deadline_ms = c->deadline_ms;
  if (c->state == State::kHttp) {
    h.received = c->http->buf;
    h.requests = c->http->requests;
    h.continued = c->http->continued;
    h.end = handoff::HttpEnd::kKeepAlive;
  } else if (c->close_after_flush) {
    h.end = c->linger ? handoff::HttpEnd::kCloseLinger : handoff::HttpEnd::kClose;
  } else {
    h.end = handoff::HttpEnd::kLingering;
  }
  return c->fd;
}

void Gateway::StopAccepting() {
  accept_stopped_ = true;
  UpdateAccepting();
}

void Gateway::Release(ConnId conn) {
  Conn* c = Find(conn);
  if (c == nullptr || !Moves(*c)) return;
  // Not a close: the socket goes on in the new process.
  if (c->state == State::kOpen) {
    c->state = State::kClosing;
    --websockets_;
    counters_.connections.store(static_cast<int64_t>(websockets_), std::memory_order_relaxed);
  }
  Destroy(c);
}

int Gateway::HandoffFd(ConnId conn) const {
  const Conn* c = Find(conn);
  return c != nullptr && Moves(*c) ? c->fd : -1;
}

Status Gateway::PrepareAdoption(const EventLoop& loop, int fd) {
  if (fd < 0 || static_cast<uint64_t>(fd) >= (uint64_t{1} << kFdBits)) {
    return Status::Refused("hand-off: fd out of range");
  }
  // The flag belongs to the open file, which the old process shares: set
  // already as a rule, one call saved per socket.
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
    return Status::IoError(std::string("hand-off: fcntl: ") + strerror(errno));
  }
  return loop.Prewatch(fd, EPOLLIN);
}

Result<ConnId> Gateway::Adopt(UniqueFd fd, const handoff::Connection& state) {
  if (fd.get() < 0 || static_cast<uint64_t>(fd.get()) >= (uint64_t{1} << kFdBits)) {
    return Status::Refused("hand-off: fd out of range");
  }
  // Prepared, so registered: a refusal below must unregister it before the
  // fd closes, or epoll would keep it (the old process's copy holds the
  // open file) and report it under a number the process reuses.
  struct Unwatch {
    const EventLoop* loop;
    int fd;
    ~Unwatch() {
      if (loop) loop->Unwatch(fd);
    }
  } unwatch{loop_, fd.get()};
  const size_t index = static_cast<size_t>(fd.get());
  const ConnId id = (next_seq_++ << kFdBits) | static_cast<uint64_t>(fd.get());
  auto c = std::make_unique<Conn>(id, fd.get(), opt_.max_frame_bytes);
  if (state.http) {
    if (Status s = AdoptHttp(c.get(), *state.http); !s.ok()) return s;
  } else {
    ws::MessageParser::Leftovers left;
    left.tail = state.parser_tail;
    left.message = state.parser_message;
    left.in_message = state.in_message;
    left.opcode = static_cast<ws::Opcode>(state.message_opcode);
    if (Status s = c->parser.Restore(std::move(left)); !s.ok()) return s;
    c->message_since_ms = state.message_since_ms;
    c->state = State::kOpen;
    c->upgraded = true;
  }
  for (const handoff::OutboundFrame& f : state.outbound) {
    c->out.Adopt(FrameRef::Copy(f.bytes), static_cast<OutboundQueue::Kind>(f.kind));
  }
  c->out.Consume(state.written);
  c->last_rx_ms = state.last_rx_ms;
  c->last_tx_ms = state.last_tx_ms;
  loop_->Attach(fd.get(), [this, id](uint32_t ev) { OnEvent(id, ev); });
  unwatch.loop = nullptr;
  if (state.address.size() == 16) {
    AddressCounts::Key key;
    std::memcpy(key.data(), state.address.data(), key.size());
    per_address_.Adopt(key);
    c->address = key;
  }
  if (index >= by_fd_.size()) by_fd_.resize(index + 1);
  Conn* raw = c.get();
  by_fd_[index] = std::move(c);
  fd.Release();
  ++live_;
  counters_.sockets.store(static_cast<int64_t>(live_), std::memory_order_relaxed);
  if (raw->state == State::kOpen) {
    ++websockets_;
    counters_.connections.store(static_cast<int64_t>(websockets_), std::memory_order_relaxed);
  }
  // A closing connection whose queue is already written still has its
  // close to make: the flush makes it.
  if (!raw->out.empty() || raw->close_after_flush) MarkDirty(raw);
  if (raw->http && !raw->http->buf.empty()) {
    // Parsed as if just read, once the loop runs: a request that is whole
    // goes to the listener after the whole hand-off is taken, not halfway
    // through it.
    adopted_bytes_.push_back(id);
    if (parse_timer_ == 0) {
      parse_timer_ = loop_->AddTimer(std::chrono::nanoseconds(0), [this] {
        parse_timer_ = 0;
        ParseAdopted();
      });
    }
  }
  UpdateAccepting();
  return id;
}

void Gateway::ParseAdopted() {
  std::vector<ConnId> ids;
  ids.swap(adopted_bytes_);
  for (ConnId id : ids) {
    Conn* c = Find(id);
    if (c == nullptr || c->state != State::kHttp || c->parsing) continue;
    c->parsing = true;
    ParseHttp(c);
    c->parsing = false;
  }
  Settle();
}

Status Gateway::AdoptHttp(Conn* c, const handoff::HttpPhase& h) {
  c->deadline_ms = h.deadline_ms;
  switch (h.end) {
    case handoff::HttpEnd::kKeepAlive:
      c->state = State::kHttp;
      c->http = std::make_unique<HttpState>();
      c->http->buf = h.received;
      c->http->requests = h.requests;
      c->http->continued = h.continued;
      return Status::Ok();
    case handoff::HttpEnd::kClose:
    case handoff::HttpEnd::kCloseLinger:
    case handoff::HttpEnd::kLingering:
      c->state = State::kClosing;
      c->input_done = true;
      c->close_after_flush = h.end != handoff::HttpEnd::kLingering;
      c->linger = h.end != handoff::HttpEnd::kClose;
      return Status::Ok();
  }
  return Status::Refused("hand-off: an unknown HTTP end");
}

}  // namespace sb::worker
