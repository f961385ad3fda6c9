// The bench report in three formats. JSON: one object with `machine`, `ceiling` (the CPU's
// fp32 FMA peak measured in the same run) and `results` (one object per row); CSV: the same
// rows, one line each; table: for people.
#pragma once

#include <string>
#include <vector>

#include "bench_runner.hpp"
#include "machine.hpp"

namespace dilated::cli {

struct BenchReport {
  std::string suite;  // a suite name or "custom"
  Machine machine;
  double fma_gflops = 0;
  int fma_threads = 0;
  double fma_seconds = 0;
  TimingOptions options;
  std::vector<BenchRow> rows;
};

std::string format_json(const BenchReport& report);
std::string format_csv(const BenchReport& report);
std::string format_table(const BenchReport& report);

}  // namespace dilated::cli
