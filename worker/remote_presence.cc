#include "worker/remote_presence.h"

#include <boost/json.hpp>
#include <exception>
#include <utility>

#include "protocol/phoenix.h"

namespace sb::worker {

namespace json = boost::json;

namespace {

std::string_view View(json::string_view s) { return std::string_view(s.data(), s.size()); }

std::optional<json::object> ParseObject(std::string_view text) {
  json::parse_options options;
  options.max_depth = phx::kMaxJsonDepth;
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec, {}, options);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

// {key: {"metas": [{"phx_ref": "...", ...}, ...]}, ...}
bool IsState(const json::object& state) {
  for (const auto& entry : state) {
    const json::object* e = entry.value().if_object();
    if (e == nullptr) return false;
    const json::value* metas = e->if_contains("metas");
    if (metas == nullptr || !metas->is_array()) return false;
    for (const json::value& m : metas->get_array()) {
      const json::object* meta = m.if_object();
      if (meta == nullptr) return false;
      const json::value* ref = meta->if_contains("phx_ref");
      if (ref == nullptr || !ref->is_string()) return false;
    }
  }
  return true;
}

const json::array& MetasOf(const json::value& entry) {
  return entry.get_object().at("metas").get_array();
}

std::string_view Ref(const json::value& meta) {
  return View(meta.get_object().at("phx_ref").get_string());
}

// `key` as a JSON string, escaped as Boost.JSON does (only '"', '\\' and
// control characters); most keys need none, and skip the serializer.
void AppendKey(std::string& out, std::string_view key) {
  for (char c : key) {
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20) {
      out += json::serialize(json::string_view(key.data(), key.size()));
      return;
    }
  }
  out += '"';
  out += key;
  out += '"';
}

// Writes {"key":{"metas":[...]},...}: a key's group is opened by its first
// meta, so a key given no meta is left out.
class StateWriter {
 public:
  explicit StateWriter(std::string* out) : out_(out) { *out_ += '{'; }
  void Key(std::string_view key) {
    CloseGroup();
    key_ = key;
  }
  void Meta(std::string_view json) {
    if (in_group_) {
      *out_ += ',';
    } else {
      if (groups_++ > 0) *out_ += ',';
      AppendKey(*out_, key_);
      *out_ += R"(:{"metas":[)";
      in_group_ = true;
    }
    *out_ += json;
  }
  // Closes the object; returns how many keys it has.
  size_t Finish() {
    CloseGroup();
    *out_ += '}';
    return groups_;
  }

 private:
  void CloseGroup() {
    if (in_group_) *out_ += "]}";
    in_group_ = false;
  }

  std::string* out_;
  std::string_view key_;
  bool in_group_ = false;
  size_t groups_ = 0;
};

}  // namespace

RemotePresence::Meta::Meta(std::string_view ref, std::string_view json)
    : ref_size_(static_cast<uint32_t>(ref.size())) {
  text_.reserve(ref.size() + json.size());
  text_ += ref;
  text_ += json;
}

void RemotePresence::Join(Keys& keys, std::string_view key, Meta meta, Count& count) {
  auto k = keys.find(key);
  if (k == keys.end()) {
    k = keys.try_emplace(std::string(key)).first;
    count.bytes += key.size();
  }
  Metas& metas = k->second;
  for (auto m = metas.begin(); m != metas.end(); ++m) {
    if (m->ref() != meta.ref()) continue;
    count.bytes -= m->bytes();
    --count.metas;
    metas.erase(m);
    break;
  }
  count.bytes += meta.bytes();
  ++count.metas;
  metas.push_back(std::move(meta));
}

void RemotePresence::Leave(Keys& keys, std::string_view key, std::string_view ref, Count& count) {
  auto k = keys.find(key);
  if (k == keys.end()) return;
  Metas& metas = k->second;
  for (auto m = metas.begin(); m != metas.end(); ++m) {
    if (m->ref() != ref) continue;
    count.bytes -= m->bytes();
    --count.metas;
    metas.erase(m);
    break;
  }
  if (!metas.empty()) return;
  count.bytes -= k->first.size();
  keys.erase(k);
}

void RemotePresence::Uncount(const Keys& keys) {
  for (const auto& [key, metas] : keys) {
    count_.bytes -= key.size();
    for (const Meta& m : metas) {
      count_.bytes -= m.bytes();
      --count_.metas;
    }
  }
}

Status RemotePresence::ApplyDiff(std::string_view topic, std::string_view diff_json) {
  try {
    std::optional<json::object> diff = ParseObject(diff_json);
    if (!diff) return Status::Refused("presence diff is not a JSON object");
    const json::object* joins = diff->contains("joins") ? diff->at("joins").if_object() : nullptr;
    const json::object* leaves =
        diff->contains("leaves") ? diff->at("leaves").if_object() : nullptr;
    if (joins == nullptr || leaves == nullptr || !IsState(*joins) || !IsState(*leaves)) {
      return Status::Refused("presence diff is not {joins, leaves}");
    }
    auto t = topics_.find(topic);
    if (t == topics_.end()) t = topics_.try_emplace(std::string(topic)).first;
    Keys& keys = t->second;
    for (const auto& [key, entry] : *joins) {
      for (const json::value& m : MetasOf(entry)) {
        Join(keys, View(key), Meta(Ref(m), json::serialize(m)), count_);
      }
    }
    for (const auto& [key, entry] : *leaves) {
      for (const json::value& m : MetasOf(entry)) Leave(keys, View(key), Ref(m), count_);
    }
    // Erasing leaves the bucket array; a topic everyone left gives it back.
    if (keys.empty()) keys = Keys();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Internal(std::string("remote presence: ") + e.what());
  }
}

Result<std::optional<std::string>> RemotePresence::Replace(std::string_view topic,
                                                           std::string_view state_json) {
  try {
    std::optional<json::object> next = ParseObject(state_json);
    if (!next || !IsState(*next)) return Status::Refused("presence state is not {key: {metas}}");
    Keys fresh;
    Count added;
    for (const auto& [key, entry] : *next) {
      for (const json::value& m : MetasOf(entry)) {
        Join(fresh, View(key), Meta(Ref(m), json::serialize(m)), added);
      }
    }
    static const Keys kNone;
    auto t = topics_.find(topic);
    const Keys& known = t == topics_.end() ? kNone : t->second;
    auto same = [](const Metas& metas, const Meta& m, bool compare_text) {
      for (const Meta& x : metas) {
        if (x.ref() == m.ref()) return !compare_text || x.json() == m.json();
      }
      return false;
    };

    std::string diff = R"({"joins":)";
    StateWriter joins(&diff);
    // In the snapshot's key order; `fresh` has each of its keys with metas.
    for (const auto& [key, entry] : *next) {
      auto now = fresh.find(View(key));
      if (now == fresh.end()) continue;
      auto old = known.find(View(key));
      joins.Key(now->first);
      for (const Meta& m : now->second) {
        if (old == known.end() || !same(old->second, m, true)) joins.Meta(m.json());
      }
    }
    size_t changed = joins.Finish();
    diff += R"(,"leaves":)";
    StateWriter leaves(&diff);
    for (const auto& [key, metas] : known) {
      auto now = fresh.find(key);
      leaves.Key(key);
      for (const Meta& m : metas) {
        if (now == fresh.end() || !same(now->second, m, false)) leaves.Meta(m.json());
      }
    }
    changed += leaves.Finish();
    diff += '}';

    if (t == topics_.end()) {
      t = topics_.try_emplace(std::string(topic)).first;
    } else {
      Uncount(t->second);
    }
    t->second = std::move(fresh);
    count_.metas += added.metas;
    count_.bytes += added.bytes;
    if (changed == 0) return std::optional<std::string>();
    return std::optional<std::string>(std::move(diff));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("remote presence: ") + e.what());
  }
}

void RemotePresence::Drop(std::string_view topic) {
  auto t = topics_.find(topic);
  if (t == topics_.end()) return;
  Uncount(t->second);
  topics_.erase(t);
}

std::string RemotePresence::StateJson(std::string_view topic) const {
  auto t = topics_.find(topic);
  if (t == topics_.end()) return std::string("{}");
  std::string out;
  StateWriter state(&out);
  for (const auto& [key, metas] : t->second) {
    state.Key(key);
    for (const Meta& m : metas) state.Meta(m.json());
  }
  state.Finish();
  return out;
}

std::string RemotePresence::MergedStateJson(std::string_view topic,
                                            std::string_view local_state) const {
  auto t = topics_.find(topic);
  if (t == topics_.end() || t->second.empty()) return std::string(local_state);
  const Keys& remote = t->second;
  auto append_metas = [](std::string& out, const Metas& metas) {
    for (size_t i = 0; i < metas.size(); ++i) {
      if (i > 0) out += ',';
      out += metas[i].json();
    }
  };
  try {
    // The local state is small (this shard's metas); the remote ones, most
    // of the topic, are copied as they are stored.
    std::optional<json::object> local = ParseObject(local_state);
    if (!local) return std::string(local_state);
    std::string out;
    out.reserve(local_state.size() + 64 * remote.size());
    out += '{';
    for (const auto& [key, value] : *local) {
      if (out.size() > 1) out += ',';
      AppendKey(out, View(key));
      out += ':';
      auto r = remote.find(View(key));
      if (r == remote.end()) {
        out += json::serialize(value);
        continue;
      }
      if (!value.is_object()) {
        out += R"({"metas":[)";
        append_metas(out, r->second);
        out += "]}";
        continue;
      }
      const json::object& entry = value.get_object();
      const json::value* metas = entry.if_contains("metas");
      // A local state this malformed is passed on as it came.
      if (metas == nullptr || !metas->is_array()) return std::string(local_state);
      out += '{';
      bool first = true;
      for (const auto& [field, v] : entry) {
        if (!first) out += ',';
        first = false;
        AppendKey(out, View(field));
        out += ':';
        std::string text = json::serialize(v);
        if (field != "metas") {
          out += text;
          continue;
        }
        out.append(text, 0, text.size() - 1);  // without its ']'
        if (!v.get_array().empty()) out += ',';
        append_metas(out, r->second);
        out += ']';
      }
      out += '}';
    }
    for (const auto& [key, metas] : remote) {
      if (local->contains(json::string_view(key.data(), key.size()))) continue;
      if (out.size() > 1) out += ',';
      AppendKey(out, key);
      out += R"(:{"metas":[)";
      append_metas(out, metas);
      out += "]}";
    }
    out += '}';
    return out;
  } catch (const std::exception&) {
    return std::string(local_state);
  }
}

}  // namespace sb::worker
