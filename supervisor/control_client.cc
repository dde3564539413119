#include "supervisor/control_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <optional>

#include "common/mono_time.h"
#include "common/unique_fd.h"
#include "supervisor/control_server.h"

namespace sb::supervisor {

namespace {

namespace json = boost::json;
using Clock = MonoClock;

// Replies carry a whole tree; events are short. Both caps only stop a
// runaway peer from exhausting our memory.
constexpr size_t kMaxReplyBytes = 64 << 20;
constexpr size_t kMaxEventBytes = 1 << 20;
constexpr std::chrono::milliseconds kEventsAckTimeout{10 * 1000};

std::string NotRunning(const std::string& path) {
  return "daemon not running (no control socket at " + path + ")";
}

// Milliseconds left for poll(); -1 (forever) without a deadline.
int Remaining(std::optional<Clock::time_point> deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, INT32_MAX));
}

Status TimedOut(std::chrono::milliseconds timeout) {
  return Status::IoError("no reply from the daemon within " + std::to_string(timeout.count()) +
                         "ms");
}

Result<UniqueFd> Connect(const std::string& path, std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (path.empty()) return Status::InvalidConfig("control socket path is empty");
  if (path.size() >= sizeof addr.sun_path) {
    return Status::InvalidConfig("control socket path too long: " + path);
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::IoError(std::string("socket: ") + strerror(errno));
  // A blocking unix connect waits only while the listener's backlog is full,
  // for at most the send timeout.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  if (tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1000;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    switch (errno) {
      case ENOENT:
      case ECONNREFUSED:
      case ENOTDIR:
        return Status::NotFound(NotRunning(path));
      case EACCES:
      case EPERM:
        return Status::Refused("permission denied: " + path);
      case EAGAIN:
      case EINPROGRESS:
        return Status::IoError("timed out connecting to " + path + " (daemon busy)");
      default:
        return Status::IoError("connect " + path + ": " + strerror(errno));
    }
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return Status::IoError(std::string("fcntl: ") + strerror(errno));
  }
  return fd;
}

// Sends all of `data`. A peer that already closed is not an error here: it
// may have answered first (busy, permission denied), so the caller reads.
Status SendAll(int fd, std::string_view data, Clock::time_point deadline,
               std::chrono::milliseconds timeout) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return Status::Ok();
    if (errno != EAGAIN) return Status::IoError(std::string("send: ") + strerror(errno));
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, Remaining(deadline));
    if (r == 0) return TimedOut(timeout);
    if (r < 0 && errno != EINTR) return Status::IoError(std::string("poll: ") + strerror(errno));
  }
  return Status::Ok();
}

// Reads one line into `line` (without '\n'), keeping any bytes after it in
// `buf` for the next call. False at end of stream with nothing buffered; a
// last line without '\n' is returned as a line.
class LineReader {
 public:
  LineReader(int fd, size_t max_line) : fd_(fd), max_line_(max_line) {}
  void set_max_line(size_t n) { max_line_ = n; }

  Result<bool> Next(std::string& line, std::optional<Clock::time_point> deadline,
                    std::chrono::milliseconds timeout) {
    size_t scanned = 0;
    for (;;) {
      size_t nl = buf_.find('\n', scanned);
      if (nl != std::string::npos) {
        line.assign(buf_, 0, nl);
        buf_.erase(0, nl + 1);
        return true;
      }
      scanned = buf_.size();
      if (buf_.size() > max_line_) {
        return Status::IoError("line from the daemon longer than " + std::to_string(max_line_) +
                               " bytes");
      }
      if (eof_) {
        if (buf_.empty()) return false;
        line = std::move(buf_);
        buf_.clear();
        return true;
      }
      char chunk[16384];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n > 0) {
        buf_.append(chunk, static_cast<size_t>(n));
        continue;
      }
      // ECONNRESET comes after every byte the daemon sent has been read: the
      // daemon closed without reading all we sent, which is fine.
      if (n == 0 || errno == ECONNRESET) {
        eof_ = true;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return Status::IoError(std::string("recv: ") + strerror(errno));
      pollfd p{fd_, POLLIN, 0};
      int r = ::poll(&p, 1, Remaining(deadline));
      if (r == 0) return TimedOut(timeout);
      if (r < 0 && errno != EINTR) return Status::IoError(std::string("poll: ") + strerror(errno));
    }
  }

 private:
  int fd_;
  size_t max_line_;
  std::string buf_;
  bool eof_ = false;
};

Result<json::object> ParseReply(std::string_view line) {
  json::error_code ec;
  json::value v;
  try {
    v = json::parse(line, ec);
  } catch (const std::exception& e) {
    return Status::IoError(std::string("reply from the daemon: ") + e.what());
  }
  if (ec) return Status::IoError("reply from the daemon is not valid JSON: " + ec.message());
  if (!v.is_object()) return Status::IoError("reply from the daemon is not a JSON object");
  return std::move(v.get_object());
}

// Connects, sends `request` and reads the first reply line.
Result<json::object> Exchange(const std::string& path, const json::object& request,
                              std::chrono::milliseconds timeout, UniqueFd& fd_out,
                              std::optional<LineReader>& reader) {
  std::string line = EncodeControlLine(request);
  if (line.size() - 1 > kMaxControlRequestBytes) {
    return Status::InvalidConfig("request longer than " + std::to_string(kMaxControlRequestBytes) +
                                 " bytes");
  }
  auto deadline = Clock::now() + timeout;
  auto fd = Connect(path, timeout);
  if (!fd.ok()) return fd.status();
  Status s = SendAll(fd->get(), line, deadline, timeout);
  if (!s.ok()) return s;
  reader.emplace(fd->get(), kMaxReplyBytes);
  std::string reply;
  auto got = reader->Next(reply, deadline, timeout);
  if (!got.ok()) return got.status();
  if (!*got) return Status::IoError("the daemon closed the connection without a reply");
  fd_out = std::move(fd.value());
  return ParseReply(reply);
}

}  // namespace

Result<json::object> ControlCall(const std::string& path, const json::object& request,
                                 std::chrono::milliseconds timeout) {
  UniqueFd fd;
  std::optional<LineReader> reader;
  return Exchange(path, request, timeout, fd, reader);
}

Status FollowEvents(const std::string& path,
                    const std::function<bool(std::string_view line)>& on_line) {
  UniqueFd fd;
  std::optional<LineReader> reader;
  json::object request;
  request["cmd"] = "events";
  auto ack = Exchange(path, request, kEventsAckTimeout, fd, reader);
  if (!ack.ok()) return ack.status();
  const json::value* ok = ack->if_contains("ok");
  if (!ok || !ok->is_bool() || !ok->get_bool()) {
    const json::value* err = ack->if_contains("error");
    return Status::Refused(err && err->is_string() ? std::string(err->get_string())
                                                   : "the daemon refused to stream events");
  }
  // The same reader: bytes that arrived with the acknowledgement belong to
  // the stream. Event lines are short; the cap keeps a runaway one bounded.
  reader->set_max_line(kMaxEventBytes);
  std::string line;
  for (;;) {
    auto got = reader->Next(line, std::nullopt, std::chrono::milliseconds(0));
    if (!got.ok()) return got.status();
    if (!*got) return Status::Ok();
    if (!on_line(line)) return Status::Ok();
  }
}

}  // namespace sb::supervisor
