#include "common/metrics_endpoint.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "common/unique_fd.h"
#include "prometheus/exposer.h"

namespace sb {

namespace {

struct HostPort {
  std::string host;  // without the brackets of "[v6]:port"
  std::string port;
  bool v6 = false;
};

std::optional<HostPort> SplitHostPort(const std::string& listen) {
  HostPort hp;
  size_t colon;
  if (!listen.empty() && listen.front() == '[') {
    size_t close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
      return std::nullopt;
    }
    hp.host = listen.substr(1, close - 1);
    hp.v6 = true;
    colon = close + 1;
  } else {
    colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0) return std::nullopt;
    hp.host = listen.substr(0, colon);
    if (hp.host.find(':') != std::string::npos) return std::nullopt;  // v6 without brackets
  }
  hp.port = listen.substr(colon + 1);
  if (hp.port.empty() || hp.port.size() > 5 ||
      !std::all_of(hp.port.begin(), hp.port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(hp.port) > 65535) {
    return std::nullopt;
  }
  return hp;
}

// civetweb reports only "null context ... Possible problem binding to port"
// (its log callback would need civetweb linked directly). After it failed,
// bind the same address ourselves to name the errno; the race with another
// process only affects the wording of an error that already happened.
std::string WhyBindFails(const HostPort& hp) {
  addrinfo hints{};
  hints.ai_family = hp.v6 ? AF_INET6 : AF_INET;  // civetweb resolves names to IPv4
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
    return gai_strerror(rc);
  }
  std::string why;
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (!fd.valid()) {
      why = strerror(errno);
      continue;
    }
    int one = 1;  // as civetweb does, so TIME_WAIT leftovers do not count
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0) {
      why = strerror(errno);
      continue;
    }
    why.clear();
    break;
  }
  ::freeaddrinfo(res);
  return why;
}

// Where a connection reaches the listener: its own address, loopback for a
// wildcard one. Empty if the host does not resolve (the poke is then skipped).
std::optional<sockaddr_storage> WakeAddress(const HostPort& hp, int port) {
  std::string host = hp.host;
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints{};
  hints.ai_family = hp.v6 ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) {
    return std::nullopt;
  }
  sockaddr_storage out{};
  std::memcpy(&out, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  return out;
}

socklen_t AddressLength(const sockaddr_storage& a) {
  return a.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

}  // namespace

struct MetricsEndpoint::Impl {
  std::string host;  // as listened on, "[v6]" bracketed
  std::optional<sockaddr_storage> wake_address;
  std::unique_ptr<prometheus::Exposer> exposer;
};

MetricsEndpoint::MetricsEndpoint(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsEndpoint::~MetricsEndpoint() {
  if (!impl_ || !impl_->exposer) return;
  if (!impl_->wake_address) {
    impl_->exposer.reset();
    return;
  }
  // civetweb 1.15's listener thread sleeps in poll() for up to 2 s between
  // looks at its stop flag, and mg_stop() waits for it: a program would hang
  // that long on exit. Connections wake the poll, so keep making them until
  // the stop is done (they are closed at once; a worker sees EOF).
  std::atomic<bool> stopped{false};
  const sockaddr_storage addr = *impl_->wake_address;
  auto poke = [&stopped, addr] {
    while (!stopped.load()) {
      UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd.valid()) return;
      timeval tv{0, 100000};
      ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      (void)::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), AddressLength(addr));
      fd.Reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };
  std::thread poker;
  try {
    poker = std::thread(poke);
  } catch (const std::system_error&) {
    // No thread: the stop takes up to 2 s longer, nothing worse.
  }
  impl_->exposer.reset();
  stopped.store(true);
  if (poker.joinable()) poker.join();
}

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Create(const std::string& listen,
                                                                 int num_threads) {
  const std::string prefix = "unable to listen for metrics on " + listen + ": ";
  std::optional<HostPort> hp = SplitHostPort(listen);
  if (!hp) return Status::InvalidConfig(prefix + "expected host:port or [ipv6]:port");
  auto impl = std::make_unique<Impl>();
  impl->host = hp->v6 ? "[" + hp->host + "]" : hp->host;
  try {
    // civetweb wants "[v6]:port" with brackets; `listen` already has them.
    impl->exposer = std::make_unique<prometheus::Exposer>(listen, num_threads);
    std::vector<int> ports = impl->exposer->GetListeningPorts();
    if (!ports.empty()) impl->wake_address = WakeAddress(*hp, ports.front());
  } catch (const std::exception& e) {
    std::string why = WhyBindFails(*hp);
    if (why.empty() && hp->v6) {
      why = "IPv6 listen addresses are not supported by the civetweb library in use";
    }
    if (why.empty()) why = e.what();
    return Status::IoError(prefix + why);
  }
  return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(std::move(impl)));
}

void MetricsEndpoint::Register(const std::weak_ptr<prometheus::Collectable>& c) {
  impl_->exposer->RegisterCollectable(c);
}

std::string MetricsEndpoint::address() const { return impl_->host + ":" + std::to_string(port()); }

int MetricsEndpoint::port() const {
  try {
    std::vector<int> ports = impl_->exposer->GetListeningPorts();
    return ports.empty() ? 0 : ports.front();
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace sb
