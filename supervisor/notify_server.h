// NotifyServer: the daemon's end of the systemd notify protocol.
//
// Owns: one unix datagram socket whose path children get as NOTIFY_SOCKET,
// with SO_PASSCRED so every datagram carries the sender's pid (that is how a
// READY=1 is tied to a child, as systemd does; a datagram without
// credentials is ignored). Does not: decide whose readiness counts (the
// daemon maps pids to children) or block: Drain() reads what is queued.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/unique_fd.h"

namespace sb::supervisor {

class NotifyServer {
 public:
  // Binds `path` (a stale socket file there is replaced). Mode 0600.
  static Result<std::unique_ptr<NotifyServer>> Create(const std::string& path);
  ~NotifyServer();

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

  // Reads every queued datagram; calls `on_status(pid, value)` for each
  // STATUS= line in it (an upgrade's report, docs/UPGRADE.md), then
  // `on_ready(pid)` if it contains the assignment READY=1 on a line of its own.
  void Drain(const std::function<void(pid_t)>& on_ready,
             const std::function<void(pid_t, std::string_view)>& on_status = {});

 private:
  NotifyServer(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

// True if a notify datagram contains the line "READY=1".
bool NotifyHasReady(std::string_view datagram);
// The value of the datagram's last STATUS= line, if it has one.
std::optional<std::string_view> NotifyStatus(std::string_view datagram);

}  // namespace sb::supervisor
