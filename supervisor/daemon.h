// Daemon: `switchboard run` — the thin effects layer around TreeEngine.
//
// Owns: the event loop and every OS resource of a running node: the
// listening sockets from YAML, the NOTIFY_SOCKET server, one pidfd and two
// output pipes per live child, the signalfd (SIGTERM/SIGINT stop the tree),
// timers, and the event log. It performs the engine's Actions (fork/exec,
// signal a process group, arm a timer, write an event) and feeds what
// happens back into the engine. All decisions are the engine's. It starts
// only in runtime directories no other user can write (runtime_dir.h). One
// thread; nothing here blocks except the brief fork/exec handshake, and
// reaping a child killed because the loop could not watch its exit.
#pragma once

#include <sys/types.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/unique_fd.h"
#include "supervisor/control_server.h"
#include "supervisor/event_log.h"
#include "supervisor/file_sd.h"
#include "supervisor/line_splitter.h"
#include "supervisor/listen_sockets.h"
#include "supervisor/notify_server.h"
#include "supervisor/supervisor_metrics.h"
#include "supervisor/tree_engine.h"
#include "supervisor/tree_spec.h"

namespace sb::supervisor {

class Daemon {
 public:
  // `config_path` is re-read on reload (control request or SIGHUP).
  static Result<std::unique_ptr<Daemon>> Create(TreeSpec spec, std::string config_path);
  ~Daemon();

  // Starts the tree and runs until the root is gone. Returns the exit code:
  // 0 after a requested stop, 1 if the root gave up or failed to start.
  int Run();

 private:
  Daemon(TreeSpec spec, std::string config_path);
  Status Init();
  Status StartMetrics();

  struct Proc {
    std::string id;
    pid_t pid = -1;
    UniqueFd pidfd;
    UniqueFd out, err;
    LineSplitter out_lines, err_lines;
  };

  void Drive();                   // performs the engine's actions until none are left
  void Perform(const Action& a);  // one action
  void DoSpawn(const action::Spawn& s);
  // SIGKILLs a process just launched (and its group) and waits for it: the
  // one blocking wait, for a process whose exit the loop cannot watch.
  static void KillAndReap(pid_t pid, int pidfd);
  void OnProcExit(Token token);
  void OnOutput(Token token, bool is_err);
  void CloseOutput(Proc& p, bool is_err);
  void OnNotify();
  std::optional<Token> TokenOf(pid_t pid) const;  // the incarnation a notify sender speaks for
  void OnSignal();
  void Emit(const TreeEvent& ev);
  static Time Now();

  // Operator interface (daemon_control.cc).
  void OnControl(const boost::json::object& request, ControlServer::Reply reply);
  void OnReply(const action::Reply& r);
  boost::json::object StatusReply();
  // Re-reads the config, diffs it against what runs, applies it. `done` gets
  // the outcome (a reply for a client, or a log line for SIGHUP).
  void Reload(std::function<void(Status, std::vector<std::string> changes)> done);
  // Metrics and file_sd follow the tree; refreshed once per loop turn when
  // something changed (BeforeSleep), and every second for gauges (Cron).
  void RefreshObservers();

  TreeSpec spec_;
  std::string config_path_;
  Time started_at_{0};
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<TreeEngine> engine_;
  std::unique_ptr<NotifyServer> notify_;
  std::unique_ptr<EventLog> events_;
  ListenSockets sockets_;
  UniqueFd signal_fd_;
  UniqueFd lock_fd_;         // flock held for the daemon's life: one daemon per node
  std::string child_path_;   // PATH for children: our own bin dir first
  std::string handoff_dir_;  // <runtime dir>/handoff: SWITCHBOARD_HANDOFF_SOCKET paths
  std::deque<Action> pending_;
  std::unordered_map<Token, Proc> procs_;    // live incarnations
  std::unordered_map<pid_t, Token> by_pid_;  // for READY=1 datagrams
  std::unordered_map<TimerToken, EventLoop::TimerId> timers_;
  int exit_code_ = 0;

  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<SupervisorMetrics> metrics_;
  std::unique_ptr<FileSdWriter> file_sd_;
  bool observers_dirty_ = true;
  RequestId next_request_ = 1;
  struct Pending {
    std::function<void(const action::Reply&)> done;
  };
  std::unordered_map<RequestId, Pending> requests_;
  bool reloading_ = false;
  std::set<std::string> known_children_;     // worker ids at the last observer refresh
  std::set<std::string> known_supervisors_;  // supervisor ids at the last observer refresh
  std::string file_sd_error_;                // last file_sd write error, said once
  int events_lost_ = 0;                      // events not written since the last one that was
};

}  // namespace sb::supervisor
