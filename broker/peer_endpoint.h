// PeerEndpoint: the rules for the broker's peer socket's endpoint and its
// admitted members, decided before anything is bound.
//
// Owns: which --peer-bind endpoints are acceptable (tcp:// only), which of
// them need CURVE (any host but a loopback address: 127.0.0.0/8, ::1 —
// anything else, names and wildcards included, may be reachable from
// another machine), and parsing --peer-key NAME=PUBKEY. Does not: bind
// (broker/peer_server) or judge keys beyond their form (common/curve).
// Plain functions, no I/O.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::broker {

// True if `endpoint` is tcp://HOST:PORT and HOST is a numeric loopback
// address (127.x.y.z, or [::1]).
bool IsLoopbackTcp(std::string_view endpoint);

// InvalidConfig, saying which flag to use, unless `endpoint` is a tcp://
// endpoint and — when its host is not loopback — `curve` (a secret key was
// given) or `insecure` (the operator accepts plain text) holds.
Status CheckPeerBind(std::string_view endpoint, bool curve, bool insecure);

struct PeerKey {
  std::string name;
  std::string public_key;  // Z85
};
// "NAME=PUBKEY": a non-empty name without '=' and a valid Z85 public key.
Result<PeerKey> ParsePeerKey(std::string_view flag);

}  // namespace sb::broker
