// WsClient: one non-blocking client WebSocket connection of the load generator.
//
// Owns: its socket, the upgrade handshake (request with a random
// Sec-WebSocket-Key, the 101 response checked against AcceptKey), masked
// outgoing frames and the incoming frame parser (client role). Does not: own
// an event loop, decide what to send, or retry. The caller's single-threaded
// epoll loop registers the socket through this class (data.u64 = `tag`) and
// hands it every readiness event; all objects live in the caller's vector, so
// the struct stays small (a few hundred bytes per idle connection).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "protocol/websocket.h"

namespace sb::bench {

// A small, fast, non-cryptographic generator for mask keys and handshake keys.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed ? seed : 0x9e3779b97f4a7c15ULL) {}
  uint64_t Next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }

 private:
  uint64_t s_;
};

class WsClient {
 public:
  enum class State : uint8_t { kNew, kConnecting, kUpgrading, kOpen, kClosed };
  // Why a connection ended (kNone while it lives).
  enum class End : uint8_t {
    kNone,
    kConnectFailed,   // socket/bind/connect or SO_ERROR
    kUpgradeRefused,  // an HTTP status other than 101 (status in http_status())
    kBadAccept,       // 101 without the right Sec-WebSocket-Accept
    kProtocolError,   // the server's frames broke RFC 6455
    kServerClose,     // a close frame (code in close_code())
    kPeerGone,        // EOF or a socket error without a close frame
    kLocalClose,      // Close() by the caller
  };

  // Lives in place (a vector sized once): neither copied nor moved.
  WsClient() = default;
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;
  ~WsClient() { Close(end_); }

  // Starts a non-blocking connect from `source` (port 0) to `dest` and
  // registers the socket on `epfd` with data.u64 = `tag`. `host` is the Host
  // header. Returns false (state kClosed, End kConnectFailed) on failure.
  bool Connect(int epfd, uint64_t tag, const sockaddr_in& source, const sockaddr_in& dest,
               std::string_view host, Rng& rng);

  // Handles epoll `events` for this socket: finishes the connect, sends the
  // upgrade request, checks the response, then parses frames and calls
  // `on_message(const ws::Event&)` for each text/binary message. Pings are
  // answered; a close frame ends the connection. `buf` is scratch space.
  template <typename F>
  void OnEvents(int epfd, uint32_t events, char* buf, size_t buf_size, F&& on_message);

  // Queues one masked text frame and writes as much as the socket takes.
  void SendText(int epfd, std::string_view text, Rng& rng);
  // Queues one masked text frame without writing (then Flush, once per batch).
  void QueueText(std::string_view text, Rng& rng);
  // Writes queued bytes until the socket would block; EPOLLOUT while some remain.
  void Flush(int epfd);

  // Closes the socket (no close handshake: the benchmark tears down fast).
  void Close(End why = End::kLocalClose);
  // Closes the socket and forgets the connection (state kNew, End kNone), so
  // that Connect may be called again: a reconnect in the same slot.
  void Reset();

  State state() const { return state_; }
  End end() const { return end_; }
  uint16_t http_status() const { return http_status_; }
  uint16_t close_code() const { return close_code_; }
  size_t pending_out() const { return out_.size() - out_off_; }

 private:
  using Callback = void (*)(void* ctx, const ws::Event& ev);
  void OnEventsImpl(int epfd, uint32_t events, char* buf, size_t buf_size, Callback cb, void* ctx);
  // Parses the buffered HTTP response; returns false while incomplete.
  bool TakeUpgradeResponse(Callback cb, void* ctx);
  void FeedFrames(char* data, size_t size, Callback cb, void* ctx);
  void UpdateInterest(int epfd);

  int fd_ = -1;
  State state_ = State::kNew;
  End end_ = End::kNone;
  bool want_out_ = false;  // EPOLLOUT currently registered
  uint16_t http_status_ = 0;
  uint16_t close_code_ = 0;
  uint64_t tag_ = 0;
  uint32_t out_off_ = 0;
  std::string out_;     // bytes not yet written, from out_off_
  std::string in_;      // the HTTP response, until the upgrade
  std::string accept_;  // the expected Sec-WebSocket-Accept, until the upgrade
  ws::MessageParser parser_{ws::Role::kClient, 1 << 24};
  Rng* rng_ = nullptr;
};

template <typename F>
void WsClient::OnEvents(int epfd, uint32_t events, char* buf, size_t buf_size, F&& on_message) {
  using Fn = std::remove_reference_t<F>;
  auto trampoline = [](void* ctx, const ws::Event& ev) { (*static_cast<Fn*>(ctx))(ev); };
  OnEventsImpl(epfd, events, buf, buf_size, trampoline,
               const_cast<void*>(static_cast<const volatile void*>(&on_message)));
}

}  // namespace sb::bench
