#include "problem.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <utility>

#include "core/dtype_convert.hpp"
#include "core/pattern_math.hpp"

namespace dilated::cli {
namespace {}  // namespace

std::string ProblemSpec::describe() const {
  std::ostringstream s;
  s << "b=" << batch << " n=" << seqlen << " h=" << heads << " h_kv=" << heads_kv
    << " d=" << head_dim << " " << dtype_name(dtype) << " " << mode_name(mode);
  if (mode == Mode::longnet && head_offsets != HeadOffsets::paper) {
    s << " offsets=" << head_offsets_name(head_offsets);
  }
  if (!patterns.empty()) {
    s << " segments=";
    for (size_t i = 0; i < patterns.size(); ++i) s << (i ? "," : "") << patterns[i].segment;
    s << " dilations=";
    for (size_t i = 0; i < patterns.size(); ++i) s << (i ? "," : "") << patterns[i].dilation;
  }
  if (causal) s << " causal";
  if (!std::isnan(scale)) s << " scale=" << scale;
  if (!block_patterns.empty()) s << " blocks=" << blocks_text() << " block_size=" << block_size;
  if (grid_height > 0) s << " grid=" << grid_height << "x" << grid_width;
  return s.str();
}

std::string ProblemSpec::blocks_text() const {
  std::ostringstream s;
  for (size_t i = 0; i < block_patterns.size(); ++i) {
    const BlockPattern& bp = block_patterns[i];
    s << (i ? "+" : "") << block_kind_name(bp.kind);
    if (bp.kind == BlockKind::dilated) {
      s << "(" << bp.size << "," << bp.reach << ")";
    } else if (bp.kind == BlockKind::random) {
      s << "(" << bp.size << ",seed " << bp.seed << ")";
    } else if (bp.kind != BlockKind::mask) {
      s << "(" << bp.size << ")";
    }
  }
  return s.str();
}

Params spec_params(const ProblemSpec& spec) {
  Params p;
  p.batch = spec.batch;
  p.seqlen = spec.seqlen;
  p.heads = spec.heads;
  p.heads_kv = spec.heads_kv;
  p.head_dim = p.head_dim_v = spec.head_dim;
  p.dtype = spec.dtype;
  p.mode = spec.mode;
  p.head_offsets = spec.head_offsets;
  p.causal = spec.causal;
  p.scale = spec.scale;
  p.num_threads = spec.threads;
  if (!set_patterns(p, spec.patterns).ok()) {
    // None or more than kMaxPatterns: validate() names the count.
    p.num_patterns = static_cast<int32_t>(std::min<size_t>(spec.patterns.size(), INT32_MAX));
  }
  if (!set_block_patterns(p, spec.block_patterns, spec.block_size).ok()) {
    p.blocks.num_patterns = static_cast<int32_t>(std::min<size_t>(spec.block_patterns.size(), 99));
  }
  if (spec.block_mask) {
    p.blocks.mask.data = spec.block_mask->data();
    p.blocks.mask.heads = spec.mask_heads;
    p.blocks.mask.blocks = ceil_div(spec.seqlen, spec.block_size);
  }
  p.grid.height = spec.grid_height;
  p.grid.width = spec.grid_width;
  return p;
}

Status validate_spec(const ProblemSpec& spec, Direction dir) {
  Params p = spec_params(spec);
  // Sizes and layer only: any non-null address stands in for the tensors.
  static float stand_in;
  Tensor t;
  t.data = &stand_in;
  p.q = p.k = p.v = p.out = p.dout = p.dq = p.dk = p.dv = t;
  p.lse = &stand_in;
  return validate(p, dir);
}

int64_t tensor_elements(const ProblemSpec& spec, int64_t heads) {
  return spec.batch * spec.seqlen * heads * spec.head_dim;
}

int64_t lse_elements(const ProblemSpec& spec) {
  return spec.batch * spec.heads * spec.seqlen;
}

int64_t problem_bytes(const ProblemSpec& spec, bool backward) {
  const int64_t item = dtype_size(spec.dtype);
  const int64_t q_like = tensor_elements(spec, spec.heads) * item;
  const int64_t kv_like = tensor_elements(spec, spec.heads_kv) * item;
  const int64_t forward = 2 * q_like + 2 * kv_like + lse_elements(spec) * 4;  // q out k v lse
  return backward ? forward + 2 * q_like + 2 * kv_like : forward;             // dout dq dk dv
}

// `count` values uniform in [-sqrt(3), sqrt(3)] (unit variance, like the inputs of a
// normalised layer), rounded to `dtype`, never 0 (a kernel that drops a term must show).
std::vector<float> random_values(DType dtype, int64_t count, uint64_t seed) {
  uint64_t state = seed;
  auto next = [&state] {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  std::vector<float> values(static_cast<size_t>(count));
  for (float& x : values) {
    do {
      const float unit = static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);
      x = static_cast<float>(round_through(dtype, (2.0f * unit - 1.0f) * 1.7320508f));
    } while (x == 0.0f);
  }
  return values;
}

HostTensors random_inputs(const ProblemSpec& spec, uint64_t seed, bool backward) {
  HostTensors t;
  t.q = random_values(spec.dtype, tensor_elements(spec, spec.heads), seed);
  t.k = random_values(spec.dtype, tensor_elements(spec, spec.heads_kv), seed + 1);
  t.v = random_values(spec.dtype, tensor_elements(spec, spec.heads_kv), seed + 2);
  if (backward) t.dout = random_values(spec.dtype, tensor_elements(spec, spec.heads), seed + 3);
  return t;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) backend_->release(ptr_);
}

Status DeviceBuffer::allocate(const Backend& backend, int64_t bytes) {
  if (ptr_) backend_->release(ptr_);
  backend_ = &backend;
  ptr_ = nullptr;
  bytes_ = 0;
  if (bytes == 0) return {};
  Status s = backend.allocate(bytes, &ptr_);
  if (!s.ok() || !ptr_) {
    ptr_ = nullptr;
    return s.ok() ? Status::Runtime("allocation of " + std::to_string(bytes) + " bytes failed") : s;
  }
  bytes_ = bytes;
  return {};
}

Status DeviceProblem::create(const Backend& backend, const ProblemSpec& spec, bool backward) {
  backend_ = &backend;
  spec_ = spec;
  backward_ = backward;
  params_ = spec_params(spec);
  params_.device = backend.device();
  const int64_t item = dtype_size(spec.dtype);
  const int64_t q_bytes = tensor_elements(spec, spec.heads) * item;
  const int64_t kv_bytes = tensor_elements(spec, spec.heads_kv) * item;
  struct Slot {
    DeviceBuffer* buffer;
    int64_t bytes;
  };
  std::vector<Slot> slots = {{&q_, q_bytes},
                             {&k_, kv_bytes},
                             {&v_, kv_bytes},
                             {&out_, q_bytes},
                             {&lse_, lse_elements(spec) * 4}};
  if (backward) {
    slots.insert(slots.end(),
                 {{&dout_, q_bytes}, {&dq_, q_bytes}, {&dk_, kv_bytes}, {&dv_, kv_bytes}});
  }
  for (const Slot& slot : slots) {
    if (Status s = slot.buffer->allocate(backend, slot.bytes); !s.ok()) return s;
  }
  Params& p = params_;
  p.q = contiguous_tensor(p, q_.data(), spec.heads, spec.head_dim);
  p.k = contiguous_tensor(p, k_.data(), spec.heads_kv, spec.head_dim);
  p.v = contiguous_tensor(p, v_.data(), spec.heads_kv, spec.head_dim);
  p.out = contiguous_tensor(p, out_.data(), spec.heads, spec.head_dim);
  p.lse = static_cast<float*>(lse_.data());
  if (backward) {
    p.dout = contiguous_tensor(p, dout_.data(), spec.heads, spec.head_dim);
    p.dq = contiguous_tensor(p, dq_.data(), spec.heads, spec.head_dim);
    p.dk = contiguous_tensor(p, dk_.data(), spec.heads_kv, spec.head_dim);
    p.dv = contiguous_tensor(p, dv_.data(), spec.heads_kv, spec.head_dim);
  }
  // A block mask lives where the tensors do.
  if (spec.block_mask) {
    if (Status s = mask_.allocate(backend, static_cast<int64_t>(spec.block_mask->size()));
        !s.ok()) {
      return s;
    }
    if (Status s = backend.copy_to_device(mask_.data(), spec.block_mask->data(), mask_.bytes());
        !s.ok()) {
      return s;
    }
    p.blocks.mask.data = static_cast<const uint8_t*>(mask_.data());
  }
  // The workspace the backend asks for, in its own memory (device launches never allocate).
  int64_t workspace = backend.workspace_bytes(p, Direction::forward);
  if (backward) workspace = std::max(workspace, backend.workspace_bytes(p, Direction::backward));
  if (Status s = workspace_.allocate(backend, workspace); !s.ok()) return s;
  p.workspace = workspace_.data();
  p.workspace_bytes = workspace_.bytes();
  return {};
}

Status DeviceProblem::upload_one(DeviceBuffer& buffer, const std::vector<float>& values) {
  if (static_cast<int64_t>(values.size()) * dtype_size(spec_.dtype) != buffer.bytes()) {
    return Status::Runtime("internal: host data does not match the device buffer");
  }
  if (spec_.dtype == DType::f32) {
    return backend_->copy_to_device(buffer.data(), values.data(), buffer.bytes());
  }
  std::vector<uint16_t> converted(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    store_element(spec_.dtype, converted.data(), static_cast<int64_t>(i), values[i]);
  }
  return backend_->copy_to_device(buffer.data(), converted.data(), buffer.bytes());
}

Status DeviceProblem::download_one(const DeviceBuffer& buffer, std::vector<float>* values) const {
  values->resize(static_cast<size_t>(buffer.bytes() / dtype_size(spec_.dtype)));
  if (spec_.dtype == DType::f32) {
    return backend_->copy_to_host(values->data(), buffer.data(), buffer.bytes());
  }
  std::vector<uint16_t> raw(values->size());
  if (Status s = backend_->copy_to_host(raw.data(), buffer.data(), buffer.bytes()); !s.ok()) {
    return s;
  }
  for (size_t i = 0; i < raw.size(); ++i) {
    (*values)[i] =
        static_cast<float>(load_element(spec_.dtype, raw.data(), static_cast<int64_t>(i)));
  }
  return {};
}

Status DeviceProblem::upload(const HostTensors& inputs) {
  for (auto [buffer, values] : {std::pair{&q_, &inputs.q}, {&k_, &inputs.k}, {&v_, &inputs.v}}) {
    if (Status s = upload_one(*buffer, *values); !s.ok()) return s;
  }
  if (backward_) return upload_one(dout_, inputs.dout);
  return {};
}

Status DeviceProblem::fill_random(uint64_t seed) {
  constexpr int64_t kBlock = int64_t{1} << 22;  // elements per random block
  std::vector<DeviceBuffer*> inputs = {&q_, &k_, &v_};
  if (backward_) inputs.push_back(&dout_);
  const int64_t item = dtype_size(spec_.dtype);
  for (DeviceBuffer* buffer : inputs) {
    const int64_t elements = buffer->bytes() / item;
    const std::vector<float> block = random_values(spec_.dtype, std::min(elements, kBlock), seed++);
    std::vector<unsigned char> raw(block.size() * static_cast<size_t>(item));
    for (size_t i = 0; i < block.size(); ++i) {
      store_element(spec_.dtype, raw.data(), static_cast<int64_t>(i), block[i]);
    }
    for (int64_t done = 0; done < elements; done += kBlock) {
      const int64_t bytes = std::min(kBlock, elements - done) * item;
      void* dst = static_cast<unsigned char*>(buffer->data()) + done * item;
      if (Status s = backend_->copy_to_device(dst, raw.data(), bytes); !s.ok()) return s;
    }
  }
  return {};
}

Status DeviceProblem::poison_outputs() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<DeviceBuffer*> outputs = {&out_};
  if (backward_) outputs.insert(outputs.end(), {&dq_, &dk_, &dv_});
  for (DeviceBuffer* buffer : outputs) {
    const std::vector<float> poison(static_cast<size_t>(buffer->bytes() / dtype_size(spec_.dtype)),
                                    nan);
    if (Status s = upload_one(*buffer, poison); !s.ok()) return s;
  }
  const std::vector<float> poison(static_cast<size_t>(lse_elements(spec_)), nan);
  return backend_->copy_to_device(lse_.data(), poison.data(), lse_.bytes());
}

Status DeviceProblem::download(HostOutputs* outputs) const {
  if (Status s = download_one(out_, &outputs->out); !s.ok()) return s;
  outputs->lse.resize(static_cast<size_t>(lse_elements(spec_)));
  if (Status s = backend_->copy_to_host(outputs->lse.data(), lse_.data(), lse_.bytes()); !s.ok()) {
    return s;
  }
  if (!backward_) return {};
  for (auto [buffer, values] :
       {std::pair{&dq_, &outputs->dq}, {&dk_, &outputs->dk}, {&dv_, &outputs->dv}}) {
    if (Status s = download_one(*buffer, values); !s.ok()) return s;
  }
  return {};
}

int64_t DeviceProblem::device_bytes() const {
  int64_t total = 0;
  for (const DeviceBuffer* b :
       {&q_, &k_, &v_, &out_, &lse_, &dout_, &dq_, &dk_, &dv_, &workspace_, &mask_}) {
    total += b->bytes();
  }
  return total;
}

}  // namespace dilated::cli
