#include "broker/link_table.h"

namespace sb::broker {

LinkTable::Attached LinkTable::Attach(std::string_view routing_id) {
  if (auto it = by_routing_id_.find(routing_id); it != by_routing_id_.end()) {
    return {it->second, false};
  }
  LinkId id = next_id_++;
  by_routing_id_.emplace(std::string(routing_id), id);
  links_.emplace(id, std::string(routing_id));
  return {id, true};
}

bool LinkTable::Rebind(LinkId id, std::string_view routing_id) {
  auto it = links_.find(id);
  if (it == links_.end() || routing_id.empty()) return false;
  if (LinkId owner = Find(routing_id); owner != kNoLink) return owner == id;
  by_routing_id_.erase(it->second);
  it->second = std::string(routing_id);
  by_routing_id_.emplace(it->second, id);
  return true;
}

bool LinkTable::Detach(LinkId id) {
  auto it = links_.find(id);
  if (it == links_.end()) return false;
  by_routing_id_.erase(it->second);
  links_.erase(it);
  return true;
}

LinkId LinkTable::Find(std::string_view routing_id) const {
  auto it = by_routing_id_.find(routing_id);
  return it == by_routing_id_.end() ? kNoLink : it->second;
}

const std::string* LinkTable::RoutingId(LinkId id) const {
  auto it = links_.find(id);
  return it == links_.end() ? nullptr : &it->second;
}

}  // namespace sb::broker
