// File-based service discovery: the Prometheus `file_sd_configs` file that
// lists the metrics endpoint of every running child (node.file_sd).
//
// Owns: the JSON rendering, the atomic replace (temp file, fsync, rename, so
// Prometheus never reads half a file) and FileSdWriter's current target set.
// Runs on the daemon's loop thread; its small blocking writes happen at most
// once per loop turn, and only when the set changed. Does not: decide which
// children run (the daemon calls Set), create directories, or watch the file.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace sb::supervisor {

// One scrape target: "host:port" and the labels Prometheus attaches to it.
struct SdTarget {
  std::string endpoint;
  std::map<std::string, std::string> labels;
  bool operator==(const SdTarget&) const = default;
};

// The target of a child's `metrics` endpoint, labelled node, child and
// supervisor (label names from common/metric_names.h).
SdTarget ChildSdTarget(const std::string& node, const std::string& child_id,
                       const std::string& supervisor_path, const std::string& endpoint);

// file_sd_configs JSON, one target group per target, one group per line:
//   [{"targets":["127.0.0.1:9500"],"labels":{"child":"shard.0","node":"node1",
//     "supervisor":"root/shards"}}, ...]
// Deterministic: groups sorted by endpoint (then labels), labels by name.
// No targets gives "[]".
std::string RenderFileSd(const std::vector<SdTarget>& targets);

// Replaces `path` with `content` atomically: writes a new <path>.tmp.XXXXXX
// (mkostemp: a random name, created exclusively, so nothing planted there is
// followed or truncated; then mode 0644, so a Prometheus running as another
// user can read it), fsyncs it and renames it over `path` (a symlink there is
// replaced, not followed). On failure the temp file is removed and `path` is
// left as it was.
Status WriteFileAtomic(const std::string& path, const std::string& content);

// Keeps the current target set and rewrites the file only when it changed.
class FileSdWriter {
 public:
  // An empty path gives a writer that never writes.
  explicit FileSdWriter(std::string path);

  // Adds or replaces the target under `key` (the child id); nullopt removes it.
  void Set(const std::string& key, std::optional<SdTarget> target);

  // Writes the file if the set changed since the last successful write; the
  // first call always writes, replacing a file left by an earlier daemon.
  // Call once per loop turn (BeforeSleep), so a group restart is one write.
  // After a failure the write stays pending and the next Flush retries it.
  Status Flush();

  const std::string& path() const { return path_; }
  int writes() const { return writes_; }  // successful writes so far

 private:
  std::string path_;
  std::map<std::string, SdTarget> targets_;
  bool dirty_ = true;
  std::optional<std::string> written_;  // content of the last successful write
  int writes_ = 0;
};

}  // namespace sb::supervisor
