// dilated-attention: exact dilated attention (LongNet) and its family.
// Public entry points; the computation is defined in docs/design.md ("The computation").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dilated/backend.hpp"
#include "dilated/params.hpp"
#include "dilated/status.hpp"

namespace dilated {

// Checks every field `dir` reads or writes; the message names the argument, its value and
// what was expected. Backends only ever see problems that passed this.
Status validate(const Params& p, Direction dir);

// The scale applied to q.k: Params::scale, or 1/sqrt(head_dim) when it is NaN.
float softmax_scale(const Params& p);

// Sets the pattern list (at most kMaxPatterns; validate() checks the values and whether an
// empty list is allowed: with block patterns in longnet mode).
Status set_patterns(Params& p, const std::vector<Pattern>& patterns);

// Sets the block-sparse patterns and the block size; the values are checked by validate().
Status set_block_patterns(Params& p, const std::vector<BlockPattern>& patterns,
                          int64_t block_size = 64);

// The generalised Hilbert curve over a height x width grid: element i is the row-major index
// (y * width + x) of the i-th cell the curve visits. Consecutive cells are grid neighbours.
std::vector<int64_t> hilbert_order(int64_t height, int64_t width);

// The realised union of p's block patterns for sequence b, as [heads, nb, nb] bytes (1 where
// some pattern keeps (I, J), after the causal cut J <= I); nb = ceil(N_b / block_size). p must
// be valid and in host memory (topk reads q and k).
Status realised_block_mask(const Params& p, int64_t b, std::vector<uint8_t>* mask, int64_t* nb);

// A tensor view of contiguous [B, N, heads, dim] memory (packed [T, heads, dim] when
// p.cu_seqlens is set; uses p.seqlen and p.total_tokens).
Tensor contiguous_tensor(const Params& p, void* data, int64_t heads, int64_t dim);

// Picks the backend: `name` "auto" means the first available backend on p.device that
// supports the problem. Fails with the reasons of every candidate otherwise.
Status select_backend(const Params& p, Direction dir, const std::string& name,
                      const Backend** chosen);

// Validate, select and run. `backend` is a registry name or "auto".
Status forward(const Params& p, Stream stream = {}, const std::string& backend = "auto");
Status backward(const Params& p, Stream stream = {}, const std::string& backend = "auto");

// Workspace the chosen backend needs in Params::workspace.
Status workspace_bytes(const Params& p, Direction dir, const std::string& backend, int64_t* bytes);

// DESIGN 2.6: (query, key) pairs with multiplicity over all heads of one sequence of length n,
// and the forward FLOPs (4 * D * pairs) of the whole problem. For varlen problems the
// sequence lengths come from `host_cu_seqlens` ([batch + 1], host memory). attended_pairs
// saturates at INT64_MAX (segments selecting more than 3e9 tokens); forward_flops does not.
int64_t attended_pairs(const Params& p, int64_t n);
double forward_flops(const Params& p, const int32_t* host_cu_seqlens = nullptr);

const char* dtype_name(DType t);
int64_t dtype_size(DType t);
const char* mode_name(Mode m);
const char* head_offsets_name(HeadOffsets h);
const char* block_kind_name(BlockKind k);
// Parse names as the CLI and Python spell them; false when unknown.
bool parse_dtype(const std::string& s, DType* out);
bool parse_mode(const std::string& s, Mode* out);
bool parse_head_offsets(const std::string& s, HeadOffsets* out);

}  // namespace dilated
