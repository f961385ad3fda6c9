// The backend registry: every implementation says whether it can run a problem and, if not,
// why (the CLI prints these reasons).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated {

enum class Direction : int { forward = 0, backward = 1 };

// An opaque execution stream: a cudaStream_t for CUDA backends, ignored on the host.
struct Stream {
  void* handle = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual const char* description() const = 0;
  virtual Device device() const = 0;
  // Empty when the backend can run on this machine; otherwise why not (no GPU, ...).
  virtual std::string unavailable_reason() const { return {}; }
  // Empty when this backend runs `p` (already validated) in direction `dir`; otherwise why not.
  virtual std::string unsupported_reason(const Params& p, Direction dir) const = 0;
  // Bytes of Params::workspace the run needs.
  virtual int64_t workspace_bytes(const Params&, Direction) const { return 0; }
  // Called with a validated, supported problem.
  virtual Status run_forward(const Params& p, Stream stream) const = 0;
  virtual Status run_backward(const Params& p, Stream stream) const = 0;

  // Device services, so that tools and tests can drive any backend without knowing its
  // device API: the processor's name, memory, copies and waiting for queued work.
  virtual std::string device_name() const = 0;
  virtual Status allocate(int64_t bytes, void** ptr) const = 0;
  virtual void release(void* ptr) const = 0;
  virtual Status copy_to_device(void* dst, const void* host_src, int64_t bytes) const = 0;
  virtual Status copy_to_host(void* host_dst, const void* src, int64_t bytes) const = 0;
  virtual Status synchronize(Stream stream) const = 0;
};

// All compiled-in backends, best first within each device (auto picks the first that runs).
const std::vector<const Backend*>& backends();
// nullptr when no backend has that name.
const Backend* find_backend(const std::string& name);

}  // namespace dilated
