#include "array_params.hpp"

#include <cmath>
#include <string>

#include "core/text.hpp"

namespace dilated_python {
namespace {

template <class... Parts>
std::string cat(const Parts&... parts) {
  return dilated::concat(parts...);
}

// What the binding needs to know about one array, whatever its framework.
struct View {
  const char* name;
  void* data;
  int64_t ndim;
  int64_t shape[4];
  int64_t strides[4];
  nb::dlpack::dtype dtype;
  int device_type;
  int device_id;
};

template <class Array>
View view_of(const char* name, const Array& a) {
  View v{};
  v.name = name;
  v.data = const_cast<void*>(static_cast<const void*>(a.data()));
  v.ndim = static_cast<int64_t>(a.ndim());
  if (v.ndim > 4) {
    throw nb::value_error(cat(name, ": rank ", v.ndim, ", expected 4 ([B, N, H, D])").c_str());
  }
  for (int64_t i = 0; i < v.ndim; ++i) {
    v.shape[i] = static_cast<int64_t>(a.shape(static_cast<size_t>(i)));
    v.strides[i] = a.stride(static_cast<size_t>(i));
  }
  v.dtype = a.dtype();
  v.device_type = a.device_type();
  v.device_id = a.device_id();
  return v;
}

std::string shape_text(const View& v) {
  std::string s = "[";
  for (int64_t i = 0; i < v.ndim; ++i) s += cat(i ? ", " : "", v.shape[i]);
  return s + "]";
}

std::string dtype_text(nb::dlpack::dtype t) {
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Float:
      return cat("float", int{t.bits});
    case nb::dlpack::dtype_code::Bfloat:
      return cat("bfloat", int{t.bits});
    case nb::dlpack::dtype_code::Int:
      return cat("int", int{t.bits});
    case nb::dlpack::dtype_code::UInt:
      return cat("uint", int{t.bits});
    default:
      return cat("dtype code ", int{t.code}, " with ", int{t.bits}, " bits");
  }
}

dilated::DType library_dtype(const View& v) {
  const auto code = static_cast<nb::dlpack::dtype_code>(v.dtype.code);
  if (v.dtype.lanes == 1) {
    if (code == nb::dlpack::dtype_code::Float && v.dtype.bits == 32) return dilated::DType::f32;
    if (code == nb::dlpack::dtype_code::Float && v.dtype.bits == 64) return dilated::DType::f64;
    if (code == nb::dlpack::dtype_code::Float && v.dtype.bits == 16) return dilated::DType::f16;
    if (code == nb::dlpack::dtype_code::Bfloat && v.dtype.bits == 16) return dilated::DType::bf16;
  }
  throw nb::type_error(cat(v.name, ": dtype ", dtype_text(v.dtype),
                           ", expected float32, float16, bfloat16 or float64")
                           .c_str());
}

dilated::Device library_device(const View& v) {
  if (v.device_type == nb::device::cpu::value) return dilated::Device::host;
  if (v.device_type == nb::device::cuda::value) return dilated::Device::cuda;
  throw nb::type_error(
      cat(v.name, ": DLPack device type ", v.device_type, ", expected CPU or CUDA memory").c_str());
}

// A [B, N, heads, dim] array with a contiguous last dimension; returns its Tensor view.
dilated::Tensor tensor_of(const View& v, int64_t batch, int64_t seqlen, int64_t heads, int64_t dim,
                          const char* heads_name) {
  if (v.ndim != 4) {
    throw nb::value_error(
        cat(v.name, ": shape ", shape_text(v), ", expected rank 4 [B, N, H, D]").c_str());
  }
  const int64_t expected[4] = {batch, seqlen, heads, dim};
  const char* what[4] = {"B", "N", heads_name, "D"};
  for (int i = 0; i < 4; ++i) {
    if (v.shape[i] != expected[i]) {
      throw nb::value_error(cat(v.name, ": shape ", shape_text(v), ", expected ", what[i], " = ",
                                expected[i], " in dimension ", i)
                                .c_str());
    }
  }
  if (v.shape[3] > 1 && v.strides[3] != 1) {
    throw nb::value_error(cat(v.name, ": stride ", v.strides[3],
                              " in the last dimension, expected 1 (contiguous head_dim)")
                              .c_str());
  }
  for (int i = 0; i < 3; ++i) {
    if (v.strides[i] < 0) {
      throw nb::value_error(
          cat(v.name, ": stride ", v.strides[i], " in dimension ", i, ", expected >= 0").c_str());
    }
  }
  dilated::Tensor t;
  t.data = v.data;
  t.batch_stride = v.strides[0];
  t.row_stride = v.strides[1];
  t.head_stride = v.strides[2];
  return t;
}

void check_same_kind(const View& reference, const View& v, bool same_dtype) {
  if (same_dtype && (v.dtype != reference.dtype)) {
    throw nb::type_error(cat(v.name, ": dtype ", dtype_text(v.dtype), ", expected ",
                             dtype_text(reference.dtype), " like ", reference.name)
                             .c_str());
  }
  if (v.device_type != reference.device_type || v.device_id != reference.device_id) {
    throw nb::type_error(cat(v.name, ": on device (type ", v.device_type, ", id ", v.device_id,
                             "), expected the device of ", reference.name, " (type ",
                             reference.device_type, ", id ", reference.device_id, ")")
                             .c_str());
  }
}

void check_lse(const View& lse, int64_t batch, int64_t heads, int64_t seqlen) {
  const auto code = static_cast<nb::dlpack::dtype_code>(lse.dtype.code);
  if (code != nb::dlpack::dtype_code::Float || lse.dtype.bits != 32 || lse.dtype.lanes != 1) {
    throw nb::type_error(cat("lse: dtype ", dtype_text(lse.dtype), ", expected float32").c_str());
  }
  const int64_t expected[3] = {batch, heads, seqlen};
  const bool contiguous = lse.ndim == 3 && lse.strides[2] == 1 && lse.strides[1] == seqlen &&
                          lse.strides[0] == heads * seqlen;
  if (lse.ndim != 3 || lse.shape[0] != expected[0] || lse.shape[1] != expected[1] ||
      lse.shape[2] != expected[2] || !contiguous) {
    throw nb::value_error(cat("lse: shape ", shape_text(lse),
                              ", expected a contiguous [B, H, N] = [", batch, ", ", heads, ", ",
                              seqlen, "]")
                              .c_str());
  }
}

// The block patterns, their mask and the grid.
void set_blocks(const View& q, const LayerOptions& options, dilated::Params& p) {
  const std::vector<int64_t>& flat = options.block_patterns;
  if (flat.size() % 4 != 0) {
    throw nb::value_error(
        cat("block_patterns: ", flat.size(), " values, expected (kind, size, reach, seed) groups")
            .c_str());
  }
  std::vector<dilated::BlockPattern> patterns;
  for (size_t i = 0; i < flat.size(); i += 4) {
    patterns.push_back({static_cast<dilated::BlockKind>(flat[i]), flat[i + 1], flat[i + 2],
                        static_cast<uint64_t>(flat[i + 3])});
  }
  if (dilated::Status s = dilated::set_block_patterns(p, patterns, options.block_size); !s.ok()) {
    throw nb::value_error(s.message().c_str());
  }
  if (options.block_mask) {
    const View m = view_of("block_mask", *options.block_mask);
    check_same_kind(q, m, false);
    const auto code = static_cast<nb::dlpack::dtype_code>(m.dtype.code);
    const bool bytes =
        (code == nb::dlpack::dtype_code::Bool || code == nb::dlpack::dtype_code::UInt) &&
        m.dtype.bits == 8 && m.dtype.lanes == 1;
    if (!bytes) {
      throw nb::type_error(
          cat("block_mask: dtype ", dtype_text(m.dtype), ", expected bool (or uint8)").c_str());
    }
    const int64_t blocks = m.ndim == 3 ? m.shape[1] : 0;
    const bool contiguous = m.ndim == 3 && (m.shape[2] <= 1 || m.strides[2] == 1) &&
                            m.strides[1] == m.shape[2] && m.strides[0] == m.shape[1] * m.shape[2];
    if (m.ndim != 3 || m.shape[2] != blocks || !contiguous) {
      throw nb::value_error(
          cat("block_mask: shape ", shape_text(m), ", expected a contiguous [1 or H, NB, NB]")
              .c_str());
    }
    p.blocks.mask.data = static_cast<const uint8_t*>(m.data);
    p.blocks.mask.heads = m.shape[0];
    p.blocks.mask.blocks = blocks;
  }
  if (!options.grid.empty()) {
    if (options.grid.size() != 2) {
      throw nb::value_error(
          cat("grid: ", options.grid.size(), " values, expected (height, width)").c_str());
    }
    p.grid.height = options.grid[0];
    p.grid.width = options.grid[1];
  }
}

}  // namespace

dilated::Params make_params(const Arrays& arrays, const LayerOptions& options) {
  const View q = view_of("q", *arrays.q);
  const View k = view_of("k", *arrays.k);
  const View v = view_of("v", *arrays.v);
  const View out = view_of("out", *arrays.out);
  if (q.ndim != 4) {
    throw nb::value_error(
        cat("q: shape ", shape_text(q), ", expected rank 4 [B, N, H, D]").c_str());
  }
  if (k.ndim != 4 || v.ndim != 4) {
    const View& bad = k.ndim != 4 ? k : v;
    throw nb::value_error(
        cat(bad.name, ": shape ", shape_text(bad), ", expected rank 4 [B, N, Hkv, D]").c_str());
  }

  dilated::Params p;
  p.dtype = library_dtype(q);
  p.device = library_device(q);
  for (const View* other : {&k, &v, &out}) check_same_kind(q, *other, true);
  p.batch = q.shape[0];
  p.seqlen = q.shape[1];
  p.heads = q.shape[2];
  p.head_dim = q.shape[3];
  p.heads_kv = k.shape[2];
  p.head_dim_v = v.shape[3];
  p.q = tensor_of(q, p.batch, p.seqlen, p.heads, p.head_dim, "H");
  p.k = tensor_of(k, p.batch, p.seqlen, p.heads_kv, p.head_dim, "Hkv");
  p.v = tensor_of(v, p.batch, p.seqlen, p.heads_kv, p.head_dim_v, "Hkv");
  p.out = tensor_of(out, p.batch, p.seqlen, p.heads, p.head_dim_v, "H");

  if (arrays.lse) {
    const View lse = view_of("lse", *arrays.lse);
    check_same_kind(q, lse, false);
    check_lse(lse, p.batch, p.heads, p.seqlen);
    p.lse = static_cast<float*>(lse.data);
  }
  if (arrays.dout) {
    const View dout = view_of("dout", *arrays.dout);
    const View dq = view_of("dq", *arrays.dq);
    const View dk = view_of("dk", *arrays.dk);
    const View dv = view_of("dv", *arrays.dv);
    for (const View* other : {&dout, &dq, &dk, &dv}) check_same_kind(q, *other, true);
    p.dout = tensor_of(dout, p.batch, p.seqlen, p.heads, p.head_dim_v, "H");
    p.dq = tensor_of(dq, p.batch, p.seqlen, p.heads, p.head_dim, "H");
    p.dk = tensor_of(dk, p.batch, p.seqlen, p.heads_kv, p.head_dim, "Hkv");
    p.dv = tensor_of(dv, p.batch, p.seqlen, p.heads_kv, p.head_dim_v, "Hkv");
  }

  if (options.segment_lengths.size() != options.dilation_rates.size()) {
    throw nb::value_error(cat("dilation_rates: ", options.dilation_rates.size(),
                              " values, expected one per segment length (",
                              options.segment_lengths.size(), ")")
                              .c_str());
  }
  std::vector<dilated::Pattern> patterns;
  for (size_t i = 0; i < options.segment_lengths.size(); ++i) {
    patterns.push_back({options.segment_lengths[i], options.dilation_rates[i]});
  }
  if (dilated::Status s = dilated::set_patterns(p, patterns); !s.ok()) {
    throw nb::value_error(s.message().c_str());
  }
  if (!dilated::parse_mode(options.mode, &p.mode)) {
    throw nb::value_error(
        cat("mode = '", options.mode, "': expected 'longnet' or 'head_groups'").c_str());
  }
  if (!dilated::parse_head_offsets(options.head_offsets, &p.head_offsets)) {
    throw nb::value_error(
        cat("head_offsets = '", options.head_offsets, "': expected 'paper' or 'grouped'").c_str());
  }
  p.causal = options.causal;
  p.scale = static_cast<float>(options.scale);
  p.num_threads = options.num_threads;
  p.deterministic = options.deterministic;
  set_blocks(q, options, p);
  return p;
}

LayerOptions dilated_options(std::vector<int64_t> segments, std::vector<int64_t> dilations,
                             std::string mode, bool causal, std::optional<double> scale,
                             std::string head_offsets, int32_t num_threads) {
  LayerOptions o;
  o.segment_lengths = std::move(segments);
  o.dilation_rates = std::move(dilations);
  o.mode = std::move(mode);
  o.causal = causal;
  o.scale = scale ? *scale : std::nan("");
  o.head_offsets = std::move(head_offsets);
  o.num_threads = num_threads;
  return o;
}

}  // namespace dilated_python
