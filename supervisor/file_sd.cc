#include "supervisor/file_sd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <tuple>
#include <utility>

#include "common/metric_names.h"
#include "common/unique_fd.h"

namespace sb::supervisor {

namespace {

Status Errno(const std::string& what, const std::string& file) {
  return Status::IoError(what + " " + file + ": " + strerror(errno));
}

}  // namespace

SdTarget ChildSdTarget(const std::string& node, const std::string& child_id,
                       const std::string& supervisor_path, const std::string& endpoint) {
  return SdTarget{endpoint,
                  {{std::string(metrics::kLabelNode), node},
                   {std::string(metrics::kLabelChild), child_id},
                   {std::string(metrics::kLabelSupervisor), supervisor_path}}};
}

std::string RenderFileSd(const std::vector<SdTarget>& targets) {
  std::vector<const SdTarget*> sorted;
  sorted.reserve(targets.size());
  for (const SdTarget& t : targets) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](const SdTarget* a, const SdTarget* b) {
    return std::tie(a->endpoint, a->labels) < std::tie(b->endpoint, b->labels);
  });
  if (sorted.empty()) return "[]\n";
  std::string out = "[\n";
  for (size_t i = 0; i < sorted.size(); ++i) {
    boost::json::object group;
    group["targets"] = boost::json::array{boost::json::string(sorted[i]->endpoint)};
    boost::json::object labels;
    for (const auto& [name, value] : sorted[i]->labels) labels[name] = value;
    group["labels"] = std::move(labels);
    out += "  " + boost::json::serialize(group) + (i + 1 < sorted.size() ? ",\n" : "\n");
  }
  out += "]\n";
  return out;
}

Status WriteFileAtomic(const std::string& path, const std::string& content) {
  // A fresh file under an unpredictable name (mkostemp: O_EXCL, never
  // through a symlink): nobody can have prepared the name for us to write
  // through, and no file of someone else's is truncated.
  std::string tmp = path + ".tmp.XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return Errno("create", tmp);
  auto fail = [&](const std::string& what) {
    Status s = Errno(what, tmp);
    fd.Reset();
    ::unlink(tmp.c_str());
    return s;
  };
  if (::fchmod(fd.get(), 0644) < 0) return fail("chmod");
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write");
    done += static_cast<size_t>(n);
  }
  // fsync before rename: otherwise a crash could leave the new name pointing
  // at an empty file. The directory is not fsynced: after a crash either the
  // old or the new complete file is there, and the daemon rewrites it at start.
  if (::fsync(fd.get()) < 0) return fail("fsync");
  if (::close(fd.Release()) < 0) return fail("close");
  // rename() replaces whatever is at `path`, a symlink included, without
  // following it.
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    Status s = Errno("rename " + tmp + " to", path);
    ::unlink(tmp.c_str());
    return s;
  }
  return Status::Ok();
}

FileSdWriter::FileSdWriter(std::string path) : path_(std::move(path)) {}

void FileSdWriter::Set(const std::string& key, std::optional<SdTarget> target) {
  auto it = targets_.find(key);
  if (!target) {
    if (it == targets_.end()) return;
    targets_.erase(it);
  } else if (it == targets_.end()) {
    targets_.emplace(key, std::move(*target));
  } else if (it->second == *target) {
    return;
  } else {
    it->second = std::move(*target);
  }
  dirty_ = true;
}

Status FileSdWriter::Flush() {
  if (!dirty_ || path_.empty()) return Status::Ok();
  std::vector<SdTarget> targets;
  targets.reserve(targets_.size());
  for (const auto& [key, target] : targets_) targets.push_back(target);
  std::string content = RenderFileSd(targets);
  // A remove followed by an add of the same target within one turn (a quick
  // restart) leaves the content as it was: nothing to write.
  if (written_ && *written_ == content) {
    dirty_ = false;
    return Status::Ok();
  }
  Status s = WriteFileAtomic(path_, content);
  if (!s.ok()) return s;
  written_ = std::move(content);
  dirty_ = false;
  ++writes_;
  return Status::Ok();
}

}  // namespace sb::supervisor
