// DeviceScratch over the CUDA backend's device services (no CUDA headers here, so that hosts
// without CUDA build it too; there reserve() says the backend is missing).
#include "dilated/dist.hpp"

namespace dilated::dist {

DeviceScratch::DeviceScratch(const Backend* memory)
    : memory_(memory ? memory : find_backend("cuda")) {}

DeviceScratch::~DeviceScratch() {
  if (data_) memory_->release(data_);
}

Status DeviceScratch::reserve(int64_t bytes, void** ptr) {
  if (bytes <= bytes_ && data_) {
    *ptr = data_;
    return {};
  }
  const Backend* backend = memory_;
  if (!backend) return Status::Unavailable("dist: this build has no CUDA backend");
  if (data_) backend->release(data_);
  data_ = nullptr;
  bytes_ = 0;
  const int64_t want = bytes < 256 ? 256 : bytes;
  if (Status s = backend->allocate(want, &data_); !s.ok()) {
    data_ = nullptr;
    return Status::Runtime("dist: device scratch of " + std::to_string(want) +
                           " bytes: " + s.message());
  }
  bytes_ = want;
  *ptr = data_;
  return {};
}

}  // namespace dilated::dist
