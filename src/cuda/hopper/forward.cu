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

static_assert(kRows == kForwardRows, "the Hopper forward shares the portable forward's tiles");

template <typename Elem, int D>
void launch(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  const TensorMaps maps = pass_tensor_maps(p, pass, p.k, p.v, p.heads_kv, kKeys, true);
  const QueryMaps query_maps = pass_query_maps(p, pass, kRows);
  launch_pass_kernel(
      maps.square_width > 0 ? forward_kernel<Elem, D, true> : forward_kernel<Elem, D, false>,
      pass_grid(pass, pass.head_count, p.batch), ForwardSmem<D>::kBytes,
      pass.overlaps_previous_launch, stream, p, pass, maps, query_maps);
}

}  // namespace

const char* forward_unsupported(const Params& p, int sm) {
  if (sm != 90) return "the Hopper kernels run on compute capability 9.0 only";
  if (p.head_dim != 64 && p.head_dim != 128) return "the Hopper forward takes head dims 64, 128";
  const char* env = std::getenv("DILATED_CUDA_HOPPER");
  if (env && std::strcmp(env, "0") == 0) return "DILATED_CUDA_HOPPER=0";
  return "";
}

void forward_pass(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  with_instance(p, [&](auto elem, auto dim) {
    launch<decltype(elem), decltype(dim)::value>(p, pass, stream);
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
