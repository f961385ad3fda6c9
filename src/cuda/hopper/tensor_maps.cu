// Tensor maps for the copy engine, encoded through the driver entry point that the runtime
// hands out (the library links only the runtime).
#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdlib>
#include <cstring>

#include "core/pattern_math.hpp"
#include "cuda/grid_order.hpp"
#include "cuda/hopper/tensor_maps.hpp"

namespace dilated::cuda::hopper {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// 5-D map (D, i < n1, j < n2, head, batch) of t, row = i + n1 * j of its sequence, with boxes of
// (64 columns, box1, box2) and 128-byte swizzle. Dilation r: (phase < r, position / r), boxes of
// (1, Rows): every r-th row from any start. A grid's squares: (x < width, y < height), boxes
// of (8, 8): an aligned square, its rows in row-major order.
bool encode_map(const Params& p, const Tensor& t, int64_t heads, int64_t n1, int64_t n2, int box1,
                int box2, CUtensorMap* map) {
  const auto encode = tensor_map_encoder();
  if (!encode || !t.data) return false;
  const cuuint64_t elem = 2;
  const cuuint64_t dims[5] = {static_cast<cuuint64_t>(p.head_dim), static_cast<cuuint64_t>(n1),
                              static_cast<cuuint64_t>(n2), static_cast<cuuint64_t>(heads),
                              static_cast<cuuint64_t>(p.batch)};
  const cuuint64_t strides[4] = {static_cast<cuuint64_t>(t.row_stride) * elem,
                                 static_cast<cuuint64_t>(t.row_stride * n1) * elem,
                                 static_cast<cuuint64_t>(t.head_stride) * elem,
                                 static_cast<cuuint64_t>(t.batch_stride) * elem};
  const cuuint32_t box[5] = {64, static_cast<cuuint32_t>(box1), static_cast<cuuint32_t>(box2), 1,
                             1};
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  const CUtensorMapDataType type =
      p.dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode(map, type, 5, t.data, dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool env_off(const char* name) {
  const char* env = std::getenv(name);
  return env && std::strcmp(env, "0") == 0;
}

// Whether rows with dilation r can be a map's boxes at all: not through a sequence window or
// varlen batches (no plain stride of whole sequences), not where N is no multiple of r (the
// last phase's rows would fall outside the map), not with DILATED_CUDA_TMA=0.
bool strided_rows_mappable(const Params& p, int64_t r) {
  return !env_off("DILATED_CUDA_TMA") && !p.cu_seqlens && p.window.global_seqlen == 0 &&
         p.seqlen % r == 0;
}

// Maps of a and b with dilation r, where the copy engine can fetch their rows at all
// (strided_rows_mappable); through a token grid's order only square by square
// (TensorMaps::square_width).
TensorMaps strided_maps(const Params& p, const int64_t* order, const Tensor& a, const Tensor& b,
                        int64_t heads, int64_t r, int box_rows, bool rows_any_order) {
  TensorMaps maps{};
  if (!strided_rows_mappable(p, r)) return maps;
  if (order) {
    if (!rows_any_order || p.causal || r != 1 || box_rows % 64 != 0 ||
        env_off("DILATED_CUDA_CURVE_SQUARES")) {
      return maps;
    }
    const int64_t w = p.grid.width, h = p.grid.height;
    const int32_t* cells = nullptr;  // null where the curve does not run in squares
    if (grid_square_cells_on_device(p, &cells).ok() && cells &&
        encode_map(p, a, heads, w, h, 8, 8, &maps.a) &&
        encode_map(p, b, heads, w, h, 8, 8, &maps.b)) {
      maps.square_width = static_cast<int>(p.grid.width);
      maps.square_cells = cells;
    }
    return maps;
  }
  maps.enabled = encode_map(p, a, heads, r, p.seqlen / r, 1, box_rows, &maps.a) &&
                 encode_map(p, b, heads, r, p.seqlen / r, 1, box_rows, &maps.b);
  return maps;
}

// Maps of q (boxes of q_box_rows rows) and out (boxes of 64 rows) with dilation r, where wanted.
QueryMaps strided_query_maps(const Params& p, int64_t r, bool q_wanted, bool out_wanted,
                             int q_box_rows) {
  QueryMaps maps{};
  maps.q_enabled = q_wanted && encode_map(p, p.q, p.heads, r, p.seqlen / r, 1, q_box_rows, &maps.q);
  maps.out_enabled = out_wanted && encode_map(p, p.out, p.heads, r, p.seqlen / r, 1, 64, &maps.out);
  return maps;
}

}  // namespace

TensorMaps pass_tensor_maps(const Params& p, const PassInfo& pass, const Tensor& a, const Tensor& b,
                            int64_t heads, int box_rows, bool rows_any_order) {
  return strided_maps(p, pass.order, a, b, heads, pass.pattern.dilation, box_rows, rows_any_order);
}

QueryMaps pass_query_maps(const Params& p, const PassInfo& pass, int q_box_rows) {
  QueryMaps maps{};
  const int64_t r = pass.pattern.dilation;  // every head of a pass shares it
  if (!strided_rows_mappable(p, r)) return maps;
  const bool q_wanted = !env_off("DILATED_CUDA_TMA_QUERY");
  const bool out_wanted = !pass.out_acc.data && !env_off("DILATED_CUDA_TMA_STORE");
  if (pass.order) {
    // Rows in the squares' order: only where the output goes back square by square too.
    if (!q_wanted || !out_wanted) return maps;
    const TensorMaps squares =
        strided_maps(p, pass.order, p.q, p.out, p.heads, r, q_box_rows, true);
    if (squares.square_width > 0) {
      maps.q = squares.a;
      maps.out = squares.b;
      maps.q_enabled = maps.out_enabled = 1;
      maps.square_width = squares.square_width;
      maps.square_cells = squares.square_cells;
    }
    return maps;
  }
  return strided_query_maps(p, r, q_wanted, out_wanted, q_box_rows);
}

QueryMaps position_query_maps(const Params& p, const int64_t* order, bool writes_out,
                              int q_box_rows) {
  if (order || !strided_rows_mappable(p, 1)) return QueryMaps{};
  return strided_query_maps(p, 1, !env_off("DILATED_CUDA_TMA_QUERY"),
                            writes_out && !env_off("DILATED_CUDA_TMA_STORE"), q_box_rows);
}

TensorMaps position_tensor_maps(const Params& p, const int64_t* order, const Tensor& a,
                                const Tensor& b, int64_t heads, int box_rows, bool rows_any_order) {
  return strided_maps(p, order, a, b, heads, 1, box_rows, rows_any_order);
}

}  // namespace dilated::cuda::hopper
