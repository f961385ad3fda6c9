// Launches of the Hopper backward (dq, then dk/dv), one instantiation per element type and head
// dim (64, 128).
#include <cstdlib>
#include <cstring>

#include "cuda/hopper/backward_dkdv_kernel.cuh"
#include "cuda/hopper/backward_dq_kernel.cuh"
#include "cuda/hopper/hopper_launch.hpp"
#include "cuda/hopper/instances.hpp"
#include "cuda/hopper/pass_launch.hpp"
#include "cuda/hopper/tensor_maps.hpp"
#include "cuda/kernel_launch.hpp"

namespace dilated::cuda::hopper {
namespace {

static_assert(kRows == kKeys, "one tile size for the pass plan's query and key tiles");

// dk/dv read nothing that dq writes: they always overlap the dq launch before them.
template <typename Elem, int D>
void launch(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  const TensorMaps maps = pass_tensor_maps(p, pass, p.k, p.v, p.heads_kv, kKeys, true);
  launch_pass_kernel(maps.square_width > 0 ? backward_dq_kernel<Elem, D, true>
                                           : backward_dq_kernel<Elem, D, false>,
                     pass_grid(pass, pass.head_count, p.batch), kThreads, DqSmem<D>::kBytes,
                     pass.overlaps_previous_launch, stream, p, pass, maps);
  // Query rows in any order too: dk/dv's products sum over them.
  const TensorMaps query_maps = pass_tensor_maps(p, pass, p.q, p.dout, p.heads, kDkdvQueries, true);
  launch_pass_kernel(query_maps.square_width > 0 ? backward_dkdv_kernel<Elem, D, true>
                                                 : backward_dkdv_kernel<Elem, D, false>,
                     key_pass_grid(pass, p.heads_kv, p.batch), kThreads, DkdvSmem<D>::kBytes, true,
                     stream, p, pass, query_maps);
}

}  // namespace

const char* backward_unsupported(const Params& p, int sm) {
  if (const char* why = forward_unsupported(p, sm); why[0] != '\0') return why;
  const char* env = std::getenv("DILATED_CUDA_HOPPER_BACKWARD");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER_BACKWARD=0";
  return "";
}

int64_t backward_tile_rows() {
  return kRows;
}

void backward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  with_instance(p, [&](auto elem, auto dim) {
    launch<decltype(elem), decltype(dim)::value>(p, pass, stream);
  });
}

}  // namespace dilated::cuda::hopper
