#include "worker/presence.h"

#include <boost/json.hpp>
#include <exception>

#include "protocol/phoenix.h"

namespace sb::worker {
namespace {

// `"key":{"metas":[` ... `]}`: the key escaped by Boost.JSON, metas are
// already JSON.
void OpenEntry(std::string& out, std::string_view key) {
  out += boost::json::serialize(boost::json::string_view(key.data(), key.size()));
  out += ":{\"metas\":[";
}
constexpr std::string_view kCloseEntry = "]}";

}  // namespace

Result<std::string> Presence::Track(std::string_view key, std::string_view phx_ref,
                                    std::string_view meta_json) {
  // Boost.JSON reports allocation failures and size limits by throwing; they
  // stop here.
  try {
    boost::json::object client;
    if (!meta_json.empty()) {
      boost::json::parse_options options;
      options.max_depth = phx::kMaxJsonDepth;  // what the decoder already let through
      boost::system::error_code ec;
      boost::json::value v = boost::json::parse(
          boost::json::string_view(meta_json.data(), meta_json.size()), ec, {}, options);
      if (ec || !v.is_object()) return Status::Refused("presence meta is not a JSON object");
      client = std::move(v.get_object());
    }
    boost::json::object meta;
    meta.reserve(client.size() + 1);
    meta.emplace("phx_ref", boost::json::string_view(phx_ref.data(), phx_ref.size()));
    for (auto& field : client) {
      if (field.key() != "phx_ref") meta.emplace(field.key(), std::move(field.value()));
    }
    auto it = keys_.find(key);
    if (it == keys_.end()) it = keys_.emplace(std::string(key), std::vector<Meta>{}).first;
    it->second.push_back(Meta{std::string(phx_ref), boost::json::serialize(meta)});

    std::string diff = "{\"joins\":{";
    OpenEntry(diff, key);
    diff += it->second.back().json;
    diff += kCloseEntry;
    diff += "},\"leaves\":{}}";
    return diff;
  } catch (const std::exception& e) {
    return Status::Internal(std::string("presence track: ") + e.what());
  }
}

bool Presence::Remove(std::string_view key, std::string_view phx_ref, std::string* json) {
  auto it = keys_.find(key);
  if (it == keys_.end()) return false;
  auto& metas = it->second;
  for (auto m = metas.begin(); m != metas.end(); ++m) {
    if (m->phx_ref != phx_ref) continue;
    *json = std::move(m->json);
    metas.erase(m);
    if (metas.empty()) keys_.erase(it);
    return true;
  }
  return false;
}

std::optional<std::string> Presence::Untrack(std::string_view key, std::string_view phx_ref) {
  std::string json;
  if (!Remove(key, phx_ref, &json)) return std::nullopt;
  std::string diff = "{\"joins\":{},\"leaves\":{";
  OpenEntry(diff, key);
  diff += json;
  diff += kCloseEntry;
  diff += "}}";
  return diff;
}

std::optional<std::string> Presence::UntrackMany(
    const std::vector<std::pair<std::string, std::string>>& key_refs) {
  // Leaves grouped by key (a key can leave with several metas), keys in order
  // of first appearance. A dying shard can take thousands of keys with it,
  // hence the index rather than a scan per leave.
  std::vector<std::pair<std::string_view, std::string>> groups;  // key, its metas joined by ','
  std::unordered_map<std::string_view, size_t> index;
  for (const auto& [key, ref] : key_refs) {
    std::string json;
    if (!Remove(key, ref, &json)) continue;
    auto [it, added] = index.try_emplace(key, groups.size());
    if (added) {
      groups.emplace_back(key, std::move(json));
    } else {
      std::string& metas = groups[it->second].second;
      metas += ',';
      metas += json;
    }
  }
  if (groups.empty()) return std::nullopt;
  std::string diff = "{\"joins\":{},\"leaves\":{";
  for (size_t i = 0; i < groups.size(); ++i) {
    if (i > 0) diff += ',';
    OpenEntry(diff, groups[i].first);
    diff += groups[i].second;
    diff += kCloseEntry;
  }
  diff += "}}";
  return diff;
}

const std::string* Presence::MetaJson(std::string_view key, std::string_view phx_ref) const {
  auto it = keys_.find(key);
  if (it == keys_.end()) return nullptr;
  for (const Meta& m : it->second) {
    if (m.phx_ref == phx_ref) return &m.json;
  }
  return nullptr;
}

std::string Presence::StateJson() const {
  std::string out = "{";
  for (const auto& [key, metas] : keys_) {
    if (out.size() > 1) out += ',';
    OpenEntry(out, key);
    for (size_t i = 0; i < metas.size(); ++i) {
      if (i > 0) out += ',';
      out += metas[i].json;
    }
    out += kCloseEntry;
  }
  out += '}';
  return out;
}

}  // namespace sb::worker
