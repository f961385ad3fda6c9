// Which k/v rows the ranks of a sequence-parallel call exchange. Every rank computes the same
// plan from the layer and the shard table alone, so senders and receivers agree on every size
// without asking each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/pattern_math.hpp"
#include "dilated/params.hpp"

namespace dilated::dist {

// Rank q holds global rows [first[q], first[q + 1]).
struct ShardTable {
  std::vector<int64_t> first;  // size() + 1 entries, first[0] = 0, last = global length

  int size() const { return static_cast<int>(first.size()) - 1; }
  int64_t begin(int rank) const { return first[static_cast<size_t>(rank)]; }
  int64_t end(int rank) const { return first[static_cast<size_t>(rank) + 1]; }
  int64_t global_seqlen() const { return first.back(); }
};

// Query heads of one pattern that share kv head and offset, hence the same keys. The heads
// are an arithmetic progression (first, first + step, ...) whenever the layer's rules give
// one; the plan splits other sets into such runs.
struct KeyClass {
  HeadPattern hp{1, 1, 0};
  int64_t kv_head = 0;
  int64_t first_head = 0;
  int64_t head_step = 1;
  int64_t heads = 0;
};

// The selected rows of one key class in one segment that crosses a shard boundary.
struct Unit {
  int key_class = 0;
  int64_t segment_begin = 0;  // global positions
  // Per rank: the segment's selected index of its first selected row there, and how many
  // selected rows it holds (0: none).
  std::vector<int64_t> first_selected;
  std::vector<int64_t> count;

  // Global position of selected index c.
  int64_t position(const HeadPattern& hp, int64_t c) const {
    return segment_begin + hp.offset + c * hp.dilation;
  }
};

struct ExchangePlan {
  std::vector<KeyClass> classes;
  std::vector<Unit> units;  // the same order on every rank
  bool causal = false;

  // Whether rank `from` sends its rows of `u` to rank `to`: both hold rows, and (causal) the
  // keys come before the queries. A receiver sees all of them: causal masking never cuts
  // through another rank's rows, because shards are contiguous.
  bool sends(const Unit& u, int from, int to) const {
    return from != to && u.count[static_cast<size_t>(from)] > 0 &&
           u.count[static_cast<size_t>(to)] > 0 && (!causal || from < to);
  }
  // Rows of `u` that `rank` receives (from every sender, in rank order).
  int64_t received_rows(const Unit& u, int rank) const;
};

// `p` describes one rank's shard (only the layer's fields are read: heads, patterns, mode).
ExchangePlan plan_exchange(const Params& p, const ShardTable& shards);

}  // namespace dilated::dist
