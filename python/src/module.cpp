// dilated_attention._C: a thin nanobind layer over the C++ library. Arrays become one Params
// (array_params.cpp), the library runs on the caller's stream, and a failed Status becomes a
// Python exception carrying the library's message.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "array_params.hpp"
#include "dilated/dilated.hpp"
#include "distributed.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace dilated_python {
namespace {

void raise_for(const dilated::Status& s) {
  if (s.ok()) return;
  if (s.code() == dilated::StatusCode::invalid_argument) throw nb::value_error(s.message().c_str());
  throw std::runtime_error(s.message());
}

// Device backends never allocate in a launch: the caller's allocator (for torch a uint8
// tensor on the same device and stream) provides the scratch memory, kept alive by `holder`.
void attach_workspace(dilated::Params& p, dilated::Direction dir, const std::string& backend,
                      const nb::object& allocate, nb::object& holder) {
  if (p.device != dilated::Device::cuda) return;  // host backends allocate their own
  int64_t bytes = 0;
  raise_for(dilated::workspace_bytes(p, dir, backend, &bytes));
  if (bytes == 0) return;
  if (allocate.is_none()) {
    throw nb::value_error(("workspace_allocator: None, but the backend needs " +
                           std::to_string(bytes) + " bytes of device memory")
                              .c_str());
  }
  holder = allocate(bytes);
  const OutArray workspace = nb::cast<OutArray>(holder);
  if (workspace.nbytes() < static_cast<size_t>(bytes) ||
      workspace.device_type() != nb::device::cuda::value) {
    throw nb::value_error(("workspace_allocator: returned an array of " +
                           std::to_string(workspace.nbytes()) + " bytes, expected " +
                           std::to_string(bytes) + " bytes of CUDA memory")
                              .c_str());
  }
  p.workspace = workspace.data();
  p.workspace_bytes = bytes;
}

void run(dilated::Params& p, dilated::Direction dir, const std::string& backend, uintptr_t stream,
         const nb::object& allocate) {
  nb::object workspace_holder;
  attach_workspace(p, dir, backend, allocate, workspace_holder);
  const dilated::Stream s{reinterpret_cast<void*>(stream)};
  dilated::Status status;
  {
    nb::gil_scoped_release no_gil;
    status = dir == dilated::Direction::forward ? dilated::forward(p, s, backend)
                                                : dilated::backward(p, s, backend);
  }
  raise_for(status);
}

// The block options as the Python layer passes them.
struct BlockArgs {
  int64_t block_size = 64;
  std::vector<int64_t> patterns;
  std::optional<InArray> mask;
  std::vector<int64_t> grid;
};

LayerOptions options_of(std::vector<int64_t> segments, std::vector<int64_t> dilations,
                        std::string mode, bool causal, std::optional<double> scale,
                        std::string head_offsets, int32_t num_threads, bool deterministic,
                        const BlockArgs& blocks) {
  LayerOptions o = dilated_options(std::move(segments), std::move(dilations), std::move(mode),
                                   causal, scale, std::move(head_offsets), num_threads);
  o.block_size = blocks.block_size;
  o.block_patterns = blocks.patterns;
  o.block_mask = blocks.mask ? &*blocks.mask : nullptr;
  o.grid = blocks.grid;
  o.deterministic = deterministic;
  return o;
}

void forward(const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
             const std::optional<OutArray>& lse, std::vector<int64_t> segment_lengths,
             std::vector<int64_t> dilation_rates, std::string mode, bool causal,
             std::optional<double> scale, std::string head_offsets, std::string backend,
             uintptr_t stream, int32_t num_threads, const nb::object& workspace_allocator,
             int64_t block_size, std::vector<int64_t> block_patterns,
             std::optional<InArray> block_mask, std::vector<int64_t> grid) {
  const BlockArgs blocks{block_size, std::move(block_patterns), std::move(block_mask),
                         std::move(grid)};
  const Arrays a = forward_arrays(q, k, v, out, lse ? &*lse : nullptr);
  dilated::Params p = make_params(
      a, options_of(std::move(segment_lengths), std::move(dilation_rates), std::move(mode), causal,
                    scale, std::move(head_offsets), num_threads, false, blocks));
  run(p, dilated::Direction::forward, backend, stream, workspace_allocator);
}

void backward(const InArray& dout, const InArray& q, const InArray& k, const InArray& v,
              const OutArray& out, const OutArray& lse, const OutArray& dq, const OutArray& dk,
              const OutArray& dv, std::vector<int64_t> segment_lengths,
              std::vector<int64_t> dilation_rates, std::string mode, bool causal,
              std::optional<double> scale, std::string head_offsets, std::string backend,
              uintptr_t stream, int32_t num_threads, bool deterministic,
              const nb::object& workspace_allocator, int64_t block_size,
              std::vector<int64_t> block_patterns, std::optional<InArray> block_mask,
              std::vector<int64_t> grid) {
  const BlockArgs blocks{block_size, std::move(block_patterns), std::move(block_mask),
                         std::move(grid)};
  const Arrays a = backward_arrays(dout, q, k, v, out, lse, dq, dk, dv);
  dilated::Params p = make_params(
      a, options_of(std::move(segment_lengths), std::move(dilation_rates), std::move(mode), causal,
                    scale, std::move(head_offsets), num_threads, deterministic, blocks));
  run(p, dilated::Direction::backward, backend, stream, workspace_allocator);
}

// The compiled-in backends with their device and, when they cannot run here, why not.
nb::list backend_list() {
  nb::list result;
  for (const dilated::Backend* b : dilated::backends()) {
    nb::dict d;
    d["name"] = b->name();
    d["description"] = b->description();
    d["device"] = b->device() == dilated::Device::cuda ? "cuda" : "cpu";
    d["unavailable_reason"] = b->unavailable_reason();
    result.append(d);
  }
  return result;
}

}  // namespace
}  // namespace dilated_python

NB_MODULE(_C, m) {
  using namespace dilated_python;
  m.doc() = "dilated-attention C++ core (internal; use dilated_attention.functional)";
  m.def("forward", &forward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a.none(), "segment_lengths"_a,
        "dilation_rates"_a, "mode"_a, "is_causal"_a, "scale"_a.none(), "head_offsets"_a,
        "backend"_a = "auto", "stream"_a = 0, "num_threads"_a = 0,
        "workspace_allocator"_a.none() = nb::none(), "block_size"_a = 64,
        "block_patterns"_a = std::vector<int64_t>{}, "block_mask"_a.none() = nb::none(),
        "grid"_a = std::vector<int64_t>{},
        "Dilated attention forward into `out` [B, N, H, Dv] and `lse` [B, H, N] (float32).");
  m.def("backward", &backward, "dout"_a, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dq"_a, "dk"_a,
        "dv"_a, "segment_lengths"_a, "dilation_rates"_a, "mode"_a, "is_causal"_a, "scale"_a.none(),
        "head_offsets"_a, "backend"_a = "auto", "stream"_a = 0, "num_threads"_a = 0,
        "deterministic"_a = false, "workspace_allocator"_a.none() = nb::none(), "block_size"_a = 64,
        "block_patterns"_a = std::vector<int64_t>{}, "block_mask"_a.none() = nb::none(),
        "grid"_a = std::vector<int64_t>{}, "Gradients of sum(out * dout) into dq, dk, dv.");
  m.def(
      "hilbert_order",
      [](int64_t height, int64_t width) {
        if (height < 1 || width < 1) {
          throw nb::value_error(("grid = (" + std::to_string(height) + ", " +
                                 std::to_string(width) + "): expected positive sides")
                                    .c_str());
        }
        return dilated::hilbert_order(height, width);
      },
      "height"_a, "width"_a,
      "The generalised Hilbert curve over a height x width grid: element i is the row-major "
      "index of the i-th cell it visits.");
  m.def("backends", &backend_list, "The compiled-in backends, best first within each device.");
  m.attr("cuda_compiled") = static_cast<bool>(DILATED_WITH_CUDA);
  register_distributed(m);
}
