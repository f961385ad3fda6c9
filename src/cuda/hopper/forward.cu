// Launches of the Hopper forward, one instantiation per element type and head dim (64, 128).
#include <algorithm>
#include <cstdint>
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

// CTAs of a persistent forward launch: one an SM (ForwardSmem and the registers allow no more),
// or fewer where the pass has fewer tiles.
unsigned persistent_ctas(const dim3& tiles) {
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const uint64_t count = static_cast<uint64_t>(tiles.x) * tiles.y * tiles.z;
  return static_cast<unsigned>(std::min<uint64_t>(count, static_cast<uint64_t>(sms)));
}

// Persistent CTAs where a query tile sees at most kPersistentKeyTiles key tiles: there a CTA's
// setup, Q load, first softmax and epilogue are a quarter or more of its time, and the persistent
// CTA hides the setup and, at D = 64, the Q load (H200, D = 64: segments of 512 -7%, 1024 -2%).
// With longer segments its key-tile loop, ~8% slower than a one-tile CTA's for reasons not found,
// loses (segments of 2048 +0.5%, one of 16384 +4%; bench/NOTES.md, nineteenth session).
// DILATED_CUDA_HOPPER_PERSISTENT=0 never runs persistent CTAs, =1 whatever the segment (benchmark
// knobs).
constexpr int64_t kPersistentKeyTiles = 8;
bool runs_persistent(const Params& p, const PassInfo& pass, bool squares) {
  if (squares || p.causal) return false;
  const char* env = std::getenv("DILATED_CUDA_HOPPER_PERSISTENT");
  if (env && std::strcmp(env, "0") == 0) return false;
  if (env && std::strcmp(env, "1") == 0) return true;
  // The most keys a row sees: a whole segment's selected rows (fewer with a window).
  const int64_t span = std::min<int64_t>(pass.pattern.segment, p.seqlen);
  const int64_t keys = (span + pass.pattern.dilation - 1) / pass.pattern.dilation;
  return keys <= kPersistentKeyTiles * kKeys;
}

template <typename Elem, int D, int Groups>
void launch(const Params& p, const PassInfo& pass, cudaStream_t stream) {
  using Shape = CtaShape<Groups>;
  const TensorMaps maps = pass_tensor_maps(p, pass, p.k, p.v, p.heads_kv, kKeys, true);
  const QueryMaps query_maps = pass_query_maps(p, pass, Shape::kRows);
  const dim3 tiles = pass_grid(pass, pass.head_count, p.batch);
  const bool squares = maps.square_width > 0;
  if constexpr (kPersistentForward<Groups, false>) {
    if (runs_persistent(p, pass, squares)) {
      const auto persistent = [&](auto kernel, int smem_bytes) {
        launch_pass_kernel(kernel, dim3(persistent_ctas(tiles)), Shape::kThreads, smem_bytes,
                           pass.overlaps_previous_launch, stream, p, pass, maps, query_maps);
      };
      // One Q tile (D = 128): released after the last S where the rows are not stored through
      // the copy engine anyway (forward_kernel's EarlyQueryRelease).
      constexpr bool kOneQueryTile = ForwardSmem<D, Groups, true>::kQueryTiles == 1;
      if (kOneQueryTile && !query_maps.out_enabled) {
        return persistent(forward_kernel<Elem, D, Groups, false, true, kOneQueryTile>,
                          ForwardSmem<D, Groups, true, kOneQueryTile>::kBytes);
      }
      return persistent(forward_kernel<Elem, D, Groups, false, true>,
                        ForwardSmem<D, Groups, true>::kBytes);
    }
  }
  launch_pass_kernel(squares ? forward_kernel<Elem, D, Groups, true, false>
                             : forward_kernel<Elem, D, Groups, false, false>,
                     tiles, Shape::kThreads, ForwardSmem<D, Groups>::kBytes,
                     pass.overlaps_previous_launch, stream, p, pass, maps, query_maps);
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
