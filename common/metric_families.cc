#include "common/metric_families.h"

#include <iterator>
#include <limits>
#include <utility>

#include "common/build_info.h"
#include "common/metric_names.h"

namespace sb {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily& MetricFamilies::Family(std::string_view name, std::string_view help,
                                     MetricType type) {
  families_.push_back(MetricFamily{std::string(name), std::string(help), type, {}});
  return families_.back();
}

MetricFamilies::Labels MetricFamilies::WithConstant(Labels labels) const {
  labels.insert(labels.begin(), constant_.begin(), constant_.end());
  return labels;
}

void MetricFamilies::Add(MetricFamily& f, Labels labels, double value) const {
  ClientMetric cm;
  cm.label = WithConstant(std::move(labels));
  if (f.type == MetricType::Counter) {
    cm.counter.value = value;
  } else {
    cm.gauge.value = value;
  }
  f.metric.push_back(std::move(cm));
}

void MetricFamilies::AddHistogram(MetricFamily& f, Labels labels, std::span<const double> bounds,
                                  std::span<const uint64_t> counts, uint64_t total,
                                  double sum) const {
  ClientMetric cm;
  cm.label = WithConstant(std::move(labels));
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (i < counts.size()) cumulative += counts[i];
    cm.histogram.bucket.push_back({cumulative, bounds[i]});
  }
  cm.histogram.bucket.push_back({total, std::numeric_limits<double>::infinity()});
  cm.histogram.sample_count = total;
  cm.histogram.sample_sum = sum;
  f.metric.push_back(std::move(cm));
}

void MetricFamilies::Counter(std::string_view name, std::string_view help, double value) {
  Add(Family(name, help, MetricType::Counter), {}, value);
}

void MetricFamilies::Gauge(std::string_view name, std::string_view help, double value) {
  Add(Family(name, help, MetricType::Gauge), {}, value);
}

void MetricFamilies::BuildInfo() {
  Add(Family(metrics::kBuildInfo, metrics::kBuildInfoHelp, MetricType::Gauge),
      {{std::string(metrics::kLabelVersion), std::string(BuildVersion())},
       {std::string(metrics::kLabelCommit), std::string(BuildCommit())}},
      1);
}

std::vector<MetricFamily> MetricFamilies::Take() && {
  return {std::make_move_iterator(families_.begin()), std::make_move_iterator(families_.end())};
}

}  // namespace sb
