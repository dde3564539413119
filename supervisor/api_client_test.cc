#include "supervisor/api_client.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "supervisor/spec_loader.h"

namespace sb::supervisor {
namespace {

TEST(ApiClientTest, ParsesHttpUrlsOfAShardPort) {
  Result<ApiUrl> u = ParseApiUrl("http://127.0.0.1:4000");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 4000);
  u = ParseApiUrl("http://[::1]:80/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 80);
  EXPECT_TRUE(ParseApiUrl("http://localhost:1").ok());
  for (const char* bad : {"https://127.0.0.1:4000", "127.0.0.1:4000", "http://127.0.0.1",
                          "http://127.0.0.1:0", "http://127.0.0.1:65536", "http://example.com:80",
                          "http://127.0.0.1:40x0", "http://[::1:80"}) {
    EXPECT_FALSE(ParseApiUrl(bad).ok()) << bad;
  }
}

class ApiKeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_api_client_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/key";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_, path_;
};

TEST_F(ApiKeyFileTest, TheFirstStartMakesAPrivateRandomKeyAndLaterStartsKeepIt) {
  ASSERT_TRUE(EnsureApiKeyFile(path_).ok());
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  Result<std::string> key = ReadApiKeyFile(path_);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->size(), 64u);
  EXPECT_EQ(key->find_first_not_of("0123456789abcdef"), std::string::npos);
  ASSERT_TRUE(EnsureApiKeyFile(path_).ok());
  Result<std::string> again = ReadApiKeyFile(path_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *key);
}

TEST_F(ApiKeyFileTest, AKeyFileOthersCanReadIsRefused) {
  std::ofstream(path_) << "0123456789abcdef0123\n";
  ::chmod(path_.c_str(), 0644);
  EXPECT_FALSE(ReadApiKeyFile(path_).ok());
  Status s = EnsureApiKeyFile(path_);
  EXPECT_EQ(s.code(), Status::Code::kInvalidConfig);
  ::chmod(path_.c_str(), 0600);
  EXPECT_TRUE(EnsureApiKeyFile(path_).ok());
}

TEST(ApiClientTest, WithoutAConfigPublishUsesTheDefaultTopologysApi) {
  // `switchboard publish` without --config posts where config/cluster.yaml's
  // node.api says: the defaults must not drift from the file.
  Result<TreeSpec> spec = LoadTreeSpecFile(std::string(SB_SOURCE_DIR) + "/config/cluster.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  EXPECT_EQ(spec->node.api.url, kDefaultApiUrl);
  EXPECT_EQ(spec->node.api.key_file, kDefaultApiKeyFile);
}

TEST(ApiClientTest, PublishWithBadArgumentsIsAUsageError) {
  PublishArgs args{.url = "http://127.0.0.1:1",
                   .key_file = "/nonexistent",
                   .topic = "t",
                   .event = "e",
                   .payload_json = "{nope"};
  std::ostringstream out, err;
  EXPECT_EQ(RunPublish(args, out, err), 2);
  EXPECT_NE(err.str().find("not valid JSON"), std::string::npos);
  args.payload_json = "1";
  EXPECT_EQ(RunPublish(args, out, err), 2) << "no key file";
}

}  // namespace
}  // namespace sb::supervisor
