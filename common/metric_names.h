// Metric names: the one definition of every Prometheus metric and label name
// Switchboard exports, and the meaning each series must keep.
//
// Owns: names, label names and histogram buckets only; no registry, no I/O,
// no threads. The three exporters (supervisor/supervisor_metrics,
// worker/worker_metrics, broker/mesh_server) build their families from
// these, so dashboards and alerts read one scheme. Prometheus conventions:
// `switchboard_` prefix, base units (seconds, bytes), `_total` only on
// counters.
#pragma once

#include <array>
#include <string_view>

namespace sb::metrics {

// --- Label names -----------------------------------------------------------

// On every switchboard_ series: NodeSpec::name ("node1").
inline constexpr std::string_view kLabelNode = "node";
// Child id, unique across the tree; replicas are "<set>.<index>" ("shard.0").
inline constexpr std::string_view kLabelChild = "child";
// Path of supervisor ids from the root to the supervisor in question, joined
// by '/' ("root/shards"). On child series: the child's own supervisor. On
// supervisor series: that supervisor itself, so the two join on this label.
inline constexpr std::string_view kLabelSupervisor = "supervisor";
// On kChildExitsTotal: kReasonNormal or kReasonAbnormal.
inline constexpr std::string_view kLabelReason = "reason";
inline constexpr std::string_view kReasonNormal = "normal";      // status 0 / success_exit_codes
inline constexpr std::string_view kReasonAbnormal = "abnormal";  // any other status, any signal

// --- Every process that serves metrics -------------------------------------

// Gauge, always 1, labels version and commit (common/build_info.h): what the
// process was built from, the Prometheus `_build_info` convention. Exported
// by the daemon (with node), each shard (with shard) and the broker; the
// `child` label comes from the daemon's file_sd targets. During a rolling
// upgrade two versions show side by side.
inline constexpr std::string_view kBuildInfo = "switchboard_build_info";
inline constexpr std::string_view kLabelVersion = "version";
inline constexpr std::string_view kLabelCommit = "commit";
inline constexpr std::string_view kBuildInfoHelp =
    "Always 1: the version and build commit of this process";

// --- Per child (labels node, child, supervisor) ----------------------------

// Gauge, 0 or 1: 1 from the child's `ready` event until it exits or is
// stopped; 0 while it starts, restarts or is stopped, and 0 for a declared
// child that has not been ready yet.
inline constexpr std::string_view kChildUp = "switchboard_child_up";
// Counter: restarts a supervisor decided for this child (`restarting`
// events). A one_for_all/rest_for_one group restart counts once for every
// child it starts again; a retry after a failed start counts again.
inline constexpr std::string_view kChildRestartsTotal = "switchboard_child_restarts_total";
// Histogram, seconds: from `started` (exec done) to `ready` (READY=1, or at
// once for `ready: exec`) of each start that became ready. Starts that failed
// or were stopped before ready are not observed.
inline constexpr std::string_view kChildStartDurationSeconds =
    "switchboard_child_start_duration_seconds";
// Buckets for kChildStartDurationSeconds: 0.5 ms to 30 s (+Inf is implicit).
inline constexpr std::array<double, 15> kChildStartDurationBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
// Gauge: how the child's last process ended, as a shell reports it: the exit
// status (0-255), or 128 + signal number when a signal ended it (137 for
// SIGKILL). -1 until the first exit. Kept while the next incarnation runs.
inline constexpr std::string_view kChildLastExitStatus = "switchboard_child_last_exit_status";
// Counter with label `reason`: processes of this child that ended, split by
// OTP exit reason. normal = status 0 or a success_exit_codes entry, any end
// after its supervisor began stopping it (OTP's `shutdown`), and a
// sub-supervisor that gave up; abnormal = everything else.
inline constexpr std::string_view kChildExitsTotal = "switchboard_child_exits_total";
// Counter with label `result`: hand-offs of this child to a new process
// (`switchboard upgrade`, docs/UPGRADE.md) that ended with `upgraded`
// (kResultOk) or `upgrade_failed` (kResultFailed).
inline constexpr std::string_view kChildUpgradesTotal = "switchboard_child_upgrades_total";
// Its label is kLabelResult (declared with the worker's joins below).
inline constexpr std::string_view kResultOk = "ok";
inline constexpr std::string_view kResultFailed = "failed";

// --- Per supervisor (labels node, supervisor) ------------------------------

// Gauge: restart attempts counted in the supervisor's current intensity
// window (those within the last `period`), as of the last sample. Once it
// equals kSupervisorIntensity, one more restart makes the supervisor give up.
inline constexpr std::string_view kSupervisorRestartsInWindow =
    "switchboard_supervisor_restarts_in_window";
// Gauge: the supervisor's configured `intensity` (the limit above), exported
// so a panel or alert can compare the two without reading the YAML.
inline constexpr std::string_view kSupervisorIntensity = "switchboard_supervisor_intensity";
// Counter: times this supervisor exceeded its intensity (`gave_up` events).
inline constexpr std::string_view kSupervisorGaveUpTotal = "switchboard_supervisor_gave_up_total";

// --- The daemon itself (label node) ----------------------------------------

// Gauge: file descriptors the daemon process has open (/proc/self/fd),
// sampled by the daemon's housekeeping (Cron) hook, not at scrape time.
inline constexpr std::string_view kDaemonOpenFds = "switchboard_daemon_open_fds";
// Gauge, bytes: the daemon's resident set size (/proc/self/statm), sampled
// with kDaemonOpenFds.
inline constexpr std::string_view kDaemonResidentMemoryBytes =
    "switchboard_daemon_resident_memory_bytes";
// Gauge, seconds: how late the event loop ran its most recent due timer
// (run time minus deadline, EventLoop::last_timer_lag()), as of the last
// sample. A busy or blocked loop shows here; an idle one stays near 0.
inline constexpr std::string_view kEventLoopLagSeconds = "switchboard_event_loop_lag_seconds";
// Counter: events the supervisor daemon could not write to its events file
// (node.events) because the file would not take the whole line (disk full, a
// file size limit, an I/O error). Each is a line missing from the file, never
// a partial one; followers of the control socket's event stream still got it.
inline constexpr std::string_view kEventsWriteFailuresTotal =
    "switchboard_events_write_failures_total";
// Gauge, always 1, labels socket and mode: what spreads the connections of
// each socket declared under `sockets:`. mode is "shared" (one socket every
// child naming it accepts from), "round_robin" (one SO_REUSEPORT member per
// replica, picked in turn by the daemon's eBPF program) or "reuseport_hash"
// (round_robin asked for, but the kernel refused the program: members are
// picked by the kernel's hash of each connection's addresses; the daemon's
// log says why). An alert on mode="reuseport_hash" finds a lost turn.
inline constexpr std::string_view kSocketBalanceInfo = "switchboard_socket_balance_info";
inline constexpr std::string_view kLabelSocket = "socket";
inline constexpr std::string_view kLabelMode = "mode";

// --- Gateway shard (switchboard-worker; label shard) -------------------------
// Counters and gauges are read at scrape time from the shard's own atomics,
// so a scrape always sees the current values.

inline constexpr std::string_view kLabelShard = "shard";
// Gauge: open WebSocket connections (upgraded, not yet closed).
inline constexpr std::string_view kWorkerConnections = "switchboard_worker_connections";
// Counter: TCP connections accepted (before the HTTP upgrade), those closed
// at once for their address's limit included.
inline constexpr std::string_view kWorkerConnectionsAcceptedTotal =
    "switchboard_worker_connections_accepted_total";
// Gauge: TCP connections the shard holds in any state (HTTP handshake, open
// WebSocket, closing); --max-connections + 64 at most.
inline constexpr std::string_view kWorkerSockets = "switchboard_worker_sockets";
// Counter, label reason: HTTP requests answered without an upgrade.
// not_found, bad_request, method_not_allowed, forbidden (bad vsn),
// forbidden_origin (Origin check), unauthorized (token), overloaded (max
// connections), draining, timeout (no complete request within the handshake
// timeout), address_limit (closed at accept: the address holds
// --max-connections-per-ip sockets; no HTTP answer). /healthz is not counted.
inline constexpr std::string_view kWorkerUpgradesRefusedTotal =
    "switchboard_worker_upgrades_refused_total";
// Counter, label reason: the unauthorized refusals above, by the token check
// that failed: missing, malformed, algorithm, signature, claims (a required
// claim missing or mistyped), expired, not_yet_valid (nbf), audience,
// issuer, error (the shard could not check it). The client is not told.
inline constexpr std::string_view kWorkerTokenRefusalsTotal =
    "switchboard_worker_token_refusals_total";
// Counter, label status: requests answered from --static files, by the
// HTTP status of the answer: 200, 304, 400, 403, 404, 405, 500 (every value
// always present). Not in upgrades_refused_total: none of them asked for
// a WebSocket.
inline constexpr std::string_view kWorkerStaticRequestsTotal =
    "switchboard_worker_static_requests_total";
inline constexpr std::string_view kLabelStatus = "status";
// Counter, label result: phx_join requests and their outcome: ok, or refused
// as unauthorized, too_many_topics, invalid_topic, invalid_presence, rate_limited,
// presence_too_large (over --max-presence-meta).
inline constexpr std::string_view kWorkerJoinsTotal = "switchboard_worker_joins_total";
inline constexpr std::string_view kLabelResult = "result";
// Counters: WebSocket messages (data and control) and bytes, both ways.
// Bytes count everything on the socket, HTTP included.
inline constexpr std::string_view kWorkerFramesReceivedTotal =
    "switchboard_worker_frames_received_total";
inline constexpr std::string_view kWorkerFramesSentTotal = "switchboard_worker_frames_sent_total";
inline constexpr std::string_view kWorkerReceivedBytesTotal =
    "switchboard_worker_received_bytes_total";
inline constexpr std::string_view kWorkerSentBytesTotal = "switchboard_worker_sent_bytes_total";
// Counter: client events relayed to a topic (one per accepted publish).
inline constexpr std::string_view kWorkerBroadcastsTotal = "switchboard_worker_broadcasts_total";
// Counter: broadcast frames queued to a recipient socket (one per recipient;
// presence diffs included).
inline constexpr std::string_view kWorkerDeliveriesTotal = "switchboard_worker_deliveries_total";
// Counter, label reason: WebSocket connections closed, by why.
inline constexpr std::string_view kWorkerClosesTotal = "switchboard_worker_closes_total";
// Counter, label reason: client messages refused or dropped without closing
// the socket (rate_limited, unmatched_topic, reserved_event, stale_join_ref).
inline constexpr std::string_view kWorkerRejectedMessagesTotal =
    "switchboard_worker_rejected_messages_total";
// Gauges, bytes: the client outbound queues (frames waiting for the kernel to
// take them, each with its per-frame overhead, and the queues' slots: the
// memory --max-outbound bounds, presence states owed to joiners included):
// their sum over all sockets, and the largest one (sampled every
// housekeeping tick, 250 ms). A slow consumer shows in the second.
inline constexpr std::string_view kWorkerClientQueueBytes = "switchboard_worker_client_queue_bytes";
inline constexpr std::string_view kWorkerClientQueueMaxBytes =
    "switchboard_worker_client_queue_max_bytes";
// Gauge: client sockets whose kernel send buffer is full, so that their
// frames wait in the shard's queue (current, not sampled). A client that
// reads shows here for a moment; one that stays is a slow consumer
// forming, closed at --max-outbound or after --idle-timeout without
// progress.
inline constexpr std::string_view kWorkerBlockedSockets = "switchboard_worker_blocked_sockets";
// Histogram, seconds: from reading a client's message to handing its
// broadcast frame to the kernel (or to the queue of a socket whose kernel
// buffer is full) for every recipient on this shard. Label `source`:
// "local" (read on this shard) or "cluster" (read on another shard, whose
// stamp the delivery carried: the whole publish → deliver path).
inline constexpr std::string_view kWorkerDeliverLatencySeconds =
    "switchboard_worker_deliver_latency_seconds";
inline constexpr std::array<double, 14> kWorkerDeliverLatencyBuckets = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25};
// Gauge, bytes: the shard's resident set size (sampled every housekeeping tick).
inline constexpr std::string_view kWorkerResidentMemoryBytes =
    "switchboard_worker_resident_memory_bytes";

// --- Queues: every queue of the design, by process (docs/METRICS.md) ---
// Depth in messages and in bytes; `queue` names the queue, `peer` the other
// end where there is one (the broker's shard_out queues: the shard's name).
inline constexpr std::string_view kQueueDepth = "switchboard_queue_depth";
inline constexpr std::string_view kQueueDepthBytes = "switchboard_queue_depth_bytes";
inline constexpr std::string_view kLabelQueue = "queue";
inline constexpr std::string_view kLabelPeer = "peer";
inline constexpr std::string_view kQueueShardOut =
    "shard_out";  // broker → one shard, waiting for credit
inline constexpr std::string_view kQueuePresencePending =
    "presence_pending";  // broker → one shard: presence changes merged, not queued yet (metas)
inline constexpr std::string_view kQueueBrokerOut =
    "broker_out";  // shard → broker, unacked publishes
inline constexpr std::string_view kQueueBrokerIn =
    "broker_in";  // broker → shard, consumed not yet credited
inline constexpr std::string_view kQueueClientOut = "client_out";  // shard → its client sockets
inline constexpr std::string_view kQueuePeerOut =
    "peer_out";  // broker → one member node, unacked (its outbox)
inline constexpr std::string_view kQueuePeerIn =
    "peer_in";  // member node → broker, taken, local shards not done yet
// Enqueue → send delay of the broker's shard_out queues.
inline constexpr std::string_view kQueueDelaySeconds = "switchboard_queue_delay_seconds";
inline constexpr std::array<double, 14> kQueueDelayBuckets = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    1.0};

// --- Broker ---
inline constexpr std::string_view kBrokerRoutedTotal = "switchboard_broker_routed_total";
inline constexpr std::string_view kBrokerPublishesTotal = "switchboard_broker_publishes_total";
inline constexpr std::string_view kBrokerIdempotentRepeatsTotal =
    "switchboard_broker_idempotent_repeats_total";
inline constexpr std::string_view kBrokerDeliveredTotal = "switchboard_broker_delivered_total";
inline constexpr std::string_view kBrokerDroppedTotal = "switchboard_broker_dropped_total";
inline constexpr std::string_view kBrokerRefusedFramesTotal =
    "switchboard_broker_refused_frames_total";
inline constexpr std::string_view kBrokerPresenceMessagesTotal =
    "switchboard_broker_presence_messages_total";
inline constexpr std::string_view kBrokerLinkEventsTotal = "switchboard_broker_link_events_total";
inline constexpr std::string_view kBrokerRequeuedTotal = "switchboard_broker_requeued_total";
inline constexpr std::string_view kBrokerHelloEntriesDroppedTotal =
    "switchboard_broker_hello_entries_dropped_total";
// How the broker's settle window ended (end: all_hello, timeout): one
// window per broker process, so each new broker counts 0 or 1.
inline constexpr std::string_view kBrokerSettlesTotal = "switchboard_broker_settles_total";
inline constexpr std::string_view kLabelEnd = "end";
inline constexpr std::string_view kLabelEvent = "event";
inline constexpr std::string_view kLabelKind = "kind";
// History: a --history rule's pattern ("default" for topics no rule names).
inline constexpr std::string_view kLabelFamily = "family";
inline constexpr std::string_view kBrokerTopics = "switchboard_broker_topics";
inline constexpr std::string_view kBrokerSubscriptions = "switchboard_broker_subscriptions";
inline constexpr std::string_view kBrokerPresences = "switchboard_broker_presences";
inline constexpr std::string_view kBrokerConnectedShards = "switchboard_broker_connected_shards";
inline constexpr std::string_view kBrokerEpoch = "switchboard_broker_epoch";
inline constexpr std::string_view kBrokerCredit = "switchboard_broker_credit";
inline constexpr std::string_view kBrokerInFlight = "switchboard_broker_in_flight";
// History (docs/PROTOCOL.md, History): what the broker holds, and what it did.
inline constexpr std::string_view kBrokerHistoryTopics = "switchboard_broker_history_topics";
inline constexpr std::string_view kBrokerHistoryMessages = "switchboard_broker_history_messages";
inline constexpr std::string_view kBrokerHistoryBytes = "switchboard_broker_history_bytes";
inline constexpr std::string_view kBrokerHistorySequencedTotal =
    "switchboard_broker_history_sequenced_total";
inline constexpr std::string_view kBrokerHistoryResequencedTotal =
    "switchboard_broker_history_resequenced_total";
inline constexpr std::string_view kBrokerHistoryFetchesTotal =
    "switchboard_broker_history_fetches_total";
inline constexpr std::string_view kBrokerHistoryEvictedTotal =
    "switchboard_broker_history_evicted_total";
inline constexpr std::string_view kBrokerHistoryRestatedTotal =
    "switchboard_broker_history_restated_total";
inline constexpr std::string_view kBrokerHistoryStreamConflictsTotal =
    "switchboard_broker_history_stream_conflicts_total";
inline constexpr std::string_view kBrokerHistoryUnconfiguredTopicsTotal =
    "switchboard_broker_history_unconfigured_topics_total";
// History across nodes (docs/CLUSTER.md): the nodes ownership is computed
// over and how often that set changed; sequenced publishes and fetches sent
// to another node's broker (the topic's owner), publishes sequenced here for
// other nodes, messages taken as copies of an owner's stream, and topics
// this broker started a new epoch for because their owner changed to it.
inline constexpr std::string_view kBrokerHistoryOwnerNodes =
    "switchboard_broker_history_owner_nodes";
inline constexpr std::string_view kBrokerHistoryOwnerChangesTotal =
    "switchboard_broker_history_owner_changes_total";
inline constexpr std::string_view kBrokerHistorySequenceForwardedTotal =
    "switchboard_broker_history_sequence_forwarded_total";
inline constexpr std::string_view kBrokerHistoryFetchesForwardedTotal =
    "switchboard_broker_history_fetches_forwarded_total";
inline constexpr std::string_view kBrokerHistorySequencedForPeersTotal =
    "switchboard_broker_history_sequenced_for_peers_total";
inline constexpr std::string_view kBrokerHistoryCopiedTotal =
    "switchboard_broker_history_copied_total";
inline constexpr std::string_view kBrokerHistoryTakenOverTotal =
    "switchboard_broker_history_taken_over_total";
inline constexpr std::string_view kBrokerHistoryNotOwnerDroppedTotal =
    "switchboard_broker_history_not_owner_dropped_total";
// Membership (docs/CLUSTER.md): the other nodes this broker knows, what
// changed (event: joined, left, changed), records skipped as malformed, and
// with --membership etcd whether etcd is reachable and watched (0/1).
inline constexpr std::string_view kBrokerMembers = "switchboard_broker_members";
inline constexpr std::string_view kBrokerMembershipChangesTotal =
    "switchboard_broker_membership_changes_total";
inline constexpr std::string_view kBrokerMembershipBadRecordsTotal =
    "switchboard_broker_membership_bad_records_total";
inline constexpr std::string_view kBrokerEtcdUp = "switchboard_broker_etcd_up";

// --- The broker's peer socket (--peer-bind: other nodes' brokers) ---
// Counter with label `reason`: CURVE handshakes on the peer socket its ZAP
// handler refused — unknown_key (not a member's), mechanism (not CURVE),
// malformed (a request it could not read). Every series from the start.
inline constexpr std::string_view kBrokerPeerAuthFailuresTotal =
    "switchboard_broker_peer_auth_failures_total";
// Counter with label `result`: messages read on the peer socket — hello (a
// link's hello accepted), heartbeat (answered), refused (a hello whose node
// is not the member its key was admitted for, or from another cluster),
// unhandled (anything else: read and dropped).
inline constexpr std::string_view kBrokerPeerMessagesTotal =
    "switchboard_broker_peer_messages_total";
inline constexpr std::string_view kResultHello = "hello";
inline constexpr std::string_view kResultHeartbeat = "heartbeat";
inline constexpr std::string_view kResultRefused = "refused";
inline constexpr std::string_view kResultUnhandled = "unhandled";
// A kPeerData from a welcomed link, handed to the router.
inline constexpr std::string_view kResultData = "data";
// Gauge with label `peer`: 1 while the inbound link from that member (its
// uplink to this peer socket) is welcomed and heard from within 3 heartbeats.
inline constexpr std::string_view kBrokerPeerInboundUp = "switchboard_broker_peer_inbound_up";
// The uplinks, one per member (label `peer`, the member's name). Gauge: 1
// while the uplink is welcomed and heard from within 3 heartbeats.
inline constexpr std::string_view kBrokerPeerUp = "switchboard_broker_peer_up";
// Gauge, seconds: the uplink's last heartbeat round trip (absent before the first).
inline constexpr std::string_view kBrokerPeerRttSeconds = "switchboard_broker_peer_rtt_seconds";
// Counter: times the uplink went down (silent for 3 heartbeats, its
// connection closed, or the member changed).
inline constexpr std::string_view kBrokerPeerLinkDownsTotal =
    "switchboard_broker_peer_link_downs_total";
// Gauge: connections on the peer socket whose handshake succeeded and that
// have not closed (with CURVE: admitted members' connections).
inline constexpr std::string_view kBrokerPeerConnections = "switchboard_broker_peer_connections";
// Routing between nodes (label `peer`). Gauges: what the member's outbox
// holds — sent or not, unacked — in messages and bytes (--peer-outbox-messages,
// --peer-outbox-bytes bound them).
inline constexpr std::string_view kBrokerPeerQueueMessages =
    "switchboard_broker_peer_queue_messages";
inline constexpr std::string_view kBrokerPeerQueueBytes = "switchboard_broker_peer_queue_bytes";
// Gauges: the link's credit — messages the member's outbox still takes before
// its oldest are dropped (PeerOutbox::credit) — and what is in flight: handed
// to the uplink's connection and not yet acked.
inline constexpr std::string_view kBrokerPeerCredit = "switchboard_broker_peer_credit";
inline constexpr std::string_view kBrokerPeerInFlight = "switchboard_broker_peer_in_flight";
// Counter with label `direction`: kPeerData handed to the member's uplink
// (out, resends included) and taken from it (in, duplicates excluded).
inline constexpr std::string_view kBrokerPeerRoutedTotal = "switchboard_broker_peer_routed_total";
inline constexpr std::string_view kLabelDirection = "direction";
// Counter with label `reason`: messages of a node-to-node stream lost or
// refused — outbox_full (the oldest, dropped from this node's outbox to the
// member), duplicate (from the member, already taken), gap (from the member:
// seqs it skipped, dropped from its outbox).
inline constexpr std::string_view kBrokerPeerDroppedTotal = "switchboard_broker_peer_dropped_total";
// Gauge: topics the member said its shards subscribe (its interest).
inline constexpr std::string_view kBrokerPeerInterestTopics =
    "switchboard_broker_peer_interest_topics";

// --- A shard's link to its broker ---
inline constexpr std::string_view kWorkerBrokerUp = "switchboard_worker_broker_up";
inline constexpr std::string_view kWorkerBrokerEpoch = "switchboard_worker_broker_epoch";
inline constexpr std::string_view kWorkerClusterMessagesTotal =
    "switchboard_worker_cluster_messages_total";
inline constexpr std::string_view kWorkerBroadcastsRefusedTotal =
    "switchboard_worker_broadcasts_refused_total";
// Gauges: the other shards' presence metas a shard holds for its topics
// (worker/remote_presence.h), and their text in bytes.
inline constexpr std::string_view kWorkerRemotePresenceMetas =
    "switchboard_worker_remote_presence_metas";
inline constexpr std::string_view kWorkerRemotePresenceBytes =
    "switchboard_worker_remote_presence_bytes";
// Counter, labels endpoint (publish, broadcast, presence, other) and status
// (200, 400, 401, 404, 405, 413, 503): HTTP API requests answered. Shown
// only while the API is on (--api-key-file).
inline constexpr std::string_view kWorkerApiRequestsTotal = "switchboard_worker_api_requests_total";
// History (docs/WORKER.md, History).
inline constexpr std::string_view kWorkerHistoryMessages = "switchboard_worker_history_messages";
inline constexpr std::string_view kWorkerHistoryBytes = "switchboard_worker_history_bytes";
inline constexpr std::string_view kWorkerHistoryTopics = "switchboard_worker_history_topics";
inline constexpr std::string_view kWorkerHistoryRecoveriesTotal =
    "switchboard_worker_history_recoveries_total";
inline constexpr std::string_view kWorkerHistoryRecoveredMessagesTotal =
    "switchboard_worker_history_recovered_messages_total";
inline constexpr std::string_view kWorkerHistoryGapsTotal = "switchboard_worker_history_gaps_total";
inline constexpr std::string_view kWorkerHistoryResetsTotal =
    "switchboard_worker_history_resets_total";
inline constexpr std::string_view kWorkerHistoryDuplicatesTotal =
    "switchboard_worker_history_duplicates_total";
inline constexpr std::string_view kWorkerHistoryFetchesTotal =
    "switchboard_worker_history_fetches_total";
inline constexpr std::string_view kLabelEndpoint = "endpoint";  // status: as above

}  // namespace sb::metrics
