// libFuzzer target for the mesh codec: what a broker reads from a shard (and
// a shard from the broker), and what the broker keeps in its queues.
//
// Input: one packed message (protocol/fuzz/corpus_mesh/ holds valid ones of
// every type, written by make_corpus.py).
//
// Besides "no crash, no sanitizer report" it checks properties: a refusal is
// a Refused status with a message; a message that decodes encodes and packs
// back to exactly the frames and bytes it came from; a kHello or kPresence
// body that decodes survives being encoded and decoded again, field by
// field, and its encoding is stable.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "common/testing/fuzz_check.h"
#include "protocol/mesh.h"

namespace {

namespace mesh = sb::mesh;
using sb::Status;

// A refusal of untrusted input: Refused (or Internal, for an allocation
// failure), with a message that says where it comes from.
void CheckRefusal(const Status& s, std::string_view prefix) {
  FUZZ_CHECK(!s.ok());
  FUZZ_CHECK(s.code() == Status::Code::kRefused || s.code() == Status::Code::kInternal);
  FUZZ_CHECK(s.message().size() > prefix.size());
  FUZZ_CHECK(std::string_view(s.message()).substr(0, prefix.size()) == prefix);
}

bool Same(const mesh::PresenceEntry& a, const mesh::PresenceEntry& b) {
  return a.key == b.key && a.phx_ref == b.phx_ref && a.meta_json == b.meta_json;
}

bool Same(const std::vector<mesh::PresenceEntry>& a, const std::vector<mesh::PresenceEntry>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!Same(a[i], b[i])) return false;
  }
  return true;
}

bool Same(const mesh::Hello& a, const mesh::Hello& b) {
  if (a.shard != b.shard || a.instance != b.instance || a.window != b.window ||
      a.token != b.token || a.outbox != b.outbox || a.acked != b.acked ||
      a.heartbeat_ms != b.heartbeat_ms || a.members != b.members || a.topics != b.topics ||
      a.idempotency != b.idempotency || a.presence.size() != b.presence.size()) {
    return false;
  }
  for (size_t i = 0; i < a.presence.size(); ++i) {
    if (a.presence[i].topic != b.presence[i].topic) return false;
    if (!Same(a.presence[i].metas, b.presence[i].metas)) return false;
  }
  return true;
}

void CheckEntries(const std::vector<mesh::PresenceEntry>& entries, bool with_meta) {
  for (const mesh::PresenceEntry& e : entries) {
    FUZZ_CHECK(!e.key.empty() && !e.phx_ref.empty());
    FUZZ_CHECK(with_meta ? e.meta_json.size() >= 2 && e.meta_json.front() == '{' &&
                               e.meta_json.back() == '}'
                         : e.meta_json.empty());
  }
}

void CheckHello(std::string_view body) {
  sb::Result<mesh::Hello> hello = mesh::DecodeHello(body);
  if (!hello.ok()) {
    CheckRefusal(hello.status(), "mesh: hello: ");
    return;
  }
  FUZZ_CHECK(hello->instance != 0 && hello->window != 0);
  FUZZ_CHECK(hello->members.size() <= mesh::kMaxMembers);
  for (const std::string& name : hello->members) {
    FUZZ_CHECK(!name.empty() && name.size() <= mesh::kMaxShardNameBytes);
  }
  for (const std::string& t : hello->topics) {
    FUZZ_CHECK(!t.empty() && t.size() <= mesh::kMaxTopicBytes);
  }
  for (const mesh::TopicState& state : hello->presence) {
    FUZZ_CHECK(!state.topic.empty() && state.topic.size() <= mesh::kMaxTopicBytes);
    CheckEntries(state.metas, true);
  }
  const std::string text = mesh::EncodeHello(*hello);
  sb::Result<mesh::Hello> again = mesh::DecodeHello(text);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(Same(*again, *hello));
  FUZZ_CHECK(mesh::EncodeHello(*again) == text);
}

void CheckPresence(std::string_view body) {
  sb::Result<mesh::PresenceChange> change = mesh::DecodePresenceChange(body);
  if (!change.ok()) {
    CheckRefusal(change.status(), "mesh: presence: ");
    return;
  }
  CheckEntries(change->joins, true);
  CheckEntries(change->leaves, false);
  const std::string text = mesh::EncodePresenceChange(*change);
  sb::Result<mesh::PresenceChange> again = mesh::DecodePresenceChange(text);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(Same(again->joins, change->joins) && Same(again->leaves, change->leaves));
  FUZZ_CHECK(mesh::EncodePresenceChange(*again) == text);
}

void CheckMembers(std::string_view body) {
  sb::Result<std::vector<std::string>> members = mesh::DecodeMembers(body);
  if (!members.ok()) {
    CheckRefusal(members.status(), "mesh: members: ");
    return;
  }
  FUZZ_CHECK(members->size() <= mesh::kMaxMembers);
  for (const std::string& name : *members) {
    FUZZ_CHECK(!name.empty() && name.size() <= mesh::kMaxShardNameBytes);
  }
  const std::string text = mesh::EncodeMembers(*members);
  sb::Result<std::vector<std::string>> again = mesh::DecodeMembers(text);
  FUZZ_CHECK(again.ok() && *again == *members);
}

void CheckPeerInterest(std::string_view body) {
  sb::Result<std::vector<std::string>> topics = mesh::DecodePeerInterest(body);
  if (!topics.ok()) {
    CheckRefusal(topics.status(), "mesh: peer interest: ");
    return;
  }
  FUZZ_CHECK(topics->size() <= mesh::kMaxHelloTopics);
  for (const std::string& t : *topics) FUZZ_CHECK(!t.empty() && t.size() <= mesh::kMaxTopicBytes);
  sb::Result<std::vector<std::string>> again =
      mesh::DecodePeerInterest(mesh::EncodePeerInterest(*topics));
  FUZZ_CHECK(again.ok() && *again == *topics);
}

void CheckPeerIntro(std::string_view body) {
  sb::Result<mesh::PeerIntro> intro = mesh::DecodePeerIntro(body);
  if (!intro.ok()) {
    CheckRefusal(intro.status(), "mesh: peer intro: ");
    return;
  }
  FUZZ_CHECK(!intro->node.empty() && !intro->incarnation.empty());
  sb::Result<mesh::PeerIntro> again = mesh::DecodePeerIntro(mesh::EncodePeerIntro(*intro));
  FUZZ_CHECK(again.ok() && *again == *intro);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view packed(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> frames;
  Status s = mesh::Unpack(packed, &frames);
  if (!s.ok()) {
    CheckRefusal(s, "mesh: ");
    return 0;
  }
  size_t total = 0;
  for (std::string_view f : frames) total += 4 + f.size();
  FUZZ_CHECK(total == size);

  mesh::Message m;
  s = mesh::Decode(frames, &m);
  if (!s.ok()) {
    CheckRefusal(s, "mesh: ");
    return 0;
  }
  FUZZ_CHECK(m.topic.size() <= mesh::kMaxTopicBytes);
  FUZZ_CHECK((m.flags & ~(mesh::kFlagBinary | mesh::kFlagStamped | mesh::kFlagKeyed |
                          mesh::kFlagSequenced)) == 0);
  // A position is whole (both nonzero) where the flag gives one, absent elsewhere.
  if ((m.type == mesh::Type::kDeliver || m.type == mesh::Type::kRestate) &&
      (m.flags & mesh::kFlagSequenced) != 0) {
    FUZZ_CHECK(m.offset != 0 && m.stream != 0);
  } else if (m.type != mesh::Type::kFetch && m.type != mesh::Type::kHistory) {
    FUZZ_CHECK(m.offset == 0 && m.stream == 0);
  }
  if (m.type == mesh::Type::kRestate) FUZZ_CHECK((m.flags & mesh::kFlagSequenced) != 0);
  // Only a publish is keyed, and its key is within bounds and the fourth frame.
  if ((m.flags & mesh::kFlagKeyed) != 0) {
    FUZZ_CHECK(m.type == mesh::Type::kPublish);
    FUZZ_CHECK(frames.size() == 4 && m.key.data() == frames[3].data());
    FUZZ_CHECK(!m.key.empty() && m.key.size() <= mesh::kMaxKeyBytes);
  } else {
    FUZZ_CHECK(m.key.empty());
  }
  // The views point into the frames.
  if (m.type == mesh::Type::kHello || m.type == mesh::Type::kBatch ||
      m.type == mesh::Type::kMembers || m.type == mesh::Type::kPeerHello ||
      m.type == mesh::Type::kPeerWelcome || m.type == mesh::Type::kPeerData ||
      m.type == mesh::Type::kPeerInterest) {
    FUZZ_CHECK(m.body.data() == frames[1].data());
  } else if (frames.size() > 1) {
    FUZZ_CHECK(m.topic.data() == frames[1].data());
  }
  if (frames.size() > 2) FUZZ_CHECK(m.body.data() == frames[2].data());

  const mesh::Frames encoded(m);
  FUZZ_CHECK(encoded.views().size() == frames.size());
  for (size_t i = 0; i < frames.size(); ++i) FUZZ_CHECK(encoded.views()[i] == frames[i]);
  FUZZ_CHECK(mesh::Pack(m) == packed);

  if (m.type == mesh::Type::kHello) CheckHello(m.body);
  if (m.type == mesh::Type::kPresence || m.type == mesh::Type::kPeerPresence) {
    CheckPresence(m.body);
  }
  if (m.type == mesh::Type::kPeerInterest) CheckPeerInterest(m.body);
  if (m.type == mesh::Type::kPeerData) {
    // The message it carries unpacks and decodes, packing back to its
    // bytes, or is refused with a reason (the broker counts it).
    std::vector<std::string_view> inner;
    Status u = mesh::Unpack(m.body, &inner);
    mesh::Message one;
    if (u.ok()) u = mesh::Decode(inner, &one);
    if (!u.ok()) {
      CheckRefusal(u, "mesh: ");
    } else {
      FUZZ_CHECK(mesh::Pack(one) == m.body);
    }
  }
  if (m.type == mesh::Type::kMembers) CheckMembers(m.body);
  if (m.type == mesh::Type::kPeerHello || m.type == mesh::Type::kPeerWelcome) {
    CheckPeerIntro(m.body);
  }
  if (m.type == mesh::Type::kBatch) {
    // Every inner message either decodes and packs back to its bytes or is
    // refused with a reason; the walk stops at a malformed entry.
    s = mesh::ForEachInBatch(m.body, [](std::span<const std::string_view> inner) {
      mesh::Message one;
      Status d = mesh::Decode(inner, &one);
      if (!d.ok()) return CheckRefusal(d, "mesh: ");
      const mesh::Frames again(one);
      FUZZ_CHECK(again.views().size() == inner.size());
      for (size_t i = 0; i < inner.size(); ++i) FUZZ_CHECK(again.views()[i] == inner[i]);
    });
    if (!s.ok()) CheckRefusal(s, "mesh: ");
  }
  return 0;
}
