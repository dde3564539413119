#include "broker/ipc_endpoint.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sb::broker {

namespace {

constexpr std::string_view kIpcScheme = "ipc://";

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

}  // namespace

std::optional<std::string> IpcPath(std::string_view endpoint) {
  if (!endpoint.starts_with(kIpcScheme)) return std::nullopt;
  return std::string(endpoint.substr(kIpcScheme.size()));
}

Status CheckIpcDirectory(const std::string& path, uid_t uid) {
  const std::string what = "ipc endpoint " + path;
  if (path.empty() || path == "*" || path.starts_with('@')) {
    return Status::Refused(what +
                           ": only a path in a directory of our own is accepted "
                           "(not the abstract namespace, not a wildcard)");
  }
  const size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  if (dir.empty()) dir = "/";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return Status::IoError(what + ": directory " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return Status::Refused(what + ": " + dir + " is not a directory");
  // Whoever may write the directory may replace the socket with their own.
  if (st.st_uid != uid) {
    return Status::Refused(what + ": directory " + dir + " is owned by uid " +
                           std::to_string(st.st_uid) + ", not by us (" + std::to_string(uid) + ")");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Status::Refused(what + ": directory " + dir + " is writable by group or others (mode " +
                           Octal(st.st_mode) + ")");
  }
  return Status::Ok();
}

Status RestrictIpcSocket(const std::string& path) {
  if (::chmod(path.c_str(), S_IRUSR | S_IWUSR) != 0) {
    return Status::IoError("chmod 0600 " + path + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

ScopedUmask::ScopedUmask(mode_t mask) : old_(::umask(mask)) {}

ScopedUmask::~ScopedUmask() { ::umask(old_); }

}  // namespace sb::broker
