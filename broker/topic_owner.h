// TopicOwner: which node sequences a history topic when several nodes' brokers
// are linked (docs/CLUSTER.md, History across nodes).
//
// Owns: the choice of a topic's owner among the nodes a broker counts as up,
// by rendezvous (highest-random-weight) hashing: every (node, topic) pair
// gets a score from a stable 64-bit hash, and the highest wins. Two brokers
// that count the same nodes up pick the same owner, and a node joining or
// leaving moves only the topics it wins or won. Also the 32-bit tag a node
// stamps into the epochs of the streams it starts, so that any broker can
// tell an epoch it started (and may continue) from one it only holds a copy of.
// Does not: know links or liveness (broker/router says who is up). Pure.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace sb::broker {

// FNV-1a, 64-bit: stable across builds, compilers and machines (std::hash is
// none of these), so that every node computes the same scores.
uint64_t Fnv1a64(std::string_view bytes, uint64_t seed = 0xcbf29ce484222325ULL);

// The rendezvous score of `node` for `topic`: FNV-1a over the node name, a
// zero byte and the topic, then a 64-bit finalizer (FNV-1a alone leaves the
// high bits of similar names correlated).
uint64_t OwnerScore(std::string_view node, std::string_view topic);

// The owner of `topic` among `nodes` (names, any order, no duplicates): the
// highest score, ties (a 2^-64 chance) to the smaller name. Empty if `nodes`
// is empty.
std::string_view TopicOwner(std::span<const std::string> nodes, std::string_view topic);

// A node's tag in the high 32 bits of the epochs it starts: nonzero.
uint32_t NodeStreamTag(std::string_view node);

}  // namespace sb::broker
