#include "worker/remote_presence.h"

#include <boost/json.hpp>
#include <exception>

#include "protocol/phoenix.h"

namespace sb::worker {

namespace json = boost::json;

namespace {

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

const json::string& Ref(const json::value& meta) {
  return meta.get_object().at("phx_ref").get_string();
}

json::array& Metas(json::object& state, json::string_view key) {
  json::value& entry = state[key];
  if (!entry.is_object()) entry = json::object{{"metas", json::array{}}};
  return entry.get_object()["metas"].as_array();
}

// Index of the meta with `ref` in `metas`, or -1.
long FindRef(const json::array& metas, const json::string& ref) {
  for (size_t i = 0; i < metas.size(); ++i) {
    if (Ref(metas[i]) == ref) return static_cast<long>(i);
  }
  return -1;
}

void Remove(json::object& state, json::string_view key, const json::string& ref) {
  auto it = state.find(key);
  if (it == state.end()) return;
  json::array& metas = it->value().get_object()["metas"].as_array();
  if (long i = FindRef(metas, ref); i >= 0) metas.erase(metas.begin() + i);
  if (metas.empty()) state.erase(it);
}

}  // namespace

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
    json::object& state = topics_[std::string(topic)];
    for (const auto& [key, entry] : *joins) {
      json::array& metas = Metas(state, key);
      for (const json::value& m : entry.get_object().at("metas").get_array()) {
        if (long i = FindRef(metas, Ref(m)); i >= 0) metas.erase(metas.begin() + i);
        metas.push_back(m);
      }
    }
    for (const auto& [key, entry] : *leaves) {
      for (const json::value& m : entry.get_object().at("metas").get_array()) {
        Remove(state, key, Ref(m));
      }
    }
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
    json::object& known = topics_[std::string(topic)];
    json::object joins, leaves;
    for (const auto& [key, entry] : *next) {
      const json::array& metas = entry.get_object().at("metas").get_array();
      const json::object* old = known.contains(key) ? known.at(key).if_object() : nullptr;
      for (const json::value& m : metas) {
        long i = old ? FindRef(old->at("metas").get_array(), Ref(m)) : -1;
        if (i >= 0 && old->at("metas").get_array()[i] == m) continue;
        Metas(joins, key).push_back(m);
      }
    }
    for (const auto& [key, entry] : known) {
      const json::object* now = next->contains(key) ? next->at(key).if_object() : nullptr;
      for (const json::value& m : entry.get_object().at("metas").get_array()) {
        if (now == nullptr || FindRef(now->at("metas").get_array(), Ref(m)) < 0) {
          Metas(leaves, key).push_back(m);
        }
      }
    }
    known = std::move(*next);
    if (joins.empty() && leaves.empty()) return std::optional<std::string>();
    return std::optional<std::string>(
        json::serialize(json::object{{"joins", std::move(joins)}, {"leaves", std::move(leaves)}}));
  } catch (const std::exception& e) {
    return Status::Internal(std::string("remote presence: ") + e.what());
  }
}

std::string RemotePresence::StateJson(std::string_view topic) const {
  auto it = topics_.find(std::string(topic));
  return it == topics_.end() ? std::string("{}") : json::serialize(it->second);
}

std::string RemotePresence::MergedStateJson(std::string_view topic,
                                            std::string_view local_state) const {
  auto it = topics_.find(std::string(topic));
  if (it == topics_.end() || it->second.empty()) return std::string(local_state);
  try {
    std::optional<json::object> merged = ParseObject(local_state);
    if (!merged) return std::string(local_state);
    for (const auto& [key, entry] : it->second) {
      json::array& metas = Metas(*merged, key);
      for (const json::value& m : entry.get_object().at("metas").get_array()) metas.push_back(m);
    }
    return json::serialize(*merged);
  } catch (const std::exception&) {
    return std::string(local_state);
  }
}

}  // namespace sb::worker
