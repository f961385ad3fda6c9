// Host versions of the device path's runtime services and row kernels (src/dist/device), so
// that device_call.cpp's plan runs in host memory on hosts without GPUs: every stream is the
// calling thread, events are markers, copies are memcpy. The row loops compute exactly what
// device_ops.cu's kernels compute, in float32.
#include <cmath>
#include <cstring>

#include "core/dtype_convert.hpp"
#include "dist/device/device_ops.hpp"
#include "dist/device/device_runtime.hpp"

namespace dilated::dist {
namespace {

int64_t at(const Tensor& t, int64_t b, int64_t r, int64_t h) {
  return b * t.batch_stride + r * t.row_stride + h * t.head_stride;
}
float load(DType dtype, const Tensor& t, int64_t i) {
  return static_cast<float>(load_element(dtype, t.data, i));
}

}  // namespace

void copy_rows(DType dtype, const Tensor& src, const Tensor& dst, const RowBlock& k, float factor,
               bool add, void*) {
  for (int64_t b = 0; b < k.batch; ++b) {
    for (int64_t r = 0; r < k.rows; ++r) {
      for (int64_t h = 0; h < k.heads; ++h) {
        for (int64_t e = 0; e < k.dim; ++e) {
          const int64_t s = at(src, b, r, h) + e, d = at(dst, b, r, h) + e;
          const float v = factor * load(dtype, src, s);
          store_element(dtype, dst.data, d, add ? load(dtype, dst, d) + v : v);
        }
      }
    }
  }
}

void merge_rows(DType dtype, const Tensor& out, const Tensor& lse, const Tensor& part_out,
                const Tensor& part_lse, const RowBlock& k, float share, void*) {
  for (int64_t b = 0; b < k.batch; ++b) {
    for (int64_t r = 0; r < k.rows; ++r) {
      for (int64_t h = 0; h < k.heads; ++h) {
        const float part = static_cast<const float*>(part_lse.data)[at(part_lse, b, r, h)];
        float* l = static_cast<float*>(lse.data) + at(lse, b, r, h);
        const float old = *l;
        if (part == -INFINITY) continue;
        float merged, w_old, w_part;
        if (std::isnan(part) || std::isnan(old)) {
          merged = w_old = w_part = NAN;
        } else {
          const float top = std::fmax(old, part);
          merged = top + std::log(std::exp(old - top) + std::exp(part - top));
          w_old = std::exp(old - merged);
          w_part = std::exp(part - merged) * share;
        }
        const int64_t o = at(out, b, r, h), po = at(part_out, b, r, h);
        for (int64_t e = 0; e < k.dim; ++e) {
          store_element(dtype, out.data, o + e,
                        w_old * load(dtype, out, o + e) + w_part * load(dtype, part_out, po + e));
        }
        *l = merged;
      }
    }
  }
}

Status last_kernel_status(const char*) {
  return {};
}

namespace rt {

namespace {
int marker;
}

Event event_create() {
  return &marker;
}
void event_destroy(Event) {}
Status event_record(Event, void*) {
  return {};
}
Status stream_wait_event(void*, Event) {
  return {};
}
Status event_synchronize(Event) {
  return {};
}
double event_seconds(Event, Event) {
  return 0;
}
Status stream_synchronize(void*) {
  return {};
}
Status memset_async(void* device, int64_t bytes, void*) {
  std::memset(device, 0, static_cast<size_t>(bytes));
  return {};
}
Status copy_to_device(void* device, const void* host, int64_t bytes) {
  std::memcpy(device, host, static_cast<size_t>(bytes));
  return {};
}
Status copy_to_host(void* host, const void* device, int64_t bytes) {
  std::memcpy(host, device, static_cast<size_t>(bytes));
  return {};
}

}  // namespace rt
}  // namespace dilated::dist
