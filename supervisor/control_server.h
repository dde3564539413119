// ControlServer: the daemon's end of the control socket (docs/CONTROL.md).
//
// Owns: the listening unix stream socket at node.control (mode 0600, peers
// checked with SO_PEERCRED), every accepted connection with its bounded input
// and output buffers, the request deadline timers, and the `events` followers.
// It frames, parses and validates requests and writes replies; it does not
// decide anything: well-formed requests go to the daemon's Handler, which
// answers through a Reply callback. Runs on the daemon's one EventLoop and
// never blocks; every callback comes from that loop's thread.
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/unique_fd.h"

namespace sb::supervisor {

// The `code` of an error reply.
inline constexpr std::string_view kCodeRefused = "refused";     // not allowed, or not now
inline constexpr std::string_view kCodeInvalid = "invalid";     // malformed request, bad config
inline constexpr std::string_view kCodeNotFound = "not_found";  // no child with that id
inline constexpr std::string_view kCodeBusy = "busy";           // too many connections

// Largest request line, without its '\n'.
inline constexpr size_t kMaxControlRequestBytes = 64 * 1024;
// Largest `n` of a scale request: a replica set or simple_one_for_one
// supervisor never holds more children than this.
inline constexpr int kMaxScaleCount = 10000;

// {"ok":false,"error":error,"code":code}.
boost::json::object ControlError(std::string_view code, std::string_view error);

// Empty if `request` is a well-formed control request, else the reason it is
// not (an operator-facing line). Checks the command name and the argument
// types: stop/start/restart need a non-empty string "id"; scale needs "id" and
// an integer "n" with 0 <= n <= INT_MAX. Unknown extra keys are ignored.
std::string ValidateControlRequest(const boost::json::object& request);

// One JSON text on one line, '\n' included. Like boost::json::serialize, but
// doubles are printed in their shortest round-trip form ("12.3", "60.0";
// Boost would print "1.23E1", "6E1"), still parsed back as doubles; NaN and
// infinities become null.
std::string EncodeControlLine(const boost::json::value& v);
std::string EncodeControlLine(const boost::json::object& o);  // without copying into a value

struct ControlServerOptions {
  size_t max_connections = 64;  // open connections, events followers included
  size_t max_request_bytes = kMaxControlRequestBytes;
  std::chrono::milliseconds request_timeout{10000};  // to receive the request line
  size_t follower_buffer_bytes = 1 << 20;            // unsent event bytes per follower
};

class ControlServer {
 public:
  // Call at most once, now (inside the Handler) or later, on the loop's
  // thread. Safe to call after the client has gone or the server was
  // destroyed: the reply is then dropped. Extra calls are ignored.
  using Reply = std::function<void(boost::json::object reply)>;
  // Gets every request that passed ValidateControlRequest, except `events`,
  // which the server serves itself. `request` lives only during the call.
  using Handler = std::function<void(const boost::json::object& request, Reply reply)>;

  // Binds `path` and watches it on `loop`, which must outlive the server. A
  // stale socket file (nobody listening) is replaced; Status::Refused if
  // another process is listening there; InvalidConfig if `path` is too long
  // or exists and is not a socket. Only peers with the daemon's effective uid
  // or root are served; others get a `refused` reply and are closed.
  static Result<std::unique_ptr<ControlServer>> Create(EventLoop& loop, const std::string& path,
                                                       Handler handler,
                                                       ControlServerOptions options = {});
  // Closes every connection and unlinks `path` (if it is still our socket).
  // Not to be called from inside the Handler.
  ~ControlServer();

  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Queues one event line (the '\n' is added if missing) to every `events`
  // follower. Never blocks: a follower whose unsent bytes would exceed
  // options.follower_buffer_bytes is disconnected instead (it can reconnect).
  void PublishEvent(std::string_view json_line);

  size_t connections() const { return conns_.size(); }
  size_t followers() const;
  const std::string& path() const { return path_; }

 private:
  // A connection moves kReading -> (kWaiting ->) kReplying -> closed, or
  // kReading -> kFollowing -> closed. Nothing is read after the request line.
  enum class Phase {
    kReading,    // collecting the request line; deadline timer armed
    kWaiting,    // the Handler has it; only hang-ups are watched
    kReplying,   // flushing the one reply, then close
    kFollowing,  // `events`: streaming until the peer goes or falls behind
  };
  struct Conn {
    uint64_t id = 0;
    UniqueFd fd;
    Phase phase = Phase::kReading;
    uint32_t interest = 0;  // epoll events currently registered
    std::string in;         // request bytes so far
    std::string out;        // unsent bytes start at out_off
    size_t out_off = 0;
    EventLoop::TimerId timer = 0;
    size_t pending() const { return out.size() - out_off; }
  };

  ControlServer(EventLoop& loop, std::string path, Handler handler, ControlServerOptions options);
  Status Listen();
  void OnAccept();
  void Admit(UniqueFd fd);
  void OnConnEvent(uint64_t id, uint32_t events);
  void ReadRequest(Conn& c);
  void Dispatch(Conn& c, std::string_view line);
  void DeliverReply(uint64_t id, const boost::json::object& reply);
  // Sends a final reply and closes once it is out.
  void ReplyAndClose(Conn& c, const boost::json::object& reply);
  // Queues bytes and tries to send them. False if the connection was closed.
  bool Queue(Conn& c, std::string_view data);
  bool Flush(Conn& c);
  void SetInterest(Conn& c, uint32_t events);
  void Close(uint64_t id);

  EventLoop& loop_;
  std::string path_;
  Handler handler_;
  ControlServerOptions options_;
  UniqueFd listen_fd_;
  bool bound_ = false;
  uint64_t dev_ = 0, ino_ = 0;           // our socket file, so we unlink only our own
  EventLoop::TimerId accept_retry_ = 0;  // set while accept is paused (out of fds)
  uint64_t next_id_ = 1;                 // never reused: a late Reply cannot hit a new client
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // Replies hold a weak_ptr
};

}  // namespace sb::supervisor
