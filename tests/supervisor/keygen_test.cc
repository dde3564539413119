// `switchboard keygen`, the real binary: the secret-key file it writes and
// the public key it prints (docs/SECURITY.md, Peer links).

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/curve.h"
#include "tests/testutil/testutil.h"

namespace sb {
namespace {

using namespace std::chrono_literals;
namespace tu = testutil;

class KeygenTest : public ::testing::Test {
 protected:
  // Runs `switchboard keygen ARGS`; its stdout in out_, stderr in err_.
  int Keygen(std::vector<std::string> args) {
    args.insert(args.begin(), "keygen");
    const std::string out = tmp_.File("out." + std::to_string(++runs_));
    const std::string err = tmp_.File("err." + std::to_string(runs_));
    auto p = tu::Process::Start(tu::BinPath("switchboard"),
                                {.args = args, .output = out, .stderr_output = err});
    EXPECT_TRUE(p.ok()) << p.status().message();
    if (!p.ok()) return -1;
    int status = 0;
    EXPECT_TRUE(p->WaitExit(10s, &status));
    out_ = tu::ReadFile(out);
    err_ = tu::ReadFile(err);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  mode_t Mode(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0);
    return st.st_mode & 07777;
  }

  tu::TempDir tmp_;
  int runs_ = 0;
  std::string out_, err_;
};

TEST_F(KeygenTest, WritesAnOwnerOnlySecretAndPrintsItsPublicKey) {
  const std::string key = tmp_.File("node1.key");
  ASSERT_EQ(Keygen({"--secret-file", key}), 0) << err_;
  EXPECT_EQ(Mode(key), 0600u);
  ASSERT_EQ(out_.size(), curve::kZ85KeyChars + 1) << out_;
  EXPECT_EQ(out_.back(), '\n');
  const std::string printed = out_.substr(0, curve::kZ85KeyChars);
  EXPECT_TRUE(curve::Validate(printed).ok());
  Result<curve::Keypair> read = curve::ReadSecretFile(key);
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ(read->public_key, printed);
  EXPECT_EQ(err_, "");
}

TEST_F(KeygenTest, AnExistingFileIsRefusedUnlessForced) {
  const std::string key = tmp_.File("node1.key");
  ASSERT_EQ(Keygen({"--secret-file", key}), 0) << err_;
  const std::string first = tu::ReadFile(key);
  EXPECT_EQ(Keygen({"--secret-file", key}), 1);
  EXPECT_NE(err_.find("--force"), std::string::npos) << err_;
  EXPECT_EQ(out_, "") << "no public key for a secret that was not written";
  EXPECT_EQ(tu::ReadFile(key), first);
  ASSERT_EQ(Keygen({"--secret-file", key, "--force"}), 0) << err_;
  EXPECT_NE(tu::ReadFile(key), first);
  EXPECT_EQ(curve::ReadSecretFile(key)->public_key, out_.substr(0, curve::kZ85KeyChars));
}

TEST_F(KeygenTest, ASymbolicLinkIsNotFollowed) {
  const std::string key = tmp_.File("node1.key"), target = tmp_.File("elsewhere");
  ASSERT_EQ(::symlink(target.c_str(), key.c_str()), 0);
  EXPECT_EQ(Keygen({"--secret-file", key, "--force"}), 1);
  EXPECT_NE(err_.find("symbolic link"), std::string::npos) << err_;
  struct stat st {};
  EXPECT_NE(::stat(target.c_str(), &st), 0);
}

TEST_F(KeygenTest, WithoutASecretFileItIsAUsageError) {
  EXPECT_EQ(Keygen({}), 2);
  EXPECT_EQ(out_, "");
}

}  // namespace
}  // namespace sb
