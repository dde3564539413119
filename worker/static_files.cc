#include "worker/static_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <utility>

#include "common/unique_fd.h"

namespace sb::worker {

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "/a" is "/a" itself or anything under "/a/".
bool IsOrUnder(std::string_view path, std::string_view prefix) {
  return path == prefix || (path.starts_with(prefix) && path[prefix.size()] == '/');
}

std::string_view Extension(std::string_view name) {
  size_t slash = name.rfind('/');
  std::string_view base = slash == std::string_view::npos ? name : name.substr(slash + 1);
  size_t dot = base.rfind('.');
  return dot == std::string_view::npos ? std::string_view{} : base.substr(dot + 1);
}

bool EqualsLower(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    default:
      return "Internal Server Error";
  }
}

std::string StatusLine(int status) {
  std::string line = "HTTP/1.1 " + std::to_string(status) + " ";
  line += ReasonPhrase(status);
  line += "\r\n";
  return line;
}

// Headers every answer carries: the browser must not guess a type other
// than the one named, and the connection ends after the answer.
constexpr std::string_view kCommonHeaders =
    "X-Content-Type-Options: nosniff\r\nConnection: close\r\n";

// realpath(3) as a string; nullopt with errno set.
std::optional<std::string> RealPath(const std::string& path) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (!r) return std::nullopt;
  std::string out(r);
  std::free(r);
  return out;
}

bool Inside(const std::string& resolved, const std::string& root) {
  if (root == "/") return true;
  return IsOrUnder(resolved, root);
}

int StatusForErrno(int e) { return e == EACCES || e == EPERM ? 403 : 404; }

}  // namespace

size_t StaticStatusIndex(int status) {
  for (size_t i = 0; i < kStaticStatuses.size(); ++i) {
    if (kStaticStatuses[i] == status) return i;
  }
  return StaticStatusIndex(500);
}

bool IsStaticPath(std::string_view path) {
  return !IsOrUnder(path, "/socket") && path != "/healthz" && !IsOrUnder(path, "/api");
}

StaticPath ParseStaticPath(std::string_view target) {
  StaticPath out;
  std::string_view path = target.substr(0, target.find('?'));
  auto refuse = [&out](int status, std::string why) {
    out.status = status;
    out.why = std::move(why);
    return out;
  };
  if (path.empty() || path.front() != '/') return refuse(400, "the path does not start with '/'");
  std::string decoded;
  decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c == '%') {
      if (i + 2 >= path.size() || HexDigit(path[i + 1]) < 0 || HexDigit(path[i + 2]) < 0) {
        return refuse(400, "malformed percent-escape");
      }
      c = static_cast<char>(HexDigit(path[i + 1]) * 16 + HexDigit(path[i + 2]));
      i += 2;
      // An encoded separator would name a different file than the path
      // shows: refused rather than guessed at.
      if (c == '/') return refuse(400, "encoded '/' in the path");
    }
    if (c == '\0') return refuse(400, "NUL in the path");
    if (c == '\\') return refuse(400, "backslash in the path");
    decoded += c;
  }
  std::string_view rest = decoded;
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    std::string_view segment = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    if (segment.empty()) continue;
    if (segment == "." || segment == "..") return refuse(403, "'.' or '..' in the path");
    if (segment.front() == '.') return refuse(404, "hidden names are not served");
    if (!out.name.empty()) out.name += '/';
    out.name += segment;
  }
  return out;
}

std::string_view ContentTypeFor(std::string_view name) {
  struct Type {
    std::string_view ext, type;
  };
  static constexpr Type kTypes[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      // RFC 9239: text/javascript; a module script is refused by the
      // browser unless its type is a JavaScript one.
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"ico", "image/x-icon"},
      {"json", "application/json"},
      {"map", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
  };
  std::string_view ext = Extension(name);
  for (const Type& t : kTypes) {
    if (EqualsLower(ext, t.ext)) return t.type;
  }
  return "application/octet-stream";
}

std::string_view CacheControlFor(std::string_view name) {
  std::string_view ext = Extension(name);
  if (EqualsLower(ext, "html") || EqualsLower(ext, "htm")) return "no-cache";
  return "max-age=60";
}

std::string ETagFor(uint64_t size, int64_t mtime_ns) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "\"%llx-%llx\"", static_cast<unsigned long long>(size),
                static_cast<unsigned long long>(mtime_ns));
  return buf;
}

std::string HttpDate(int64_t unix_s) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7],
                tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

bool IfNoneMatchMatches(std::string_view if_none_match, std::string_view etag) {
  auto opaque = [](std::string_view tag) {
    tag = Trim(tag);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    return tag;
  };
  std::string_view list = Trim(if_none_match);
  if (list == "*") return true;
  std::string_view want = opaque(etag);
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = opaque(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    if (!item.empty() && item == want) return true;
  }
  return false;
}

StaticAnswer StaticRefusal(int status, std::string_view why, StaticMethod method) {
  StaticAnswer a;
  a.status = status;
  a.why = std::string(why);
  std::string body = a.why + "\n";
  a.head = StatusLine(status);
  a.head +=
      "Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n";
  if (status == 405) a.head += "Allow: GET, HEAD\r\n";
  a.head += kCommonHeaders;
  a.head += "\r\n";
  if (method != StaticMethod::kHead) a.body = std::move(body);
  return a;
}

StaticAnswer StaticFileAnswer(StaticFile file, StaticMethod method,
                              std::optional<std::string_view> if_none_match) {
  StaticAnswer a;
  std::string etag = ETagFor(file.size, file.mtime_ns);
  std::string validators = "ETag: " + etag +
                           "\r\nLast-Modified: " + HttpDate(file.mtime_ns / 1000000000) +
                           "\r\nCache-Control: ";
  validators += CacheControlFor(file.name);
  validators += "\r\n";
  if (if_none_match && IfNoneMatchMatches(*if_none_match, etag)) {
    a.status = 304;
    a.head = StatusLine(304) + validators;
  } else {
    a.status = 200;
    a.head = StatusLine(200);
    a.head += "Content-Type: ";
    a.head += ContentTypeFor(file.name);
    a.head += "\r\nContent-Length: " + std::to_string(file.size) + "\r\n" + validators;
    if (method != StaticMethod::kHead) a.body = std::move(file.body);
  }
  a.head += kCommonHeaders;
  a.head += "\r\n";
  return a;
}

bool StaticRoot::Usable(std::string* why) const {
  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0) {
    *why = std::strerror(errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    *why = "not a directory";
    return false;
  }
  if (::access(dir_.c_str(), R_OK | X_OK) != 0) {
    *why = std::strerror(errno);
    return false;
  }
  return true;
}

StaticRoot::Found StaticRoot::Read(std::string_view name, bool with_body) const {
  Found f;
  auto fail = [&f](int status, std::string why) {
    f.status = status;
    f.why = std::move(why);
    return f;
  };
  std::optional<std::string> root = RealPath(dir_);
  if (!root) return fail(404, "the static root " + dir_ + ": " + std::strerror(errno));
  std::string path = name.empty() ? *root : *root + "/" + std::string(name);
  // Twice at most: the name, then a directory's index.html.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::optional<std::string> resolved = RealPath(path);
    if (!resolved) return fail(StatusForErrno(errno), path + ": " + std::strerror(errno));
    // Symlinks inside the root are followed; one that leads out is refused.
    if (!Inside(*resolved, *root)) return fail(403, path + " resolves outside the static root");
    // O_NONBLOCK: opening a FIFO someone left in the tree must not block
    // the loop. O_NOFOLLOW: the resolved path has no links left; one put in
    // its place since is refused rather than followed.
    UniqueFd fd(::open(resolved->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd.valid()) return fail(StatusForErrno(errno), *resolved + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return fail(500, *resolved + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) {
      if (attempt == 1) break;
      path = *resolved + "/index.html";
      continue;
    }
    if (!S_ISREG(st.st_mode)) return fail(404, *resolved + ": not a regular file");
    if (static_cast<uint64_t>(st.st_size) > kMaxStaticFileBytes) {
      return fail(403, *resolved + ": larger than " + std::to_string(kMaxStaticFileBytes) +
                           " bytes, the most served");
    }
    f.file.size = static_cast<uint64_t>(st.st_size);
    f.file.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    f.file.name = *resolved;
    if (with_body) {
      f.file.body.resize(f.file.size);
      size_t got = 0;
      while (got < f.file.body.size()) {
        ssize_t n = ::pread(fd.get(), f.file.body.data() + got, f.file.body.size() - got,
                            static_cast<off_t>(got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(500, *resolved + ": " + std::strerror(errno));
        if (n == 0) break;  // shrank since fstat: serve what is there
        got += static_cast<size_t>(n);
      }
      f.file.body.resize(got);
      f.file.size = got;
    }
    return f;
  }
  return fail(404, "a directory without index.html (no listing)");
}

StaticAnswer StaticRoot::Answer(StaticMethod method, std::string_view target,
                                std::optional<std::string_view> if_none_match) const {
  if (method == StaticMethod::kOther) return StaticRefusal(405, "use GET or HEAD", method);
  StaticPath p = ParseStaticPath(target);
  if (p.status != 0) return StaticRefusal(p.status, p.why, method);
  Found found = Read(p.name, method == StaticMethod::kGet);
  if (found.status != 0) {
    // The client learns the status only; the log gets the file system's words.
    StaticAnswer a = StaticRefusal(found.status, ReasonPhrase(found.status), method);
    a.why = std::move(found.why);
    return a;
  }
  return StaticFileAnswer(std::move(found.file), method, if_none_match);
}

}  // namespace sb::worker
