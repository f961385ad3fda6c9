// Host-side lists of the key blocks each block pattern keeps (docs/design.md 1.1), shared by
// the oracle, the fast CPU backend and the CLI's --dump-mask, and the token order of a grid.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dilated/params.hpp"

namespace dilated {

// Curve position -> row-major token for a problem with a grid; empty without one.
std::vector<int64_t> token_order(const Params& p);

// The token row that curve position t of a sequence reads and writes.
inline int64_t token_row(const std::vector<int64_t>& order, int64_t t) {
  return order.empty() ? t : order[static_cast<size_t>(t)];
}

// Means over each block (positions in curve order) of query head `head`'s q and of its kv
// head's k in sequence b, in double: what topk scores. [blocks][head_dim] each.
struct BlockMeans {
  int64_t blocks = 0;
  std::vector<double> q, k;
};
BlockMeans block_means(const Params& p, const std::vector<int64_t>& order, int64_t b, int64_t head);

// Whether any pattern of p needs block means (topk).
bool needs_block_means(const Params& p);

// The key blocks that `bp` keeps for query block I of query head `head` in a sequence of `nb`
// blocks: sorted, distinct, and only J <= I when causal (later blocks hold no visible key).
// topk reads `means`; the other kinds ignore it.
void key_blocks(const Params& p, const BlockPattern& bp, int64_t head, int64_t I, int64_t nb,
                const BlockMeans* means, std::vector<int64_t>* out);

}  // namespace dilated
