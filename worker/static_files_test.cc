// Static files (--static): paths, refusals, types, validators and the files
// read under a real temporary root.

#include "worker/static_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace sb::worker {
namespace {

namespace fs = std::filesystem;

TEST(StaticFilesTest, TheShardsOwnPathsAreNeverStatic) {
  for (const char* path : {"/socket", "/socket/websocket", "/socket/longpoll", "/healthz", "/api",
                           "/api/", "/api/topics"}) {
    EXPECT_FALSE(IsStaticPath(path)) << path;
  }
  for (const char* path : {"/", "/index.html", "/app.js", "/sockets", "/apis", "/healthz/x",
                           "/healthzz", "/x/socket"}) {
    EXPECT_TRUE(IsStaticPath(path)) << path;
  }
}

TEST(StaticFilesTest, TargetsBecomeNamesUnderTheRoot) {
  struct Case {
    const char* target;
    const char* name;
  };
  for (const Case& c :
       {Case{"/", ""}, Case{"/index.html", "index.html"}, Case{"/a/b.js?v=1&x=/../..", "a/b.js"},
        Case{"//a///b/", "a/b"}, Case{"/a%20b.txt", "a b.txt"}, Case{"/%252e%252e/x", "%2e%2e/x"},
        Case{"/a..b/c...", "a..b/c..."}}) {
    StaticPath p = ParseStaticPath(c.target);
    EXPECT_EQ(p.status, 0) << c.target << ": " << p.why;
    EXPECT_EQ(p.name, c.name) << c.target;
  }
}

TEST(StaticFilesTest, TraversalAndOddEncodingsAreRefused) {
  struct Case {
    const char* target;
    int status;
  };
  for (const Case& c : {
           Case{"/../etc/passwd", 403},
           Case{"/a/../../etc/passwd", 403},
           Case{"/a/..", 403},
           Case{"/./a", 403},
           Case{"/%2e%2e/etc/passwd", 403},
           Case{"/%2E%2e/etc/passwd", 403},
           Case{"/a/.%2e/x", 403},
           Case{"/..%2fetc/passwd", 400},  // encoded '/'
           Case{"/a%2Fb", 400},
           Case{"/a%5c..%5cb", 400},  // encoded backslash
           Case{"/a\\..\\b", 400},
           Case{"/a%00.html", 400},  // NUL
           Case{"/%zz", 400},
           Case{"/%4", 400},
           Case{"/a%", 400},
           Case{"a.html", 400},        // not absolute
           Case{"/.git/config", 404},  // hidden names
           Case{"/a/.env", 404},
           Case{"/%2egit/config", 404},
       }) {
    StaticPath p = ParseStaticPath(c.target);
    EXPECT_EQ(p.status, c.status) << c.target << " → " << p.name;
    EXPECT_FALSE(p.why.empty()) << c.target;
  }
}

TEST(StaticFilesTest, ContentTypesByExtension) {
  EXPECT_EQ(ContentTypeFor("index.html"), "text/html; charset=utf-8");
  EXPECT_EQ(ContentTypeFor("d/INDEX.HTM"), "text/html; charset=utf-8");
  EXPECT_EQ(ContentTypeFor("app.js"), "text/javascript; charset=utf-8");
  EXPECT_EQ(ContentTypeFor("phoenix.mjs"), "text/javascript; charset=utf-8");
  EXPECT_EQ(ContentTypeFor("style.css"), "text/css; charset=utf-8");
  EXPECT_EQ(ContentTypeFor("logo.svg"), "image/svg+xml");
  EXPECT_EQ(ContentTypeFor("shot.png"), "image/png");
  EXPECT_EQ(ContentTypeFor("favicon.ico"), "image/x-icon");
  EXPECT_EQ(ContentTypeFor("data.json"), "application/json");
  EXPECT_EQ(ContentTypeFor("phoenix.mjs.map"), "application/json");
  EXPECT_EQ(ContentTypeFor("notes.txt"), "text/plain; charset=utf-8");
  EXPECT_EQ(ContentTypeFor("archive.tar.gz"), "application/octet-stream");
  EXPECT_EQ(ContentTypeFor("Makefile"), "application/octet-stream");
  EXPECT_EQ(ContentTypeFor("dir.js/file"), "application/octet-stream");
}

TEST(StaticFilesTest, HtmlIsRevalidatedTheRestCachedBriefly) {
  EXPECT_EQ(CacheControlFor("/r/index.html"), "no-cache");
  EXPECT_EQ(CacheControlFor("/r/app.js"), "max-age=60");
  EXPECT_EQ(CacheControlFor("/r/phoenix.mjs"), "max-age=60");
}

TEST(StaticFilesTest, ValidatorsAndTheirComparison) {
  EXPECT_EQ(HttpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(HttpDate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  std::string etag = ETagFor(1234, 1'700'000'000'123'456'789);
  EXPECT_EQ(etag, "\"4d2-17979cfe3d85cd15\"");
  EXPECT_NE(ETagFor(1234, 1'700'000'000'123'456'790), etag);  // touched within the second
  EXPECT_NE(ETagFor(1235, 1'700'000'000'123'456'789), etag);
  EXPECT_TRUE(IfNoneMatchMatches(etag, etag));
  EXPECT_TRUE(IfNoneMatchMatches("W/" + etag, etag));
  EXPECT_TRUE(IfNoneMatchMatches("\"x\", " + etag + " ,\"y\"", etag));
  EXPECT_TRUE(IfNoneMatchMatches(" * ", etag));
  EXPECT_FALSE(IfNoneMatchMatches("\"4d2-17979cfe3d85cd16\"", etag));
  EXPECT_FALSE(IfNoneMatchMatches("", etag));
  EXPECT_FALSE(IfNoneMatchMatches("4d2-17979cfe3d85cd15", etag));  // unquoted: not this tag
}

StaticFile File(std::string name, std::string body) {
  StaticFile f;
  f.size = body.size();
  f.mtime_ns = 784111777'000000000;
  f.name = std::move(name);
  f.body = std::move(body);
  return f;
}

TEST(StaticFilesTest, AFileIsAnsweredWithTypeLengthAndValidators) {
  StaticAnswer a = StaticFileAnswer(File("/r/app.js", "let x = 1;\n"), StaticMethod::kGet, {});
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.head,
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/javascript; charset=utf-8\r\n"
            "Content-Length: 11\r\n"
            "ETag: \"b-ae1b981bc490a00\"\r\n"
            "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
            "Cache-Control: max-age=60\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Connection: close\r\n\r\n");
  EXPECT_EQ(a.body, "let x = 1;\n");
}

TEST(StaticFilesTest, HeadHasTheHeadOfGetAndNoBody) {
  StaticAnswer get = StaticFileAnswer(File("/r/a.html", "<p>hi</p>"), StaticMethod::kGet, {});
  StaticFile stat_only = File("/r/a.html", "");
  stat_only.size = 9;  // Read without the body still knows the size
  StaticAnswer head = StaticFileAnswer(stat_only, StaticMethod::kHead, {});
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.head, get.head);
  EXPECT_NE(head.head.find("Content-Length: 9\r\n"), std::string::npos);
  EXPECT_TRUE(head.body.empty());
}

TEST(StaticFilesTest, AMatchingIfNoneMatchIsAnswered304WithoutBody) {
  StaticFile f = File("/r/index.html", "<p>hi</p>");
  std::string etag = ETagFor(f.size, f.mtime_ns);
  StaticAnswer a = StaticFileAnswer(f, StaticMethod::kGet, etag);
  EXPECT_EQ(a.status, 304);
  EXPECT_TRUE(a.head.starts_with("HTTP/1.1 304 Not Modified\r\n")) << a.head;
  EXPECT_NE(a.head.find("ETag: " + etag + "\r\n"), std::string::npos);
  EXPECT_NE(a.head.find("Cache-Control: no-cache\r\n"), std::string::npos);
  EXPECT_EQ(a.head.find("Content-Length"), std::string::npos);
  EXPECT_TRUE(a.body.empty());
  EXPECT_EQ(StaticFileAnswer(f, StaticMethod::kGet, std::string_view("\"other\"")).status, 200);
}

TEST(StaticFilesTest, RefusalsCarryTheirStatusAndMethodNotAllowedSaysWhatIs) {
  StaticAnswer a = StaticRefusal(405, "use GET or HEAD", StaticMethod::kOther);
  EXPECT_TRUE(a.head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")) << a.head;
  EXPECT_NE(a.head.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_NE(a.head.find("Content-Length: 16\r\n"), std::string::npos);
  EXPECT_EQ(a.body, "use GET or HEAD\n");
  StaticAnswer head = StaticRefusal(404, "Not Found", StaticMethod::kHead);
  EXPECT_TRUE(head.head.starts_with("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_TRUE(head.body.empty());
}

TEST(StaticFilesTest, StatusesMapToTheirMetricIndex) {
  for (size_t i = 0; i < kStaticStatuses.size(); ++i) {
    EXPECT_EQ(StaticStatusIndex(kStaticStatuses[i]), i);
  }
  EXPECT_EQ(StaticStatusIndex(418), StaticStatusIndex(500));
}

// A root in a fresh temporary directory, with a sibling outside it.
class StaticRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb-static-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ / "root";
    fs::create_directories(root_ / "sub");
    fs::create_directories(base_ / "outside");
    Write(root_ / "index.html", "<h1>chat</h1>\n");
    Write(root_ / "app.js", "console.log(1);\n");
    Write(base_ / "outside" / "secret.txt", "secret\n");
  }
  void TearDown() override { fs::remove_all(base_); }

  static void Write(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
  }

  StaticAnswer Get(const std::string& target, StaticMethod m = StaticMethod::kGet,
                   std::optional<std::string_view> inm = {}) {
    return StaticRoot(root_.string()).Answer(m, target, inm);
  }

  fs::path base_, root_;
};

TEST_F(StaticRootTest, TheRootServesItsIndexAndFiles) {
  StaticAnswer a = Get("/");
  ASSERT_EQ(a.status, 200) << a.why;
  EXPECT_EQ(a.body, "<h1>chat</h1>\n");
  EXPECT_NE(a.head.find("Content-Type: text/html; charset=utf-8\r\n"), std::string::npos);
  EXPECT_EQ(Get("/index.html").head, a.head);
  StaticAnswer js = Get("/app.js?cache=bust");
  ASSERT_EQ(js.status, 200) << js.why;
  EXPECT_EQ(js.body, "console.log(1);\n");
  EXPECT_NE(js.head.find("Content-Type: text/javascript; charset=utf-8\r\n"), std::string::npos);
}

TEST_F(StaticRootTest, ADirectoryIsItsIndexOrNothingNeverAListing) {
  EXPECT_EQ(Get("/sub").status, 404);
  EXPECT_EQ(Get("/sub/").status, 404);
  Write(root_ / "sub" / "index.html", "sub\n");
  StaticAnswer a = Get("/sub/");
  ASSERT_EQ(a.status, 200) << a.why;
  EXPECT_EQ(a.body, "sub\n");
  EXPECT_EQ(Get("/sub").body, "sub\n");
  // A directory named index.html is not a file to serve.
  fs::remove(root_ / "sub" / "index.html");
  fs::create_directory(root_ / "sub" / "index.html");
  EXPECT_EQ(Get("/sub/").status, 404);
}

TEST_F(StaticRootTest, MissingFilesAndAMissingRootAre404) {
  EXPECT_EQ(Get("/nope.js").status, 404);
  EXPECT_EQ(Get("/app.js/more").status, 404);  // ENOTDIR
  StaticAnswer a =
      StaticRoot((base_ / "no-such-root").string()).Answer(StaticMethod::kGet, "/", {});
  EXPECT_EQ(a.status, 404);
  std::string why;
  EXPECT_FALSE(StaticRoot((base_ / "no-such-root").string()).Usable(&why));
  EXPECT_FALSE(why.empty());
  EXPECT_FALSE(StaticRoot((root_ / "app.js").string()).Usable(&why));
  EXPECT_TRUE(StaticRoot(root_.string()).Usable(&why));
}

TEST_F(StaticRootTest, SymlinksInsideAreFollowedThoseLeavingAreRefused) {
  fs::create_symlink("app.js", root_ / "alias.js");
  fs::create_symlink(base_ / "outside" / "secret.txt", root_ / "secret.txt");
  fs::create_symlink(base_ / "outside", root_ / "out");
  fs::create_symlink("../../outside/secret.txt", root_ / "sub" / "rel.txt");
  StaticAnswer alias = Get("/alias.js");
  ASSERT_EQ(alias.status, 200) << alias.why;
  EXPECT_EQ(alias.body, "console.log(1);\n");
  for (const char* target : {"/secret.txt", "/out/secret.txt", "/sub/rel.txt"}) {
    StaticAnswer a = Get(target);
    EXPECT_EQ(a.status, 403) << target;
    EXPECT_EQ(a.body.find("secret"), std::string::npos) << target;
  }
}

TEST_F(StaticRootTest, ARootGivenThroughASymlinkOrRelativelyStillConfines) {
  fs::create_symlink(root_, base_ / "link-to-root");
  StaticRoot via_link((base_ / "link-to-root").string());
  EXPECT_EQ(via_link.Answer(StaticMethod::kGet, "/app.js", {}).status, 200);
  fs::create_symlink(base_ / "outside" / "secret.txt", root_ / "s.txt");
  EXPECT_EQ(via_link.Answer(StaticMethod::kGet, "/s.txt", {}).status, 403);
}

TEST_F(StaticRootTest, FilesOverTheLimitAreRefused) {
  Write(root_ / "max.txt", std::string(kMaxStaticFileBytes, 'x'));
  Write(root_ / "big.txt", std::string(kMaxStaticFileBytes + 1, 'x'));
  StaticAnswer max = Get("/max.txt");
  EXPECT_EQ(max.status, 200) << max.why;
  EXPECT_EQ(max.body.size(), kMaxStaticFileBytes);
  StaticAnswer big = Get("/big.txt");
  EXPECT_EQ(big.status, 403);
  EXPECT_LT(big.body.size(), 100u);
  EXPECT_EQ(Get("/big.txt", StaticMethod::kHead).status, 403);
}

TEST_F(StaticRootTest, AFifoIsNotOpenedForReadingNorServed) {
  ASSERT_EQ(::mkfifo((root_ / "pipe.txt").c_str(), 0600), 0);
  // Without O_NONBLOCK this open would wait for a writer forever.
  EXPECT_EQ(Get("/pipe.txt").status, 404);
}

TEST_F(StaticRootTest, MethodsOtherThanGetAndHeadAre405) {
  StaticAnswer a = Get("/app.js", StaticMethod::kOther);
  EXPECT_EQ(a.status, 405);
  EXPECT_NE(a.head.find("Allow: GET, HEAD\r\n"), std::string::npos);
  StaticAnswer head = Get("/app.js", StaticMethod::kHead);
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  EXPECT_NE(head.head.find("Content-Length: 16\r\n"), std::string::npos);
  EXPECT_EQ(head.head, Get("/app.js").head);
}

TEST_F(StaticRootTest, TheETagFollowsTheFile) {
  StaticAnswer first = Get("/app.js");
  size_t at = first.head.find("ETag: ");
  ASSERT_NE(at, std::string::npos);
  std::string etag = first.head.substr(at + 6, first.head.find("\r\n", at) - at - 6);
  EXPECT_EQ(Get("/app.js", StaticMethod::kGet, etag).status, 304);
  EXPECT_EQ(Get("/app.js", StaticMethod::kHead, etag).status, 304);
  // Same size, another mtime: a new ETag, so the old one no longer matches.
  Write(root_ / "app.js", "console.log(2);\n");
  timespec times[2] = {{0, UTIME_OMIT}, {1'000'000'000, 5}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (root_ / "app.js").c_str(), times, 0), 0);
  StaticAnswer changed = Get("/app.js", StaticMethod::kGet, etag);
  EXPECT_EQ(changed.status, 200);
  EXPECT_EQ(changed.body, "console.log(2);\n");
}

TEST_F(StaticRootTest, RefusedPathsNeverReachTheFileSystem) {
  // A file literally named ".." cannot exist; one named "%2e%2e" can, and
  // "/%252e%252e" names it (decoded once).
  Write(root_ / "%2e%2e", "odd\n");
  EXPECT_EQ(Get("/%252e%252e").body, "odd\n");
  EXPECT_EQ(Get("/%2e%2e/outside/secret.txt").status, 403);
  EXPECT_EQ(Get("/sub/..%2f..%2foutside/secret.txt").status, 400);
  Write(root_ / ".hidden", "h\n");
  EXPECT_EQ(Get("/.hidden").status, 404);
}

}  // namespace
}  // namespace sb::worker
