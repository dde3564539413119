// Cluster status: the part of `switchboard status` about this node's
// cluster (docs/CLUSTER.md, "switchboard status").
//
// Owns: reading the broker's own Prometheus text for its links (up, round
// trip, outbox depth, members), merging that with what the daemon's status
// reply says of the cluster (its `cluster` object, from the YAML's
// `cluster:`), and drawing it. Does not: talk to the daemon
// (control_cli.cc) or decide anything about links (the broker does). The
// parse, merge and render are pure; FetchBrokerMetrics is the one effect
// (a blocking HTTP GET from the CLI process, never from the daemon's loop).
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace sb::supervisor {

struct PeerLinkMetrics {
  std::optional<bool> up;                // switchboard_broker_peer_up
  std::optional<double> rtt_s;           // switchboard_broker_peer_rtt_seconds
  std::optional<double> queue_messages;  // switchboard_broker_peer_queue_messages
};

struct BrokerMeshMetrics {
  std::optional<double> members;                 // switchboard_broker_members
  std::map<std::string, PeerLinkMetrics> peers;  // by the `peer` label
};

// The series above out of Prometheus text exposition; other lines ignored.
BrokerMeshMetrics ParseBrokerMetrics(std::string_view text);

// The broker child's /metrics: `address` is its `metrics:` (host:port; a
// wildcard host is asked on loopback). IoError when unreachable or not 200.
Result<std::string> FetchBrokerMetrics(const std::string& address,
                                       std::chrono::milliseconds timeout);

// Fills reply["cluster"]["members"]: one object per member, the configured
// peers and every `peer` the metrics name, sorted: {"node", "up" (bool or
// null), "rtt_s" (or null), "queue_messages" (or null)}; and
// reply["cluster"]["broker_members"] from the metrics. With `metrics_error`
// the states are null and reply["cluster"]["metrics_error"] says why. A
// reply without a cluster object is left alone.
void MergeClusterLinks(boost::json::object& reply, const BrokerMeshMetrics& metrics,
                       const std::string& metrics_error);

// Where the broker child serves its metrics, from the reply's tree (its
// `metrics` field); empty if the reply has no cluster or the child none.
std::string BrokerMetricsAddress(const boost::json::object& reply);

// The cluster lines `switchboard status` prints after the tree; empty
// without a cluster object.
std::string RenderCluster(const boost::json::object& reply);

}  // namespace sb::supervisor
