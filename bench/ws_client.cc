#include "bench/ws_client.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <cstring>

namespace sb::bench {

namespace {

std::string Base64(const uint8_t* p, size_t n) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = static_cast<uint32_t>(p[i]) << 16;
    if (i + 1 < n) v |= static_cast<uint32_t>(p[i + 1]) << 8;
    if (i + 2 < n) v |= p[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < n ? kAlphabet[(v >> 6) & 63] : '=';
    out += i + 2 < n ? kAlphabet[v & 63] : '=';
  }
  return out;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

bool WsClient::Connect(int epfd, uint64_t tag, const sockaddr_in& source, const sockaddr_in& dest,
                       std::string_view host, Rng& rng) {
  rng_ = &rng;
  tag_ = tag;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    Close(End::kConnectFailed);
    return false;
  }
  int one = 1;
  // The port is then chosen at connect() for the whole 4-tuple, so a source
  // address is not limited to one ephemeral range for every destination.
  ::setsockopt(fd_, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::bind(fd_, reinterpret_cast<const sockaddr*>(&source), sizeof source) < 0 ||
      (::connect(fd_, reinterpret_cast<const sockaddr*>(&dest), sizeof dest) < 0 &&
       errno != EINPROGRESS)) {
    Close(End::kConnectFailed);
    return false;
  }
  uint8_t raw[16];
  for (int i = 0; i < 2; ++i) {
    uint64_t r = rng.Next();
    std::memcpy(raw + 8 * i, &r, 8);
  }
  std::string key = Base64(raw, sizeof raw);
  accept_ = ws::AcceptKey(key);
  out_ = "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: ";
  out_ += host;
  out_ +=
      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: ";
  out_ += key;
  out_ += "\r\n\r\n";
  state_ = State::kConnecting;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u64 = tag_;
  want_out_ = true;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd_, &ev) < 0) {
    Close(End::kConnectFailed);
    return false;
  }
  return true;
}

void WsClient::OnEventsImpl(int epfd, uint32_t events, char* buf, size_t buf_size, Callback cb,
                            void* ctx) {
  if (state_ == State::kConnecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
      Close(End::kConnectFailed);
      return;
    }
    state_ = State::kUpgrading;
  }
  if (state_ != State::kUpgrading && state_ != State::kOpen) return;
  if (pending_out() > 0) Flush(epfd);
  if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
  // Bounded reads per event keep one busy socket from starving the others.
  for (int i = 0; i < 8 && (state_ == State::kUpgrading || state_ == State::kOpen); ++i) {
    ssize_t n = ::recv(fd_, buf, buf_size, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    if (n <= 0) {
      Close(End::kPeerGone);
      break;
    }
    if (state_ == State::kUpgrading) {
      in_.append(buf, static_cast<size_t>(n));
      if (!TakeUpgradeResponse(cb, ctx)) continue;
    } else {
      FeedFrames(buf, static_cast<size_t>(n), cb, ctx);
    }
    if (static_cast<size_t>(n) < buf_size) break;
  }
  if (pending_out() > 0 && (state_ == State::kUpgrading || state_ == State::kOpen)) Flush(epfd);
}

bool WsClient::TakeUpgradeResponse(Callback cb, void* ctx) {
  size_t end = in_.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (in_.size() > 16384) Close(End::kUpgradeRefused);
    return false;
  }
  std::string_view head(in_.data(), end);
  size_t eol = head.find("\r\n");
  std::string_view status_line = head.substr(0, eol);
  if (status_line.size() >= 12 && status_line.substr(0, 5) == "HTTP/") {
    http_status_ = static_cast<uint16_t>(std::atoi(std::string(status_line.substr(9, 3)).c_str()));
  }
  if (http_status_ != 101) {
    Close(End::kUpgradeRefused);
    return false;
  }
  bool accepted = false;
  while (eol != std::string_view::npos) {
    head.remove_prefix(eol + 2);
    eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (EqualsNoCase(Trim(line.substr(0, colon)), "Sec-WebSocket-Accept")) {
      accepted = Trim(line.substr(colon + 1)) == accept_;
    }
  }
  if (!accepted) {
    Close(End::kBadAccept);
    return false;
  }
  std::string rest = in_.substr(end + 4);
  std::string().swap(in_);
  std::string().swap(accept_);
  state_ = State::kOpen;
  if (!rest.empty()) FeedFrames(rest.data(), rest.size(), cb, ctx);
  return true;
}

void WsClient::FeedFrames(char* data, size_t size, Callback cb, void* ctx) {
  bool closed = false;
  uint16_t error = parser_.Feed(data, size, [&](const ws::Event& ev) {
    if (closed || state_ != State::kOpen) return;
    switch (ev.kind) {
      case ws::Event::Kind::kText:
      case ws::Event::Kind::kBinary:
        cb(ctx, ev);
        break;
      case ws::Event::Kind::kPing:
        ws::AppendClientFrame(out_, ws::Opcode::kPong, ev.payload,
                              static_cast<uint32_t>(rng_->Next()));
        break;
      case ws::Event::Kind::kPong:
        break;
      case ws::Event::Kind::kClose:
        close_code_ = ev.close_code;
        closed = true;
        break;
    }
  });
  if (error != 0) {
    Close(End::kProtocolError);
  } else if (closed) {
    Close(End::kServerClose);
  }
}

void WsClient::SendText(int epfd, std::string_view text, Rng& rng) {
  QueueText(text, rng);
  Flush(epfd);
}

void WsClient::QueueText(std::string_view text, Rng& rng) {
  if (state_ != State::kOpen) return;
  ws::AppendClientFrame(out_, ws::Opcode::kText, text, static_cast<uint32_t>(rng.Next()));
}

void WsClient::Flush(int epfd) {
  if (fd_ < 0) return;
  while (out_off_ < out_.size()) {
    ssize_t n = ::send(fd_, out_.data() + out_off_, out_.size() - out_off_, MSG_NOSIGNAL);
    if (n > 0) {
      out_off_ += static_cast<uint32_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      break;
    } else {
      Close(End::kPeerGone);
      return;
    }
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  }
  UpdateInterest(epfd);
}

void WsClient::UpdateInterest(int epfd) {
  bool want = pending_out() > 0;
  if (want == want_out_ || fd_ < 0) return;
  epoll_event ev{};
  ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
  ev.data.u64 = tag_;
  if (::epoll_ctl(epfd, EPOLL_CTL_MOD, fd_, &ev) == 0) want_out_ = want;
}

void WsClient::Close(End why) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  state_ = State::kClosed;
  if (end_ == End::kNone) end_ = why;
  std::string().swap(out_);
  out_off_ = 0;
}

void WsClient::Reset() {
  Close();
  state_ = State::kNew;
  end_ = End::kNone;
  want_out_ = false;
  http_status_ = 0;
  close_code_ = 0;
  std::string().swap(in_);
  std::string().swap(accept_);
  parser_ = ws::MessageParser(ws::Role::kClient, 1 << 24);
}

}  // namespace sb::bench
