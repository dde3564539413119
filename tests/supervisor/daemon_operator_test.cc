// The operator interface of the real daemon: the real `switchboard` client talking to
// `switchboard run` over its control socket while it supervises sb-testchild processes. Covers
// `status` (plain and --json) while a child crash-loops; `restart`, `stop` and `start` of workers
// and of a sub-supervisor (OTP terminate_child/restart_child: not crashes, not counted against
// intensity); `scale` of a replica set and of a simple_one_for_one supervisor; `reload` and SIGHUP
// (validation errors with their position and nothing changed, added / removed / changed /
// unchanged children, "no changes"); opt-in restart backoff; who may use the control socket; the
// Prometheus file_sd targets file following `scale`; the /metrics endpoint, checked with promtool;
// the `events` stream; idle control connections and a follower that never reads not holding up
// supervision; and exit code 3 when no daemon is running.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "tests/supervisor/daemon_harness.h"
#include "tests/testutil/testutil.h"

namespace sb::testutil {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Generous: only reached when something is broken (the machine is small and shared).
constexpr milliseconds kWait{20'000};
// How long to watch for something that must NOT happen.
constexpr milliseconds kQuiet{1'000};
// Event timestamps keep 6 decimals; the daemon's timers never fire early.
constexpr double kTsSlack = 0.002;

std::string ControlPath(const DaemonHarness& h) { return h.dir().File("ctl.sock"); }

// Runs `switchboard ARGS... --control <the harness's socket>`; returns its exit code.
int Sb(const DaemonHarness& h, std::vector<std::string> args, std::string* output = nullptr) {
  args.push_back("--control");
  args.push_back(ControlPath(h));
  std::string out;
  int rc = RunSwitchboard(args, &out);
  if (output) *output = out;
  return rc;
}

// `switchboard status --json`, parsed; an empty object when the call or the parse fails.
json::object StatusJson(const DaemonHarness& h) {
  std::string out;
  if (Sb(h, {"status", "--json"}, &out) != 0) return {};
  json::error_code ec;
  json::value v = json::parse(out, ec);
  if (ec || !v.is_object()) return {};
  return v.get_object();
}

// A number as a double (JSON integers included); `dflt` for null, absent or anything else.
double Num(const json::value* v, double dflt = -1) {
  if (!v) return dflt;
  if (v->is_int64()) return static_cast<double>(v->get_int64());
  if (v->is_uint64()) return static_cast<double>(v->get_uint64());
  if (v->is_double()) return v->get_double();
  return dflt;
}

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

const json::object* FindIn(const json::object& node, std::string_view id) {
  if (Str(node, "id") == id) return &node;
  const json::value* kids = node.if_contains("children");
  if (!kids || !kids->is_array()) return nullptr;
  for (const json::value& k : kids->get_array()) {
    if (!k.is_object()) continue;
    if (const json::object* found = FindIn(k.get_object(), id)) return found;
  }
  return nullptr;
}

// The tree node `id` of a status reply, or nullptr.
const json::object* NodeOf(const json::object& status, std::string_view id) {
  const json::value* tree = status.if_contains("tree");
  return tree && tree->is_object() ? FindIn(tree->get_object(), id) : nullptr;
}

// The worker's pid in a status reply; 0 when it has none (or is not there).
int PidIn(const json::object& status, std::string_view id) {
  const json::object* n = NodeOf(status, id);
  return n ? static_cast<int>(Num(n->if_contains("pid"), 0)) : 0;
}

std::string StateIn(const json::object& status, std::string_view id) {
  const json::object* n = NodeOf(status, id);
  return n ? Str(*n, "state") : std::string();
}

// An integer field of node `id`; -1 when absent.
int FieldIn(const json::object& status, std::string_view id, std::string_view key) {
  const json::object* n = NodeOf(status, id);
  return n ? static_cast<int>(Num(n->if_contains(key))) : -1;
}

// Ids of the children of supervisor `id`, in the order status lists them.
std::vector<std::string> ChildIds(const json::object& status, std::string_view id) {
  std::vector<std::string> out;
  const json::object* n = NodeOf(status, id);
  const json::value* kids = n ? n->if_contains("children") : nullptr;
  if (!kids || !kids->is_array()) return out;
  for (const json::value& k : kids->get_array()) {
    if (k.is_object()) out.push_back(Str(k.get_object(), "id"));
  }
  return out;
}

// Pid of each of `ids` in a status reply.
std::map<std::string, int> Pids(const json::object& status, const std::vector<std::string>& ids) {
  std::map<std::string, int> out;
  for (const std::string& id : ids) out[id] = PidIn(status, id);
  return out;
}

// The line of a plain `status` whose first word is `id`; "" when there is none.
std::string LineOf(const std::string& text, const std::string& id) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    size_t start = line.find_first_not_of(' ');
    if (start != std::string::npos && line.compare(start, id.size() + 1, id + " ") == 0) {
      return line;
    }
  }
  return "";
}

bool Contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// Replaces the first `from` in *s; false when there is none.
bool ReplaceFirst(std::string* s, const std::string& from, const std::string& to) {
  size_t pos = s->find(from);
  if (pos == std::string::npos) return false;
  s->replace(pos, from.size(), to);
  return true;
}

size_t Count(const std::vector<EventRecord>& events, std::string_view id, std::string_view event) {
  return FilterEvents(events, id, event).size();
}

// "event:id" for events[from...] whose id is in `ids` and whose event is in `kinds`.
std::vector<std::string> Trace(const std::vector<EventRecord>& events, size_t from,
                               const std::set<std::string>& ids,
                               const std::set<std::string>& kinds) {
  std::vector<std::string> out;
  for (size_t i = from; i < events.size(); ++i) {
    if (ids.contains(events[i].id) && kinds.contains(events[i].event)) {
      out.push_back(events[i].event + ":" + events[i].id);
    }
  }
  return out;
}

// The first (id, event) at or after index `from`; ts == -1 when there is none.
EventRecord First(const std::vector<EventRecord>& events, size_t from, std::string_view id,
                  std::string_view event) {
  for (size_t i = from; i < events.size(); ++i) {
    if (events[i].id == id && events[i].event == event) return events[i];
  }
  return EventRecord{.ts = -1};
}

// A connected unix stream socket, or an invalid fd.
UniqueFd ConnectUnix(const std::string& path, int rcvbuf = 0) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fd;
  if (rcvbuf > 0) ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return UniqueFd();
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return UniqueFd();
  return fd;
}

// One raw request on the control socket; the reply line parsed (empty object on failure).
json::object RawRequest(const std::string& control, const std::string& line) {
  UniqueFd fd = ConnectUnix(control);
  if (!fd.valid() || !WriteAll(fd.get(), line + "\n")) return {};
  std::string reply = ReadAll(fd.get(), kWait);
  json::error_code ec;
  json::value v = json::parse(reply, ec);
  return !ec && v.is_object() ? v.get_object() : json::object{};
}

// Runs `switchboard ARGS...` as uid/gid 65534 (nobody) with output into `output_file`; the raw
// wait status, or -1. Only root can do this. The binary is run from a copy in `dir` (which nobody
// must be able to traverse): the build tree may sit under a directory nobody cannot enter.
int RunAsNobody(const std::vector<std::string>& args, const std::string& output_file,
                const std::string& dir) {
  const std::string binary = dir + "/switchboard-as-nobody";
  std::error_code ec;
  std::filesystem::copy_file(BinPath("switchboard"), binary,
                             std::filesystem::copy_options::overwrite_existing, ec);
  if (ec || ::chmod(binary.c_str(), 0755) != 0) return -1;
  std::vector<std::string> all = {binary};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  UniqueFd out(::open(output_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out.valid()) return -1;
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    // Only async-signal-safe calls from here on.
    ::dup2(out.get(), STDOUT_FILENO);
    ::dup2(out.get(), STDERR_FILENO);
    if (::setgroups(0, nullptr) < 0 || ::setgid(65534) < 0 || ::setuid(65534) < 0) _exit(126);
    ::execv(binary.c_str(), argv.data());
    _exit(127);
  }
  int status = 0;
  auto deadline = Clock::now() + kWait;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    ::usleep(5000);
  }
  return status;
}

// One entry of a file_sd targets file.
struct SdEntry {
  std::string endpoint;
  std::map<std::string, std::string> labels;
};

// The targets file keyed by its `child` label; empty when missing or unparsable.
std::map<std::string, SdEntry> ReadTargets(const std::string& path) {
  std::map<std::string, SdEntry> out;
  json::error_code ec;
  json::value v = json::parse(ReadFile(path), ec);
  if (ec || !v.is_array()) return out;
  for (const json::value& g : v.get_array()) {
    if (!g.is_object()) continue;
    const json::value* targets = g.get_object().if_contains("targets");
    const json::value* labels = g.get_object().if_contains("labels");
    if (!targets || !targets->is_array() || targets->get_array().size() != 1 || !labels ||
        !labels->is_object() || !targets->get_array()[0].is_string()) {
      continue;
    }
    SdEntry e;
    e.endpoint = std::string(targets->get_array()[0].get_string());
    for (const auto& kv : labels->get_object()) {
      if (kv.value().is_string()) {
        e.labels[std::string(kv.key())] = std::string(kv.value().get_string());
      }
    }
    out[e.labels["child"]] = e;
  }
  return out;
}

// Children of the targets file whose id starts with `prefix`.
std::set<std::string> TargetChildren(const std::map<std::string, SdEntry>& targets,
                                     std::string_view prefix) {
  std::set<std::string> out;
  for (const auto& [child, e] : targets) {
    if (child.starts_with(prefix)) out.insert(child);
  }
  return out;
}

// promtool from PATH, or "".
std::string FindPromtool() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(std::string(path ? path : "") + ":/usr/bin:/usr/local/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/promtool";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// `promtool check metrics` on `body`; its exit code, its output in *output.
int PromtoolCheck(const std::string& promtool, const std::string& body, const TempDir& dir,
                  std::string* output) {
  const std::string in = dir.File("scrape.txt");
  const std::string out = dir.File("promtool.out");
  WriteFile(in, body);
  std::string cmd = "'" + promtool + "' check metrics < '" + in + "' > '" + out + "' 2>&1";
  int status = std::system(cmd.c_str());
  *output = ReadFile(out);
  return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// ---- status -------------------------------------------------------------------------------------

TEST(DaemonOperatorTest, StatusShowsEveryChildAndAnswersWhileOneCrashLoops) {
  DaemonHarness h(R"(
supervisor:
  intensity: 1000
  period: 10s
  children:
    - {id: steady, command: ["{{bin}}/sb-testchild"]}
    - id: looper
      command: ["{{bin}}/sb-testchild", "--crash-after", "100"]
    - id: sub
      type: supervisor
      children:
        - {id: inner, command: ["{{bin}}/sb-testchild"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  ASSERT_TRUE(h.WaitFor("looper", "restarting", 2, kWait)) << h.log();

  // Plain: one line per node, workers with pid, state, uptime, restarts and the last exit.
  std::string out;
  ASSERT_EQ(Sb(h, {"status"}, &out), 0) << out;
  EXPECT_TRUE(std::regex_match(LineOf(out, "root"),
                               std::regex(R"(root\s+supervisor one_for_one\s+running\s+)"
                                          R"(restarts \d+/1000 in 10s)")))
      << out;
  EXPECT_TRUE(std::regex_match(
      LineOf(out, "steady"), std::regex(R"(\s+steady\s+pid \d+\s+running\s+up \S+\s+restarts 0)")))
      << out;
  EXPECT_TRUE(std::regex_match(LineOf(out, "looper"),
                               std::regex(R"(\s+looper\s+pid (\d+|-)\s+[a-z]+\s+up \S+\s+)"
                                          R"(restarts [1-9]\d*\s+last exit: killed by SIGKILL)")))
      << out;
  EXPECT_TRUE(std::regex_match(LineOf(out, "sub"),
                               std::regex(R"(\s+sub\s+supervisor one_for_one\s+running\s+)"
                                          R"(restarts 0/1 in 5s)")))
      << out;
  EXPECT_TRUE(std::regex_match(LineOf(out, "inner"),
                               std::regex(R"(\s+inner\s+pid \d+\s+running\s+up \S+\s+restarts 0)")))
      << out;
  EXPECT_EQ(Sb(h, {"tree"}, &out), 0) << out;
  EXPECT_NE(LineOf(out, "inner"), "") << out;

  // JSON: the same facts, typed.
  json::object s = StatusJson(h);
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(s["ok"], json::value(true));
  EXPECT_EQ(Str(s, "node"), "test");
  EXPECT_EQ(Num(s.if_contains("pid")), h.pid());
  EXPECT_GE(Num(s.if_contains("uptime_s")), 0);
  for (const char* id : {"steady", "inner"}) {
    const json::object* n = NodeOf(s, id);
    ASSERT_NE(n, nullptr) << id;
    EXPECT_EQ(Str(*n, "type"), "worker");
    EXPECT_EQ(Str(*n, "state"), "running") << id;
    EXPECT_TRUE(Alive(PidIn(s, id))) << id;
    EXPECT_GE(Num(n->if_contains("uptime_s")), 0) << id;
    EXPECT_EQ(Num(n->if_contains("restarts")), 0) << id;
    ASSERT_TRUE(n->contains("last_exit"));
    EXPECT_TRUE(n->at("last_exit").is_null()) << id;
  }
  const json::object* looper = NodeOf(s, "looper");
  ASSERT_NE(looper, nullptr);
  for (const char* key : {"pid", "state", "uptime_s", "restarts", "last_exit"}) {
    EXPECT_TRUE(looper->contains(key)) << key;
  }
  EXPECT_GE(Num(looper->if_contains("restarts")), 1);
  ASSERT_TRUE(looper->at("last_exit").is_object()) << json::serialize(*looper);
  const json::object& last = looper->at("last_exit").get_object();
  EXPECT_EQ(Str(last, "signal"), "SIGKILL");
  EXPECT_TRUE(last.at("status").is_null());
  const json::object* root = NodeOf(s, "root");
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(Str(*root, "type"), "supervisor");
  EXPECT_EQ(Str(*root, "strategy"), "one_for_one");
  EXPECT_EQ(Num(root->if_contains("intensity")), 1000);
  EXPECT_EQ(Num(root->if_contains("period_ms")), 10000);
  EXPECT_GE(Num(root->if_contains("restarts_in_window")), 1);
  EXPECT_EQ(StateIn(s, "sub"), "running");
  EXPECT_EQ(ChildIds(s, "root"), (std::vector<std::string>{"steady", "looper", "sub"}));

  // While the loop goes on, every status answers promptly and the count keeps growing.
  const int steady_pid = PidIn(s, "steady");
  const double first_count = Num(looper->if_contains("restarts"));
  double count = first_count;
  for (int i = 0; i < 10; ++i) {
    auto begin = Clock::now();
    json::object again = StatusJson(h);
    auto took = Clock::now() - begin;
    ASSERT_FALSE(again.empty()) << i;
    EXPECT_LT(took, std::chrono::seconds(3)) << "status call " << i << " was slow";
    EXPECT_EQ(PidIn(again, "steady"), steady_pid);
    double now = FieldIn(again, "looper", "restarts");
    EXPECT_GE(now, count) << "the restart count went back";
    count = now;
  }
  EXPECT_TRUE(
      WaitUntil([&] { return FieldIn(StatusJson(h), "looper", "restarts") >= count + 2; }, kWait));
  EXPECT_GE(count, first_count);
}

// ---- stop, start, restart ---------------------------------------------------------------------

TEST(DaemonOperatorTest, RestartStopAndStartAreNotCrashes) {
  DaemonHarness h(R"(
supervisor:
  intensity: 2
  period: 60s
  children:
    - {id: a, command: ["{{bin}}/sb-testchild"]}
    - {id: b, command: ["{{bin}}/sb-testchild"]}
    - id: grp
      type: supervisor
      children:
        - {id: c, command: ["{{bin}}/sb-testchild"]}
        - {id: d, command: ["{{bin}}/sb-testchild"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  json::object s = StatusJson(h);
  const std::map<std::string, int> before = Pids(s, {"a", "b", "c", "d"});
  for (const auto& [id, pid] : before) ASSERT_GT(pid, 0) << id;

  // restart: a new process each time, never counted: more restarts than the intensity allows.
  std::string out;
  int a_pid = before.at("a");
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(Sb(h, {"restart", "a"}, &out), 0) << out;
    EXPECT_EQ(out, "a: restarted\n");
    s = StatusJson(h);
    int now = PidIn(s, "a");
    EXPECT_GT(now, 0);
    EXPECT_NE(now, a_pid);
    EXPECT_TRUE(Alive(now));
    EXPECT_TRUE(WaitUntil([&] { return !Alive(a_pid); }, kWait)) << "old pid " << a_pid;
    EXPECT_EQ(StateIn(s, "a"), "running");
    EXPECT_EQ(FieldIn(s, "a", "restarts"), 0);
    EXPECT_EQ(FieldIn(s, "root", "restarts_in_window"), 0);
    a_pid = now;
  }
  EXPECT_EQ(Count(h.Events(), "a", "restarting"), 0u);
  EXPECT_EQ(Count(h.Events(), "a", "started"), 5u);
  EXPECT_EQ(PidIn(s, "b"), before.at("b"));
  EXPECT_TRUE(h.process().Running());

  // stop: stays stopped (permanent, yet not restarted) until `start`.
  ASSERT_EQ(Sb(h, {"stop", "a"}, &out), 0) << out;
  EXPECT_EQ(out, "a: stopped\n");
  s = StatusJson(h);
  EXPECT_EQ(StateIn(s, "a"), "stopped");
  EXPECT_EQ(PidIn(s, "a"), 0);
  ASSERT_NE(NodeOf(s, "a"), nullptr);
  EXPECT_TRUE(NodeOf(s, "a")->at("pid").is_null());
  EXPECT_FALSE(Alive(a_pid));
  EXPECT_FALSE(WaitUntil([&] { return Count(h.Events(), "a", "started") > 5; }, kQuiet))
      << "a stopped child was started again";
  EXPECT_EQ(StateIn(StatusJson(h), "a"), "stopped");
  EXPECT_EQ(Sb(h, {"stop", "a"}, &out), 0) << "stopping a stopped child is a no-op: " << out;

  ASSERT_EQ(Sb(h, {"start", "a"}, &out), 0) << out;
  EXPECT_EQ(out, "a: started\n");
  s = StatusJson(h);
  EXPECT_EQ(StateIn(s, "a"), "running");
  EXPECT_TRUE(Alive(PidIn(s, "a")));
  EXPECT_EQ(FieldIn(s, "a", "restarts"), 0);
  EXPECT_EQ(FieldIn(s, "root", "restarts_in_window"), 0);

  // start refuses a running child; unknown ids are usage errors.
  EXPECT_EQ(Sb(h, {"start", "a"}, &out), 1) << out;
  EXPECT_TRUE(Contains(out, "already running")) << out;
  for (const char* cmd : {"stop", "start", "restart"}) {
    EXPECT_EQ(Sb(h, {cmd, "nosuch"}, &out), 2) << cmd << ": " << out;
    EXPECT_TRUE(Contains(out, "nosuch")) << out;
  }
  EXPECT_EQ(Sb(h, {"scale", "nosuch", "2"}, &out), 2) << out;

  // A whole sub-supervisor: its children stop with it and come back with it.
  const size_t grp_starts = Count(h.Events(), "grp", "started");
  ASSERT_EQ(Sb(h, {"stop", "grp"}, &out), 0) << out;
  EXPECT_EQ(out, "grp: stopped\n");
  EXPECT_FALSE(Alive(before.at("c")));
  EXPECT_FALSE(Alive(before.at("d")));
  auto events = h.Events();
  EXPECT_EQ(Count(events, "c", "stopped"), 1u);
  EXPECT_EQ(Count(events, "d", "stopped"), 1u);
  EXPECT_EQ(Count(events, "grp", "stopped"), 1u);
  s = StatusJson(h);
  EXPECT_EQ(StateIn(s, "grp"), "stopped");
  EXPECT_EQ(PidIn(s, "c"), 0);
  EXPECT_EQ(PidIn(s, "d"), 0);
  EXPECT_FALSE(WaitUntil(
      [&] {
        auto e = h.Events();
        return Count(e, "grp", "started") > grp_starts || Count(e, "c", "started") > 1 ||
               Count(e, "d", "started") > 1;
      },
      kQuiet))
      << "the stopped supervisor came back by itself";

  ASSERT_EQ(Sb(h, {"start", "grp"}, &out), 0) << out;
  EXPECT_EQ(out, "grp: started\n");
  s = StatusJson(h);
  EXPECT_EQ(StateIn(s, "grp"), "running");
  for (const char* id : {"c", "d"}) {
    int pid = PidIn(s, id);
    EXPECT_TRUE(Alive(pid)) << id;
    EXPECT_NE(pid, before.at(id)) << id;
    EXPECT_EQ(StateIn(s, id), "running") << id;
  }
  EXPECT_EQ(PidIn(s, "b"), before.at("b"));
  EXPECT_EQ(FieldIn(s, "root", "restarts_in_window"), 0);
  EXPECT_EQ(FieldIn(s, "grp", "restarts"), 0);
  EXPECT_EQ(Sb(h, {"start", "grp"}, &out), 1) << out;
  EXPECT_EQ(Count(h.Events(), "", "restarting"), 0u);
  EXPECT_EQ(Count(h.Events(), "", "gave_up"), 0u);
}

// ---- scale --------------------------------------------------------------------------------------

TEST(DaemonOperatorTest, ScaleAReplicaSetUpAndDown) {
  DaemonHarness h(R"(
supervisor:
  children:
    - {id: head, command: ["{{bin}}/sb-testchild"]}
    - id: shard
      command: ["{{bin}}/sb-testchild", "--term-delay", "200", "--print", "shard {{replica}}"]
      replicas: 2
    - {id: tail, command: ["{{bin}}/sb-testchild"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  json::object s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "root"), (std::vector<std::string>{"head", "shard.0", "shard.1", "tail"}));
  const std::map<std::string, int> before = Pids(s, {"head", "shard.0", "shard.1", "tail"});

  std::string out;
  ASSERT_EQ(Sb(h, {"scale", "shard", "4"}, &out), 0) << out;
  EXPECT_EQ(out, "shard: added shard.2, shard.3\n");
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "root"),
            (std::vector<std::string>{"head", "shard.0", "shard.1", "shard.2", "shard.3", "tail"}));
  for (const auto& [id, pid] : before) EXPECT_EQ(PidIn(s, id), pid) << id;
  for (const char* id : {"shard.2", "shard.3"}) {
    EXPECT_TRUE(Alive(PidIn(s, id))) << id;
    EXPECT_EQ(StateIn(s, id), "running") << id;
  }
  const std::map<std::string, int> grown = Pids(s, {"shard.1", "shard.2", "shard.3"});

  // Down to 1: from the highest index, one at a time, each given its shutdown.
  const size_t mark = h.Events().size();
  ASSERT_EQ(Sb(h, {"scale", "shard", "1"}, &out), 0) << out;
  EXPECT_EQ(out, "shard: removed shard.3, shard.2, shard.1\n");
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "root"), (std::vector<std::string>{"head", "shard.0", "tail"}));
  for (const char* id : {"head", "shard.0", "tail"}) EXPECT_EQ(PidIn(s, id), before.at(id)) << id;
  for (const auto& [id, pid] : grown) EXPECT_FALSE(Alive(pid)) << id;
  auto events = h.Events();
  EXPECT_EQ(Trace(events, mark, {"head", "shard.0", "shard.1", "shard.2", "shard.3", "tail"},
                  {"stopping", "stopped", "started", "restarting"}),
            (std::vector<std::string>{"stopping:shard.3", "stopped:shard.3", "stopping:shard.2",
                                      "stopped:shard.2", "stopping:shard.1", "stopped:shard.1"}));
  for (const char* id : {"shard.3", "shard.2", "shard.1"}) {
    double took = First(events, mark, id, "stopped").ts - First(events, mark, id, "stopping").ts;
    EXPECT_GE(took, 0.2 - kTsSlack) << id << " was not given its --term-delay";
  }

  ASSERT_EQ(Sb(h, {"scale", "shard", "1"}, &out), 0) << out;
  EXPECT_EQ(out, "shard: already 1\n");
  EXPECT_EQ(PidIn(StatusJson(h), "shard.0"), before.at("shard.0"));
}

TEST(DaemonOperatorTest, ScaleASimpleOneForOneSupervisor) {
  DaemonHarness h(R"(
supervisor:
  children:
    - {id: other, command: ["{{bin}}/sb-testchild"]}
    - id: pool
      type: supervisor
      strategy: simple_one_for_one
      children:
        - id: conn
          command: ["{{bin}}/sb-testchild", "--print", "conn {{replica}}"]
          replicas: 1
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  json::object s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "pool"), (std::vector<std::string>{"conn.0"}));
  const int conn0 = PidIn(s, "conn.0");
  const int other = PidIn(s, "other");
  ASSERT_TRUE(Alive(conn0));

  std::string out;
  ASSERT_EQ(Sb(h, {"scale", "pool", "3"}, &out), 0) << out;
  EXPECT_EQ(out, "pool: added conn.1, conn.2\n");
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "pool"), (std::vector<std::string>{"conn.0", "conn.1", "conn.2"}));
  EXPECT_EQ(PidIn(s, "conn.0"), conn0);
  std::vector<int> added = {PidIn(s, "conn.1"), PidIn(s, "conn.2")};
  for (int pid : added) EXPECT_TRUE(Alive(pid));

  ASSERT_EQ(Sb(h, {"scale", "pool", "0"}, &out), 0) << out;
  EXPECT_EQ(out, "pool: removed conn.2, conn.1, conn.0\n");
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "pool"), std::vector<std::string>{});
  EXPECT_EQ(StateIn(s, "pool"), "running");
  EXPECT_FALSE(Alive(conn0));
  for (int pid : added) EXPECT_FALSE(Alive(pid));
  EXPECT_EQ(PidIn(s, "other"), other);

  ASSERT_EQ(Sb(h, {"scale", "pool", "1"}, &out), 0) << out;
  EXPECT_EQ(out, "pool: added conn.0\n");
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "pool"), (std::vector<std::string>{"conn.0"}));
  EXPECT_TRUE(Alive(PidIn(s, "conn.0")));
  EXPECT_NE(PidIn(s, "conn.0"), conn0);
}

// ---- reload -------------------------------------------------------------------------------------

constexpr const char* kReloadYaml = R"(
supervisor:
  intensity: 3
  period: 60s
  children:
    - {id: a, command: ["{{bin}}/sb-testchild"]}
    - {id: b, command: ["{{bin}}/sb-testchild", "--print", "b-v1"]}
    - {id: c, command: ["{{bin}}/sb-testchild"]}
)";

// The argv of a live process, NULs turned into spaces.
std::string CmdlineOf(int pid) {
  std::string s = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
  for (char& ch : s) {
    if (ch == '\0') ch = ' ';
  }
  return s;
}

TEST(DaemonOperatorTest, ReloadOfAnInvalidFileChangesNothing) {
  DaemonHarness h(kReloadYaml);
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  const std::string good = ReadFile(h.config_path());
  const std::map<std::string, int> pids = Pids(StatusJson(h), {"a", "b", "c"});

  // An unknown strategy: the position of the value and the key path.
  std::string bad = good;
  ASSERT_TRUE(ReplaceFirst(&bad, "supervisor:\n", "supervisor:\n  strategy: one_for_none\n"));
  const size_t line = 1 + std::count(bad.begin(), bad.begin() + bad.find("  strategy:"), '\n');
  ASSERT_TRUE(WriteFile(h.config_path(), bad));
  size_t events = h.Events().size();
  std::string out;
  EXPECT_EQ(Sb(h, {"reload"}, &out), 2) << out;
  EXPECT_TRUE(Contains(
      out, h.config_path() + ":" + std::to_string(line) + ":13: key 'supervisor.strategy'"))
      << out;
  EXPECT_TRUE(Contains(out, "unknown strategy 'one_for_none'")) << out;
  EXPECT_FALSE(WaitUntil([&] { return h.Events().size() != events; }, milliseconds(500)));
  EXPECT_EQ(Pids(StatusJson(h), {"a", "b", "c"}), pids);

  // A YAML syntax error (an unclosed flow sequence): its position, nothing else to say.
  bad = good + "    - {id: d, command: [\"x\"\n";
  ASSERT_TRUE(WriteFile(h.config_path(), bad));
  EXPECT_EQ(Sb(h, {"reload"}, &out), 2) << out;
  EXPECT_TRUE(std::regex_search(
      out, std::regex(
               std::regex_replace(h.config_path(), std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
               R"(:\d+:\d+: )")))
      << out;
  EXPECT_FALSE(WaitUntil([&] { return h.Events().size() != events; }, milliseconds(500)));
  EXPECT_EQ(Pids(StatusJson(h), {"a", "b", "c"}), pids);

  // A valid file that the running tree cannot become (a duplicate id) is refused the same way.
  bad = good;
  ASSERT_TRUE(ReplaceFirst(&bad, "{id: c,", "{id: a,"));
  ASSERT_TRUE(WriteFile(h.config_path(), bad));
  EXPECT_EQ(Sb(h, {"reload"}, &out), 2) << out;
  EXPECT_TRUE(Contains(out, "duplicate id 'a'")) << out;
  EXPECT_TRUE(Contains(out, "key 'supervisor.children[2].id'")) << out;
  EXPECT_EQ(h.Events().size(), events);
  EXPECT_EQ(Pids(StatusJson(h), {"a", "b", "c"}), pids);

  // The same file again: nothing to do.
  ASSERT_TRUE(WriteFile(h.config_path(), good));
  EXPECT_EQ(Sb(h, {"reload"}, &out), 0) << out;
  EXPECT_EQ(out, "no changes\n");
  json::object raw = RawRequest(ControlPath(h), R"({"cmd":"reload"})");
  EXPECT_EQ(raw["ok"], json::value(true)) << json::serialize(raw);
  ASSERT_TRUE(raw.contains("changes") && raw["changes"].is_array()) << json::serialize(raw);
  EXPECT_TRUE(raw["changes"].get_array().empty())
      << "docs/CONTROL.md: an empty `changes` means nothing differed; got "
      << json::serialize(raw["changes"]);
  EXPECT_EQ(h.Events().size(), events);
  EXPECT_EQ(Pids(StatusJson(h), {"a", "b", "c"}), pids);
}

TEST(DaemonOperatorTest, ReloadStartsStopsAndRestartsOnlyWhatChanged) {
  DaemonHarness h(kReloadYaml);
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  const std::string base = ReadFile(h.config_path());
  const std::string b_line =
      R"(    - {id: b, command: [")" + BinPath("sb-testchild") + R"(", "--print", "b-v1"]})" + "\n";
  ASSERT_TRUE(Contains(base, b_line)) << base;
  json::object s = StatusJson(h);
  const std::map<std::string, int> pids = Pids(s, {"a", "b", "c"});

  // (b) an added child is started in its place; the others keep their processes.
  std::string next = base;
  ASSERT_TRUE(ReplaceFirst(&next, b_line,
                           b_line + R"(    - {id: d, command: [")" + BinPath("sb-testchild") +
                               R"(", "--print", "d-v1"]})" + "\n"));
  ASSERT_TRUE(WriteFile(h.config_path(), next));
  std::string out;
  ASSERT_EQ(Sb(h, {"reload"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "root: start d")) << out;
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "root"), (std::vector<std::string>{"a", "b", "d", "c"}));
  EXPECT_TRUE(Alive(PidIn(s, "d")));
  EXPECT_EQ(StateIn(s, "d"), "running");
  EXPECT_EQ(Pids(s, {"a", "b", "c"}), pids);

  // (c) a removed child is stopped.
  std::string removed = next;
  ASSERT_TRUE(ReplaceFirst(
      &removed, R"(    - {id: c, command: [")" + BinPath("sb-testchild") + "\"]}\n", ""));
  ASSERT_TRUE(WriteFile(h.config_path(), removed));
  size_t mark = h.Events().size();
  ASSERT_EQ(Sb(h, {"reload"}, &out), 0) << out;
  EXPECT_EQ(out, "root: stop c\n");
  s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "root"), (std::vector<std::string>{"a", "b", "d"}));
  EXPECT_FALSE(Alive(pids.at("c")));
  EXPECT_EQ(Trace(h.Events(), mark, {"a", "b", "c", "d"}, {"stopping", "stopped", "started"}),
            (std::vector<std::string>{"stopping:c", "stopped:c"}));
  const int d_pid = PidIn(s, "d");
  EXPECT_EQ(PidIn(s, "a"), pids.at("a"));
  EXPECT_EQ(PidIn(s, "b"), pids.at("b"));

  // (d) changed children are restarted, one at a time; the unchanged one keeps its pid.
  std::string changed = removed;
  ASSERT_TRUE(ReplaceFirst(&changed, "b-v1", "b-v2"));
  ASSERT_TRUE(ReplaceFirst(&changed, "d-v1", "d-v2"));
  ASSERT_TRUE(WriteFile(h.config_path(), changed));
  mark = h.Events().size();
  ASSERT_EQ(Sb(h, {"reload"}, &out), 0) << out;
  EXPECT_TRUE(Contains(out, "root: restart b")) << out;
  EXPECT_TRUE(Contains(out, "root: restart d")) << out;
  s = StatusJson(h);
  EXPECT_EQ(PidIn(s, "a"), pids.at("a"));
  EXPECT_FALSE(Alive(pids.at("b")));
  EXPECT_FALSE(Alive(d_pid));
  EXPECT_TRUE(Contains(CmdlineOf(PidIn(s, "b")), "b-v2")) << CmdlineOf(PidIn(s, "b"));
  EXPECT_TRUE(Contains(CmdlineOf(PidIn(s, "d")), "d-v2")) << CmdlineOf(PidIn(s, "d"));
  EXPECT_EQ(FieldIn(s, "b", "restarts"), 0);
  EXPECT_EQ(FieldIn(s, "root", "restarts_in_window"), 0);
  std::vector<std::string> trace =
      Trace(h.Events(), mark, {"a", "b", "d"}, {"stopping", "stopped", "started", "ready"});
  ASSERT_EQ(trace.size(), 8u) << ::testing::PrintToString(trace);
  for (size_t half : {0u, 4u}) {
    std::string id = trace[half].substr(trace[half].find(':') + 1);
    EXPECT_EQ(std::vector<std::string>(trace.begin() + half, trace.begin() + half + 4),
              (std::vector<std::string>{"stopping:" + id, "stopped:" + id, "started:" + id,
                                        "ready:" + id}))
        << "not one at a time: " << ::testing::PrintToString(trace);
  }

  // (e) nothing differs any more.
  const std::map<std::string, int> now = Pids(s, {"a", "b", "d"});
  ASSERT_EQ(Sb(h, {"reload"}, &out), 0) << out;
  EXPECT_EQ(out, "no changes\n");
  EXPECT_EQ(Pids(StatusJson(h), {"a", "b", "d"}), now);
}

TEST(DaemonOperatorTest, SighupReloadsLikeTheReloadCommand) {
  DaemonHarness h(kReloadYaml);
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  const std::string base = ReadFile(h.config_path());
  const std::map<std::string, int> pids = Pids(StatusJson(h), {"a", "b", "c"});

  // A bad file: logged, nothing changes, the daemon keeps running.
  std::string bad = base;
  ASSERT_TRUE(ReplaceFirst(&bad, "supervisor:\n", "supervisor:\n  strategy: one_for_none\n"));
  ASSERT_TRUE(WriteFile(h.config_path(), bad));
  size_t events = h.Events().size();
  ASSERT_TRUE(h.process().Signal(SIGHUP));
  EXPECT_TRUE(WaitUntil([&] { return Contains(h.log(), "reload failed"); }, kWait)) << h.log();
  EXPECT_TRUE(Contains(h.log(), "key 'supervisor.strategy'")) << h.log();
  EXPECT_TRUE(h.process().Running());
  EXPECT_EQ(h.Events().size(), events);
  EXPECT_EQ(Pids(StatusJson(h), {"a", "b", "c"}), pids);

  // A good one: added started, removed stopped, changed restarted, unchanged kept.
  std::string next = base;
  ASSERT_TRUE(ReplaceFirst(&next, "b-v1", "b-v2"));
  ASSERT_TRUE(ReplaceFirst(&next,
                           R"(    - {id: c, command: [")" + BinPath("sb-testchild") + "\"]}\n",
                           R"(    - {id: e, command: [")" + BinPath("sb-testchild") + "\"]}\n"));
  ASSERT_TRUE(WriteFile(h.config_path(), next));
  ASSERT_TRUE(h.process().Signal(SIGHUP));
  ASSERT_TRUE(h.WaitFor("e", "ready", 1, kWait)) << h.log();
  ASSERT_TRUE(h.WaitFor("b", "ready", 2, kWait)) << h.log();
  ASSERT_TRUE(WaitUntil([&] { return Contains(h.log(), "reload: root: start e"); }, kWait))
      << h.log();
  json::object s = StatusJson(h);
  EXPECT_EQ(ChildIds(s, "root"), (std::vector<std::string>{"a", "b", "e"}));
  EXPECT_EQ(PidIn(s, "a"), pids.at("a"));
  EXPECT_NE(PidIn(s, "b"), pids.at("b"));
  EXPECT_TRUE(Contains(CmdlineOf(PidIn(s, "b")), "b-v2"));
  EXPECT_FALSE(Alive(pids.at("c")));
  EXPECT_TRUE(Alive(PidIn(s, "e")));

  std::string out;
  EXPECT_EQ(Sb(h, {"reload"}, &out), 0) << out;
  EXPECT_EQ(out, "no changes\n");
}

// ---- backoff ------------------------------------------------------------------------------------

TEST(DaemonOperatorTest, BackoffDelaysGrowAndAreCapped) {
  DaemonHarness h(R"(
supervisor:
  intensity: 100
  period: 60s
  children:
    - {id: steady, command: ["{{bin}}/sb-testchild"]}
    - id: flappy
      command: ["{{bin}}/sb-testchild", "--crash-after", "0"]
      backoff: {initial: 200ms, max: 1s, factor: 2}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitFor("flappy", "started", 6, kWait)) << h.log();
  auto events = h.Events();
  auto started = FilterEvents(events, "flappy", "started");
  auto restarting = FilterEvents(events, "flappy", "restarting");
  ASSERT_GE(started.size(), 6u);
  ASSERT_GE(restarting.size(), 5u);
  const std::vector<int> delays_ms = {200, 400, 800, 1000, 1000};
  for (size_t i = 0; i < delays_ms.size(); ++i) {
    const double delay = delays_ms[i] / 1000.0;
    EXPECT_TRUE(Contains(restarting[i].reason, "backoff " + std::to_string(delays_ms[i]) + "ms"))
        << i << ": " << restarting[i].reason;
    EXPECT_GE(started[i + 1].ts - restarting[i].ts, delay - kTsSlack) << "restart " << i;
    const double interval = started[i + 1].ts - started[i].ts;
    EXPECT_GE(interval, delay - kTsSlack) << "restart " << i;
    EXPECT_LT(interval, delay + 1.5) << "restart " << i;
  }
  // Intensity still counts every restart, and the sibling is left alone meanwhile.
  json::object s = StatusJson(h);
  EXPECT_GE(FieldIn(s, "root", "restarts_in_window"), 5);
  EXPECT_GE(FieldIn(s, "flappy", "restarts"), 5);
  EXPECT_EQ(Count(h.Events(), "steady", "started"), 1u);
  EXPECT_EQ(StateIn(s, "steady"), "running");

  // `stop` during a backoff wait ends the loop: the pending restart never happens.
  std::string out;
  ASSERT_EQ(Sb(h, {"stop", "flappy"}, &out), 0) << out;
  const size_t starts = Count(h.Events(), "flappy", "started");
  EXPECT_FALSE(WaitUntil([&] { return Count(h.Events(), "flappy", "started") > starts; },
                         milliseconds(1'500)))
      << "a stopped child was restarted when its backoff elapsed";
  EXPECT_EQ(StateIn(StatusJson(h), "flappy"), "stopped");
}

TEST(DaemonOperatorTest, WithoutBackoffRestartsAreImmediate) {
  DaemonHarness h(R"(
supervisor:
  intensity: 1000
  period: 60s
  children:
    - id: flappy
      command: ["{{bin}}/sb-testchild", "--crash-after", "50"]
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitFor("flappy", "started", 6, kWait)) << h.log();
  auto events = h.Events();
  auto started = FilterEvents(events, "flappy", "started");
  auto exited = FilterEvents(events, "flappy", "exited");
  auto restarting = FilterEvents(events, "flappy", "restarting");
  ASSERT_GE(exited.size(), 5u);
  ASSERT_GE(restarting.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_FALSE(Contains(restarting[i].reason, "backoff")) << restarting[i].reason;
    EXPECT_LT(started[i + 1].ts - exited[i].ts, 0.5) << "restart " << i << " was delayed";
  }
}

// ---- the control socket's permissions -----------------------------------------------------------

TEST(DaemonOperatorTest, ControlSocketServesOnlyItsOwner) {
  DaemonHarness h(kReloadYaml);
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  struct stat st {};
  ASSERT_EQ(::stat(ControlPath(h).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << std::oct << (st.st_mode & 07777);
  EXPECT_EQ(st.st_uid, ::geteuid());

  if (::geteuid() != 0) {
    GTEST_SKIP() << "not root: cannot run the client as another user to check that it is refused";
  }
  const std::map<std::string, int> pids = Pids(StatusJson(h), {"a", "b", "c"});
  // Let `nobody` reach the socket file through its (0700) directory: only the socket's own mode
  // stands in the way now.
  ASSERT_EQ(::chmod(h.dir().path().c_str(), 0711), 0);
  const std::string out_file = h.dir().File("nobody.out");
  int status = RunAsNobody({"status", "--control", ControlPath(h)}, out_file, h.dir().path());
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << DescribeWaitStatus(status);
  EXPECT_NE(WEXITSTATUS(status), 126) << "could not become nobody";
  EXPECT_NE(WEXITSTATUS(status), 127) << "nobody could not execute a copy of switchboard";
  EXPECT_TRUE(WEXITSTATUS(status) == 1 || WEXITSTATUS(status) == 3)
      << "exit " << WEXITSTATUS(status) << ": " << ReadFile(out_file);
  EXPECT_FALSE(Contains(ReadFile(out_file), "root")) << ReadFile(out_file);

  // With the file opened up by hand, the daemon's own peer check still refuses the request.
  ASSERT_EQ(::chmod(ControlPath(h).c_str(), 0666), 0);
  status = RunAsNobody({"stop", "a", "--control", ControlPath(h)}, out_file, h.dir().path());
  ASSERT_EQ(::chmod(ControlPath(h).c_str(), 0600), 0);
  ASSERT_EQ(::chmod(h.dir().path().c_str(), 0700), 0);
  ASSERT_TRUE(status != -1 && WIFEXITED(status)) << DescribeWaitStatus(status);
  EXPECT_EQ(WEXITSTATUS(status), 1) << ReadFile(out_file);
  EXPECT_TRUE(Contains(ReadFile(out_file), "permission denied")) << ReadFile(out_file);

  // The daemon is unaffected.
  EXPECT_TRUE(h.process().Running());
  json::object s = StatusJson(h);
  ASSERT_FALSE(s.empty());
  EXPECT_EQ(Pids(s, {"a", "b", "c"}), pids);
  EXPECT_EQ(Count(h.Events(), "a", "stopping"), 0u);
}

// ---- file_sd ------------------------------------------------------------------------------------

TEST(DaemonOperatorTest, FileSdListsRunningEndpointsAndFollowsScale) {
  int base = FreePort();
  ASSERT_GT(base, 0);
  if (base > 65000) base = 40000;  // room for four replicas
  std::string yaml = R"(
node:
  name: sdnode
  control: {{dir}}/ctl.sock
  events: {{dir}}/events
  metrics: "127.0.0.1:0"
supervisor:
  children:
    - {id: plain, command: ["{{bin}}/sb-testchild"]}
    - id: web
      command: ["{{bin}}/sb-testchild", "--print", "serving on {{metrics}}"]
      metrics: "127.0.0.1:BASE"
      replicas: 2
)";
  ASSERT_TRUE(ReplaceFirst(&yaml, "BASE", std::to_string(base)));
  DaemonHarness h(yaml);
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  const std::string file = h.dir().File("sdnode.targets.json");
  auto endpoint = [&](int index) { return "127.0.0.1:" + std::to_string(base + index); };

  ASSERT_TRUE(WaitUntil(
      [&] {
        return TargetChildren(ReadTargets(file), "web.") == std::set<std::string>{"web.0", "web.1"};
      },
      kWait))
      << ReadFile(file);
  auto targets = ReadTargets(file);
  for (int i = 0; i < 2; ++i) {
    const SdEntry& e = targets["web." + std::to_string(i)];
    EXPECT_EQ(e.endpoint, endpoint(i));
    EXPECT_EQ(e.labels, (std::map<std::string, std::string>{{"node", "sdnode"},
                                                            {"child", "web." + std::to_string(i)},
                                                            {"supervisor", "root"}}));
  }
  EXPECT_FALSE(targets.contains("plain")) << "a child without `metrics` is not a target";
  json::object s = StatusJson(h);
  ASSERT_TRUE(s.contains("metrics_port"));
  EXPECT_EQ(targets["switchboard"].endpoint,
            "127.0.0.1:" + std::to_string(static_cast<int>(Num(s.if_contains("metrics_port")))));
  EXPECT_EQ(targets["switchboard"].labels["node"], "sdnode");
  // {{metrics}} reached the child.
  EXPECT_TRUE(Contains(CmdlineOf(PidIn(s, "web.1")), "serving on " + endpoint(1)));

  std::string out;
  ASSERT_EQ(Sb(h, {"scale", "web", "4"}, &out), 0) << out;
  ASSERT_TRUE(WaitUntil(
      [&] {
        return TargetChildren(ReadTargets(file), "web.") ==
               std::set<std::string>{"web.0", "web.1", "web.2", "web.3"};
      },
      kWait))
      << ReadFile(file);
  targets = ReadTargets(file);
  EXPECT_EQ(targets["web.3"].endpoint, endpoint(3));
  EXPECT_EQ(targets["web.3"].labels["supervisor"], "root");

  ASSERT_EQ(Sb(h, {"scale", "web", "1"}, &out), 0) << out;
  ASSERT_TRUE(WaitUntil(
      [&] { return TargetChildren(ReadTargets(file), "web.") == std::set<std::string>{"web.0"}; },
      kWait))
      << ReadFile(file);
  EXPECT_EQ(ReadTargets(file)["web.0"].endpoint, endpoint(0));

  // Only running children are listed.
  ASSERT_EQ(Sb(h, {"stop", "web.0"}, &out), 0) << out;
  ASSERT_TRUE(WaitUntil([&] { return TargetChildren(ReadTargets(file), "web.").empty(); }, kWait))
      << ReadFile(file);
  EXPECT_TRUE(ReadTargets(file).contains("switchboard"));
}

// ---- /metrics -----------------------------------------------------------------------------------

TEST(DaemonOperatorTest, MetricsEndpointPassesPromtoolAndFollowsTheTree) {
  const std::string promtool = FindPromtool();
  ASSERT_FALSE(promtool.empty())
      << "promtool (Debian package prometheus) is missing: run tools/install-deps.sh";
  DaemonHarness h(R"(
node:
  name: mnode
  control: {{dir}}/ctl.sock
  events: {{dir}}/events
  metrics: "127.0.0.1:0"
supervisor:
  intensity: 10
  period: 60s
  children:
    - {id: x, command: ["{{bin}}/sb-testchild"]}
    - {id: y, command: ["{{bin}}/sb-testchild"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  json::object s = StatusJson(h);
  const int port = static_cast<int>(Num(s.if_contains("metrics_port"), 0));
  ASSERT_GT(port, 0) << json::serialize(s);

  const std::map<std::string, std::string> x = {{"child", "x"}, {"node", "mnode"}};
  const std::map<std::string, std::string> y = {{"child", "y"}, {"node", "mnode"}};
  std::string body;
  ASSERT_TRUE(WaitUntil(
      [&] {
        body = Scrape(port);
        return Sample(body, "switchboard_child_up", x) == 1.0;
      },
      kWait))
      << body;
  std::string lint;
  EXPECT_EQ(PromtoolCheck(promtool, body, h.dir(), &lint), 0) << lint << "\n" << body;
  EXPECT_EQ(Sample(body, "switchboard_child_restarts_total", x), 0.0) << body;
  EXPECT_EQ(
      Sample(body, "switchboard_child_restarts_total", {{"child", "x"}, {"supervisor", "root"}}),
      0.0)
      << body;

  // Crash x: its restart counter moves.
  const int x_pid = PidIn(s, "x");
  ASSERT_TRUE(Alive(x_pid));
  ASSERT_EQ(::kill(x_pid, SIGKILL), 0);
  ASSERT_TRUE(h.WaitFor("x", "ready", 2, kWait)) << h.log();
  EXPECT_TRUE(WaitUntil(
      [&] {
        body = Scrape(port);
        return Sample(body, "switchboard_child_restarts_total", x) == 1.0 &&
               Sample(body, "switchboard_child_up", x) == 1.0;
      },
      kWait))
      << body;
  EXPECT_EQ(Sample(body, "switchboard_child_last_exit_status", x), 137.0) << body;
  EXPECT_EQ(Sample(body, "switchboard_child_restarts_total", y), 0.0) << body;

  // A stopped child is down.
  std::string out;
  ASSERT_EQ(Sb(h, {"stop", "y"}, &out), 0) << out;
  EXPECT_TRUE(WaitUntil(
      [&] {
        body = Scrape(port);
        return Sample(body, "switchboard_child_up", y) == 0.0;
      },
      kWait))
      << body;
  EXPECT_EQ(Sample(body, "switchboard_child_up", x), 1.0) << body;
  EXPECT_EQ(PromtoolCheck(promtool, body, h.dir(), &lint), 0) << lint << "\n" << body;
}

// ---- events -------------------------------------------------------------------------------------

TEST(DaemonOperatorTest, EventsStreamsUntilTheDaemonExits) {
  DaemonHarness h(R"(
supervisor:
  intensity: 10
  period: 60s
  children:
    - {id: probe, command: ["{{bin}}/sb-testchild"]}
    - {id: victim, command: ["{{bin}}/sb-testchild"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitReady(kWait)) << h.log();
  SpawnOptions opts;
  opts.args = {"events", "--control", ControlPath(h)};
  opts.output = h.dir().File("follower.out");
  auto follower = Process::Start(BinPath("switchboard"), opts);
  ASSERT_TRUE(follower.ok());
  Process& f = follower.value();

  // The follower prints nothing until an event comes: restart `probe` until one shows.
  std::string out;
  ASSERT_TRUE(WaitUntil(
      [&] {
        if (Contains(f.Output(), R"("id":"probe")")) return true;
        Sb(h, {"restart", "probe"}, &out);
        return Contains(f.Output(), R"("id":"probe")");
      },
      kWait))
      << f.Output();

  const int victim = h.PidOf("victim");
  ASSERT_GT(victim, 0);
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const std::string exited = R"("event":"exited","id":"victim","pid":)" + std::to_string(victim);
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::string o = f.Output();
        return Contains(o, exited) && Contains(o, R"("event":"restarting","id":"victim")") &&
               Contains(o, R"("event":"ready","id":"victim")");
      },
      kWait))
      << f.Output();
  std::string o = f.Output();
  EXPECT_TRUE(Contains(o, R"("signal":"SIGKILL")")) << o;
  EXPECT_LT(o.find(exited), o.find(R"("event":"restarting","id":"victim")")) << o;
  EXPECT_LT(o.find(R"("event":"restarting","id":"victim")"),
            o.find(R"("event":"ready","id":"victim")"))
      << o;
  // Every line is exactly one of the events file's lines.
  std::vector<std::string> file_lines = ReadLines(h.events_path());
  std::set<std::string> known(file_lines.begin(), file_lines.end());
  for (const std::string& line : ReadLines(f.output_path())) {
    EXPECT_TRUE(known.contains(line)) << line;
  }

  ASSERT_TRUE(f.Running());
  auto daemon_status = h.Stop(kWait);
  ASSERT_TRUE(daemon_status.has_value());
  int status = 0;
  ASSERT_TRUE(f.WaitExit(kWait, &status)) << "the follower did not end with the daemon";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  std::vector<std::string> lines = ReadLines(f.output_path());
  ASSERT_FALSE(lines.empty());
  EXPECT_TRUE(Contains(lines.back(), R"("event":"daemon_exit")")) << lines.back();
}

// ---- the control path cannot hold up supervision ------------------------------------------------

TEST(DaemonOperatorTest, SilentClientsAndAStalledFollowerDoNotBlockRestarts) {
  DaemonHarness h(R"(
supervisor:
  intensity: 1000
  period: 60s
  children:
    - {id: victim, command: ["{{bin}}/sb-testchild"]}
    - {id: chatty, command: ["{{bin}}/sb-testchild", "--crash-after", "100"]}
)");
  ASSERT_TRUE(h.started());
  ASSERT_TRUE(h.WaitFor("victim", "ready", 1, kWait)) << h.log();

  // Ten connections that never send a request, and a follower that never reads.
  std::vector<UniqueFd> silent;
  for (int i = 0; i < 10; ++i) {
    silent.push_back(ConnectUnix(ControlPath(h)));
    ASSERT_TRUE(silent.back().valid()) << i;
  }
  UniqueFd stalled = ConnectUnix(ControlPath(h), /*rcvbuf=*/1);
  ASSERT_TRUE(stalled.valid());
  ASSERT_TRUE(WriteAll(stalled.get(), "{\"cmd\":\"events\"}\n"));
  // Events flow to it (the crash-looping sibling) so its buffer fills up.
  ASSERT_TRUE(h.WaitFor("chatty", "started", 4, kWait)) << h.log();

  const int victim = h.PidOf("victim");
  ASSERT_GT(victim, 0);
  const size_t mark = h.Events().size();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  ASSERT_TRUE(h.WaitFor("victim", "ready", 2, milliseconds(5'000)))
      << "no restart within 5 s with idle control connections open\n"
      << h.log();
  auto events = h.Events();
  EXPECT_LT(First(events, mark, "victim", "ready").ts - First(events, mark, "victim", "exited").ts,
            3.0);

  // And the control socket still answers.
  std::string out;
  EXPECT_EQ(Sb(h, {"status"}, &out), 0) << out;
  EXPECT_NE(LineOf(out, "victim"), "") << out;
  EXPECT_TRUE(h.process().Running());
}

// ---- no daemon ----------------------------------------------------------------------------------

TEST(DaemonOperatorTest, ExitCodeThreeWhenNoDaemonIsRunning) {
  TempDir dir;
  std::string out;
  const std::string missing = dir.File("nobody-here.sock");
  for (std::vector<std::string> cmd : std::vector<std::vector<std::string>>{{"status"},
                                                                            {"status", "--json"},
                                                                            {"stop", "a"},
                                                                            {"scale", "a", "2"},
                                                                            {"reload"},
                                                                            {"events"}}) {
    cmd.push_back("--control");
    cmd.push_back(missing);
    EXPECT_EQ(RunSwitchboard(cmd, &out), 3) << cmd[0] << ": " << out;
    EXPECT_TRUE(Contains(out, "daemon not running")) << out;
    EXPECT_TRUE(Contains(out, missing)) << out;
  }

  // A socket file nobody listens on (a crashed daemon's) is "not running" too.
  const std::string stale = dir.File("stale.sock");
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, stale.c_str(), stale.size() + 1);
  ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(RunSwitchboard({"status", "--control", stale}, &out), 3) << out;
  EXPECT_TRUE(Contains(out, "daemon not running")) << out;
}

}  // namespace
}  // namespace sb::testutil
