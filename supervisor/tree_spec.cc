#include "supervisor/tree_spec.h"

#include <algorithm>
#include <string>
#include <string_view>

namespace sb::supervisor {
namespace {

constexpr std::string_view kReplicaPlaceholder = "{{replica}}";
constexpr std::string_view kMetricsPlaceholder = "{{metrics}}";

std::string ReplaceAll(std::string text, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();  // never rescan the replacement, so "{{replica}}" in `to` cannot loop
  }
  return text;
}

}  // namespace

ChildSpec InstantiateReplica(const ChildSpec& tmpl, int index) {
  ChildSpec child = tmpl;
  const std::string index_text = std::to_string(index);
  child.id = tmpl.id + "." + index_text;
  child.replica = ReplicaOf{tmpl.id, index};
  for (std::string& arg : child.command) {
    arg = ReplaceAll(std::move(arg), kReplicaPlaceholder, index_text);
  }
  // Only values: a variable's name is part of the child's interface, its value
  // is what differs between replicas.
  for (auto& [name, value] : child.env) {
    value = ReplaceAll(std::move(value), kReplicaPlaceholder, index_text);
  }
  if (!child.metrics.empty()) {
    size_t colon = child.metrics.rfind(':');
    int base = std::stoi(child.metrics.substr(colon + 1));
    child.metrics = child.metrics.substr(0, colon + 1) + std::to_string(base + index);
  }
  SubstituteMetrics(child);
  return child;
}

void SubstituteMetrics(ChildSpec& spec) {
  if (spec.metrics.empty()) return;
  for (std::string& arg : spec.command) {
    arg = ReplaceAll(std::move(arg), kMetricsPlaceholder, spec.metrics);
  }
  for (auto& [name, value] : spec.env) {
    value = ReplaceAll(std::move(value), kMetricsPlaceholder, spec.metrics);
  }
}

const char* StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kOneForOne:
      return "one_for_one";
    case Strategy::kOneForAll:
      return "one_for_all";
    case Strategy::kRestForOne:
      return "rest_for_one";
    case Strategy::kSimpleOneForOne:
      return "simple_one_for_one";
  }
  return "unknown";  // only reachable through a value cast from outside the enum
}

const char* RestartTypeName(RestartType r) {
  switch (r) {
    case RestartType::kPermanent:
      return "permanent";
    case RestartType::kTransient:
      return "transient";
    case RestartType::kTemporary:
      return "temporary";
  }
  return "unknown";  // only reachable through a value cast from outside the enum
}

const char* UpgradeModeName(UpgradeMode u) {
  switch (u) {
    case UpgradeMode::kRestart:
      return "restart";
    case UpgradeMode::kHandoff:
      return "handoff";
  }
  return "unknown";  // only reachable through a value cast from outside the enum
}

const char* MembershipName(Membership m) { return m == Membership::kEtcd ? "etcd" : "static"; }

std::vector<std::string> ClusterFlags(const ClusterSpec& c) {
  std::vector<std::string> out = {"--node",      c.node,         "--cluster",
                                  c.name,        "--membership", MembershipName(c.membership),
                                  "--peer-bind", c.peer_bind};
  if (!c.curve_secret_file.empty()) {
    out.insert(out.end(), {"--curve-secret-file", c.curve_secret_file});
  }
  if (c.insecure) out.push_back("--insecure");
  if (c.membership == Membership::kStatic) {
    for (const ClusterPeerSpec& p : c.peers) {
      out.insert(out.end(), {"--peer", p.node + "=" + p.broker + "=" + p.curve_public});
    }
    return out;
  }
  for (const std::string& e : c.etcd_endpoints) out.insert(out.end(), {"--etcd", e});
  out.insert(out.end(), {"--advertise", c.advertise, "--etcd-ttl-s", std::to_string(c.etcd_ttl_s)});
  return out;
}

const char* BalanceName(Balance b) {
  switch (b) {
    case Balance::kShared:
      return "shared";
    case Balance::kRoundRobin:
      return "round_robin";
  }
  return "?";
}

namespace {

void CountMembers(const SupervisorSpec& sup, std::map<std::string, int>* members) {
  for (const ChildSpec& c : sup.children) {
    if (c.is_supervisor) {
      CountMembers(c.supervisor(), members);
      continue;
    }
    if (!c.replica) continue;
    for (const std::string& name : c.sockets) {
      auto it = members->find(name);
      if (it != members->end()) it->second = std::max(it->second, c.replica->index + 1);
    }
  }
}

}  // namespace

std::map<std::string, int> RoundRobinMembers(const TreeSpec& spec) {
  std::map<std::string, int> members;
  for (const SocketSpec& s : spec.sockets) {
    if (s.balance == Balance::kRoundRobin) members[s.name] = 1;
  }
  CountMembers(spec.root, &members);
  return members;
}

}  // namespace sb::supervisor
