#include "supervisor/event_log.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>

#include "supervisor/runtime_dir.h"

namespace sb::supervisor {

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "SIG" + std::to_string(sig);
}

std::string EncodeEventLine(double ts, const TreeEvent& ev) {
  boost::json::object o;
  o["event"] = EventName(ev.kind);
  o["id"] = ev.id;
  o["pid"] = ev.pid ? boost::json::value(*ev.pid) : boost::json::value(nullptr);
  o["status"] = ev.status ? boost::json::value(*ev.status) : boost::json::value(nullptr);
  o["signal"] =
      ev.signal ? boost::json::value(SignalName(*ev.signal)) : boost::json::value(nullptr);
  if (!ev.reason.empty()) o["reason"] = ev.reason;
  // upgraded: null when the new process did not say (docs/UPGRADE.md).
  if (ev.kind == EventKind::kUpgraded) {
    o["connections"] = ev.connections ? boost::json::value(*ev.connections) : nullptr;
    o["ms"] = ev.ms ? boost::json::value(*ev.ms) : nullptr;
  }
  // `ts` first, as a plain decimal with microseconds ("12.345678"): Boost.JSON
  // would print a double in exponent form, valid but unkind to people.
  char tsbuf[48];
  std::snprintf(tsbuf, sizeof tsbuf, "{\"ts\":%.6f,", ts);
  std::string body = boost::json::serialize(o);
  return tsbuf + body.substr(1) + "\n";
}

Result<std::unique_ptr<EventLog>> EventLog::Open(const std::string& path) {
  UniqueFd fd;
  if (!path.empty()) {
    std::string dir = std::filesystem::path(path).parent_path().string();
    Status trusted = CheckTrustedDir(dir.empty() ? "." : dir, "events file directory");
    if (!trusted.ok()) return trusted;
    // O_NOFOLLOW: a symlink put in our place would send our writes elsewhere.
    // O_NONBLOCK: a FIFO there must not block the open.
    fd.Reset(::open(path.c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640));
    if (!fd.valid() && errno == ELOOP) {
      return Status::InvalidConfig("events file " + path +
                                   " is a symbolic link; the daemon does not follow one there");
    }
    if (!fd.valid()) return Status::IoError("open " + path + ": " + strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) {
      return Status::InvalidConfig("events file " + path + " is not a regular file");
    }
  }
  return std::unique_ptr<EventLog>(new EventLog(path, std::move(fd)));
}

Status EventLog::WriteLine(const std::string& line) {
  if (!fd_.valid()) return Status::Ok();
  const std::string out = torn_ ? "\n" + line : line;
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::write(fd_.get(), out.data() + done, out.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // A full disk must not stop supervision: the event is lost, the tree is
    // not. A short write already put part of the line in the file: cut it off
    // (with O_APPEND our offset is the end of what we wrote).
    const int err = n < 0 ? errno : ENOSPC;
    if (done > 0) {
      off_t end = ::lseek(fd_.get(), 0, SEEK_CUR);
      if (end < 0 || ::ftruncate(fd_.get(), end - static_cast<off_t>(done)) < 0) torn_ = true;
    }
    return Status::IoError("write " + path_ + ": " + strerror(err));
  }
  torn_ = false;
  return Status::Ok();
}

}  // namespace sb::supervisor
