#include "broker/interest_table.h"

#include <algorithm>

namespace sb::broker {

bool InterestTable::Subscribe(LinkId link, std::string_view topic) {
  auto it = topics_.find(topic);
  if (it == topics_.end()) {
    it = topics_.emplace(std::string(topic), std::vector<LinkId>{}).first;
  } else if (std::find(it->second.begin(), it->second.end(), link) != it->second.end()) {
    return false;
  }
  it->second.push_back(link);
  by_link_[link].insert(std::string_view(it->first));
  ++subscriptions_;
  return true;
}

void InterestTable::Detach(LinkId link, StringMap<std::vector<LinkId>>::iterator topic) {
  auto& links = topic->second;
  links.erase(std::find(links.begin(), links.end(), link));
  --subscriptions_;
  if (links.empty()) topics_.erase(topic);
}

bool InterestTable::Unsubscribe(LinkId link, std::string_view topic) {
  auto mine = by_link_.find(link);
  if (mine == by_link_.end()) return false;
  auto it = topics_.find(topic);
  if (it == topics_.end() || mine->second.erase(std::string_view(it->first)) == 0) return false;
  if (mine->second.empty()) by_link_.erase(mine);
  Detach(link, it);
  return true;
}

const std::vector<LinkId>* InterestTable::Interested(std::string_view topic) const {
  auto it = topics_.find(topic);
  return it == topics_.end() ? nullptr : &it->second;
}

void InterestTable::Route(LinkId origin, std::string_view topic, std::vector<LinkId>* out) const {
  out->clear();
  auto it = topics_.find(topic);
  if (it == topics_.end()) return;
  for (LinkId link : it->second) {
    if (link != origin) out->push_back(link);
  }
}

bool InterestTable::IsSubscribed(LinkId link, std::string_view topic) const {
  auto mine = by_link_.find(link);
  return mine != by_link_.end() && mine->second.contains(topic);
}

std::vector<std::string> InterestTable::TopicsOf(LinkId link) const {
  std::vector<std::string> out;
  auto mine = by_link_.find(link);
  if (mine == by_link_.end()) return out;
  out.reserve(mine->second.size());
  for (std::string_view topic : mine->second) out.emplace_back(topic);
  return out;
}

std::vector<std::string> InterestTable::RemoveShard(LinkId link) {
  std::vector<std::string> out;
  auto mine = by_link_.find(link);
  if (mine == by_link_.end()) return out;
  // Take the set out first: Detach may erase the topics its views point into.
  TopicSet topics = std::move(mine->second);
  by_link_.erase(mine);
  out.reserve(topics.size());
  for (std::string_view topic : topics) {
    out.emplace_back(topic);
    Detach(link, topics_.find(topic));
  }
  return out;
}

InterestTable::Replaced InterestTable::ReplaceShard(LinkId link,
                                                    const std::vector<std::string>& topics) {
  Replaced result;
  std::unordered_set<std::string_view> wanted(topics.begin(), topics.end());
  if (auto mine = by_link_.find(link); mine != by_link_.end()) {
    std::vector<std::string_view> gone;
    for (std::string_view topic : mine->second) {
      if (!wanted.contains(topic)) gone.push_back(topic);
    }
    for (std::string_view topic : gone) {
      result.removed.emplace_back(topic);
      (void)Unsubscribe(link, result.removed.back());
    }
  }
  for (const std::string& topic : topics) {
    if (Subscribe(link, topic)) result.added.push_back(topic);
  }
  return result;
}

}  // namespace sb::broker
