#include "timing.hpp"

#include <algorithm>
#include <cmath>

namespace dilated::cli {

double Samples::median() const {
  if (values.empty()) return NAN;
  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  const size_t mid = sorted.size() / 2;
  return sorted.size() % 2 ? sorted[mid] : 0.5 * (sorted[mid - 1] + sorted[mid]);
}

double Samples::min() const {
  return values.empty() ? NAN : *std::min_element(values.begin(), values.end());
}

double Samples::max() const {
  return values.empty() ? NAN : *std::max_element(values.begin(), values.end());
}

}  // namespace dilated::cli
