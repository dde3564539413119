#include "supervisor/runtime_dir.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

namespace sb::supervisor {

namespace {

std::string Octal(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

bool Trusted(uid_t owner, uid_t euid) { return owner == euid || owner == 0; }

std::string Owners(uid_t euid) {
  return euid == 0 ? "only root may own it"
                   : "only this user (uid " + std::to_string(euid) + ") or root may own it";
}

}  // namespace

std::string DistrustReason(const struct stat& st, const struct stat* link, uid_t euid) {
  if (link != nullptr && !Trusted(link->st_uid, euid)) {
    return "is a symbolic link owned by uid " + std::to_string(link->st_uid) + "; " + Owners(euid);
  }
  if (!S_ISDIR(st.st_mode)) return "is not a directory";
  if (!Trusted(st.st_uid, euid)) {
    return "is owned by uid " + std::to_string(st.st_uid) + "; " + Owners(euid);
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return "is writable by its group or others (mode " + Octal(st.st_mode) +
           "); only its owner may write it (chmod go-w)";
  }
  return "";
}

Status CheckTrustedDir(const std::string& dir, const std::string& what) {
  struct stat link {};
  if (::lstat(dir.c_str(), &link) < 0) {
    return Status::IoError("stat " + what + " " + dir + ": " + strerror(errno));
  }
  struct stat st = link;
  const bool is_link = S_ISLNK(link.st_mode);
  if (is_link && ::stat(dir.c_str(), &st) < 0) {
    return Status::IoError("stat " + what + " " + dir + ": " + strerror(errno));
  }
  std::string why = DistrustReason(st, is_link ? &link : nullptr, ::geteuid());
  if (!why.empty()) return Status::InvalidConfig(what + " " + dir + " " + why);
  return Status::Ok();
}

Status EnsureRuntimeDir(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path p(dir);
  if (p.has_parent_path() && !std::filesystem::exists(p.parent_path(), ec)) {
    std::filesystem::create_directories(p.parent_path(), ec);
    if (ec) return Status::IoError("create " + p.parent_path().string() + ": " + ec.message());
  }
  // Made 0700 from the start: there is no moment when it is open to others.
  if (::mkdir(dir.c_str(), 0700) < 0 && errno != EEXIST) {
    return Status::IoError("create runtime directory " + dir + ": " + strerror(errno));
  }
  return CheckTrustedDir(dir, "runtime directory");
}

}  // namespace sb::supervisor
