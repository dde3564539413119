#include "supervisor/tree_spec.h"

#include <string>
#include <string_view>

namespace sb::supervisor {
namespace {

constexpr std::string_view kReplicaPlaceholder = "{{replica}}";
constexpr std::string_view kMetricsPlaceholder = "{{metrics}}";

std::string ReplaceAll(std::string text, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();  // never rescan the replacement, so "{{replica}}" in `to` cannot loop
  }
  return text;
}

}  // namespace

ChildSpec InstantiateReplica(const ChildSpec& tmpl, int index) {
  ChildSpec child = tmpl;
  const std::string index_text = std::to_string(index);
  child.id = tmpl.id + "." + index_text;
  child.replica = ReplicaOf{tmpl.id, index};
  for (std::string& arg : child.command) {
    arg = ReplaceAll(std::move(arg), kReplicaPlaceholder, index_text);
  }
  // Only values: a variable's name is part of the child's interface, its value
  // is what differs between replicas.
  for (auto& [name, value] : child.env) {
    value = ReplaceAll(std::move(value), kReplicaPlaceholder, index_text);
  }
  if (!child.metrics.empty()) {
    size_t colon = child.metrics.rfind(':');
    int base = std::stoi(child.metrics.substr(colon + 1));
    child.metrics = child.metrics.substr(0, colon + 1) + std::to_string(base + index);
  }
  SubstituteMetrics(child);
  return child;
}

void SubstituteMetrics(ChildSpec& spec) {
  if (spec.metrics.empty()) return;
  for (std::string& arg : spec.command) {
    arg = ReplaceAll(std::move(arg), kMetricsPlaceholder, spec.metrics);
  }
  for (auto& [name, value] : spec.env) {
    value = ReplaceAll(std::move(value), kMetricsPlaceholder, spec.metrics);
  }
}

const char* StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kOneForOne:
      return "one_for_one";
    case Strategy::kOneForAll:
      return "one_for_all";
    case Strategy::kRestForOne:
      return "rest_for_one";
    case Strategy::kSimpleOneForOne:
      return "simple_one_for_one";
  }
  return "unknown";  // only reachable through a value cast from outside the enum
}

const char* RestartTypeName(RestartType r) {
  switch (r) {
    case RestartType::kPermanent:
      return "permanent";
    case RestartType::kTransient:
      return "transient";
    case RestartType::kTemporary:
      return "temporary";
  }
  return "unknown";  // only reachable through a value cast from outside the enum
}

}  // namespace sb::supervisor
