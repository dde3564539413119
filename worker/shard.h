// Shard: one gateway shard, wired — the place where a loop turn's order is
// decided.
//
// Owns: the Hub (channel decisions), the Gateway (client sockets), and in a
// cluster the ClusterSession (the mesh protocol) with its BrokerLink (the
// DEALER socket). It is the one caller of each: a client's WebSocket
// message is decoded here (protocol/phoenix) and handed to the hub; the
// hub's actions are performed here (to sockets through the gateway, to the
// broker through the session); another shard's broadcast or presence comes
// from the session and goes to the hub, which decides who receives it. It
// also owns the loop's hooks: BeforeSleep (the end of a turn: the broker
// first, then the counters, then client sockets) and Cron (housekeeping), the
// session's timer, and the drain (clients closed, then the outbox acked).
// docs/ARCHITECTURE.md, "Life of a broadcast", follows one message through
// it. The HTTP API's requests (worker/http_api) are performed here too: a
// publish goes the way a client's broadcast goes, and a presence query for a
// topic without local subscribers subscribes on the broker until its
// snapshot answers (at most kApiPresenceWaitMs). Runs on the shard's loop thread; main owns the
// Shard; the loop and metrics outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "worker/broker_link.h"
#include "worker/cluster_session.h"
#include "worker/gateway.h"
#include "worker/handoff_transfer.h"
#include "worker/history.h"
#include "worker/http_api.h"
#include "worker/hub.h"
#include "worker/worker_metrics.h"

namespace sb::worker {

struct ShardOptions {
  GatewayOptions gateway;
  HubLimits hub;
  std::string ref_prefix;  // see Hub
  // The node's broker (tcp:// or ipc://); empty: a shard on its own.
  std::string broker_endpoint;
  ClusterOptions cluster;
  // Topics that keep history (cluster only: the broker sequences them).
  HistoryOptions history;
};

class Shard : private Gateway::Listener, private ClusterSession::Handler, private ClusterView {
 public:
  // Serves `listen_fd` (non-blocking, listening; not owned) on `loop`, and
  // connects to options.broker_endpoint when set. `adopted`: the shard-wide
  // state the process this one replaces handed over (docs/UPGRADE.md) —
  // its hub, history positions and broker session restored
  // (options.cluster must then carry the state's shard, instance and
  // token); its connections then come through Adopt, chunk by chunk, and
  // FinishAdoption starts the broker session, so the first hello is the old
  // process's. Refused if the shard-wide state cannot be taken.
  static Result<std::unique_ptr<Shard>> Create(EventLoop* loop, int listen_fd, ShardOptions options,
                                               WorkerMetrics* metrics,
                                               const handoff::Session* adopted = nullptr);
  ~Shard() override;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Closes every client socket with 1012 (Gateway::Drain), refuses new
  // broadcasts, and calls `done` once the sockets are gone and, in a
  // cluster, the broker has acked the whole outbox — or once
  // gateway.shutdown_timeout has passed since the call, whatever is left.
  // `done`'s argument: how many broadcasts answered ok were left unacked
  // (logged; they are lost with the process).
  void Drain(std::function<void(size_t unacked)> done);
  size_t connections() const { return gateway_->connections(); }

  // --- Hand-off to a new process (docs/UPGRADE.md), the old process's side.
  // Whether it can go now: nothing waits on the broker that only this
  // process could answer (history joins parked for their stream's position,
  // own sequenced broadcasts not yet delivered back, API requests waiting)
  // and no drain has begun. If not, the caller tries again shortly.
  bool ReadyToHandOff() const;
  struct HandoffPlan {
    handoff::Session session;
    std::vector<ConnId> connections;  // the ones that move, in the order to send
  };
  // Before BeginHandOff, while serving on: the connections that would move
  // now, and the fd of one while it still would (-1 once it would not), so
  // their fds can go ahead of their state.
  std::vector<ConnId> MovingConnections() const;
  int MovingFd(ConnId conn) const;
  // Finishes what must be finished first (joiners waiting for the other
  // shards' presence get it now, the broker's credit and this turn's
  // publishes go, every queue is written as far as the kernel takes it),
  // then reads the shard-wide state out and lists the connections that
  // move. Changes nothing else: if the hand-off fails, serving goes on as
  // before.
  HandoffPlan BeginHandOff();
  // The state of `ids` (from the plan, in the same loop turn), connection
  // i's fd in (*fds)[i], still owned here. Appends to both.
  void ExportConnections(std::span<const ConnId> ids, std::vector<handoff::Connection>* out,
                         std::vector<int>* fds) const;
  // After the new process acknowledged: every socket is its own. Nothing
  // more is written to clients or sent to the broker, nor accepted; the
  // caller exits at once, without another loop turn and without tearing the
  // connections down one by one (35-50 ms at 10,000 connections, which
  // `switchboard upgrade` waited for): its exit drops its copies of the fds.
  void HandedOff();

  // --- The new process's side (Create with the session first): a chunk's
  // connections, each with its fd, adopted as they come (nothing is written
  // to them before the loop runs, so a refused hand-off touched none); a
  // connection that cannot be adopted is closed and logged, not counted in
  // adopted(). Each fd was prepared (Gateway::PrepareAdoption); one that
  // could not be (closed, -1) is passed by.
  void Adopt(std::span<handoff::Connection> connections, std::span<UniqueFd> fds);
  // Every chunk is in: streams whose position did not move are synced, and
  // the broker session starts.
  void FinishAdoption();
  size_t adopted() const { return adopted_; }

 private:
  Shard(EventLoop* loop, ShardOptions options, WorkerMetrics* metrics);

  // Gateway::Listener: the client side.
  void OnOpen(ConnId conn, std::optional<Identity> identity) override;
  void OnMessage(ConnId conn, bool binary, std::string_view payload) override;
  void OnClosed(ConnId conn) override;
  void OnApiRequest(ConnId conn, ApiRequest request) override;

  // The API's side.
  void ApiPublish(ConnId conn, const ApiRequest& r);
  void ApiPresence(ConnId conn, const ApiRequest& r);
  // Answers the presence queries waiting for `topic` with `state` (a
  // presence_state JSON), or 503 when `state` is null; then drops the
  // broker subscription made for them if no local subscriber needs it.
  void AnswerPresence(const std::string& topic, const std::string* state);
  void ExpirePresenceQueries(int64_t now_ms);

  // ClusterSession::Handler: the broker side.
  void ClusterState(std::vector<std::string>* topics,
                    std::vector<mesh::TopicState>* presence) override;
  void Deliver(std::string_view topic, std::string_view message, bool binary,
               uint64_t stamp) override;
  void RemotePresence(std::string_view topic, std::string_view json, bool snapshot) override;
  void DeliverSequenced(std::string_view topic, const mesh::Message& msg) override;
  void History(const mesh::Message& msg) override;
  void Welcomed() override;
  void SequencedAcked(uint64_t seq) override;
  void HistoryState(std::vector<mesh::StreamPosition>* positions,
                    std::vector<std::string>* restates, size_t max_bytes) override;

  // History (worker/shard_history.cc).
  void AwaitSequenced(uint64_t seq, const Action& a);
  void JoinHistory(const Action& a);
  void PerformHistory(std::vector<HistoryAction>& actions);
  void DeliverInOrder(const std::string& topic, const Sequenced& entry);
  void AnswerJoin(const HistoryAction& h);
  // Answers the sender of this shard's own `entry` (its push's ok, or its
  // API publish); returns the sender's socket (0: none, or an API publish).
  ConnId AnswerOwn(const std::string& topic, const Sequenced& entry);
  void AnswerDroppedOwn();
  // One of API publish `api`'s topics is sequenced (`entry`; null: acked
  // without a position, a keyed repeat): answered once all are.
  void SequencedForApi(uint64_t api, const std::string& topic, const Sequenced* entry);
  void FailApiPublish(uint64_t api);
  void ApiHistory(ConnId conn, const ApiRequest& r);
  void AnswerApiHistory(const mesh::Message& msg, const std::vector<Sequenced>& entries);
  void ExpireApiHistory(int64_t now_ms);

  // ClusterView: what the hub asks of the session.
  bool up() const override { return session_->up(); }
  bool CanPublish(size_t bytes) const override { return !draining_ && session_->CanPublish(bytes); }

  // Performs the hub's actions. `read_ns`: when the client message that
  // caused them was read (0: not a client's message), for the latency clock.
  void Perform(const std::vector<Action>& actions, int64_t read_ns);
  // BeforeSleep: credit and publishes to the broker, the counters, then
  // every client socket's queue, then the turn's latencies.
  void EndOfTurn();
  void Cron();
  // The session's timer: heartbeats, the broker's liveness, hellos.
  void Tick();
  void PublishMetrics();
  // Calls the drain's `done` if everything it waits for is over.
  void MaybeFinishDrain();

  EventLoop* loop_;
  ShardOptions opt_;
  WorkerMetrics* metrics_;
  WorkerCounters& counters_;
  Hub hub_;
  std::unique_ptr<BrokerLink> link_;         // null unless clustered
  std::unique_ptr<ClusterSession> session_;  // null unless clustered
  EventLoop::TimerId tick_timer_ = 0;
  std::unique_ptr<Gateway> gateway_;         // last: its sockets close before the rest goes
  std::vector<int64_t> turn_broadcasts_ns_;  // read times of this turn's client broadcasts
  // Publish stamps (Unix ns) of this turn's deliveries from other shards,
  // and of this shard's own sequenced broadcasts (history topics).
  std::vector<uint64_t> turn_cluster_stamps_;
  std::vector<uint64_t> turn_sequenced_stamps_;
  uint64_t cron_ticks_ = 0;
  bool draining_ = false;
  bool welcomed_ = false;    // the broker session has been up in this process
  bool handed_off_ = false;  // HandedOff: the process is about to exit
  size_t adopted_ = 0;
  // Create's part for a hand-off's shard-wide state.
  Status AdoptSession(const handoff::Session& session);
  bool clients_gone_ = false;  // the gateway's drain is over
  int64_t drain_deadline_ms_ = 0;
  std::function<void(size_t)> drained_;  // Drain's `done`, until called

 public:
  // How long a presence query waits for the broker's snapshot: as long as
  // a joiner waits for its presence_state (Hub::kStateWaitMs).
  static constexpr int64_t kApiPresenceWaitMs = Hub::kStateWaitMs;

 private:
  IdempotencyTable idempotency_;
  struct PresenceQuery {
    ConnId conn;
    int64_t deadline_ms;
  };
  // Queries waiting for a topic's snapshot, and whether the shard
  // subscribed on the broker for them (the topic had no local subscriber).
  struct PresenceWait {
    std::vector<PresenceQuery> queries;
    bool subscribed = false;
  };
  std::unordered_map<std::string, PresenceWait> presence_waits_;

  // --- History ---
  std::unique_ptr<HistoryStreams> history_;  // null unless topics keep history
  // This shard's broadcasts on history topics, by seq, until the broker
  // delivers them back sequenced: whom to answer then.
  struct OwnPublish {
    ConnId conn = 0;  // 0: an API publish
    std::string topic;
    std::optional<std::string> join_ref;
    std::optional<std::string> ref;
    uint64_t api = 0;  // the API publish it belongs to, if any
    // As the broker delivered it back, while the stream holds it for its
    // turn (a gap before it is being fetched).
    std::shared_ptr<const Sequenced> sequenced;
  };
  std::unordered_map<uint64_t, OwnPublish> own_;
  // Joins of history topics waiting for HistoryStreams' answer, and the
  // joiner's actions (its presence_state) that must come after it.
  struct ParkedJoin {
    ConnId conn;
    std::string topic;
    std::optional<std::string> join_ref;
    std::optional<std::string> ref;
    std::vector<Action> deferred;
  };
  std::unordered_map<uint64_t, ParkedJoin> parked_;
  uint64_t next_join_ = 1;
  // API publishes waiting for their history topics' offsets.
  struct ApiPublishWait {
    ConnId conn = 0;
    ApiEndpoint endpoint = ApiEndpoint::kPublish;
    size_t remaining = 0;
    std::string positions;  // the answer's offsets so far
    std::optional<std::string> key;
  };
  std::unordered_map<uint64_t, ApiPublishWait> api_publishes_;
  uint64_t next_api_ = 1;
  uint64_t api_context_ = 0;  // the API publish being performed, 0 otherwise
  // /api/history requests waiting for the broker's answer, by fetch id.
  struct ApiHistoryWait {
    ConnId conn;
    int64_t deadline_ms;
  };
  std::unordered_map<uint64_t, ApiHistoryWait> api_history_;
  uint64_t next_api_fetch_ = 1;

 public:
  // How long /api/history waits for the broker.
  static constexpr int64_t kApiHistoryWaitMs = 5000;
};

}  // namespace sb::worker
