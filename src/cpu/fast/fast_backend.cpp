// Placeholder until the fast CPU backend lands: registered, but declines every problem.
#include "core/backend_list.hpp"
#include "core/host_backend.hpp"

namespace dilated {
namespace {

class CpuFastBackend final : public HostBackend {
 public:
  const char* name() const override { return "cpu"; }
  const char* description() const override { return "fast CPU backend (not built yet)"; }
  std::string unavailable_reason() const override { return "not implemented yet"; }
  std::string unsupported_reason(const Params&, Direction) const override {
    return "not implemented yet";
  }
  Status run_forward(const Params&, Stream) const override {
    return Status::Unavailable("not implemented");
  }
  Status run_backward(const Params&, Stream) const override {
    return Status::Unavailable("not implemented");
  }
};

}  // namespace

const Backend& cpu_fast_backend() {
  static const CpuFastBackend backend;
  return backend;
}

}  // namespace dilated
