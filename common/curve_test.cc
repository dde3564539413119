#include "common/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace sb::curve {
namespace {

// The key pair of ZeroMQ RFC 26's test vectors (also in libzmq's tests).
constexpr char kPublic[] = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
constexpr char kSecret[] = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";

class CurveFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb_curve_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/node.key";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::unlink((dir_ + "/link").c_str());
    ::rmdir(dir_.c_str());
  }
  std::string Contents() {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  mode_t Mode() {
    struct stat st {};
    EXPECT_EQ(::lstat(path_.c_str(), &st), 0);
    return st.st_mode & 07777;
  }
  std::string dir_, path_;
};

TEST(CurveTest, AGeneratedPairIsValidAndItsPublicKeyDerivesFromItsSecret) {
  Result<Keypair> a = Generate();
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_TRUE(Validate(a->public_key).ok());
  EXPECT_TRUE(Validate(a->secret_key).ok());
  Result<std::string> derived = PublicKeyOf(a->secret_key);
  ASSERT_TRUE(derived.ok());
  EXPECT_EQ(*derived, a->public_key);
  Result<Keypair> b = Generate();
  ASSERT_TRUE(b.ok());
  EXPECT_NE(a->secret_key, b->secret_key);
}

TEST(CurveTest, TheKnownPairDerivesAndRoundTripsThroughRawBytes) {
  Result<std::string> derived = PublicKeyOf(kSecret);
  ASSERT_TRUE(derived.ok()) << derived.status().message();
  EXPECT_EQ(*derived, kPublic);
  Result<std::string> raw = Decode(kPublic);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ(raw->size(), kKeyBytes);
  EXPECT_EQ(Encode(*raw), kPublic);
  EXPECT_EQ(Encode("short"), "");
}

TEST(CurveTest, AnythingButFortyZ85CharactersForThirtyTwoBytesIsRefused) {
  const std::string good = kPublic;
  EXPECT_FALSE(Validate("").ok());
  EXPECT_FALSE(Validate(good.substr(0, 39)).ok());
  EXPECT_FALSE(Validate(good + "0").ok());
  std::string bad = good;
  bad[7] = '"';  // not in the alphabet
  EXPECT_FALSE(Validate(bad).ok());
  bad[7] = ' ';
  EXPECT_FALSE(Validate(bad).ok());
  bad[7] = '\0';
  EXPECT_FALSE(Validate(bad).ok());
  // "#####" is 84 × (85⁴ + 85³ + 85² + 85 + 1) > 2³²: no 4 bytes encode to it.
  EXPECT_FALSE(Validate(std::string(40, '#')).ok());
  EXPECT_FALSE(Decode(std::string(40, '#')).ok());
  EXPECT_FALSE(PublicKeyOf("not a key").ok());
  Status s = Validate(good.substr(0, 39));
  EXPECT_EQ(s.code(), Status::Code::kInvalidConfig);
  EXPECT_EQ(s.message().find(good.substr(0, 39)), std::string::npos) << "never quoted";
}

TEST_F(CurveFileTest, AWrittenSecretIsOwnerOnlyAndReadsBackWithItsPublicKey) {
  ASSERT_TRUE(WriteSecretFile(path_, kSecret, false).ok());
  EXPECT_EQ(Mode(), 0600u);
  EXPECT_EQ(Contents(), std::string(kSecret) + "\n");
  Result<Keypair> k = ReadSecretFile(path_);
  ASSERT_TRUE(k.ok()) << k.status().message();
  EXPECT_EQ(k->public_key, kPublic);
  EXPECT_EQ(k->secret_key, kSecret);
}

TEST_F(CurveFileTest, AnExistingFileIsKeptUnlessOverwritingAndThenMadeOwnerOnly) {
  std::ofstream(path_) << "old\n";
  ASSERT_EQ(::chmod(path_.c_str(), 0644), 0);
  Status s = WriteSecretFile(path_, kSecret, false);
  EXPECT_EQ(s.code(), Status::Code::kRefused) << s.message();
  EXPECT_EQ(Contents(), "old\n");
  ASSERT_TRUE(WriteSecretFile(path_, kSecret, true).ok());
  EXPECT_EQ(Contents(), std::string(kSecret) + "\n");
  EXPECT_EQ(Mode(), 0600u);
}

TEST_F(CurveFileTest, ASymbolicLinkIsNeverFollowedEvenWhenOverwriting) {
  const std::string target = dir_ + "/link";
  ASSERT_EQ(::symlink(target.c_str(), path_.c_str()), 0);
  EXPECT_FALSE(WriteSecretFile(path_, kSecret, false).ok());
  EXPECT_FALSE(WriteSecretFile(path_, kSecret, true).ok());
  struct stat st {};
  EXPECT_NE(::stat(target.c_str(), &st), 0) << "nothing was created through the link";
}

TEST_F(CurveFileTest, ASecretFileOthersCanReadOrThatHoldsNoKeyIsRefused) {
  std::ofstream(path_) << kSecret << "\n";
  ASSERT_EQ(::chmod(path_.c_str(), 0640), 0);
  EXPECT_FALSE(ReadSecretFile(path_).ok());
  std::ofstream(path_) << std::string(40, '#') << "\n";
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  Result<Keypair> k = ReadSecretFile(path_);
  ASSERT_FALSE(k.ok());
  EXPECT_NE(k.status().message().find(path_), std::string::npos);
  EXPECT_FALSE(ReadSecretFile(dir_ + "/missing").ok());
}

}  // namespace
}  // namespace sb::curve
