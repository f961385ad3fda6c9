// Forward kernels of the fast CPU backend: blocked online softmax over the selected keys.
//
// Layout choice: the queries of a tile sit in vector lanes (the tile is packed transposed,
// pre-multiplied by scale * log2(e)), keys and values are read in place, one broadcast element
// at a time. Then S^T = K Q^T and O^T += V^T P^T are both "broadcast times vector" products
// with a block of accumulators in registers, the row-wise softmax bookkeeping (running max,
// sum, rescale) is lane-wise with no horizontal reductions, and float32 keys/values need no
// copy at all (16-bit ones are converted per key tile). Only the query tile is transposed, once
// per tile, and amortised over all keys.
//
// A task covers a chunk of consecutive positions of one query head and runs every pattern of
// that head over it, continuing one online softmax across patterns (the union softmax with
// multiplicity of longnet mode); its per-position state lives in a small float32 buffer, so
// the running result never round-trips through 16-bit outputs and no N-sized buffer exists.
// (Pattern-major passes that merge each pattern's (o_i, lse_i) into out would need a float32
// running output for 16-bit problems and re-read out once per pattern.)
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/fast/forward_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/pattern_math.hpp"
#include "cpu/fast/block_layout.hpp"
#include "cpu/fast/kernels.hpp"
#include "cpu/fast/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dilated::cpu_fast::HWY_NAMESPACE {

namespace {

inline constexpr int kQueryVectors = kBlockVectors;  // the query tile, in vectors
inline constexpr int kKeyRows = kBlockRows;          // keys per register block of S^T
inline constexpr int kValueCols = kBlockRows;        // value columns per register block of O^T
inline constexpr int64_t kKeyTile = 128;

HWY_INLINE int64_t QueryTile() {
  return kQueryVectors * static_cast<int64_t>(hn::Lanes(DF()));
}

// s[r][:] = q_t^T k_r (+ bias) for KR keys (rows of `keys`, `key_stride` apart) and the whole
// query tile, in log2 units. With `mask_from` > -KR (causal, diagonal), key r is hidden (-inf) from
// query lanes with index < mask_from + r. tile_max collects the lane-wise maximum.
template <int KR>
HWY_INLINE void ScoreBlock(const float* HWY_RESTRICT q_t, int64_t depth, const float* keys,
                           int64_t key_stride, float* HWY_RESTRICT s, bool masked,
                           int64_t mask_from, bool biased, VF bias, VF* HWY_RESTRICT tile_max) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t tile = QueryTile();
  VF acc[KR][kQueryVectors];
#pragma GCC unroll 8
  for (int r = 0; r < KR; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) acc[r][v] = hn::Zero(df);
  }
  for (int64_t d = 0; d < depth; ++d) {
    VF q[kQueryVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) q[v] = hn::Load(df, q_t + d * tile + v * lanes);
#pragma GCC unroll 8
    for (int r = 0; r < KR; ++r) {
      const VF k = hn::Set(df, keys[r * key_stride + d]);
#pragma GCC unroll 8
      for (int v = 0; v < kQueryVectors; ++v) acc[r][v] = hn::MulAdd(k, q[v], acc[r][v]);
    }
  }
  const VF hidden = hn::Set(df, -std::numeric_limits<float>::infinity());
#pragma GCC unroll 8
  for (int r = 0; r < KR; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) {
      if (biased) acc[r][v] = hn::Add(acc[r][v], bias);
      if (masked && mask_from + r > v * lanes) {
        acc[r][v] = hn::IfThenElse(LanesBelow(v * lanes, mask_from + r), hidden, acc[r][v]);
      }
      hn::Store(acc[r][v], df, s + r * tile + v * lanes);
      tile_max[v] = hn::Max(tile_max[v], acc[r][v]);
    }
  }
}

// o_t[col + c][:] = alpha * o_t[col + c][:] + sum_j values[j][col + c] * probs[j][:] for
// DC columns and `keys` keys. With `mask_from` > -keys (causal, diagonal), key j is skipped
// for query lanes with index < mask_from + j: their probability is 0 already, but a NaN or Inf
// value times 0 would still reach rows that never see that key.
template <int DC>
HWY_INLINE void ValueBlock(const float* HWY_RESTRICT probs, int64_t keys, const float* values,
                           int64_t value_stride, int64_t col, float* HWY_RESTRICT o_t,
                           const VF* HWY_RESTRICT alpha, bool masked, int64_t mask_from) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t tile = QueryTile();
  VF acc[DC][kQueryVectors];
#pragma GCC unroll 8
  for (int c = 0; c < DC; ++c) {
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) {
      acc[c][v] = hn::Mul(hn::Load(df, o_t + (col + c) * tile + v * lanes), alpha[v]);
    }
  }
  // Keys every lane sees, then (causal) the keys some lanes must skip.
  const int64_t shared = masked ? std::clamp<int64_t>(1 - mask_from, 0, keys) : keys;
  for (int64_t j = 0; j < shared; ++j) {
    const float* value = values + j * value_stride + col;
    VF p[kQueryVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) p[v] = hn::Load(df, probs + j * tile + v * lanes);
#pragma GCC unroll 8
    for (int c = 0; c < DC; ++c) {
      const VF x = hn::Set(df, value[c]);
#pragma GCC unroll 8
      for (int v = 0; v < kQueryVectors; ++v) acc[c][v] = hn::MulAdd(x, p[v], acc[c][v]);
    }
  }
  for (int64_t j = shared; j < keys; ++j) {
    const float* value = values + j * value_stride + col;
    VF p[kQueryVectors];
    hn::Mask<DF> sees[kQueryVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) {
      p[v] = hn::Load(df, probs + j * tile + v * lanes);
      sees[v] = hn::Not(LanesBelow(v * lanes, mask_from + j));
    }
#pragma GCC unroll 8
    for (int c = 0; c < DC; ++c) {
      const VF x = hn::Set(df, value[c]);
#pragma GCC unroll 8
      for (int v = 0; v < kQueryVectors; ++v) {
        acc[c][v] = hn::IfThenElse(sees[v], hn::MulAdd(x, p[v], acc[c][v]), acc[c][v]);
      }
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < DC; ++c) {
#pragma GCC unroll 8
    for (int v = 0; v < kQueryVectors; ++v) {
      hn::Store(acc[c][v], df, o_t + (col + c) * tile + v * lanes);
    }
  }
}

// A query tile: positions first + i * step for i < rows (rows <= the tile).
struct QueryRows {
  int64_t first;
  int64_t step;
  int64_t rows;
};

// Keys at positions first + j * step (the queries' step) for j < count, each counted `mult`
// times in the softmax: log2(mult) joins their scores.
struct KeyRun {
  int64_t first;
  int64_t count;
  float log2_mult;
  // Keys and values already gathered as float32 rows (head_dim, head_dim_v apart), or null.
  const float* k_rows = nullptr;
  const float* v_rows = nullptr;
};

int64_t RowOf(const ForwardJob& job, int64_t t) {
  return job.order ? job.order[t] : t;
}

// Positions are global (a windowed problem's query and key rows start at the windows' first
// positions; grids and windows never meet): the tensor rows and the task's state index of one.
int64_t QueryRowOf(const ForwardJob& job, int64_t position) {
  return RowOf(job, position - job.p->window.query_begin);
}
int64_t KeyRowOf(const ForwardJob& job, int64_t position) {
  return RowOf(job, position - job.p->window.key_begin);
}
int64_t StateIndex(const ForwardJob& job, const ForwardTask& task, int64_t position) {
  return position - job.p->window.query_begin - task.begin;
}

// Packs the query tile (transposed, pre-scaled) and loads the rows' state: the unnormalised
// output into o_t and, as an online softmax with m = lse and l = 1, m and l into lanes.
void BeginTile(const ForwardJob& job, const ForwardTask& task, const QueryRows& q,
               const ForwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t tile = QueryTile();
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v;
  // Padding lanes score 0 against every key and are never stored.
  for (int64_t i = 0; i < q.rows; ++i) {
    const int64_t t = q.first + i * q.step;
    LoadRow(p.dtype, p.q.data, row_offset(p, p.q, task.b, QueryRowOf(job, t), task.head), dim,
            job.log2_scale, buf.row);
    for (int64_t d = 0; d < dim; ++d) buf.q_t[d * tile + i] = buf.row[d];
    const int64_t rel = StateIndex(job, task, t);
    buf.lanes[i] = buf.state_m[rel];
    for (int64_t c = 0; c < dim_v; ++c) buf.o_t[c * tile + i] = buf.state_o[rel * dim_v + c];
  }
  for (int64_t i = q.rows; i < tile; ++i) {
    for (int64_t d = 0; d < dim; ++d) buf.q_t[d * tile + i] = 0.0f;
    for (int64_t c = 0; c < dim_v; ++c) buf.o_t[c * tile + i] = 0.0f;
    buf.lanes[i] = 0.0f;
  }
  std::fill(buf.lanes + tile, buf.lanes + 2 * tile, 1.0f);
}

// Continues the tile's online softmax over one run of keys.
void AttendRun(const ForwardJob& job, const ForwardTask& task, const QueryRows& q,
               const KeyRun& run, const ForwardBuffers& buf) {
  const Params& p = *job.p;
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t tile = QueryTile();
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v;
  const int64_t kv_head = kv_head_of(p, task.head);
  const int64_t step = q.step;
  // Key j of the run sits `rel + j` steps after the tile's first query: causal hides it from
  // query lanes i < rel + j, and keys after the last query from all of them.
  const int64_t rel = (run.first - q.first) / step;
  const int64_t key_end = p.causal ? std::min(run.count, q.rows - rel) : run.count;
  if (key_end <= 0) return;
  auto position = [&](int64_t j) { return run.first + j * step; };
  // Rows that meet a key (a row with none keeps out = 0, lse = -inf).
  for (int64_t i = p.causal ? std::max<int64_t>(0, rel) : 0; i < q.rows; ++i) {
    buf.state_seen[StateIndex(job, task, q.first + i * step)] = 1.0f;
  }

  VF m[kQueryVectors], l[kQueryVectors];
  for (int v = 0; v < kQueryVectors; ++v) {
    m[v] = hn::Load(df, buf.lanes + v * lanes);
    l[v] = hn::Load(df, buf.lanes + tile + v * lanes);
  }
  const bool biased = run.log2_mult != 0.0f;
  const VF bias = hn::Set(df, run.log2_mult);

  for (int64_t k0 = 0; k0 < key_end; k0 += kKeyTile) {
    const int64_t nk = std::min(kKeyTile, key_end - k0);
    // float32 keys and values in sequence order are read in place; 16-bit or reordered ones
    // are gathered (and converted) tile by tile. (Copying float32 tiles too, to keep rows
    // dilation x row_stride apart from sharing L1 sets, measured 10-20% slower:
    // bench/NOTES.md, CPU v2.)
    const float *keys, *values;
    int64_t key_stride, value_stride;
    if (run.k_rows) {
      keys = run.k_rows + k0 * dim;
      values = run.v_rows + k0 * dim_v;
      key_stride = dim;
      value_stride = dim_v;
    } else if (p.dtype == DType::f32 && !job.order) {
      const int64_t row = KeyRowOf(job, position(k0));
      keys = static_cast<const float*>(p.k.data) + row_offset(p, p.k, task.b, row, kv_head);
      values = static_cast<const float*>(p.v.data) + row_offset(p, p.v, task.b, row, kv_head);
      key_stride = step * p.k.row_stride;
      value_stride = step * p.v.row_stride;
    } else {
      for (int64_t j = 0; j < nk; ++j) {
        const int64_t row = KeyRowOf(job, position(k0 + j));
        LoadRow(p.dtype, p.k.data, row_offset(p, p.k, task.b, row, kv_head), dim, 1.0f,
                buf.k_rows + j * dim);
        LoadRow(p.dtype, p.v.data, row_offset(p, p.v, task.b, row, kv_head), dim_v, 1.0f,
                buf.v_rows + j * dim_v);
      }
      keys = buf.k_rows;
      values = buf.v_rows;
      key_stride = dim;
      value_stride = dim_v;
    }

    VF tile_max[kQueryVectors];
    for (int v = 0; v < kQueryVectors; ++v) {
      tile_max[v] = hn::Set(df, -std::numeric_limits<float>::infinity());
    }
    for (int64_t j0 = 0; j0 < nk; j0 += kKeyRows) {
      const int64_t mask_from = rel + k0 + j0;
      const bool masked = p.causal && mask_from + kKeyRows - 1 > 0;
      WithCount<kKeyRows>(std::min<int64_t>(kKeyRows, nk - j0), [&](auto kr) {
        ScoreBlock<decltype(kr)::value>(buf.q_t, dim, keys + j0 * key_stride, key_stride,
                                        buf.scores + j0 * tile, masked, mask_from, biased, bias,
                                        tile_max);
      });
    }

    // While every score a lane has met is -inf (an empty state and keys whose scores are
    // -inf), it subtracts 0 instead of its maximum, so that its weights are 0, not NaN.
    VF alpha[kQueryVectors], sum[kQueryVectors], shift[kQueryVectors];
    const VF none = hn::Set(df, -std::numeric_limits<float>::infinity());
    for (int v = 0; v < kQueryVectors; ++v) {
      const VF m_new = hn::Max(m[v], tile_max[v]);
      shift[v] = hn::IfThenZeroElse(hn::Eq(m_new, none), m_new);
      alpha[v] = Exp2(hn::Sub(m[v], shift[v]));
      m[v] = m_new;
      sum[v] = hn::Zero(df);
    }
    for (int64_t j = 0; j < nk; ++j) {
      float* sc = buf.scores + j * tile;
      for (int v = 0; v < kQueryVectors; ++v) {
        const VF prob = Exp2(hn::Sub(hn::Load(df, sc + v * lanes), shift[v]));
        hn::Store(prob, df, sc + v * lanes);
        sum[v] = hn::Add(sum[v], prob);
      }
    }
    for (int v = 0; v < kQueryVectors; ++v) l[v] = hn::MulAdd(l[v], alpha[v], sum[v]);

    for (int64_t c0 = 0; c0 < dim_v; c0 += kValueCols) {
      WithCount<kValueCols>(std::min<int64_t>(kValueCols, dim_v - c0), [&](auto dc) {
        ValueBlock<decltype(dc)::value>(buf.scores, nk, values, value_stride, c0, buf.o_t, alpha,
                                        p.causal, rel + k0);
      });
    }
  }

  for (int v = 0; v < kQueryVectors; ++v) {
    hn::Store(m[v], df, buf.lanes + v * lanes);
    hn::Store(l[v], df, buf.lanes + tile + v * lanes);
  }
}

// Keys and values at positions first + j * step, j < count, as float32 rows in segment_k and
// segment_v.
void GatherKeys(const ForwardJob& job, const ForwardTask& task, int64_t first, int64_t step,
                int64_t count, const ForwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t kv_head = kv_head_of(p, task.head);
  for (int64_t j = 0; j < count; ++j) {
    const int64_t row = KeyRowOf(job, first + j * step);
    LoadRow(p.dtype, p.k.data, row_offset(p, p.k, task.b, row, kv_head), p.head_dim, 1.0f,
            buf.segment_k + j * p.head_dim);
    LoadRow(p.dtype, p.v.data, row_offset(p, p.v, task.b, row, kv_head), p.head_dim_v, 1.0f,
            buf.segment_v + j * p.head_dim_v);
  }
}

// Normalises the tile's output back into the rows' state.
void EndTile(const ForwardJob& job, const ForwardTask& task, const QueryRows& q,
             const ForwardBuffers& buf) {
  const int64_t tile = QueryTile();
  const int64_t dim_v = job.p->head_dim_v;
  for (int64_t i = 0; i < q.rows; ++i) {
    const int64_t rel = StateIndex(job, task, q.first + i * q.step);
    const float sum = buf.lanes[tile + i];
    if (sum == 0.0f) {
      // Every score so far is -inf: the state stays empty, but keeps the NaN that a weight of 0
      // times a NaN or infinite value gives, as the oracle's union softmax multiplies it too.
      for (int64_t c = 0; c < dim_v; ++c) buf.state_o[rel * dim_v + c] = buf.o_t[c * tile + i];
      continue;
    }
    const float inv = 1.0f / sum;
    for (int64_t c = 0; c < dim_v; ++c) buf.state_o[rel * dim_v + c] = buf.o_t[c * tile + i] * inv;
    buf.state_m[rel] = buf.lanes[i] + std::log2(sum);
  }
}

// Every query tile of the task's rows in each query block, against the block's key runs.
void BlockPatternTiles(const ForwardJob& job, const ForwardTask& task, const ForwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t n = seq_length(p, task.b);
  const int64_t size = job.blocks->block_size(), tile = QueryTile();
  const HeadBlocks& hb = job.blocks->of(task.b, task.head);
  for (int64_t I = task.begin / size; I * size < task.end; ++I) {
    const int64_t lo = std::max(task.begin, I * size);
    const int64_t hi = std::min({task.end, (I + 1) * size, n});
    for (int64_t t0 = lo; t0 < hi; t0 += tile) {
      const QueryRows q{t0, 1, std::min(tile, hi - t0)};
      BeginTile(job, task, q, buf);
      for (int64_t at = hb.row_begin[I]; at < hb.row_begin[I + 1]; ++at) {
        const BlockRun& r = hb.rows[static_cast<size_t>(at)];
        const int64_t first = r.first * size;
        const int64_t last = std::min((r.first + r.count) * size, n);
        AttendRun(job, task, q, KeyRun{first, last - first, std::log2(static_cast<float>(r.mult))},
                  buf);
      }
      EndTile(job, task, q, buf);
    }
  }
}

void ForwardTaskImpl(const ForwardJob& job, const ForwardTask& task, const ForwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t n = pattern_length(p, task.b);
  const int64_t length = task.end - task.begin;
  // The task's rows as global positions, and the key window (everything without a window).
  const int64_t begin = p.window.query_begin + task.begin, end = begin + length;
  const int64_t key_begin = p.window.key_begin;
  const int64_t key_end = key_begin + key_length(p, task.b);
  const int64_t dim_v = p.head_dim_v;
  const int64_t tile = QueryTile();
  std::fill(buf.state_o, buf.state_o + length * dim_v, 0.0f);
  std::fill(buf.state_m, buf.state_m + length, -std::numeric_limits<float>::infinity());
  std::fill(buf.state_seen, buf.state_seen + length, 0.0f);

  for (int k = 0; k < head_pattern_count(p); ++k) {
    const HeadPattern hp = head_pattern(p, task.head, k);
    const int64_t w = hp.segment, r = hp.dilation, o = hp.offset;
    for (int64_t seg_begin = begin / w * w; seg_begin < end; seg_begin += w) {
      const int64_t seg_end = std::min(seg_begin + w, n);
      if (seg_end - seg_begin <= o) continue;  // a short last segment without selected rows
      // Selected indices of the segment before position pos.
      auto selected_before = [&](int64_t pos) {
        return pos <= seg_begin + o ? 0 : ceil_div(pos - seg_begin - o, r);
      };
      // The segment's selected keys in the key window (all of them without a window).
      const int64_t key_first = selected_before(std::max(key_begin, seg_begin));
      const int64_t keys = selected_before(std::min(key_end, seg_end)) - key_first;
      if (keys <= 0) continue;
      // Selected queries of this segment inside the task's positions.
      const int64_t first = selected_before(std::max(begin, seg_begin));
      const int64_t last = selected_before(std::min(end, seg_end));
      KeyRun run{seg_begin + o + key_first * r, keys, 0.0f};
      // Reordered keys are gathered once for all of the task's query tiles in the segment
      // (per key tile and query tile, the copies cost ~17% of a 256 x 256 grid's forward).
      const int64_t needed = p.causal ? std::min(keys, last - key_first) : keys;
      if (job.order && needed <= buf.segment_keys) {
        GatherKeys(job, task, run.first, r, needed, buf);
        run.k_rows = buf.segment_k;
        run.v_rows = buf.segment_v;
      }
      for (int64_t q0 = first; q0 < last; q0 += tile) {
        const QueryRows q{seg_begin + o + q0 * r, r, std::min(tile, last - q0)};
        BeginTile(job, task, q, buf);
        AttendRun(job, task, q, run, buf);
        EndTile(job, task, q, buf);
      }
    }
  }
  if (job.blocks) BlockPatternTiles(job, task, buf);

  // A row some pattern selects whose scores are all -inf: softmax gives 0/0 (the oracle NaN).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t rel = 0; rel < length; ++rel) {
    if (buf.state_seen[rel] != 0.0f &&
        buf.state_m[rel] == -std::numeric_limits<float>::infinity()) {
      buf.state_m[rel] = nan;
      std::fill(buf.state_o + rel * dim_v, buf.state_o + (rel + 1) * dim_v, nan);
    }
  }
  if (job.delta) {
    for (int64_t t = task.begin; t < task.end; ++t) {
      const int64_t rel = t - task.begin, row = RowOf(job, t);
      LoadRow(p.dtype, p.dout.data, row_offset(p, p.dout, task.b, row, task.head), dim_v,
              job.out_scale, buf.row);
      float delta = 0.0f;
      for (int64_t c = 0; c < dim_v; ++c) delta += buf.row[c] * buf.state_o[rel * dim_v + c];
      job.delta[lse_index(p, task.b, task.head, row)] = delta;
    }
    return;
  }
  const float ln2 = 0.693147180559945309f;
  for (int64_t t = task.begin; t < task.end; ++t) {
    const int64_t rel = t - task.begin, row = RowOf(job, t);
    StoreRow(p.dtype, buf.state_o + rel * dim_v, dim_v, job.out_scale, p.out.data,
             row_offset(p, p.out, task.b, row, task.head));
    if (p.lse) p.lse[lse_index(p, task.b, task.head, row)] = buf.state_m[rel] * ln2;
  }
}

TileShape ShapeImpl() {
  TileShape s;
  s.lanes = static_cast<int64_t>(hn::Lanes(DF()));
  s.query_tile = QueryTile();
  s.key_tile = kKeyTile;
  s.bwd_key_tile = kBlockVectors * s.lanes;
  s.bwd_query_tile = kBackwardQueryTile;
  s.bwd_key_tiles_per_group = kKeyTilesPerGroup;
  s.bwd_block_key_tiles = kBlockKeyTiles;
  return s;
}

const char* TargetNameImpl() {
  return hwy::TargetName(HWY_TARGET);
}

}  // namespace
}  // namespace dilated::cpu_fast::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dilated::cpu_fast {

HWY_EXPORT(ForwardTaskImpl);
HWY_EXPORT(ShapeImpl);
HWY_EXPORT(TargetNameImpl);

void run_forward_task(const ForwardJob& job, const ForwardTask& task, const ForwardBuffers& buf) {
  HWY_DYNAMIC_DISPATCH(ForwardTaskImpl)(job, task, buf);
}

TileShape tile_shape() {
  return HWY_DYNAMIC_DISPATCH(ShapeImpl)();
}

const char* kernel_target_name() {
  return HWY_DYNAMIC_DISPATCH(TargetNameImpl)();
}

}  // namespace dilated::cpu_fast
#endif  // HWY_ONCE
