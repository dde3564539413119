#include "broker/peer_endpoint.h"

#include <arpa/inet.h>

#include <cstring>

#include "common/curve.h"

namespace sb::broker {

namespace {
constexpr std::string_view kTcp = "tcp://";

// The host of tcp://HOST:PORT, brackets kept; empty if there is no port.
std::string_view TcpHost(std::string_view endpoint) {
  if (!endpoint.starts_with(kTcp)) return {};
  std::string_view rest = endpoint.substr(kTcp.size());
  const size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return {};
  return rest.substr(0, colon);
}
}  // namespace

bool IsLoopbackTcp(std::string_view endpoint) {
  std::string_view host = TcpHost(endpoint);
  if (host.empty()) return false;
  if (host.front() == '[' && host.back() == ']' && host.size() > 2) {
    const std::string v6(host.substr(1, host.size() - 2));
    in6_addr a{};
    return ::inet_pton(AF_INET6, v6.c_str(), &a) == 1 &&
           std::memcmp(&a, &in6addr_loopback, 16) == 0;
  }
  // Numeric only: a name could resolve anywhere, and libzmq would also
  // take an interface's name for its addresses.
  const std::string v4(host);
  in_addr a{};
  return ::inet_pton(AF_INET, v4.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

Status CheckPeerBind(std::string_view endpoint, bool curve, bool insecure) {
  if (TcpHost(endpoint).empty()) {
    return Status::InvalidConfig("--peer-bind " + std::string(endpoint) +
                                 ": not tcp://HOST:PORT (the peer socket is TCP)");
  }
  if (curve || insecure || IsLoopbackTcp(endpoint)) return Status::Ok();
  return Status::InvalidConfig(
      "--peer-bind " + std::string(endpoint) +
      ": not a loopback address, and no --curve-secret-file (other machines could connect in "
      "plain text; give the node's key, or --insecure to accept that)");
}

Result<PeerKey> ParsePeerKey(std::string_view flag) {
  const size_t eq = flag.find('=');
  if (eq == std::string_view::npos || eq == 0) {
    return Status::InvalidConfig("--peer-key " + std::string(flag) + ": not NAME=PUBKEY");
  }
  PeerKey k{std::string(flag.substr(0, eq)), std::string(flag.substr(eq + 1))};
  if (Status s = curve::Validate(k.public_key); !s.ok()) {
    return Status::InvalidConfig("--peer-key " + k.name + ": " + s.message());
  }
  return k;
}

}  // namespace sb::broker
