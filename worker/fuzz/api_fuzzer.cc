// libFuzzer target for the HTTP API's decision (worker/http_api): what a
// backend holding the key may send a shard.
//
// Input: the first byte picks the endpoint (publish, broadcast, presence
// with the rest as the query, or a path of its own), the rest is the body
// (worker/fuzz/corpus_api/ holds valid and near-valid ones).
//
// Besides "no crash, no sanitizer report" it checks what the shard relies
// on: an answer has a status and a JSON error body; a request to perform
// has valid topics, an event a client could send too, and a payload that is
// a byte-for-byte piece of the body and is itself one JSON value.
#include <boost/json.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/testing/fuzz_check.h"
#include "protocol/limits.h"
#include "worker/http_api.h"

namespace {

const std::string kKey = "fuzz-key-0123456789abcdef";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using namespace sb::worker;
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string target;
  std::string_view method = "POST", body = rest;
  switch (data[0] % 4) {
    case 0:
      target = "/api/publish";
      break;
    case 1:
      target = "/api/broadcast";
      break;
    case 2:
      target = "/api/presence?" + std::string(rest);
      method = "GET";
      body = {};
      break;
    default:
      target = "/api/" + std::string(rest.substr(0, 64));
      break;
  }
  ApiPolicy policy;
  policy.key = &kKey;
  const std::string auth = "Bearer " + kKey;
  ApiDecision d = DecideApi(method, target, auth, body, policy);
  if (!d.request) {
    FUZZ_CHECK(d.status >= 400 && d.status < 600);
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(d.body, ec);
    FUZZ_CHECK(!ec && v.is_object() && v.as_object().contains("error"));
    return 0;
  }
  const ApiRequest& r = *d.request;
  FUZZ_CHECK(!r.topics.empty() && r.topics.size() <= kMaxApiTopics);
  for (const std::string& t : r.topics) {
    FUZZ_CHECK(!t.empty() && t.size() <= sb::limits::kMaxTopicBytes);
  }
  if (r.endpoint == ApiEndpoint::kPresence) return 0;
  FUZZ_CHECK(!r.event.empty() && !r.event.starts_with("phx_"));
  FUZZ_CHECK(body.find(r.payload) != std::string_view::npos);
  boost::system::error_code ec;
  boost::json::parse(r.payload, ec);
  FUZZ_CHECK(!ec);
  return 0;
}
