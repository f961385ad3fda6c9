// One problem as the CLI describes it (sizes and layer, no memory), its host data as float
// values, and its tensors on a backend's device through the Backend's memory services, so that
// the same code drives host and CUDA backends.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "dilated/dilated.hpp"

namespace dilated::cli {

struct ProblemSpec {
  int64_t batch = 1;
  int64_t seqlen = 1;
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 64;
  DType dtype = DType::f32;
  std::vector<Pattern> patterns;
  Mode mode = Mode::longnet;
  HeadOffsets head_offsets = HeadOffsets::paper;
  bool causal = false;
  float scale = std::numeric_limits<float>::quiet_NaN();
  int32_t threads = 0;
  // Block patterns (a mask pattern reads block_mask: [mask_heads, NB, NB] bytes) and the
  // Hilbert grid (0 x 0: none).
  int64_t block_size = 64;
  std::vector<BlockPattern> block_patterns;
  std::shared_ptr<const std::vector<uint8_t>> block_mask;
  int64_t mask_heads = 1;
  int64_t grid_height = 0, grid_width = 0;

  std::string describe() const;     // "b=1 n=4096 h=12 h_kv=12 d=64 fp32 longnet ..."
  std::string blocks_text() const;  // "local(1)+random(4,seed 0)", empty without blocks
};

// Params with the spec's sizes and layer, host device, null tensor pointers (a block mask
// points at the spec's host copy). The pattern count is checked (1..16) here; everything else
// by dilated::validate.
Params spec_params(const ProblemSpec& spec);

// Validates the spec as a problem (dummy pointers): the library's message on failure.
Status validate_spec(const ProblemSpec& spec, Direction dir);

// Logical contents, contiguous [B, N, H, D] (lse [B, H, N]), as float.
struct HostTensors {
  std::vector<float> q, k, v, dout;
};
struct HostOutputs {
  std::vector<float> out, lse, dq, dk, dv;
};

// Inputs drawn uniformly with unit variance (never 0) and rounded to the spec's dtype, so that
// every backend and the oracle read the same values.
HostTensors random_inputs(const ProblemSpec& spec, uint64_t seed, bool backward);

// Memory on a backend's device, released through the same backend.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  Status allocate(const Backend& backend, int64_t bytes);
  void* data() const { return ptr_; }
  int64_t bytes() const { return bytes_; }

 private:
  const Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
};

// A problem's tensors, lse and workspace on a backend's device.
class DeviceProblem {
 public:
  // Allocates every tensor (the backward ones too when `backward`) and the workspace the
  // backend asks for. Fails with a runtime error when memory runs out.
  Status create(const Backend& backend, const ProblemSpec& spec, bool backward);
  // Converts to the spec's dtype and copies to the device.
  Status upload(const HostTensors& inputs);
  // Fills the inputs with random values (never 0) without a host copy of the whole problem:
  // one random block per tensor, repeated (for timing, where values do not matter).
  Status fill_random(uint64_t seed);
  // Fills out, lse and the gradients with NaN so that unwritten elements show.
  Status poison_outputs();
  Status download(HostOutputs* outputs) const;

  const Params& params() const { return params_; }
  // Bytes held on the device: tensors, lse and workspace.
  int64_t device_bytes() const;
  int64_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  Status upload_one(DeviceBuffer& buffer, const std::vector<float>& values);
  Status download_one(const DeviceBuffer& buffer, std::vector<float>* values) const;

  const Backend* backend_ = nullptr;
  ProblemSpec spec_;
  bool backward_ = false;
  Params params_;
  DeviceBuffer q_, k_, v_, out_, lse_, dout_, dq_, dk_, dv_, workspace_, mask_;
};

// Elements of a [B, N, heads, D] tensor of the spec, and of its lse.
int64_t tensor_elements(const ProblemSpec& spec, int64_t heads);
int64_t lse_elements(const ProblemSpec& spec);
// Bytes of every tensor and lse of the problem (forward, or forward and backward).
int64_t problem_bytes(const ProblemSpec& spec, bool backward);

}  // namespace dilated::cli
