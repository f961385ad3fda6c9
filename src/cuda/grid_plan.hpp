// Token grids on the CUDA backend (host-only): the problem runs on curve-ordered copies of its
// rows (docs/design.md 1.2: row t of the curve is token order[t]), contiguous [B, N, heads, dim]
// in the workspace, followed by the workspace of that plain problem (the curve itself is kept
// on the device per grid shape, grid_order.cu). The simpler of the two
// designs of issue 7; the other (order[] inside every kernel's row mapping) saves the copies.
#pragma once

#include <cstdint>

#include "dilated/params.hpp"

namespace dilated::cuda {

struct GridLayout {
  int64_t q = -1, k = -1, v = -1, out = -1, dout = -1, dq = -1, dk = -1, dv = -1;
  int64_t lse = -1;   // fp32 [B, H, N] in curve order
  int64_t inner = 0;  // the plain problem's workspace
  int64_t bytes = 0;
};

GridLayout grid_layout(const Params& p, bool backward);
int64_t grid_workspace_bytes(const Params& p, bool backward);
// The plain problem over the copies (grid cleared, no varlen: validate() refuses grids there).
Params curve_params(const Params& p, const GridLayout& layout, bool backward);

}  // namespace dilated::cuda
