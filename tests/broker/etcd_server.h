// A real etcd for the membership tests: Debian's etcd-server binary started
// on free 127.0.0.1 ports with its own data directory, and blocking requests
// to its JSON gateway (/v3/...).
//
// Owns: the etcd process (killed with the test if the test dies: testutil's
// Process) and its temp directory. Stop() and Start() again keep the data,
// as an etcd restart does. Call from the test's main thread; nothing sleeps
// a fixed time.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tests/testutil/testutil.h"

namespace sb::testutil {

// The etcd binary, "" if it is not installed.
std::string FindEtcd();

class EtcdServer {
 public:
  explicit EtcdServer(std::string binary);
  ~EtcdServer() { Stop(); }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(client_port_); }

  // Starts it and waits until /health says true (10 s at most).
  bool Start();
  // SIGTERM, then waits for the exit.
  void Stop();

  // POSTs `body` to `path`: the answer, nullopt unless 200 with a JSON object.
  std::optional<boost::json::object> Post(const std::string& path, const boost::json::object& body);
  // The lease holding `key`, 0 if the key is absent.
  int64_t LeaseOf(const std::string& key);
  std::string log() const { return ReadFile(dir_.File("etcd.log")); }

 private:
  std::string binary_;
  int client_port_;
  int peer_port_;
  TempDir dir_;
  std::optional<Process> process_;
};

}  // namespace sb::testutil
