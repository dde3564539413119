#include "supervisor/file_sd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sb::supervisor {
namespace {

class FileSdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sb-file-sd-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string File(const std::string& name) const { return dir_ + "/" + name; }
  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir_)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static ino_t Inode(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  }

  std::string dir_;
};

SdTarget Shard(int i) {
  return ChildSdTarget("node1", "shard." + std::to_string(i), "root/shards",
                       "127.0.0.1:" + std::to_string(9500 + i));
}

TEST(RenderFileSd, ParsesToSortedTargetGroups) {
  std::string json = RenderFileSd({Shard(1), Shard(0)});
  boost::json::value v = boost::json::parse(json);
  ASSERT_TRUE(v.is_array());
  const boost::json::array& groups = v.as_array();
  ASSERT_EQ(groups.size(), 2u);
  for (size_t i = 0; i < groups.size(); ++i) {
    const boost::json::object& g = groups[i].as_object();
    ASSERT_EQ(g.size(), 2u);
    const boost::json::array& targets = g.at("targets").as_array();
    ASSERT_EQ(targets.size(), 1u);
    EXPECT_EQ(targets[0].as_string(), "127.0.0.1:950" + std::to_string(i));
    const boost::json::object& labels = g.at("labels").as_object();
    EXPECT_EQ(labels.size(), 3u);
    EXPECT_EQ(labels.at("node").as_string(), "node1");
    EXPECT_EQ(labels.at("child").as_string(), "shard." + std::to_string(i));
    EXPECT_EQ(labels.at("supervisor").as_string(), "root/shards");
  }
}

TEST(RenderFileSd, IsDeterministic) {
  EXPECT_EQ(RenderFileSd({Shard(0), Shard(1), Shard(2)}),
            RenderFileSd({Shard(2), Shard(0), Shard(1)}));
}

TEST(RenderFileSd, EmptyIsAnEmptyList) {
  std::string json = RenderFileSd({});
  EXPECT_EQ(json, "[]\n");
  EXPECT_TRUE(boost::json::parse(json).as_array().empty());
}

TEST(RenderFileSd, EscapesLabelValues) {
  SdTarget t{"127.0.0.1:1", {{"child", "odd \"id\"\\\n"}}};
  boost::json::value v = boost::json::parse(RenderFileSd({t}));
  EXPECT_EQ(v.as_array()[0].as_object().at("labels").as_object().at("child").as_string(),
            "odd \"id\"\\\n");
}

TEST_F(FileSdTest, WriteFileAtomicReplacesContentAndLeavesNoTempFile) {
  const std::string path = File("targets.json");
  ASSERT_TRUE(WriteFileAtomic(path, "first\n").ok());
  EXPECT_EQ(Read(path), "first\n");
  ino_t first = Inode(path);
  ASSERT_TRUE(WriteFileAtomic(path, "second, longer\n").ok());
  EXPECT_EQ(Read(path), "second, longer\n");
  EXPECT_NE(Inode(path), first);
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"targets.json"});
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
}

TEST_F(FileSdTest, ReaderOfTheOldFileSeesItWhole) {
  // rename() swaps the name to a new inode; a reader that opened the old
  // file keeps reading the old, complete content, never a mix.
  const std::string path = File("targets.json");
  const std::string old_content = RenderFileSd({Shard(0)});
  const std::string new_content = RenderFileSd({Shard(0), Shard(1), Shard(2)});
  ASSERT_TRUE(WriteFileAtomic(path, old_content).ok());
  int reader = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  ino_t before = Inode(path);
  ASSERT_TRUE(WriteFileAtomic(path, new_content).ok());
  EXPECT_NE(Inode(path), before);
  std::string seen(4096, '\0');
  ssize_t n = ::read(reader, seen.data(), seen.size());
  ::close(reader);
  ASSERT_GE(n, 0);
  seen.resize(static_cast<size_t>(n));
  EXPECT_EQ(seen, old_content);
  EXPECT_EQ(Read(path), new_content);
  EXPECT_NO_THROW(boost::json::parse(Read(path)));
}

TEST_F(FileSdTest, WriteFileAtomicFollowsNoSymlinkPlantedForIt) {
  // Someone who can guess the temp name (it was <path>.tmp.<pid>) links it to a file of ours.
  const std::string victim = File("victim");
  const std::string path = File("targets.json");
  std::ofstream(victim) << "precious\n";
  ASSERT_EQ(::symlink(victim.c_str(), (path + ".tmp." + std::to_string(::getpid())).c_str()), 0);
  ASSERT_TRUE(WriteFileAtomic(path, "[]\n").ok());
  EXPECT_EQ(Read(victim), "precious\n");
  EXPECT_EQ(Read(path), "[]\n");

  // A symlink at the target itself is replaced by the new file, not written through.
  ASSERT_EQ(::unlink(path.c_str()), 0);
  ASSERT_EQ(::symlink(victim.c_str(), path.c_str()), 0);
  ASSERT_TRUE(WriteFileAtomic(path, "[1]\n").ok());
  EXPECT_EQ(Read(victim), "precious\n");
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_EQ(Read(path), "[1]\n");
}

TEST_F(FileSdTest, WriteFileAtomicFailureLeavesNothing) {
  Status s = WriteFileAtomic(File("missing/targets.json"), "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kIoError);
  EXPECT_NE(s.message().find("missing/targets.json.tmp."), std::string::npos) << s.message();
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(FileSdTest, WriterWritesOnlyWhenTheSetChanges) {
  const std::string path = File("node1.targets.json");
  FileSdWriter w(path);
  // The first flush writes even an empty set, replacing a stale file.
  ASSERT_TRUE(WriteFileAtomic(path, "stale").ok());
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 1);
  EXPECT_EQ(Read(path), "[]\n");

  w.Set("shard.0", Shard(0));
  w.Set("shard.1", Shard(1));
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 2);  // two changes in one turn: one write
  EXPECT_EQ(Read(path), RenderFileSd({Shard(0), Shard(1)}));
  ino_t inode = Inode(path);

  ASSERT_TRUE(w.Flush().ok());
  w.Set("shard.0", Shard(0));  // same target again
  ASSERT_TRUE(w.Flush().ok());
  w.Set("shard.1", std::nullopt);  // a quick restart within one turn
  w.Set("shard.1", Shard(1));
  w.Set("never.added", std::nullopt);
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 2);
  EXPECT_EQ(Inode(path), inode);

  w.Set("shard.0", std::nullopt);
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 3);
  EXPECT_NE(Inode(path), inode);
  EXPECT_EQ(Read(path), RenderFileSd({Shard(1)}));
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"node1.targets.json"});
}

TEST_F(FileSdTest, WriterRetriesAFailedWrite) {
  const std::string sub = File("sd");
  FileSdWriter w(sub + "/targets.json");
  w.Set("shard.0", Shard(0));
  EXPECT_FALSE(w.Flush().ok());
  EXPECT_FALSE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 0);
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 1);
  EXPECT_EQ(Read(sub + "/targets.json"), RenderFileSd({Shard(0)}));
}

TEST_F(FileSdTest, WriterWithoutPathWritesNothing) {
  FileSdWriter w("");
  w.Set("shard.0", Shard(0));
  EXPECT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.writes(), 0);
}

}  // namespace
}  // namespace sb::supervisor
