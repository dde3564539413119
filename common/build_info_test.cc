// Build info: the version line, the configured version, the commit, and --version on every command
// line.

#include "common/build_info.h"

#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "common/command_line.h"

namespace sb {
namespace {

TEST(BuildInfoTest, VersionLineNamesProgramVersionAndCommit) {
  EXPECT_EQ(FormatVersionLine("switchboard-worker", "0.1.0", "28ee336abcde"),
            "switchboard-worker 0.1.0 (commit 28ee336abcde)");
  EXPECT_EQ(FormatVersionLine("switchboard", "0.1.0-b", "unknown"),
            "switchboard 0.1.0-b (commit unknown)");
}

TEST(BuildInfoTest, VersionIsTheProjectsWithTheConfiguredSuffix) {
  EXPECT_EQ(BuildVersion(), SB_TEST_EXPECTED_VERSION);
}

TEST(BuildInfoTest, CommitIsAHashOrUnknown) {
  const std::string commit(BuildCommit());
  EXPECT_TRUE(commit == "unknown" || std::regex_match(commit, std::regex("[0-9a-f]{12,}(-dirty)?")))
      << commit;
  EXPECT_EQ(VersionLine("p"), FormatVersionLine("p", BuildVersion(), BuildCommit()));
}

// --version comes with every command line parsed by ParseCommandLine, and
// wins over options the program requires (as --help does).
TEST(BuildInfoTest, EveryCommandLineAnswersVersion) {
  CLI::App app{"test program"};
  std::string shard;
  app.add_option("--shard", shard, "required")->required();
  std::string arg0 = "/usr/bin/switchboard-test", flag = "--version";
  char* argv[] = {arg0.data(), flag.data()};
  testing::internal::CaptureStdout();
  const std::optional<int> rc = ParseCommandLine(app, 2, argv);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, kExitOk);
  EXPECT_EQ(out, VersionLine("switchboard-test") + "\n");
}

}  // namespace
}  // namespace sb
