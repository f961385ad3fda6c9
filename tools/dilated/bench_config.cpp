#include "bench_config.hpp"

namespace dilated::cli {

std::vector<std::string> suite_names() {
  return {"default", "seed", "long"};
}

bool suite_sweep(const std::string& name, Sweep* sweep) {
  Sweep s;
  s.modes = {Mode::head_groups, Mode::longnet};
  s.backward = true;
  if (name == "default") {
    // Issue 2's performance configuration: the CPU efficiency figures come from it.
    s.seq_lens = {16384};
    s.batches = {1};
    s.heads = {8};
    s.head_dims = {64};
    s.patterns = {{2048, 1}, {4096, 2}, {8192, 4}};
    s.dtypes = {DType::f32};
  } else if (name == "seed") {
    // The classic configuration of dilated-attention-pytorch's benchmarks.
    s.seq_lens = {2048, 4096};
    s.batches = {2};
    s.heads = {12};
    s.head_dims = {64};
    s.patterns = {{512, 1}, {1024, 2}, {2048, 4}};
    s.dtypes = {DType::f32};
  } else if (name == "long") {
    // LongNet's geometric patterns over long sequences, in the GPU dtypes.
    s.seq_lens = {65536, 262144, 1048576};
    s.batches = {1};
    s.heads = {16};
    s.head_dims = {128};
    s.patterns = {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}, {32768, 16}};
    s.dtypes = {DType::bf16, DType::f16};
  } else {
    return false;
  }
  *sweep = s;
  return true;
}

std::vector<BenchCase> expand(const Sweep& sweep, int32_t threads) {
  std::vector<BenchCase> cases;
  for (DType dtype : sweep.dtypes) {
    for (Mode mode : sweep.modes) {
      for (int64_t d : sweep.head_dims) {
        for (int64_t h : sweep.heads) {
          const std::vector<int64_t> kv_list =
              sweep.heads_kv.empty() ? std::vector<int64_t>{h} : sweep.heads_kv;
          for (int64_t h_kv : kv_list) {
            for (int64_t b : sweep.batches) {
              for (int64_t n : sweep.seq_lens) {
                BenchCase c;
                c.spec.batch = b;
                c.spec.seqlen = n;
                c.spec.heads = h;
                c.spec.heads_kv = h_kv;
                c.spec.head_dim = d;
                c.spec.dtype = dtype;
                c.spec.patterns = sweep.patterns;
                c.spec.mode = mode;
                c.spec.head_offsets =
                    mode == Mode::longnet ? sweep.head_offsets : HeadOffsets::paper;
                c.spec.causal = sweep.causal;
                c.spec.block_size = sweep.block_size;
                c.spec.block_patterns = sweep.block_patterns;
                c.spec.grid_height = sweep.grid_height;
                c.spec.grid_width = sweep.grid_width;
                c.spec.threads = threads;
                c.backward = sweep.backward;
                cases.push_back(c);
              }
            }
          }
        }
      }
    }
  }
  return cases;
}

}  // namespace dilated::cli
