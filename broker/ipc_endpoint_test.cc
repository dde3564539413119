// IpcEndpoint: which endpoints and directories are refused, and the modes
// of the socket file — on real temporary directories.

#include "broker/ipc_endpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace sb::broker {
namespace {

class IpcEndpointTest : public ::testing::Test {
 protected:
  IpcEndpointTest() {
    char tmpl[] = "/tmp/sb-ipc-XXXXXX";
    dir_ = ::mkdtemp(tmpl);  // 0700, ours
  }
  ~IpcEndpointTest() override { std::filesystem::remove_all(dir_); }

  std::string Sub(const std::string& name, mode_t mode) {
    const std::string d = dir_ + "/" + name;
    EXPECT_EQ(::mkdir(d.c_str(), 0700), 0);
    EXPECT_EQ(::chmod(d.c_str(), mode), 0);  // not subject to the umask
    return d;
  }

  std::string dir_;
};

void ExpectRefused(const Status& s, const std::string& what) {
  ASSERT_FALSE(s.ok()) << "accepted; want: " << what;
  EXPECT_NE(s.message().find(what), std::string::npos) << s.message();
}

TEST(IpcPathTest, OnlyIpcEndpointsHaveAPath) {
  EXPECT_EQ(IpcPath("ipc:///run/sb/broker"), "/run/sb/broker");
  EXPECT_EQ(IpcPath("ipc://broker"), "broker");
  EXPECT_EQ(IpcPath("tcp://127.0.0.1:5555"), std::nullopt);
  EXPECT_EQ(IpcPath("inproc://x"), std::nullopt);
}

TEST_F(IpcEndpointTest, ADirectoryOfOursThatOnlyWeMayWriteIsAccepted) {
  EXPECT_TRUE(CheckIpcDirectory(dir_ + "/broker", ::geteuid()).ok());
  EXPECT_TRUE(CheckIpcDirectory(Sub("readable", 0755) + "/broker", ::geteuid()).ok());
}

TEST_F(IpcEndpointTest, ADirectoryOthersMayWriteIsRefused) {
  ExpectRefused(CheckIpcDirectory(Sub("world", 0777) + "/broker", ::geteuid()),
                "is writable by group or others (mode 0777)");
  ExpectRefused(CheckIpcDirectory(Sub("group", 0770) + "/broker", ::geteuid()),
                "writable by group or others (mode 0770)");
  ExpectRefused(CheckIpcDirectory(Sub("sticky", 01733) + "/broker", ::geteuid()), "(mode 1733)");
}

TEST_F(IpcEndpointTest, ADirectoryOfAnotherUserIsRefused) {
  const std::string d = Sub("theirs", 0700);
  EXPECT_TRUE(CheckIpcDirectory(d + "/broker", ::geteuid()).ok());
  ExpectRefused(CheckIpcDirectory(d + "/broker", ::geteuid() + 1),
                "is owned by uid " + std::to_string(::geteuid()) + ", not by us");
}

TEST_F(IpcEndpointTest, NoFileOrAMissingDirectoryIsRefused) {
  ExpectRefused(CheckIpcDirectory("@switchboard", ::geteuid()), "not the abstract namespace");
  ExpectRefused(CheckIpcDirectory("*", ::geteuid()), "not a wildcard");
  ExpectRefused(CheckIpcDirectory("", ::geteuid()), "only a path");
  ExpectRefused(CheckIpcDirectory(dir_ + "/missing/broker", ::geteuid()),
                "No such file or directory");
  const std::string file = dir_ + "/file";
  ASSERT_EQ(::close(::creat(file.c_str(), 0600)), 0);
  ExpectRefused(CheckIpcDirectory(file + "/broker", ::geteuid()), "is not a directory");
}

TEST_F(IpcEndpointTest, FilesMadeUnderTheUmaskAreOwnerOnlyAndRestrictSetsIt) {
  const std::string a = dir_ + "/a";
  const mode_t before = ::umask(022);
  {
    ScopedUmask owner_only(077);
    ASSERT_EQ(::close(::creat(a.c_str(), 0777)), 0);
  }
  EXPECT_EQ(::umask(before), 022u) << "the umask is given back";
  struct stat st {};
  ASSERT_EQ(::stat(a.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  ASSERT_EQ(::chmod(a.c_str(), 0666), 0);
  ASSERT_TRUE(RestrictIpcSocket(a).ok());
  ASSERT_EQ(::stat(a.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ExpectRefused(RestrictIpcSocket(dir_ + "/missing"), "chmod 0600");
}

}  // namespace
}  // namespace sb::broker
