#include "cuda/device_problem.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace dilated::testing {

DeviceProblem::DeviceProblem(const Backend& backend, HostProblem& host)
    : backend_(backend), host_(host) {
  for (const std::string& name : HostProblem::buffer_names()) {
    const Buffer& buf = host.buffer(name);
    buffers_.emplace_back(name,
                          device_copy(buf.bytes.data(), static_cast<int64_t>(buf.bytes.size())));
  }
  lse_ = device_copy(host.lse_buffer().data(),
                     static_cast<int64_t>(host.lse_buffer().size() * sizeof(float)));
  if (!host.cu_seqlens().empty()) {
    cu_seqlens_ = device_copy(host.cu_seqlens().data(),
                              static_cast<int64_t>(host.cu_seqlens().size() * sizeof(int32_t)));
  }
  const std::vector<uint8_t>& mask = host.config().block_mask;
  if (!mask.empty()) block_mask_ = device_copy(mask.data(), static_cast<int64_t>(mask.size()));
}

DeviceProblem::~DeviceProblem() {
  for (void* p : allocations_) backend_.release(p);
}

void* DeviceProblem::device_copy(const void* src, int64_t bytes) {
  void* dst = nullptr;
  Status s = backend_.allocate(bytes, &dst);
  if (s.ok()) s = backend_.copy_to_device(dst, src, bytes);
  if (!s.ok()) throw std::runtime_error(s.message());
  allocations_.push_back(dst);
  return dst;
}

Params DeviceProblem::params(Direction dir) {
  Params p = host_.params();
  p.device = backend_.device();
  for (const auto& [name, ptr] : buffers_) {
    Tensor* t = name == "q"      ? &p.q
                : name == "k"    ? &p.k
                : name == "v"    ? &p.v
                : name == "dout" ? &p.dout
                : name == "out"  ? &p.out
                : name == "dq"   ? &p.dq
                : name == "dk"   ? &p.dk
                                 : &p.dv;
    t->data = ptr;
  }
  p.lse = static_cast<float*>(lse_);
  p.cu_seqlens = static_cast<const int32_t*>(cu_seqlens_);
  if (block_mask_) p.blocks.mask.data = static_cast<const uint8_t*>(block_mask_);
  const int64_t need = backend_.workspace_bytes(p, dir);
  if (need > workspace_bytes_) {
    void* w = nullptr;
    if (Status s = backend_.allocate(need, &w); !s.ok()) throw std::runtime_error(s.message());
    allocations_.push_back(w);
    workspace_ = w;
    workspace_bytes_ = need;
  }
  p.workspace = workspace_;
  p.workspace_bytes = workspace_bytes_;
  return p;
}

Status DeviceProblem::run(Direction dir) {
  const Params p = params(dir);
  // The workspace starts as NaN (all bits set): a kernel that reads an accumulator row no
  // pass has written yet makes its results NaN.
  if (p.workspace_bytes > 0) {
    const std::vector<unsigned char> poison(static_cast<size_t>(p.workspace_bytes), 0xFF);
    if (Status s = backend_.copy_to_device(p.workspace, poison.data(), p.workspace_bytes);
        !s.ok()) {
      return s;
    }
  }
  Status s = dir == Direction::forward ? forward(p, {}, backend_.name())
                                       : backward(p, {}, backend_.name());
  if (s.ok()) s = backend_.synchronize({});
  return s;
}

void DeviceProblem::copy_outputs_back() {
  for (const auto& [name, ptr] : buffers_) {
    Buffer& buf = host_.buffer(name);
    Status s = backend_.copy_to_host(buf.bytes.data(), ptr, static_cast<int64_t>(buf.bytes.size()));
    if (!s.ok()) throw std::runtime_error(s.message());
  }
  Status s = backend_.copy_to_host(host_.lse_buffer().data(), lse_,
                                   static_cast<int64_t>(host_.lse_buffer().size() * sizeof(float)));
  if (!s.ok()) throw std::runtime_error(s.message());
}

std::unique_ptr<HostProblem> exact_twin(const HostProblem& problem) {
  ProblemConfig config = problem.config();
  config.dtype = DType::f32;
  auto twin = std::make_unique<HostProblem>(config, 0);
  for (const char* name : {"q", "k", "v", "dout"}) twin->set(name, problem.read(name));
  return twin;
}

namespace {

double max_abs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) {
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  }
  return m;
}

// relative_error, with the reference's magnitude floored at 1e-2 (so that an exact 0 or a tiny
// tensor is measured in units of 1e-2, not of itself). Inputs are O(1), so a gradient with real
// content is not that small everywhere.
double error_against(const std::vector<double>& got, const std::vector<double>& ref) {
  const double max_ref = max_abs(ref);
  if (max_ref >= 1e-2) return relative_error(got, ref);
  const double error = relative_error(got, ref);  // max |got - ref|, over max_ref if > 0
  return max_ref > 0 ? error * max_ref / 1e-2 : error / 1e-2;
}

// The absolute rounding noise of dq (or dk, with `other` = q) where it cancels to about 0: a row
// that sees one key has dS = P (dP - delta) = 0 exactly, and what the device computes is the
// difference of two fp32 dot products of D terms (dP = dout . v by the tensor cores, delta =
// dout . out by a row kernel, out = v), at most about D 2^-24 max|dout| max|v| apart, times
// |scale| max|k| per product term, twice over (the two roundings). Such tensors are 0 or tiny in
// exact arithmetic (max below 1e-2), their relative error is meaningless, and the oracle (in
// double, with the same out) reproduces 0 exactly.
double cancellation_noise(const HostProblem& exact, const std::string& name) {
  const ProblemConfig& c = exact.config();
  const double scale = std::isnan(c.scale) ? 1.0 / std::sqrt(static_cast<double>(c.head_dim))
                                           : std::fabs(static_cast<double>(c.scale));
  const double other = max_abs(exact.read(name == "dq" ? "k" : "q"));
  return 2.0 * static_cast<double>(c.head_dim) * std::ldexp(1.0, -24) *
         max_abs(exact.read("dout")) * max_abs(exact.read("v")) * scale * other;
}

}  // namespace

OutputCheck check_output(const std::string& name, const std::vector<double>& device,
                         const std::vector<double>& oracle, const std::vector<double>& exact,
                         DType dtype, const HostProblem& inputs) {
  OutputCheck c;
  c.device_error = error_against(device, exact);
  c.oracle_error = error_against(oracle, exact);
  // fp32 also passes within 2x of the oracle fed the device's out (as 16-bit types do):
  // cancellation in dP - delta makes some gradients sensitive to out's last bit.
  const double ratio_bound = 2 * c.oracle_error + 1e-5;
  c.bound = dtype == DType::f32 ? std::max(1e-4, ratio_bound) : ratio_bound;
  const double exact_max = max_abs(exact);
  if ((name == "dq" || name == "dk") && exact_max < 1e-2) {
    c.bound = std::max(c.bound, cancellation_noise(inputs, name) / 1e-2);  // error_against's units
  }
  c.ok = c.device_error <= c.bound;
  std::ostringstream line;
  line << name << ": device error " << c.device_error << ", oracle error " << c.oracle_error
       << ", bound " << c.bound << " (exact max |x| " << exact_max << ")";
  c.line = line.str();
  return c;
}

AccuracyReport compare_with_oracle(const HostProblem& device, const HostProblem& oracle,
                                   const HostProblem& exact,
                                   const std::vector<std::string>& outputs) {
  AccuracyReport report;
  for (const std::string& name : outputs) {
    if (name == "lse") {  // float32 in every dtype, computed from fp32 scores
      const double error = relative_error(device.read_lse(), exact.read_lse());
      std::ostringstream line;
      line << "lse: device error " << error << ", bound 1e-4";
      report.lines.push_back(line.str());
      if (!(error <= 1e-4)) report.ok = false;
      continue;
    }
    const OutputCheck c = check_output(name, device.read(name), oracle.read(name), exact.read(name),
                                       device.config().dtype, exact);
    report.lines.push_back(c.line);
    if (!c.ok) report.ok = false;
    if (c.oracle_error > 1e-4) {  // below, the absolute floor rather than the ratio decides
      report.worst_ratio = std::max(report.worst_ratio, c.device_error / c.oracle_error);
    }
  }
  return report;
}

}  // namespace dilated::testing
