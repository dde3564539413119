// EtcdRegistry: this node's membership through etcd v3.
//
// Owns: the node's lease (granted with the TTL, kept alive every TTL/3), its
// record /switchboard/v1/<cluster>/nodes/<node> -> {"broker", "curve_public",
// "incarnation"} written by a create-if-absent transaction under the lease,
// the listing of the cluster's prefix and the watch from the next revision,
// whose changes it hands to broker/membership. A lost lease (a keepalive that
// answers TTL 0, or the watch showing our record deleted) means registering
// again with a new lease and a new incarnation. When etcd cannot be reached
// it keeps the members it knew, retries with a bounded back-off, and lists
// again once it is back. Does not: decide what a change means (Membership)
// or open links.
//
// Client: etcd's JSON gateway (/v3/...) over HTTP with libcurl's multi
// interface, whose sockets and timer are registered on the broker's
// EventLoop (CURLMOPT_SOCKETFUNCTION / TIMERFUNCTION, curl_multi_socket_action):
// no thread of ours (libcurl's resolver runs a short-lived one per host name
// looked up; addresses need none), and libcurl is a Debian package. Beast
// would need asio's own loop beside ours; gRPC brings its own threads. Runs
// on the loop's thread; the broker owns it and destroys it before the loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/membership.h"
#include "common/event_loop.h"
#include "common/status.h"

namespace sb::broker {

struct EtcdOptions {
  // http://HOST:PORT of etcd members; the next one is tried after a failure.
  std::vector<std::string> endpoints;
  std::string cluster;
  // This node's record: name, endpoint and curve_public (the incarnation is
  // made anew for each registration).
  Member self;
  int ttl_s = 10;
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{2000};
  // Bound on one request (the watch excepted: it streams).
  std::chrono::milliseconds request_timeout{2000};
};

// InvalidConfig unless there is an endpoint, the cluster is a node name (it
// is part of the key), the self record validates (incarnation aside), the TTL
// is 2-3600 s and the back-off bounds are ordered and positive.
Status ValidateEtcdOptions(const EtcdOptions& options);

// The key prefix of `cluster`'s member records, /switchboard/v1/<cluster>/nodes/.
std::string MemberKeyPrefix(const std::string& cluster);

// Standard base64 with padding: how etcd's JSON gateway carries keys and values.
std::string GatewayBase64(std::string_view in);

class EtcdRegistry {
 public:
  // Called on the loop with what the membership did after each listing and
  // watched change (possibly nothing: a bad record only counts).
  using OnEvents = std::function<void(std::span<const MemberEvent>)>;
  // Called when etcd becomes reachable (true: registered and watching) or
  // stops being so (false).
  using OnUp = std::function<void(bool)>;

  // Starts registering at once. `membership` outlives the registry; its
  // self must be options.self.name.
  static Result<std::unique_ptr<EtcdRegistry>> Create(EventLoop* loop, EtcdOptions options,
                                                      Membership* membership, OnEvents on_events,
                                                      OnUp on_up = nullptr);
  ~EtcdRegistry();
  EtcdRegistry(const EtcdRegistry&) = delete;
  EtcdRegistry& operator=(const EtcdRegistry&) = delete;

  // Registered and watching: the members are current.
  bool up() const;
  // The incarnation of the current (or last) registration; "" before the first.
  const std::string& incarnation() const;
  // Registrations that succeeded (the first, then one per lost lease).
  uint64_t registrations() const;

  // Revokes the lease, waiting at most `timeout` (blocking: for shutdown,
  // after the loop has stopped), so that the others see this node leave now
  // rather than when its TTL runs out. Nothing more is sent afterwards.
  void Leave(std::chrono::milliseconds timeout);

 private:
  // Keeps libcurl's types out of this header.
  class Impl;
  explicit EtcdRegistry(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sb::broker
