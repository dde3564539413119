#include "supervisor/spec_loader.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/curve.h"
#include "supervisor/api_client.h"
#include "supervisor/duration.h"
#include "yaml-cpp/yaml.h"

// Returns early with the first error: the loader reports one problem at a
// time, so every step is "do this or hand back its Status".
#define SB_RETURN_IF_ERROR(expr)                              \
  do {                                                        \
    if (::sb::Status sb_status_ = (expr); !sb_status_.ok()) { \
      return sb_status_;                                      \
    }                                                         \
  } while (false)

namespace sb::supervisor {
namespace {

using Keys = std::span<const std::string_view>;

constexpr std::array<std::string_view, 4> kTopKeys = {"node", "sockets", "supervisor", "cluster"};
constexpr std::array<std::string_view, 6> kNodeKeys = {"name",    "control", "events",
                                                       "metrics", "file_sd", "api"};
constexpr std::array<std::string_view, 2> kApiKeys = {"url", "key_file"};
constexpr std::array<std::string_view, 9> kClusterKeys = {
    "name",       "node",  "broker", "peer_bind", "curve_secret_file",
    "membership", "peers", "etcd",   "insecure"};
constexpr std::array<std::string_view, 3> kPeerKeys = {"node", "broker", "curve_public"};
constexpr std::array<std::string_view, 3> kEtcdKeys = {"endpoints", "advertise", "ttl"};
// The broker's own bounds (broker/cluster_membership.cc).
constexpr size_t kMaxNodeName = 64;
constexpr int kMinEtcdTtlS = 2;
constexpr int kMaxEtcdTtlS = 3600;
constexpr std::array<std::string_view, 3> kBackoffKeys = {"initial", "max", "factor"};
constexpr std::array<std::string_view, 4> kSocketKeys = {"name", "listen", "backlog", "balance"};
constexpr std::array<std::string_view, 5> kRootKeys = {"id", "strategy", "intensity", "period",
                                                       "children"};
constexpr std::array<std::string_view, 4> kChildCommonKeys = {"id", "type", "restart", "shutdown"};
constexpr std::array<std::string_view, 10> kWorkerKeys = {
    "command",  "env",     "ready",   "start_timeout", "sockets", "success_exit_codes",
    "replicas", "metrics", "backoff", "upgrade"};
constexpr std::array<std::string_view, 4> kSupervisorKeys = {"strategy", "intensity", "period",
                                                             "children"};

// A replica count is a number of OS processes; a typo like 100000 should be
// an error, not a fork storm or a huge TreeSpec.
constexpr int kMaxReplicas = 10000;
constexpr int kDefaultBacklog = 4096;
constexpr std::string_view kReplicaPlaceholder = "{{replica}}";
// sun_path includes the terminating NUL.
constexpr size_t kMaxSocketPath = sizeof(sockaddr_un{}.sun_path) - 1;

template <typename E>
struct EnumName {
  std::string_view name;
  E value;
};

constexpr std::array<EnumName<Strategy>, 4> kStrategies = {{
    {"one_for_one", Strategy::kOneForOne},
    {"one_for_all", Strategy::kOneForAll},
    {"rest_for_one", Strategy::kRestForOne},
    {"simple_one_for_one", Strategy::kSimpleOneForOne},
}};
constexpr std::array<EnumName<RestartType>, 3> kRestartTypes = {{
    {"permanent", RestartType::kPermanent},
    {"transient", RestartType::kTransient},
    {"temporary", RestartType::kTemporary},
}};
constexpr std::array<EnumName<ReadyMode>, 2> kReadyModes = {{
    {"notify", ReadyMode::kNotify},
    {"exec", ReadyMode::kExec},
}};
constexpr std::array<EnumName<UpgradeMode>, 2> kUpgradeModes = {{
    {"restart", UpgradeMode::kRestart},
    {"handoff", UpgradeMode::kHandoff},
}};
constexpr std::array<EnumName<Balance>, 2> kBalances = {{
    {"shared", Balance::kShared},
    {"round_robin", Balance::kRoundRobin},
}};
constexpr std::array<EnumName<Membership>, 2> kMemberships = {{
    {"static", Membership::kStatic},
    {"etcd", Membership::kEtcd},
}};
constexpr std::array<EnumName<bool>, 2> kBooleans = {{
    {"false", false},
    {"true", true},
}};
constexpr std::array<EnumName<bool>, 2> kChildTypes = {{
    {"worker", false},
    {"supervisor", true},
}};

std::string JoinKeys(Keys keys) {
  std::string out;
  for (std::string_view k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

bool Contains(Keys keys, std::string_view key) {
  for (std::string_view k : keys) {
    if (k == key) return true;
  }
  return false;
}

std::string Child(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string Item(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

std::string LineColumn(const YAML::Mark& mark) {
  if (mark.is_null()) return "1:1";
  return std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

// [A-Za-z0-9_-]+, plus '.' when `allow_dot`.
bool IsName(std::string_view s, bool allow_dot) {
  if (s.empty()) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || (allow_dot && c == '.');
    if (!ok) return false;
  }
  return true;
}

// Strict decimal: optional '-', digits, nothing else. yaml-cpp's own
// conversion would accept "0x10" and "010" (octal), which in a config file is
// more surprising than useful.
std::optional<int64_t> ParseInteger(std::string_view s) {
  bool negative = false;
  if (!s.empty() && s.front() == '-') {
    negative = true;
    s.remove_prefix(1);
  }
  if (s.empty() || s.size() > 18) return std::nullopt;  // 18 digits cannot overflow int64
  int64_t value = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return negative ? -value : value;
}

// A YAML value together with where it is: its dotted key path and the best
// mark for messages about it.
struct Field {
  YAML::Node node;
  std::string path;
  YAML::Mark mark;
};

struct MapEntry {
  std::string key;
  YAML::Mark key_mark;
  Field value;
};

struct MapView {
  Field self;
  std::vector<MapEntry> entries;

  const MapEntry* Find(std::string_view key) const {
    for (const MapEntry& e : entries) {
      if (e.key == key) return &e;
    }
    return nullptr;
  }
  const Field* FindValue(std::string_view key) const {
    const MapEntry* e = Find(key);
    return e == nullptr ? nullptr : &e->value;
  }
};

// Keys that belong to the other kind of child, with the hint to give.
struct Misplaced {
  Keys keys;
  std::string_view hint;
};

class Loader {
 public:
  explicit Loader(const std::string& file) { spec_.file = file; }

  sb::Result<TreeSpec> Load(const std::string& yaml);

 private:
  sb::Status Error(const YAML::Mark& mark, const std::string& path, std::string_view what) const {
    std::string msg = spec_.file + ":" + LineColumn(mark) + ": ";
    if (!path.empty()) msg += "key '" + path + "': ";
    msg += what;
    return sb::Status::InvalidConfig(std::move(msg));
  }
  sb::Status Error(const Field& f, std::string_view what) const {
    return Error(f.mark, f.path, what);
  }
  void Warn(const Field& f, std::string_view what) {
    spec_.warnings.push_back(spec_.file + ":" + LineColumn(f.mark) + ": key '" + f.path +
                             "': " + std::string(what));
  }

  // Structure.
  sb::Status ReadMap(const Field& f, std::string_view expected, MapView* out) const;
  sb::Status CheckKeys(const MapView& map, Keys allowed, const Misplaced* misplaced) const;
  sb::Status Required(const MapView& map, std::string_view key, std::string_view why,
                      const Field** out) const;
  // Null means "empty list" for optional list-valued keys: an operator who
  // comments out every entry is left with `key:` and no value.
  sb::Status ReadList(const Field& f, std::string_view expected, std::vector<Field>* out) const;
  // A list of maps with only `keys`, each read as ReadMap does; `item` names
  // one in messages ("a socket map").
  sb::Status ReadMapList(const Field& f, std::string_view expected, std::string_view item,
                         Keys keys, std::vector<MapView>* out) const;

  // Scalars.
  sb::Status Text(const Field& f, std::string_view expected, std::string* out) const;
  sb::Status Integer(const Field& f, int64_t min, int64_t max, int* out) const;
  sb::Status Duration(const Field& f, bool allow_zero, Millis* out) const;
  template <typename E, size_t N>
  sb::Status Enum(const Field& f, std::string_view what, const std::array<EnumName<E>, N>& table,
                  E* out) const;
  sb::Status Name(const Field& f, bool allow_dot, std::string_view what, std::string* out) const;

  // Sections.
  sb::Status ParseTop(const Field& doc);
  sb::Status ParseNode(const Field& f);
  sb::Status ParseSockets(const Field& f);
  sb::Status ParseListen(const Field& f, SocketSpec* out) const;
  // A "host:port" endpoint with the same rules as a socket's listen address.
  sb::Status Endpoint(const Field& f, std::string* out) const;
  sb::Status ParseRoot(const Field& f, const YAML::Mark& key_mark);
  sb::Status ParseSupervisorFlags(const MapView& map, SupervisorSpec* out);
  sb::Status ParseChild(const Field& f, bool is_template, SupervisorSpec* parent);
  sb::Status ParseWorker(const MapView& map, bool is_template, ChildSpec* child,
                         std::optional<int>* replicas);
  sb::Status ParseShutdown(const Field& f, ShutdownSpec* out) const;
  // A round_robin socket hands member i to replica i, so exactly one replica
  // set may name it; `names` are the child's socket names as written.
  sb::Status ClaimRoundRobin(const std::vector<Field>& names, const ChildSpec& child,
                             bool is_template, std::optional<int> replicas);
  sb::Status RegisterId(const std::string& id, const Field& where);
  // cluster: parsed after the tree, since it names the broker child and
  // appends to its command.
  sb::Status ParseCluster(const Field& f);
  sb::Status ParsePeers(const Field& f, ClusterSpec* c);
  sb::Status ParseEtcd(const Field& f, ClusterSpec* c);
  // tcp://HOST:PORT; `bind`: HOST as a listen address takes it (numeric or
  // localhost, port 0 allowed); otherwise also a DNS name, port 1-65535.
  sb::Status TcpEndpoint(const Field& f, bool bind, std::string* out) const;
  sb::Status ClusterName(const Field& f, std::string_view what, std::string* out) const;

  TreeSpec spec_;
  // The `command:` of every child that is neither a replica nor a template,
  // by id: where a flag cluster: owns is found written by hand.
  std::map<std::string, Field, std::less<>> commands_;
  std::map<std::string, YAML::Mark, std::less<>> ids_;
  std::set<std::string, std::less<>> socket_names_;
  // round_robin sockets already named by a replica set: the set's id and where.
  std::map<std::string, std::pair<std::string, YAML::Mark>, std::less<>> round_robin_owner_;
};

sb::Status Loader::ReadMap(const Field& f, std::string_view expected, MapView* out) const {
  out->self = f;
  out->entries.clear();
  if (f.node.IsNull()) return sb::Status::Ok();  // `key:` alone: every key takes its default
  if (!f.node.IsMap()) return Error(f, "expected " + std::string(expected));
  // Copies, not references: yaml-cpp's iterator hands out a temporary pair,
  // so a reference to `it->first` dangles at the end of the statement.
  for (auto it = f.node.begin(); it != f.node.end(); ++it) {
    const YAML::Node key = it->first;
    const YAML::Node value = it->second;
    if (!key.IsScalar()) return Error(key.Mark(), f.path, "keys must be plain strings");
    MapEntry entry;
    entry.key = key.Scalar();
    entry.key_mark = key.Mark();
    entry.value.node = value;
    entry.value.path = Child(f.path, entry.key);
    // yaml-cpp marks an empty value at the next token, often on a later line,
    // so a null value is better located by its key.
    entry.value.mark = value.IsNull() ? key.Mark() : value.Mark();
    // yaml-cpp keeps both copies of a repeated key and lookups see only the
    // first; YAML says repeated keys are an error, and an operator who
    // repeats one almost always meant to edit the first.
    if (const MapEntry* first = out->Find(entry.key)) {
      return Error(entry.key_mark, entry.value.path,
                   "duplicate key '" + entry.key + "' (first defined at " +
                       LineColumn(first->key_mark) + ")");
    }
    out->entries.push_back(std::move(entry));
  }
  return sb::Status::Ok();
}

sb::Status Loader::CheckKeys(const MapView& map, Keys allowed, const Misplaced* misplaced) const {
  for (const MapEntry& e : map.entries) {
    if (Contains(allowed, e.key)) continue;
    if (misplaced != nullptr && Contains(misplaced->keys, e.key)) {
      return Error(e.key_mark, e.value.path, "'" + e.key + "' " + std::string(misplaced->hint));
    }
    return Error(e.key_mark, e.value.path,
                 "unknown key '" + e.key + "' (allowed here: " + JoinKeys(allowed) + ")");
  }
  return sb::Status::Ok();
}

sb::Status Loader::Required(const MapView& map, std::string_view key, std::string_view why,
                            const Field** out) const {
  *out = map.FindValue(key);
  if (*out != nullptr) return sb::Status::Ok();
  return Error(map.self.mark, Child(map.self.path, key),
               "required key is missing (" + std::string(why) + ")");
}

sb::Status Loader::ReadList(const Field& f, std::string_view expected,
                            std::vector<Field>* out) const {
  out->clear();
  if (f.node.IsNull()) return sb::Status::Ok();
  if (!f.node.IsSequence()) return Error(f, "expected " + std::string(expected));
  size_t i = 0;
  for (const YAML::Node& item : f.node) {  // bound to the temporary *it for one pass
    const YAML::Mark mark = item.Mark().is_null() ? f.mark : item.Mark();
    out->push_back(Field{item, Item(f.path, i), mark});
    ++i;
  }
  return sb::Status::Ok();
}

sb::Status Loader::ReadMapList(const Field& f, std::string_view expected, std::string_view item,
                               Keys keys, std::vector<MapView>* out) const {
  std::vector<Field> items;
  SB_RETURN_IF_ERROR(ReadList(f, expected, &items));
  out->clear();
  for (const Field& i : items) {
    if (!i.node.IsMap()) {
      return Error(i, "expected " + std::string(item) + " with keys " + JoinKeys(keys));
    }
    MapView map;
    SB_RETURN_IF_ERROR(ReadMap(i, "", &map));
    SB_RETURN_IF_ERROR(CheckKeys(map, keys, nullptr));
    out->push_back(std::move(map));
  }
  return sb::Status::Ok();
}

sb::Status Loader::Text(const Field& f, std::string_view expected, std::string* out) const {
  if (f.node.IsScalar()) {
    *out = f.node.Scalar();
    return sb::Status::Ok();
  }
  std::string found = f.node.IsMap() ? "a map" : f.node.IsSequence() ? "a list" : "no value";
  return Error(f, "expected " + std::string(expected) + ", found " + found);
}

sb::Status Loader::Integer(const Field& f, int64_t min, int64_t max, int* out) const {
  const std::string expected =
      max == INT_MAX ? "an integer >= " + std::to_string(min)
                     : "an integer from " + std::to_string(min) + " to " + std::to_string(max);
  std::string text;
  SB_RETURN_IF_ERROR(Text(f, expected, &text));
  const std::optional<int64_t> value = ParseInteger(text);
  if (!value || *value < min || *value > max) {
    return Error(f, "expected " + expected + ", found '" + text + "'");
  }
  *out = static_cast<int>(*value);
  return sb::Status::Ok();
}

sb::Status Loader::Duration(const Field& f, bool allow_zero, Millis* out) const {
  std::string text;
  SB_RETURN_IF_ERROR(Text(f, "a duration such as 5s or 100ms", &text));
  sb::Result<Millis> d = ParseDuration(text);
  if (!d.ok()) return Error(f, d.status().message());
  if (!allow_zero && d->count() == 0) return Error(f, "duration must be greater than zero");
  *out = *d;
  return sb::Status::Ok();
}

template <typename E, size_t N>
sb::Status Loader::Enum(const Field& f, std::string_view what,
                        const std::array<EnumName<E>, N>& table, E* out) const {
  std::string names;
  for (const auto& entry : table) {
    if (!names.empty()) names += ", ";
    names += entry.name;
  }
  std::string text;
  SB_RETURN_IF_ERROR(Text(f, "one of " + names, &text));
  for (const auto& entry : table) {
    if (entry.name == text) {
      *out = entry.value;
      return sb::Status::Ok();
    }
  }
  return Error(f,
               "unknown " + std::string(what) + " '" + text + "' (expected one of " + names + ")");
}

sb::Status Loader::Name(const Field& f, bool allow_dot, std::string_view what,
                        std::string* out) const {
  SB_RETURN_IF_ERROR(Text(f, "a name", out));
  if (IsName(*out, allow_dot)) return sb::Status::Ok();
  const std::string pattern = allow_dot ? "[A-Za-z0-9_.-]+" : "[A-Za-z0-9_-]+";
  std::string msg = "invalid " + std::string(what) + " '" + *out + "': must match " + pattern;
  if (!allow_dot && IsName(*out, /*allow_dot=*/true)) {
    msg += " (dots are reserved for replica ids such as shard.0)";
  }
  return Error(f, msg);
}

sb::Status Loader::RegisterId(const std::string& id, const Field& where) {
  auto [it, inserted] = ids_.try_emplace(id, where.mark);
  if (inserted) return sb::Status::Ok();
  return Error(where,
               "duplicate id '" + id + "' (first defined at " + LineColumn(it->second) + ")");
}

sb::Result<TreeSpec> Loader::Load(const std::string& yaml) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml);
  } catch (const YAML::Exception& e) {
    return sb::Status::InvalidConfig(spec_.file + ":" + LineColumn(e.mark) + ": " + e.msg);
  }
  if (docs.size() > 1) {
    return Error(docs[1].Mark(), "",
                 "only one YAML document is allowed; remove the second '---' section");
  }
  if (docs.empty() || docs[0].IsNull()) return Error(YAML::Mark(), "", "empty configuration");
  SB_RETURN_IF_ERROR(ParseTop(Field{docs[0], "", docs[0].Mark()}));
  return std::move(spec_);
}

sb::Status Loader::ParseTop(const Field& doc) {
  if (!doc.node.IsMap()) {
    return Error(doc, "the configuration must be a map with the keys " + JoinKeys(kTopKeys));
  }
  MapView top;
  SB_RETURN_IF_ERROR(ReadMap(doc, "", &top));
  SB_RETURN_IF_ERROR(CheckKeys(top, kTopKeys, nullptr));
  // Order matters: children refer to sockets by name.
  if (const Field* node = top.FindValue("node")) {
    SB_RETURN_IF_ERROR(ParseNode(*node));
  } else {
    spec_.node.control = "/tmp/switchboard/" + spec_.node.name + ".sock";
  }
  if (const Field* sockets = top.FindValue("sockets")) {
    SB_RETURN_IF_ERROR(ParseSockets(*sockets));
  }
  const Field* root = nullptr;
  SB_RETURN_IF_ERROR(Required(top, "supervisor", "it is the root of the supervision tree", &root));
  SB_RETURN_IF_ERROR(ParseRoot(*root, top.Find("supervisor")->key_mark));
  if (const Field* cluster = top.FindValue("cluster")) {
    SB_RETURN_IF_ERROR(ParseCluster(*cluster));
  }
  return sb::Status::Ok();
}

sb::Status Loader::ParseNode(const Field& f) {
  MapView map;
  SB_RETURN_IF_ERROR(ReadMap(f, "a map with keys " + JoinKeys(kNodeKeys), &map));
  SB_RETURN_IF_ERROR(CheckKeys(map, kNodeKeys, nullptr));
  const Field* name = map.FindValue("name");
  if (name != nullptr) {
    SB_RETURN_IF_ERROR(Name(*name, /*allow_dot=*/true, "node name", &spec_.node.name));
  }
  if (const Field* control = map.FindValue("control")) {
    SB_RETURN_IF_ERROR(Text(*control, "a path", &spec_.node.control));
    if (spec_.node.control.empty()) return Error(*control, "control socket path is empty");
    if (spec_.node.control.size() > kMaxSocketPath) {
      return Error(*control, "control socket path is " + std::to_string(spec_.node.control.size()) +
                                 " bytes; Unix sockets allow at most " +
                                 std::to_string(kMaxSocketPath));
    }
  } else {
    spec_.node.control = "/tmp/switchboard/" + spec_.node.name + ".sock";
    if (name != nullptr && spec_.node.control.size() > kMaxSocketPath) {
      return Error(*name, "node name is too long for the default control socket path " +
                              spec_.node.control + "; shorten it or set node.control");
    }
  }
  if (const Field* events = map.FindValue("events")) {
    SB_RETURN_IF_ERROR(Text(*events, "a path", &spec_.node.events));
    if (spec_.node.events.empty()) return Error(*events, "event log path is empty");
  }
  if (const Field* metrics = map.FindValue("metrics")) {
    SB_RETURN_IF_ERROR(Endpoint(*metrics, &spec_.node.metrics));
  }
  if (const Field* file_sd = map.FindValue("file_sd")) {
    SB_RETURN_IF_ERROR(Text(*file_sd, "a path", &spec_.node.file_sd));
    if (spec_.node.file_sd.empty()) return Error(*file_sd, "file_sd path is empty");
  } else {
    std::string control = spec_.node.control;
    spec_.node.file_sd =
        control.substr(0, control.rfind('/') + 1) + spec_.node.name + ".targets.json";
  }
  if (const Field* api = map.FindValue("api")) {
    MapView api_map;
    SB_RETURN_IF_ERROR(ReadMap(*api, "a map with keys " + JoinKeys(kApiKeys), &api_map));
    SB_RETURN_IF_ERROR(CheckKeys(api_map, kApiKeys, nullptr));
    const Field* url = nullptr;
    SB_RETURN_IF_ERROR(
        Required(api_map, "url", "switchboard publish sends to it (http://HOST:PORT)", &url));
    SB_RETURN_IF_ERROR(Text(*url, "a URL", &spec_.node.api.url));
    if (Result<ApiUrl> parsed = ParseApiUrl(spec_.node.api.url); !parsed.ok()) {
      return Error(*url, parsed.status().message());
    }
    const Field* key_file = nullptr;
    SB_RETURN_IF_ERROR(Required(api_map, "key_file", "the API needs its bearer key", &key_file));
    SB_RETURN_IF_ERROR(Text(*key_file, "a path", &spec_.node.api.key_file));
    if (spec_.node.api.key_file.empty()) return Error(*key_file, "API key file path is empty");
  }
  return sb::Status::Ok();
}

sb::Status Loader::ParseSockets(const Field& f) {
  std::vector<MapView> maps;
  SB_RETURN_IF_ERROR(ReadMapList(f, "a list of sockets ({name, listen, backlog, balance})",
                                 "a socket map", kSocketKeys, &maps));
  for (const MapView& map : maps) {
    SocketSpec socket;
    const Field* name = nullptr;
    SB_RETURN_IF_ERROR(Required(map, "name", "children refer to sockets by name", &name));
    SB_RETURN_IF_ERROR(Name(*name, /*allow_dot=*/false, "socket name", &socket.name));
    if (!socket_names_.insert(socket.name).second) {
      return Error(*name, "duplicate socket name '" + socket.name + "'");
    }
    const Field* listen = nullptr;
    SB_RETURN_IF_ERROR(Required(map, "listen", "e.g. listen: \"127.0.0.1:4000\"", &listen));
    SB_RETURN_IF_ERROR(ParseListen(*listen, &socket));
    socket.backlog = kDefaultBacklog;
    if (const Field* backlog = map.FindValue("backlog")) {
      SB_RETURN_IF_ERROR(Integer(*backlog, 1, 65535, &socket.backlog));
    }
    if (const Field* balance = map.FindValue("balance")) {
      SB_RETURN_IF_ERROR(Enum(*balance, "balance", kBalances, &socket.balance));
    }
    spec_.sockets.push_back(std::move(socket));
  }
  return sb::Status::Ok();
}

sb::Status Loader::Endpoint(const Field& f, std::string* out) const {
  SocketSpec parsed;
  SB_RETURN_IF_ERROR(ParseListen(f, &parsed));
  bool v6 = parsed.host.find(':') != std::string::npos;
  *out = (v6 ? "[" + parsed.host + "]" : parsed.host) + ":" + std::to_string(parsed.port);
  return sb::Status::Ok();
}

sb::Status Loader::ParseListen(const Field& f, SocketSpec* out) const {
  std::string text;
  SB_RETURN_IF_ERROR(Text(f, "host:port", &text));
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return Error(f, "expected [ipv6]:port, e.g. \"[::1]:4000\", found '" + text + "'");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    in6_addr addr6;
    if (inet_pton(AF_INET6, host.c_str(), &addr6) != 1) {
      return Error(f, "'" + host + "' is not an IPv6 address");
    }
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      return Error(f, "expected host:port, e.g. \"127.0.0.1:4000\", found '" + text + "'");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    in_addr addr4;
    if (host.find(':') != std::string::npos) {
      return Error(f, "IPv6 addresses need brackets, e.g. \"[::1]:4000\", found '" + text + "'");
    }
    if (host.empty()) {
      return Error(f,
                   "listen needs a host before the port (0.0.0.0 listens on every IPv4 "
                   "address), found '" +
                       text + "'");
    }
    // Names other than localhost would need a resolver at startup and could
    // bind somewhere different on every run.
    if (host != "localhost" && inet_pton(AF_INET, host.c_str(), &addr4) != 1) {
      return Error(f, "host '" + host +
                          "' must be a numeric IPv4 address, a bracketed IPv6 address, or "
                          "localhost");
    }
  }
  const std::optional<int64_t> number = ParseInteger(port);
  if (port.empty() || port.front() == '-' || !number || *number > 65535) {
    return Error(f, "port must be a number from 0 to 65535, found '" + port + "'");
  }
  out->host = host;
  out->port = static_cast<uint16_t>(*number);
  return sb::Status::Ok();
}

sb::Status Loader::ParseRoot(const Field& f, const YAML::Mark& key_mark) {
  if (!f.node.IsMap()) {
    return Error(f, "expected a map with keys " + JoinKeys(kRootKeys));
  }
  MapView map;
  SB_RETURN_IF_ERROR(ReadMap(f, "", &map));
  SB_RETURN_IF_ERROR(CheckKeys(map, kRootKeys, nullptr));
  SupervisorSpec& root = spec_.root;
  root.id = "root";
  if (const Field* id = map.FindValue("id")) {
    SB_RETURN_IF_ERROR(Name(*id, /*allow_dot=*/false, "id", &root.id));
    SB_RETURN_IF_ERROR(RegisterId(root.id, *id));
  } else {
    // The default id is "defined" by the `supervisor:` key itself.
    SB_RETURN_IF_ERROR(RegisterId(root.id, Field{f.node, Child(f.path, "id"), key_mark}));
  }
  return ParseSupervisorFlags(map, &root);
}

sb::Status Loader::ParseSupervisorFlags(const MapView& map, SupervisorSpec* out) {
  if (const Field* strategy = map.FindValue("strategy")) {
    SB_RETURN_IF_ERROR(Enum(*strategy, "strategy", kStrategies, &out->strategy));
  }
  if (const Field* intensity = map.FindValue("intensity")) {
    SB_RETURN_IF_ERROR(Integer(*intensity, 0, INT_MAX, &out->intensity));
  }
  if (const Field* period = map.FindValue("period")) {
    SB_RETURN_IF_ERROR(Duration(*period, /*allow_zero=*/false, &out->period));
  }
  const Field* children = map.FindValue("children");
  std::vector<Field> items;
  if (children != nullptr) {
    SB_RETURN_IF_ERROR(ReadList(*children, "a list of child specs", &items));
  }

  if (out->strategy != Strategy::kSimpleOneForOne) {
    for (const Field& item : items) {
      SB_RETURN_IF_ERROR(ParseChild(item, /*is_template=*/false, out));
    }
    return sb::Status::Ok();
  }
  // OTP's bad_start_spec: the one spec is the template every instance is
  // started from, so zero or several cannot mean anything.
  if (items.size() != 1) {
    const std::string path = Child(map.self.path, "children");
    const YAML::Mark mark = items.size() > 1      ? items[1].mark
                            : children != nullptr ? children->mark
                                                  : map.self.mark;
    return Error(mark, path,
                 "a simple_one_for_one supervisor needs exactly one child spec (the template for "
                 "its instances), found " +
                     std::to_string(items.size()));
  }
  return ParseChild(items[0], /*is_template=*/true, out);
}

sb::Status Loader::ParseShutdown(const Field& f, ShutdownSpec* out) const {
  std::string text;
  SB_RETURN_IF_ERROR(Text(f, "brutal_kill, infinity or a duration such as 5s", &text));
  if (text == "brutal_kill") {
    *out = ShutdownSpec{ShutdownSpec::Kind::kBrutalKill, Millis{0}};
  } else if (text == "infinity") {
    *out = ShutdownSpec{ShutdownSpec::Kind::kInfinity, Millis{0}};
  } else {
    sb::Result<Millis> d = ParseDuration(text);
    if (!d.ok()) {
      return Error(f, d.status().message() + "; shutdown also accepts brutal_kill or infinity");
    }
    *out = ShutdownSpec{ShutdownSpec::Kind::kTimeout, *d};
  }
  return sb::Status::Ok();
}

sb::Status Loader::ParseChild(const Field& f, bool is_template, SupervisorSpec* parent) {
  if (!f.node.IsMap()) {
    return Error(f,
                 "expected a child spec: a map with at least id and command (or type: "
                 "supervisor)");
  }
  MapView map;
  SB_RETURN_IF_ERROR(ReadMap(f, "", &map));

  ChildSpec child;
  const Field* type = map.FindValue("type");
  if (type != nullptr) {
    SB_RETURN_IF_ERROR(Enum(*type, "type", kChildTypes, &child.is_supervisor));
  }

  std::vector<std::string_view> allowed(kChildCommonKeys.begin(), kChildCommonKeys.end());
  if (child.is_supervisor) {
    allowed.insert(allowed.end(), kSupervisorKeys.begin(), kSupervisorKeys.end());
    const Misplaced misplaced{kWorkerKeys, "is a worker key and this child has type: supervisor"};
    SB_RETURN_IF_ERROR(CheckKeys(map, allowed, &misplaced));
  } else {
    allowed.insert(allowed.end(), kWorkerKeys.begin(), kWorkerKeys.end());
    const Misplaced misplaced{kSupervisorKeys,
                              "is a supervisor key; add type: supervisor to make this child a "
                              "supervisor"};
    SB_RETURN_IF_ERROR(CheckKeys(map, allowed, &misplaced));
  }

  const Field* id = nullptr;
  SB_RETURN_IF_ERROR(Required(map, "id", "every child needs a unique id", &id));
  SB_RETURN_IF_ERROR(Name(*id, /*allow_dot=*/false, "id", &child.id));
  SB_RETURN_IF_ERROR(RegisterId(child.id, *id));

  if (is_template && child.is_supervisor) {
    return Error(*type,
                 "the child of a simple_one_for_one supervisor is the template for its "
                 "instances and must be a worker");
  }

  const Field* restart = map.FindValue("restart");
  if (restart != nullptr) {
    SB_RETURN_IF_ERROR(Enum(*restart, "restart type", kRestartTypes, &child.restart));
  }
  // OTP: 5000 ms for a worker; infinity for a supervisor, which needs the
  // time to stop its own children in order.
  child.shutdown = child.is_supervisor ? ShutdownSpec{ShutdownSpec::Kind::kInfinity, Millis{0}}
                                       : ShutdownSpec{ShutdownSpec::Kind::kTimeout, Millis{5000}};
  if (const Field* shutdown = map.FindValue("shutdown")) {
    SB_RETURN_IF_ERROR(ParseShutdown(*shutdown, &child.shutdown));
  }

  if (child.is_supervisor) {
    if (restart != nullptr && child.restart != RestartType::kPermanent) {
      Warn(*restart, "a " + std::string(RestartTypeName(child.restart)) +
                         " supervisor that gives up is not restarted by its parent (OTP "
                         "semantics)");
    }
    SupervisorSpec sub;
    sub.id = child.id;
    SB_RETURN_IF_ERROR(ParseSupervisorFlags(map, &sub));
    child.sub.push_back(std::move(sub));
    parent->children.push_back(std::move(child));
    return sb::Status::Ok();
  }

  std::optional<int> replicas;
  SB_RETURN_IF_ERROR(ParseWorker(map, is_template, &child, &replicas));
  if (is_template) {
    parent->instances = replicas.value_or(0);
    parent->children.push_back(std::move(child));
  } else if (replicas) {
    parent->replica_sets.push_back(child);
    for (int i = 0; i < *replicas; ++i) {
      ChildSpec replica = InstantiateReplica(child, i);
      SB_RETURN_IF_ERROR(RegisterId(replica.id, *id));
      parent->children.push_back(std::move(replica));
    }
  } else {
    commands_.emplace(child.id, *map.FindValue("command"));
    parent->children.push_back(std::move(child));
  }
  return sb::Status::Ok();
}

sb::Status Loader::ClaimRoundRobin(const std::vector<Field>& names, const ChildSpec& child,
                                   bool is_template, std::optional<int> replicas) {
  for (const Field& f : names) {
    const std::string& name = f.node.Scalar();
    auto socket = std::find_if(spec_.sockets.begin(), spec_.sockets.end(),
                               [&](const SocketSpec& s) { return s.name == name; });
    if (socket == spec_.sockets.end() || socket->balance != Balance::kRoundRobin) continue;
    if (is_template) {
      return Error(f, "socket '" + name +
                          "' has balance: round_robin, which gives replica i its own member; the "
                          "instances of a simple_one_for_one supervisor have no fixed index (use "
                          "replicas, or balance: shared)");
    }
    if (!replicas) {
      return Error(f, "socket '" + name +
                          "' has balance: round_robin, which gives replica i its own member; "
                          "give this child replicas: N, or use balance: shared");
    }
    auto [it, inserted] = round_robin_owner_.try_emplace(name, child.id, f.mark);
    if (!inserted) {
      return Error(f, "socket '" + name + "' has balance: round_robin and is already named by '" +
                          it->second.first + "' (" + LineColumn(it->second.second) +
                          "); one replica set owns a round_robin socket");
    }
  }
  return sb::Status::Ok();
}

sb::Status Loader::ParseWorker(const MapView& map, bool is_template, ChildSpec* child,
                               std::optional<int>* replicas) {
  const Field* command = nullptr;
  SB_RETURN_IF_ERROR(
      Required(map, "command", "a worker needs command: [program, args...]", &command));
  if (command->node.IsScalar()) {
    return Error(*command, "command must be a list of strings, e.g. [\"" + command->node.Scalar() +
                               "\"]; it is not split on spaces");
  }
  std::vector<Field> args;
  SB_RETURN_IF_ERROR(ReadList(*command, "a list of strings", &args));
  if (args.empty()) return Error(*command, "command must not be empty");
  for (const Field& arg : args) {
    std::string text;
    SB_RETURN_IF_ERROR(Text(arg, "a string", &text));
    child->command.push_back(std::move(text));
  }
  if (child->command.front().empty()) return Error(args.front(), "the program name is empty");

  const Field* env = map.FindValue("env");
  if (env != nullptr) {
    MapView vars;
    SB_RETURN_IF_ERROR(ReadMap(*env, "a map of NAME: value", &vars));
    for (const MapEntry& var : vars.entries) {
      if (var.key.empty() || var.key.find('=') != std::string::npos) {
        return Error(var.key_mark, var.value.path,
                     "environment variable names must be non-empty and contain no '='");
      }
      std::string value;
      SB_RETURN_IF_ERROR(Text(var.value, "a string (write \"\" for an empty value)", &value));
      child->env.emplace_back(var.key, std::move(value));
    }
  }

  if (const Field* ready = map.FindValue("ready")) {
    SB_RETURN_IF_ERROR(Enum(*ready, "ready mode", kReadyModes, &child->ready));
  }
  if (const Field* timeout = map.FindValue("start_timeout")) {
    SB_RETURN_IF_ERROR(Duration(*timeout, /*allow_zero=*/false, &child->start_timeout));
  }
  if (const Field* upgrade = map.FindValue("upgrade")) {
    SB_RETURN_IF_ERROR(Enum(*upgrade, "upgrade mode", kUpgradeModes, &child->upgrade));
    // The old process hands over when the new one says READY=1: a child
    // ready at exec would be told to hand over to a socket nobody listens on.
    if (child->upgrade == UpgradeMode::kHandoff && child->ready != ReadyMode::kNotify) {
      return Error(*upgrade,
                   "upgrade: handoff needs ready: notify (the hand-off starts when the "
                   "new process is ready)");
    }
  }

  std::vector<Field> round_robin_names;  // every socket name; filtered below
  if (const Field* sockets = map.FindValue("sockets")) {
    std::vector<Field> names;
    SB_RETURN_IF_ERROR(ReadList(*sockets, "a list of socket names", &names));
    for (const Field& name_field : names) {
      std::string name;
      SB_RETURN_IF_ERROR(Text(name_field, "a socket name", &name));
      if (!socket_names_.contains(name)) {
        return Error(name_field, "socket '" + name + "' is not declared in sockets:");
      }
      for (const std::string& seen : child->sockets) {
        if (seen == name) return Error(name_field, "socket '" + name + "' is listed twice");
      }
      child->sockets.push_back(std::move(name));
      round_robin_names.push_back(name_field);
    }
  }

  if (const Field* codes = map.FindValue("success_exit_codes")) {
    std::vector<Field> items;
    SB_RETURN_IF_ERROR(ReadList(*codes, "a list of exit codes", &items));
    for (const Field& item : items) {
      int code = 0;
      SB_RETURN_IF_ERROR(Integer(item, 0, 255, &code));
      child->success_exit_codes.push_back(code);
    }
  }

  if (const Field* count = map.FindValue("replicas")) {
    int n = 0;
    SB_RETURN_IF_ERROR(Integer(*count, 0, kMaxReplicas, &n));
    *replicas = n;
  }

  SB_RETURN_IF_ERROR(ClaimRoundRobin(round_robin_names, *child, is_template, *replicas));

  if (child->upgrade == UpgradeMode::kHandoff) {
    // The daemon sets these two for the hand-off; a value from the file
    // would make every process a receiver, or send it elsewhere.
    for (const auto& [name, value] : child->env) {
      if (name == "SWITCHBOARD_HANDOFF" || name == "SWITCHBOARD_HANDOFF_SOCKET") {
        return Error(*map.FindValue("env"),
                     "environment variable " + name + " is set by the daemon for upgrade: handoff");
      }
    }
    // SWITCHBOARD_HANDOFF_SOCKET must fit a Unix socket address, for the
    // longest id this entry can have (a replica scaled up to the limit).
    const std::string& control = spec_.node.control;
    const size_t slash = control.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : control.substr(0, slash);
    const bool numbered = is_template || replicas->has_value();
    const std::string path = dir + "/handoff/" + child->id +
                             (numbered ? "." + std::to_string(kMaxReplicas - 1) : "") + ".sock";
    if (path.size() > kMaxSocketPath) {
      return Error(*map.FindValue("upgrade"),
                   "the hand-off socket path " + path + " would be " + std::to_string(path.size()) +
                       " bytes; Unix sockets allow at most " + std::to_string(kMaxSocketPath) +
                       " (shorten the id or node.control)");
    }
  }

  if (const Field* metrics = map.FindValue("metrics")) {
    SB_RETURN_IF_ERROR(Endpoint(*metrics, &child->metrics));
    int port = std::stoi(child->metrics.substr(child->metrics.rfind(':') + 1));
    int last = port + (replicas->has_value() ? std::max(**replicas - 1, 0) : 0);
    if (port == 0 || last > 65535) {
      return Error(*metrics, "metrics port must be 1..65535 for every replica (base + index)");
    }
  }
  if (!replicas->has_value()) SubstituteMetrics(*child);

  if (const Field* backoff = map.FindValue("backoff")) {
    MapView fields;
    SB_RETURN_IF_ERROR(ReadMap(*backoff, "a map with keys " + JoinKeys(kBackoffKeys), &fields));
    SB_RETURN_IF_ERROR(CheckKeys(fields, kBackoffKeys, nullptr));
    BackoffSpec b;
    if (const Field* initial = fields.FindValue("initial")) {
      SB_RETURN_IF_ERROR(Duration(*initial, /*allow_zero=*/false, &b.initial));
    }
    if (const Field* max = fields.FindValue("max")) {
      SB_RETURN_IF_ERROR(Duration(*max, /*allow_zero=*/false, &b.max));
      if (b.max < b.initial) return Error(*max, "max must not be less than initial");
    }
    if (const Field* factor = fields.FindValue("factor")) {
      int f = 0;
      SB_RETURN_IF_ERROR(Integer(*factor, 1, 100, &f));
      b.factor = f;
    }
    child->backoff = b;
  }

  // Outside a replica set or a template nothing substitutes the placeholder,
  // so the child would see the literal text; legal, but almost never meant.
  if (!is_template && !replicas->has_value()) {
    const Field* where = nullptr;
    for (const std::string& arg : child->command) {
      if (arg.find(kReplicaPlaceholder) != std::string::npos) where = command;
    }
    for (const auto& [name, value] : child->env) {
      if (where == nullptr && value.find(kReplicaPlaceholder) != std::string::npos) where = env;
    }
    if (where != nullptr) {
      Warn(*where, "'{{replica}}' is passed literally because this child has no replicas");
    }
  }
  return sb::Status::Ok();
}

ChildSpec* FindWorker(SupervisorSpec& sup, std::string_view id) {
  for (ChildSpec& c : sup.children) {
    if (!c.is_supervisor && c.id == id) return &c;
    if (c.is_supervisor) {
      if (ChildSpec* found = FindWorker(c.sub.front(), id)) return found;
    }
  }
  return nullptr;
}

// The flag an argument is, if it is one of kClusterFlags ("--peer" or
// "--peer=..."); empty otherwise.
std::string_view ClusterFlagOf(std::string_view arg) {
  for (std::string_view flag : kClusterFlags) {
    if (arg == flag ||
        (arg.starts_with(flag) && arg.size() > flag.size() && arg[flag.size()] == '=')) {
      return flag;
    }
  }
  return {};
}

bool IsWildcard(std::string_view host) { return host == "0.0.0.0" || host == "::"; }

sb::Status Loader::ClusterName(const Field& f, std::string_view what, std::string* out) const {
  SB_RETURN_IF_ERROR(Name(f, /*allow_dot=*/true, what, out));
  if (out->size() > kMaxNodeName) {
    return Error(f, std::string(what) + " is " + std::to_string(out->size()) +
                        " characters; at most " + std::to_string(kMaxNodeName));
  }
  return sb::Status::Ok();
}

sb::Status Loader::TcpEndpoint(const Field& f, bool bind, std::string* out) const {
  std::string text;
  SB_RETURN_IF_ERROR(Text(f, "tcp://HOST:PORT", &text));
  constexpr std::string_view kScheme = "tcp://";
  if (!std::string_view(text).starts_with(kScheme)) {
    return Error(f, "expected tcp://HOST:PORT, e.g. \"tcp://10.0.0.1:7100\", found '" + text + "'");
  }
  Field rest = f;
  rest.node = YAML::Node(text.substr(kScheme.size()));
  SocketSpec parsed;
  if (bind) {
    SB_RETURN_IF_ERROR(ParseListen(rest, &parsed));
  } else {
    // A DNS name is fine where the broker connects: libzmq resolves it.
    const std::string hostport = text.substr(kScheme.size());
    const size_t colon = hostport.rfind(':');
    const std::string host = colon == std::string::npos ? "" : hostport.substr(0, colon);
    const bool name =
        !host.empty() && host.front() != '[' && std::all_of(host.begin(), host.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-';
        });
    if (name) rest.node = YAML::Node("127.0.0.1" + hostport.substr(colon));
    SB_RETURN_IF_ERROR(ParseListen(rest, &parsed));
    if (parsed.port == 0) return Error(f, "port must be 1-65535 where a broker connects");
  }
  *out = text;
  return sb::Status::Ok();
}

sb::Status Loader::ParseCluster(const Field& f) {
  MapView map;
  SB_RETURN_IF_ERROR(ReadMap(f, "a map with keys " + JoinKeys(kClusterKeys), &map));
  SB_RETURN_IF_ERROR(CheckKeys(map, kClusterKeys, nullptr));
  ClusterSpec c;
  if (const Field* name = map.FindValue("name")) {
    SB_RETURN_IF_ERROR(ClusterName(*name, "cluster name", &c.name));
  }
  c.node = spec_.node.name;
  if (const Field* node = map.FindValue("node")) {
    SB_RETURN_IF_ERROR(ClusterName(*node, "node name", &c.node));
  } else if (c.node.size() > kMaxNodeName) {
    return Error(map.self.mark, Child(f.path, "node"),
                 "node.name is longer than " + std::to_string(kMaxNodeName) +
                     " characters; give cluster.node");
  }

  const Field* broker = map.FindValue("broker");
  if (broker != nullptr) {
    SB_RETURN_IF_ERROR(Name(*broker, /*allow_dot=*/false, "child id", &c.broker));
  }
  auto command = commands_.find(c.broker);
  ChildSpec* child = FindWorker(spec_.root, c.broker);
  if (command == commands_.end() || child == nullptr) {
    return Error(broker != nullptr ? broker->mark : map.self.mark, Child(f.path, "broker"),
                 "no worker with id '" + c.broker +
                     "' (the broker child, not in a replica set or simple_one_for_one) to give "
                     "the cluster flags to");
  }

  const Field* bind = nullptr;
  SB_RETURN_IF_ERROR(Required(map, "peer_bind", "the other nodes' brokers connect to it", &bind));
  SB_RETURN_IF_ERROR(TcpEndpoint(*bind, /*bind=*/true, &c.peer_bind));
  if (const Field* secret = map.FindValue("curve_secret_file")) {
    SB_RETURN_IF_ERROR(Text(*secret, "a path", &c.curve_secret_file));
    if (c.curve_secret_file.empty()) return Error(*secret, "secret key file path is empty");
  }
  if (const Field* insecure = map.FindValue("insecure")) {
    SB_RETURN_IF_ERROR(Enum(*insecure, "value", kBooleans, &c.insecure));
  }
  const Field* membership = map.FindValue("membership");
  if (membership != nullptr) {
    SB_RETURN_IF_ERROR(Enum(*membership, "membership", kMemberships, &c.membership));
  }
  const Field* peers = map.FindValue("peers");
  const Field* etcd = map.FindValue("etcd");
  if (c.membership == Membership::kStatic) {
    if (etcd != nullptr) {
      return Error(*etcd, "etcd: is for membership: etcd (this cluster's membership is static)");
    }
    if (peers != nullptr) SB_RETURN_IF_ERROR(ParsePeers(*peers, &c));
  } else {
    if (peers != nullptr) {
      return Error(*peers,
                   "peers: is for membership: static (with etcd the members come from etcd)");
    }
    const Field* etcd_field = nullptr;
    SB_RETURN_IF_ERROR(Required(map, "etcd", "membership: etcd needs its endpoints", &etcd_field));
    SB_RETURN_IF_ERROR(ParseEtcd(*etcd_field, &c));
  }

  // The flags are the section's: the same flag also written by hand would
  // leave the operator guessing which one the broker takes.
  std::vector<Field> args;
  SB_RETURN_IF_ERROR(ReadList(command->second, "a list of strings", &args));
  for (const Field& arg : args) {
    const std::string_view flag = ClusterFlagOf(arg.node.Scalar());
    if (flag.empty()) continue;
    return Error(arg, "the broker flag " + std::string(flag) + " is set by the cluster: section (" +
                          LineColumn(map.self.mark) + "); remove it from the command");
  }
  const std::vector<std::string> flags = ClusterFlags(c);
  child->command.insert(child->command.end(), flags.begin(), flags.end());
  spec_.cluster = std::move(c);
  return sb::Status::Ok();
}

sb::Status Loader::ParsePeers(const Field& f, ClusterSpec* c) {
  std::vector<MapView> maps;
  SB_RETURN_IF_ERROR(
      ReadMapList(f, "a list of {node, broker, curve_public}", "a peer map", kPeerKeys, &maps));
  for (const MapView& map : maps) {
    ClusterPeerSpec peer;
    const Field* node = nullptr;
    SB_RETURN_IF_ERROR(Required(map, "node", "the member's node name", &node));
    SB_RETURN_IF_ERROR(ClusterName(*node, "node name", &peer.node));
    if (peer.node == c->node) {
      return Error(
          *node, "peer '" + peer.node + "' is this node (cluster.node); list only the other nodes");
    }
    const Field* broker = nullptr;
    SB_RETURN_IF_ERROR(
        Required(map, "broker", "its broker's peer socket, tcp://HOST:PORT", &broker));
    SB_RETURN_IF_ERROR(TcpEndpoint(*broker, /*bind=*/false, &peer.broker));
    const Field* key = nullptr;
    SB_RETURN_IF_ERROR(Required(map, "curve_public",
                                "its CURVE public key, as `switchboard keygen` printed it", &key));
    SB_RETURN_IF_ERROR(Text(*key, "a Z85 key", &peer.curve_public));
    if (sb::Status valid = curve::Validate(peer.curve_public); !valid.ok()) {
      return Error(*key, valid.message());
    }
    for (const ClusterPeerSpec& seen : c->peers) {
      if (seen.node == peer.node) {
        return Error(*node, "peer '" + peer.node + "' is listed twice");
      }
      if (seen.broker == peer.broker) {
        return Error(*broker, "peers '" + seen.node + "' and '" + peer.node +
                                  "' have the same broker endpoint " + peer.broker);
      }
    }
    c->peers.push_back(std::move(peer));
  }
  return sb::Status::Ok();
}

sb::Status Loader::ParseEtcd(const Field& f, ClusterSpec* c) {
  MapView map;
  SB_RETURN_IF_ERROR(ReadMap(f, "a map with keys " + JoinKeys(kEtcdKeys), &map));
  SB_RETURN_IF_ERROR(CheckKeys(map, kEtcdKeys, nullptr));
  const Field* endpoints = nullptr;
  SB_RETURN_IF_ERROR(
      Required(map, "endpoints", "etcd's http://HOST:PORT, one or more", &endpoints));
  std::vector<Field> items;
  SB_RETURN_IF_ERROR(ReadList(*endpoints, "a list of http://HOST:PORT", &items));
  if (items.empty()) return Error(*endpoints, "needs at least one etcd endpoint");
  for (const Field& item : items) {
    std::string url;
    SB_RETURN_IF_ERROR(Text(item, "http://HOST:PORT", &url));
    if (Result<ApiUrl> parsed = ParseApiUrl(url); !parsed.ok()) {
      return Error(item, parsed.status().message());
    }
    c->etcd_endpoints.push_back(std::move(url));
  }
  if (const Field* advertise = map.FindValue("advertise")) {
    SB_RETURN_IF_ERROR(TcpEndpoint(*advertise, /*bind=*/false, &c->advertise));
  } else {
    // peer_bind is where the others reach this node unless it binds a
    // wildcard address or an ephemeral port.
    const std::string hostport = c->peer_bind.substr(std::string_view("tcp://").size());
    const size_t colon = hostport.rfind(':');
    std::string host = hostport.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    if (IsWildcard(host) || hostport.substr(colon + 1) == "0") {
      return Error(map.self.mark, Child(f.path, "advertise"),
                   "required key is missing (peer_bind " + c->peer_bind +
                       " is not an address the others can reach)");
    }
    c->advertise = c->peer_bind;
  }
  if (const Field* ttl = map.FindValue("ttl")) {
    Millis d{0};
    SB_RETURN_IF_ERROR(Duration(*ttl, /*allow_zero=*/false, &d));
    if (d.count() % 1000 != 0 || d.count() / 1000 < kMinEtcdTtlS ||
        d.count() / 1000 > kMaxEtcdTtlS) {
      return Error(*ttl, "the lease TTL must be whole seconds from " +
                             std::to_string(kMinEtcdTtlS) + "s to " + std::to_string(kMaxEtcdTtlS) +
                             "s");
    }
    c->etcd_ttl_s = static_cast<int>(d.count() / 1000);
  }
  return sb::Status::Ok();
}

}  // namespace

sb::Result<TreeSpec> LoadTreeSpecString(const std::string& yaml, const std::string& file_name) {
  Loader loader(file_name);
  try {
    return loader.Load(yaml);
  } catch (const YAML::Exception& e) {
    // Parse errors are handled in Load; this catches anything a node
    // accessor throws, so the header's "never throws" holds.
    return sb::Status::InvalidConfig(file_name + ":" + LineColumn(e.mark) + ": " + e.msg);
  } catch (const std::exception& e) {
    return sb::Status::Internal(file_name + ": unexpected error while loading: " + e.what());
  }
}

sb::Result<TreeSpec> LoadTreeSpecFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sb::Status::IoError("unable to read " + path + ": " + std::strerror(errno));
  std::string content;
  char buffer[16384];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      close(fd);
      return sb::Status::IoError("unable to read " + path + ": " + std::strerror(saved));
    }
    content.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return LoadTreeSpecString(content, path);
}

}  // namespace sb::supervisor

#undef SB_RETURN_IF_ERROR
