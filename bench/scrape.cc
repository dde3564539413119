#include "bench/scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "bench/io_util.h"

namespace sb::bench {

std::string Scrape(int port, uint64_t deadline_ns) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      WriteAll(fd, req.data(), req.size())) {
    char buf[16384];
    for (;;) {
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, MsUntil(deadline_ns, 1000)) <= 0) break;
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  size_t body = out.find("\r\n\r\n");
  return body == std::string::npos ? std::string() : out.substr(body + 4);
}

double Sample(const std::string& body, const std::string& series) {
  for (size_t at = body.find(series); at != std::string::npos; at = body.find(series, at + 1)) {
    if (at != 0 && body[at - 1] != '\n') continue;
    size_t sp = at + series.size();
    if (sp < body.size() && body[sp] == ' ') return std::strtod(body.c_str() + sp + 1, nullptr);
  }
  return -1;
}

double FirstSample(const std::string& body, const std::string& name) {
  for (size_t at = body.find(name); at != std::string::npos; at = body.find(name, at + 1)) {
    if (at != 0 && body[at - 1] != '\n') continue;
    size_t after = at + name.size();
    if (after >= body.size() || (body[after] != ' ' && body[after] != '{')) continue;
    size_t eol = body.find('\n', after);
    size_t sp = body.rfind(' ', eol == std::string::npos ? body.size() : eol);
    return std::strtod(body.c_str() + sp + 1, nullptr);
  }
  return -1;
}

double ScrapedHistogram::Quantile(double q) const {
  if (count <= 0 || buckets.empty()) return std::nan("");
  const double rank = q * count;
  double lo = 0, below = 0;
  for (const auto& [le, cum] : buckets) {
    if (cum >= rank) {
      if (std::isinf(le)) return lo;
      return lo + (le - lo) * (cum > below ? (rank - below) / (cum - below) : 0);
    }
    lo = le;
    below = cum;
  }
  return lo;
}

ScrapedHistogram ReadHistogram(const std::string& body, const std::string& name,
                               const std::string& label) {
  ScrapedHistogram h;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.find(label) == std::string::npos) continue;
    const size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    const double v = std::strtod(line.c_str() + sp + 1, nullptr);
    if (line.rfind(name + "_bucket{", 0) == 0) {
      const size_t le = line.find("le=\"");
      if (le == std::string::npos) continue;
      const size_t end = line.find('"', le + 4);
      const std::string bound = line.substr(le + 4, end - le - 4);
      h.buckets.emplace_back(bound == "+Inf" ? HUGE_VAL : std::strtod(bound.c_str(), nullptr), v);
    } else if (line.rfind(name + "_count{", 0) == 0) {
      h.count = v;
    } else if (line.rfind(name + "_sum{", 0) == 0) {
      h.sum = v;
    }
  }
  std::sort(h.buckets.begin(), h.buckets.end());
  return h;
}

}  // namespace sb::bench
