// Limits: the one set of bounds a client's input must keep so that the mesh
// can always carry it.
//
// Owns: the numbers both sides use — a shard's hub refuses a join that
// breaks one (with a reason the client sees), and the mesh codec
// (protocol/mesh) leaves out, and counts, a hello entry that breaks one.
// Defined once here so that what a shard accepts from a client is, by
// construction, what its broker accepts from the shard: a client must never
// be able to make a shard's hello unacceptable. Plain constants; the
// property test tests/property/hub_mesh_property_test.cc checks the promise.
#pragma once

#include <cstddef>

namespace sb::limits {

// A topic is what phoenix.js sends as a string: non-empty, at most this
// many bytes. Bounds what a client can make a shard and its broker keep
// per subscription.
inline constexpr size_t kMaxTopicBytes = 1024;

// How deep a presence meta may nest (the meta object itself is level 1, a
// scalar 0): what every shard can parse back when the meta returns to it
// inside a presence_diff (`{"joins":{"<key>":{"metas":[<meta>]}}}` puts it
// at level 5) under the bound its Phoenix decoder applies to every JSON
// text (phx::kMaxJsonDepth, 64; protocol/mesh.cc asserts the sum).
inline constexpr size_t kMaxPresenceMetaDepth = 60;

}  // namespace sb::limits
