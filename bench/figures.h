// Figures: what a bench program reports, in the order it measured them.
//
// Owns: named figures (numbers with a given number of decimals, strings),
// printed once as an aligned table for people and then as one JSON line for
// scripts (bench/RESULTS.md quotes both). Does not: measure anything. Plain
// data, header-only.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace sb::bench {

class Figures {
 public:
  void Num(const std::string& key, double v, int decimals = 0) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", decimals, v);
    items_.emplace_back(key, b);
  }
  void Str(const std::string& key, const std::string& v) {
    items_.emplace_back(key, '"' + v + '"');
  }
  // The table (keys padded to `width`), then the JSON line.
  void Print(int width = 32) const {
    std::string json = "{";
    for (const auto& [k, v] : items_) {
      std::printf("  %-*s %s\n", width, k.c_str(), v.c_str());
      json += (json.size() > 1 ? ",\"" : "\"") + k + "\":" + v;
    }
    std::printf("%s}\n", json.c_str());
    std::fflush(stdout);
  }

 private:
  std::vector<std::pair<std::string, std::string>> items_;
};

}  // namespace sb::bench
