#include "supervisor/control_server.h"

#include <errno.h>
#include <spdlog/spdlog.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cmath>
#include <vector>

namespace sb::supervisor {

namespace {

namespace json = boost::json;

constexpr std::array<std::string_view, 8> kCommands = {"status", "stop",    "start",  "restart",
                                                       "scale",  "upgrade", "reload", "events"};

void AppendJson(const json::value& v, std::string& out);

void AppendObject(const json::object& o, std::string& out) {
  out += '{';
  bool first = true;
  for (const json::key_value_pair& kv : o) {
    if (!first) out += ',';
    first = false;
    out += json::serialize(kv.key());
    out += ':';
    AppendJson(kv.value(), out);
  }
  out += '}';
}

void AppendJson(const json::value& v, std::string& out) {
  switch (v.kind()) {
    case json::kind::null:
      out += "null";
      break;
    case json::kind::bool_:
      out += v.get_bool() ? "true" : "false";
      break;
    case json::kind::int64:
      out += std::to_string(v.get_int64());
      break;
    case json::kind::uint64:
      out += std::to_string(v.get_uint64());
      break;
    case json::kind::double_: {
      double d = v.get_double();
      if (!std::isfinite(d)) {
        out += "null";
        break;
      }
      char buf[32];
      auto r = std::to_chars(buf, buf + sizeof buf, d);
      std::string_view text(buf, static_cast<size_t>(r.ptr - buf));
      out += text;
      // "60.0", not "60": a reader must get a double back, as it was sent.
      if (text.find_first_of(".e") == std::string_view::npos) out += ".0";
      break;
    }
    case json::kind::string:
      out += json::serialize(v.get_string());
      break;
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const json::value& e : v.get_array()) {
        if (!first) out += ',';
        first = false;
        AppendJson(e, out);
      }
      out += ']';
      break;
    }
    case json::kind::object:
      AppendObject(v.get_object(), out);
      break;
  }
}

bool NonEmptyString(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() && !v->get_string().empty();
}

// Cut untrusted text before echoing it in an error line.
std::string Quote(std::string_view s) {
  constexpr size_t kMax = 64;
  return "'" + std::string(s.substr(0, kMax)) + (s.size() > kMax ? "...'" : "'");
}

// Best effort, for connections refused at accept: a fresh socket's buffer
// always has room for one short line.
void SendNow(int fd, const json::object& reply) {
  std::string line = EncodeControlLine(reply);
  ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)n;
}

sockaddr_un MakeAddr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Decides whether an existing file at `path` may be replaced.
Status CheckStale(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::IoError("stat " + path + ": " + strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Status::InvalidConfig("control socket path " + path + " exists and is not a socket");
  }
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return Status::IoError(std::string("socket: ") + strerror(errno));
  sockaddr_un addr = MakeAddr(path);
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ||
      errno == EAGAIN) {  // EAGAIN: a listener with a full backlog is still a listener
    return Status::Refused("another process is listening on " + path);
  }
  if (errno == ECONNREFUSED || errno == ENOENT) {
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
      return Status::IoError("remove stale socket " + path + ": " + strerror(errno));
    }
    return Status::Ok();
  }
  return Status::Refused("cannot tell whether " + path + " is in use: " + strerror(errno));
}

}  // namespace

json::object ControlError(std::string_view code, std::string_view error) {
  json::object o;
  o["ok"] = false;
  o["error"] = error;
  o["code"] = code;
  return o;
}

std::string ValidateControlRequest(const json::object& request) {
  const json::value* cmd = request.if_contains("cmd");
  if (!cmd || !cmd->is_string()) return "request needs a string \"cmd\"";
  std::string_view name = cmd->get_string();
  bool known = false;
  for (std::string_view c : kCommands) known = known || c == name;
  if (!known) {
    return "unknown cmd " + Quote(name) +
           " (expected status, stop, start, restart, scale, upgrade, reload or events)";
  }
  if (name == "stop" || name == "start" || name == "restart" || name == "scale" ||
      name == "upgrade") {
    if (!NonEmptyString(request, "id")) return "'" + std::string(name) + "' needs a string \"id\"";
  }
  if (name == "scale") {
    const json::value* n = request.if_contains("n");
    bool ok = n && ((n->is_int64() && n->get_int64() >= 0 && n->get_int64() <= kMaxScaleCount) ||
                    (n->is_uint64() && n->get_uint64() <= kMaxScaleCount));
    if (!ok) {
      return "'scale' needs an integer \"n\" between 0 and " + std::to_string(kMaxScaleCount);
    }
  }
  return "";
}

std::string EncodeControlLine(const json::value& v) {
  std::string out;
  AppendJson(v, out);
  out += '\n';
  return out;
}

std::string EncodeControlLine(const json::object& o) {
  std::string out;
  AppendObject(o, out);
  out += '\n';
  return out;
}

ControlServer::ControlServer(EventLoop& loop, std::string path, Handler handler,
                             ControlServerOptions options)
    : loop_(loop),
      path_(std::move(path)),
      handler_(std::move(handler)),
      options_(std::move(options)) {}

Result<std::unique_ptr<ControlServer>> ControlServer::Create(EventLoop& loop,
                                                             const std::string& path,
                                                             Handler handler,
                                                             ControlServerOptions options) {
  if (path.empty()) return Status::InvalidConfig("control socket path is empty");
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::InvalidConfig("control socket path too long (max " +
                                 std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                                 " bytes): " + path);
  }
  std::unique_ptr<ControlServer> s(
      new ControlServer(loop, path, std::move(handler), std::move(options)));
  Status st = s->Listen();
  if (!st.ok()) return st;
  return s;
}

Status ControlServer::Listen() {
  Status st = CheckStale(path_);
  if (!st.ok()) return st;
  listen_fd_.Reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_fd_.valid()) return Status::IoError(std::string("socket: ") + strerror(errno));
  sockaddr_un addr = MakeAddr(path_);
  if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    return Status::IoError("bind " + path_ + ": " + strerror(errno));
  }
  bound_ = true;
  struct stat sb;
  if (::stat(path_.c_str(), &sb) == 0) {
    dev_ = sb.st_dev;
    ino_ = sb.st_ino;
  }
  // Before listen(): until then nobody can connect, so the file is never
  // reachable with the umask's looser mode.
  if (::chmod(path_.c_str(), 0600) < 0) {
    return Status::IoError("chmod " + path_ + ": " + strerror(errno));
  }
  if (::listen(listen_fd_.get(), 128) < 0) {
    return Status::IoError("listen " + path_ + ": " + strerror(errno));
  }
  return loop_.Add(listen_fd_.get(), EPOLLIN, [this](uint32_t) { OnAccept(); });
}

ControlServer::~ControlServer() {
  alive_.reset();
  for (auto& [id, c] : conns_) {
    if (c->timer) loop_.Cancel(c->timer);
    loop_.Remove(c->fd.get());
  }
  conns_.clear();
  if (accept_retry_) loop_.Cancel(accept_retry_);
  if (listen_fd_.valid()) loop_.Remove(listen_fd_.get());
  struct stat sb;
  if (bound_ && ::stat(path_.c_str(), &sb) == 0 && sb.st_dev == dev_ && sb.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
}

size_t ControlServer::followers() const {
  size_t n = 0;
  for (const auto& [id, c] : conns_) n += c->phase == Phase::kFollowing;
  return n;
}

void ControlServer::OnAccept() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Admit(UniqueFd(fd));
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
      // The pending connection stays queued and would wake a level-triggered
      // loop forever: stop watching for a moment instead of spinning.
      spdlog::warn("control: accept: {}; pausing accepts for 100ms", strerror(errno));
      if (loop_.Modify(listen_fd_.get(), 0).ok()) {
        accept_retry_ = loop_.AddTimer(std::chrono::milliseconds(100), [this] {
          accept_retry_ = 0;
          (void)loop_.Modify(listen_fd_.get(), EPOLLIN);
        });
      }
    }
    return;  // EAGAIN: drained
  }
}

void ControlServer::Admit(UniqueFd fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return;
  if (cred.uid != 0 && cred.uid != ::geteuid()) {
    spdlog::warn("control: refused a connection from uid {} (pid {})", cred.uid, cred.pid);
    SendNow(fd.get(), ControlError(kCodeRefused, "permission denied"));
    return;
  }
  if (conns_.size() >= options_.max_connections) {
    SendNow(fd.get(), ControlError(kCodeBusy, "too many control connections (max " +
                                                  std::to_string(options_.max_connections) + ")"));
    return;
  }
  auto c = std::make_unique<Conn>();
  c->id = next_id_++;
  c->fd = std::move(fd);
  c->interest = EPOLLIN;
  uint64_t id = c->id;
  Status st = loop_.Add(c->fd.get(), EPOLLIN, [this, id](uint32_t ev) { OnConnEvent(id, ev); });
  if (!st.ok()) {
    spdlog::warn("control: {}", st.message());
    return;
  }
  c->timer = loop_.AddTimer(options_.request_timeout, [this, id] {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    it->second->timer = 0;
    std::string why =
        "no request line within " + std::to_string(options_.request_timeout.count()) + "ms";
    ReplyAndClose(*it->second, ControlError(kCodeInvalid, why));
  });
  conns_.emplace(id, std::move(c));
}

void ControlServer::OnConnEvent(uint64_t id, uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.phase == Phase::kReading) {
    // A hang-up still leaves queued bytes to read: the request may be whole.
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadRequest(c);
    return;
  }
  if (events & (EPOLLHUP | EPOLLERR)) {
    Close(id);  // the peer is gone; a reply still owed is dropped
    return;
  }
  if (events & EPOLLOUT) Flush(c);
}

void ControlServer::ReadRequest(Conn& c) {
  for (;;) {
    size_t room = options_.max_request_bytes + 1 - c.in.size();
    char buf[4096];
    ssize_t n = ::recv(c.fd.get(), buf, std::min(room, sizeof buf), 0);
    if (n > 0) {
      size_t old = c.in.size();
      c.in.append(buf, static_cast<size_t>(n));
      size_t nl = c.in.find('\n', old);
      if (nl != std::string::npos) {
        std::string line = c.in.substr(0, nl);
        Dispatch(c, line);
        return;
      }
      if (c.in.size() > options_.max_request_bytes) {
        ReplyAndClose(c, ControlError(kCodeInvalid, "request longer than " +
                                                        std::to_string(options_.max_request_bytes) +
                                                        " bytes"));
        return;
      }
      continue;
    }
    if (n == 0) {
      // A client that half-closes after its request needs no '\n'.
      if (c.in.empty()) {
        Close(c.id);
      } else {
        std::string line = std::move(c.in);
        Dispatch(c, line);
      }
      return;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) Close(c.id);
    return;
  }
}

void ControlServer::Dispatch(Conn& c, std::string_view line) {
  if (c.timer) loop_.Cancel(c.timer);
  c.timer = 0;
  c.in.clear();
  c.in.shrink_to_fit();
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

  json::error_code ec;
  json::value v;
  try {
    v = json::parse(line, ec);
  } catch (const std::exception& e) {  // allocation failure; parse reports the rest in ec
    ReplyAndClose(c, ControlError(kCodeInvalid, std::string("request rejected: ") + e.what()));
    return;
  }
  if (ec) {
    ReplyAndClose(c, ControlError(kCodeInvalid, "request is not valid JSON: " + ec.message()));
    return;
  }
  if (!v.is_object()) {
    ReplyAndClose(c, ControlError(kCodeInvalid, "request must be a JSON object"));
    return;
  }
  const json::object& request = v.get_object();
  std::string why = ValidateControlRequest(request);
  if (!why.empty()) {
    ReplyAndClose(c, ControlError(kCodeInvalid, why));
    return;
  }
  SetInterest(c, 0);  // from now on only hang-ups (always reported) and writes matter
  if (request.at("cmd").get_string() == "events") {
    c.phase = Phase::kFollowing;
    json::object ok;
    ok["ok"] = true;
    Queue(c, EncodeControlLine(ok));
    return;
  }
  c.phase = Phase::kWaiting;
  std::weak_ptr<int> alive = alive_;
  uint64_t id = c.id;
  // Last use of `c`: the handler may reply at once, which can close it.
  handler_(request, [this, alive, id](json::object reply) {
    if (alive.expired()) return;
    DeliverReply(id, reply);
  });
}

void ControlServer::DeliverReply(uint64_t id, const json::object& reply) {
  auto it = conns_.find(id);
  if (it == conns_.end() || it->second->phase != Phase::kWaiting) return;
  ReplyAndClose(*it->second, reply);
}

void ControlServer::ReplyAndClose(Conn& c, const json::object& reply) {
  c.phase = Phase::kReplying;
  SetInterest(c, 0);
  Queue(c, EncodeControlLine(reply));
}

bool ControlServer::Queue(Conn& c, std::string_view data) {
  if (c.out_off > 0 && c.out_off >= c.out.size() / 2) {
    c.out.erase(0, c.out_off);
    c.out_off = 0;
  }
  bool was_idle = c.pending() == 0;
  c.out.append(data);
  return was_idle ? Flush(c) : true;  // otherwise EPOLLOUT is already armed
}

bool ControlServer::Flush(Conn& c) {
  while (c.pending() > 0) {
    ssize_t n =
        ::send(c.fd.get(), c.out.data() + c.out_off, c.pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c.out_off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      SetInterest(c, EPOLLOUT);
      return true;
    }
    Close(c.id);  // EPIPE, ECONNRESET: the peer is gone
    return false;
  }
  c.out.clear();
  c.out_off = 0;
  if (c.phase == Phase::kReplying) {
    Close(c.id);
    return false;
  }
  SetInterest(c, 0);
  return true;
}

void ControlServer::SetInterest(Conn& c, uint32_t events) {
  if (c.interest == events) return;
  if (loop_.Modify(c.fd.get(), events).ok()) c.interest = events;
}

void ControlServer::Close(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  if (it->second->timer) loop_.Cancel(it->second->timer);
  loop_.Remove(it->second->fd.get());
  conns_.erase(it);  // closes the fd
}

void ControlServer::PublishEvent(std::string_view json_line) {
  std::string line(json_line);
  if (line.empty() || line.back() != '\n') line += '\n';
  std::vector<uint64_t> ids;
  for (const auto& [id, c] : conns_) {
    if (c->phase == Phase::kFollowing) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    Conn& c = *it->second;
    if (c.pending() + line.size() > options_.follower_buffer_bytes) {
      spdlog::warn("control: an events follower fell {} bytes behind; disconnected", c.pending());
      Close(id);
      continue;
    }
    Queue(c, line);
  }
}

}  // namespace sb::supervisor
