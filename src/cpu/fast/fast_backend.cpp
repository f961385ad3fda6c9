// The fast CPU backend ("cpu"): computes what src/cpu/reference.cpp computes with a blocked
// online softmax over the selected keys only, Highway SIMD (the widest target the CPU runs,
// picked at run time) and std::thread workers.
//
// Forward: tasks (sequence, query head, chunk of positions) run every pattern of the head over
// their rows (forward_kernels.cpp). Backward: patterns run one after another; within one,
// tasks (sequence, kv head and offset, whole segments) own disjoint dq/dk/dv rows, so no
// atomics are needed (backward_kernels.cpp). Both are deterministic: the same bits for any
// number of threads. 16-bit backward adds into float32 accumulators the size of dq, dk and dv
// (patterns add into the same rows) and recomputes the float32 softmax output for delta;
// workspace_bytes() counts every buffer a call allocates.
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/backend_list.hpp"
#include "core/block_rows.hpp"
#include "core/block_sparse.hpp"
#include "core/dtype_convert.hpp"
#include "core/host_backend.hpp"
#include "core/pattern_math.hpp"
#include "cpu/fast/block_layout.hpp"
#include "cpu/fast/kernels.hpp"
#include "cpu/fast/parallel.hpp"
#include "cpu/fast/plan.hpp"
#include "dilated/dilated.hpp"

namespace dilated {
namespace {

using cpu_fast::Arena;

constexpr float kLog2e = 1.44269504088896341f;

// The caller's workspace, or a block of our own. Ours is mapped from the system and unmapped
// after the call: through malloc, the alternating forward and backward sizes left the heap
// growing by about a workspace per call (glibc's adaptive mmap threshold), which showed up as
// peak memory that depended on how often the backend had been called.
class Scratch {
 public:
  Scratch(const Params& p, int64_t bytes) : bytes_(static_cast<size_t>(bytes)) {
    if (p.workspace && p.workspace_bytes >= bytes) {
      data_ = p.workspace;
      bytes_ = 0;
    } else {
      void* block =
          mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      data_ = block == MAP_FAILED ? nullptr : block;
    }
  }
  ~Scratch() {
    if (data_ && bytes_ > 0) munmap(data_, bytes_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* data() const { return data_; }

 private:
  size_t bytes_;
  void* data_ = nullptr;
};

// Calls fn(b, t) for every token of tokens [first, last) in packed order.
template <class F>
void for_tokens(const Params& p, int64_t first, int64_t last, const F& fn) {
  if (!p.cu_seqlens) {
    for (int64_t token = first; token < last; ++token) fn(token / p.seqlen, token % p.seqlen);
    return;
  }
  int64_t b = std::upper_bound(p.cu_seqlens, p.cu_seqlens + p.batch + 1, first) - p.cu_seqlens - 1;
  for (int64_t token = first; token < last; ++token) {
    while (p.cu_seqlens[b + 1] <= token) ++b;
    fn(b, token - p.cu_seqlens[b]);
  }
}

// Runs fn(b, t) over every token on `threads` workers, in blocks of tokens.
template <class F>
void parallel_tokens(const Params& p, int64_t tokens, int threads, const F& fn) {
  constexpr int64_t kBlock = 256;
  cpu_fast::parallel_for(threads, ceil_div(tokens, kBlock), [&](int64_t block, int) {
    for_tokens(p, block * kBlock, std::min(tokens, (block + 1) * kBlock), fn);
  });
}

// The same over the rows of k, v, dk and dv (a window's key rows differ from its query rows).
template <class F>
void parallel_key_tokens(const Params& p, int64_t key_tokens, int threads, const F& fn) {
  if (!windowed(p)) return parallel_tokens(p, key_tokens, threads, fn);
  const int64_t rows = p.window.key_rows;
  constexpr int64_t kBlock = 256;
  cpu_fast::parallel_for(threads, ceil_div(key_tokens, kBlock), [&](int64_t block, int) {
    const int64_t last = std::min(key_tokens, (block + 1) * kBlock);
    for (int64_t token = block * kBlock; token < last; ++token) fn(token / rows, token % rows);
  });
}
// The token order of a grid and the block patterns' union, listed once per call (heap
// memory proportional to N and to the kept blocks; topk reads q and k here).
class Extras {
 public:
  Extras(const Params& p, int threads) : order_(token_order(p)) {
    if (has_block_patterns(p)) blocks_.emplace(p, order_, threads);
  }
  template <class Job>
  void attach(Job* job) const {
    job->order = order_.empty() ? nullptr : order_.data();
    job->blocks = blocks_ ? &*blocks_ : nullptr;
  }
  // The phases of the block-pattern backward with work: those pairing some query super-block
  // with a key super-block that holds one of its kept key blocks.
  std::vector<int64_t> active_phases(int64_t super, int64_t most_supers) const {
    std::vector<int64_t> phases;
    if (!blocks_) return phases;
    std::vector<bool> active(static_cast<size_t>(most_supers), false);
    for (const cpu_fast::HeadBlocks& hb : blocks_->all()) {
      const int64_t supers = ceil_div(hb.blocks, super);
      for (int64_t I = 0; I < hb.blocks; ++I) {
        for (int64_t at = hb.row_begin[I]; at < hb.row_begin[I + 1]; ++at) {
          const cpu_fast::BlockRun& r = hb.rows[static_cast<size_t>(at)];
          for (int64_t T = r.first / super; T <= (r.first + r.count - 1) / super; ++T) {
            active[static_cast<size_t>((T - I / super + supers) % supers)] = true;
          }
        }
      }
    }
    for (int64_t d = 0; d < most_supers; ++d) {
      if (active[static_cast<size_t>(d)]) phases.push_back(d);
    }
    return phases;
  }

 private:
  std::vector<int64_t> order_;
  std::optional<cpu_fast::BlockLayout> blocks_;
};

Status fast_forward(const Params& p) {
  const cpu_fast::ForwardPlan plan = cpu_fast::plan_forward(p);
  Scratch scratch(p, plan.workspace_bytes(p));
  if (!scratch.data()) return Status::Runtime("cpu backend: out of host memory for its workspace");
  Arena arena(scratch.data());
  std::vector<cpu_fast::ForwardBuffers> buffers;
  for (int t = 0; t < plan.threads; ++t) buffers.push_back(plan.carve(p, arena));
  const Extras extras(p, plan.threads);
  cpu_fast::ForwardJob job;
  job.p = &p;
  job.log2_scale = softmax_scale(p) * kLog2e;
  job.out_scale = output_scale(p);
  extras.attach(&job);
  cpu_fast::parallel_for(plan.threads, plan.tasks(), [&](int64_t index, int worker) {
    cpu_fast::run_forward_task(job, plan.task(p, index), buffers[static_cast<size_t>(worker)]);
  });
  return {};
}

Status fast_backward(const Params& p) {
  const cpu_fast::BackwardPlan plan = cpu_fast::plan_backward(p);
  Scratch scratch(p, plan.workspace_bytes(p));
  if (!scratch.data()) return Status::Runtime("cpu backend: out of host memory for its workspace");
  Arena arena(scratch.data());
  const Extras extras(p, plan.threads);
  cpu_fast::BackwardJob job;
  job.p = &p;
  job.scale = softmax_scale(p);
  job.log2_scale = job.scale * kLog2e;
  job.out_scale = output_scale(p);
  extras.attach(&job);
  float* delta = plan.carve_accumulators(p, arena, &job);
  const int64_t mark = arena.mark();
  std::vector<cpu_fast::BackwardBuffers> buffers;
  for (int t = 0; t < plan.threads; ++t) buffers.push_back(plan.carve(p, arena));

  if (plan.delta_pre_pass) {  // its buffers overlap the passes' ones: it runs first
    arena.rewind(mark);
    std::vector<cpu_fast::ForwardBuffers> pre_buffers;
    for (int t = 0; t < plan.pre_pass.threads; ++t) {
      pre_buffers.push_back(plan.pre_pass.carve(p, arena));
    }
    cpu_fast::ForwardJob pre;
    pre.p = &p;
    pre.log2_scale = job.log2_scale;
    pre.out_scale = job.out_scale;
    pre.delta = delta;
    extras.attach(&pre);
    cpu_fast::parallel_for(plan.pre_pass.threads, plan.pre_pass.tasks(), [&](int64_t i, int w) {
      cpu_fast::run_forward_task(pre, plan.pre_pass.task(p, i),
                                 pre_buffers[static_cast<size_t>(w)]);
    });
  } else if (p.dtype == DType::f32) {  // from the stored out
    parallel_tokens(p, plan.tokens, plan.threads, [&](int64_t b, int64_t t) {
      for (int64_t h = 0; h < p.heads; ++h) {
        const float* o = static_cast<const float*>(p.out.data) + row_offset(p, p.out, b, t, h);
        const float* g = static_cast<const float*>(p.dout.data) + row_offset(p, p.dout, b, t, h);
        float sum = 0.0f;
        for (int64_t c = 0; c < p.head_dim_v; ++c) sum += g[c] * o[c];
        delta[lse_index(p, b, h, t)] = sum;
      }
    });
  } else {  // a 16-bit window: from the stored out, which holds every window's keys
    parallel_tokens(p, plan.tokens, plan.threads, [&](int64_t b, int64_t t) {
      for (int64_t h = 0; h < p.heads; ++h) {
        const int64_t o = row_offset(p, p.out, b, t, h), g = row_offset(p, p.dout, b, t, h);
        double sum = 0.0;
        for (int64_t c = 0; c < p.head_dim_v; ++c) {
          sum +=
              load_element(p.dtype, p.dout.data, g + c) * load_element(p.dtype, p.out.data, o + c);
        }
        delta[lse_index(p, b, h, t)] = static_cast<float>(sum);
      }
    });
  }

  // Every gradient row starts at zero (rows no pattern selects stay there).
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v, dq_dim = job.padded_head_dim;
  parallel_tokens(p, plan.tokens, plan.threads, [&](int64_t b, int64_t t) {
    for (int64_t h = 0; h < p.heads; ++h) {
      std::memset(static_cast<float*>(job.dq.data) + row_offset(p, job.dq, b, t, h), 0,
                  sizeof(float) * static_cast<size_t>(plan.dq_shadow ? dq_dim : dim));
    }
  });
  parallel_key_tokens(p, plan.key_tokens, plan.threads, [&](int64_t b, int64_t t) {
    for (int64_t h = 0; h < p.heads_kv; ++h) {
      std::memset(static_cast<float*>(job.dk.data) + row_offset(p, job.dk, b, t, h), 0,
                  sizeof(float) * static_cast<size_t>(dim));
      std::memset(static_cast<float*>(job.dv.data) + row_offset(p, job.dv, b, t, h), 0,
                  sizeof(float) * static_cast<size_t>(dim_v));
    }
  });

  for (const cpu_fast::BackwardPass& pass : plan.passes) {
    cpu_fast::parallel_for(plan.threads, pass.tasks(), [&](int64_t index, int worker) {
      cpu_fast::run_backward_task(job, pass.task(p, index), buffers[static_cast<size_t>(worker)]);
    });
  }
  const cpu_fast::BlockPhases& phases = plan.block_phases;
  job.block_super = phases.super;
  for (int64_t phase : extras.active_phases(phases.super, phases.most_supers)) {
    cpu_fast::parallel_for(plan.threads, phases.tasks(), [&](int64_t index, int worker) {
      cpu_fast::BlockBackwardTask task;
      if (phases.task(p, phase, index, &task)) {
        cpu_fast::run_block_backward_task(job, task, buffers[static_cast<size_t>(worker)]);
      }
    });
  }

  // Shadows go to the outputs, rounded to their type.
  auto store = [&](const Tensor& from, const Tensor& to, int64_t b, int64_t t, int64_t h,
                   int64_t n) {
    const float* src = static_cast<const float*>(from.data) + row_offset(p, from, b, t, h);
    const int64_t dst = row_offset(p, to, b, t, h);
    for (int64_t d = 0; d < n; ++d) store_element(p.dtype, to.data, dst + d, src[d]);
  };
  if (plan.dq_shadow) {
    parallel_tokens(p, plan.tokens, plan.threads, [&](int64_t b, int64_t t) {
      for (int64_t h = 0; h < p.heads; ++h) store(job.dq, p.dq, b, t, h, dim);
    });
  }
  if (plan.dkv_shadow) {
    parallel_key_tokens(p, plan.key_tokens, plan.threads, [&](int64_t b, int64_t t) {
      for (int64_t h = 0; h < p.heads_kv; ++h) {
        store(job.dk, p.dk, b, t, h, dim);
        store(job.dv, p.dv, b, t, h, dim_v);
      }
    });
  }
  return {};
}

class CpuFastBackend final : public HostBackend {
 public:
  CpuFastBackend()
      : description_(std::string("fast CPU backend: blocked online softmax over the selected ") +
                     "keys, Highway SIMD (" + cpu_fast::kernel_target_name() +
                     " here), std::thread workers") {}
  const char* name() const override { return "cpu"; }
  const char* description() const override { return description_.c_str(); }
  // Every problem the oracle runs: any head dims, dtypes, strides, modes and patterns.
  std::string unsupported_reason(const Params& p, Direction) const override {
    return p.dtype == DType::f64 ? "float64 runs on the reference backend only" : "";
  }
  int64_t workspace_bytes(const Params& p, Direction dir) const override {
    return dir == Direction::forward ? cpu_fast::plan_forward(p).workspace_bytes(p)
                                     : cpu_fast::plan_backward(p).workspace_bytes(p);
  }
  Status run_forward(const Params& p, Stream) const override { return fast_forward(p); }
  Status run_backward(const Params& p, Stream) const override { return fast_backward(p); }

 private:
  std::string description_;
};

}  // namespace

const Backend& cpu_fast_backend() {
  static const CpuFastBackend backend;
  return backend;
}

}  // namespace dilated
