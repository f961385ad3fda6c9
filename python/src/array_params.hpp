// Turns DLPack arrays (torch, NumPy, CuPy, JAX through nanobind) into one dilated::Params.
// This is the only place where the binding reads shapes, strides, dtypes and devices.
#pragma once

#include <nanobind/ndarray.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dilated/dilated.hpp"

namespace dilated_python {

namespace nb = nanobind;

using InArray = nb::ndarray<nb::ro>;  // read-only inputs (NumPy read-only arrays are fine)
using OutArray = nb::ndarray<>;

// The layer's options as Python passes them.
struct LayerOptions {
  std::vector<int64_t> segment_lengths;
  std::vector<int64_t> dilation_rates;
  std::string mode = "longnet";
  std::string head_offsets = "paper";
  bool causal = false;
  double scale = 0.0;  // NaN means 1/sqrt(head_dim)
  int32_t num_threads = 0;
  bool deterministic = false;
  // Block patterns as (kind, size, reach, seed) quadruples, kind a dilated::BlockKind value;
  // a mask pattern reads block_mask ([1 or H, NB, NB] bool or uint8, on q's device).
  int64_t block_size = 64;
  std::vector<int64_t> block_patterns;
  const InArray* block_mask = nullptr;
  std::vector<int64_t> grid;  // empty, or {height, width}
};

// The arrays of one call: forward fills q..lse, backward also dout..dv.
struct Arrays {
  const InArray* q = nullptr;
  const InArray* k = nullptr;
  const InArray* v = nullptr;
  const OutArray* out = nullptr;  // written in forward, read in backward
  const OutArray* lse = nullptr;  // optional in forward
  const InArray* dout = nullptr;
  const OutArray* dq = nullptr;
  const OutArray* dk = nullptr;
  const OutArray* dv = nullptr;
};

// The dilated part of a layer's options (no block patterns, not deterministic), as both
// bindings take it from Python (scale None: 1/sqrt(head_dim)).
LayerOptions dilated_options(std::vector<int64_t> segments, std::vector<int64_t> dilations,
                             std::string mode, bool causal, std::optional<double> scale,
                             std::string head_offsets, int32_t num_threads);

// A forward call's arrays (lse may be null) and a backward call's.
inline Arrays forward_arrays(const InArray& q, const InArray& k, const InArray& v,
                             const OutArray& out, const OutArray* lse) {
  Arrays a;
  a.q = &q;
  a.k = &k;
  a.v = &v;
  a.out = &out;
  a.lse = lse;
  return a;
}
inline Arrays backward_arrays(const InArray& dout, const InArray& q, const InArray& k,
                              const InArray& v, const OutArray& out, const OutArray& lse,
                              const OutArray& dq, const OutArray& dk, const OutArray& dv) {
  Arrays a = forward_arrays(q, k, v, out, &lse);
  a.dout = &dout;
  a.dq = &dq;
  a.dk = &dk;
  a.dv = &dv;
  return a;
}

// Checks ranks, shapes, dtypes, devices and strides (raising TypeError / ValueError that name
// the argument), then fills every Params field. The library's validate() runs afterwards.
dilated::Params make_params(const Arrays& arrays, const LayerOptions& options);

}  // namespace dilated_python
