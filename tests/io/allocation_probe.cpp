// Replaces the global operator new of the io test binary (and only it) to watch request sizes.
#include "allocation_probe.hpp"

#include <atomic>
#include <cstdlib>
#include <new>

namespace {

std::atomic<bool> armed{false};
std::atomic<std::size_t> largest_request{0};

void* allocate(std::size_t size) {
  if (armed.load(std::memory_order_relaxed)) {
    std::size_t seen = largest_request.load(std::memory_order_relaxed);
    while (size > seen && !largest_request.compare_exchange_weak(seen, size)) {
    }
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

}  // namespace

void* operator new(std::size_t size) {
  return allocate(size);
}
void* operator new[](std::size_t size) {
  return allocate(size);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace dilated::testing {

AllocationProbe::AllocationProbe() {
  largest_request = 0;
  armed = true;
}

AllocationProbe::~AllocationProbe() {
  armed = false;
}

std::size_t AllocationProbe::largest() const {
  return largest_request.load();
}

}  // namespace dilated::testing
