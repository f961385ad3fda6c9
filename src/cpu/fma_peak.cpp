// Compiled once per SIMD target by Highway; the fastest one the CPU supports runs.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/fma_peak.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace dilated::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// 16 independent chains hide the FMA latency (4 cycles) on two pipes; returns FLOPs done.
double FmaLoop(int64_t iterations, float* sink) {
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.9999999f);
  const auto c = hn::Set(d, 1e-7f);
  // Distinct starting values, so that the compiler cannot merge identical chains.
  auto a0 = hn::Set(d, 1.00f), a1 = hn::Set(d, 1.01f), a2 = hn::Set(d, 1.02f);
  auto a3 = hn::Set(d, 1.03f), a4 = hn::Set(d, 1.04f), a5 = hn::Set(d, 1.05f);
  auto a6 = hn::Set(d, 1.06f), a7 = hn::Set(d, 1.07f), a8 = hn::Set(d, 1.08f);
  auto a9 = hn::Set(d, 1.09f), a10 = hn::Set(d, 1.10f), a11 = hn::Set(d, 1.11f);
  auto a12 = hn::Set(d, 1.12f), a13 = hn::Set(d, 1.13f), a14 = hn::Set(d, 1.14f);
  auto a15 = hn::Set(d, 1.15f);
  for (int64_t i = 0; i < iterations; ++i) {
    a0 = hn::MulAdd(a0, m, c);
    a1 = hn::MulAdd(a1, m, c);
    a2 = hn::MulAdd(a2, m, c);
    a3 = hn::MulAdd(a3, m, c);
    a4 = hn::MulAdd(a4, m, c);
    a5 = hn::MulAdd(a5, m, c);
    a6 = hn::MulAdd(a6, m, c);
    a7 = hn::MulAdd(a7, m, c);
    a8 = hn::MulAdd(a8, m, c);
    a9 = hn::MulAdd(a9, m, c);
    a10 = hn::MulAdd(a10, m, c);
    a11 = hn::MulAdd(a11, m, c);
    a12 = hn::MulAdd(a12, m, c);
    a13 = hn::MulAdd(a13, m, c);
    a14 = hn::MulAdd(a14, m, c);
    a15 = hn::MulAdd(a15, m, c);
  }
  const auto sum = hn::Add(
      hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7))),
      hn::Add(hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)),
              hn::Add(hn::Add(a12, a13), hn::Add(a14, a15))));
  *sink = hn::GetLane(hn::SumOfLanes(d, sum));
  return 2.0 * 16.0 * static_cast<double>(hn::Lanes(d)) * static_cast<double>(iterations);
}

}  // namespace dilated::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <chrono>
#include <thread>
#include <vector>

#include "cpu/fma_peak.hpp"

namespace dilated::cpu {

HWY_EXPORT(FmaLoop);

double measure_fma_gflops(int threads, double seconds) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<float> sinks(static_cast<size_t>(threads) * 16);
  std::vector<double> flops(static_cast<size_t>(threads));
  const int64_t iterations = 1 << 20;
  HWY_DYNAMIC_DISPATCH(FmaLoop)(iterations / 16, sinks.data());  // warm up and pick a target
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      double done = 0;
      while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() <
             seconds) {
        done += HWY_DYNAMIC_DISPATCH(FmaLoop)(iterations, &sinks[static_cast<size_t>(t) * 16]);
      }
      flops[static_cast<size_t>(t)] = done;
    });
  }
  for (std::thread& w : workers) w.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / elapsed * 1e-9;
}

const char* simd_target_name() {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  return targets.empty() ? "scalar" : hwy::TargetName(targets.front());
}

}  // namespace dilated::cpu
#endif  // HWY_ONCE
