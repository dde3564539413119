#include "tests/broker/etcd_server.h"

#include <curl/curl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include "broker/etcd_registry.h"

namespace sb::testutil {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

size_t Append(char* data, size_t, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, n);
  return n;
}

// A blocking request: its body, nullopt unless it answered 200.
std::optional<std::string> Http(const std::string& url, const std::string& body = "") {
  CURL* e = curl_easy_init();
  if (e == nullptr) return std::nullopt;
  std::string out;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_PROXY, "");
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Append);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &out);
  if (!body.empty()) curl_easy_setopt(e, CURLOPT_POSTFIELDS, body.c_str());
  CURLcode rc = curl_easy_perform(e);
  long code = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(e);
  if (rc != CURLE_OK || code != 200) return std::nullopt;
  return out;
}

}  // namespace

std::string FindEtcd() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
    std::string p = std::string(dir) + "/etcd";
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

EtcdServer::EtcdServer(std::string binary)
    : binary_(std::move(binary)), client_port_(FreePort()), peer_port_(FreePort()) {}

bool EtcdServer::Start() {
  const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
  auto p = Process::Start(
      binary_, {.args = {"--name", "t", "--data-dir", dir_.File("data"), "--listen-client-urls",
                         url(), "--advertise-client-urls", url(), "--listen-peer-urls", peer,
                         "--initial-advertise-peer-urls", peer, "--initial-cluster", "t=" + peer},
                .output = dir_.File("etcd.log")});
  if (!p.ok()) return false;
  process_.emplace(std::move(p).value());
  return WaitUntil(
      [&] {
        auto h = Http(url() + "/health");
        return h && h->find("\"true\"") != std::string::npos;
      },
      10s);
}

void EtcdServer::Stop() {
  if (!process_) return;
  process_->Signal(SIGTERM);
  process_->WaitExit(10s);
  process_.reset();
}

std::optional<json::object> EtcdServer::Post(const std::string& path, const json::object& body) {
  auto out = Http(url() + path, json::serialize(body));
  if (!out) return std::nullopt;
  boost::system::error_code ec;
  json::value v = json::parse(*out, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return v.get_object();
}

int64_t EtcdServer::LeaseOf(const std::string& key) {
  auto r = Post("/v3/kv/range", {{"key", broker::GatewayBase64(key)}});
  if (!r || !r->contains("kvs")) return 0;
  const json::array& kvs = r->at("kvs").as_array();
  if (kvs.empty()) return 0;
  const json::value* lease = kvs[0].as_object().if_contains("lease");
  if (lease == nullptr || !lease->is_string()) return 0;
  return std::stoll(std::string(lease->as_string()));
}

}  // namespace sb::testutil
