// The one description of a dilated-attention problem. Every backend, the CLI and the Python
// binding fill this struct (see make_params) and every kernel receives it by value.
#pragma once

#include <cstdint>
#include <limits>

namespace dilated {

// f64 exists for numerical checks (e.g. torch.autograd.gradcheck): only the reference
// backend runs it.
enum class DType : int32_t { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };

// DESIGN 2.3 (longnet: one softmax over the union of every pattern's keys) and DESIGN 2.4
// (head_groups: dilated-attention-pytorch's contiguous head groups, one pattern per group).
enum class Mode : int32_t { longnet = 0, head_groups = 1 };

// Offset of query head j for pattern (w, r) in longnet mode: paper `j % r`, or torchscale's
// grouping `j / ceil(H / r)` (heads padded to a multiple of r, then split into r groups).
enum class HeadOffsets : int32_t { paper = 0, grouped = 1 };

// Where the tensors of a problem live.
enum class Device : int32_t { host = 0, cuda = 1 };

// A dilated pattern (segment length w, dilation r); the offset comes from the head (DESIGN 2.3).
struct Pattern {
  int64_t segment = 0;
  int64_t dilation = 1;
};

inline constexpr int kMaxPatterns = 16;

// A window of a longer sequence, for sequence parallelism (src/dist, docs/design.md "Sequence
// parallelism"). q, out, lse, dout and dq hold positions [query_begin, query_begin + seqlen),
// k, v, dk and dv positions [key_begin, key_begin + key_rows) of one sequence of
// global_seqlen tokens per batch entry. Segments, selection and causal order use global
// positions; a query attends to the keys of its key set (DESIGN 2.2) that lie in the key
// window, and gets out = 0, lse = -inf when there are none. Backward reads lse and out as
// given (normally the result merged over every key window), so it returns this window's share
// of dq and the gradients of the window's keys. Not combined with varlen, block patterns or grids.
struct SequenceWindow {
  int64_t global_seqlen = 0;  // 0: no window, the tensors hold whole sequences
  int64_t query_begin = 0;
  int64_t key_begin = 0;
  int64_t key_rows = 0;
};

// Block-sparse patterns (docs/design.md 1.1): with block size b, query block I = t / b and key
// block J = t' / b, each pattern keeps a set of pairs (I, J) and query t gets the keys of every
// kept key block (t' <= t when causal), once per pattern, in the same union softmax as the
// dilated patterns.
enum class BlockKind : int32_t {
  local = 0,    // |I - J| <= size
  global = 1,   // I < size or J < size
  dilated = 2,  // J = I + k * size for k in -reach..reach
  random = 3,   // per head and query block, `size` distinct key blocks drawn from `seed`
  topk = 4,     // the diagonal plus the `size` key blocks of largest <mean q_I, mean k_J>
  mask = 5,     // the caller's boolean BlockMask
};

struct BlockPattern {
  BlockKind kind = BlockKind::local;
  int64_t size = 0;   // local: W, global: g, dilated: s, random: k, topk: k
  int64_t reach = 0;  // dilated: c
  uint64_t seed = 0;  // random
};

inline constexpr int kMaxBlockPatterns = 8;

// A boolean [heads, blocks, blocks] block mask, one byte (0 or 1) per (I, J), row-major and
// contiguous, in the problem's device memory; heads is 1 (shared) or H, blocks = ceil(N / b).
struct BlockMask {
  const uint8_t* data = nullptr;
  int64_t heads = 0;
  int64_t blocks = 0;
};

struct BlockSparsity {
  int64_t block_size = 64;
  int32_t num_patterns = 0;
  BlockPattern patterns[kMaxBlockPatterns] = {};
  BlockMask mask;  // read by the (at most one) BlockKind::mask pattern
};

// Tokens of a height x width grid in row-major order, visited along a generalised Hilbert
// curve: segments and blocks are formed in curve order, results stay in row-major order.
// 0 x 0 means the plain sequence order.
struct TokenGrid {
  int64_t height = 0;
  int64_t width = 0;
};

// A [B, N, H, D] tensor (or packed [T, H, D] with cu_seqlens) whose last dimension is
// contiguous. Strides are in elements. Inputs are only read; the pointer is not const so that
// one type serves inputs and outputs.
struct Tensor {
  void* data = nullptr;
  int64_t batch_stride = 0;  // ignored for varlen problems
  int64_t row_stride = 0;    // between consecutive tokens
  int64_t head_stride = 0;   // between consecutive heads
};

struct Params {
  // Shapes. For varlen problems (cu_seqlens != nullptr) `batch` is the number of sequences,
  // `seqlen` is the longest sequence and `total_tokens` the packed length T.
  int64_t batch = 0;
  int64_t seqlen = 0;
  int64_t heads = 0;
  int64_t heads_kv = 0;
  int64_t head_dim = 0;
  int64_t head_dim_v = 0;  // equals head_dim unless a backend says otherwise
  DType dtype = DType::f32;
  Device device = Device::host;

  // Forward inputs and outputs. `lse` is float32, contiguous [B, H, N] (varlen: [H, T]);
  // it may be null in forward, and is read in backward.
  Tensor q, k, v, out;
  float* lse = nullptr;

  // Backward: dout is read; dq, dk, dv are overwritten (dk, dv have heads_kv heads).
  Tensor dout, dq, dk, dv;

  // Varlen: int32 [batch + 1] prefix sums of sequence lengths, in the problem's device memory.
  const int32_t* cu_seqlens = nullptr;
  int64_t total_tokens = 0;

  // The tensors hold windows of a longer sequence (k, v, dk, dv: key_rows rows per batch).
  SequenceWindow window;

  // The pattern set of the layer.
  int32_t num_patterns = 0;
  Pattern patterns[kMaxPatterns] = {};
  Mode mode = Mode::longnet;
  HeadOffsets head_offsets = HeadOffsets::paper;
  bool causal = false;
  // Softmax scale; NaN means 1/sqrt(head_dim). Read it through softmax_scale().
  float scale = std::numeric_limits<float>::quiet_NaN();

  // Block-sparse patterns joining the union (num_patterns may then be 0 in longnet mode), and
  // the Hilbert order of a token grid.
  BlockSparsity blocks;
  TokenGrid grid;

  // Backward only: bitwise-reproducible gradients where a backend offers it (may cost speed).
  bool deterministic = false;

  // Scratch memory the caller provides (size from workspace_bytes()). CUDA backends require it
  // when they need any, so that launches never allocate (CUDA graph capture); host backends
  // allocate their own when it is null.
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;

  // Host threads for CPU backends; 0 means all hardware threads.
  int32_t num_threads = 0;
};

}  // namespace dilated
