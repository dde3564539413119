#include "protocol/mesh.h"

#include <algorithm>
#include <boost/json.hpp>
#include <exception>
#include <iterator>
#include <limits>
#include <type_traits>

#include "protocol/json_depth.h"
#include "protocol/phoenix.h"

namespace sb::mesh {

namespace {

constexpr size_t kBaseHeader = 4;  // "SB", version, type
constexpr uint8_t kKnownFlags = kFlagBinary | kFlagStamped | kFlagKeyed | kFlagSequenced;
// The parser's bound for a JSON body: a hello's metas start at level 6, so
// every meta within kMaxMetaDepth parses and one deeper is left out by name
// rather than failing the whole body. Boost.JSON's parser keeps its stack on
// the heap, so the bound costs memory, not the thread's stack; the values'
// destructors recurse, at most this deep.
constexpr size_t kMaxJsonDepth = 128;
static_assert(kMaxMetaDepth + 4 == phx::kMaxJsonDepth);
static_assert(kMaxMetaDepth + 5 < kMaxJsonDepth);
constexpr size_t kAnySize = std::numeric_limits<size_t>::max();

// Calls f(field) for each fixed header field of m's type, in wire order. A
// field is as wide on the wire as in Message. The optional stamp is not one
// of them (Stamped() says whether it follows).
template <typename M, typename F>
constexpr void ForEachField(M& m, F&& f) {
  switch (m.type) {
    case Type::kWelcome:
    case Type::kHeartbeat:
      f(m.epoch);
      break;
    case Type::kPublish:
      f(m.seq);
      f(m.flags);
      break;
    case Type::kAck:
    case Type::kPeerData:
    case Type::kPeerAck:
      f(m.seq);
      break;
    case Type::kCredit:
      f(m.n);
      break;
    case Type::kDeliver:
    case Type::kRestate:
    case Type::kPeerSequence:
      f(m.origin);
      f(m.seq);
      f(m.flags);
      break;
    case Type::kFetch:
      f(m.id);
      f(m.offset);
      f(m.n);
      break;
    case Type::kPeerHeartbeat:
      f(m.stamp);
      f(m.echo);
      break;
    case Type::kHistory:
      f(m.id);
      f(m.stream);
      f(m.top);
      f(m.first);
      break;
    default:
      break;
  }
}

// What each type looks like on the wire, indexed by the type's value.
struct Shape {
  const char* name;
  size_t frames;  // header included
  size_t header;  // bytes, fixed fields included
};

constexpr Shape MakeShape(const char* name, Type type, size_t frames) {
  Message m;
  m.type = type;
  size_t header = kBaseHeader;
  ForEachField(m, [&header](const auto& field) { header += sizeof field; });
  return {name, frames, header};
}

constexpr Shape kShapes[] = {
    {nullptr, 0, 0},
    MakeShape("kHello", Type::kHello, 2),
    MakeShape("kWelcome", Type::kWelcome, 1),
    MakeShape("kReset", Type::kReset, 1),
    MakeShape("kHeartbeat", Type::kHeartbeat, 1),
    MakeShape("kSubscribe", Type::kSubscribe, 2),
    MakeShape("kUnsubscribe", Type::kUnsubscribe, 2),
    MakeShape("kPublish", Type::kPublish, 3),
    MakeShape("kAck", Type::kAck, 1),
    MakeShape("kCredit", Type::kCredit, 1),
    MakeShape("kPresence", Type::kPresence, 3),
    MakeShape("kDeliver", Type::kDeliver, 3),
    MakeShape("kDiff", Type::kDiff, 3),
    MakeShape("kSnapshot", Type::kSnapshot, 3),
    MakeShape("kBatch", Type::kBatch, 2),
    MakeShape("kMembers", Type::kMembers, 2),
    MakeShape("kFetch", Type::kFetch, 2),
    MakeShape("kHistory", Type::kHistory, 3),
    MakeShape("kRestate", Type::kRestate, 3),
    MakeShape("kPeerHello", Type::kPeerHello, 2),
    MakeShape("kPeerWelcome", Type::kPeerWelcome, 2),
    MakeShape("kPeerHeartbeat", Type::kPeerHeartbeat, 1),
    MakeShape("kPeerData", Type::kPeerData, 2),
    MakeShape("kPeerAck", Type::kPeerAck, 1),
    MakeShape("kPeerInterest", Type::kPeerInterest, 2),
    MakeShape("kPeerPresence", Type::kPeerPresence, 3),
    MakeShape("kPeerSequence", Type::kPeerSequence, 3),
};
static_assert(kShapes[static_cast<size_t>(Type::kPublish)].header == 13);
static_assert(kShapes[static_cast<size_t>(Type::kCredit)].header == 8);
static_assert(kShapes[static_cast<size_t>(Type::kDeliver)].header == 21);
static_assert(std::ranges::all_of(kShapes,
                                  [](const Shape& s) { return s.header <= kMaxHeaderBytes; }));

bool Carried(const Message& m) {
  return m.type == Type::kPublish || m.type == Type::kDeliver || m.type == Type::kRestate ||
         m.type == Type::kPeerSequence;
}
// Whether m's header has the 8-byte stamp after the fixed fields.
bool Stamped(const Message& m) { return Carried(m) && (m.flags & kFlagStamped) != 0; }
constexpr size_t kStampBytes = sizeof(Message::stamp);
// Whether m's header ends with offset and stream (after the stamp, if any).
bool Positioned(const Message& m) {
  return (m.type == Type::kDeliver || m.type == Type::kRestate) && (m.flags & kFlagSequenced) != 0;
}
constexpr size_t kPositionBytes = sizeof(Message::offset) + sizeof(Message::stream);
// Whether m has the key frame after its body.
bool Keyed(const Message& m) { return m.type == Type::kPublish && (m.flags & kFlagKeyed) != 0; }
static_assert(kShapes[static_cast<size_t>(Type::kDeliver)].header + kStampBytes + kPositionBytes ==
              kMaxHeaderBytes);

const Shape* ShapeOf(Type type) {
  const auto i = static_cast<size_t>(type);
  return i > 0 && i < std::size(kShapes) ? &kShapes[i] : nullptr;
}

void PutLe(std::string& out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetLe(std::string_view in, size_t at, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
  return v;
}

bool BodyOnly(Type type) {
  return type == Type::kHello || type == Type::kBatch || type == Type::kMembers ||
         type == Type::kPeerHello || type == Type::kPeerWelcome || type == Type::kPeerData ||
         type == Type::kPeerInterest;
}
// A hello or a batch may fill a frame; any other body is held to kMaxBodyBytes.
// So may a kPeerData (it carries a packed message, up to kMaxPackedBytes) and a
// kPeerInterest (a node's whole interest, as large as a hello's topics).
bool LargeBody(Type type) {
  return type == Type::kHello || type == Type::kBatch || type == Type::kPeerData ||
         type == Type::kPeerInterest;
}

// The frames after the header: kHello, kBatch, kMembers, kPeerHello and kPeerWelcome have
// only their body, every
// other type with variable frames the topic first. Returns how many `msg` has.
size_t Tail(const Message& msg, const Shape& shape, std::string_view tail[2]) {
  tail[0] = BodyOnly(msg.type) ? msg.body : msg.topic;
  tail[1] = msg.body;
  return shape.frames - 1;
}

Status Refused(const Shape& shape, const std::string& what) {
  return Status::Refused(std::string("mesh: ") + shape.name + ": " + what);
}

}  // namespace

Status Decode(std::span<const std::string_view> frames, Message* out) {
  if (frames.empty()) return Status::Refused("mesh: no frames");
  const std::string_view h = frames[0];
  if (h.size() < kBaseHeader) {
    return Status::Refused("mesh: header is " + std::to_string(h.size()) +
                           " bytes, want at least 4");
  }
  if (h[0] != 'S' || h[1] != 'B') return Status::Refused("mesh: bad magic");
  const auto version = static_cast<uint8_t>(h[2]);
  if (version != kVersion) {
    return Status::Refused("mesh: version " + std::to_string(version) + ", want 1");
  }
  Message m;
  m.type = static_cast<Type>(static_cast<uint8_t>(h[3]));
  const Shape* shape = ShapeOf(m.type);
  if (!shape) {
    return Status::Refused("mesh: unknown type " + std::to_string(static_cast<uint8_t>(h[3])));
  }
  // The fixed fields first: the flags say whether a stamp follows them.
  size_t want = shape->header;
  if (h.size() >= shape->header) {
    size_t at = kBaseHeader;
    ForEachField(m, [&](auto& field) {
      field = static_cast<std::remove_reference_t<decltype(field)>>(GetLe(h, at, sizeof field));
      at += sizeof field;
    });
    if (Stamped(m)) {
      want += kStampBytes;
      if (h.size() >= want) m.stamp = GetLe(h, at, kStampBytes);
      at += kStampBytes;
    }
    if (Positioned(m)) {
      want += kPositionBytes;
      if (h.size() >= want) {
        m.offset = GetLe(h, at, sizeof m.offset);
        m.stream = GetLe(h, at + sizeof m.offset, sizeof m.stream);
      }
    }
  }
  if (h.size() != want) {
    return Status::Refused(std::string("mesh: header of ") + shape->name + " is " +
                           std::to_string(h.size()) + " bytes, want " + std::to_string(want));
  }
  if ((m.flags & ~kKnownFlags) != 0) {
    return Refused(*shape, "unknown flags " + std::to_string(m.flags));
  }
  if ((m.flags & kFlagKeyed) != 0 && m.type != Type::kPublish) {
    return Refused(*shape, "keyed, and not a publish");
  }
  if (m.type == Type::kRestate && (m.flags & kFlagSequenced) == 0) {
    return Refused(*shape, "not sequenced");
  }
  if (Positioned(m) && (m.offset == 0 || m.stream == 0)) {
    return Refused(*shape, "offset and stream must be nonzero");
  }
  if (m.type == Type::kHistory && m.stream == 0) return Refused(*shape, "stream is 0");
  const size_t want_frames = shape->frames + (Keyed(m) ? 1 : 0);
  if (frames.size() != want_frames) {
    return Refused(*shape,
                   std::to_string(frames.size()) + " frames, want " + std::to_string(want_frames));
  }
  if (m.type == Type::kCredit && m.n == 0) return Refused(*shape, "n is 0");
  if (Keyed(m)) {
    m.key = frames[3];
    if (m.key.empty() || m.key.size() > kMaxKeyBytes) {
      return Refused(*shape, "key is " + std::to_string(m.key.size()) + " bytes, want 1 to " +
                                 std::to_string(kMaxKeyBytes));
    }
  }
  if (BodyOnly(m.type)) {
    m.body = frames[1];
  } else if (shape->frames > 1) {
    m.topic = frames[1];
    if (m.topic.empty()) return Refused(*shape, "empty topic");
    if (m.topic.size() > kMaxTopicBytes) {
      return Refused(*shape, "topic is " + std::to_string(m.topic.size()) + " bytes, over " +
                                 std::to_string(kMaxTopicBytes));
    }
    if (shape->frames == 3) m.body = frames[2];
  }
  // No body is empty: a Phoenix message never is, and neither is JSON text.
  // A kHistory may hold no message.
  const bool has_body = (BodyOnly(m.type) || shape->frames == 3) && m.type != Type::kHistory;
  if (has_body && m.body.empty()) return Refused(*shape, "empty body");
  if (const size_t max = LargeBody(m.type) ? kMaxFrameBytes : kMaxBodyBytes; m.body.size() > max) {
    return Refused(
        *shape, "body is " + std::to_string(m.body.size()) + " bytes, over " + std::to_string(max));
  }
  *out = m;
  return Status::Ok();
}

Frames::Frames(const Message& msg) {
  const Shape* shape = ShapeOf(msg.type);
  if (!shape) return;
  header_[0] = 'S';
  header_[1] = 'B';
  header_[2] = static_cast<char>(kVersion);
  header_[3] = static_cast<char>(msg.type);
  size_t at = kBaseHeader;
  auto put = [&](uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) header_[at++] = static_cast<char>(v >> (8 * i));
  };
  ForEachField(msg, [&](const auto& field) { put(static_cast<uint64_t>(field), sizeof field); });
  if (Stamped(msg)) put(msg.stamp, kStampBytes);
  if (Positioned(msg)) {
    put(msg.offset, sizeof msg.offset);
    put(msg.stream, sizeof msg.stream);
  }
  views_[0] = std::string_view(header_, at);
  count_ = 1 + Tail(msg, *shape, &views_[1]);
  if (Keyed(msg)) views_[count_++] = msg.key;
}

namespace {

size_t PackedSize(const Frames& frames) {
  size_t total = 0;
  for (std::string_view f : frames.views()) total += 4 + f.size();
  return total;
}

// Appends `frames` packed (Pack's format) to `out`.
void AppendPacked(std::string& out, const Frames& frames) {
  // Frames are far below 4 GiB: a topic is bounded, a Phoenix message by the
  // shard's WebSocket message limit, a JSON body by one shard's state.
  for (std::string_view f : frames.views()) {
    PutLe(out, f.size(), 4);
    out.append(f);
  }
}

}  // namespace

std::string Pack(const Message& msg) {
  const Frames frames(msg);
  std::string out;
  out.reserve(PackedSize(frames));
  AppendPacked(out, frames);
  return out;
}

BatchWriter::BatchWriter() { Reset(); }

void BatchWriter::Reset() {
  // A packed kBatch: the header frame, then the body frame whose length is
  // written by Finish. clear() keeps the buffer's capacity.
  buf_.clear();
  PutLe(buf_, kBaseHeader, 4);
  buf_ += std::string{'S', 'B', static_cast<char>(kVersion), static_cast<char>(Type::kBatch)};
  PutLe(buf_, 0, 4);
  count_ = 0;
  finished_ = false;
}

void BatchWriter::Add(std::string_view packed) {
  if (finished_) Reset();
  PutLe(buf_, packed.size(), 4);
  buf_.append(packed);
  ++count_;
}

void BatchWriter::Add(const Message& msg) {
  if (finished_) Reset();
  const Frames frames(msg);
  PutLe(buf_, PackedSize(frames), 4);
  AppendPacked(buf_, frames);
  ++count_;
}

std::string_view BatchWriter::Finish() {
  if (finished_) Reset();
  const size_t body_at = 4 + kBaseHeader;
  const uint64_t body = buf_.size() - body_at - 4;
  for (size_t i = 0; i < 4; ++i) buf_[body_at + i] = static_cast<char>(body >> (8 * i));
  finished_ = true;
  return buf_;
}

Status ForEachInBatch(std::string_view body,
                      const std::function<void(std::span<const std::string_view>)>& fn) {
  std::vector<std::string_view> frames;
  size_t at = 0;
  while (at < body.size()) {
    if (body.size() - at < 4) return Status::Refused("mesh: kBatch: length is truncated");
    const uint64_t n = GetLe(body, at, 4);
    at += 4;
    if (n > body.size() - at) return Status::Refused("mesh: kBatch: message overruns the batch");
    if (Status s = Unpack(body.substr(at, n), &frames); !s.ok()) return s;
    at += n;
    fn(frames);
  }
  return Status::Ok();
}

Status Unpack(std::string_view packed, std::vector<std::string_view>* frames) {
  frames->clear();
  if (packed.empty()) return Status::Refused("mesh: packed message is empty");
  size_t at = 0;
  while (at < packed.size()) {
    auto frame = [frames] { return "mesh: packed frame " + std::to_string(frames->size()); };
    if (packed.size() - at < 4) return Status::Refused(frame() + ": length is truncated");
    const uint64_t n = GetLe(packed, at, 4);
    at += 4;
    if (n > packed.size() - at) {
      return Status::Refused(frame() + " is " + std::to_string(n) + " bytes, only " +
                             std::to_string(packed.size() - at) + " left");
    }
    frames->push_back(packed.substr(at, n));
    at += n;
  }
  return Status::Ok();
}

// --- JSON bodies ---------------------------------------------------------

namespace {

namespace json = boost::json;

// Reads one JSON body. Each read that finds a problem returns false or
// nullptr; the first problem is kept in status(), naming the field
// ("mesh: hello: presence[0].metas[1].key is empty").
class Reader {
 public:
  explicit Reader(const char* doc) : doc_(doc) {}

  const Status& status() const { return status_; }

  // The body's root object, or nullptr.
  const json::object* Parse(std::string_view text) {
    json::parse_options options;
    options.max_depth = kMaxJsonDepth;
    json::error_code ec;
    try {
      root_ = json::parse(json::string_view(text.data(), text.size()), ec, {}, options);
    } catch (const std::exception& e) {
      // Only std::bad_alloc: not the sender's fault.
      status_ = Status::Internal(std::string("mesh: ") + doc_ + ": " + e.what());
      return nullptr;
    }
    if (ec) {
      Fail("invalid JSON:", ec.message());
      return nullptr;
    }
    if (!root_.is_object()) {
      Fail("not", "an object");
      return nullptr;
    }
    return &root_.get_object();
  }

  bool Fail(const std::string& field, const std::string& problem) {
    if (status_.ok()) {
      status_ = Status::Refused(std::string("mesh: ") + doc_ + ": " + field + " " + problem);
    }
    return false;
  }

  const json::value* Member(const json::object& o, const std::string& path, const char* key) {
    const json::value* v = o.if_contains(key);
    if (!v) Fail(path + key, "is missing");
    return v;
  }

  bool String(const json::value* v, const std::string& field, std::string* out, size_t min,
              size_t max = kAnySize) {
    if (!v) return false;
    if (!v->is_string()) return Fail(field, "is not a string");
    const json::string& s = v->get_string();
    if (s.size() < min) return Fail(field, "is empty");
    if (s.size() > max) return Fail(field, "is too long");
    out->assign(s.data(), s.size());
    return true;
  }

  bool String(const json::object& o, const std::string& path, const char* key, std::string* out,
              size_t min, size_t max = kAnySize) {
    return String(Member(o, path, key), path + key, out, min, max);
  }

  // An integer member within min..max (`key` at the body's top level).
  bool Unsigned(const json::object& o, const char* key, uint64_t min, uint64_t max, uint64_t* out) {
    const json::value* v = Member(o, "", key);
    if (!v) return false;
    if (!v->is_int64() && !v->is_uint64()) return Fail(key, "is not an integer");
    const bool negative = v->is_int64() && v->get_int64() < 0;
    const uint64_t n = v->is_uint64() ? v->get_uint64() : static_cast<uint64_t>(v->get_int64());
    if (negative || n < min || n > max) {
      return Fail(key, "is not within " + std::to_string(min) + ".." + std::to_string(max));
    }
    *out = n;
    return true;
  }

  const json::array* Array(const json::object& o, const std::string& path, const char* key) {
    const json::value* v = Member(o, path, key);
    if (!v) return nullptr;
    if (!v->is_array()) {
      Fail(path + key, "is not an array");
      return nullptr;
    }
    return &v->get_array();
  }

  const json::object* Object(const json::value* v, const std::string& field) {
    if (!v) return nullptr;
    if (!v->is_object()) {
      Fail(field, "is not an object");
      return nullptr;
    }
    return &v->get_object();
  }

  // [{"key":..,"phx_ref":..,"meta":{..}}, ...]; a leave's meta is not read.
  bool Entries(const json::object& o, const std::string& path, const char* key, bool with_meta,
               std::vector<PresenceEntry>* out) {
    const json::array* a = Array(o, path, key);
    if (!a) return false;
    out->resize(a->size());
    for (size_t i = 0; i < a->size(); ++i) {
      const std::string field = path + key + "[" + std::to_string(i) + "]";
      const json::object* entry = Object(&(*a)[i], field);
      PresenceEntry& e = (*out)[i];
      if (!entry || !String(*entry, field + ".", "key", &e.key, 1) ||
          !String(*entry, field + ".", "phx_ref", &e.phx_ref, 1)) {
        return false;
      }
      if (!with_meta) continue;
      const json::object* meta = Object(Member(*entry, field + ".", "meta"), field + ".meta");
      if (!meta) return false;
      if (JsonDepth(*meta) > kMaxMetaDepth) {
        return Fail(field + ".meta", "is nested deeper than " + std::to_string(kMaxMetaDepth));
      }
      try {
        e.meta_json = json::serialize(*meta);
      } catch (const std::exception& ex) {
        status_ = Status::Internal(std::string("mesh: ") + doc_ + ": " + ex.what());
        return false;
      }
    }
    return true;
  }

 private:
  const char* doc_;
  json::value root_;
  Status status_;
};

bool ValidTopic(const json::string& s) { return !s.empty() && s.size() <= kMaxTopicBytes; }
bool ValidName(const json::string& s) { return !s.empty() && s.size() <= kMaxShardNameBytes; }

void AppendNames(std::string& out, const std::vector<std::string>& names) {
  out.push_back('[');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out.push_back(',');
    phx::AppendJsonString(out, names[i]);
  }
  out.push_back(']');
}

// A hello's meta entry, checked as Reader::Entries checks a join, without
// naming the problem: the caller drops the entry and counts it.
bool ReadMetaEntry(const json::value& v, PresenceEntry* out) {
  const json::object* entry = v.if_object();
  if (!entry) return false;
  const json::value* key = entry->if_contains("key");
  const json::value* ref = entry->if_contains("phx_ref");
  const json::value* meta = entry->if_contains("meta");
  if (!key || !key->is_string() || key->get_string().empty() || !ref || !ref->is_string() ||
      ref->get_string().empty() || !meta || !meta->is_object() ||
      JsonDepth(*meta) > kMaxMetaDepth) {
    return false;
  }
  out->key.assign(key->get_string().data(), key->get_string().size());
  out->phx_ref.assign(ref->get_string().data(), ref->get_string().size());
  try {
    out->meta_json = json::serialize(meta->get_object());
  } catch (const std::exception&) {
    return false;  // std::bad_alloc: the entry is left out like a bad one
  }
  return true;
}

bool IsLowerHex(std::string_view s, size_t digits) {
  return s.size() == digits && std::ranges::all_of(s, [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool ParseInstance(std::string_view s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c >= '0' && c <= '9') {
      v = v << 4 | static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      v = v << 4 | static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return false;
    }
  }
  *out = v;
  return true;
}

// The meta is spliced after validation, so its bytes are kept. Text that is
// not one JSON object would break the whole body; it becomes null instead,
// so the receiver refuses the message naming the field rather than the meta
// being lost silently.
void AppendMeta(std::string& out, std::string_view meta_json) {
  if (meta_json.empty()) {
    out.append("{}");
    return;
  }
  json::parse_options options;
  options.max_depth = kMaxMetaDepth;
  json::error_code ec;
  bool object = false;
  try {
    object = json::parse(json::string_view(meta_json.data(), meta_json.size()), ec, {}, options)
                 .is_object();
  } catch (const std::exception&) {
    object = false;  // std::bad_alloc
  }
  out.append(!ec && object ? meta_json : "null");
}

void AppendEntries(std::string& out, const std::vector<PresenceEntry>& entries, bool with_meta) {
  out.push_back('[');
  for (size_t i = 0; i < entries.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append("{\"key\":");
    phx::AppendJsonString(out, entries[i].key);
    out.append(",\"phx_ref\":");
    phx::AppendJsonString(out, entries[i].phx_ref);
    if (with_meta) {
      out.append(",\"meta\":");
      AppendMeta(out, entries[i].meta_json);
    }
    out.push_back('}');
  }
  out.push_back(']');
}

}  // namespace

namespace {

// One entry of a hello's "idempotency": false unless it has every field,
// each within its bound.
bool ReadKeyClaim(const json::value& v, KeyClaim* out) {
  const json::object* o = v.if_object();
  if (!o) return false;
  const json::value* key = o->if_contains("key");
  const json::value* topic = o->if_contains("topic");
  const json::value* seq = o->if_contains("seq");
  const json::value* age = o->if_contains("age_ms");
  if (!key || !key->is_string() || key->get_string().empty() ||
      key->get_string().size() > kMaxKeyBytes || !topic || !topic->is_string() ||
      !ValidTopic(topic->get_string()) || !seq || !age) {
    return false;
  }
  uint64_t s = 0;
  if (const auto* u = seq->if_uint64()) {
    s = *u;
  } else if (const auto* i = seq->if_int64(); i && *i > 0) {
    s = static_cast<uint64_t>(*i);
  }
  const int64_t* a = age->if_int64();
  const uint64_t* au = age->if_uint64();
  uint64_t age_ms = 0;
  if (a && *a >= 0) {
    age_ms = static_cast<uint64_t>(*a);
  } else if (au) {
    age_ms = *au;
  } else {
    return false;
  }
  if (s == 0 || age_ms > std::numeric_limits<uint32_t>::max()) return false;
  out->key.assign(key->get_string().data(), key->get_string().size());
  out->topic.assign(topic->get_string().data(), topic->get_string().size());
  out->seq = s;
  out->age_ms = static_cast<uint32_t>(age_ms);
  return true;
}

// An unsigned JSON integer (Boost.JSON keeps one that fits int64 as int64).
bool ReadUnsigned(const json::value* v, uint64_t* out) {
  if (!v) return false;
  if (const auto* u = v->if_uint64()) {
    *out = *u;
    return true;
  }
  if (const auto* i = v->if_int64(); i && *i >= 0) {
    *out = static_cast<uint64_t>(*i);
    return true;
  }
  return false;
}

// One entry of a hello's "history": a valid topic, a nonzero stream, a top.
bool ReadStreamPosition(const json::value& v, StreamPosition* out) {
  const json::object* o = v.if_object();
  if (!o) return false;
  const json::value* topic = o->if_contains("topic");
  if (!topic || !topic->is_string() || !ValidTopic(topic->get_string())) return false;
  if (!ReadUnsigned(o->if_contains("stream"), &out->stream) || out->stream == 0) return false;
  if (!ReadUnsigned(o->if_contains("top"), &out->top)) return false;
  out->topic.assign(topic->get_string().data(), topic->get_string().size());
  return true;
}

}  // namespace

std::string EncodeHello(const Hello& hello) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "{\"shard\":";
  phx::AppendJsonString(out, hello.shard);
  out.append(",\"instance\":\"");
  for (int shift = 60; shift >= 0; shift -= 4) out.push_back(kHex[(hello.instance >> shift) & 15]);
  out.append("\",\"window\":").append(std::to_string(hello.window));
  if (!hello.token.empty()) {
    out.append(",\"token\":");
    phx::AppendJsonString(out, hello.token);
  }
  if (hello.outbox != 0) out.append(",\"outbox\":").append(std::to_string(hello.outbox));
  if (hello.acked) out.append(",\"acked\":").append(std::to_string(*hello.acked));
  if (hello.heartbeat_ms != 0) {
    out.append(",\"heartbeat_ms\":").append(std::to_string(hello.heartbeat_ms));
  }
  if (!hello.members.empty()) {
    out.append(",\"members\":");
    AppendNames(out, hello.members);
  }
  if (!hello.idempotency.empty()) {
    out.append(",\"idempotency\":[");
    for (size_t i = 0; i < hello.idempotency.size(); ++i) {
      const KeyClaim& c = hello.idempotency[i];
      if (i > 0) out.push_back(',');
      out.append("{\"key\":");
      phx::AppendJsonString(out, c.key);
      out.append(",\"topic\":");
      phx::AppendJsonString(out, c.topic);
      out.append(",\"seq\":").append(std::to_string(c.seq));
      out.append(",\"age_ms\":").append(std::to_string(c.age_ms)).push_back('}');
    }
    out.push_back(']');
  }
  if (!hello.history.empty()) {
    out.append(",\"history\":[");
    for (size_t i = 0; i < hello.history.size(); ++i) {
      const StreamPosition& p = hello.history[i];
      if (i > 0) out.push_back(',');
      out.append("{\"topic\":");
      phx::AppendJsonString(out, p.topic);
      out.append(",\"stream\":").append(std::to_string(p.stream));
      out.append(",\"top\":").append(std::to_string(p.top)).push_back('}');
    }
    out.push_back(']');
  }
  if (hello.restate != 0) out.append(",\"restate\":").append(std::to_string(hello.restate));
  out.append(",\"topics\":[");
  for (size_t i = 0; i < hello.topics.size(); ++i) {
    if (i > 0) out.push_back(',');
    phx::AppendJsonString(out, hello.topics[i]);
  }
  out.append("],\"presence\":[");
  for (size_t i = 0; i < hello.presence.size(); ++i) {
    if (i > 0) out.push_back(',');
    out.append("{\"topic\":");
    phx::AppendJsonString(out, hello.presence[i].topic);
    out.append(",\"metas\":");
    AppendEntries(out, hello.presence[i].metas, true);
    out.push_back('}');
  }
  out.append("]}");
  return out;
}

Result<Hello> DecodeHello(std::string_view text) {
  Reader r("hello");
  const json::object* o = r.Parse(text);
  Hello h;
  std::string instance;
  if (!o || !r.String(*o, "", "shard", &h.shard, 0) ||
      !r.String(*o, "", "instance", &instance, 0)) {
    return r.status();
  }
  if (!ParseInstance(instance, &h.instance)) r.Fail("instance", "is not 16 lowercase hex digits");
  if (h.instance == 0) r.Fail("instance", "is zero");

  uint64_t n = 0;
  if (r.Unsigned(*o, "window", 1, std::numeric_limits<uint32_t>::max(), &n)) {
    h.window = static_cast<uint32_t>(n);
  }
  if (o->contains("outbox") &&
      r.Unsigned(*o, "outbox", 1, std::numeric_limits<uint32_t>::max(), &n)) {
    h.outbox = static_cast<uint32_t>(n);
  }
  if (o->contains("heartbeat_ms") &&
      r.Unsigned(*o, "heartbeat_ms", 1, std::numeric_limits<uint32_t>::max(), &n)) {
    h.heartbeat_ms = static_cast<uint32_t>(n);
  }
  if (o->contains("acked") &&
      r.Unsigned(*o, "acked", 0, std::numeric_limits<uint64_t>::max(), &n)) {
    h.acked = n;
  }
  if (o->contains("restate") &&
      r.Unsigned(*o, "restate", 0, std::numeric_limits<uint64_t>::max(), &n)) {
    h.restate = n;
  }
  if (!r.status().ok()) return r.status();

  if (o->contains("token") && r.String(*o, "", "token", &h.token, 0) &&
      !IsLowerHex(h.token, kTokenHexDigits)) {
    r.Fail("token", "is not " + std::to_string(kTokenHexDigits) + " lowercase hex digits");
  }

  const json::array* topics = r.Array(*o, "", "topics");
  const json::array* presence = r.Array(*o, "", "presence");
  if (!topics || !presence || !r.status().ok()) return r.status();

  auto drop = [&h](HelloDrop why) { ++h.dropped[static_cast<size_t>(why)]; };
  if (const json::value* members = o->if_contains("members")) {
    if (!members->is_array()) return Status::Refused("mesh: hello: members is not an array");
    h.members.reserve(std::min(members->get_array().size(), kMaxMembers));
    for (const json::value& m : members->get_array()) {
      if (h.members.size() == kMaxMembers) {
        drop(HelloDrop::kOverLimit);
      } else if (const json::string* s = m.if_string(); s && ValidName(*s)) {
        h.members.emplace_back(s->data(), s->size());
      } else {
        drop(HelloDrop::kMember);
      }
    }
  }
  if (const json::value* keys = o->if_contains("idempotency")) {
    if (!keys->is_array()) return Status::Refused("mesh: hello: idempotency is not an array");
    h.idempotency.reserve(std::min(keys->get_array().size(), kMaxHelloKeys));
    for (const json::value& k : keys->get_array()) {
      if (h.idempotency.size() == kMaxHelloKeys) {
        drop(HelloDrop::kOverLimit);
        continue;
      }
      KeyClaim c;
      if (!ReadKeyClaim(k, &c)) {
        drop(HelloDrop::kKey);
        continue;
      }
      h.idempotency.push_back(std::move(c));
    }
  }
  if (const json::value* streams = o->if_contains("history")) {
    if (!streams->is_array()) return Status::Refused("mesh: hello: history is not an array");
    h.history.reserve(std::min(streams->get_array().size(), kMaxHelloStreams));
    for (const json::value& e : streams->get_array()) {
      if (h.history.size() == kMaxHelloStreams) {
        drop(HelloDrop::kOverLimit);
        continue;
      }
      StreamPosition p;
      if (!ReadStreamPosition(e, &p)) {
        drop(HelloDrop::kStream);
        continue;
      }
      h.history.push_back(std::move(p));
    }
  }
  h.topics.reserve(std::min(topics->size(), kMaxHelloTopics));
  for (const json::value& t : *topics) {
    if (h.topics.size() == kMaxHelloTopics) {
      drop(HelloDrop::kOverLimit);
    } else if (const json::string* s = t.if_string(); s && ValidTopic(*s)) {
      h.topics.emplace_back(s->data(), s->size());
    } else {
      drop(HelloDrop::kTopic);
    }
  }

  size_t metas = 0;
  h.presence.reserve(std::min(presence->size(), kMaxHelloTopics));
  for (const json::value& p : *presence) {
    const json::object* t = p.if_object();
    const json::value* topic = t ? t->if_contains("topic") : nullptr;
    const json::value* entries = t ? t->if_contains("metas") : nullptr;
    if (h.presence.size() == kMaxHelloTopics) {
      drop(HelloDrop::kOverLimit);
      continue;
    }
    if (!topic || !topic->is_string() || !ValidTopic(topic->get_string()) || !entries ||
        !entries->is_array()) {
      drop(HelloDrop::kTopic);
      continue;
    }
    TopicState& state = h.presence.emplace_back();
    state.topic.assign(topic->get_string().data(), topic->get_string().size());
    for (const json::value& e : entries->get_array()) {
      if (metas == kMaxHelloMetas) {
        drop(HelloDrop::kOverLimit);
        continue;
      }
      PresenceEntry entry;
      if (!ReadMetaEntry(e, &entry)) {
        drop(HelloDrop::kMeta);
        continue;
      }
      state.metas.push_back(std::move(entry));
      ++metas;
    }
  }
  return h;
}

namespace {

// {"<key>":["..",..]}: kMembers' and kPeerInterest's bodies.
std::string EncodeStringList(const char* key, const std::vector<std::string>& items) {
  std::string out = "{\"";
  out.append(key).append("\":");
  AppendNames(out, items);
  out.push_back('}');
  return out;
}

// The list under `key` of such a body: refused unless it is an array of at
// most `max_items` strings of 1..`max_bytes` bytes (each a `noun`).
Result<std::vector<std::string>> DecodeStringList(std::string_view text, const char* doc,
                                                  const char* key, size_t max_items,
                                                  size_t max_bytes, const char* noun) {
  Reader r(doc);
  const json::object* o = r.Parse(text);
  if (!o) return r.status();
  const json::array* a = r.Array(*o, "", key);
  if (!a) return r.status();
  const std::string prefix = std::string("mesh: ") + doc + ": ";
  if (a->size() > max_items) {
    return Status::Refused(prefix + "more than " + std::to_string(max_items) + " " + noun + "s");
  }
  std::vector<std::string> out;
  out.reserve(a->size());
  for (size_t i = 0; i < a->size(); ++i) {
    const json::string* s = (*a)[i].if_string();
    if (!s || s->empty() || s->size() > max_bytes) {
      return Status::Refused(prefix + key + "[" + std::to_string(i) + "] is not a " + noun +
                             " of 1.." + std::to_string(max_bytes) + " bytes");
    }
    out.emplace_back(s->data(), s->size());
  }
  return out;
}

}  // namespace

std::string EncodeMembers(const std::vector<std::string>& members) {
  return EncodeStringList("members", members);
}

Result<std::vector<std::string>> DecodeMembers(std::string_view text) {
  return DecodeStringList(text, "members", "members", kMaxMembers, kMaxShardNameBytes, "name");
}

std::string EncodePresenceChange(const PresenceChange& change) {
  std::string out = "{\"joins\":";
  AppendEntries(out, change.joins, true);
  out.append(",\"leaves\":");
  AppendEntries(out, change.leaves, false);
  out.push_back('}');
  return out;
}

Result<PresenceChange> DecodePresenceChange(std::string_view text) {
  Reader r("presence");
  const json::object* o = r.Parse(text);
  PresenceChange c;
  if (!o || !r.Entries(*o, "", "joins", true, &c.joins) ||
      !r.Entries(*o, "", "leaves", false, &c.leaves)) {
    return r.status();
  }
  return c;
}

namespace {
constexpr size_t kMaxIntroField = 64;
}  // namespace

std::string EncodePeerIntro(const PeerIntro& intro) {
  std::string out = "{\"node\":";
  phx::AppendJsonString(out, intro.node);
  if (!intro.cluster.empty()) {
    out.append(",\"cluster\":");
    phx::AppendJsonString(out, intro.cluster);
  }
  out.append(",\"incarnation\":");
  phx::AppendJsonString(out, intro.incarnation);
  if (intro.stream != 0) out.append(",\"stream\":").append(std::to_string(intro.stream));
  if (intro.expected != 0) out.append(",\"expected\":").append(std::to_string(intro.expected));
  if (intro.batches) out.append(",\"batches\":true");
  out.push_back('}');
  return out;
}

Result<PeerIntro> DecodePeerIntro(std::string_view text) {
  Reader r("peer intro");
  const json::object* o = r.Parse(text);
  PeerIntro p;
  if (!o || !r.String(*o, "", "node", &p.node, 1, kMaxIntroField) ||
      !r.String(*o, "", "incarnation", &p.incarnation, 1, kMaxIntroField)) {
    return r.status();
  }
  if (o->contains("cluster") && !r.String(*o, "", "cluster", &p.cluster, 1, kMaxIntroField)) {
    return r.status();
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (o->contains("stream") && !r.Unsigned(*o, "stream", 1, kMax, &p.stream)) return r.status();
  if (o->contains("expected") && !r.Unsigned(*o, "expected", 0, kMax, &p.expected)) {
    return r.status();
  }
  // Anything but true (absent, false, another type) is no: one by one.
  if (const json::value* b = o->if_contains("batches")) p.batches = b->is_bool() && b->as_bool();
  return p;
}

std::string EncodePeerInterest(const std::vector<std::string>& topics) {
  return EncodeStringList("topics", topics);
}

Result<std::vector<std::string>> DecodePeerInterest(std::string_view text) {
  return DecodeStringList(text, "peer interest", "topics", kMaxHelloTopics, kMaxTopicBytes,
                          "topic");
}

}  // namespace sb::mesh
