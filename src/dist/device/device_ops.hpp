// Row-wise kernels of sequence parallelism on device tensors: copying (packing, gathering,
// returning) selected rows between strided views, adding gradient rows, and merging a remote
// part into the shard's out and lse with the union-softmax rule. Host-callable; the stream is
// a cudaStream_t. Blocks are [batch, rows, heads, dim] index spaces over Tensor views (element
// strides); lse views are float32 Tensors with dim 1.
#pragma once

#include <cstdint>

#include "core/host_device.hpp"
#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated::dist {

struct RowBlock {
  int64_t batch = 0, rows = 0, heads = 0, dim = 0;
  DILATED_HD int64_t count() const { return batch * rows * heads * dim; }
};

// dst = factor * src, or dst += factor * src when `add` (arithmetic in float32, stored in
// `dtype`). Every element of the block is touched once, so distinct launches on one stream
// add in launch order.
void copy_rows(DType dtype, const Tensor& src, const Tensor& dst, const RowBlock& block,
               float factor, bool add, void* stream);

// out, lse (the shard's running result) <- union softmax with a remote part (part_out,
// part_lse): o = w_old o + share w_part part_out, w = exp(lse - merged) (float32). Rows whose
// part has no key (lse -inf) are left alone; NaN propagates. block.dim is the value dim.
void merge_rows(DType dtype, const Tensor& out, const Tensor& lse, const Tensor& part_out,
                const Tensor& part_lse, const RowBlock& block, float share, void* stream);

// The last launch error of this thread, as a status naming `what`.
Status last_kernel_status(const char* what);

}  // namespace dilated::dist
