// Scrape: reading a Switchboard process's Prometheus /metrics from a bench.
//
// Owns: one bounded HTTP GET of a loopback metrics port, the value of one
// sample in the text it returns, and a histogram series read back into its
// buckets with PromQL's quantile rule — so every bench reports the
// processes' own figures the way a dashboard would. Does not: start
// processes or print. Plain functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sb::bench {

// GET http://127.0.0.1:<port>/metrics with a bounded wait; "" on failure.
std::string Scrape(int port, uint64_t deadline_ns);

// The value of the sample `series` (name and labels exactly as the process
// writes them) in a Prometheus text body; -1 if absent.
double Sample(const std::string& body, const std::string& series);
// The value of the first sample of metric `name`, whatever its labels; -1
// if absent.
double FirstSample(const std::string& body, const std::string& name);

// One series of a histogram: cumulative bucket counts by upper bound.
struct ScrapedHistogram {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count), +Inf last
  double count = 0, sum = 0;

  // As PromQL's histogram_quantile: linear within the bucket that holds the
  // q-th observation (the lowest bucket from 0), the highest finite bound
  // beyond it; NaN without observations.
  double Quantile(double q) const;
};

// The lines of histogram `name` (its _bucket, _count and _sum) whose labels
// include `label` verbatim (e.g. `source="cluster"`), in any label order.
ScrapedHistogram ReadHistogram(const std::string& body, const std::string& name,
                               const std::string& label);

}  // namespace sb::bench
