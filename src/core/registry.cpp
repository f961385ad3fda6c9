// The registry and backend selection: every candidate says why it cannot run a problem.
#include <string>
#include <vector>

#include "core/backend_list.hpp"
#include "dilated/dilated.hpp"

namespace dilated {

const std::vector<const Backend*>& backends() {
  static const std::vector<const Backend*> all = {
#if DILATED_WITH_CUDA
    &cuda_backend(),
#endif
    &cpu_fast_backend(),
    &reference_backend(),
  };
  return all;
}

const Backend* find_backend(const std::string& name) {
  for (const Backend* b : backends()) {
    if (name == b->name()) return b;
  }
  return nullptr;
}

namespace {

// Empty when `b` can run `p`, otherwise the reason.
std::string why_not(const Backend& b, const Params& p, Direction dir) {
  if (b.device() != p.device) {
    return std::string("tensors are in ") + (p.device == Device::cuda ? "CUDA" : "host") +
           " memory, this backend runs on the " + (b.device() == Device::cuda ? "GPU" : "host");
  }
  if (std::string reason = b.unavailable_reason(); !reason.empty()) return reason;
  return b.unsupported_reason(p, dir);
}

}  // namespace

Status select_backend(const Params& p, Direction dir, const std::string& name,
                      const Backend** chosen) {
  *chosen = nullptr;
  if (name != "auto") {
    const Backend* b = find_backend(name);
    if (!b) {
      std::string known;
      for (const Backend* c : backends())
        known += std::string(known.empty() ? "" : ", ") + c->name();
      return Status::Invalid("backend = " + name + ": expected auto or one of " + known);
    }
    if (std::string reason = why_not(*b, p, dir); !reason.empty()) {
      return Status::Unsupported("backend " + name + " cannot run this problem: " + reason);
    }
    *chosen = b;
    return {};
  }
  std::string reasons;
  for (const Backend* b : backends()) {
    std::string reason = why_not(*b, p, dir);
    if (reason.empty()) {
      *chosen = b;
      return {};
    }
    reasons += std::string("; ") + b->name() + ": " + reason;
  }
  return Status::Unsupported("no backend runs this problem" + reasons);
}

namespace {

Status run(const Params& p, Stream stream, const std::string& name, Direction dir) {
  if (Status s = validate(p, dir); !s.ok()) return s;
  const Backend* b = nullptr;
  if (Status s = select_backend(p, dir, name, &b); !s.ok()) return s;
  // Host backends allocate their scratch themselves when the caller passes none; device
  // launches never allocate, so they need the caller's workspace.
  const int64_t needed = b->workspace_bytes(p, dir);
  if (needed > p.workspace_bytes && (p.workspace || b->device() == Device::cuda)) {
    return Status::Invalid("workspace_bytes = " + std::to_string(p.workspace_bytes) + ": backend " +
                           b->name() + " needs " + std::to_string(needed));
  }
  return dir == Direction::forward ? b->run_forward(p, stream) : b->run_backward(p, stream);
}

}  // namespace

Status forward(const Params& p, Stream stream, const std::string& backend) {
  return run(p, stream, backend, Direction::forward);
}

Status backward(const Params& p, Stream stream, const std::string& backend) {
  return run(p, stream, backend, Direction::backward);
}

Status workspace_bytes(const Params& p, Direction dir, const std::string& backend, int64_t* bytes) {
  *bytes = 0;
  if (Status s = validate(p, dir); !s.ok()) return s;
  const Backend* b = nullptr;
  if (Status s = select_backend(p, dir, backend, &b); !s.ok()) return s;
  *bytes = b->workspace_bytes(p, dir);
  return {};
}

}  // namespace dilated
