#include "supervisor/cluster_status.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace sb::supervisor {
namespace {

namespace json = boost::json;

constexpr char kMetrics[] = R"(# HELP switchboard_broker_members other nodes
# TYPE switchboard_broker_members gauge
switchboard_broker_members 2
# TYPE switchboard_broker_peer_up gauge
switchboard_broker_peer_up{peer="n2"} 1
switchboard_broker_peer_up{peer="n3"} 0
switchboard_broker_peer_rtt_seconds{peer="n2"} 0.00031
switchboard_broker_peer_queue_messages{peer="n2"} 0
switchboard_broker_peer_queue_messages{peer="n3"} 12
switchboard_broker_peer_routed_total{direction="out",peer="n2"} 300
switchboard_broker_shards 2
)";

TEST(ClusterStatusTest, ParsesTheLinkSeries) {
  const BrokerMeshMetrics m = ParseBrokerMetrics(kMetrics);
  EXPECT_EQ(m.members, 2);
  ASSERT_EQ(m.peers.size(), 2u);
  EXPECT_EQ(m.peers.at("n2").up, true);
  EXPECT_DOUBLE_EQ(*m.peers.at("n2").rtt_s, 0.00031);
  EXPECT_EQ(m.peers.at("n2").queue_messages, 0);
  EXPECT_EQ(m.peers.at("n3").up, false);
  EXPECT_FALSE(m.peers.at("n3").rtt_s.has_value());  // absent before the first round trip
  EXPECT_EQ(m.peers.at("n3").queue_messages, 12);
}

TEST(ClusterStatusTest, LabelsInAnyOrderAndEscaped) {
  const BrokerMeshMetrics m = ParseBrokerMetrics(
      "switchboard_broker_peer_up{zone=\"a\\\"b\",peer=\"x\"} 1\nnot a line\n{}\n");
  ASSERT_EQ(m.peers.size(), 1u);
  EXPECT_EQ(m.peers.at("x").up, true);
}

json::object Reply() {
  return json::parse(R"({"ok": true, "node": "n1",
    "tree": {"id": "root", "type": "supervisor", "children": [
      {"id": "broker", "type": "worker", "metrics": "127.0.0.1:9101"}]},
    "cluster": {"name": "demo", "node": "n1", "broker": "broker", "membership": "static",
                "peer_bind": "tcp://127.0.0.1:7101", "peers": ["n3", "n2", "n4"]}})")
      .as_object();
}

TEST(ClusterStatusTest, MergeRenderAndJson) {
  json::object reply = Reply();
  EXPECT_EQ(BrokerMetricsAddress(reply), "127.0.0.1:9101");
  MergeClusterLinks(reply, ParseBrokerMetrics(kMetrics), "");
  const json::array& members = reply.at("cluster").at("members").as_array();
  ASSERT_EQ(members.size(), 3u);  // n4 is configured but the broker has no series for it yet
  EXPECT_EQ(members[0].at("node"), "n2");
  EXPECT_EQ(members[0].at("up"), true);
  EXPECT_EQ(members[2].at("node"), "n4");
  EXPECT_TRUE(members[2].at("up").is_null());
  EXPECT_EQ(RenderCluster(reply),
            "\ncluster demo, node n1 (membership static, peer socket tcp://127.0.0.1:7101)\n"
            "  member  link  rtt       outbox\n"
            "  n2      up    0.3 ms    0\n"
            "  n3      down  -         12\n"
            "  n4      ?     -         -\n");
}

TEST(ClusterStatusTest, MetricsUnreachable) {
  json::object reply = Reply();
  MergeClusterLinks(reply, {}, "connecting to 127.0.0.1:9101: Connection refused");
  EXPECT_EQ(reply.at("cluster").at("metrics_error"),
            "connecting to 127.0.0.1:9101: Connection refused");
  const std::string text = RenderCluster(reply);
  EXPECT_NE(text.find("  link states unknown: connecting to 127.0.0.1:9101: Connection refused\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("  n2      ?     -         -\n"), std::string::npos) << text;
}

TEST(ClusterStatusTest, NoClusterNoLines) {
  json::object reply = Reply();
  reply.erase("cluster");
  MergeClusterLinks(reply, ParseBrokerMetrics(kMetrics), "");
  EXPECT_FALSE(reply.contains("cluster"));
  EXPECT_EQ(RenderCluster(reply), "");
  EXPECT_EQ(BrokerMetricsAddress(reply), "");
}

}  // namespace
}  // namespace sb::supervisor
