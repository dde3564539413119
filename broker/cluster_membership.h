// ClusterMembership: the broker's membership, from its flags to its metrics.
//
// Owns: the broker's membership flags (--node, --cluster, --membership,
// --peer, --etcd, --etcd-ttl-s, --advertise, --curve-public) and their
// validation, the Membership (broker/membership) fed either once from the
// static --peer list or continuously by an EtcdRegistry, the log line of
// each member joining, leaving or changing, and the membership metrics
// (a Prometheus collectable of atomics, read on the scraping thread).
// Does not: open or close links to members (broker/peer_uplinks and
// broker/peer_server act on the events it hands on).
// Runs on the broker's loop thread; main() owns it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "broker/etcd_registry.h"
#include "broker/membership.h"
#include "common/event_loop.h"
#include "common/status.h"

namespace CLI {
class App;
}
namespace prometheus {
class Collectable;
}

namespace sb::broker {

struct MembershipFlags {
  std::string node;
  std::string cluster = "default";
  std::string source = "static";   // "static" or "etcd"
  std::vector<std::string> peers;  // NAME=ENDPOINT=PUBKEY
  std::vector<std::string> etcd;   // URLs, each possibly a comma list
  int etcd_ttl_s = 10;
  std::string advertise;     // this node's peer endpoint, as others dial it
  std::string curve_public;  // this node's public key, as published
};

// Declares the flags above on `app`, writing into `flags`.
void AddMembershipFlags(CLI::App& app, MembershipFlags* flags);

class ClusterMembership {
 public:
  // Validates `flags` (InvalidConfig names the flag) and, with etcd, starts
  // registering on `loop`. Without --node and --peer, the membership is
  // empty: a single-node cluster.
  static Result<std::unique_ptr<ClusterMembership>> Create(EventLoop* loop,
                                                           const MembershipFlags& flags);
  ~ClusterMembership();

  const Membership& membership() const { return membership_; }
  // Calls `fn` with each batch of changes from now on, once applied and
  // logged. The members known already (the static ones, applied by Create)
  // are in membership().
  void OnChanges(std::function<void(std::span<const MemberEvent>)> fn) {
    on_changes_ = std::move(fn);
  }
  // Null with static membership.
  EtcdRegistry* registry() { return registry_.get(); }
  std::shared_ptr<prometheus::Collectable> collectable() const { return collectable_; }

  // At shutdown: with etcd, revoke the lease (at most `timeout`) so the
  // others see this node leave now.
  void Leave(std::chrono::milliseconds timeout);

 private:
  class Collector;
  explicit ClusterMembership(std::string self, bool etcd);
  void OnEvents(std::span<const MemberEvent> events);

  Membership membership_;
  std::unique_ptr<EtcdRegistry> registry_;
  const bool etcd_;
  std::function<void(std::span<const MemberEvent>)> on_changes_;
  // Written on the loop, read by scrapes.
  std::atomic<uint64_t> members_{0};
  std::array<std::atomic<uint64_t>, 3> changes_{};  // by MemberEventKind
  std::atomic<uint64_t> bad_records_{0};
  std::atomic<bool> etcd_up_{false};
  std::shared_ptr<prometheus::Collectable> collectable_;
};

}  // namespace sb::broker
