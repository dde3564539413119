// Static files: what a shard started with --static DIR answers to a request
// for a path that is not its own (/socket, /healthz, /api).
//
// Owns: the decisions, pure and unit-tested — which paths static serving may
// answer, how a request target becomes a file name under the root or a
// refusal (traversal, encoded separators, NUL, backslashes, hidden names),
// the Content-Type of a name, the validators (ETag from size and mtime,
// Last-Modified) and the response (200, 304, HEAD, 405 and the refusals) —
// and one thin effect, StaticRoot::Read, which resolves a name under the
// root with realpath and reads the whole file. Does not: list directories,
// keep connections alive (every answer ends the connection, as the
// gateway's other HTTP answers do) or cache bodies in memory.
// Runs on the shard's loop thread; Read blocks it for one open and one read
// of at most kMaxStaticFileBytes (docs/WORKER.md says why that is accepted).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sb::worker {

// The largest file served. Bounds how long one request holds the loop (one
// read of a local file this size) and what one answer adds to a socket's
// queue (the size of --max-outbound's default). Larger files are refused 403.
inline constexpr size_t kMaxStaticFileBytes = size_t{1} << 20;

// The statuses static serving answers with, in the order the metric lists
// them (switchboard_worker_static_requests_total{status}).
inline constexpr std::array<int, 7> kStaticStatuses = {200, 304, 400, 403, 404, 405, 500};
// The index of `status` in kStaticStatuses (500's for any other).
size_t StaticStatusIndex(int status);

// False for the paths the shard answers itself, so that no file under the
// root shadows them: /socket and anything under it, /healthz, /api and
// anything under it. `path` is the target without its query.
bool IsStaticPath(std::string_view path);

// A request target ("/a/b.js?v=1") as a name relative to the root
// ("a/b.js"; "" for "/"), or the status and reason it is refused with.
// Percent-decoded once; refused: malformed escapes and encoded '/' (400),
// NUL and backslashes (400), "." and ".." segments (403), names starting
// with '.' (404: hidden files such as .git are not served).
struct StaticPath {
  int status = 0;  // 0: ok, `name` is set
  std::string name;
  std::string why;
};
StaticPath ParseStaticPath(std::string_view target);

// "text/html; charset=utf-8" for "index.html": by extension, lowercase
// compared; application/octet-stream for anything not listed.
std::string_view ContentTypeFor(std::string_view name);

// The Cache-Control for `name`: HTML is revalidated on every load
// ("no-cache"); the rest may be used for a minute without asking
// (docs/WORKER.md says why).
std::string_view CacheControlFor(std::string_view name);

// What Read found.
struct StaticFile {
  uint64_t size = 0;
  int64_t mtime_ns = 0;  // since the epoch
  std::string name;      // the file served (a directory's index.html), for its type
  std::string body;      // empty for HEAD
};

// The strong validator of a file: its size and mtime in nanoseconds, hex.
std::string ETagFor(uint64_t size, int64_t mtime_ns);
// RFC 9110 IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
std::string HttpDate(int64_t unix_s);
// True if an If-None-Match value ("*", or a list of entity tags, weak or
// strong) matches `etag` by the weak comparison RFC 9110 §13.1.2 asks for.
bool IfNoneMatchMatches(std::string_view if_none_match, std::string_view etag);

enum class StaticMethod : uint8_t { kGet, kHead, kOther };

// One complete answer: the head ("HTTP/1.1 ... \r\n\r\n") and the body.
struct StaticAnswer {
  int status = 0;
  std::string head;
  std::string body;
  std::string why;  // for the debug log, when refused
};

// The answer to a refusal `status` with `why` as its text body (HEAD: none).
StaticAnswer StaticRefusal(int status, std::string_view why, StaticMethod method);
// The answer for `file`: 304 when `if_none_match` matches its ETag, else
// 200 with the body (HEAD: the same head, no body).
StaticAnswer StaticFileAnswer(StaticFile file, StaticMethod method,
                              std::optional<std::string_view> if_none_match);

// The effect: the files under one root directory.
class StaticRoot {
 public:
  // `dir` is resolved again on every request, so a root made after the
  // shard started (a build) is served without a restart.
  explicit StaticRoot(std::string dir) : dir_(std::move(dir)) {}

  // Whether the root is a readable directory now (checked at start, for
  // the log).
  bool Usable(std::string* why) const;

  struct Found {
    int status = 0;  // 0: found, `file` is set; else 403, 404 or 500 with `why`
    StaticFile file;
    std::string why;
  };
  // The file `name` (from ParseStaticPath) names: realpath must land inside
  // the root (a symlink out of it is refused 403); a directory stands for
  // its index.html (none: 404); only regular files of at most
  // kMaxStaticFileBytes are read (larger: 403). `with_body` false: only
  // stat it (HEAD).
  Found Read(std::string_view name, bool with_body) const;

  // The whole request: method, then path, then file, then validators.
  StaticAnswer Answer(StaticMethod method, std::string_view target,
                      std::optional<std::string_view> if_none_match) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace sb::worker
