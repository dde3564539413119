// mesh_testing: what the unit tests of both mesh speakers (broker/router,
// worker/cluster_session) share. Test-only: included by gtest binaries,
// never by a program.
//
// Owns: a message as owned frames (to feed a decoder or tamper with), and
// SentLog, the record a fake transport keeps of what it was handed — a
// message as it is, or a packed message whose kBatch is taken apart — as
// owned copies, so a test asserts on messages whichever way they were sent.
// Does not: know either speaker's interface (each test's fake forwards to
// it). Header-only; single-threaded like the tests that use it.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/mesh.h"

namespace sb::mesh_testing {

// `msg`'s frames as strings of their own.
inline std::vector<std::string> EncodeFrames(const mesh::Message& msg) {
  const mesh::Frames frames(msg);
  return {frames.views().begin(), frames.views().end()};
}

// One message handed to a fake transport, its views copied.
struct SentMessage {
  std::string to;  // the routing id it went to (a broker's sends); empty for a shard's
  mesh::Type type = mesh::Type::kHeartbeat;
  uint64_t epoch = 0, seq = 0, origin = 0;
  uint32_t n = 0;
  uint8_t flags = 0;
  uint64_t stamp = 0;
  std::string topic, body;
  std::string key;  // a keyed kPublish's
};

class SentLog {
 public:
  void Record(const mesh::Message& m, std::string_view to = {}) {
    sent.push_back({std::string(to), m.type, m.epoch, m.seq, m.origin, m.n, m.flags, m.stamp,
                    std::string(m.topic), std::string(m.body), std::string(m.key)});
  }
  // A packed message: recorded as it is, or a kBatch as the messages in it
  // (counted in `batches`). Anything that does not decode fails the test.
  void RecordPacked(std::string_view packed, std::string_view to = {}) {
    std::vector<std::string_view> frames;
    mesh::Message m;
    if (!mesh::Unpack(packed, &frames).ok() || !mesh::Decode(frames, &m).ok()) {
      ADD_FAILURE() << "a packed message that does not decode was sent";
      return;
    }
    if (m.type != mesh::Type::kBatch) return Record(m, to);
    ++batches;
    Status s = mesh::ForEachInBatch(m.body, [&](std::span<const std::string_view> inner) {
      mesh::Message one;
      if (!mesh::Decode(inner, &one).ok() || one.type == mesh::Type::kBatch) {
        ADD_FAILURE() << "a batch holds a message that does not decode or a batch";
        return;
      }
      Record(one, to);
    });
    if (!s.ok()) ADD_FAILURE() << s.message();
  }

  // What was recorded of `type` (sent to `to`, if given), oldest first.
  std::vector<SentMessage> Of(mesh::Type type, std::string_view to = {}) const {
    std::vector<SentMessage> out;
    for (const SentMessage& s : sent) {
      if (s.type == type && (to.empty() || s.to == to)) out.push_back(s);
    }
    return out;
  }

  std::vector<SentMessage> sent;
  int batches = 0;
};

}  // namespace sb::mesh_testing
