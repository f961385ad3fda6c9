// Replaces glibc's malloc family in the CLI binary with counting wrappers around glibc's own
// implementation (the __libc_* entry points), as glibc documents for malloc replacement.
#include "host_memory.hpp"

#include <atomic>
#include <cerrno>
#include <cstddef>

#if defined(__GLIBC__) && !defined(DILATED_NO_HEAP_TRACKING)
#include <malloc.h>

extern "C" {
void* __libc_malloc(size_t size);
void __libc_free(void* ptr);
void* __libc_calloc(size_t count, size_t size);
void* __libc_realloc(void* ptr, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
void* __libc_valloc(size_t size);
void* __libc_pvalloc(size_t size);
}

namespace {

std::atomic<int64_t> current_bytes{0};
std::atomic<int64_t> peak_bytes{0};

void* counted(void* ptr) {
  if (!ptr) return ptr;
  const int64_t now = current_bytes.fetch_add(static_cast<int64_t>(malloc_usable_size(ptr)),
                                              std::memory_order_relaxed) +
                      static_cast<int64_t>(malloc_usable_size(ptr));
  int64_t peak = peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return ptr;
}

void uncount(void* ptr) {
  if (ptr) {
    current_bytes.fetch_sub(static_cast<int64_t>(malloc_usable_size(ptr)),
                            std::memory_order_relaxed);
  }
}

}  // namespace

extern "C" {

void* malloc(size_t size) {
  return counted(__libc_malloc(size));
}

void free(void* ptr) {
  uncount(ptr);
  __libc_free(ptr);
}

void* calloc(size_t count, size_t size) {
  return counted(__libc_calloc(count, size));
}

void* realloc(void* ptr, size_t size) {
  // The block may move; count the old one out and the result in. On failure the old block
  // stays allocated and must stay counted.
  const int64_t old_size = ptr ? static_cast<int64_t>(malloc_usable_size(ptr)) : 0;
  current_bytes.fetch_sub(old_size, std::memory_order_relaxed);
  void* result = __libc_realloc(ptr, size);
  if (!result && size != 0) {
    current_bytes.fetch_add(old_size, std::memory_order_relaxed);
    return nullptr;
  }
  return counted(result);
}

void* memalign(size_t alignment, size_t size) {
  return counted(__libc_memalign(alignment, size));
}

void* aligned_alloc(size_t alignment, size_t size) {
  return counted(__libc_memalign(alignment, size));
}

int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  void* ptr = __libc_memalign(alignment, size);
  if (!ptr && size != 0) return ENOMEM;
  *out = counted(ptr);
  return 0;
}

void* valloc(size_t size) {
  return counted(__libc_valloc(size));
}

void* pvalloc(size_t size) {
  return counted(__libc_pvalloc(size));
}

}  // extern "C"

namespace dilated::cli {

int64_t host_heap_bytes() {
  return current_bytes.load();
}
int64_t host_heap_peak() {
  return peak_bytes.load();
}
void reset_host_heap_peak() {
  peak_bytes.store(current_bytes.load());
}
bool host_heap_tracked() {
  return true;
}

}  // namespace dilated::cli

#else

namespace dilated::cli {

int64_t host_heap_bytes() {
  return 0;
}
int64_t host_heap_peak() {
  return 0;
}
void reset_host_heap_peak() {}
bool host_heap_tracked() {
  return false;
}

}  // namespace dilated::cli

#endif
