// The tensors a rank computes with. float32 and float64 problems use the caller's tensors in
// place; 16-bit ones are copied to float32 first, so that partial results (the shard's own keys,
// each remote part) merge in float32 and round to 16 bits once, at the end.
#pragma once

#include <cstdint>
#include <vector>

#include "dilated/backend.hpp"
#include "dilated/params.hpp"

namespace dilated::dist {

// Element offset of (b, t, head) in a non-varlen tensor.
inline int64_t element_offset(const Tensor& x, int64_t b, int64_t t, int64_t head) {
  return b * x.batch_stride + t * x.row_stride + head * x.head_stride;
}

// Tensor `x` from element `offset` on, rows `row_step` rows apart and heads `head_step` heads
// apart: a dilated view of some rows and heads, no copy.
Tensor strided_view(const Tensor& x, DType dtype, int64_t offset, int64_t row_step,
                    int64_t head_step);

// A contiguous [batch, rows, heads, dim] tensor over `data`.
Tensor contiguous_view(void* data, int64_t rows, int64_t heads, int64_t dim);

// Copies [batch, rows, heads, dim] from one tensor to another, converting the element type.
void copy_rows(const Tensor& from, DType from_type, const Tensor& to, DType to_type, int64_t batch,
               int64_t rows, int64_t heads, int64_t dim);

class ShardTensors {
 public:
  // `local` is the caller's shard problem. The returned params() is that problem in the
  // compute type (float32 for 16-bit inputs), windowed as rows [offset, offset + seqlen) of a
  // global_seqlen sequence; its tensors are the caller's or float32 copies of the inputs
  // `dir` reads (outputs are allocated, not copied).
  ShardTensors(const Params& local, int64_t global_seqlen, int64_t offset, Direction dir);
  ShardTensors(const ShardTensors&) = delete;
  ShardTensors& operator=(const ShardTensors&) = delete;

  const Params& params() const { return work_; }
  DType compute_type() const { return work_.dtype; }
  // Rounds the outputs of `dir` into the caller's tensors (no-op when they are the caller's).
  void store_outputs(Direction dir) const;

 private:
  Tensor copy_of(const Tensor& t, int64_t rows, int64_t heads, int64_t dim,
                 std::vector<float>* storage) const;
  Tensor space_for(int64_t rows, int64_t heads, int64_t dim, std::vector<float>* storage) const;

  Params local_;
  Params work_;
  std::vector<float> q_, k_, v_, out_, dout_, dq_, dk_, dv_, lse_;
};

}  // namespace dilated::dist
