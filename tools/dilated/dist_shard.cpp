#include "dist_shard.hpp"

#include <algorithm>
#include <limits>

#include "core/dtype_convert.hpp"

namespace dilated::cli {
namespace {

size_t at(int64_t i) {
  return static_cast<size_t>(i);
}

// Copies rows [first, last) of every batch entry of a [B, n, width] float array.
void take_rows(const std::vector<float>& whole, int64_t batch, int64_t n, int64_t width,
               int64_t first, int64_t last, std::vector<float>* out) {
  for (int64_t b = 0; b < batch; ++b) {
    const auto begin = whole.begin() + (b * n + first) * width;
    out->insert(out->end(), begin, begin + (last - first) * width);
  }
}

// Writes [B, last - first, width] floats from `from` into rows [first, last) of `whole`.
const float* put_rows(const float* from, int64_t batch, int64_t n, int64_t width, int64_t first,
                      int64_t last, std::vector<float>* whole) {
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t count = (last - first) * width;
    std::copy_n(from, count, whole->begin() + (b * n + first) * width);
    from += count;
  }
  return from;
}

Status exchange(dist::Communicator& comm, const std::vector<float>& send,
                const std::vector<int64_t>& send_bytes, std::vector<float>* recv,
                const std::vector<int64_t>& recv_bytes) {
  int64_t total = 0;
  for (int64_t b : recv_bytes) total += b;
  recv->assign(at(total / 4), 0.0f);
  return comm.all_to_all(send.data(), send_bytes.data(), recv->data(), recv_bytes.data());
}

}  // namespace

std::vector<int64_t> even_cuts(int64_t n, int ranks) {
  std::vector<int64_t> cuts;
  for (int r = 0; r < ranks; ++r) cuts.push_back(dist::even_shard(n, r, ranks).offset);
  cuts.push_back(n);
  return cuts;
}

HostShard::HostShard(const ProblemSpec& spec, int64_t first, int64_t last, bool backward)
    : spec_(spec), global_seqlen_(spec.seqlen), first_(first), backward_(backward) {
  ProblemSpec local = spec;
  local.seqlen = last - first;
  params_ = spec_params(local);
  storage(q_, spec.heads, &params_.q);
  storage(k_, spec.heads_kv, &params_.k);
  storage(v_, spec.heads_kv, &params_.v);
  storage(out_, spec.heads, &params_.out);
  lse_.assign(at(spec.batch * spec.heads * local.seqlen), std::numeric_limits<float>::quiet_NaN());
  params_.lse = lse_.data();
  if (backward) {
    storage(dout_, spec.heads, &params_.dout);
    storage(dq_, spec.heads, &params_.dq);
    storage(dk_, spec.heads_kv, &params_.dk);
    storage(dv_, spec.heads_kv, &params_.dv);
  }
}

std::vector<unsigned char>& HostShard::storage(std::vector<unsigned char>& v, int64_t heads,
                                               Tensor* t) {
  const int64_t rows = params_.seqlen, d = spec_.head_dim;
  const int64_t elements = spec_.batch * rows * heads * d;
  v.assign(at(elements * dtype_size(spec_.dtype)), 0);
  for (int64_t i = 0; i < elements; ++i) {  // outputs start as NaN: unwritten ones show
    store_element(spec_.dtype, v.data(), i, std::numeric_limits<double>::quiet_NaN());
  }
  t->data = v.data();
  t->head_stride = d;
  t->row_stride = heads * d;
  t->batch_stride = rows * heads * d;
  return v;
}

void HostShard::set_inputs(const HostTensors& rows) {
  auto fill = [&](std::vector<unsigned char>& to, const std::vector<float>& from) {
    for (size_t i = 0; i < from.size(); ++i) {
      store_element(spec_.dtype, to.data(), static_cast<int64_t>(i), from[i]);
    }
  };
  fill(q_, rows.q);
  fill(k_, rows.k);
  fill(v_, rows.v);
  if (backward_) fill(dout_, rows.dout);
}

HostOutputs HostShard::outputs() const {
  auto read = [&](const std::vector<unsigned char>& from) {
    std::vector<float> values(from.size() / at(dtype_size(spec_.dtype)));
    for (size_t i = 0; i < values.size(); ++i) {
      values[i] =
          static_cast<float>(load_element(spec_.dtype, from.data(), static_cast<int64_t>(i)));
    }
    return values;
  };
  HostOutputs o;
  o.out = read(out_);
  o.lse = lse_;
  if (backward_) {
    o.dq = read(dq_);
    o.dk = read(dk_);
    o.dv = read(dv_);
  }
  return o;
}

Status scatter_rows(dist::Communicator& comm, const ProblemSpec& spec,
                    const std::vector<int64_t>& cuts, const HostTensors& whole, bool backward,
                    HostShard* shard) {
  const int ranks = comm.size(), rank = comm.rank();
  const int64_t b = spec.batch, n = spec.seqlen, d = spec.head_dim;
  const int64_t qw = spec.heads * d, kw = spec.heads_kv * d;
  auto block_bytes = [&](int q) {
    const int64_t rows = cuts[at(q) + 1] - cuts[at(q)];
    return 4 * b * rows * (qw * (backward ? 2 : 1) + 2 * kw);
  };
  std::vector<int64_t> send_bytes(at(ranks), 0), recv_bytes(at(ranks), 0);
  std::vector<float> send;
  if (rank == 0) {
    for (int q = 0; q < ranks; ++q) {
      const int64_t first = cuts[at(q)], last = cuts[at(q) + 1];
      take_rows(whole.q, b, n, qw, first, last, &send);
      take_rows(whole.k, b, n, kw, first, last, &send);
      take_rows(whole.v, b, n, kw, first, last, &send);
      if (backward) take_rows(whole.dout, b, n, qw, first, last, &send);
      send_bytes[at(q)] = block_bytes(q);
    }
  }
  recv_bytes[0] = block_bytes(rank);
  std::vector<float> recv;
  if (Status s = exchange(comm, send, send_bytes, &recv, recv_bytes); !s.ok()) return s;
  const int64_t rows = shard->rows();
  HostTensors mine;
  auto next = [&](int64_t width, int64_t* offset) {
    const auto begin = recv.begin() + *offset;
    *offset += b * rows * width;
    return std::vector<float>(begin, begin + b * rows * width);
  };
  int64_t offset = 0;
  mine.q = next(qw, &offset);
  mine.k = next(kw, &offset);
  mine.v = next(kw, &offset);
  if (backward) mine.dout = next(qw, &offset);
  shard->set_inputs(mine);
  return {};
}

Status gather_rows(dist::Communicator& comm, const ProblemSpec& spec,
                   const std::vector<int64_t>& cuts, const HostShard& shard, bool backward,
                   HostOutputs* whole) {
  const int ranks = comm.size(), rank = comm.rank();
  const int64_t b = spec.batch, n = spec.seqlen, h = spec.heads, d = spec.head_dim;
  const int64_t qw = h * d, kw = spec.heads_kv * d;
  // Per row of one batch entry: out, lse, and dq dk dv.
  const int64_t per_row = qw + h + (backward ? qw + 2 * kw : 0);
  const HostOutputs mine = shard.outputs();
  std::vector<float> send;
  for (const std::vector<float>* part : {&mine.out, &mine.lse, &mine.dq, &mine.dk, &mine.dv}) {
    send.insert(send.end(), part->begin(), part->end());
  }
  std::vector<int64_t> send_bytes(at(ranks), 0), recv_bytes(at(ranks), 0);
  send_bytes[0] = 4 * static_cast<int64_t>(send.size());
  if (rank == 0) {
    for (int q = 0; q < ranks; ++q)
      recv_bytes[at(q)] = 4 * b * (cuts[at(q) + 1] - cuts[at(q)]) * per_row;
  }
  std::vector<float> recv;
  if (Status s = exchange(comm, send, send_bytes, &recv, recv_bytes); !s.ok()) return s;
  if (rank != 0) return {};
  whole->out.assign(at(b * n * qw), 0.0f);
  whole->lse.assign(at(b * h * n), 0.0f);
  if (backward) {
    whole->dq.assign(at(b * n * qw), 0.0f);
    whole->dk.assign(at(b * n * kw), 0.0f);
    whole->dv.assign(at(b * n * kw), 0.0f);
  }
  const float* from = recv.data();
  for (int q = 0; q < ranks; ++q) {
    const int64_t first = cuts[at(q)], last = cuts[at(q) + 1];
    from = put_rows(from, b, n, qw, first, last, &whole->out);
    // lse [B, H, rows] goes to [B, H, N]: one "row" of width 1 per (b, head).
    from = put_rows(from, b * h, n, 1, first, last, &whole->lse);
    if (backward) {
      from = put_rows(from, b, n, qw, first, last, &whole->dq);
      from = put_rows(from, b, n, kw, first, last, &whole->dk);
      from = put_rows(from, b, n, kw, first, last, &whole->dv);
    }
  }
  return {};
}

}  // namespace dilated::cli
