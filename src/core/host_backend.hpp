// Device services for backends whose "device" is host memory.
#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

#include "dilated/backend.hpp"

namespace dilated {

// The CPU's model name as /proc/cpuinfo gives it ("unknown CPU" elsewhere).
std::string host_cpu_name();

class HostBackend : public Backend {
 public:
  Device device() const override { return Device::host; }
  std::string device_name() const override { return host_cpu_name(); }
  Status allocate(int64_t bytes, void** ptr) const override {
    // 64-byte alignment for whole SIMD vectors; aligned_alloc needs a multiple of it.
    *ptr = std::aligned_alloc(64, static_cast<size_t>((bytes + 63) / 64 * 64));
    return *ptr || bytes == 0 ? Status{}
                              : Status::Runtime("out of host memory: " + std::to_string(bytes));
  }
  void release(void* ptr) const override { std::free(ptr); }
  Status copy_to_device(void* dst, const void* src, int64_t bytes) const override {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
    return {};
  }
  Status copy_to_host(void* dst, const void* src, int64_t bytes) const override {
    std::memcpy(dst, src, static_cast<size_t>(bytes));
    return {};
  }
  Status synchronize(Stream) const override { return {}; }
};

}  // namespace dilated
