// Fuzzer bytes decoded into every Params field, with small real buffers behind the pointers.
// validate() must refuse with a message or accept; when it accepts a problem that fits the
// buffers and is small, the reference runs it forward (and backward) and must succeed with
// finite outputs. No crash, no hang, no sanitizer report.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/dtype_convert.hpp"
#include "core/pattern_math.hpp"
#include "dilated/dilated.hpp"

namespace {

using namespace dilated;

// A finding that is not a crash: say which promise broke, then abort for libFuzzer.
[[noreturn]] void broken(const char* promise, const Params& p) {
  std::fprintf(
      stderr,
      "params_fuzzer: %s (B=%lld N=%lld H=%lld Hkv=%lld D=%lld Dv=%lld dtype=%d scale=%g)\n",
      promise, static_cast<long long>(p.batch), static_cast<long long>(p.seqlen),
      static_cast<long long>(p.heads), static_cast<long long>(p.heads_kv),
      static_cast<long long>(p.head_dim), static_cast<long long>(p.head_dim_v),
      static_cast<int>(p.dtype), static_cast<double>(p.scale));
  std::abort();
}

constexpr int64_t kBufferBytes = 16384;  // behind every tensor pointer
constexpr int64_t kMaxWork = 200000;     // (row, key) bound for running the oracle

// Sizes: mostly small and plausible, sometimes anything an int64 holds, powers of two, or
// just below INT64_MAX (where a + b overflows).
int64_t size_value(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0:
      return in.ConsumeIntegralInRange<int64_t>(-1, 4);
    case 1:
      return in.ConsumeIntegralInRange<int64_t>(0, 40);
    case 2:
      return in.ConsumeIntegral<int64_t>();
    case 3:
      return int64_t{1} << in.ConsumeIntegralInRange<int>(0, 62);
    default:
      return INT64_MAX - in.ConsumeIntegralInRange<int64_t>(0, 64);
  }
}

template <class Enum>
Enum enum_value(FuzzedDataProvider& in, int valid_count) {
  // Mostly valid values; a raw int32 now and then, as a C caller could pass.
  if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
    return static_cast<Enum>(in.ConsumeIntegral<int32_t>());
  return static_cast<Enum>(in.ConsumeIntegralInRange<int>(0, valid_count - 1));
}

int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

struct Slot {
  const char* name;
  Tensor* tensor;
  int64_t heads;
  int64_t dim;
  bool output;
  std::vector<unsigned char> storage;
};

// Contiguous strides or fuzzed ones; the pointer is null now and then.
void fuzz_tensor(FuzzedDataProvider& in, const Params& p, Slot& slot) {
  slot.storage.assign(kBufferBytes, 0);
  Tensor& t = *slot.tensor;
  t.data = in.ConsumeIntegralInRange<int>(0, 31) == 0 ? nullptr : slot.storage.data();
  if (in.ConsumeBool()) {
    t.head_stride = slot.dim;
    t.row_stride = saturating_mul(slot.heads, slot.dim);
    t.batch_stride = saturating_mul(p.seqlen, t.row_stride);
  } else {
    t.batch_stride = size_value(in);
    t.row_stride = size_value(in);
    t.head_stride = size_value(in);
  }
}

// Elements a tensor's strides reach, as a 128-bit number (no overflow on any int64 input).
__int128 reach(const Params& p, const Slot& slot) {
  const __int128 rows = p.cu_seqlens ? p.total_tokens : p.seqlen;
  const __int128 batches = p.cu_seqlens ? 1 : p.batch;
  const Tensor& t = *slot.tensor;
  return (batches - 1) * t.batch_stride + (rows - 1) * t.row_stride +
         (__int128{slot.heads} - 1) * t.head_stride + slot.dim;
}

// Fills inputs with values in [-1, 1] and outputs with NaN, in the problem's dtype.
void fill(const Params& p, Slot& slot, uint32_t seed) {
  const int64_t count = kBufferBytes / dtype_size(p.dtype);
  for (int64_t i = 0; i < count; ++i) {
    seed = seed * 1664525u + 1013904223u;
    const double value = slot.output ? NAN : (static_cast<double>(seed >> 8) / 8388608.0) - 1.0;
    store_element(p.dtype, slot.storage.data(), i, value);
  }
}

// Every logical element of an output must be finite.
bool all_finite(const Params& p, const Slot& slot) {
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t t = 0; t < seq_length(p, b); ++t) {
      for (int64_t h = 0; h < slot.heads; ++h) {
        const int64_t base = row_offset(p, *slot.tensor, b, t, h);
        for (int64_t d = 0; d < slot.dim; ++d) {
          if (!std::isfinite(load_element(p.dtype, slot.tensor->data, base + d))) return false;
        }
      }
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Params p;
  p.batch = size_value(in);
  p.seqlen = size_value(in);
  p.heads = size_value(in);
  p.heads_kv = in.ConsumeBool() ? p.heads : size_value(in);
  p.head_dim = size_value(in);
  p.head_dim_v = in.ConsumeBool() ? p.head_dim : size_value(in);
  p.dtype = enum_value<DType>(in, 3);
  p.device = in.ConsumeIntegralInRange<int>(0, 7) == 0 ? enum_value<Device>(in, 2) : Device::host;
  p.mode = enum_value<Mode>(in, 2);
  p.head_offsets = enum_value<HeadOffsets>(in, 2);
  p.causal = in.ConsumeBool();
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      break;  // NaN: 1/sqrt(D)
    case 1:
      p.scale = in.ConsumeFloatingPointInRange<float>(-16.0f, 16.0f);
      break;
    default:
      p.scale = in.ConsumeFloatingPoint<float>();  // also Inf and huge values
  }
  p.num_patterns = in.ConsumeIntegralInRange<int32_t>(-1, kMaxPatterns + 1);
  for (Pattern& pat : p.patterns) {
    pat.segment = size_value(in);
    pat.dilation = in.ConsumeBool() ? in.ConsumeIntegralInRange<int64_t>(-1, 9) : size_value(in);
  }
  p.num_threads = in.ConsumeIntegralInRange<int32_t>(-1, 2);
  p.deterministic = in.ConsumeBool();

  // Varlen: a real offsets array of batch + 1 entries (validate reads all of them).
  std::vector<int32_t> cu_seqlens;
  if (p.batch >= 1 && p.batch <= 16 && in.ConsumeIntegralInRange<int>(0, 3) == 0) {
    cu_seqlens.push_back(in.ConsumeBool() ? 0 : in.ConsumeIntegral<int32_t>());
    for (int64_t b = 0; b < p.batch; ++b) {
      const int32_t step = in.ConsumeBool() ? in.ConsumeIntegralInRange<int32_t>(-2, 40)
                                            : in.ConsumeIntegral<int32_t>();
      int32_t next;
      if (__builtin_add_overflow(cu_seqlens.back(), step, &next)) next = step;
      cu_seqlens.push_back(next);
    }
    p.cu_seqlens = cu_seqlens.data();
    p.total_tokens = in.ConsumeBool() ? cu_seqlens.back() : size_value(in);
  }

  std::vector<unsigned char> workspace;
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    p.workspace_bytes = size_value(in);
    workspace.assign(64, 0);
    if (in.ConsumeBool()) p.workspace = workspace.data();
  }

  Slot slots[] = {
      {"q", &p.q, p.heads, p.head_dim, false, {}},
      {"k", &p.k, p.heads_kv, p.head_dim, false, {}},
      {"v", &p.v, p.heads_kv, p.head_dim_v, false, {}},
      {"dout", &p.dout, p.heads, p.head_dim_v, false, {}},
      {"out", &p.out, p.heads, p.head_dim_v, true, {}},
      {"dq", &p.dq, p.heads, p.head_dim, true, {}},
      {"dk", &p.dk, p.heads_kv, p.head_dim, true, {}},
      {"dv", &p.dv, p.heads_kv, p.head_dim_v, true, {}},
  };
  for (Slot& slot : slots) fuzz_tensor(in, p, slot);
  std::vector<float> lse(kBufferBytes / sizeof(float));
  if (in.ConsumeIntegralInRange<int>(0, 15) != 0) p.lse = lse.data();
  const Direction dir = in.ConsumeBool() ? Direction::backward : Direction::forward;
  const uint32_t seed = in.ConsumeIntegral<uint32_t>();

  const Status valid = validate(p, dir);
  if (!valid.ok()) {
    if (valid.message().empty() || valid.code() != StatusCode::invalid_argument) {
      broken("a refusal without a message or with the wrong code", p);
    }
    return 0;
  }
  // Accepted problems have a work count (what bench divides by); cheap for a few heads.
  if (p.heads <= 64 && !p.cu_seqlens) (void)forward_flops(p);

  // Run the oracle only on what fits the buffers and finishes quickly.
  if (p.device != Device::host) {
    if (forward(p, {}, "reference").ok()) broken("the host oracle ran on device tensors", p);
    return 0;
  }
  const __int128 capacity = kBufferBytes / dtype_size(p.dtype);
  for (const Slot& slot : slots) {
    if (reach(p, slot) > capacity) return 0;
  }
  const __int128 tokens = p.cu_seqlens ? p.total_tokens : __int128{p.batch} * p.seqlen;
  if (tokens * p.heads > static_cast<__int128>(lse.size())) return 0;
  if (tokens * p.heads * p.num_patterns * p.seqlen > kMaxWork) return 0;

  for (Slot& slot : slots) fill(p, slot, seed + static_cast<uint32_t>(slot.name[0]));
  if (Status s = forward(p, {}, "reference"); !s.ok()) broken(s.message().c_str(), p);
  // Inputs in [-1, 1] and a moderate scale: out is a convex combination of v rows, lse is
  // finite or -inf (an unselected row).
  const bool moderate = std::isnan(p.scale) || std::fabs(p.scale) <= 16.0f;
  if (moderate && !all_finite(p, slots[4])) broken("non-finite out", p);
  for (int64_t i = 0; moderate && p.lse && i < static_cast<int64_t>(tokens * p.heads); ++i) {
    if (std::isnan(lse[i]) || lse[i] == INFINITY) broken("lse NaN or +inf", p);
  }
  if (dir == Direction::backward) {
    if (Status s = backward(p, {}, "reference"); !s.ok()) broken(s.message().c_str(), p);
    // fp16 gradients may overflow its range legitimately; f32 and bf16 have f32's range.
    if (moderate && p.dtype != DType::f16) {
      for (int s = 5; s < 8; ++s) {
        if (!all_finite(p, slots[s])) broken("non-finite gradient", p);
      }
    }
  }
  return 0;
}
