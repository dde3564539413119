// InterestTable: which links want which topics, and who gets a broadcast.
//
// Owns: topic → interested links (in subscription order) and link → topics,
// kept as one set per link: a shard subscribes a topic while it has at least
// one local subscriber and unsubscribes when the last one leaves, so the
// counting is the shard's and the broker holds plain membership. Repeated
// Subscribe/Unsubscribe are no-ops, which is what makes a resend after a
// broker restart (or a duplicated frame) harmless.
// Does not: send, queue, or know link kinds — the one-hop rule for peer
// brokers (never forward what a peer sent to another peer) is the caller's.
// Plain data on the broker's loop thread; the broker owns one.
//
// A broadcast goes to each interested link once, never back to its origin:
// the origin shard has already fanned it out to its own sockets.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/link_table.h"
#include "broker/string_map.h"

namespace sb::broker {

class InterestTable {
 public:
  // True if `link` was not subscribed to `topic` (and now is, last in order).
  bool Subscribe(LinkId link, std::string_view topic);
  // True if `link` was subscribed to `topic` (and no longer is).
  bool Unsubscribe(LinkId link, std::string_view topic);

  // Links subscribed to `topic`, each once, in subscription order; nullptr if
  // none. Valid until the next call that changes the table.
  const std::vector<LinkId>* Interested(std::string_view topic) const;
  // The recipients of a broadcast `origin` sent to `topic`: Interested(topic)
  // without `origin` (kNoLink: nobody excepted). Replaces `*out`'s contents;
  // pass the same vector every time to avoid allocating per broadcast.
  void Route(LinkId origin, std::string_view topic, std::vector<LinkId>* out) const;

  bool IsSubscribed(LinkId link, std::string_view topic) const;
  // Topics of `link`, in no particular order.
  std::vector<std::string> TopicsOf(LinkId link) const;

  // `link` is gone: it leaves every topic. Returns those topics, in no
  // particular order.
  std::vector<std::string> RemoveShard(LinkId link);

  struct Replaced {
    std::vector<std::string> added;    // in the order given
    std::vector<std::string> removed;  // in no particular order
  };
  // Resync: `link`'s subscriptions become exactly `topics` (duplicates
  // allowed). Topics it keeps keep their place in subscription order.
  Replaced ReplaceShard(LinkId link, const std::vector<std::string>& topics);

  // Calls fn(topic, links) for every topic, in no particular order.
  template <typename F>
  void ForEachTopic(F&& fn) const {
    for (const auto& [topic, links] : topics_) fn(std::string_view(topic), links);
  }

  size_t topics() const { return topics_.size(); }
  size_t subscriptions() const { return subscriptions_; }
  size_t links() const { return by_link_.size(); }

 private:
  // Views into topics_' keys: map nodes never move, and a topic stays in
  // topics_ while any link (this one included) is subscribed to it.
  using TopicSet = std::unordered_set<std::string_view>;

  // Removes `link` from `topic`'s list, erasing the topic when it empties.
  // The caller has already removed `topic` from the link's set.
  void Detach(LinkId link, StringMap<std::vector<LinkId>>::iterator topic);

  // A topic has a handful of links (the node's shards and peers), so a
  // vector searched linearly beats a set here, and keeps the order.
  StringMap<std::vector<LinkId>> topics_;
  std::unordered_map<LinkId, TopicSet> by_link_;
  size_t subscriptions_ = 0;
};

}  // namespace sb::broker
