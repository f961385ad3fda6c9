#include "cuda/grid_plan.hpp"

#include "cuda/launch_plan.hpp"
#include "dilated/dilated.hpp"

namespace dilated::cuda {
namespace {

int64_t reserve(int64_t& bytes, int64_t size) {
  const int64_t at = bytes;
  bytes += (size + 255) / 256 * 256;
  return at;
}

Tensor packed(const Params& p, int64_t offset, int64_t heads, int64_t dim) {
  Tensor t;
  t.data = static_cast<char*>(p.workspace) + offset;
  t.head_stride = dim;
  t.row_stride = heads * dim;
  t.batch_stride = p.seqlen * t.row_stride;
  return t;
}

}  // namespace

GridLayout grid_layout(const Params& p, bool backward) {
  GridLayout g;
  const int64_t rows = p.batch * p.seqlen, elem = dtype_size(p.dtype);
  int64_t& bytes = g.bytes;
  g.q = reserve(bytes, rows * p.heads * p.head_dim * elem);
  g.k = reserve(bytes, rows * p.heads_kv * p.head_dim * elem);
  g.v = reserve(bytes, rows * p.heads_kv * p.head_dim_v * elem);
  g.out = reserve(bytes, rows * p.heads * p.head_dim_v * elem);
  if (backward) {
    g.dout = reserve(bytes, rows * p.heads * p.head_dim_v * elem);
    g.dq = reserve(bytes, rows * p.heads * p.head_dim * elem);
    g.dk = reserve(bytes, rows * p.heads_kv * p.head_dim * elem);
    g.dv = reserve(bytes, rows * p.heads_kv * p.head_dim_v * elem);
  }
  if (backward || p.lse) g.lse = reserve(bytes, rows * p.heads * 4);
  g.inner = bytes;
  Params plain = p;
  plain.grid = TokenGrid{};
  plain.lse = g.lse >= 0 ? reinterpret_cast<float*>(1) : nullptr;  // only nullness matters
  bytes += backward ? backward_workspace(plain).bytes : forward_workspace(plain).bytes;
  return g;
}

int64_t grid_workspace_bytes(const Params& p, bool backward) {
  return grid_layout(p, backward).bytes;
}

Params curve_params(const Params& p, const GridLayout& g, bool backward) {
  Params c = p;
  c.grid = TokenGrid{};
  c.q = packed(p, g.q, p.heads, p.head_dim);
  c.k = packed(p, g.k, p.heads_kv, p.head_dim);
  c.v = packed(p, g.v, p.heads_kv, p.head_dim_v);
  c.out = packed(p, g.out, p.heads, p.head_dim_v);
  if (backward) {
    c.dout = packed(p, g.dout, p.heads, p.head_dim_v);
    c.dq = packed(p, g.dq, p.heads, p.head_dim);
    c.dk = packed(p, g.dk, p.heads_kv, p.head_dim);
    c.dv = packed(p, g.dv, p.heads_kv, p.head_dim_v);
  }
  c.lse = g.lse >= 0 ? reinterpret_cast<float*>(static_cast<char*>(p.workspace) + g.lse) : nullptr;
  c.workspace = static_cast<char*>(p.workspace) + g.inner;
  c.workspace_bytes = p.workspace_bytes - g.inner;
  return c;
}

}  // namespace dilated::cuda
