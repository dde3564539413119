// Membership: this node's view of the other nodes of its cluster.
//
// Owns: the set of other members (name, broker peer endpoint, CURVE public
// key, incarnation), applying a full snapshot or one change (a member's
// record put or deleted) and saying what changed as events: joined, left,
// changed (a new incarnation, endpoint or key: its old link must go and a new
// one be made). Parses and validates a member record, the JSON value
// {"broker": endpoint, "curve_public": key, "incarnation": id}; a bad record
// is skipped and counted, never applied. Ignores this node's own record.
// Does not: talk to etcd (broker/etcd_registry) or open links. Plain data on
// the broker's loop thread.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace sb::broker {

struct Member {
  std::string name;
  std::string endpoint;      // the member's broker peer socket, tcp://HOST:PORT
  std::string curve_public;  // Z85, 40 characters
  std::string incarnation;   // changes each time the member registers anew

  bool operator==(const Member&) const = default;
};

enum class MemberEventKind { kJoined, kLeft, kChanged };

struct MemberEvent {
  MemberEventKind kind;
  // kJoined, kChanged: the member as it is now; kLeft: as it was.
  Member member;

  bool operator==(const MemberEvent&) const = default;
};

// "joined", "left", "changed": the metrics' and logs' names.
std::string_view MemberEventName(MemberEventKind kind);

// One member record as a store holds it: the member's name (from its key)
// and its JSON value.
struct MemberRecord {
  std::string name;
  std::string value;
};

// Node names are 1-64 characters of [A-Za-z0-9._-]: they end keys and label
// metrics. InvalidConfig says what is wrong.
Status ValidateNodeName(std::string_view name);
// A Z85 CURVE public key: 40 characters of the Z85 alphabet.
Status ValidateCurvePublic(std::string_view key);
// tcp://HOST:PORT with a non-empty host and a port in 1-65535.
Status ValidatePeerEndpoint(std::string_view endpoint);
// Every field of `m` as above, and an incarnation of 1-64 printable ASCII characters.
Status ValidateMember(const Member& m);

// The record's JSON value for `m` (name excluded: it is the key's).
std::string FormatMemberRecord(const Member& m);
// `value` parsed and validated as the record of member `name`. Unknown
// fields are ignored (a later version may add some).
Result<Member> ParseMemberRecord(std::string_view name, std::string_view value);

// `NAME=ENDPOINT=PUBKEY` (the broker's --peer flag), validated; the
// incarnation of a static member is "static".
Result<Member> ParseStaticPeer(std::string_view spec);

class Membership {
 public:
  // `self` is this node's name: its record is never a member.
  explicit Membership(std::string self) : self_(std::move(self)) {}

  // The members are exactly `members` now (this node's record left out, a
  // member that does not validate skipped and counted; of two with the same
  // name, the last one counts). Events in name order, at most one per name.
  std::vector<MemberEvent> ApplySnapshot(std::span<const Member> members);
  // The same from records: a bad one is skipped and counted.
  std::vector<MemberEvent> ApplySnapshot(std::span<const MemberRecord> records);
  // One member's record was written (created or replaced); a member that
  // does not validate is skipped and counted.
  std::vector<MemberEvent> Put(const Member& m);
  // The same from a record; a bad one is skipped and counted, and leaves the
  // member as it was.
  std::vector<MemberEvent> Put(const MemberRecord& record);
  // A member's record is gone.
  std::vector<MemberEvent> Delete(std::string_view name);

  const std::map<std::string, Member, std::less<>>& members() const { return members_; }
  const std::string& self() const { return self_; }
  // Records skipped because they did not parse or validate.
  uint64_t bad_records() const { return bad_records_; }

 private:
  // False (and counted) if `m` does not validate.
  bool Valid(const Member& m);
  std::string self_;
  std::map<std::string, Member, std::less<>> members_;
  uint64_t bad_records_ = 0;
};

}  // namespace sb::broker
