// MetricFamilies: the Prometheus families one scrape of a collector returns,
// built from values the collector reads at scrape time.
//
// Owns: the families of one Collect() call while they are built, and each
// series' label set: the builder's constant label first (a shard's `shard`),
// then the series' own; the build info series every exporter adds alike.
// Does not: read counters (callers pass the values they loaded), serve or
// register anything (common/metrics_endpoint), or define names
// (common/metric_names.h). One object per Collect() call, used on the
// scraping thread and dropped when Take() hands the families over.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace sb {

class MetricFamilies {
 public:
  using Labels = std::vector<prometheus::ClientMetric::Label>;

  MetricFamilies() = default;
  // Every series gets `name`=`value` as its first label.
  MetricFamilies(std::string_view name, std::string value)
      : constant_{{std::string(name), std::move(value)}} {}
  MetricFamilies(const MetricFamilies&) = delete;
  MetricFamilies& operator=(const MetricFamilies&) = delete;

  // A new family with no series yet. The reference stays valid while more
  // families are added.
  prometheus::MetricFamily& Family(std::string_view name, std::string_view help,
                                   prometheus::MetricType type);

  // One series of `f`: its counter or gauge value, as `f`'s type says.
  void Add(prometheus::MetricFamily& f, Labels labels, double value) const;

  // One series of histogram `f`. `counts[i]` observations fell in bucket i
  // (above bounds[i - 1], at most bounds[i]); `total` counts every
  // observation, those above the last bound included (the +Inf bucket).
  void AddHistogram(prometheus::MetricFamily& f, Labels labels, std::span<const double> bounds,
                    std::span<const uint64_t> counts, uint64_t total, double sum) const;

  // A family with one series that has only the constant labels.
  void Counter(std::string_view name, std::string_view help, double value);
  void Gauge(std::string_view name, std::string_view help, double value);

  // switchboard_build_info{version, commit} 1 (metric_names.h kBuildInfo):
  // this binary's common/build_info.h values.
  void BuildInfo();

  // A counter family with one series per entry of `values`, labelled
  // `label`=`values[i]` and valued `value_at(i)`.
  template <typename ValueAt>
  void CounterPerLabel(std::string_view name, std::string_view help, std::string_view label,
                       std::span<const std::string_view> values, ValueAt value_at) {
    prometheus::MetricFamily& f = Family(name, help, prometheus::MetricType::Counter);
    for (size_t i = 0; i < values.size(); ++i) {
      Add(f, {{std::string(label), std::string(values[i])}}, static_cast<double>(value_at(i)));
    }
  }

  // The families, in the order they were added.
  std::vector<prometheus::MetricFamily> Take() &&;

 private:
  Labels WithConstant(Labels labels) const;

  Labels constant_;
  // A deque: Family() hands out references that are held while more
  // families are added, and a vector's growth would move them.
  std::deque<prometheus::MetricFamily> families_;
};

}  // namespace sb
