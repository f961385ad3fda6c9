// The curve of a token grid in device memory (hilbert_order: ~0.5 ms on the host for 256 x 256),
// uploaded once per device and grid shape and kept for the process.
#include "cuda/grid_order.hpp"

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "core/block_sparse.hpp"
#include "cuda/cuda_check.hpp"
#include "dilated/dilated.hpp"

namespace dilated::cuda {

Status grid_order_on_device(const Params& p, const int64_t** order) {
  *order = nullptr;
  if (!has_grid(p)) return {};
  static std::mutex mutex;
  static std::map<std::tuple<int, int64_t, int64_t>, const int64_t*> curves;
  int device = 0;
  if (Status s = cuda_status(cudaGetDevice(&device), "cudaGetDevice"); !s.ok()) return s;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(device, p.grid.height, p.grid.width);
  if (auto it = curves.find(key); it != curves.end()) {
    *order = it->second;
    return {};
  }
  const std::vector<int64_t> host = hilbert_order(p.grid.height, p.grid.width);
  const size_t bytes = host.size() * sizeof(int64_t);
  void* curve = nullptr;
  if (Status s = cuda_status(cudaMalloc(&curve, bytes), "cudaMalloc (token order)"); !s.ok()) {
    return s;
  }
  if (Status s = cuda_status(cudaMemcpy(curve, host.data(), bytes, cudaMemcpyHostToDevice),
                             "cudaMemcpy (token order)");
      !s.ok()) {
    cudaFree(curve);
    return s;
  }
  *order = static_cast<const int64_t*>(curve);
  curves.emplace(key, *order);
  return {};
}

bool grid_runs_in_squares(const Params& p) {
  if (!has_grid(p)) return false;
  static std::mutex mutex;
  static std::map<std::pair<int64_t, int64_t>, bool> known;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(p.grid.height, p.grid.width);
  if (auto it = known.find(key); it != known.end()) return it->second;
  const int64_t w = p.grid.width;
  bool squares = p.grid.height % 8 == 0 && w % 8 == 0;
  if (squares) {
    const std::vector<int64_t> curve = hilbert_order(p.grid.height, w);
    for (size_t t = 0; t < curve.size() && squares; ++t) {
      const int64_t first = curve[t - t % 64];
      squares = curve[t] / w / 8 == first / w / 8 && curve[t] % w / 8 == first % w / 8;
    }
  }
  known.emplace(key, squares);
  return squares;
}

}  // namespace dilated::cuda
