// MetricFamilies: families, series labels and values as a collector builds
// them, checked as structures and as the text a scrape returns.

#include "common/metric_families.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "common/build_info.h"
#include "prometheus/text_serializer.h"

namespace sb {
namespace {

using prometheus::MetricFamily;
using prometheus::MetricType;

std::string Text(const std::vector<MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

TEST(MetricFamiliesTest, TheConstantLabelComesFirstOnEverySeries) {
  MetricFamilies out("shard", "3");
  out.Counter("a_total", "help a", 5);
  MetricFamily& g = out.Family("b", "help b", MetricType::Gauge);
  out.Add(g, {{"queue", "client_out"}}, 7);
  std::vector<MetricFamily> fs = std::move(out).Take();
  ASSERT_EQ(fs.size(), 2u);
  ASSERT_EQ(fs[0].metric.size(), 1u);
  EXPECT_EQ(fs[0].metric[0].label, (std::vector<prometheus::ClientMetric::Label>{{"shard", "3"}}));
  ASSERT_EQ(fs[1].metric.size(), 1u);
  EXPECT_EQ(fs[1].metric[0].label, (std::vector<prometheus::ClientMetric::Label>{
                                       {"shard", "3"}, {"queue", "client_out"}}));
  const std::string text = Text(fs);
  EXPECT_NE(text.find("a_total{shard=\"3\"} 5"), std::string::npos) << text;
  EXPECT_NE(text.find("b{shard=\"3\",queue=\"client_out\"} 7"), std::string::npos) << text;
}

TEST(MetricFamiliesTest, BuildInfoIsOneGaugeAtOneWithVersionAndCommit) {
  MetricFamilies out("shard", "3");
  out.BuildInfo();
  const std::string text = Text(std::move(out).Take());
  EXPECT_NE(text.find("# TYPE switchboard_build_info gauge\n"), std::string::npos) << text;
  EXPECT_NE(
      text.find("switchboard_build_info{shard=\"3\",version=\"" + std::string(BuildVersion()) +
                "\",commit=\"" + std::string(BuildCommit()) + "\"} 1\n"),
      std::string::npos)
      << text;
}

TEST(MetricFamiliesTest, ValuesGoWhereTheFamilysTypeSays) {
  MetricFamilies out;
  out.Counter("c_total", "", 2);
  out.Gauge("g", "", -1.5);
  std::vector<MetricFamily> fs = std::move(out).Take();
  ASSERT_EQ(fs.size(), 2u);
  EXPECT_EQ(fs[0].name, "c_total");
  EXPECT_EQ(fs[0].type, MetricType::Counter);
  EXPECT_EQ(fs[0].metric[0].counter.value, 2);
  EXPECT_EQ(fs[0].metric[0].gauge.value, 0);
  EXPECT_TRUE(fs[0].metric[0].label.empty());
  EXPECT_EQ(fs[1].type, MetricType::Gauge);
  EXPECT_EQ(fs[1].metric[0].gauge.value, -1.5);
  EXPECT_EQ(fs[1].metric[0].counter.value, 0);
}

TEST(MetricFamiliesTest, FamiliesKeepTheirOrderAndReferencesStayValid) {
  MetricFamilies out;
  MetricFamily& first = out.Family("first", "", MetricType::Gauge);
  // Enough families that a vector would have moved `first`.
  for (int i = 0; i < 100; ++i) out.Gauge("f" + std::to_string(i), "", i);
  out.Add(first, {{"late", "yes"}}, 1);
  std::vector<MetricFamily> fs = std::move(out).Take();
  ASSERT_EQ(fs.size(), 101u);
  EXPECT_EQ(fs[0].name, "first");
  ASSERT_EQ(fs[0].metric.size(), 1u);
  EXPECT_EQ(fs[0].metric[0].label[0].value, "yes");
  EXPECT_EQ(fs[100].name, "f99");
}

TEST(MetricFamiliesTest, CounterPerLabelNamesEachSeries) {
  constexpr std::array<std::string_view, 3> kReasons = {"shed", "disconnect", "too_large"};
  std::array<std::atomic<uint64_t>, 3> counts{};
  counts[0] = 4;
  counts[2] = 9;
  MetricFamilies out("shard", "0");
  out.CounterPerLabel("dropped_total", "why", "reason", kReasons,
                      [&](size_t i) { return counts[i].load(); });
  std::vector<MetricFamily> fs = std::move(out).Take();
  ASSERT_EQ(fs.size(), 1u);
  EXPECT_EQ(fs[0].type, MetricType::Counter);
  ASSERT_EQ(fs[0].metric.size(), 3u);
  const std::string text = Text(fs);
  EXPECT_NE(text.find("dropped_total{shard=\"0\",reason=\"shed\"} 4"), std::string::npos) << text;
  EXPECT_NE(text.find("dropped_total{shard=\"0\",reason=\"disconnect\"} 0"), std::string::npos)
      << text;
  EXPECT_NE(text.find("dropped_total{shard=\"0\",reason=\"too_large\"} 9"), std::string::npos)
      << text;
}

TEST(MetricFamiliesTest, HistogramBucketsAreCumulativeAndInfIsTheTotal) {
  constexpr std::array<double, 3> kBounds = {0.001, 0.01, 0.1};
  const std::array<uint64_t, 3> counts = {2, 0, 5};  // per bucket
  MetricFamilies out;
  MetricFamily& f = out.Family("delay_seconds", "", MetricType::Histogram);
  // 3 observations above the last bound.
  out.AddHistogram(f, {{"queue", "shard_out"}}, kBounds, counts, 10, 1.25);
  std::vector<MetricFamily> fs = std::move(out).Take();
  ASSERT_EQ(fs[0].metric.size(), 1u);
  const auto& h = fs[0].metric[0].histogram;
  ASSERT_EQ(h.bucket.size(), 4u);
  EXPECT_EQ(h.bucket[0].cumulative_count, 2u);
  EXPECT_EQ(h.bucket[0].upper_bound, 0.001);
  EXPECT_EQ(h.bucket[1].cumulative_count, 2u);
  EXPECT_EQ(h.bucket[2].cumulative_count, 7u);
  EXPECT_EQ(h.bucket[2].upper_bound, 0.1);
  EXPECT_EQ(h.bucket[3].cumulative_count, 10u);
  EXPECT_TRUE(std::isinf(h.bucket[3].upper_bound));
  EXPECT_EQ(h.sample_count, 10u);
  EXPECT_EQ(h.sample_sum, 1.25);
  const std::string text = Text(fs);
  EXPECT_NE(text.find("delay_seconds_bucket{queue=\"shard_out\",le=\"+Inf\"} 10"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("delay_seconds_count{queue=\"shard_out\"} 10"), std::string::npos) << text;
}

}  // namespace
}  // namespace sb
