#include "verify.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "backend_choice.hpp"

namespace dilated::cli {
namespace {

constexpr double kForwardTolerance32 = 1e-5;
constexpr double kBackwardTolerance32 = 5e-5;

double max_error(
    std::initializer_list<std::pair<const std::vector<float>*, const std::vector<float>*>> pairs) {
  double worst = 0;
  for (const auto& [got, want] : pairs) worst = std::max(worst, relative_error(*got, *want));
  return worst;
}

}  // namespace

double relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  const double inf = std::numeric_limits<double>::infinity();
  if (got.size() != want.size()) return inf;
  double max_diff = 0, max_want = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) return inf;
    if (std::isinf(want[i]) || std::isinf(got[i])) {
      if (got[i] != want[i]) return inf;
      continue;
    }
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_want = std::max(max_want, std::fabs(static_cast<double>(want[i])));
  }
  return max_want > 0 ? max_diff / max_want : max_diff;
}

Status run_backend(const Backend& backend, const ProblemSpec& spec, const HostTensors& inputs,
                   bool backward, HostOutputs* outputs) {
  DeviceProblem problem;
  for (Status s : {problem.create(backend, spec, backward), problem.upload(inputs),
                   problem.poison_outputs()}) {
    if (!s.ok()) return s;
  }
  const Params& p = problem.params();
  if (Status s = forward(p, {}, backend.name()); !s.ok()) return s;
  if (backward) {
    if (Status s = dilated::backward(p, {}, backend.name()); !s.ok()) return s;
  }
  if (Status s = backend.synchronize({}); !s.ok()) return s;
  return problem.download(outputs);
}

Status run_oracle(const ProblemSpec& spec, const HostTensors& inputs, bool backward,
                  OracleRun* oracle) {
  const Backend* reference = find_backend(kOracle);
  if (!reference) return Status::Runtime("the oracle backend is not registered");
  ProblemSpec exact = spec;
  exact.dtype = DType::f32;  // the rounded inputs are exact in fp32
  if (Status s = run_backend(*reference, exact, inputs, backward, &oracle->exact); !s.ok()) {
    return s;
  }
  oracle->forward_tolerance = kForwardTolerance32;
  oracle->backward_tolerance = kBackwardTolerance32;
  if (spec.dtype == DType::f32) return {};
  HostOutputs rounded;
  if (Status s = run_backend(*reference, spec, inputs, backward, &rounded); !s.ok()) return s;
  const HostOutputs& e = oracle->exact;
  oracle->forward_tolerance = std::max(
      kForwardTolerance32, 2 * max_error({{&rounded.out, &e.out}, {&rounded.lse, &e.lse}}));
  if (backward) {
    oracle->backward_tolerance =
        std::max(kBackwardTolerance32,
                 2 * max_error({{&rounded.dq, &e.dq}, {&rounded.dk, &e.dk}, {&rounded.dv, &e.dv}}));
  }
  return {};
}

Verdict compare(const OracleRun& oracle, const HostOutputs& got, bool backward) {
  const HostOutputs& want = oracle.exact;
  Verdict v;
  std::ostringstream detail;
  struct Output {
    const char* name;
    const std::vector<float>* got;
    const std::vector<float>* want;
    bool forward;
  };
  std::vector<Output> outputs = {{"out", &got.out, &want.out, true},
                                 {"lse", &got.lse, &want.lse, true}};
  if (backward) {
    outputs.insert(outputs.end(), {{"dq", &got.dq, &want.dq, false},
                                   {"dk", &got.dk, &want.dk, false},
                                   {"dv", &got.dv, &want.dv, false}});
  }
  v.passed = true;
  for (const Output& o : outputs) {
    const double error = relative_error(*o.got, *o.want);
    const double tolerance = o.forward ? oracle.forward_tolerance : oracle.backward_tolerance;
    (o.forward ? v.forward_error : v.backward_error) =
        std::max(o.forward ? v.forward_error : v.backward_error, error);
    if (!(error <= tolerance)) {
      v.passed = false;
      detail << (detail.tellp() > 0 ? ", " : "") << o.name << " error " << error << " > "
             << tolerance;
    }
  }
  v.detail = detail.str();
  return v;
}

}  // namespace dilated::cli
