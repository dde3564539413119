// bench-mesh-thr: the broker's routing throughput against raw libzmq on the
// same machine, with messages of the same size.
//
// Modes, each run with fresh processes, interleaved (run 1: raw, relay,
// broker; run 2: ...) so each run's ratios compare figures taken moments apart:
//   raw     libzmq's local_thr / remote_thr: a forked sender pushes N messages
//           as fast as it can over one DEALER -> ROUTER tcp loopback connection
//           (default high-water marks, blocking sends), a forked receiver counts
//           them. Each message is shaped like a shard's publish: three frames,
//           the 13-byte kPublish header, the topic "bench", the payload.
//   relay   the same sender and receiver through a forked process that only
//           forwards (ROUTER, both peers DEALERs, as shards connect to the
//           broker; messages moved, not copied): the cost of a second hop with
//           no protocol at all.
//   broker  the real switchboard-broker (beside this program) and two fake
//           shards speaking the mesh protocol through the project's ZeroMQ
//           adapter with the shard's socket options: a subscriber (kHello with
//           topics ["bench"] and a credit window; it reads up to --batch
//           messages per wake-up and then sends one kCredit for what it read,
//           as a shard does once per loop turn) and a publisher (kHello with
//           no topics; a probe publish, seq 1, on a topic nobody has, whose
//           ack says the new broker's settle window is over; then kPublish
//           seq 2..N+1 on "bench", never more than --outbox unacknowledged,
//           reading kAck: a shard's outbox).
//   raw-curve  raw with CURVE (the receiver's ROUTER a CURVE server, the
//           sender's DEALER its client; no ZAP handler): the fair baseline for
//           peer, whose links are CURVE.
//   peer     two real switchboard-brokers, node a and node b, linked as
//           mesh peers (static membership, CURVE keys from `switchboard
//           keygen`; on loopback, or across the veth with --netns), the
//           publishing fake shard on a's broker and the subscribing one on
//           b's: every message crosses the peer link a -> b (a's uplink to
//           b's peer socket). The publisher starts once a's broker knows b's
//           interest in the topic.
//   peer-plain  peer with `--insecure` links instead of CURVE (plain TCP, as
//           raw): compared with raw, what the mesh costs apart from
//           encryption.
// --netns: the senders (sender, publisher, broker a) run in one network
// namespace and the receivers (receiver, subscriber, broker b) in another,
// joined by one veth pair (10.78.X.1/24 and .2/24, X from --subnet), all
// made by the bench and removed at its end; raw and raw-curve then cross the
// veth as the peer link does (relay and broker stay on loopback). An
// interrupted run leaves them: `ip netns list | grep sbxb` shows them.
// The receiver (subscriber) times from its first message to its last, as
// local_thr does; msgs/s = N / that time, MB/s counts the three frames of the
// publish (13 + 5 + payload bytes) for every mode. Every receiver checks that
// it got seq 1..N in order; every process's CPU time (all its threads,
// libzmq's I/O thread included) comes from wait4.
//
// Usage: bench-mesh-thr [--messages N] [--payload-bytes B[,B...]] [--runs R]
//                       [--modes raw,raw-curve,relay,broker,peer,peer-plain]
//                       [--netns]
//                       [--subnet X] [--window W] [--outbox O] [--batch K]
//                       [--broker-queue Q] [--broker PATH] [--max-seconds S]
// Defaults: N 1000000, B 64, R 1, raw,relay,broker (with --netns:
// raw-curve,peer,raw), X from the pid, W 1000 (the shard's
// --credit-window default), O 32768 (its --max-outbox default), K 512 (its
// read batch), S 300, and Q (the broker's --queue-max-messages) O + W: the
// most the subscriber's queue can hold when the publisher respects its outbox,
// so nothing is shed. Q 0 keeps the broker's own default (10,000), which is
// below a shard's outbox: a publisher faster than the subscriber then has
// deliveries shed (counted by the broker, acked to the publisher, missing at
// the subscriber: the run fails).
// Every wait has a deadline inside --max-seconds; children die with this
// process (PR_SET_PDEATHSIG) and on SIGINT/SIGTERM. Prints one line per run,
// a summary, then one JSON line. Exits 0 when every receiver got every
// message in order, 1 otherwise, 2 on a usage error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "bench/children.h"
#include "bench/io_util.h"
#include "bench/scrape.h"
#include "common/command_line.h"
#include "common/zmq_socket.h"
#include "protocol/mesh.h"

namespace fs = std::filesystem;

namespace {

using sb::bench::KillChildren;
using sb::bench::kSec;
using sb::bench::MonoNs;
using sb::bench::MsUntil;
using sb::bench::ReadAll;
using sb::bench::Sample;
using sb::bench::Scrape;
using sb::bench::SleepNs;
using sb::bench::Untrack;
using sb::bench::WriteAll;

constexpr char kTopic[] = "bench";
constexpr int64_t kHeartbeatNs = 1'000'000'000;  // the broker's default interval

struct Options {
  uint64_t messages = 1'000'000;
  std::vector<int> sizes = {64};
  int runs = 1;
  std::vector<std::string> modes = {"raw", "relay", "broker"};
  bool netns = false;
  int subnet = -1;  // X of 10.78.X.0/24; -1: from the pid
  uint32_t window = 1000;
  uint64_t outbox = 32768;
  int batch = 512;
  int64_t broker_queue = -1;  // -1: outbox + window; 0: the broker's default
  double max_seconds = 300;
  std::string broker;
  std::string switchboard;  // for `switchboard keygen` (peer)
};

// --- Network namespaces (--netns) -------------------------------------------

// Two namespaces joined by one veth pair: `a` (senders) at 10.78.X.1, `b`
// (receivers) at 10.78.X.2, both with loopback up.
// Without --netns both are the root namespace (empty names) and loopback.
struct Netns {
  std::string a, b;
  std::string addr_a = "127.0.0.1", addr_b = "127.0.0.1";
  // Each node's peer socket: a fixed port alone in its namespace, free
  // ports on a shared loopback.
  int port_a = 7100, port_b = 7100;
};

// A TCP port free on loopback now (another process may take it before the
// broker binds it: the run then fails, saying a broker did not start).
int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (fd >= 0) ::close(fd);
  return port;
}

bool Ip(const std::string& args) {
  const std::string cmd = "ip " + args + " 2>&1";
  if (std::system(cmd.c_str()) == 0) return true;
  std::fprintf(stderr, "bench-mesh-thr: failed: %s\n", cmd.c_str());
  return false;
}

void RemoveNetns(const Netns& n) {
  // The veth pair goes with either namespace.
  for (const std::string& ns : {n.a, n.b}) {
    if (!ns.empty()) (void)std::system(("ip netns delete " + ns + " 2>/dev/null").c_str());
  }
}

bool MakeNetns(int subnet, Netns* n) {
  const std::string id = std::to_string(::getpid());
  n->a = "sbxba" + id;
  n->b = "sbxbb" + id;
  const std::string net = "10.78." + std::to_string(subnet) + ".";
  n->addr_a = net + "1";
  n->addr_b = net + "2";
  bool ok = Ip("netns add " + n->a) && Ip("netns add " + n->b) &&
            Ip("link add xb0 netns " + n->a + " type veth peer name xb0 netns " + n->b);
  for (const auto& [ns, addr] : {std::pair{n->a, n->addr_a}, std::pair{n->b, n->addr_b}}) {
    ok = ok && Ip("-n " + ns + " link set lo up") &&
         Ip("-n " + ns + " addr add " + addr + "/24 dev xb0") &&
         Ip("-n " + ns + " link set xb0 up");
  }
  if (!ok) RemoveNetns(*n);
  return ok;
}

// While it lives, this (single-threaded) process is in namespace `ns`:
// what it forks or spawns starts there, and so do the sockets it opens.
// An empty `ns` changes nothing.
class InNetns {
 public:
  explicit InNetns(const std::string& ns) {
    if (ns.empty()) return;
    ok_ = false;
    home_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    const int fd = ::open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    ok_ = home_ >= 0 && fd >= 0 && ::setns(fd, CLONE_NEWNET) == 0;
    if (fd >= 0) ::close(fd);
  }
  ~InNetns() {
    if (home_ < 0) return;
    if (::setns(home_, CLONE_NEWNET) != 0) std::abort();  // the bench's own sockets would be lost
    ::close(home_);
  }
  InNetns(const InNetns&) = delete;
  InNetns& operator=(const InNetns&) = delete;
  bool ok() const { return ok_; }

 private:
  int home_ = -1;
  bool ok_ = true;
};

std::string Fmt(double v, int decimals = 0) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}

// --- Child processes and what they report ----------------------------------

// Child -> parent: once when ready (kReady), once when done (kFinal).
struct Report {
  enum Kind : uint32_t { kReady = 1, kFinal = 2 };
  uint32_t kind = 0;
  uint32_t ok = 0;            // kFinal: the role's work completed
  char endpoint[128] = {};    // kReady: what a binding role bound
  uint64_t count = 0;         // messages received (receivers) or sent (senders)
  uint64_t acked = 0;         // publisher: the last seq acked
  uint64_t out_of_order = 0;  // breaks in the seq sequence (a gap or a step back)
  uint64_t last_seq = 0;
  uint64_t first_ns = 0, last_ns = 0;
  uint64_t wakeups = 0;  // subscriber: batches read (one kCredit each)
  char error[160] = {};
};

// Parent -> child: 'g' go (senders), 'q' quit. EOF is quit too.
bool WaitCommand(int ctl, char want, uint64_t deadline) {
  char c = 0;
  return ReadAll(ctl, &c, 1, deadline) && c == want;
}

void SetError(Report* r, const std::string& what) {
  std::snprintf(r->error, sizeof r->error, "%s", what.c_str());
}

struct Proc {
  pid_t pid = -1;
  int ctl = -1;
  Report ready, final;
  double cpu_s = 0;  // user + system of all its threads, from wait4
  std::string log;
};

// Forks a child that runs `body(ctl)` and exits with its result
// (bench/children: it dies with the parent, fd 3 is its control socket).
Proc Fork(const std::function<int(int)>& body) {
  Proc p;
  sb::bench::Forked f = sb::bench::ForkWithControl(body);
  p.pid = f.pid;
  p.ctl = f.ctl;
  return p;
}

// Reaps `p` (SIGKILL after `grace_ns`), recording its CPU time.
void Reap(Proc& p, uint64_t grace_ns) {
  if (p.pid <= 0) return;
  int st = 0;
  rusage ru{};
  uint64_t until = MonoNs() + grace_ns;
  pid_t got = 0;
  while ((got = ::wait4(p.pid, &st, WNOHANG, &ru)) == 0 && MonoNs() < until) SleepNs(1000000);
  if (got != p.pid) {
    ::kill(p.pid, SIGKILL);
    ::wait4(p.pid, &st, 0, &ru);
  }
  p.cpu_s = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
            static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  Untrack(p.pid);
  if (p.ctl >= 0) ::close(p.ctl);
  p.ctl = -1;
  p.pid = -1;
}

// --- Messages --------------------------------------------------------------

std::string Payload(int bytes) {
  std::string p(static_cast<size_t>(bytes), 'x');
  if (!p.empty()) p.front() = '{', p.back() = '}';
  return p;
}

// A shard's publish, as the shard's broker link sends it: encoded per message.
std::vector<std::string> EncodePublish(uint64_t seq, std::string_view payload) {
  sb::mesh::Message m;
  m.type = sb::mesh::Type::kPublish;
  m.seq = seq;
  m.topic = kTopic;
  m.body = payload;
  const sb::mesh::Frames frames(m);
  return {frames.views().begin(), frames.views().end()};
}

// Counts a received publish / delivery: seq must follow the last one, the
// first being `first_seq`.
void Count(Report* r, uint64_t seq, uint64_t first_seq = 1) {
  uint64_t now = MonoNs();
  if (r->count == 0) r->first_ns = now;
  r->last_ns = now;
  if (seq != (r->count == 0 ? first_seq : r->last_seq + 1)) ++r->out_of_order;
  r->last_seq = seq;
  ++r->count;
}

// --- raw and relay: plain libzmq -------------------------------------------

struct RawConfig {
  uint64_t messages = 0;
  int payload = 64;
  std::string endpoint;  // sender, relay receiver: connect here; raw receiver: bind
  bool via_relay = false;
  uint64_t deadline = 0;
  // raw-curve: the receiver's keypair (it is the CURVE server) and the
  // sender's; empty: plain text.
  std::string server_public, server_secret, client_public, client_secret;
};

struct CurvePair {
  std::string public_key, secret_key;  // Z85
};

CurvePair NewCurvePair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) return {};
  return {pub, sec};
}

// Receives one multipart message into `parts` (grown as needed); 0 on timeout.
size_t RecvParts(zmq::socket_t& s, std::vector<zmq::message_t>& parts) {
  size_t n = 0;
  for (;;) {
    if (parts.size() <= n) parts.emplace_back();
    if (!s.recv(parts[n], zmq::recv_flags::none)) return 0;  // RCVTIMEO (first part only)
    ++n;
    if (!parts[n - 1].more()) return n;
  }
}

// local_thr: binds a ROUTER (raw) or connects a DEALER to the relay and says
// hello, then counts N publishes.
int RawReceiver(int ctl, const RawConfig& c) {
  Report r;
  r.kind = Report::kReady;
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, c.via_relay ? zmq::socket_type::dealer : zmq::socket_type::router);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, 200);
  std::vector<zmq::message_t> parts;
  if (c.via_relay) {
    s.connect(c.endpoint);
    s.send(zmq::str_buffer("sub"), zmq::send_flags::none);
    // The relay answers once it knows us: nothing is forwarded before.
    while (MonoNs() < c.deadline && RecvParts(s, parts) == 0) {
    }
    std::snprintf(r.endpoint, sizeof r.endpoint, "%s", c.endpoint.c_str());
  } else {
    if (!c.server_secret.empty()) {
      s.set(zmq::sockopt::curve_server, 1);
      s.set(zmq::sockopt::curve_secretkey, c.server_secret);
    }
    s.bind(c.endpoint);
    std::snprintf(r.endpoint, sizeof r.endpoint, "%s", s.get(zmq::sockopt::last_endpoint).c_str());
  }
  if (!WriteAll(ctl, &r, sizeof r)) return 1;
  r = Report{};
  r.kind = Report::kFinal;
  const size_t skip = c.via_relay ? 0 : 1;  // a ROUTER's routing id frame
  std::vector<std::string_view> views;
  while (r.count < c.messages && MonoNs() < c.deadline) {
    size_t n = RecvParts(s, parts);
    if (n == 0) continue;
    views.clear();
    for (size_t i = skip; i < n; ++i) views.emplace_back(parts[i].data<char>(), parts[i].size());
    sb::mesh::Message m;
    if (!sb::mesh::Decode(views, &m).ok() || m.type != sb::mesh::Type::kPublish) {
      SetError(&r, "not a publish");
      break;
    }
    Count(&r, m.seq);
  }
  r.ok = r.count == c.messages && r.out_of_order == 0;
  if (!r.ok && r.error[0] == 0) SetError(&r, "missing messages (deadline)");
  return WriteAll(ctl, &r, sizeof r) ? 0 : 1;
}

// remote_thr: connects a DEALER and, on 'g', sends N publishes with blocking
// sends (default high-water mark). Stays connected until told to quit.
int RawSender(int ctl, const RawConfig& c) {
  Report r;
  r.kind = Report::kReady;
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndtimeo, 200);
  if (!c.server_public.empty()) {
    s.set(zmq::sockopt::curve_serverkey, c.server_public);
    s.set(zmq::sockopt::curve_publickey, c.client_public);
    s.set(zmq::sockopt::curve_secretkey, c.client_secret);
  }
  s.connect(c.endpoint);
  if (!WriteAll(ctl, &r, sizeof r) || !WaitCommand(ctl, 'g', c.deadline)) return 1;
  r = Report{};
  r.kind = Report::kFinal;
  const std::string payload = Payload(c.payload);
  r.first_ns = MonoNs();
  while (r.count < c.messages && MonoNs() < c.deadline) {
    std::vector<std::string> frames = EncodePublish(r.count + 1, payload);
    bool sent = true;
    for (size_t i = 0; i < frames.size() && sent; ++i) {
      // Only the first part can time out; after it the message is taken whole.
      sent = s.send(zmq::buffer(frames[i]),
                    i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none)
                 .has_value();
      if (!sent && i > 0) {
        SetError(&r, "partial send");
        (void)WriteAll(ctl, &r, sizeof r);
        return 1;
      }
    }
    if (sent) ++r.count;
  }
  r.last_ns = MonoNs();
  r.ok = r.count == c.messages;
  if (!WriteAll(ctl, &r, sizeof r)) return 1;
  WaitCommand(ctl, 'q', c.deadline + 10 * kSec);
  return 0;
}

// A forwarder with the broker's topology: one ROUTER, both peers DEALERs.
// The subscriber says "sub" first (answered "ok"); everything else is
// forwarded to it, the messages moved rather than copied. Runs until 'q'.
int Relay(int ctl, uint64_t deadline) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::router);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::router_mandatory, 1);
  s.set(zmq::sockopt::rcvtimeo, 200);
  s.bind("tcp://127.0.0.1:0");
  Report r;
  r.kind = Report::kReady;
  std::snprintf(r.endpoint, sizeof r.endpoint, "%s", s.get(zmq::sockopt::last_endpoint).c_str());
  if (!WriteAll(ctl, &r, sizeof r)) return 1;
  std::string sub;
  std::vector<zmq::message_t> parts;
  while (MonoNs() < deadline) {
    size_t n = RecvParts(s, parts);
    if (n == 0) {
      pollfd pfd{ctl, POLLIN, 0};
      if (::poll(&pfd, 1, 0) > 0) break;  // 'q' or EOF
      continue;
    }
    if (sub.empty() && n == 2 && parts[1].to_string_view() == "sub") {
      sub = parts[0].to_string();
      s.send(zmq::buffer(sub), zmq::send_flags::sndmore);
      s.send(zmq::str_buffer("ok"), zmq::send_flags::none);
      continue;
    }
    if (sub.empty()) continue;  // nobody to forward to (cannot happen: the parent waits)
    s.send(zmq::buffer(sub), zmq::send_flags::sndmore);
    for (size_t i = 1; i < n; ++i) {
      s.send(parts[i], i + 1 < n ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
  return 0;
}

// --- broker: fake shards over the project's ZeroMQ adapter ------------------

struct ShardConfig {
  uint64_t messages = 0;
  int payload = 64;
  std::string endpoint;
  uint32_t window = 1000;
  uint64_t outbox = 32768;
  int batch = 512;
  uint64_t deadline = 0;
};

uint64_t RandomInstance() {
  uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<uint64_t>(::getpid()) << 20;
  return r == 0 ? 1 : r;
}

// One fake shard's link: a DEALER with the shard's options, the session's
// hello / heartbeat, and reads that follow libzmq's edge-like fd.
class FakeShard {
 public:
  bool Open(const std::string& endpoint, Report* r) {
    auto s = sb::ZmqSocket::Create({.kind = sb::ZmqSocket::Kind::kDealer});
    if (!s.ok()) return SetError(r, s.status().message()), false;
    socket_ = std::move(s).value();
    if (sb::Status st = socket_->Connect(endpoint); !st.ok()) {
      return SetError(r, st.message()), false;
    }
    return true;
  }

  // kHello, re-sent until it is handed over (the connection is up).
  bool Hello(const std::string& name, uint32_t window, std::vector<std::string> topics,
             uint64_t deadline) {
    sb::mesh::Hello h;
    h.shard = name;
    h.instance = instance_;
    h.window = window;
    h.topics = std::move(topics);
    body_ = sb::mesh::EncodeHello(h);
    sb::mesh::Message m;
    m.type = sb::mesh::Type::kHello;
    m.body = body_;
    while (MonoNs() < deadline) {
      if (Send(m)) return true;
      SleepNs(5'000'000);
    }
    return false;
  }

  bool Send(const sb::mesh::Message& m) {
    const sb::mesh::Frames frames(m);
    return socket_->Send(frames.views());
  }

  // A packed message (a batch, as a shard sends a turn's publishes).
  bool SendPacked(std::string_view packed) {
    if (!sb::mesh::Unpack(packed, &views_).ok()) return false;
    return socket_->Send(views_);
  }

  void Heartbeat() {
    uint64_t now = MonoNs();
    if (now < next_heartbeat_) return;
    next_heartbeat_ = now + kHeartbeatNs;
    sb::mesh::Message hb;
    hb.type = sb::mesh::Type::kHeartbeat;
    (void)Send(hb);
  }

  // The next message, or false when none is waiting. The messages of a
  // kBatch come one by one, as a shard handles them.
  bool Recv(sb::mesh::Message* m, Report* r) {
    if (!pending_.empty()) {
      *m = pending_.front();
      pending_.pop_front();
      return true;
    }
    switch (socket_->Recv(&frames_)) {
      case sb::ZmqSocket::RecvResult::kMessage:
        if (!sb::mesh::Decode(frames_, m).ok()) {
          SetError(r, "undecodable message from the broker");
          ++bad_;
        }
        if (bad_ == 0 && m->type == sb::mesh::Type::kBatch) {
          // Views into frames_, which stay until the next socket read.
          sb::Status s =
              sb::mesh::ForEachInBatch(m->body, [&](std::span<const std::string_view> inner) {
                sb::mesh::Message one;
                if (sb::mesh::Decode(inner, &one).ok()) {
                  pending_.push_back(one);
                } else {
                  ++bad_;
                }
              });
          if (!s.ok() || bad_ != 0 || pending_.empty()) {
            SetError(r, "undecodable batch from the broker");
            ++bad_;
            return false;
          }
          *m = pending_.front();
          pending_.pop_front();
        }
        return bad_ == 0;
      case sb::ZmqSocket::RecvResult::kWouldBlock:
      case sb::ZmqSocket::RecvResult::kError:
        return false;
    }
    return false;
  }

  // Sleeps until libzmq says something may have arrived, at most `ms`, or
  // `ctl` (if given) is readable; returns whether it is.
  bool Wait(int ms, int ctl = -1) {
    if (socket_->Readable()) return false;
    pollfd pfd[2] = {{socket_->fd(), POLLIN, 0}, {ctl, POLLIN, 0}};
    return ::poll(pfd, ctl >= 0 ? 2 : 1, ms) > 0 && (pfd[1].revents & (POLLIN | POLLHUP)) != 0;
  }

  uint64_t instance() const { return instance_; }
  bool bad() const { return bad_ != 0; }

 private:
  std::unique_ptr<sb::ZmqSocket> socket_;
  uint64_t instance_ = RandomInstance();
  uint64_t next_heartbeat_ = 0;
  int bad_ = 0;
  std::string body_;
  std::vector<std::string_view> views_;
  std::vector<std::string_view> frames_;
  std::deque<sb::mesh::Message> pending_;  // the rest of a batch
};

// Waits for kWelcome and, when `topics`, the snapshot of each topic
// (crediting it back as a shard does).
bool Welcome(FakeShard& shard, size_t topics, Report* r, uint64_t deadline) {
  bool welcomed = false;
  size_t snapshots = 0;
  uint32_t consumed = 0;
  while ((!welcomed || snapshots < topics) && MonoNs() < deadline && !shard.bad()) {
    sb::mesh::Message m;
    if (!shard.Recv(&m, r)) {
      shard.Wait(MsUntil(deadline, 50));
      continue;
    }
    if (m.type == sb::mesh::Type::kWelcome) welcomed = true;
    if (m.type == sb::mesh::Type::kSnapshot) ++snapshots, ++consumed;
  }
  if (consumed > 0) {
    sb::mesh::Message credit;
    credit.type = sb::mesh::Type::kCredit;
    credit.n = consumed;
    (void)shard.Send(credit);
  }
  if (!welcomed || snapshots < topics) SetError(r, "not welcomed by the broker");
  return welcomed && snapshots >= topics;
}

int Subscriber(int ctl, const ShardConfig& c) {
  Report r;
  r.kind = Report::kReady;
  FakeShard shard;
  if (!shard.Open(c.endpoint, &r) || !shard.Hello("sub", c.window, {kTopic}, c.deadline) ||
      !Welcome(shard, 1, &r, c.deadline)) {
    WriteAll(ctl, &r, sizeof r);
    return 1;
  }
  if (!WriteAll(ctl, &r, sizeof r)) return 1;
  r = Report{};
  r.kind = Report::kFinal;
  sb::mesh::Message credit;
  credit.type = sb::mesh::Type::kCredit;
  while (r.count < c.messages && MonoNs() < c.deadline && !shard.bad()) {
    // One loop turn: read up to a batch, then credit back what was read.
    uint32_t consumed = 0;
    sb::mesh::Message m;
    for (int i = 0; i < c.batch && shard.Recv(&m, &r); ++i) {
      if (m.type == sb::mesh::Type::kDeliver) {
        ++consumed;
        Count(&r, m.seq, 2);  // seq 1 is the publisher's probe, to a topic nobody has
      } else if (m.type == sb::mesh::Type::kSnapshot || m.type == sb::mesh::Type::kDiff) {
        ++consumed;
      } else if (m.type == sb::mesh::Type::kReset) {
        SetError(&r, "reset by the broker");
        break;
      }
    }
    if (consumed > 0) {
      ++r.wakeups;
      credit.n = consumed;
      if (!shard.Send(credit)) SetError(&r, "credit not handed over");
    } else {
      // Idle: wait for the broker or for the parent's 's' (every publish
      // acked, nothing more will come).
      if (shard.Wait(MsUntil(c.deadline, 100), ctl)) break;
    }
    shard.Heartbeat();
  }
  r.ok = r.count == c.messages && r.out_of_order == 0 && !shard.bad();
  if (!r.ok && r.error[0] == 0) {
    SetError(&r, "got " + std::to_string(r.count) + " deliveries of " + std::to_string(c.messages) +
                     ", " + std::to_string(r.out_of_order) + " breaks in the seq order");
  }
  if (!WriteAll(ctl, &r, sizeof r)) return 1;
  // Stay connected (heartbeating) until told to quit.
  while (MonoNs() < c.deadline + 10 * kSec) {
    pollfd pfd{ctl, POLLIN, 0};
    if (::poll(&pfd, 1, 50) > 0) break;
    sb::mesh::Message m;
    while (shard.Recv(&m, &r)) {
    }
    shard.Heartbeat();
  }
  return 0;
}

int Publisher(int ctl, const ShardConfig& c) {
  Report r;
  r.kind = Report::kReady;
  FakeShard shard;
  if (!shard.Open(c.endpoint, &r) || !shard.Hello("pub", c.window, {}, c.deadline) ||
      !Welcome(shard, 0, &r, c.deadline)) {
    WriteAll(ctl, &r, sizeof r);
    return 1;
  }
  const std::string payload = Payload(c.payload);
  sb::mesh::Message pub;
  pub.type = sb::mesh::Type::kPublish;
  pub.body = payload;
  // The probe, seq 1, to a topic nobody subscribes: a new broker holds
  // publishes while it settles (docs/PROTOCOL.md), so its ack says the
  // broker routes at once from now on.
  pub.topic = "probe";
  pub.seq = 1;
  bool probed = shard.Send(pub);
  while (probed && r.acked < 1 && MonoNs() < c.deadline && !shard.bad()) {
    sb::mesh::Message m;
    if (!shard.Recv(&m, &r)) {
      shard.Wait(MsUntil(c.deadline, 100));
      shard.Heartbeat();
    } else if (m.type == sb::mesh::Type::kAck) {
      r.acked = m.seq;
    }
  }
  if (r.acked < 1) SetError(&r, "the probe publish was never acked");
  if (!WriteAll(ctl, &r, sizeof r) || r.acked < 1 || !WaitCommand(ctl, 'g', c.deadline)) return 1;
  r = Report{};
  r.kind = Report::kFinal;
  pub.topic = kTopic;
  sb::mesh::BatchWriter batch;
  r.first_ns = MonoNs();
  // Seqs 2 .. N+1; `count` and `acked` below count the run's publishes.
  while (r.acked < c.messages && MonoNs() < c.deadline && !shard.bad()) {
    // The outbox: at most `outbox` publishes not yet acked, sent as a
    // shard sends a turn's publishes: batches of about mesh::kBatchBytes.
    uint64_t batched = 0;
    while (r.count + batched < c.messages && r.count + batched - r.acked < c.outbox &&
           !batch.full()) {
      pub.seq = r.count + batched + 2;
      batch.Add(sb::mesh::Pack(pub));
      ++batched;
    }
    if (batched > 0 && shard.SendPacked(batch.Finish())) r.count += batched;
    bool got = false;
    sb::mesh::Message m;
    while (shard.Recv(&m, &r)) {
      got = true;
      if (m.type == sb::mesh::Type::kAck) r.acked = std::max(r.acked, m.seq - 1);
      if (m.type == sb::mesh::Type::kReset) SetError(&r, "reset by the broker");
    }
    if (!got && (r.count == c.messages || r.count - r.acked >= c.outbox)) {
      shard.Wait(MsUntil(c.deadline, 100));
    }
    shard.Heartbeat();
  }
  r.last_ns = MonoNs();
  r.ok = r.acked == c.messages && !shard.bad();
  if (!r.ok && r.error[0] == 0) SetError(&r, "not every publish acked (deadline)");
  if (!WriteAll(ctl, &r, sizeof r)) return 1;
  while (MonoNs() < c.deadline + 10 * kSec) {
    pollfd pfd{ctl, POLLIN, 0};
    if (::poll(&pfd, 1, 50) > 0) break;
    sb::mesh::Message m;
    while (shard.Recv(&m, &r)) {
    }
    shard.Heartbeat();
  }
  return 0;
}

// --- The broker process -------------------------------------------------------

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts switchboard-broker on an ephemeral loopback port; its endpoint from
// its log line "bound tcp://127.0.0.1:<port>", its metrics port from "metrics
// on 127.0.0.1:<port>".
bool StartBroker(const Options& o, const std::vector<std::string>& extra, const std::string& log,
                 uint64_t deadline, Proc* p, std::string* endpoint, int* metrics_port) {
  std::vector<std::string> args = {"--bind", "tcp://127.0.0.1:0", "--metrics", "127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  if (o.broker_queue > 0) {
    args.insert(args.end(), {"--queue-max-messages", std::to_string(o.broker_queue)});
  }
  p->log = log;
  p->pid = sb::bench::SpawnProgram(o.broker, args, log);
  if (p->pid < 0) return false;
  static constexpr std::string_view kBound = "bound tcp://";
  static constexpr std::string_view kMetrics = "metrics on 127.0.0.1:";
  while (MonoNs() < deadline) {
    std::string text = ReadFile(log);
    size_t at = text.find(kBound);
    size_t eol = at == std::string::npos ? at : text.find('\n', at);
    size_t m = text.find(kMetrics);
    if (eol != std::string::npos && m != std::string::npos && text.find('\n', m) != text.npos) {
      *endpoint = text.substr(at + 6, eol - at - 6);  // from "tcp://"
      *metrics_port = std::atoi(text.c_str() + m + kMetrics.size());
      return true;
    }
    if (::waitpid(p->pid, nullptr, WNOHANG) == p->pid) {
      Untrack(p->pid);
      p->pid = -1;
      return false;
    }
    SleepNs(5'000'000);
  }
  return false;
}

// --- Runs ------------------------------------------------------------------------

struct Outcome {
  bool ok = false;
  double msgs_per_s = 0;
  double elapsed_s = 0;
  // CPU seconds per process (the receiver first), and per million messages.
  std::map<std::string, double> cpu_s;
  uint64_t wakeups = 0;
  // broker: its own counters at the end (-1: not scraped)
  double routed = -1, delivered = -1, shed = -1;
  std::string error;
};

bool GetReport(Proc& p, Report* out, uint64_t deadline, const char* who, Outcome* o) {
  if (p.pid > 0 && ReadAll(p.ctl, out, sizeof *out, deadline)) {
    if (out->error[0] != 0 && o->error.empty()) o->error = std::string(who) + ": " + out->error;
    return true;
  }
  if (o->error.empty()) o->error = std::string(who) + ": no report (deadline or exit)";
  return false;
}

void Tell(Proc& p, char c) {
  if (p.ctl >= 0) (void)WriteAll(p.ctl, &c, 1);
}

void Finish(Outcome* out, const Report& recv, const Report& send, uint64_t n) {
  out->ok = out->ok && recv.ok && send.ok && recv.count == n && recv.out_of_order == 0;
  if (recv.last_ns > recv.first_ns) {
    out->elapsed_s = static_cast<double>(recv.last_ns - recv.first_ns) / 1e9;
    out->msgs_per_s = static_cast<double>(recv.count) / out->elapsed_s;
  }
  if (!out->ok && out->error.empty()) {
    out->error = "received " + std::to_string(recv.count) + " of " + std::to_string(n) + ", " +
                 std::to_string(recv.out_of_order) + " breaks in the seq order";
  }
}

// `ns` (raw and raw-curve with --netns): the sender in ns->a, the receiver
// in ns->b, across the veth.
Outcome RunRaw(const Options& o, int payload, bool via_relay, bool curve, const Netns* ns,
               uint64_t deadline) {
  Outcome out;
  out.ok = true;
  RawConfig c{o.messages, payload, "tcp://127.0.0.1:0", via_relay, deadline};
  if (ns != nullptr) c.endpoint = "tcp://" + ns->addr_b + ":0";
  if (curve) {
    CurvePair server = NewCurvePair(), client = NewCurvePair();
    if (server.public_key.empty() || client.public_key.empty()) {
      out.error = "no CURVE keypair (libzmq without CURVE?)";
      out.ok = false;
      return out;
    }
    c.server_public = server.public_key;
    c.server_secret = server.secret_key;
    c.client_public = client.public_key;
    c.client_secret = client.secret_key;
  }
  Proc relay, recv, send;
  const uint64_t setup = std::min(deadline, MonoNs() + 10 * kSec);
  if (via_relay) {
    relay = Fork([deadline](int ctl) { return Relay(ctl, deadline + 5 * kSec); });
    if (!GetReport(relay, &relay.ready, setup, "relay", &out)) out.ok = false;
    c.endpoint = relay.ready.endpoint;
  }
  if (out.ok) {
    InNetns in(ns ? ns->b : "");
    if (in.ok()) recv = Fork([&c](int ctl) { return RawReceiver(ctl, c); });
    out.ok = GetReport(recv, &recv.ready, setup, "receiver", &out);
  }
  if (out.ok) {
    RawConfig sc = c;
    sc.endpoint = via_relay ? c.endpoint : std::string(recv.ready.endpoint);
    InNetns in(ns ? ns->a : "");
    if (in.ok()) send = Fork([&sc](int ctl) { return RawSender(ctl, sc); });
    out.ok = GetReport(send, &send.ready, setup, "sender", &out);
  }
  if (out.ok) {
    Tell(send, 'g');
    out.ok = GetReport(recv, &recv.final, deadline + kSec, "receiver", &out) &&
             GetReport(send, &send.final, deadline + kSec, "sender", &out);
  }
  for (Proc* p : {&send, &recv, &relay}) Tell(*p, 'q');
  for (Proc* p : {&send, &recv, &relay}) Reap(*p, 2 * kSec);
  Finish(&out, recv.final, send.final, o.messages);
  out.cpu_s = {{"receiver", recv.cpu_s}, {"sender", send.cpu_s}};
  if (via_relay) out.cpu_s["relay"] = relay.cpu_s;
  return out;
}

Outcome RunBroker(const Options& o, int payload, const std::string& dir, int run,
                  uint64_t deadline) {
  Outcome out;
  Proc broker, sub, pub;
  std::string endpoint;
  int metrics_port = 0;
  const uint64_t setup = std::min(deadline, MonoNs() + 10 * kSec);
  const std::string log = dir + "/broker-" + std::to_string(run) + ".log";
  out.ok = StartBroker(o, {}, log, setup, &broker, &endpoint, &metrics_port);
  if (!out.ok) out.error = "broker did not start; log " + log;
  ShardConfig c{o.messages, payload, endpoint, o.window, o.outbox, o.batch, deadline};
  if (out.ok) {
    sub = Fork([&c](int ctl) { return Subscriber(ctl, c); });
    out.ok = GetReport(sub, &sub.ready, setup, "subscriber", &out) && sub.ready.error[0] == 0;
  }
  if (out.ok) {
    pub = Fork([&c](int ctl) { return Publisher(ctl, c); });
    out.ok = GetReport(pub, &pub.ready, setup, "publisher", &out) && pub.ready.error[0] == 0;
  }
  if (out.ok) {
    Tell(pub, 'g');
    // Every publish acked: each was consumed (credited back) or dropped, so
    // the subscriber has all it will ever get; it stops when told.
    out.ok = GetReport(pub, &pub.final, deadline + kSec, "publisher", &out);
    Tell(sub, 's');
    out.ok = GetReport(sub, &sub.final, deadline + 2 * kSec, "subscriber", &out) && out.ok;
  }
  if (broker.pid > 0 && metrics_port > 0) {
    std::string body = Scrape(metrics_port, std::min(deadline, MonoNs() + 5 * kSec));
    out.routed = Sample(body, "switchboard_broker_routed_total");
    out.delivered = Sample(body, "switchboard_broker_delivered_total");
    out.shed = Sample(body, "switchboard_broker_dropped_total{reason=\"shed\"}");
  }
  if (broker.pid > 0) ::kill(broker.pid, SIGTERM);
  Reap(broker, 5 * kSec);
  for (Proc* p : {&pub, &sub}) Tell(*p, 'q');
  for (Proc* p : {&pub, &sub}) Reap(*p, 2 * kSec);
  Finish(&out, sub.final, pub.final, o.messages);
  out.wakeups = sub.final.wakeups;
  if (out.shed > 0) out.error += " (broker shed " + Fmt(out.shed) + ")";
  out.cpu_s = {{"receiver", sub.cpu_s}, {"sender", pub.cpu_s}, {"broker", broker.cpu_s}};
  if (out.ok) fs::remove(log);
  return out;
}

// The keys of nodes a and b, made once per bench run by `switchboard keygen`.
struct PeerKeys {
  std::string file_a, public_a, file_b, public_b;
};

std::string Keygen(const Options& o, const std::string& file) {
  const std::string cmd = "'" + o.switchboard + "' keygen --secret-file '" + file + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return "";
  char line[128] = {};
  const bool got = std::fgets(line, sizeof line, p) != nullptr;
  const int st = ::pclose(p);
  std::string key = got ? line : "";
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  return st == 0 && key.size() == 40 ? key : "";
}

// Broker a (publisher's) and broker b (subscriber's), each in its
// namespace (--netns), linked as peers; every publish crosses the link once.
Outcome RunPeer(const Options& o, int payload, const Netns& ns, const PeerKeys& keys, bool curve,
                const std::string& dir, int run, uint64_t deadline) {
  Outcome out;
  Proc broker_a, broker_b, sub, pub;
  std::string endpoint_a, endpoint_b;
  int metrics_a = 0, metrics_b = 0;
  const uint64_t setup = std::min(deadline, MonoNs() + 15 * kSec);
  const std::string log_a = dir + "/peer-a-" + std::to_string(run) + ".log";
  const std::string log_b = dir + "/peer-b-" + std::to_string(run) + ".log";
  // The outbox to b bounded above the run: a publish is acked to its shard
  // once a's broker took it, not once b's shards have it (no backpressure
  // across nodes), so a publisher faster than the link could otherwise have
  // the oldest dropped (the subscriber would miss them).
  const std::string outbox = std::to_string(o.messages + o.outbox + o.window);
  const std::string at_a = "tcp://" + ns.addr_a + ":" + std::to_string(ns.port_a);
  const std::string at_b = "tcp://" + ns.addr_b + ":" + std::to_string(ns.port_b);
  auto args = [&](const std::string& self, const std::string& at, const std::string& key,
                  const std::string& other, const std::string& other_at,
                  const std::string& other_pub) {
    std::vector<std::string> a{"--node",
                               self,
                               "--cluster",
                               "bench",
                               "--peer-bind",
                               at,
                               "--curve-secret-file",
                               key,
                               "--peer",
                               other + "=" + other_at + "=" + other_pub,
                               "--peer-outbox-messages",
                               outbox,
                               "--peer-outbox-bytes",
                               "17179869184",
                               "--queue-max-bytes",
                               "17179869184"};
    if (!curve) {
      // The key file's two arguments become --insecure (the member's key
      // stays in --peer, unused without CURVE).
      const auto at_key = std::find(a.begin(), a.end(), "--curve-secret-file");
      at_key[0] = "--insecure";
      a.erase(at_key + 1);
    }
    return a;
  };
  // b's queue for the subscriber likewise: what the link brings ahead of
  // the subscriber waits there (a broker sheds past its bounds, by design).
  Options ob = o;
  if (ob.broker_queue > 0) ob.broker_queue = static_cast<int64_t>(o.messages + o.outbox + o.window);
  {
    InNetns in(ns.b);
    out.ok = in.ok() && StartBroker(ob, args("b", at_b, keys.file_b, "a", at_a, keys.public_a),
                                    log_b, setup, &broker_b, &endpoint_b, &metrics_b);
  }
  if (out.ok) {
    InNetns in(ns.a);
    out.ok = in.ok() && StartBroker(o, args("a", at_a, keys.file_a, "b", at_b, keys.public_b),
                                    log_a, setup, &broker_a, &endpoint_a, &metrics_a);
  }
  if (!out.ok) out.error = "a broker did not start; logs " + log_a + ", " + log_b;
  ShardConfig sc{o.messages, payload, endpoint_b, o.window, o.outbox, o.batch, deadline};
  ShardConfig pc = sc;
  pc.endpoint = endpoint_a;
  if (out.ok) {
    InNetns in(ns.b);
    if (in.ok()) sub = Fork([&sc](int ctl) { return Subscriber(ctl, sc); });
    out.ok = GetReport(sub, &sub.ready, setup, "subscriber", &out) && sub.ready.error[0] == 0;
  }
  if (out.ok) {
    InNetns in(ns.a);
    if (in.ok()) pub = Fork([&pc](int ctl) { return Publisher(ctl, pc); });
    out.ok = GetReport(pub, &pub.ready, setup, "publisher", &out) && pub.ready.error[0] == 0;
  }
  if (out.ok) {
    // a's broker forwards a broadcast only to a member interested in its
    // topic: b's interest (the subscriber's topic) has to have reached it.
    bool interested = false;
    while (!interested && MonoNs() < setup) {
      InNetns in(ns.a);
      const std::string body = Scrape(metrics_a, std::min(setup, MonoNs() + kSec));
      interested = Sample(body, "switchboard_broker_peer_interest_topics{peer=\"b\"}") >= 1;
      if (!interested) SleepNs(20'000'000);
    }
    out.ok = interested;
    if (!out.ok) out.error = "a's broker never learnt b's interest; logs " + log_a + ", " + log_b;
  }
  if (out.ok) {
    Tell(pub, 'g');
    out.ok = GetReport(pub, &pub.final, deadline + kSec, "publisher", &out);
    // Acked at a is not delivered at b: the subscriber stops on its own once
    // it has every message, or at the deadline (and fails).
    out.ok = GetReport(sub, &sub.final, deadline + 2 * kSec, "subscriber", &out) && out.ok;
  }
  if (broker_b.pid > 0 && metrics_b > 0) {
    InNetns in(ns.b);
    std::string body = Scrape(metrics_b, std::min(deadline, MonoNs() + 5 * kSec));
    out.shed = Sample(body, "switchboard_broker_dropped_total{reason=\"shed\"}");
  }
  for (Proc* b : {&broker_a, &broker_b}) {
    if (b->pid > 0) ::kill(b->pid, SIGTERM);
  }
  Reap(broker_a, 5 * kSec);
  Reap(broker_b, 5 * kSec);
  for (Proc* p : {&pub, &sub}) Tell(*p, 'q');
  for (Proc* p : {&pub, &sub}) Reap(*p, 2 * kSec);
  Finish(&out, sub.final, pub.final, o.messages);
  out.wakeups = sub.final.wakeups;
  if (out.shed > 0) out.error += " (broker b shed " + Fmt(out.shed) + ")";
  out.cpu_s = {{"receiver", sub.cpu_s},
               {"sender", pub.cpu_s},
               {"broker_a", broker_a.cpu_s},
               {"broker_b", broker_b.cpu_s}};
  if (out.ok) fs::remove(log_a), fs::remove(log_b);
  return out;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path();
  o.broker = (bin / "switchboard-broker").string();
  o.switchboard = (bin / "switchboard").string();
  CLI::App app{"bench-mesh-thr: broker throughput against raw libzmq and a plain relay"};
  app.add_option("--messages", o.messages, "messages per run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--payload-bytes", o.sizes, "payload sizes, one run set each (B[,B...])")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--runs", o.runs, "runs per size and mode (the median is reported)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  CLI::Option* modes =
      app.add_option("--modes", o.modes,
                     "modes to run (raw,raw-curve,relay,broker,peer,peer-plain)")
          ->delimiter(',')
          ->check(CLI::IsMember({"raw", "raw-curve", "relay", "broker", "peer", "peer-plain"}))
          ->capture_default_str();
  app.add_flag("--netns", o.netns,
               "raw and raw-curve across a veth pair between two network namespaces; "
               "needed by peer (root)");
  app.add_option("--subnet", o.subnet, "X of the veth pair's 10.78.X.0/24 (default: from the pid)")
      ->check(CLI::Range(0, 255));
  app.add_option("--window", o.window, "subscriber credit window (a shard's --credit-window)")
      ->check(CLI::Range(1u, 1u << 20))
      ->capture_default_str();
  app.add_option("--outbox", o.outbox, "publisher's unacknowledged limit (a shard's --max-outbox)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch", o.batch, "subscriber's read batch")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  app.add_option("--broker-queue", o.broker_queue,
                 "the broker's --queue-max-messages (default: outbox + window; 0: the "
                 "broker's own default)")
      ->check(CLI::Range(int64_t{0}, (int64_t{1} << 40) - 1));
  app.add_option("--broker", o.broker, "switchboard-broker to run")->capture_default_str();
  app.add_option("--switchboard", o.switchboard, "switchboard (its keygen) for peer")
      ->capture_default_str();
  app.add_option("--max-seconds", o.max_seconds, "bound on the whole bench")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  if (std::optional<int> exit = sb::ParseCommandLine(app, argc, argv)) return *exit;

  if (o.netns && modes->count() == 0) o.modes = {"raw-curve", "peer", "raw"};
  if (o.subnet < 0) o.subnet = 1 + ::getpid() % 250;
  if (o.broker_queue < 0) o.broker_queue = static_cast<int64_t>(o.outbox + o.window);
  sb::bench::KillChildrenOnSignal("bench-mesh-thr",
                                  "interrupted or over time, killed the children");
  alarm(static_cast<unsigned>(o.max_seconds) + 30);  // backstop over every deadline
  const uint64_t deadline = MonoNs() + static_cast<uint64_t>(o.max_seconds * 1e9);
  char tmpl[] = "/tmp/sb-mesh-thr-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  Netns ns;
  if (o.netns && !MakeNetns(o.subnet, &ns)) {
    std::fprintf(stderr, "bench-mesh-thr: cannot make the network namespaces (root? ip netns?)\n");
    return 1;
  }
  if (!o.netns) {
    ns.port_a = FreePort();
    ns.port_b = FreePort();
    if (ns.port_a == 0 || ns.port_b == 0 || ns.port_a == ns.port_b) {
      std::fprintf(stderr, "bench-mesh-thr: no free loopback ports for the peer sockets\n");
      return 1;
    }
  }
  PeerKeys keys;
  if (std::any_of(o.modes.begin(), o.modes.end(),
                  [](const std::string& m) { return m.starts_with("peer"); })) {
    keys.file_a = dir + "/a.key";
    keys.file_b = dir + "/b.key";
    keys.public_a = Keygen(o, keys.file_a);
    keys.public_b = Keygen(o, keys.file_b);
    if (keys.public_a.empty() || keys.public_b.empty()) {
      std::fprintf(stderr, "bench-mesh-thr: `%s keygen` failed\n", o.switchboard.c_str());
      RemoveNetns(ns);
      return 1;
    }
  }
  if (o.netns) {
    std::printf("netns %s (%s) and %s (%s), one veth pair\n", ns.a.c_str(), ns.addr_a.c_str(),
                ns.b.c_str(), ns.addr_b.c_str());
  }

  std::printf(
      "bench-mesh-thr: %llu messages per run, topic \"%s\", %d run(s); window %u, outbox "
      "%llu, batch %d, broker queue %s\n",
      static_cast<unsigned long long>(o.messages), kTopic, o.runs, o.window,
      static_cast<unsigned long long>(o.outbox), o.batch,
      o.broker_queue ? std::to_string(o.broker_queue).c_str() : "(broker default)");
  // results[size][mode] = one Outcome per run
  std::map<int, std::map<std::string, std::vector<Outcome>>> results;
  bool all_ok = true;
  for (int run = 1; run <= o.runs; ++run) {
    for (int size : o.sizes) {
      std::string line = "run " + std::to_string(run) + " payload " + std::to_string(size) + ":";
      std::map<std::string, double> rate;
      for (const std::string& mode : o.modes) {
        if (MonoNs() >= deadline) break;
        const Netns* across = o.netns && mode.starts_with("raw") ? &ns : nullptr;
        Outcome out = mode == "broker" ? RunBroker(o, size, dir, run, deadline)
                      : mode.starts_with("peer")
                          ? RunPeer(o, size, ns, keys, mode == "peer", dir, run, deadline)
                          : RunRaw(o, size, mode == "relay", mode == "raw-curve", across, deadline);
        all_ok = all_ok && out.ok;
        rate[mode] = out.msgs_per_s;
        line += "  " + mode + " " + Fmt(out.msgs_per_s) + " msg/s";
        if (!out.ok) line += " FAILED (" + out.error + ")";
        results[size][mode].push_back(out);
      }
      if (rate.count("raw") && rate["raw"] > 0) {
        for (const char* m : {"raw-curve", "relay", "broker", "peer", "peer-plain"}) {
          if (rate.count(m))
            line += "  " + std::string(m) + "/raw " + Fmt(rate[m] / rate["raw"], 3);
        }
      }
      if (rate.count("peer") && rate["raw-curve"] > 0) {
        line += "  peer/raw-curve " + Fmt(rate["peer"] / rate["raw-curve"], 3);
      }
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
  }

  // Summary: medians over runs; ratios are per run (same run's raw), then medians.
  std::string json =
      "{\"messages\":" + std::to_string(o.messages) + ",\"runs\":" + std::to_string(o.runs) +
      ",\"netns\":" + (o.netns ? "true" : "false") + ",\"window\":" + std::to_string(o.window) +
      ",\"outbox\":" + std::to_string(o.outbox) + ",\"batch\":" + std::to_string(o.batch) +
      ",\"broker_queue\":" + std::to_string(o.broker_queue) + ",\"results\":[";
  bool first_json = true;
  std::printf("\n%-8s %-9s %14s %10s %10s %11s  %s\n", "payload", "mode", "median msg/s", "MB/s",
              "ratio/raw", "/raw-curve", "CPU µs per message (median): per process");
  for (const auto& [size, modes] : results) {
    const double frame_bytes = 13.0 + sizeof kTopic - 1 + size;
    for (const auto& [mode, runs] : modes) {
      std::vector<double> rates, ratios, curve_ratios;
      std::map<std::string, std::vector<double>> cpu_us;
      std::vector<double> per_batch;
      for (size_t i = 0; i < runs.size(); ++i) {
        rates.push_back(runs[i].msgs_per_s);
        const auto raw = modes.find("raw");
        if (raw != modes.end() && i < raw->second.size() && raw->second[i].msgs_per_s > 0) {
          ratios.push_back(runs[i].msgs_per_s / raw->second[i].msgs_per_s);
        }
        const auto curve = modes.find("raw-curve");
        if (curve != modes.end() && mode != "raw-curve" && i < curve->second.size() &&
            curve->second[i].msgs_per_s > 0) {
          curve_ratios.push_back(runs[i].msgs_per_s / curve->second[i].msgs_per_s);
        }
        for (const auto& [who, s] : runs[i].cpu_s) {
          cpu_us[who].push_back(s * 1e6 / static_cast<double>(o.messages));
        }
        if (runs[i].wakeups > 0) {
          per_batch.push_back(static_cast<double>(o.messages) /
                              static_cast<double>(runs[i].wakeups));
        }
      }
      const double med = Median(rates);
      std::string cpu;
      for (const auto& [who, v] : cpu_us) cpu += who + " " + Fmt(Median(v), 2) + "  ";
      if (!per_batch.empty())
        cpu += "(deliveries per subscriber wake-up " + Fmt(Median(per_batch), 1) + ")";
      std::printf("%-8d %-9s %14s %10s %10s %11s  %s\n", size, mode.c_str(), Fmt(med).c_str(),
                  Fmt(med * frame_bytes / 1e6, 1).c_str(),
                  ratios.empty() ? "-" : Fmt(Median(ratios), 3).c_str(),
                  curve_ratios.empty() ? "-" : Fmt(Median(curve_ratios), 3).c_str(), cpu.c_str());
      json += std::string(first_json ? "" : ",") + "{\"payload_bytes\":" + std::to_string(size) +
              ",\"mode\":\"" + mode + "\",\"msgs_per_s\":[";
      for (size_t i = 0; i < rates.size(); ++i) json += (i ? "," : "") + Fmt(rates[i]);
      json += "],\"median_msgs_per_s\":" + Fmt(med) +
              ",\"median_mb_per_s\":" + Fmt(med * frame_bytes / 1e6, 2) + ",\"ratio_to_raw\":[";
      for (size_t i = 0; i < ratios.size(); ++i) json += (i ? "," : "") + Fmt(ratios[i], 3);
      json += "],\"ratio_to_raw_curve\":[";
      for (size_t i = 0; i < curve_ratios.size(); ++i) {
        json += (i ? "," : "") + Fmt(curve_ratios[i], 3);
      }
      json += "],\"cpu_us_per_msg\":{";
      bool first_cpu = true;
      for (const auto& [who, v] : cpu_us) {
        json += std::string(first_cpu ? "" : ",") + "\"" + who + "\":" + Fmt(Median(v), 3);
        first_cpu = false;
      }
      json += "}";
      if (!per_batch.empty()) json += ",\"deliveries_per_wakeup\":" + Fmt(Median(per_batch), 1);
      json += "}";
      first_json = false;
    }
  }
  json += "],\"ok\":" + std::string(all_ok ? "true" : "false") + "}";
  std::printf("%s\n", json.c_str());
  if (all_ok) fs::remove_all(dir);
  KillChildren();
  RemoveNetns(ns);
  return all_ok ? 0 : 1;
}
