// Token grids: gather the rows into curve order, run the plain launcher, scatter the results
// back to row-major order. The curve (hilbert_order, host) is copied into the workspace on the
// stream; the host copy may go as soon as cudaMemcpyAsync returns (pageable memory is staged).
#include <vector>

#include "cuda/block_launch.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/grid_plan.hpp"
#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/token_permute.cuh"
#include "cuda/launchers.hpp"
#include "dilated/dilated.hpp"

namespace dilated::cuda {
namespace {

const int64_t* upload_order(const Params& p, const GridLayout& g, cudaStream_t stream,
                            Status* status) {
  const std::vector<int64_t> order = hilbert_order(p.grid.height, p.grid.width);
  int64_t* device_order = reinterpret_cast<int64_t*>(static_cast<char*>(p.workspace) + g.order);
  *status = cuda_status(cudaMemcpyAsync(device_order, order.data(), order.size() * sizeof(int64_t),
                                        cudaMemcpyHostToDevice, stream),
                        "cudaMemcpyAsync (token order)");
  return device_order;
}

void permute(const Params& p, const Tensor& src, const Tensor& dst, const int64_t* order,
             int64_t heads, int64_t dim, bool gather, cudaStream_t stream) {
  const unsigned blocks = blocks_for(p.batch * p.seqlen * heads * 32, 256);
  with_element_type(p.dtype, [&](auto elem) {
    using Elem = decltype(elem);
    permute_rows_kernel<Elem><<<blocks, 256, 0, stream>>>(p, src, dst, order, heads, dim, gather);
  });
}

void permute_lse(const Params& p, const float* src, float* dst, const int64_t* order, bool gather,
                 cudaStream_t stream) {
  permute_lse_kernel<<<blocks_for(p.batch * p.heads * p.seqlen, 256), 256, 0, stream>>>(
      p, src, dst, order, gather);
}

}  // namespace

Status launch_forward_on_curve(const Params& p, cudaStream_t stream) {
  const GridLayout g = grid_layout(p, false);
  Status s;
  const int64_t* order = upload_order(p, g, stream, &s);
  if (!s.ok()) return s;
  const Params c = curve_params(p, g, false);
  permute(p, p.q, c.q, order, p.heads, p.head_dim, true, stream);
  permute(p, p.k, c.k, order, p.heads_kv, p.head_dim, true, stream);
  permute(p, p.v, c.v, order, p.heads_kv, p.head_dim_v, true, stream);
  if (Status r = launch_forward(c, stream); !r.ok()) return r;
  permute(p, c.out, p.out, order, p.heads, p.head_dim_v, false, stream);
  if (p.lse) permute_lse(p, c.lse, p.lse, order, false, stream);
  return last_launch_status("forward launch (token grid)");
}

Status launch_backward_on_curve(const Params& p, cudaStream_t stream) {
  const GridLayout g = grid_layout(p, true);
  Status s;
  const int64_t* order = upload_order(p, g, stream, &s);
  if (!s.ok()) return s;
  const Params c = curve_params(p, g, true);
  permute(p, p.q, c.q, order, p.heads, p.head_dim, true, stream);
  permute(p, p.k, c.k, order, p.heads_kv, p.head_dim, true, stream);
  permute(p, p.v, c.v, order, p.heads_kv, p.head_dim_v, true, stream);
  permute(p, p.out, c.out, order, p.heads, p.head_dim_v, true, stream);
  permute(p, p.dout, c.dout, order, p.heads, p.head_dim_v, true, stream);
  permute_lse(p, p.lse, c.lse, order, true, stream);
  if (Status r = launch_backward(c, stream); !r.ok()) return r;
  permute(p, c.dq, p.dq, order, p.heads, p.head_dim, false, stream);
  permute(p, c.dk, p.dk, order, p.heads_kv, p.head_dim, false, stream);
  permute(p, c.dv, p.dv, order, p.heads_kv, p.head_dim_v, false, stream);
  return last_launch_status("backward launch (token grid)");
}

}  // namespace dilated::cuda
