// Test problems in host memory: random inputs (never zeros), NaN-poisoned outputs, optional
// strided layouts and varlen packing, and readers that return logical [token, head, dim] data.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dilated/dilated.hpp"

namespace dilated::testing {

enum class Layout {
  contiguous,  // [B, N, H, D]
  padded,      // rows and heads padded with unused elements
  head_major,  // [B, H, N, D] memory, viewed as [B, N, H, D]
};

struct ProblemConfig {
  int64_t batch = 1;
  int64_t seqlen = 64;
  int64_t heads = 2;
  int64_t heads_kv = 2;
  int64_t head_dim = 16;
  int64_t head_dim_v = 16;
  DType dtype = DType::f32;
  std::vector<Pattern> patterns = {{16, 1}};
  Mode mode = Mode::longnet;
  HeadOffsets head_offsets = HeadOffsets::paper;
  bool causal = false;
  float scale = std::numeric_limits<float>::quiet_NaN();
  std::vector<int32_t> seq_lengths;  // non-empty: varlen, one length per sequence
  Layout layout = Layout::contiguous;
  // Block-sparse patterns; a mask pattern reads block_mask [mask_heads, NB, NB] (0 or 1).
  int64_t block_size = 64;
  std::vector<BlockPattern> block_patterns;
  std::vector<uint8_t> block_mask;
  int64_t mask_heads = 1;
  // Hilbert order of a grid_height x grid_width token grid (seqlen = their product); 0: none.
  int64_t grid_height = 0;
  int64_t grid_width = 0;

  std::string describe() const;
};

// One buffer of a problem, in the problem's dtype and layout.
struct Buffer {
  std::vector<unsigned char> bytes;
  Tensor view;
  int64_t heads = 0;
  int64_t dim = 0;
};

class HostProblem {
 public:
  HostProblem(const ProblemConfig& config, uint64_t seed);

  const ProblemConfig& config() const { return config_; }
  Params params() const;  // pointers into this problem's buffers
  int64_t tokens() const { return tokens_; }

  // Fills out, lse, dq, dk, dv with NaN so that unwritten elements show up.
  void poison_outputs();
  // Replaces an input with other values (e.g. the rounding of one dtype through another).
  void set(const std::string& name, const std::vector<double>& values);

  // Logical contents as double, [token][head][dim] with tokens packed in batch order.
  std::vector<double> read(const std::string& name) const;
  std::vector<double> read_lse() const;  // [B, H, N] or [H, T], as stored

  Buffer& buffer(const std::string& name);
  const Buffer& buffer(const std::string& name) const;
  std::vector<float>& lse_buffer() { return lse_; }
  const std::vector<int32_t>& cu_seqlens() const { return cu_seqlens_; }
  // Names of the [token, head, dim] buffers: inputs q k v dout, outputs out dq dk dv.
  static const std::vector<std::string>& buffer_names();

 private:
  void allocate(Buffer& buf, int64_t heads, int64_t dim);
  int64_t element_offset(const Buffer& buf, int64_t token, int64_t head) const;

  ProblemConfig config_;
  int64_t tokens_ = 0;
  std::vector<int32_t> cu_seqlens_;
  Buffer q_, k_, v_, out_, dout_, dq_, dk_, dv_;
  std::vector<float> lse_;
};

// A random problem for sweeps: sizes, patterns, modes, GQA, causal, layouts, varlen.
struct RandomLimits {
  int64_t max_batch = 3;
  int64_t max_seqlen = 160;
  int64_t max_heads = 6;
  std::vector<int64_t> head_dims = {16, 32, 64, 128};
  int max_patterns = 5;
  bool allow_varlen = true;
  bool allow_layouts = true;
  bool allow_dv = true;  // head_dim_v != head_dim
  std::vector<DType> dtypes = {DType::f32};
  bool allow_blocks = false;  // block-sparse patterns (with or without dilated ones)
  bool allow_grid = false;    // Hilbert order (then seqlen = height * width, no varlen)
};
ProblemConfig random_config(std::mt19937_64& rng, const RandomLimits& limits);

// max |a - b| / max |ref|, NaN-aware: any NaN in a where ref is finite gives +inf.
double relative_error(const std::vector<double>& got, const std::vector<double>& ref);

// A seed from the clock unless DILATED_TEST_SEED is set; print it on failure.
uint64_t test_seed();

}  // namespace dilated::testing
