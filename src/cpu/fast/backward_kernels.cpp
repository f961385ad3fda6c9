// Backward kernels of the fast CPU backend (FlashAttention-2 style): for each key tile, every
// query tile that sees it recomputes P = exp(S - lse) from the final union lse, then
// dS = P (dP - delta) with delta = <dout, out>; dv += P^T dout and dk += dS^T q accumulate in
// a key-tile buffer, dq += dS k goes straight into dq rows. With the union lse, each pattern's
// contribution is independent and additive, so patterns run one after another.
//
// Layout choice: here the keys of a tile sit in vector lanes (K^T and V^T are packed once per
// key tile and serve every query tile), so the reductions over queries (dv, dk) are
// "broadcast times vector" products into [dim][key] accumulators, and dq is one over keys into
// its row. Query-side rows are packed to float32 once per query tile and group of key tiles;
// only the per-row lse and delta are broadcast.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/fast/backward_kernels.cpp"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/block_sparse.hpp"
#include "core/pattern_math.hpp"
#include "cpu/fast/block_layout.hpp"
#include "cpu/fast/kernels.hpp"
#include "cpu/fast/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace dilated::cpu_fast::HWY_NAMESPACE {

namespace {

inline constexpr int kKeyVectors = kBlockVectors;  // the key tile, in vectors
inline constexpr int kRows = kBlockRows;           // query rows per register block
inline constexpr int kCols = kBlockRows;           // dk_t / dv_t rows per register block
inline constexpr int kDqVectors = kBlockVectors;   // head_dim vectors per dq register block

HWY_INLINE int64_t KeyTile() {
  return kKeyVectors * static_cast<int64_t>(hn::Lanes(DF()));
}

// The packed key tile and the packed query tile the kernels work on.
struct TileView {
  // Keys: selected indices k0 .. k0 + keys - 1, packed as k_t/v_t ([dim][KeyTile()]) and
  // k_rows ([KeyTile()][k_ld]).
  float* k_t;
  float* v_t;
  float* k_rows;
  float* dk_t;  // [dim][KeyTile()]: this tile's dk and dv accumulators
  float* dv_t;
  int64_t k_ld;
  int64_t k0;
  int64_t keys;
  // Queries: selected indices q0 .. q0 + rows - 1.
  const float* q_rows;   // [rows][dim]
  const float* do_rows;  // [rows][dim_v]
  const float* lse2;
  const float* delta;
  float* probs;    // [rows][KeyTile()]
  float* dscores;  // [rows][KeyTile()]
  int64_t q0;
  int64_t rows;
  int64_t dim;
  int64_t dim_v;
  bool causal;
  // Position of key or query index i: first + i * step (indices of both share it).
  int64_t first;
  int64_t step;
  // Each (query, key) pair counts this many times: log2 of it lowers the row's lse.
  float log2_mult;

  int64_t position(int64_t i) const { return first + i * step; }
};

// Which gradients one RunQueryTile adds: all (dilated patterns, whose tasks own their queries
// and keys), or only dq or only dk and dv (block patterns: separate query- and key-owning
// passes).
struct Wants {
  bool dq;
  bool dkdv;
};

// probs and dscores of query rows i0 .. i0 + R - 1 against the key tile.
template <int R>
HWY_INLINE void ProbsAndGrads(const BackwardJob& job, const TileView& t, int64_t i0) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t kt = KeyTile();
  VF acc[R][kKeyVectors];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) acc[r][v] = hn::Zero(df);
  }
  for (int64_t d = 0; d < t.dim; ++d) {
    VF k[kKeyVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) k[v] = hn::Load(df, t.k_t + d * kt + v * lanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VF q = hn::Set(df, t.q_rows[(i0 + r) * t.dim + d]);
#pragma GCC unroll 8
      for (int v = 0; v < kKeyVectors; ++v) acc[r][v] = hn::MulAdd(q, k[v], acc[r][v]);
    }
  }
  const VF log2_scale = hn::Set(df, job.log2_scale);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t query = t.q0 + i0 + r;
    // Keys the row sees: the whole tile, or (causal) those up to the query itself.
    const int64_t visible = t.causal ? std::min(t.keys, query - t.k0 + 1) : t.keys;
    const VF lse2 = hn::Set(df, t.lse2[i0 + r] - t.log2_mult);
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) {
      VF prob = Exp2(hn::MulSub(acc[r][v], log2_scale, lse2));
      if (visible < (v + 1) * lanes)
        prob = hn::IfThenElseZero(LanesBelow(v * lanes, visible), prob);
      hn::Store(prob, df, t.probs + (i0 + r) * kt + v * lanes);
      acc[r][v] = hn::Zero(df);
    }
  }
  for (int64_t c = 0; c < t.dim_v; ++c) {
    VF x[kKeyVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) x[v] = hn::Load(df, t.v_t + c * kt + v * lanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VF g = hn::Set(df, t.do_rows[(i0 + r) * t.dim_v + c]);
#pragma GCC unroll 8
      for (int v = 0; v < kKeyVectors; ++v) acc[r][v] = hn::MulAdd(g, x[v], acc[r][v]);
    }
  }
  const VF scale = hn::Set(df, job.scale);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const int64_t visible = t.causal ? std::min(t.keys, t.q0 + i0 + r - t.k0 + 1) : t.keys;
    const VF delta = hn::Set(df, t.delta[i0 + r]);  // already times scale
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) {
      const VF prob = hn::Load(df, t.probs + (i0 + r) * kt + v * lanes);
      VF ds = hn::Mul(prob, hn::MulSub(acc[r][v], scale, delta));
      // Hidden keys get exactly 0, even where a NaN delta would make 0 * NaN.
      if (visible < (v + 1) * lanes) ds = hn::IfThenElseZero(LanesBelow(v * lanes, visible), ds);
      hn::Store(ds, df, t.dscores + (i0 + r) * kt + v * lanes);
    }
  }
}

// acc_t[col + c][:] += sum_i rows[i][col + c] * lhs[i][:] over `count` rows, for C columns:
// dv_t += dout^T P and dk_t += q^T dS. Causal: row i sees key lanes up to see_from + i only;
// the rest are skipped rather than multiplied by 0, so that a NaN or Inf in a query row cannot
// reach keys that query never sees.
template <int C>
HWY_INLINE void TransposedAccumulate(const float* HWY_RESTRICT rows, int64_t ld, int64_t count,
                                     int64_t col, const float* HWY_RESTRICT lhs,
                                     float* HWY_RESTRICT acc_t, bool causal, int64_t see_from) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t kt = KeyTile();
  VF acc[C][kKeyVectors];
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) {
      acc[c][v] = hn::Load(df, acc_t + (col + c) * kt + v * lanes);
    }
  }
  // Rows that see only part of the tile come first (their queries precede the others).
  const int64_t partial = causal ? std::clamp<int64_t>(kt - 1 - see_from, 0, count) : 0;
  for (int64_t i = 0; i < partial; ++i) {
    VF x[kKeyVectors];
    hn::Mask<DF> sees[kKeyVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) {
      x[v] = hn::Load(df, lhs + i * kt + v * lanes);
      sees[v] = LanesBelow(v * lanes, see_from + i + 1);
    }
    const float* row = rows + i * ld + col;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const VF b = hn::Set(df, row[c]);
#pragma GCC unroll 8
      for (int v = 0; v < kKeyVectors; ++v) {
        acc[c][v] = hn::IfThenElse(sees[v], hn::MulAdd(b, x[v], acc[c][v]), acc[c][v]);
      }
    }
  }
  for (int64_t i = partial; i < count; ++i) {
    VF x[kKeyVectors];
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) x[v] = hn::Load(df, lhs + i * kt + v * lanes);
    const float* row = rows + i * ld + col;
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      const VF b = hn::Set(df, row[c]);
#pragma GCC unroll 8
      for (int v = 0; v < kKeyVectors; ++v) acc[c][v] = hn::MulAdd(b, x[v], acc[c][v]);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < C; ++c) {
#pragma GCC unroll 8
    for (int v = 0; v < kKeyVectors; ++v) {
      hn::Store(acc[c][v], df, acc_t + (col + c) * kt + v * lanes);
    }
  }
}

// dq[r][col : col + CV vectors] += sum_j dscores[i0 + r][j] * k_rows[j][...] for R rows,
// over keys [0, keys). Keys from `shared` on are seen by the later rows of the block only
// (causal): key j by row r when j <= last + r; the others skip it (see above).
template <int R, int CV>
HWY_INLINE void DqBlock(const TileView& t, int64_t i0, int64_t shared, int64_t keys, int64_t last,
                        float* const* dq, int64_t col) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t kt = KeyTile();
  VF acc[R][CV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) acc[r][v] = hn::LoadU(df, dq[r] + col + v * lanes);
  }
  for (int64_t j = 0; j < shared; ++j) {
    VF k[CV];
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) k[v] = hn::Load(df, t.k_rows + j * t.k_ld + col + v * lanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VF ds = hn::Set(df, t.dscores[(i0 + r) * kt + j]);
#pragma GCC unroll 8
      for (int v = 0; v < CV; ++v) acc[r][v] = hn::MulAdd(ds, k[v], acc[r][v]);
    }
  }
  for (int64_t j = shared; j < keys; ++j) {
    VF k[CV];
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) k[v] = hn::Load(df, t.k_rows + j * t.k_ld + col + v * lanes);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (j > last + r) continue;
      const VF ds = hn::Set(df, t.dscores[(i0 + r) * kt + j]);
#pragma GCC unroll 8
      for (int v = 0; v < CV; ++v) acc[r][v] = hn::MulAdd(ds, k[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int v = 0; v < CV; ++v) hn::StoreU(acc[r][v], df, dq[r] + col + v * lanes);
  }
}

int64_t RowOf(const BackwardJob& job, int64_t t) {
  return job.order ? job.order[t] : t;
}

float* AccRow(const BackwardJob& job, const Tensor& acc, int64_t b, int64_t t, int64_t head) {
  return static_cast<float*>(acc.data) + row_offset(*job.p, acc, b, RowOf(job, t), head);
}

// Positions are global: a windowed problem's query and key rows start at the windows' first
// positions (grids and windows never meet).
int64_t QueryIndex(const BackwardJob& job, int64_t position) {
  return position - job.p->window.query_begin;
}
int64_t KeyIndex(const BackwardJob& job, int64_t position) {
  return position - job.p->window.key_begin;
}

// Asks for the cache lines of `count` elements of a tensor row ahead of their use.
void PrefetchRow(DType dtype, const void* base, int64_t offset, int64_t count) {
  const int64_t size = dtype == DType::f32 ? 4 : 2;
  const char* first = static_cast<const char*>(base) + offset * size;
  for (int64_t byte = 0; byte < count * size; byte += 64) hwy::Prefetch(first + byte);
}

// Rows of a tile prefetched ahead of the one being copied.
inline constexpr int64_t kPrefetchRows = 8;

// Packs keys k0 .. k0 + keys - 1 into k_t, v_t (transposed) and k_rows, zero-padded, and
// clears the tile's dk/dv accumulators. The rows are copied first and transposed after: their
// loads miss the caches, and with the transposing scalar stores in between them too few
// misses were in flight (perf: ~90% of the packing waited on those loads).
void PackKeyTile(const BackwardJob& job, int64_t b, int64_t kv_head, const TileView& t,
                 float* stage) {
  const Params& p = *job.p;
  const int64_t kt = KeyTile();
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v, ld = job.padded_head_dim;
  float* k_t = t.k_t;
  float* v_t = t.v_t;
  std::fill(k_t, k_t + dim * kt, 0.0f);
  std::fill(v_t, v_t + dim_v * kt, 0.0f);
  std::fill(t.dk_t, t.dk_t + dim * kt, 0.0f);
  std::fill(t.dv_t, t.dv_t + dim_v * kt, 0.0f);
  auto key_row = [&](int64_t j) { return RowOf(job, KeyIndex(job, t.position(t.k0 + j))); };
  for (int64_t j = 0; j < std::min(kPrefetchRows, t.keys); ++j) {
    PrefetchRow(p.dtype, p.k.data, row_offset(p, p.k, b, key_row(j), kv_head), dim);
    PrefetchRow(p.dtype, p.v.data, row_offset(p, p.v, b, key_row(j), kv_head), dim_v);
  }
  for (int64_t j = 0; j < t.keys; ++j) {
    if (j + kPrefetchRows < t.keys) {
      const int64_t ahead = key_row(j + kPrefetchRows);
      PrefetchRow(p.dtype, p.k.data, row_offset(p, p.k, b, ahead, kv_head), dim);
      PrefetchRow(p.dtype, p.v.data, row_offset(p, p.v, b, ahead, kv_head), dim_v);
    }
    const int64_t row = key_row(j);
    float* k_row = t.k_rows + j * ld;
    LoadRow(p.dtype, p.k.data, row_offset(p, p.k, b, row, kv_head), dim, 1.0f, k_row);
    std::fill(k_row + dim, k_row + ld, 0.0f);
    LoadRow(p.dtype, p.v.data, row_offset(p, p.v, b, row, kv_head), dim_v, 1.0f, stage + j * dim_v);
  }
  for (int64_t j = 0; j < t.keys; ++j) {
    for (int64_t d = 0; d < dim; ++d) k_t[d * kt + j] = t.k_rows[j * ld + d];
    for (int64_t c = 0; c < dim_v; ++c) v_t[c * kt + j] = stage[j * dim_v + c];
  }
}

// dst[i] += src[i] for i < count.
HWY_INLINE void AddRow(const float* HWY_RESTRICT src, int64_t count, float* HWY_RESTRICT dst) {
  const DF df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    hn::StoreU(hn::Add(hn::LoadU(df, dst + i), hn::LoadU(df, src + i)), df, dst + i);
  }
  for (; i < count; ++i) dst[i] += src[i];
}

// Adds the tile's dk and dv accumulators into the gradient rows of its keys: each transposed
// into rows first (in cache), then added row by row with the rows ahead prefetched (added
// element by element from the transposed tile, the scattered updates waited on their misses
// like the packing did).
void ScatterKeyTile(const BackwardJob& job, int64_t b, int64_t kv_head, const TileView& t,
                    float* stage) {
  const Params& p = *job.p;
  const int64_t kt = KeyTile();
  auto scatter = [&](const Tensor& acc, const float* acc_t, int64_t dim) {
    for (int64_t j = 0; j < t.keys; ++j) {
      for (int64_t d = 0; d < dim; ++d) stage[j * dim + d] = acc_t[d * kt + j];
    }
    auto row = [&](int64_t j) {
      return AccRow(job, acc, b, KeyIndex(job, t.position(t.k0 + j)), kv_head);
    };
    for (int64_t j = 0; j < std::min(kPrefetchRows, t.keys); ++j) {
      PrefetchRow(DType::f32, row(j), 0, dim);
    }
    for (int64_t j = 0; j < t.keys; ++j) {
      if (j + kPrefetchRows < t.keys) PrefetchRow(DType::f32, row(j + kPrefetchRows), 0, dim);
      AddRow(stage + j * dim, dim, row(j));
    }
  };
  scatter(job.dk, t.dk_t, p.head_dim);
  scatter(job.dv, t.dv_t, p.head_dim_v);
}

// Packs query rows q0 .. q0 + rows - 1 (positions first + i * step) of `head` with their lse
// (log2 units) and scale * delta.
void PackQueryTile(const BackwardJob& job, int64_t b, int64_t head, int64_t first, int64_t step,
                   int64_t q0, int64_t rows, const BackwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t dim = p.head_dim, dim_v = p.head_dim_v;
  const float log2e = 1.44269504088896341f;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t row = RowOf(job, QueryIndex(job, first + (q0 + i) * step));
    LoadRow(p.dtype, p.q.data, row_offset(p, p.q, b, row, head), dim, 1.0f, buf.q_rows + i * dim);
    float* g = buf.do_rows + i * dim_v;
    LoadRow(p.dtype, p.dout.data, row_offset(p, p.dout, b, row, head), dim_v, job.out_scale, g);
    buf.delta[i] = job.scale * job.delta[lse_index(p, b, head, row)];
    buf.lse2[i] = p.lse[lse_index(p, b, head, row)] * log2e;
  }
}

// dv_t += dout^T P and dk_t += q^T dS over the tile's query rows.
void AccumulateKeyGrads(const TileView& t) {
  for (int64_t c0 = 0; c0 < t.dim_v; c0 += kCols) {
    WithCount<kCols>(std::min<int64_t>(kCols, t.dim_v - c0), [&](auto c) {
      TransposedAccumulate<decltype(c)::value>(t.do_rows, t.dim_v, t.rows, c0, t.probs, t.dv_t,
                                               t.causal, t.q0 - t.k0);
    });
  }
  for (int64_t c0 = 0; c0 < t.dim; c0 += kCols) {
    WithCount<kCols>(std::min<int64_t>(kCols, t.dim - c0), [&](auto c) {
      TransposedAccumulate<decltype(c)::value>(t.q_rows, t.dim, t.rows, c0, t.dscores, t.dk_t,
                                               t.causal, t.q0 - t.k0);
    });
  }
}

// dq rows += dS k over the tile's keys.
void AccumulateQueryGrads(const BackwardJob& job, int64_t b, int64_t head, const TileView& t) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(DF()));
  const int64_t vectors = job.padded_head_dim / lanes;
  for (int64_t i0 = 0; i0 < t.rows; i0 += kRows) {
    const int64_t count = std::min<int64_t>(kRows, t.rows - i0);
    float* dq[kRows];
    for (int64_t r = 0; r < count; ++r) {
      dq[r] = AccRow(job, job.dq, b, QueryIndex(job, t.position(t.q0 + i0 + r)), head);
    }
    // Causal: the block's first query sees keys [0, shared), its last one [0, keys) (the
    // block may start before the tile).
    const int64_t last = t.q0 + i0 - t.k0;  // the key index of the block's first query
    const int64_t keys = t.causal ? std::clamp<int64_t>(last + count, 0, t.keys) : t.keys;
    const int64_t shared = t.causal ? std::clamp<int64_t>(last + 1, 0, keys) : t.keys;
    for (int64_t v0 = 0; v0 < vectors; v0 += kDqVectors) {
      WithCount<kRows>(count, [&](auto r) {
        WithCount<kDqVectors>(std::min<int64_t>(kDqVectors, vectors - v0), [&](auto cv) {
          DqBlock<decltype(r)::value, decltype(cv)::value>(t, i0, shared, keys, last, dq,
                                                           v0 * lanes);
        });
      });
    }
  }
}

// One packed query tile against one packed key tile.
void RunQueryTile(const BackwardJob& job, int64_t b, int64_t head, const TileView& t, Wants wants) {
  for (int64_t i0 = 0; i0 < t.rows; i0 += kRows) {
    WithCount<kRows>(std::min<int64_t>(kRows, t.rows - i0),
                     [&](auto r) { ProbsAndGrads<decltype(r)::value>(job, t, i0); });
  }
  if (wants.dkdv) AccumulateKeyGrads(t);
  if (wants.dq) AccumulateQueryGrads(job, b, head, t);
}

// Key tile g of the buffers' group: keys k0 .. k0 + keys - 1 at positions first + i * step.
TileView KeyTileView(const BackwardJob& job, const BackwardBuffers& buf, int64_t g, int64_t k0,
                     int64_t keys, int64_t first, int64_t step) {
  const Params& p = *job.p;
  const int64_t kt = KeyTile(), dim = p.head_dim, dim_v = p.head_dim_v;
  return TileView{buf.k_t + g * dim * kt,
                  buf.v_t + g * dim_v * kt,
                  buf.k_rows + g * kt * job.padded_head_dim,
                  buf.dk_t + g * dim * kt,
                  buf.dv_t + g * dim_v * kt,
                  job.padded_head_dim,
                  k0,
                  keys,
                  buf.q_rows,
                  buf.do_rows,
                  buf.lse2,
                  buf.delta,
                  buf.probs,
                  buf.dscores,
                  0,
                  0,
                  dim,
                  dim_v,
                  p.causal,
                  first,
                  step,
                  0.0f};
}

void BackwardTaskImpl(const BackwardJob& job, const BackwardTask& task,
                      const BackwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t n = pattern_length(p, task.b);
  const int64_t kt = KeyTile();
  const int64_t w = task.hp.segment, r = task.hp.dilation, o = task.hp.offset;
  // Query and key windows as global positions (the whole sequence without a window).
  const int64_t query_begin = p.window.query_begin, query_end = query_begin + p.seqlen;
  const int64_t key_begin = p.window.key_begin, key_end = key_begin + key_length(p, task.b);
  for (int64_t seg_begin = task.begin; seg_begin < task.end; seg_begin += w) {
    const int64_t seg_end = std::min(seg_begin + w, n);
    if (seg_end - seg_begin <= o) continue;
    auto selected_before = [&](int64_t pos) {
      return pos <= seg_begin + o ? 0 : ceil_div(pos - seg_begin - o, r);
    };
    // Selected keys [key_first, selected) and queries [query_first, query_last) in the windows.
    const int64_t key_first = selected_before(std::max(key_begin, seg_begin));
    const int64_t selected = selected_before(std::min(key_end, seg_end));
    const int64_t query_first = selected_before(std::max(query_begin, seg_begin));
    const int64_t query_last = selected_before(std::min(query_end, seg_end));
    if (selected <= key_first || query_last <= query_first) continue;
    // A group of key tiles shares each packed query tile.
    for (int64_t g0 = key_first; g0 < selected; g0 += kKeyTilesPerGroup * kt) {
      const int64_t tiles = std::min(kKeyTilesPerGroup, ceil_div(selected - g0, kt));
      TileView views[kKeyTilesPerGroup];
      for (int64_t g = 0; g < tiles; ++g) {
        const int64_t k0 = g0 + g * kt;
        views[g] = KeyTileView(job, buf, g, k0, std::min(kt, selected - k0), seg_begin + o, r);
        PackKeyTile(job, task.b, task.kv_head, views[g], buf.stage);
      }
      for (int64_t h = 0; h < task.num_heads; ++h) {
        // Causal: queries before the group's first key see none of it.
        for (int64_t q0 = p.causal ? std::max(g0, query_first) : query_first; q0 < query_last;
             q0 += kBackwardQueryTile) {
          const int64_t rows = std::min(kBackwardQueryTile, query_last - q0);
          PackQueryTile(job, task.b, task.heads[h], seg_begin + o, r, q0, rows, buf);
          for (int64_t g = 0; g < tiles; ++g) {
            if (p.causal && views[g].k0 > q0 + rows - 1) break;  // and the later tiles
            views[g].q0 = q0;
            views[g].rows = rows;
            RunQueryTile(job, task.b, task.heads[h], views[g], Wants{true, true});
          }
        }
      }
      for (int64_t g = 0; g < tiles; ++g)
        ScatterKeyTile(job, task.b, task.kv_head, views[g], buf.stage);
    }
  }
}

// How many patterns of `hb` keep (I, J): the multiplicity of the run of row I holding J.
int32_t KeptTimes(const HeadBlocks& hb, int64_t I, int64_t J) {
  const BlockRun* first = hb.rows.data() + hb.row_begin[I];
  const BlockRun* last = hb.rows.data() + hb.row_begin[I + 1];
  // The last run starting at or before J.
  const BlockRun* run =
      std::upper_bound(first, last, J, [](int64_t j, const BlockRun& r) { return j < r.first; });
  if (run == first) return 0;
  --run;
  return J < run->first + run->count ? run->mult : 0;
}

// One group of at most kBlockKeyTiles key tiles of the task's key super-block (each tile
// within one key block) against every kept query tile of its query super-block, for every
// query head of the kv head. Key tiles are packed when first needed and serve all query tiles;
// each query tile (within one query block) is packed once per head and group and serves all
// the group's key tiles.
void BlockKeyGroup(const BackwardJob& job, const BlockBackwardTask& task, TileView* views,
                   const int64_t* tile_blocks, int64_t count, const BackwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t n = seq_length(p, task.b), size = job.blocks->block_size();
  const int64_t nb = block_count(n, size);
  const int64_t I0 = task.query_super * job.block_super;
  const int64_t I1 = std::min(nb, I0 + job.block_super);
  bool packed[kBlockKeyTiles] = {};
  int32_t kept[kBlockKeyTiles];
  const int64_t group = p.heads / p.heads_kv;
  for (int64_t head = task.kv_head * group; head < (task.kv_head + 1) * group; ++head) {
    const HeadBlocks& hb = job.blocks->of(task.b, head);
    for (int64_t I = I0; I < I1; ++I) {
      bool any = false;
      for (int64_t g = 0; g < count; ++g) {
        const bool same_block = g > 0 && tile_blocks[g] == tile_blocks[g - 1];
        kept[g] = same_block ? kept[g - 1] : KeptTimes(hb, I, tile_blocks[g]);
        any = any || kept[g] > 0;
      }
      if (!any) continue;
      const int64_t q_end = std::min((I + 1) * size, n);
      for (int64_t q0 = I * size; q0 < q_end; q0 += kBackwardQueryTile) {
        const int64_t rows = std::min(kBackwardQueryTile, q_end - q0);
        bool packed_queries = false;
        for (int64_t g = 0; g < count; ++g) {
          if (kept[g] == 0) continue;
          if (p.causal && views[g].k0 > q0 + rows - 1) break;  // and the later tiles
          if (!packed[g]) {
            PackKeyTile(job, task.b, task.kv_head, views[g], buf.stage);
            packed[g] = true;
          }
          if (!packed_queries) {
            PackQueryTile(job, task.b, head, 0, 1, q0, rows, buf);
            packed_queries = true;
          }
          views[g].q0 = q0;
          views[g].rows = rows;
          views[g].log2_mult = std::log2(static_cast<float>(kept[g]));
          RunQueryTile(job, task.b, head, views[g], Wants{true, true});
        }
      }
    }
  }
  for (int64_t g = 0; g < count; ++g) {
    if (packed[g]) ScatterKeyTile(job, task.b, task.kv_head, views[g], buf.stage);
  }
}

// Block patterns: every kept (query block, key block) pair of the task's query super-block S
// and key super-block T. Indices are positions (first 0, step 1).
void BlockBackwardTaskImpl(const BackwardJob& job, const BlockBackwardTask& task,
                           const BackwardBuffers& buf) {
  const Params& p = *job.p;
  const int64_t n = seq_length(p, task.b), size = job.blocks->block_size(), kt = KeyTile();
  const int64_t nb = block_count(n, size);
  const int64_t J0 = task.key_super * job.block_super;
  const int64_t J1 = std::min(nb, J0 + job.block_super);
  TileView views[kBlockKeyTiles];
  int64_t tile_blocks[kBlockKeyTiles];
  int64_t count = 0;
  for (int64_t J = J0; J < J1; ++J) {
    const int64_t end = std::min((J + 1) * size, n);
    for (int64_t k0 = J * size; k0 < end; k0 += kt) {
      if (count == kBlockKeyTiles) {
        BlockKeyGroup(job, task, views, tile_blocks, count, buf);
        count = 0;
      }
      views[count] = KeyTileView(job, buf, count, k0, std::min(kt, end - k0), 0, 1);
      tile_blocks[count++] = J;
    }
  }
  if (count > 0) BlockKeyGroup(job, task, views, tile_blocks, count, buf);
}

}  // namespace
}  // namespace dilated::cpu_fast::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dilated::cpu_fast {

HWY_EXPORT(BackwardTaskImpl);
HWY_EXPORT(BlockBackwardTaskImpl);

void run_backward_task(const BackwardJob& job, const BackwardTask& task,
                       const BackwardBuffers& buf) {
  HWY_DYNAMIC_DISPATCH(BackwardTaskImpl)(job, task, buf);
}

void run_block_backward_task(const BackwardJob& job, const BlockBackwardTask& task,
                             const BackwardBuffers& buf) {
  HWY_DYNAMIC_DISPATCH(BlockBackwardTaskImpl)(job, task, buf);
}

}  // namespace dilated::cpu_fast
#endif  // HWY_ONCE
