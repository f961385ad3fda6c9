#include "dist/exchange_plan.hpp"

#include <algorithm>

namespace dilated::dist {
namespace {

// Query heads of pattern k with the same kv head and offset, in head order.
std::vector<std::vector<int64_t>> head_sets(const Params& p, int k, std::vector<KeyClass>* shapes) {
  std::vector<std::vector<int64_t>> sets;
  for (int64_t head = 0; head < p.heads; ++head) {
    if (p.mode == Mode::head_groups && head_group_of(head, p.heads, p.num_patterns) != k) {
      continue;
    }
    const HeadPattern hp = head_pattern(p, head, p.mode == Mode::head_groups ? 0 : k);
    const int64_t kv_head = kv_head_of(p, head);
    size_t i = 0;
    while (i < shapes->size() &&
           ((*shapes)[i].kv_head != kv_head || (*shapes)[i].hp.offset != hp.offset)) {
      ++i;
    }
    if (i == shapes->size()) {
      KeyClass c;
      c.hp = hp;
      c.kv_head = kv_head;
      shapes->push_back(c);
      sets.emplace_back();
    }
    sets[i].push_back(head);
  }
  return sets;
}

// Splits ascending heads into arithmetic runs (one run for every rule the layer has).
void add_runs(const KeyClass& shape, const std::vector<int64_t>& heads,
              std::vector<KeyClass>* classes) {
  size_t i = 0;
  while (i < heads.size()) {
    KeyClass c = shape;
    c.first_head = heads[i];
    c.heads = 1;
    c.head_step = i + 1 < heads.size() ? heads[i + 1] - heads[i] : 1;
    while (i + static_cast<size_t>(c.heads) < heads.size() &&
           heads[i + static_cast<size_t>(c.heads)] == c.first_head + c.heads * c.head_step) {
      ++c.heads;
    }
    i += static_cast<size_t>(c.heads);
    classes->push_back(c);
  }
}

// Segments of length w that hold a shard boundary inside them, ascending.
std::vector<int64_t> spanning_segments(const ShardTable& shards, int64_t w) {
  std::vector<int64_t> segments;
  for (int q = 1; q < shards.size(); ++q) {
    const int64_t boundary = shards.begin(q);
    if (boundary % w == 0) continue;
    const int64_t s = boundary / w;
    if (segments.empty() || segments.back() != s) segments.push_back(s);
  }
  return segments;
}

}  // namespace

int64_t ExchangePlan::received_rows(const Unit& u, int rank) const {
  int64_t rows = 0;
  for (int from = 0; from < static_cast<int>(u.count.size()); ++from) {
    if (sends(u, from, rank)) rows += u.count[static_cast<size_t>(from)];
  }
  return rows;
}

ExchangePlan plan_exchange(const Params& p, const ShardTable& shards) {
  ExchangePlan plan;
  plan.causal = p.causal;
  const int64_t n = shards.global_seqlen();
  for (int k = 0; k < p.num_patterns; ++k) {
    std::vector<KeyClass> shapes;
    const std::vector<std::vector<int64_t>> sets = head_sets(p, k, &shapes);
    const auto first_class = static_cast<int>(plan.classes.size());
    for (size_t i = 0; i < shapes.size(); ++i) add_runs(shapes[i], sets[i], &plan.classes);
    const auto end_class = static_cast<int>(plan.classes.size());

    for (int64_t s : spanning_segments(shards, p.patterns[k].segment)) {
      const int64_t w = p.patterns[k].segment;
      const int64_t seg_begin = s * w, seg_end = std::min(seg_begin + w, n);
      for (int c = first_class; c < end_class; ++c) {
        const HeadPattern& hp = plan.classes[static_cast<size_t>(c)].hp;
        auto selected_before = [&](int64_t pos) {
          return pos <= seg_begin + hp.offset ? 0
                                              : ceil_div(pos - seg_begin - hp.offset, hp.dilation);
        };
        Unit u;
        u.key_class = c;
        u.segment_begin = seg_begin;
        int holders = 0;
        for (int q = 0; q < shards.size(); ++q) {
          const int64_t lo = std::max(shards.begin(q), seg_begin);
          const int64_t hi = std::min(shards.end(q), seg_end);
          const int64_t first = hi > lo ? selected_before(lo) : 0;
          const int64_t count = hi > lo ? selected_before(hi) - first : 0;
          u.first_selected.push_back(first);
          u.count.push_back(count);
          holders += count > 0 ? 1 : 0;
        }
        if (holders >= 2) plan.units.push_back(std::move(u));
      }
    }
  }
  return plan;
}

}  // namespace dilated::dist
