#include "supervisor/control_cli.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <string_view>

#include "common/exit_codes.h"
#include "supervisor/cluster_status.h"
#include "supervisor/control_server.h"
#include "supervisor/engine_types.h"

namespace sb::supervisor {

namespace {

namespace json = boost::json;

constexpr std::string_view kProgram = "switchboard: ";

int FailStatus(const Status& s, std::ostream& err) {
  err << kProgram << s.message() << "\n";
  switch (s.code()) {
    case Status::Code::kNotFound:
      return kExitNotRunning;
    case Status::Code::kInvalidConfig:
      return kExitUsage;
    default:
      return kExitFailure;
  }
}

std::string_view Str(const json::object& o, std::string_view key, std::string_view dflt = "?") {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string_view(v->get_string()) : dflt;
}

std::optional<double> Num(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v) return std::nullopt;
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  if (v->is_double()) return v->get_double();
  return std::nullopt;
}

std::string Int(const json::object& o, std::string_view key, std::string_view dflt = "?") {
  auto n = Num(o, key);
  return n ? std::to_string(static_cast<long long>(*n)) : std::string(dflt);
}

// Returns the reply's exit code, printing its error if it is not ok.
int CheckReply(const json::object& reply, std::ostream& err) {
  const json::value* ok = reply.if_contains("ok");
  if (ok && ok->is_bool() && ok->get_bool()) return kExitOk;
  err << kProgram << Str(reply, "error", "the daemon refused the request") << "\n";
  std::string_view code = Str(reply, "code", "");
  if (code == kCodeInvalid || code == kCodeNotFound) return kExitUsage;
  return kExitFailure;
}

// The call and the generic part of its outcome; nullopt when the caller
// should go on to print the reply.
std::optional<int> Call(const std::string& control, const json::object& request,
                        std::chrono::milliseconds timeout, json::object& reply, std::ostream& err) {
  auto r = ControlCall(control, request, timeout);
  if (!r.ok()) return FailStatus(r.status(), err);
  reply = std::move(r.value());
  int rc = CheckReply(reply, err);
  if (rc != kExitOk) return rc;
  return std::nullopt;
}

std::string Pad(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

std::string FormatPeriod(long long ms) {
  if (ms > 0 && ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms > 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms > 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// "12.3s" under a minute, then "1m02s", "3h04m", "2d05h".
std::string FormatUptime(double s) {
  char buf[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
    // 59.96 would print as "60.0s".
    if (std::string_view(buf) != "60.0s") return buf;
  }
  long long t = static_cast<long long>(s);
  if (t < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  } else if (t < 86400) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t % 3600 / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
  }
  return buf;
}

std::string DescribeExit(const json::object& e) {
  auto status = Num(e, "status");
  if (status) return "exit status " + std::to_string(static_cast<long long>(*status));
  std::string_view sig = Str(e, "signal", "");
  if (!sig.empty()) return "killed by " + std::string(sig);
  return "";
}

const json::array* Children(const json::object& n) {
  const json::value* v = n.if_contains("children");
  return v && v->is_array() ? &v->get_array() : nullptr;
}

size_t IdWidth(const json::object& n, size_t depth) {
  size_t w = 2 * depth + Str(n, "id").size();
  if (const json::array* kids = Children(n)) {
    for (const json::value& k : *kids) {
      if (k.is_object()) w = std::max(w, IdWidth(k.get_object(), depth + 1));
    }
  }
  return w;
}

void RenderNode(const json::object& n, size_t depth, size_t id_width, std::string& out) {
  // The JSON comes from the daemon, but a broken one must not overflow our stack.
  constexpr size_t kMaxDepth = 64;
  std::string line = Pad(std::string(2 * depth, ' ') + std::string(Str(n, "id")), id_width);
  if (Str(n, "type") == "supervisor") {
    auto period = Num(n, "period_ms");
    line += "supervisor " + Pad(std::string(Str(n, "strategy")), 12) + " " +
            Pad(std::string(Str(n, "state")), 9) + " restarts " + Int(n, "restarts_in_window") +
            "/" + Int(n, "intensity") + " in " +
            (period ? FormatPeriod(static_cast<long long>(*period)) : std::string("?"));
  } else {
    auto uptime = Num(n, "uptime_s");
    line += Pad("pid " + Int(n, "pid", "-"), 9) + " " + Pad(std::string(Str(n, "state")), 9) + " " +
            Pad("up " + (uptime ? FormatUptime(*uptime) : std::string("-")), 9) + " restarts " +
            Int(n, "restarts");
    const json::value* last = n.if_contains("last_exit");
    if (last && last->is_object()) {
      std::string why = DescribeExit(last->get_object());
      if (!why.empty()) line += "  last exit: " + why;
    }
    if (n.if_contains("upgrade_pid")) line += "  new pid " + Int(n, "upgrade_pid") + " taking over";
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  out += line;
  out += '\n';
  const json::array* kids = Children(n);
  if (!kids || depth >= kMaxDepth) return;
  for (const json::value& k : *kids) {
    if (k.is_object()) RenderNode(k.get_object(), depth + 1, id_width, out);
  }
}

std::string JoinStrings(const json::value* v) {
  std::string s;
  if (!v || !v->is_array()) return s;
  for (const json::value& e : v->get_array()) {
    if (!e.is_string()) continue;
    if (!s.empty()) s += ", ";
    s += e.get_string();
  }
  return s;
}

}  // namespace

std::string RenderStatus(const json::object& reply) {
  const json::value* tree = reply.if_contains("tree");
  if (!tree || !tree->is_object()) return "";
  const json::object& root = tree->get_object();
  size_t width = std::max<size_t>(16, IdWidth(root, 0) + 2);
  std::string out;
  RenderNode(root, 0, width, out);
  return out;
}

int RunStatus(const std::string& control, bool json, std::ostream& out, std::ostream& err) {
  json::object request;
  request["cmd"] = "status";
  json::object reply;
  if (auto rc = Call(control, request, kControlShortTimeout, reply, err)) return *rc;
  if (reply.contains("cluster")) {
    // The links' states are the broker's: read from its /metrics here, so
    // the daemon never waits on a child to answer a status request.
    const std::string address = BrokerMetricsAddress(reply);
    BrokerMeshMetrics metrics;
    std::string why;
    if (address.empty()) {
      why = "the broker child has no metrics: address";
    } else if (Result<std::string> text = FetchBrokerMetrics(address, std::chrono::seconds(2));
               text.ok()) {
      metrics = ParseBrokerMetrics(*text);
    } else {
      why = "broker metrics at " + address + ": " + text.status().message();
    }
    MergeClusterLinks(reply, metrics, why);
  }
  out << (json ? EncodeControlLine(reply) : RenderStatus(reply) + RenderCluster(reply))
      << std::flush;
  return kExitOk;
}

int RunSimple(const std::string& control, const std::string& cmd, const std::string& id,
              std::ostream& out, std::ostream& err, std::chrono::milliseconds timeout) {
  const char* done = cmd == "stop"      ? "stopped"
                     : cmd == "start"   ? "started"
                     : cmd == "restart" ? "restarted"
                                        : nullptr;
  if (!done) {
    err << kProgram << "unknown command '" << cmd << "' (expected stop, start or restart)\n";
    return kExitUsage;
  }
  json::object request;
  request["cmd"] = cmd;
  request["id"] = id;
  json::object reply;
  if (auto rc = Call(control, request, timeout, reply, err)) return *rc;
  out << id << ": " << done << "\n" << std::flush;
  return kExitOk;
}

int RunScale(const std::string& control, const std::string& id, int n, std::ostream& out,
             std::ostream& err, std::chrono::milliseconds timeout) {
  if (n < 0) {
    err << kProgram << "scale: the count must be 0 or more, not " << n << "\n";
    return kExitUsage;
  }
  json::object request;
  request["cmd"] = "scale";
  request["id"] = id;
  request["n"] = n;
  json::object reply;
  if (auto rc = Call(control, request, timeout, reply, err)) return *rc;
  std::string added = JoinStrings(reply.if_contains("added"));
  std::string removed = JoinStrings(reply.if_contains("removed"));
  if (!added.empty()) out << id << ": added " << added << "\n";
  if (!removed.empty()) out << id << ": removed " << removed << "\n";
  if (added.empty() && removed.empty()) out << id << ": already " << n << "\n";
  out << std::flush;
  return kExitOk;
}

int RunUpgrade(const std::string& control, const std::string& id, std::ostream& out,
               std::ostream& err, std::chrono::milliseconds timeout) {
  json::object request;
  request["cmd"] = "upgrade";
  request["id"] = id;
  auto r = ControlCall(control, request, timeout);
  if (!r.ok()) return FailStatus(r.status(), err);
  const json::object& reply = r.value();
  // Printed on failure too: a supervisor's upgrade stops at the first
  // failure, and the children before it stay handed over.
  const json::value* done = reply.if_contains("upgraded");
  if (done && done->is_array()) {
    for (const json::value& v : done->get_array()) {
      if (!v.is_object()) continue;
      const json::object& o = v.get_object();
      out << Str(o, "id", "?") << ": upgraded, pid " << Int(o, "pid") << ", "
          << Int(o, "connections") << " connections moved in " << Int(o, "ms") << " ms\n";
    }
  }
  out << std::flush;
  return CheckReply(reply, err);
}

int RunReload(const std::string& control, std::ostream& out, std::ostream& err,
              std::chrono::milliseconds timeout) {
  json::object request;
  request["cmd"] = "reload";
  json::object reply;
  if (auto rc = Call(control, request, timeout, reply, err)) return *rc;
  const json::value* changes = reply.if_contains("changes");
  size_t n = 0;
  if (changes && changes->is_array()) {
    for (const json::value& c : changes->get_array()) {
      if (!c.is_string()) continue;
      out << std::string_view(c.get_string()) << "\n";
      ++n;
    }
  }
  if (n == 0) out << "no changes\n";
  out << std::flush;
  return kExitOk;
}

int RunEvents(const std::string& control, std::ostream& out, std::ostream& err) {
  bool reader_gone = false;
  bool daemon_exit = false;
  Status s = FollowEvents(control, [&](std::string_view line) {
    out << line << "\n" << std::flush;
    if (!out) {
      reader_gone = true;
      return false;
    }
    json::error_code ec;
    json::value v;
    try {
      v = json::parse(line, ec);
    } catch (const std::exception&) {
      ec = json::make_error_code(json::error::exception);
    }
    daemon_exit = !ec && v.is_object() &&
                  ParseEventKind(Str(v.get_object(), "event", "")) == EventKind::kDaemonExit;
    return true;
  });
  if (!s.ok()) return FailStatus(s, err);
  if (reader_gone || daemon_exit) return kExitOk;
  err << kProgram
      << "the daemon closed the event stream (it stopped, or this reader fell too far behind)\n";
  return kExitFailure;
}

}  // namespace sb::supervisor
