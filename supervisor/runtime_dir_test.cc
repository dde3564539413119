#include "supervisor/runtime_dir.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace sb::supervisor {
namespace {

struct stat Dir(uid_t owner, mode_t mode) {
  struct stat st {};
  st.st_uid = owner;
  st.st_mode = S_IFDIR | mode;
  return st;
}

struct stat Link(uid_t owner) {
  struct stat st {};
  st.st_uid = owner;
  st.st_mode = S_IFLNK | 0777;
  return st;
}

constexpr uid_t kMe = 1000;
constexpr uid_t kOther = 65534;

TEST(RuntimeDirTest, TrustsOnlyDirectoriesOfThisUserOrRootThatOnlyTheOwnerWrites) {
  EXPECT_EQ(DistrustReason(Dir(kMe, 0700), nullptr, kMe), "");
  EXPECT_EQ(DistrustReason(Dir(kMe, 0755), nullptr, kMe), "");
  EXPECT_EQ(DistrustReason(Dir(0, 0755), nullptr, kMe), "");
  EXPECT_EQ(DistrustReason(Dir(kOther, 0700), nullptr, kMe),
            "is owned by uid 65534; only this user (uid 1000) or root may own it");
  EXPECT_EQ(DistrustReason(Dir(kOther, 0700), nullptr, 0),
            "is owned by uid 65534; only root may own it");
  EXPECT_EQ(DistrustReason(Dir(kMe, 0770), nullptr, kMe),
            "is writable by its group or others (mode 0770); only its owner may write it (chmod "
            "go-w)");
  // /tmp itself: root's, but anyone may create (and plant) names in it, sticky or not.
  EXPECT_EQ(DistrustReason(Dir(0, 01777), nullptr, kMe),
            "is writable by its group or others (mode 1777); only its owner may write it (chmod "
            "go-w)");
  struct stat file {};
  file.st_uid = kMe;
  file.st_mode = S_IFREG | 0600;
  EXPECT_EQ(DistrustReason(file, nullptr, kMe), "is not a directory");
}

TEST(RuntimeDirTest, SymlinkCountsOnlyIfThisUserOrRootMadeIt) {
  const struct stat link_mine = Link(kMe);
  const struct stat link_root = Link(0);
  const struct stat link_other = Link(kOther);
  EXPECT_EQ(DistrustReason(Dir(kMe, 0700), &link_mine, kMe), "");
  EXPECT_EQ(DistrustReason(Dir(kMe, 0700), &link_root, kMe), "");
  // Pointing at one of our own directories does not make someone else's link ours.
  EXPECT_EQ(DistrustReason(Dir(kMe, 0700), &link_other, kMe),
            "is a symbolic link owned by uid 65534; only this user (uid 1000) or root may own it");
}

class RuntimeDirFsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb-runtime-dir-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

TEST_F(RuntimeDirFsTest, EnsureCreatesAMissingDirectoryForItsOwnerOnly) {
  const std::string run = dir_ + "/a/run";
  ASSERT_TRUE(EnsureRuntimeDir(run).ok());
  struct stat st {};
  ASSERT_EQ(::stat(run.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  EXPECT_TRUE(EnsureRuntimeDir(run).ok());  // existing and trusted
}

TEST_F(RuntimeDirFsTest, EnsureRefusesAnExistingDirectoryOthersCanWrite) {
  const std::string run = dir_ + "/run";
  ASSERT_EQ(::mkdir(run.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(run.c_str(), 0707), 0);
  Status s = EnsureRuntimeDir(run);
  EXPECT_EQ(s.code(), Status::Code::kInvalidConfig);
  EXPECT_EQ(s.message(), "runtime directory " + run +
                             " is writable by its group or others (mode 0707); only its owner "
                             "may write it (chmod go-w)");
  // Left as it was: the daemon does not repair someone else's choice.
  struct stat st {};
  ASSERT_EQ(::stat(run.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0707u);
}

TEST_F(RuntimeDirFsTest, CheckFollowsATrustedSymlinkAndRefusesAFile) {
  ASSERT_EQ(::mkdir((dir_ + "/real").c_str(), 0700), 0);
  ASSERT_EQ(::symlink((dir_ + "/real").c_str(), (dir_ + "/link").c_str()), 0);
  EXPECT_TRUE(CheckTrustedDir(dir_ + "/link", "runtime directory").ok());
  ASSERT_EQ(::chmod((dir_ + "/real").c_str(), 0777), 0);
  EXPECT_FALSE(CheckTrustedDir(dir_ + "/link", "runtime directory").ok());
  Status missing = CheckTrustedDir(dir_ + "/none", "runtime directory");
  EXPECT_EQ(missing.code(), Status::Code::kIoError);
  EXPECT_EQ(missing.message(),
            "stat runtime directory " + dir_ + "/none: No such file or directory");
}

}  // namespace
}  // namespace sb::supervisor
