#include "supervisor/cluster_status.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <vector>

#include "supervisor/api_client.h"

namespace sb::supervisor {

namespace json = boost::json;

namespace {

// The value of label `name` in a `{a="x",b="y"}` block; nullopt if absent.
std::optional<std::string> Label(std::string_view labels, std::string_view name) {
  size_t i = 0;
  while (i < labels.size()) {
    const size_t eq = labels.find('=', i);
    if (eq == std::string_view::npos || eq + 1 >= labels.size() || labels[eq + 1] != '"') break;
    std::string_view key = labels.substr(i, eq - i);
    std::string value;
    size_t j = eq + 2;
    for (; j < labels.size() && labels[j] != '"'; ++j) {
      if (labels[j] == '\\' && j + 1 < labels.size()) ++j;  // \" \\ \n
      value.push_back(labels[j]);
    }
    if (key == name) return value;
    i = j + 1;
    if (i < labels.size() && labels[i] == ',') ++i;
  }
  return std::nullopt;
}

std::optional<double> Number(std::string_view s) {
  const std::string text(s);
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end == text.c_str()) return std::nullopt;
  return v;
}

json::value OrNull(const std::optional<double>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

std::string FormatRtt(double s) {
  char buf[32];
  if (s < 1) {
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1000);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  }
  return buf;
}

std::string PadTo(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

std::string_view Text(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string_view(v->get_string()) : std::string_view("?");
}

}  // namespace

BrokerMeshMetrics ParseBrokerMetrics(std::string_view text) {
  BrokerMeshMetrics out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line.front() == '#') continue;
    const size_t brace = line.find('{');
    const size_t space = line.find(' ');
    if (space == std::string_view::npos) continue;
    std::string_view name = line.substr(0, std::min(brace, space));
    std::string_view labels;
    std::string_view rest = line.substr(space + 1);
    if (brace != std::string_view::npos && brace < space) {
      const size_t close = line.find('}', brace);
      if (close == std::string_view::npos) continue;
      labels = line.substr(brace + 1, close - brace - 1);
      rest = line.substr(close + 1);
      while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    }
    const std::optional<double> value = Number(rest);
    if (!value) continue;
    if (name == "switchboard_broker_members") {
      out.members = *value;
      continue;
    }
    const std::optional<std::string> peer = Label(labels, "peer");
    if (!peer) continue;
    if (name == "switchboard_broker_peer_up") {
      out.peers[*peer].up = *value == 1;
    } else if (name == "switchboard_broker_peer_rtt_seconds") {
      out.peers[*peer].rtt_s = *value;
    } else if (name == "switchboard_broker_peer_queue_messages") {
      out.peers[*peer].queue_messages = *value;
    }
  }
  return out;
}

Result<std::string> FetchBrokerMetrics(const std::string& address,
                                       std::chrono::milliseconds timeout) {
  std::string host = address.substr(0, address.rfind(':'));
  const std::string port = address.substr(address.rfind(':') + 1);
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "[::]") host = "[::1]";
  Result<ApiUrl> url = ParseApiUrl("http://" + host + ":" + port);
  if (!url.ok()) return url.status();
  Result<ApiReply> reply = HttpGet(*url, "/metrics", timeout);
  if (!reply.ok()) return reply.status();
  if (reply->status != 200) {
    return Status::IoError("the broker's /metrics answered HTTP " + std::to_string(reply->status));
  }
  return std::move(reply->body);
}

void MergeClusterLinks(json::object& reply, const BrokerMeshMetrics& metrics,
                       const std::string& metrics_error) {
  json::value* cluster = reply.if_contains("cluster");
  if (cluster == nullptr || !cluster->is_object()) return;
  json::object& c = cluster->get_object();
  std::set<std::string> names;
  if (const json::value* peers = c.if_contains("peers"); peers && peers->is_array()) {
    for (const json::value& p : peers->get_array()) {
      if (p.is_string()) names.insert(std::string(p.get_string()));
    }
  }
  if (metrics_error.empty()) {
    for (const auto& [name, link] : metrics.peers) names.insert(name);
  }
  json::array members;
  for (const std::string& name : names) {
    auto it = metrics_error.empty() ? metrics.peers.find(name) : metrics.peers.end();
    const PeerLinkMetrics link = it == metrics.peers.end() ? PeerLinkMetrics{} : it->second;
    members.push_back(json::object{{"node", name},
                                   {"up", link.up ? json::value(*link.up) : json::value(nullptr)},
                                   {"rtt_s", OrNull(link.rtt_s)},
                                   {"queue_messages", OrNull(link.queue_messages)}});
  }
  c["members"] = std::move(members);
  c["broker_members"] = metrics_error.empty() ? OrNull(metrics.members) : json::value(nullptr);
  if (!metrics_error.empty()) c["metrics_error"] = metrics_error;
}

namespace {

const json::object* FindChild(const json::object& node, std::string_view id, int depth) {
  if (depth > 64) return nullptr;
  if (Text(node, "id") == id && Text(node, "type") == "worker") return &node;
  const json::value* kids = node.if_contains("children");
  if (!kids || !kids->is_array()) return nullptr;
  for (const json::value& k : kids->get_array()) {
    if (!k.is_object()) continue;
    if (const json::object* found = FindChild(k.get_object(), id, depth + 1)) return found;
  }
  return nullptr;
}

}  // namespace

std::string BrokerMetricsAddress(const json::object& reply) {
  const json::value* cluster = reply.if_contains("cluster");
  const json::value* tree = reply.if_contains("tree");
  if (!cluster || !cluster->is_object() || !tree || !tree->is_object()) return "";
  const json::object* broker =
      FindChild(tree->get_object(), Text(cluster->get_object(), "broker"), 0);
  if (broker == nullptr) return "";
  const std::string_view metrics = Text(*broker, "metrics");
  return metrics == "?" ? "" : std::string(metrics);
}

std::string RenderCluster(const json::object& reply) {
  const json::value* cluster = reply.if_contains("cluster");
  if (!cluster || !cluster->is_object()) return "";
  const json::object& c = cluster->get_object();
  std::string out = "\ncluster " + std::string(Text(c, "name")) + ", node " +
                    std::string(Text(c, "node")) + " (membership " +
                    std::string(Text(c, "membership")) + ", peer socket " +
                    std::string(Text(c, "peer_bind")) + ")\n";
  if (const json::value* e = c.if_contains("metrics_error"); e && e->is_string()) {
    out += "  link states unknown: " + std::string(e->get_string()) + "\n";
  }
  const json::value* members = c.if_contains("members");
  if (!members || !members->is_array() || members->get_array().empty()) {
    out += "  no members\n";
    return out;
  }
  size_t width = 8;
  for (const json::value& m : members->get_array()) {
    if (m.is_object()) width = std::max(width, Text(m.get_object(), "node").size() + 2);
  }
  out += "  " + PadTo("member", width) + PadTo("link", 6) + PadTo("rtt", 10) + "outbox\n";
  for (const json::value& m : members->get_array()) {
    if (!m.is_object()) continue;
    const json::object& o = m.get_object();
    const json::value* up = o.if_contains("up");
    const json::value* rtt = o.if_contains("rtt_s");
    const json::value* queue = o.if_contains("queue_messages");
    std::string line =
        "  " + PadTo(std::string(Text(o, "node")), width) +
        PadTo(up && up->is_bool() ? (up->get_bool() ? "up" : "down") : "?", 6) +
        PadTo(rtt && rtt->is_number() ? FormatRtt(rtt->to_number<double>()) : "-", 10) +
        (queue && queue->is_number() ? std::to_string(std::llround(queue->to_number<double>()))
                                     : std::string("-"));
    out += line + "\n";
  }
  return out;
}

}  // namespace sb::supervisor
