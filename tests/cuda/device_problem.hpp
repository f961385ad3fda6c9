// A HostProblem mirrored in a backend's device memory through the Backend device services
// (no CUDA API here, so this compiles without nvcc), and the accuracy rule for 16-bit types.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "support/problem.hpp"

namespace dilated::testing {

class DeviceProblem {
 public:
  // Copies every buffer of `host` (inputs, poisoned outputs, a block mask) to the device.
  DeviceProblem(const Backend& backend, HostProblem& host);
  ~DeviceProblem();
  DeviceProblem(const DeviceProblem&) = delete;
  DeviceProblem& operator=(const DeviceProblem&) = delete;

  // Params over device memory, with a workspace as large as the backend asks for.
  Params params(Direction dir);
  Status run(Direction dir);
  // Copies the outputs (out, lse, dq, dk, dv) back into the host problem.
  void copy_outputs_back();

 private:
  void* device_copy(const void* src, int64_t bytes);

  const Backend& backend_;
  HostProblem& host_;
  std::vector<void*> allocations_;
  std::vector<std::pair<std::string, void*>> buffers_;
  void* lse_ = nullptr;
  void* cu_seqlens_ = nullptr;
  void* block_mask_ = nullptr;  // the mask pattern's [mask_heads, NB, NB] bytes
  void* workspace_ = nullptr;
  int64_t workspace_bytes_ = 0;
};

// Skips the calling test unless the backend runs on this machine.
#define DILATED_REQUIRE_BACKEND(backend)                                           \
  do {                                                                             \
    if (std::string reason = (backend).unavailable_reason(); !reason.empty()) {    \
      GTEST_SKIP() << (backend).name() << " backend unavailable here: " << reason; \
    }                                                                              \
  } while (0)

// Errors of a device run and of the oracle in the problem's dtype, both against the oracle
// run in float32 on the same rounded inputs ("exact": its error is ~1e-7).
struct AccuracyReport {
  std::vector<std::string> lines;
  bool ok = true;
  double worst_ratio = 0;  // max over 16-bit outputs of device error / oracle error
};

// One output (not lse) of a device run against `exact` (the float32 oracle on the same rounded
// inputs), next to the oracle in the problem's dtype: errors relative to the largest exact
// element (floored at 1e-2); fp32 within 1e-4, fp16/bf16 within 2x the oracle's own error (plus
// 1e-5 so that an exactly representable answer does not demand zero error); dq and dk that
// cancel to below 1e-2 within the fp32 rounding noise of dP - delta, computed from `inputs`.
struct OutputCheck {
  double device_error = 0, oracle_error = 0, bound = 0;
  bool ok = false;
  std::string line;  // "name: device error .., oracle error .., bound .."
};
OutputCheck check_output(const std::string& name, const std::vector<double>& device,
                         const std::vector<double>& oracle, const std::vector<double>& exact,
                         DType dtype, const HostProblem& inputs);

// check_output for the named outputs of `device`, `oracle` and `exact`; lse within 1e-4. The
// largest device / oracle error ratio seen is kept in `worst_ratio` for the log.
AccuracyReport compare_with_oracle(const HostProblem& device, const HostProblem& oracle,
                                   const HostProblem& exact,
                                   const std::vector<std::string>& outputs);

// A float32 copy of `problem`'s configuration whose inputs are its (rounded) inputs.
std::unique_ptr<HostProblem> exact_twin(const HostProblem& problem);

}  // namespace dilated::testing
