// Launches of the Hopper forward, one instantiation per element type and head dim (64, 128).
#include <cstdlib>
#include <cstring>

#include "cuda/hopper/forward_kernel.cuh"
#include "cuda/hopper/hopper_launch.hpp"
#include "cuda/hopper/instances.hpp"
#include "cuda/hopper/pass_launch.hpp"
#include "cuda/hopper/tensor_maps.hpp"
#include "cuda/kernel_launch.hpp"
#include "cuda/kernels/mma_forward.cuh"

namespace dilated::cuda::hopper {
namespace {

static_assert(DenseShape::kRows == kForwardRows,
              "two warpgroups take the portable forward's tiles (the fallback's pass plan)");

template <typename Elem, int D, int Groups>
void launch(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  using Shape = CtaShape<Groups>;
  const TensorMaps maps = pass_tensor_maps(p, pass, p.k, p.v, p.heads_kv, kKeys, true);
  const QueryMaps query_maps = pass_query_maps(p, pass, Shape::kRows);
  launch_pass_kernel(maps.square_width > 0 ? forward_kernel<Elem, D, Groups, true>
                                           : forward_kernel<Elem, D, Groups, false>,
                     pass_grid(pass, pass.head_count, p.batch), Shape::kThreads,
                     ForwardSmem<D, Groups>::kBytes, pass.overlaps_previous_launch, stream, p, pass,
                     maps, query_maps);
}

// DILATED_CUDA_HOPPER_FORWARD_GROUPS=2 keeps two warpgroups at D = 64 (a benchmark knob).
int groups_for(const Params& p) {
  const char* env = std::getenv("DILATED_CUDA_HOPPER_FORWARD_GROUPS");
  if (env && std::strcmp(env, "2") == 0) return 2;
  return forward_groups(static_cast<int>(p.head_dim));
}

}  // namespace

const char* forward_unsupported(const Params& p, int sm) {
  if (sm != 90) return "the Hopper kernels run on compute capability 9.0 only";
  if (p.head_dim != 64 && p.head_dim != 128) return "the Hopper forward takes head dims 64, 128";
  const char* env = std::getenv("DILATED_CUDA_HOPPER");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER=0";
  return "";
}

int64_t forward_tile_rows(const Params& p) {
  return 64 * groups_for(p);
}

void forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  with_instance(p, [&](auto elem, auto dim) {
    using Elem = decltype(elem);
    constexpr int D = decltype(dim)::value;
    if constexpr (forward_groups(D) == 3) {
      if (pass.tile_rows == CtaShape<3>::kRows) return launch<Elem, D, 3>(p, pass, stream);
    }
    launch<Elem, D, 2>(p, pass, stream);
  });
}

}  // namespace dilated::cuda::hopper

#ifdef DILATED_HOPPER_TIMELINE
namespace dilated::cuda::hopper {
// The stamps of the last forward launches (this file's copy).
int read_forward_timeline(unsigned long long* host, int ctas) {
  return copy_timeline_to_host(host, ctas);
}
}  // namespace dilated::cuda::hopper
#endif
