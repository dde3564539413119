// Limits: the one set of bounds a client's input must keep so that the mesh
// can always carry it.
//
// Owns: the numbers both sides use — the shard's hub refuses a join that
// breaks one (with a reason the client sees), and the mesh codec refuses a
// message that breaks one. Defined once here so that what a shard accepts
// from a client is, by construction, what its broker accepts from the
// shard: a client must never be able to make a shard's hello unacceptable.
// Plain constants; the property test in tests/property checks the promise.
#pragma once

#include <cstddef>

namespace sb::limits {

// A topic is what phoenix.js sends as a string: non-empty, at most this
// many bytes. Bounds what a client can make a shard and its broker keep
// per subscription.
inline constexpr size_t kMaxTopicBytes = 1024;

// Nesting of any JSON body the mesh carries (a hello, a presence change).
inline constexpr int kMaxMeshJsonDepth = 32;

// Nesting of one presence meta. In a hello a meta object sits at depth 6
// ({"presence":[{"metas":[{"meta":{…}}]}]}), so a meta nested this deep
// keeps the hello within kMaxMeshJsonDepth with room to spare.
inline constexpr int kMaxPresenceMetaDepth = 16;
inline constexpr int kPresenceMetaDepthInHello = 6;
static_assert(kPresenceMetaDepthInHello - 1 + kMaxPresenceMetaDepth <= kMaxMeshJsonDepth,
              "a meta the hub accepts must fit in a hello");

}  // namespace sb::limits
