#include "supervisor/api_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/exit_codes.h"
#include "common/key_file.h"
#include "common/unique_fd.h"

namespace sb::supervisor {

namespace {

namespace json = boost::json;

constexpr std::string_view kProgram = "switchboard: ";
constexpr size_t kMaxReplyBytes = 1 << 20;

std::string JsonString(std::string_view s) { return json::serialize(json::value(json::string(s))); }

// Reads until the peer closes (the request asked for "Connection: close").
Result<ApiReply> ReadReply(int fd) {
  std::string data;
  char buf[16384];
  while (data.size() < kMaxReplyBytes) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError(std::string("reading the answer: ") + strerror(errno));
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  const size_t end = data.find("\r\n\r\n");
  if (!data.starts_with("HTTP/1.") || data.size() < 12 || end == std::string::npos) {
    return Status::IoError("not an HTTP answer");
  }
  ApiReply reply;
  reply.status = std::atoi(data.substr(9, 3).c_str());
  reply.body = data.substr(end + 4);
  return reply;
}

}  // namespace

Result<ApiUrl> ParseApiUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  auto bad = [&](std::string_view why) {
    return Status::InvalidConfig("expected http://HOST:PORT, e.g. \"http://127.0.0.1:4000\" (" +
                                 std::string(why) + "), found '" + std::string(url) + "'");
  };
  if (!url.starts_with(kScheme)) return bad("only http:// is spoken");
  std::string_view rest = url.substr(kScheme.size());
  if (rest.ends_with("/")) rest.remove_suffix(1);
  ApiUrl out;
  std::string_view port;
  if (rest.starts_with("[")) {
    const size_t close = rest.find(']');
    if (close == std::string_view::npos || rest.substr(close + 1, 1) != ":") return bad("bad [v6]");
    out.host = std::string(rest.substr(1, close - 1));
    port = rest.substr(close + 2);
    in6_addr a6;
    if (inet_pton(AF_INET6, out.host.c_str(), &a6) != 1) return bad("not an IPv6 address");
  } else {
    const size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("no port");
    out.host = std::string(rest.substr(0, colon));
    port = rest.substr(colon + 1);
    in_addr a4;
    if (out.host != "localhost" && inet_pton(AF_INET, out.host.c_str(), &a4) != 1) {
      return bad("the host must be numeric or localhost");
    }
  }
  if (port.empty() || port.size() > 5) return bad("bad port");
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return bad("bad port");
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p == 0 || p > 65535) return bad("bad port");
  out.port = static_cast<uint16_t>(p);
  return out;
}

Result<std::string> ReadApiKeyFile(const std::string& path) {
  // The shards' rule (worker/http_api.h, kMinApiKeyBytes): a key they
  // would refuse is refused here first.
  return ReadPrivateKeyFile(path, 16);
}

Status EnsureApiKeyFile(const std::string& path) {
  unsigned char bytes[32];
  if (::getrandom(bytes, sizeof bytes, 0) != sizeof bytes) {
    return Status::IoError("API key: no randomness");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string key;
  for (unsigned char b : bytes) {
    key.push_back(kHex[b >> 4]);
    key.push_back(kHex[b & 15]);
  }
  key.push_back('\n');
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) {
    if (errno != EEXIST)
      return Status::IoError("create API key file " + path + ": " + strerror(errno));
    Result<std::string> existing = ReadApiKeyFile(path);
    return existing.ok() ? Status::Ok() : existing.status();
  }
  if (::write(fd.get(), key.data(), key.size()) != static_cast<ssize_t>(key.size())) {
    const std::string why = strerror(errno);
    ::unlink(path.c_str());
    return Status::IoError("write API key file " + path + ": " + why);
  }
  return Status::Ok();
}

namespace {

// One TCP connection to `url` with send and receive timeouts.
Result<UniqueFd> Connect(const ApiUrl& url, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(url.port);
  if (int rc = ::getaddrinfo(url.host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return Status::IoError("resolving " + url.host + ": " + gai_strerror(rc));
  }
  UniqueFd fd;
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && !fd.valid(); a = a->ai_next) {
    UniqueFd s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!s.valid()) continue;
    timeval tv{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
               .tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (::connect(s.get(), a->ai_addr, a->ai_addrlen) == 0) {
      fd = std::move(s);
    } else {
      why = strerror(errno);
    }
  }
  ::freeaddrinfo(found);
  if (!fd.valid()) {
    return Status::IoError("connecting to " + url.host + ":" + port + ": " + why);
  }
  return fd;
}

Result<ApiReply> Exchange(const ApiUrl& url, const std::string& request,
                          std::chrono::milliseconds timeout) {
  Result<UniqueFd> fd = Connect(url, timeout);
  if (!fd.ok()) return fd.status();
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd->get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::IoError(std::string("sending the request: ") + strerror(errno));
    sent += static_cast<size_t>(n);
  }
  return ReadReply(fd->get());
}

}  // namespace

Result<ApiReply> ApiPost(const ApiUrl& url, std::string_view path, const std::string& key,
                         std::string_view body, std::chrono::milliseconds timeout) {
  const std::string port = std::to_string(url.port);
  std::string request =
      "POST " + std::string(path) + " HTTP/1.1\r\nHost: " + url.host + ":" + port +
      "\r\nAuthorization: Bearer " + key +
      "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n\r\n";
  request += body;
  return Exchange(url, request, timeout);
}

Result<ApiReply> HttpGet(const ApiUrl& url, std::string_view path,
                         std::chrono::milliseconds timeout) {
  // HTTP/1.0: the answer comes whole, never chunked, and the server closes.
  return Exchange(url,
                  "GET " + std::string(path) + " HTTP/1.0\r\nHost: " + url.host + ":" +
                      std::to_string(url.port) + "\r\n\r\n",
                  timeout);
}

int RunPublish(const PublishArgs& args, std::ostream& out, std::ostream& err,
               std::chrono::milliseconds timeout) {
  boost::system::error_code ec;
  (void)json::parse(args.payload_json, ec);
  if (ec) {
    err << kProgram << "JSON is not valid JSON: " << ec.message() << "\n";
    return kExitUsage;
  }
  Result<ApiUrl> url = ParseApiUrl(args.url);
  if (!url.ok()) {
    err << kProgram << "node.api.url: " << url.status().message() << "\n";
    return kExitUsage;
  }
  Result<std::string> key = ReadApiKeyFile(args.key_file);
  if (!key.ok()) {
    err << kProgram << key.status().message() << "\n";
    return kExitUsage;
  }
  // The payload goes as given, byte for byte.
  std::string body = "{\"topic\":" + JsonString(args.topic) +
                     ",\"event\":" + JsonString(args.event) + ",\"payload\":" + args.payload_json;
  if (args.idempotency_key) body += ",\"idempotency_key\":" + JsonString(*args.idempotency_key);
  body += "}";
  Result<ApiReply> reply = ApiPost(*url, "/api/publish", *key, body, timeout);
  if (!reply.ok()) {
    err << kProgram << "publish failed: " << reply.status().message() << "\n";
    return kExitFailure;
  }
  if (reply->status != 200) {
    std::string message = reply->body;
    json::value v = json::parse(reply->body, ec);
    if (!ec && v.is_object()) {
      if (const json::value* e = v.as_object().if_contains("error"); e && e->is_object()) {
        const json::object& o = e->as_object();
        const json::value* m = o.if_contains("message");
        const json::value* c = o.if_contains("code");
        if (m && m->is_string() && c && c->is_string()) {
          message = std::string(c->get_string()) + ": " + std::string(m->get_string());
        }
      }
    }
    err << kProgram << "publish refused (HTTP " << reply->status << "): " << message << "\n";
    return kExitFailure;
  }
  out << reply->body << "\n";
  return kExitOk;
}

}  // namespace sb::supervisor
