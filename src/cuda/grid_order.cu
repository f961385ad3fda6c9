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

namespace {

// Whether every 64 cells of `curve` from a multiple of 64 lie in one aligned 8 x 8 square of a
// grid `width` wide (64 distinct cells: the whole square).
bool curve_in_squares(const std::vector<int64_t>& curve, int64_t width) {
  for (size_t t = 0; t < curve.size(); ++t) {
    const int64_t first = curve[t - t % 64];
    if (curve[t] / width / 8 != first / width / 8 || curve[t] % width / 8 != first % width / 8) {
      return false;
    }
  }
  return true;
}

// Per grid shape, whether its curve runs in squares: filled by whichever of the two functions
// below meets the shape first, so the curve is computed once for both where the upload comes
// first (the launchers upload before they build tensor maps).
std::mutex squares_mutex;
std::map<std::pair<int64_t, int64_t>, bool> squares_by_shape;

bool remember_squares(const Params& p, const std::vector<int64_t>* curve) {
  const std::lock_guard<std::mutex> lock(squares_mutex);
  const auto key = std::make_pair(p.grid.height, p.grid.width);
  if (auto it = squares_by_shape.find(key); it != squares_by_shape.end()) return it->second;
  bool squares = p.grid.height % 8 == 0 && p.grid.width % 8 == 0;
  if (squares) {
    squares = curve ? curve_in_squares(*curve, p.grid.width)
                    : curve_in_squares(hilbert_order(p.grid.height, p.grid.width), p.grid.width);
  }
  squares_by_shape.emplace(key, squares);
  return squares;
}

// A grid's curve on one device: the order, and the square table where the curve runs in
// squares (else null).
struct DeviceCurve {
  const int64_t* order = nullptr;
  const int32_t* square_cells = nullptr;
};

// `bytes` of `host` into a new device allocation.
Status upload(const void* host, size_t bytes, const char* what, void** device) {
  *device = nullptr;
  if (Status s = cuda_status(cudaMalloc(device, bytes), what); !s.ok()) return s;
  if (Status s = cuda_status(cudaMemcpy(*device, host, bytes, cudaMemcpyHostToDevice), what);
      !s.ok()) {
    cudaFree(*device);
    *device = nullptr;
    return s;
  }
  return {};
}

Status device_curve(const Params& p, DeviceCurve* curve) {
  *curve = {};
  if (!has_grid(p)) return {};
  static std::mutex mutex;
  static std::map<std::tuple<int, int64_t, int64_t>, DeviceCurve> curves;
  int device = 0;
  if (Status s = cuda_status(cudaGetDevice(&device), "cudaGetDevice"); !s.ok()) return s;
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(device, p.grid.height, p.grid.width);
  if (auto it = curves.find(key); it != curves.end()) {
    *curve = it->second;
    return {};
  }
  const std::vector<int64_t> host = hilbert_order(p.grid.height, p.grid.width);
  void* order = nullptr;
  if (Status s = upload(host.data(), host.size() * sizeof(int64_t), "token order", &order);
      !s.ok()) {
    return s;
  }
  void* cells = nullptr;
  if (remember_squares(p, &host)) {
    const std::vector<int32_t> table = square_corner_cells(host, p.grid.width);
    if (Status s = upload(table.data(), table.size() * sizeof(int32_t), "token squares", &cells);
        !s.ok()) {
      cudaFree(order);
      return s;
    }
  }
  *curve = {static_cast<const int64_t*>(order), static_cast<const int32_t*>(cells)};
  curves.emplace(key, *curve);
  return {};
}

}  // namespace

std::vector<int32_t> square_corner_cells(const std::vector<int64_t>& curve, int64_t width) {
  std::vector<int32_t> cells(curve.size() / 64);
  for (size_t k = 0; k < cells.size(); ++k) {
    const int64_t cell = curve[64 * k];
    cells[k] = static_cast<int32_t>(cell / width / 8 * 8 * width + cell % width / 8 * 8);
  }
  return cells;
}

Status grid_order_on_device(const Params& p, const int64_t** order) {
  DeviceCurve curve;
  const Status s = device_curve(p, &curve);
  *order = curve.order;
  return s;
}

Status grid_square_cells_on_device(const Params& p, const int32_t** cells) {
  DeviceCurve curve;
  const Status s = device_curve(p, &curve);
  *cells = curve.square_cells;
  return s;
}

bool grid_runs_in_squares(const Params& p) {
  return has_grid(p) && remember_squares(p, nullptr);
}

}  // namespace dilated::cuda
