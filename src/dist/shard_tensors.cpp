#include "dist/shard_tensors.hpp"

#include "core/dtype_convert.hpp"
#include "dilated/dilated.hpp"

namespace dilated::dist {

Tensor strided_view(const Tensor& x, DType dtype, int64_t offset, int64_t row_step,
                    int64_t head_step) {
  Tensor v = x;
  v.data = static_cast<unsigned char*>(x.data) + offset * dtype_size(dtype);
  v.row_stride = x.row_stride * row_step;
  v.head_stride = x.head_stride * head_step;
  return v;
}

Tensor contiguous_view(void* data, int64_t rows, int64_t heads, int64_t dim) {
  Tensor t;
  t.data = data;
  t.head_stride = dim;
  t.row_stride = heads * dim;
  t.batch_stride = rows * heads * dim;
  return t;
}

void copy_rows(const Tensor& from, DType from_type, const Tensor& to, DType to_type, int64_t batch,
               int64_t rows, int64_t heads, int64_t dim) {
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < rows; ++t) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t src = element_offset(from, b, t, h), dst = element_offset(to, b, t, h);
        for (int64_t d = 0; d < dim; ++d) {
          store_element(to_type, to.data, dst + d, load_element(from_type, from.data, src + d));
        }
      }
    }
  }
}

ShardTensors::ShardTensors(const Params& local, int64_t global_seqlen, int64_t offset,
                           Direction dir)
    : local_(local), work_(local) {
  work_.window = {global_seqlen, offset, offset, local.seqlen};
  const bool convert = local.dtype == DType::f16 || local.dtype == DType::bf16;
  const int64_t n = local.seqlen, h = local.heads, hkv = local.heads_kv;
  const int64_t d = local.head_dim, dv = local.head_dim_v;
  if (!local.lse) {  // forward may leave lse out; the merge needs it
    lse_.resize(static_cast<size_t>(local.batch * h * n));
    work_.lse = lse_.data();
  }
  if (!convert) return;
  work_.dtype = DType::f32;
  work_.q = copy_of(local.q, n, h, d, &q_);
  work_.k = copy_of(local.k, n, hkv, d, &k_);
  work_.v = copy_of(local.v, n, hkv, dv, &v_);
  if (dir == Direction::forward) {
    work_.out = space_for(n, h, dv, &out_);
  } else {
    work_.out = copy_of(local.out, n, h, dv, &out_);
    work_.dout = copy_of(local.dout, n, h, dv, &dout_);
    work_.dq = space_for(n, h, d, &dq_);
    work_.dk = space_for(n, hkv, d, &dk_);
    work_.dv = space_for(n, hkv, dv, &dv_);
  }
}

Tensor ShardTensors::space_for(int64_t rows, int64_t heads, int64_t dim,
                               std::vector<float>* storage) const {
  storage->assign(static_cast<size_t>(local_.batch * rows * heads * dim), 0.0f);
  return contiguous_view(storage->data(), rows, heads, dim);
}

Tensor ShardTensors::copy_of(const Tensor& t, int64_t rows, int64_t heads, int64_t dim,
                             std::vector<float>* storage) const {
  const Tensor copy = space_for(rows, heads, dim, storage);
  copy_rows(t, local_.dtype, copy, DType::f32, local_.batch, rows, heads, dim);
  return copy;
}

void ShardTensors::store_outputs(Direction dir) const {
  if (work_.dtype == local_.dtype) return;
  const int64_t b = local_.batch, n = local_.seqlen, h = local_.heads, hkv = local_.heads_kv;
  const int64_t d = local_.head_dim, dv = local_.head_dim_v;
  if (dir == Direction::forward) {
    copy_rows(work_.out, DType::f32, local_.out, local_.dtype, b, n, h, dv);
  } else {
    copy_rows(work_.dq, DType::f32, local_.dq, local_.dtype, b, n, h, d);
    copy_rows(work_.dk, DType::f32, local_.dk, local_.dtype, b, n, hkv, d);
    copy_rows(work_.dv, DType::f32, local_.dv, local_.dtype, b, n, hkv, dv);
  }
}

}  // namespace dilated::dist
