#include "common/key_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace sb {
namespace {

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_key_file_XXXXXX";
    const int fd = ::mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ::close(fd);
    path_ = tmpl;
  }
  void TearDown() override { ::unlink(path_.c_str()); }
  void Write(const std::string& text, mode_t mode) {
    std::ofstream(path_) << text;
    ::chmod(path_.c_str(), mode);
  }
  std::string path_;
};

TEST_F(KeyFileTest, TheFirstLineOfAnOwnerOnlyFileWithoutItsLineEnd) {
  Write("0123456789abcdef\r\nsecond line\n", 0600);
  Result<std::string> key = ReadPrivateKeyFile(path_, 16);
  ASSERT_TRUE(key.ok()) << key.status().message();
  EXPECT_EQ(*key, "0123456789abcdef");
  Write("0123456789abcdef", 0400);
  EXPECT_TRUE(ReadPrivateKeyFile(path_, 16).ok()) << "no line end, read-only";
}

TEST_F(KeyFileTest, AnyPermissionForGroupOrOthersIsRefusedAndTheKeyNeverQuoted) {
  for (mode_t mode : {0640, 0604, 0620, 0602, 0610, 0601}) {
    Write("0123456789abcdef\n", mode);
    Result<std::string> key = ReadPrivateKeyFile(path_, 16);
    ASSERT_FALSE(key.ok()) << std::oct << mode;
    EXPECT_EQ(key.status().code(), Status::Code::kInvalidConfig);
    EXPECT_EQ(key.status().message().find("0123456789abcdef"), std::string::npos);
  }
}

TEST_F(KeyFileTest, ShortEmptyOrMissingIsRefused) {
  Write("short\n", 0600);
  EXPECT_FALSE(ReadPrivateKeyFile(path_, 16).ok());
  Write("\n", 0600);
  EXPECT_FALSE(ReadPrivateKeyFile(path_, 0).ok());
  EXPECT_FALSE(ReadPrivateKeyFile(path_ + ".missing", 1).ok());
}

}  // namespace
}  // namespace sb
