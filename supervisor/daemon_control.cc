// The daemon's operator interface: control requests (docs/CONTROL.md),
// reload, and the observers that follow the tree (metrics, file_sd). The
// decisions stay in the engine; this file translates requests into engine
// calls and engine replies into JSON.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <set>

#include "supervisor/daemon.h"
#include "supervisor/event_log.h"
#include "supervisor/reload_diff.h"
#include "supervisor/spec_loader.h"

namespace sb::supervisor {

namespace {

namespace json = boost::json;

json::object Error(const Status& s) {
  const char* code = "refused";
  switch (s.code()) {
    case Status::Code::kNotFound:
      code = "not_found";
      break;
    case Status::Code::kInvalidConfig:
      code = "invalid";
      break;
    default:
      break;
  }
  return json::object{{"ok", false}, {"code", code}, {"error", s.message()}};
}

double Seconds(Time t) { return std::chrono::duration<double>(t).count(); }

json::value ViewJson(const TreeView& v, Time now) {
  json::object o;
  o["id"] = v.id;
  o["type"] = v.is_supervisor ? "supervisor" : "worker";
  o["state"] = ChildStateName(v.state);
  o["uptime_s"] = v.since ? json::value(Seconds(now - *v.since)) : json::value(nullptr);
  o["restarts"] = v.restarts;
  if (v.is_supervisor) {
    o["strategy"] = StrategyName(v.strategy);
    o["intensity"] = v.intensity;
    o["period_ms"] = v.period.count();
    o["restarts_in_window"] = v.restarts_in_window;
    json::array children;
    for (const TreeView& c : v.children) children.push_back(ViewJson(c, now));
    o["children"] = std::move(children);
  } else {
    o["pid"] = v.pid ? json::value(v.pid) : json::value(nullptr);
    // While upgrading: the new process taking over from `pid`.
    if (v.upgrade_pid) o["upgrade_pid"] = v.upgrade_pid;
    if (v.last_exit) {
      o["last_exit"] = json::object{
          {"status", v.last_exit->status >= 0 ? json::value(v.last_exit->status) : nullptr},
          {"signal", v.last_exit->signal ? json::value(SignalName(v.last_exit->signal)) : nullptr}};
    } else {
      o["last_exit"] = nullptr;
    }
    if (!v.metrics.empty()) o["metrics"] = v.metrics;
  }
  return o;
}

}  // namespace

json::object Daemon::StatusReply() {
  Time now = Now();
  json::object o{{"ok", true},
                 {"node", spec_.node.name},
                 {"pid", ::getpid()},
                 {"uptime_s", Seconds(now - started_at_)}};
  o["tree"] = ViewJson(engine_->View(now), now);
  if (metrics_) o["metrics_port"] = metrics_->port();
  // What the config says; the links' states are the broker's own metrics,
  // which `switchboard status` reads itself (the daemon's loop never waits
  // on a child's HTTP answer).
  if (spec_.cluster) {
    const ClusterSpec& c = *spec_.cluster;
    json::array peers;
    for (const ClusterPeerSpec& p : c.peers) peers.push_back(json::value(p.node));
    o["cluster"] =
        json::object{{"name", c.name},           {"node", c.node},
                     {"broker", c.broker},       {"membership", MembershipName(c.membership)},
                     {"peer_bind", c.peer_bind}, {"peers", std::move(peers)}};
  }
  return o;
}

void Daemon::OnControl(const json::object& req, ControlServer::Reply reply) {
  auto text = [&](const char* key) -> std::string {
    const json::value* v = req.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  std::string cmd = text("cmd");
  if (cmd == "status" || cmd == "tree") {
    reply(StatusReply());
    return;
  }
  if (cmd == "reload") {
    Reload([reply](Status st, std::vector<std::string> changes) {
      if (!st.ok()) return reply(Error(st));
      json::array list;
      for (auto& c : changes) list.push_back(json::value(c));
      reply(json::object{{"ok", true}, {"changes", std::move(list)}});
    });
    return;
  }
  std::string id = text("id");
  if (id.empty()) {
    reply(Error(Status::InvalidConfig("'" + cmd + "' needs \"id\"")));
    return;
  }
  RequestId r = next_request_++;
  requests_[r] = Pending{[reply, cmd](const action::Reply& rep) {
    json::array upgraded;
    for (const UpgradeOutcome& u : rep.upgraded) {
      upgraded.push_back(json::object{
          {"id", u.id},
          {"pid", u.pid},
          {"connections", u.connections ? json::value(*u.connections) : json::value(nullptr)},
          {"ms", u.ms ? json::value(*u.ms) : json::value(nullptr)}});
    }
    if (!rep.status.ok()) {
      json::object o = Error(rep.status);
      if (!upgraded.empty()) o["upgraded"] = std::move(upgraded);  // before the failure
      return reply(std::move(o));
    }
    json::object o{{"ok", true}};
    if (cmd == "upgrade") o["upgraded"] = std::move(upgraded);
    json::array added, removed;
    for (auto& a : rep.added) added.push_back(json::value(a));
    for (auto& a : rep.removed) removed.push_back(json::value(a));
    if (!rep.added.empty() || !rep.removed.empty()) {
      o["added"] = std::move(added);
      o["removed"] = std::move(removed);
    }
    reply(std::move(o));
  }};
  if (cmd == "stop" || cmd == "start" || cmd == "restart") {
    auto op = cmd == "stop"    ? TreeEngine::Op::kStop
              : cmd == "start" ? TreeEngine::Op::kStart
                               : TreeEngine::Op::kRestart;
    engine_->Operator(r, op, id, Now());
  } else if (cmd == "scale") {
    const json::value* n = req.if_contains("n");
    if (!n || !n->is_int64() || n->as_int64() < 0 || n->as_int64() > kMaxScaleCount) {
      // The control server validated it already; a request from elsewhere is not trusted.
      requests_.erase(r);
      reply(Error(Status::InvalidConfig("'scale' needs \"n\", a count from 0 to " +
                                        std::to_string(kMaxScaleCount))));
      return;
    }
    engine_->Scale(r, id, static_cast<int>(n->as_int64()), Now());
  } else if (cmd == "upgrade") {
    engine_->Upgrade(r, id, Now());
  } else {
    requests_.erase(r);
    reply(Error(Status::InvalidConfig("unknown command '" + cmd + "'")));
    return;
  }
  Drive();
}

void Daemon::OnReply(const action::Reply& r) {
  auto it = requests_.find(r.request);
  if (it == requests_.end()) return;
  auto done = std::move(it->second.done);
  requests_.erase(it);
  done(r);
  observers_dirty_ = true;
}

void Daemon::Reload(std::function<void(Status, std::vector<std::string>)> done) {
  if (reloading_) return done(Status::Refused("a reload is already in progress"), {});
  // Validate first: a bad file changes nothing.
  auto next = LoadTreeSpecFile(config_path_);
  if (!next.ok()) return done(next.status(), {});
  TreeSpec running = spec_;
  running.root = engine_->RunningSpec();
  auto plan = DiffTrees(running, next.value());
  if (!plan.ok()) return done(plan.status(), {});
  const ReloadPlan& p = plan.value();
  std::vector<std::string> changes;
  std::string summary = p.Summary();
  for (size_t start = 0; start < summary.size();) {
    size_t end = summary.find('\n', start);
    if (end == std::string::npos) end = summary.size();
    changes.push_back(summary.substr(start, end - start));
    start = end + 1;
  }
  if (p.empty()) return done(Status::Ok(), {});  // CONTROL.md: empty `changes` = no change

  // Effects outside the tree first: new sockets must exist before children
  // that name them start; the events file and metrics endpoint follow node.
  const std::map<std::string, int> members = RoundRobinMembers(next.value());
  for (const SocketSpec& sock : p.sockets_added) {
    auto n = members.find(sock.name);
    Status st = sockets_.Add(sock, n == members.end() ? 1 : n->second);
    if (!st.ok()) return done(st, {});
  }
  if (p.node_changed) {
    if (p.node_next.events != spec_.node.events) {
      auto log = EventLog::Open(p.node_next.events);
      if (!log.ok()) return done(log.status(), {});
      events_ = std::move(log.value());
    }
    bool metrics_moved = p.node_next.metrics != spec_.node.metrics;
    spec_.node = p.node_next;
    if (metrics_moved) {
      Status st = StartMetrics();
      if (!st.ok()) spdlog::error("reload: metrics: {}", st.message());
    }
    file_sd_ = std::make_unique<FileSdWriter>(spec_.node.file_sd);
  }
  std::vector<std::pair<std::string, ReloadPart>> parts;
  for (const SupervisorPlan& sp : p.supervisors) {
    parts.push_back({sp.id, ReloadPart{sp.next, sp.removed, sp.changed, sp.added, sp.upgraded}});
  }
  std::vector<std::string> closing = p.sockets_removed;
  TreeSpec adopted = std::move(next.value());
  reloading_ = true;
  RequestId r = next_request_++;
  requests_[r] = Pending{[this, done, changes, closing, adopted](const action::Reply& rep) {
    reloading_ = false;
    if (rep.status.ok()) {
      for (const std::string& name : closing) sockets_.Close(name);
      spec_.sockets = adopted.sockets;
      spec_.warnings = adopted.warnings;
      // Its flags are in the broker child's command, which the plan above
      // restarted the broker with.
      spec_.cluster = adopted.cluster;
    }
    done(rep.status, changes);
  }};
  engine_->Reload(r, std::move(parts), Now());
  Drive();
}

void Daemon::RefreshObservers() {
  observers_dirty_ = false;
  Time now = Now();
  TreeView root = engine_->View(now);
  std::set<std::string> children, supervisors;  // every id in the tree now
  // Walk the tree once: declare every series, publish every endpoint.
  std::vector<std::pair<const TreeView*, std::string>> stack{{&root, ""}};
  while (!stack.empty()) {
    auto [v, parent_path] = stack.back();
    stack.pop_back();
    std::string path = parent_path.empty() ? v->id : parent_path + "/" + v->id;
    if (v->is_supervisor) {
      supervisors.insert(v->id);
      if (metrics_) {
        metrics_->DeclareSupervisor(v->id, v->intensity, path);
        metrics_->SetRestartsInWindow(v->id, v->restarts_in_window);
      }
      for (const TreeView& c : v->children) stack.push_back({&c, path});
      continue;
    }
    children.insert(v->id);
    if (metrics_) metrics_->DeclareChild(v->id, parent_path, v->success_exit_codes);
    if (file_sd_ && !v->metrics.empty()) {
      std::optional<SdTarget> t;
      // An upgrading child serves on from its old process until the new one
      // takes over: its endpoint stays listed.
      if (v->state == ChildState::kRunning || v->state == ChildState::kUpgrading) {
        t = ChildSdTarget(spec_.node.name, v->id, parent_path, v->metrics);
      }
      file_sd_->Set(v->id, t);
    }
  }
  // Children that scale or reload removed leave no ghost behind.
  for (const std::string& id : known_children_) {
    if (children.contains(id)) continue;
    if (metrics_) metrics_->ForgetChild(id);
    if (file_sd_) file_sd_->Set(id, std::nullopt);
  }
  for (const std::string& id : known_supervisors_) {
    if (!supervisors.contains(id) && metrics_) metrics_->ForgetSupervisor(id);
  }
  // A round_robin member goes when its replica has left both the view (its
  // process stopped) and the running spec (scale or reload removed it). The
  // view alone is not enough: a stopped sub-supervisor shows no children,
  // yet they start again with it and their clients wait in those backlogs.
  std::set<std::string> keep = children;
  const SupervisorSpec running = engine_->RunningSpec();
  std::vector<const SupervisorSpec*> specs{&running};
  while (!specs.empty()) {
    const SupervisorSpec* sp = specs.back();
    specs.pop_back();
    for (const ChildSpec& c : sp->children) {
      if (c.is_supervisor) {
        specs.push_back(&c.supervisor());
      } else {
        keep.insert(c.id);
      }
    }
  }
  sockets_.ReleaseMembers(keep);
  if (metrics_) metrics_->SetSocketModes(sockets_.Modes());
  known_children_ = std::move(children);
  known_supervisors_ = std::move(supervisors);
  if (metrics_) {
    metrics_->UpdateDaemonStats(std::chrono::duration<double>(loop_->last_timer_lag()).count());
    if (file_sd_) {
      const std::string& listen = spec_.node.metrics;
      std::string host = listen.substr(0, listen.rfind(':'));
      if (host == "0.0.0.0") host = "127.0.0.1";  // a wildcard is not an address to scrape
      if (host == "[::]") host = "[::1]";
      // The key has a space, which no child id can have.
      file_sd_->Set("daemon itself", ChildSdTarget(spec_.node.name, "switchboard", "",
                                                   host + ":" + std::to_string(metrics_->port())));
    }
  }
  if (file_sd_) {
    Status st = file_sd_->Flush();
    std::string error = st.ok() ? "" : st.message();
    if (error != file_sd_error_ && !error.empty()) spdlog::warn("file_sd: {}", error);
    file_sd_error_ = error;  // say a persistent failure once, not every second
  }
}

}  // namespace sb::supervisor
