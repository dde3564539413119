#include "broker/etcd_registry.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <mutex>
#include <optional>
#include <set>

namespace sb::broker {

namespace json = boost::json;

namespace {

std::optional<std::string> Unbase64(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out(in.size() / 4 * 3, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding's zero bytes as data.
  size_t len = static_cast<size_t>(n);
  for (size_t i = in.size(); i > 0 && in[i - 1] == '='; --i) --len;
  out.resize(len);
  return out;
}

// etcd's gateway writes int64 fields as JSON strings; an absent one is 0.
int64_t Int(const json::value* v) {
  if (v == nullptr) return 0;
  if (const json::string* s = v->if_string()) {
    int64_t x = 0;
    std::from_chars(s->data(), s->data() + s->size(), x);
    return x;
  }
  if (const int64_t* i = v->if_int64()) return *i;
  return 0;
}

// `body` parsed, null if it is not JSON.
json::value Parse(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  return ec ? json::value() : v;
}

const json::object* Object(const json::value* v) { return v == nullptr ? nullptr : v->if_object(); }

std::string Str(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  const json::string* s = v == nullptr ? nullptr : v->if_string();
  return s == nullptr ? std::string() : std::string(*s);
}

// 16 hex digits, random: an incarnation must differ from every earlier one
// of the same node.
std::string NewIncarnation() {
  uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) {
    r = (static_cast<uint64_t>(::getpid()) << 32) ^
        static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r));
  return buf;
}

// The key just past every key that starts with `prefix` (etcd's range_end).
std::string PrefixEnd(std::string prefix) {
  ++prefix.back();  // the prefix ends in '/': '0' follows it
  return prefix;
}

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::string GatewayBase64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

Status ValidateEtcdOptions(const EtcdOptions& o) {
  if (o.endpoints.empty()) return Status::InvalidConfig("no etcd endpoint (--etcd)");
  for (const std::string& e : o.endpoints) {
    if (!e.starts_with("http://") && !e.starts_with("https://")) {
      return Status::InvalidConfig("etcd endpoint '" + e + "' is not http://HOST:PORT");
    }
  }
  if (Status s = ValidateNodeName(o.cluster); !s.ok()) {
    return Status::InvalidConfig("cluster: " + s.message());
  }
  Member self = o.self;
  self.incarnation = "x";
  if (Status s = ValidateMember(self); !s.ok()) return s;
  if (o.ttl_s < 2 || o.ttl_s > 3600) return Status::InvalidConfig("etcd TTL must be 2-3600 s");
  if (o.backoff_min.count() <= 0 || o.backoff_max < o.backoff_min ||
      o.request_timeout.count() <= 0) {
    return Status::InvalidConfig("etcd back-off bounds must be positive and ordered");
  }
  return Status::Ok();
}

std::string MemberKeyPrefix(const std::string& cluster) {
  return "/switchboard/v1/" + cluster + "/nodes/";
}

class EtcdRegistry::Impl {
 public:
  Impl(EventLoop* loop, EtcdOptions options, Membership* membership, OnEvents on_events, OnUp on_up)
      : loop_(loop),
        o_(std::move(options)),
        membership_(membership),
        on_events_(std::move(on_events)),
        on_up_(std::move(on_up)),
        prefix_(MemberKeyPrefix(o_.cluster)),
        own_key_(prefix_ + o_.self.name),
        backoff_(o_.backoff_min) {}

  Status Init() {
    GlobalInit();
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return Status::Internal("curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Impl::OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Impl::OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    return Status::Ok();
  }

  ~Impl() { Shutdown(); }

  void Start() { Sync(); }

  void Leave(std::chrono::milliseconds timeout) {
    const int64_t lease = lease_id_;
    const std::string endpoint = o_.endpoints[ep_];
    Shutdown();
    if (lease == 0) return;
    CURL* easy = curl_easy_init();
    if (easy == nullptr) return;
    std::string body = "{\"ID\":\"" + std::to_string(lease) + "\"}";
    std::string url = endpoint + "/v3/lease/revoke";
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Impl::Discard);
    CURLcode rc = curl_easy_perform(easy);
    if (rc != CURLE_OK) spdlog::warn("etcd: lease not revoked: {}", curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
  }

  bool up() const { return up_; }
  const std::string& incarnation() const { return incarnation_; }
  uint64_t registrations() const { return registrations_; }

 private:
  struct Request {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string url;
    std::string body;
    std::string response;
    std::function<void(Status, std::string)> done;
  };
  using Slot = std::unique_ptr<Request>;
  using Done = std::function<void(Status, std::string)>;

  // ---- libcurl on the loop ----

  static int OnSocket(CURL*, curl_socket_t s, int what, void* userp, void*) {
    auto* self = static_cast<Impl*>(userp);
    if (what == CURL_POLL_REMOVE) {
      self->loop_->Remove(s);
      self->fds_.erase(s);
      return 0;
    }
    uint32_t events = ((what & CURL_POLL_IN) ? uint32_t{EPOLLIN} : 0u) |
                      ((what & CURL_POLL_OUT) ? uint32_t{EPOLLOUT} : 0u);
    if (self->fds_.contains(s) && self->loop_->Modify(s, events).ok()) return 0;
    // A socket curl closed and reopened under the same number is new to epoll.
    self->loop_->Remove(s);
    Status st = self->loop_->Add(s, events, [self, s](uint32_t ev) { self->OnReady(s, ev); });
    if (!st.ok()) {
      spdlog::error("etcd: {}", st.message());
      return -1;
    }
    self->fds_.insert(s);
    return 0;
  }

  static int OnTimer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<Impl*>(userp);
    if (self->curl_timer_ != 0) self->loop_->Cancel(self->curl_timer_);
    self->curl_timer_ = 0;
    if (timeout_ms < 0) return 0;
    // Never act inside the callback: libcurl forbids calling it back from here.
    self->curl_timer_ = self->loop_->AddTimer(std::chrono::milliseconds(timeout_ms), [self] {
      self->curl_timer_ = 0;
      self->Action(CURL_SOCKET_TIMEOUT, 0);
    });
    return 0;
  }

  static size_t OnData(char* data, size_t, size_t n, void* userp) {
    static_cast<Request*>(userp)->response.append(data, n);
    return n;
  }
  static size_t Discard(char*, size_t, size_t n, void*) { return n; }

  void OnReady(curl_socket_t s, uint32_t ev) {
    int flags = ((ev & EPOLLIN) ? CURL_CSELECT_IN : 0) | ((ev & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                ((ev & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
    Action(s, flags);
  }

  void Action(curl_socket_t s, int flags) {
    int running = 0;
    curl_multi_socket_action(multi_, s, flags, &running);
    // Watch data is handled outside libcurl's callbacks: handling it may
    // end the watch, which a write callback may not do.
    if (watch_) ProcessWatchData();
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      CURL* easy = msg->easy_handle;
      CURLcode result = msg->data.result;
      Slot* slot = nullptr;
      for (Slot* s : {&control_, &keepalive_, &watch_}) {
        if (*s && (*s)->easy == easy) slot = s;
      }
      if (slot == nullptr) continue;
      long code = 0;
      curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
      if (slot == &watch_) ProcessWatchData();
      if (!*slot) continue;  // the watch's last data ended it
      Done done = std::move((*slot)->done);
      std::string body = std::move((*slot)->response);
      Cancel(slot);
      Status st = result != CURLE_OK
                      ? Status::IoError(curl_easy_strerror(result))
                      : (code != 200 ? Status::IoError("HTTP " + std::to_string(code) + ": " + body)
                                     : Status::Ok());
      done(std::move(st), std::move(body));
    }
  }

  void Post(Slot* slot, const std::string& path, std::string body, Done done, bool stream) {
    Cancel(slot);
    auto r = std::make_unique<Request>();
    r->easy = curl_easy_init();
    if (r->easy == nullptr) {
      loop_->AddTimer(std::chrono::milliseconds(0),
                      [d = std::move(done)] { d(Status::Internal("curl_easy_init failed"), ""); });
      return;
    }
    r->url = o_.endpoints[ep_] + path;
    r->body = std::move(body);
    r->done = std::move(done);
    r->headers = curl_slist_append(nullptr, "Content-Type: application/json");
    CURL* e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url.c_str());
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, static_cast<long>(r->body.size()));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::OnData);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r.get());
    // etcd is the cluster's own service: an http_proxy meant for the
    // outside world must not stand between.
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o_.request_timeout.count()));
    if (stream) {
      curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    } else {
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(o_.request_timeout.count()));
    }
    if (curl_multi_add_handle(multi_, e) != CURLM_OK) {
      curl_slist_free_all(r->headers);
      curl_easy_cleanup(e);
      loop_->AddTimer(std::chrono::milliseconds(0), [d = std::move(r->done)] {
        d(Status::Internal("curl_multi_add_handle failed"), "");
      });
      return;
    }
    *slot = std::move(r);
  }

  void Cancel(Slot* slot) {
    if (!*slot) return;
    curl_multi_remove_handle(multi_, (*slot)->easy);
    curl_easy_cleanup((*slot)->easy);
    curl_slist_free_all((*slot)->headers);
    slot->reset();
  }

  void Shutdown() {
    if (multi_ == nullptr) return;
    for (Slot* s : {&control_, &keepalive_, &watch_}) Cancel(s);
    for (EventLoop::TimerId* t : {&retry_timer_, &keepalive_timer_, &curl_timer_}) {
      if (*t != 0) loop_->Cancel(*t);
      *t = 0;
    }
    curl_multi_cleanup(multi_);
    multi_ = nullptr;
    for (curl_socket_t s : fds_) loop_->Remove(s);
    fds_.clear();
  }

  // ---- the registration ----

  // From the start, or after a failure: make sure of the lease, register,
  // list, watch.
  void Sync() {
    if (lease_id_ == 0) {
      Grant();
      return;
    }
    // A lease from before an outage may have run out meanwhile.
    Post(
        &control_, "/v3/lease/keepalive", LeaseBody(),
        [this](Status st, std::string body) {
          if (!st.ok()) return Fail("keepalive: " + st.message());
          if (KeepAliveTtl(body) <= 0) return LeaseLost("its TTL ran out while etcd was away");
          ScheduleKeepAlive();
          Register([this] { List(); });
        },
        false);
  }

  void Grant() {
    json::object req{{"TTL", o_.ttl_s}};
    Post(
        &control_, "/v3/lease/grant", json::serialize(req),
        [this](Status st, std::string body) {
          if (!st.ok()) return Fail("lease grant: " + st.message());
          json::value v = Parse(body);
          const json::object* o = v.if_object();
          int64_t id = o == nullptr ? 0 : Int(o->if_contains("ID"));
          if (id == 0) return Fail("lease grant: no lease in " + body);
          lease_id_ = id;
          registered_ = false;
          incarnation_ = NewIncarnation();
          ScheduleKeepAlive();
          Register([this] { List(); });
        },
        false);
  }

  // Writes our record unless the key exists; `then` runs once the write is
  // done or found done (our lease holds the key) and also when another
  // lease holds it: our old life's record, whose deletion the watch shows.
  void Register(std::function<void()> then) {
    Member self = o_.self;
    self.incarnation = incarnation_;
    const std::string key = GatewayBase64(own_key_);
    const std::string lease = std::to_string(lease_id_);
    json::object cmp{
        {"key", key}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}};
    json::object put{
        {"key", key}, {"value", GatewayBase64(FormatMemberRecord(self))}, {"lease", lease}};
    json::object get{{"key", key}};
    json::object txn{{"compare", json::array{cmp}},
                     {"success", json::array{json::object{{"request_put", put}}}},
                     {"failure", json::array{json::object{{"request_range", get}}}}};
    Post(
        &control_, "/v3/kv/txn", json::serialize(txn),
        [this, then = std::move(then)](Status st, std::string body) {
          if (!st.ok()) return Fail("register: " + st.message());
          json::value v = Parse(body);
          const json::object* o = v.if_object();
          if (o == nullptr) return Fail("register: bad answer " + body);
          const json::value* ok = o->if_contains("succeeded");
          bool held_by_us = ok != nullptr && ok->is_bool() && ok->get_bool();
          if (!held_by_us) held_by_us = HolderLease(*o) == lease_id_;
          if (held_by_us) {
            if (!registered_) {
              registered_ = true;
              ++registrations_;
              spdlog::info("etcd: registered {} as incarnation {} (lease {}, TTL {} s)", own_key_,
                           incarnation_, lease_id_, o_.ttl_s);
            }
          } else {
            registered_ = false;
            spdlog::warn(
                "etcd: {} is held by another lease (an earlier life of this node?); "
                "registering once it is gone",
                own_key_);
          }
          then();
        },
        false);
  }

  // The lease of the kv a failed txn's range found, 0 if none.
  static int64_t HolderLease(const json::object& txn) {
    const json::value* rs = txn.if_contains("responses");
    if (rs == nullptr || !rs->is_array() || rs->get_array().empty()) return 0;
    const json::object* r = Object(&rs->get_array()[0]);
    const json::object* range = r == nullptr ? nullptr : Object(r->if_contains("response_range"));
    const json::value* kvs = range == nullptr ? nullptr : range->if_contains("kvs");
    if (kvs == nullptr || !kvs->is_array() || kvs->get_array().empty()) return 0;
    const json::object* kv = Object(&kvs->get_array()[0]);
    return kv == nullptr ? 0 : Int(kv->if_contains("lease"));
  }

  void List() {
    json::object req{{"key", GatewayBase64(prefix_)},
                     {"range_end", GatewayBase64(PrefixEnd(prefix_))}};
    Post(
        &control_, "/v3/kv/range", json::serialize(req),
        [this](Status st, std::string body) {
          if (!st.ok()) return Fail("list: " + st.message());
          json::value v = Parse(body);
          const json::object* o = v.if_object();
          const json::object* header = o == nullptr ? nullptr : Object(o->if_contains("header"));
          int64_t revision = header == nullptr ? 0 : Int(header->if_contains("revision"));
          if (revision == 0) return Fail("list: bad answer " + body);
          std::vector<MemberRecord> records;
          bool own_seen = false;
          if (const json::value* kvs = o->if_contains("kvs"); kvs != nullptr && kvs->is_array()) {
            for (const json::value& kv : kvs->get_array()) {
              const json::object* k = kv.if_object();
              if (k == nullptr) continue;
              std::optional<std::string> key = Unbase64(Str(*k, "key"));
              std::optional<std::string> value = Unbase64(Str(*k, "value"));
              if (!key || !value || !key->starts_with(prefix_)) continue;
              std::string name = key->substr(prefix_.size());
              if (name == o_.self.name) own_seen = true;
              records.push_back({std::move(name), std::move(*value)});
            }
          }
          Deliver(membership_->ApplySnapshot(std::span<const MemberRecord>(records)));
          if (registered_ && !own_seen) return LeaseLost("our record is gone");
          if (!registered_ && !own_seen) {
            // The earlier holder's record went between the write and the list.
            return Register([this, revision] { Watch(revision + 1); });
          }
          Watch(revision + 1);
        },
        false);
  }

  void Watch(int64_t from) {
    json::object create{{"key", GatewayBase64(prefix_)},
                        {"range_end", GatewayBase64(PrefixEnd(prefix_))},
                        {"start_revision", std::to_string(from)}};
    parser_.reset();
    ++watch_gen_;
    Post(
        &watch_, "/v3/watch", json::serialize(json::object{{"create_request", create}}),
        [this](Status st, std::string) {
          Fail(st.ok() ? "the watch ended" : "watch: " + st.message());
        },
        true);
  }

  // Parses what the watch streamed so far: JSON objects one after another,
  // split anywhere by the transport.
  void ProcessWatchData() {
    const uint64_t gen = watch_gen_;
    std::string data = std::move(watch_->response);
    watch_->response.clear();
    std::string_view rest = data;
    while (!rest.empty()) {
      boost::system::error_code ec;
      size_t used = parser_.write_some(rest.data(), rest.size(), ec);
      if (ec) return Fail("watch: " + ec.message());
      rest.remove_prefix(used);
      if (!parser_.done()) continue;
      json::value v = parser_.release();
      parser_.reset();
      OnWatchMessage(v);
      if (watch_gen_ != gen || !watch_) return;  // the message ended this watch
    }
  }

  void OnWatchMessage(const json::value& v) {
    const json::object* o = v.if_object();
    if (o == nullptr) return Fail("watch: not an object");
    if (o->contains("error")) return Fail("watch: " + json::serialize(v));
    const json::object* result = Object(o->if_contains("result"));
    if (result == nullptr) return;
    if (Int(result->if_contains("compact_revision")) != 0) {
      return Fail("watch: revision compacted; listing again");
    }
    const json::value* canceled = result->if_contains("canceled");
    if (canceled != nullptr && canceled->is_bool() && canceled->get_bool()) {
      return Fail("watch: cancelled by etcd");
    }
    const json::value* created = result->if_contains("created");
    if (created != nullptr && created->is_bool() && created->get_bool()) SetUp(true);
    const json::value* events = result->if_contains("events");
    if (events == nullptr || !events->is_array()) return;
    std::vector<MemberEvent> out;
    for (const json::value& ev : events->get_array()) {
      const json::object* e = ev.if_object();
      const json::object* kv = e == nullptr ? nullptr : Object(e->if_contains("kv"));
      if (kv == nullptr) continue;
      std::optional<std::string> key = Unbase64(Str(*kv, "key"));
      if (!key || !key->starts_with(prefix_)) continue;
      std::string name = key->substr(prefix_.size());
      const bool deleted = Str(*e, "type") == "DELETE";
      if (name == o_.self.name) {
        if (!deleted) continue;
        Deliver(std::move(out));
        if (registered_) return LeaseLost("the watch shows our record deleted");
        // The earlier holder's record is gone: ours can go in now.
        return Register([] {});
      }
      std::vector<MemberEvent> got;
      if (deleted) {
        got = membership_->Delete(name);
      } else {
        std::optional<std::string> value = Unbase64(Str(*kv, "value"));
        got = membership_->Put(MemberRecord{std::move(name), value.value_or("")});
      }
      out.insert(out.end(), got.begin(), got.end());
    }
    Deliver(std::move(out));
  }

  void ScheduleKeepAlive() {
    if (keepalive_timer_ != 0) loop_->Cancel(keepalive_timer_);
    auto period = std::chrono::milliseconds(o_.ttl_s * 1000 / 3);
    keepalive_timer_ = loop_->AddTimer(period, [this] {
      keepalive_timer_ = 0;
      if (lease_id_ == 0) return;
      Post(
          &keepalive_, "/v3/lease/keepalive", LeaseBody(),
          [this](Status st, std::string body) {
            if (!st.ok()) return Fail("keepalive: " + st.message());
            if (KeepAliveTtl(body) <= 0) return LeaseLost("etcd no longer knows our lease");
            ScheduleKeepAlive();
          },
          false);
    });
  }

  std::string LeaseBody() const { return "{\"ID\":\"" + std::to_string(lease_id_) + "\"}"; }

  // A keepalive's TTL: 0 when etcd does not know the lease (or the answer is bad).
  static int64_t KeepAliveTtl(const std::string& body) {
    json::value v = Parse(body);
    const json::object* o = v.if_object();
    const json::object* r = o == nullptr ? nullptr : Object(o->if_contains("result"));
    return r == nullptr ? 0 : Int(r->if_contains("TTL"));
  }

  // etcd answers but our lease is gone: register anew, at once.
  void LeaseLost(const std::string& why) {
    spdlog::warn("etcd: lease {} of incarnation {} lost ({}); registering again", lease_id_,
                 incarnation_, why);
    lease_id_ = 0;
    registered_ = false;
    for (Slot* s : {&control_, &keepalive_, &watch_}) Cancel(s);
    if (keepalive_timer_ != 0) loop_->Cancel(keepalive_timer_);
    keepalive_timer_ = 0;
    Sync();
  }

  // etcd cannot be reached or answered nonsense: keep the members, try the
  // next endpoint after the back-off.
  void Fail(const std::string& why) {
    if (up_ || !failed_before_) {
      spdlog::warn("etcd: {} unreachable ({}); keeping {} members, retrying", o_.endpoints[ep_],
                   why, membership_->members().size());
    }
    failed_before_ = true;
    SetUp(false);
    for (Slot* s : {&control_, &keepalive_, &watch_}) Cancel(s);
    for (EventLoop::TimerId* t : {&retry_timer_, &keepalive_timer_}) {
      if (*t != 0) loop_->Cancel(*t);
      *t = 0;
    }
    ep_ = (ep_ + 1) % o_.endpoints.size();
    retry_timer_ = loop_->AddTimer(backoff_, [this] {
      retry_timer_ = 0;
      Sync();
    });
    backoff_ = std::min(backoff_ * 2, o_.backoff_max);
  }

  void SetUp(bool up) {
    if (up) backoff_ = o_.backoff_min;
    if (up == up_) return;
    up_ = up;
    if (up) {
      spdlog::info("etcd: watching {} at {}: {} members", prefix_, o_.endpoints[ep_],
                   membership_->members().size());
    }
    if (on_up_) on_up_(up);
  }

  // After every listing and watched change, events or not: the caller's
  // counts (bad records) may have moved.
  void Deliver(std::vector<MemberEvent> events) { on_events_(events); }

  EventLoop* loop_;
  EtcdOptions o_;
  Membership* membership_;
  OnEvents on_events_;
  OnUp on_up_;
  const std::string prefix_;
  const std::string own_key_;

  CURLM* multi_ = nullptr;
  std::set<curl_socket_t> fds_;
  EventLoop::TimerId curl_timer_ = 0;
  Slot control_;    // grant, register, list: one at a time, in that order
  Slot keepalive_;  // the lease's periodic keepalive
  Slot watch_;      // the streaming watch
  json::stream_parser parser_;
  uint64_t watch_gen_ = 0;

  size_t ep_ = 0;
  std::chrono::milliseconds backoff_;
  EventLoop::TimerId retry_timer_ = 0;
  EventLoop::TimerId keepalive_timer_ = 0;
  int64_t lease_id_ = 0;
  bool registered_ = false;
  bool up_ = false;
  bool failed_before_ = false;
  std::string incarnation_;
  uint64_t registrations_ = 0;
};

Result<std::unique_ptr<EtcdRegistry>> EtcdRegistry::Create(EventLoop* loop, EtcdOptions options,
                                                           Membership* membership,
                                                           OnEvents on_events, OnUp on_up) {
  if (Status s = ValidateEtcdOptions(options); !s.ok()) return s;
  if (membership->self() != options.self.name) {
    return Status::Internal("the membership's self is not the registry's node");
  }
  auto impl = std::make_unique<Impl>(loop, std::move(options), membership, std::move(on_events),
                                     std::move(on_up));
  if (Status s = impl->Init(); !s.ok()) return s;
  impl->Start();
  return std::unique_ptr<EtcdRegistry>(new EtcdRegistry(std::move(impl)));
}

EtcdRegistry::EtcdRegistry(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
EtcdRegistry::~EtcdRegistry() = default;
bool EtcdRegistry::up() const { return impl_->up(); }
const std::string& EtcdRegistry::incarnation() const { return impl_->incarnation(); }
uint64_t EtcdRegistry::registrations() const { return impl_->registrations(); }
void EtcdRegistry::Leave(std::chrono::milliseconds timeout) { impl_->Leave(timeout); }

}  // namespace sb::broker
