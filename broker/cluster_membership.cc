#include "broker/cluster_membership.h"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <set>

#include "common/metric_families.h"
#include "common/metric_names.h"

namespace sb::broker {

namespace m = sb::metrics;

void AddMembershipFlags(CLI::App& app, MembershipFlags* f) {
  app.add_option("--node", f->node, "this node's name in its cluster ([A-Za-z0-9._-], 1-64)");
  app.add_option("--cluster", f->cluster, "the cluster's name (etcd keys live under it)")
      ->capture_default_str();
  app.add_option("--membership", f->source, "where the other nodes come from: static or etcd")
      ->check(CLI::IsMember({"static", "etcd"}))
      ->capture_default_str();
  app.add_option("--peer", f->peers,
                 "NAME=ENDPOINT=PUBKEY: another node (its broker's peer endpoint, tcp://HOST:PORT, "
                 "and CURVE public key, Z85); repeatable; --membership static")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--etcd", f->etcd,
                 "http://HOST:PORT of etcd (v3 API); repeatable or a comma list; --membership etcd")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->delimiter(',');
  app.add_option("--etcd-ttl-s", f->etcd_ttl_s,
                 "the lease of this node's record in etcd, seconds (kept alive every third)")
      ->capture_default_str()
      ->check(CLI::Range(2, 3600));
  app.add_option("--advertise", f->advertise,
                 "tcp://HOST:PORT other nodes reach this broker's peer socket at (published in "
                 "etcd)");
  app.add_option("--curve-public", f->curve_public,
                 "this node's CURVE public key, Z85 (published in etcd)");
}

class ClusterMembership::Collector : public prometheus::Collectable {
 public:
  explicit Collector(const ClusterMembership* c) : c_(c) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    static constexpr std::array<std::string_view, 3> kEvents = {"joined", "left", "changed"};
    MetricFamilies out;
    out.Gauge(m::kBrokerMembers, "Other nodes of the cluster this broker knows",
              static_cast<double>(c_->members_.load()));
    out.CounterPerLabel(m::kBrokerMembershipChangesTotal,
                        "Membership changes: nodes joined, left, or changed (a new incarnation, "
                        "endpoint or key)",
                        m::kLabelEvent, kEvents, [&](size_t i) { return c_->changes_[i].load(); });
    out.Counter(m::kBrokerMembershipBadRecordsTotal,
                "Member records skipped: they did not parse or validate",
                static_cast<double>(c_->bad_records_.load()));
    if (c_->etcd_) {
      out.Gauge(m::kBrokerEtcdUp, "1 while etcd is reachable and this node registered and watching",
                c_->etcd_up_.load() ? 1.0 : 0.0);
    }
    return std::move(out).Take();
  }

 private:
  const ClusterMembership* c_;
};

static_assert(static_cast<size_t>(MemberEventKind::kChanged) == 2);

Result<std::unique_ptr<ClusterMembership>> ClusterMembership::Create(EventLoop* loop,
                                                                     const MembershipFlags& f) {
  const bool etcd = f.source == "etcd";
  if (etcd || !f.peers.empty() || !f.node.empty()) {
    if (Status s = ValidateNodeName(f.node); !s.ok()) {
      return Status::InvalidConfig("--node: " + s.message());
    }
  }
  if (etcd && !f.peers.empty()) {
    return Status::InvalidConfig("--peer: static peers need --membership static");
  }
  if (!etcd && !f.etcd.empty()) {
    return Status::InvalidConfig("--etcd: needs --membership etcd");
  }
  std::unique_ptr<ClusterMembership> c(new ClusterMembership(f.node, etcd));
  if (!etcd) {
    std::vector<Member> peers;
    std::set<std::string> names;
    for (const std::string& spec : f.peers) {
      Result<Member> p = ParseStaticPeer(spec);
      if (!p.ok()) return p.status();
      if (p->name == f.node) {
        return Status::InvalidConfig("--peer '" + spec + "': names this node (--node)");
      }
      if (!names.insert(p->name).second) {
        return Status::InvalidConfig("--peer '" + spec + "': a second peer named " + p->name);
      }
      peers.push_back(std::move(p).value());
    }
    c->OnEvents(c->membership_.ApplySnapshot(std::span<const Member>(peers)));
    return c;
  }
  EtcdOptions o;
  o.endpoints = f.etcd;
  o.cluster = f.cluster;
  o.self = {.name = f.node, .endpoint = f.advertise, .curve_public = f.curve_public};
  o.ttl_s = f.etcd_ttl_s;
  if (Status s = ValidateEtcdOptions(o); !s.ok()) {
    return Status::InvalidConfig(
        "--membership etcd (--etcd, --cluster, --advertise, "
        "--curve-public): " +
        s.message());
  }
  ClusterMembership* self = c.get();
  auto registry = EtcdRegistry::Create(
      loop, std::move(o), &c->membership_,
      [self](std::span<const MemberEvent> events) { self->OnEvents(events); },
      [self](bool up) { self->etcd_up_ = up; });
  if (!registry.ok()) return registry.status();
  c->registry_ = std::move(registry).value();
  return c;
}

ClusterMembership::ClusterMembership(std::string self, bool etcd)
    : membership_(std::move(self)), etcd_(etcd) {
  collectable_ = std::make_shared<Collector>(this);
}

ClusterMembership::~ClusterMembership() = default;

void ClusterMembership::OnEvents(std::span<const MemberEvent> events) {
  for (const MemberEvent& e : events) {
    spdlog::info("membership: {} {} (broker {}, incarnation {})", e.member.name,
                 MemberEventName(e.kind), e.member.endpoint, e.member.incarnation);
    ++changes_[static_cast<size_t>(e.kind)];
  }
  members_ = membership_.members().size();
  bad_records_ = membership_.bad_records();
  if (on_changes_ && !events.empty()) on_changes_(events);
}

void ClusterMembership::Leave(std::chrono::milliseconds timeout) {
  if (registry_) registry_->Leave(timeout);
}

}  // namespace sb::broker
