// LinkTable: which ZeroMQ peer is which link, as small integer ids.
//
// Owns: the mapping between a ROUTER routing id (bytes chosen by the peer or
// by libzmq) and a LinkId. Every other broker table (interests, queues,
// presence, liveness) is keyed by LinkId, not by routing id: a 4-byte integer hashes and compares
// in one instruction, keeps those tables' entries small, and leaves the byte strings in one place.
// Does not: touch sockets, decide when a link is dead, or remove a link's
// state from the other tables — whoever detaches a link removes it from every
// table in the same loop turn. Plain data on the broker's loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include "broker/string_map.h"

namespace sb::broker {

// Ids are handed out in increasing order and never reused within one broker
// run, so a reference to a detached link kept anywhere (a deferred action, a
// metric label) can never reach the link that replaced it. 2^32 attaches per
// run are out of reach.
using LinkId = uint32_t;
inline constexpr LinkId kNoLink = 0;

class LinkTable {
 public:
  struct Attached {
    LinkId id;
    bool added;  // false: the routing id was already attached (id unchanged)
  };
  // Attaches `routing_id` (non-empty).
  Attached Attach(std::string_view routing_id);
  // The peer behind link `id` reconnected under a new routing id (libzmq
  // gives every connection its own): the link keeps its id, and with it its
  // state in every other table. False, changing nothing, if `id` is not
  // attached or `routing_id` belongs to another link.
  bool Rebind(LinkId id, std::string_view routing_id);
  // An id that no routing id will ever have, for a link that is not a
  // connection on this socket (a peer node: its messages travel on the peer
  // links). Never attached, so RoutingId(id) is nullptr.
  LinkId Reserve() { return next_id_++; }
  // Forgets the link. False if it was not attached.
  bool Detach(LinkId id);

  // kNoLink if `routing_id` is not attached.
  LinkId Find(std::string_view routing_id) const;
  // nullptr if `id` is not attached.
  const std::string* RoutingId(LinkId id) const;

  size_t size() const { return links_.size(); }

 private:
  LinkId next_id_ = 1;
  std::unordered_map<LinkId, std::string> links_;  // id → routing id
  StringMap<LinkId> by_routing_id_;
};

}  // namespace sb::broker
