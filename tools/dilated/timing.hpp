// Repeated measurements and their summary (median and spread).
#pragma once

#include <chrono>
#include <vector>

namespace dilated::cli {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  double milliseconds() const { return seconds() * 1e3; }

 private:
  std::chrono::steady_clock::time_point start_;
};

struct Samples {
  std::vector<double> values;

  void add(double v) { values.push_back(v); }
  bool empty() const { return values.empty(); }
  size_t count() const { return values.size(); }
  double median() const;
  double min() const;
  double max() const;
};

}  // namespace dilated::cli
