#include "dist/remote_part.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/dtype_convert.hpp"
#include "dist/shard_tensors.hpp"

namespace dilated::dist {
namespace {

size_t at(int64_t i) {
  return static_cast<size_t>(i);
}

// Converts `count` elements between element types (raw byte pointers, element offsets).
void convert(DType from_type, const void* from, int64_t from_offset, DType to_type, void* to,
             int64_t to_offset, int64_t count, double scale = 1.0) {
  for (int64_t i = 0; i < count; ++i) {
    store_element(to_type, to, to_offset + i,
                  scale * load_element(from_type, from, from_offset + i));
  }
}

// The remote part of one unit as a windowed problem of its own: a virtual sequence of the R
// received rows followed by this rank's L query rows, one segment of R + L positions,
// dilation 1, not causal; queries [R, R + L), keys [0, R). Causal problems need no mask here:
// every received row precedes this rank's rows. Query heads are the class's progression.
struct RemoteProblem {
  Params p;
  std::vector<unsigned char> k, v, out, dq, dk, dv;
  std::vector<float> lse;
  int64_t first_row = 0;  // local row of the first query
  int64_t rows = 0;       // L
  int64_t keys = 0;       // R
};

void make_remote_problem(const RankView& view, const Unit& u, const KeyClass& c, int64_t keys,
                         Direction dir, RemoteProblem* rp) {
  const Params& work = *view.work;
  const int me = view.rank;
  const int64_t wsize = dtype_size(work.dtype);
  const int64_t b = work.batch, d = work.head_dim, dv = work.head_dim_v;
  rp->rows = u.count[at(me)];
  rp->keys = keys;
  rp->first_row = u.position(c.hp, u.first_selected[at(me)]) - view.offset();
  Params& p = rp->p;
  p = work;
  p.seqlen = rp->rows;
  p.heads = c.heads;
  p.heads_kv = 1;
  p.num_patterns = 1;
  p.patterns[0] = {keys + rp->rows, 1};
  p.mode = Mode::longnet;
  p.head_offsets = HeadOffsets::paper;
  p.causal = false;
  p.scale = softmax_scale(work);
  p.window = {keys + rp->rows, keys, 0, keys};
  p.workspace = nullptr;
  p.workspace_bytes = 0;
  const int64_t first = element_offset(work.q, 0, rp->first_row, c.first_head);
  p.q = strided_view(work.q, work.dtype, first, c.hp.dilation, c.head_step);
  rp->k.resize(at(b * keys * d * wsize));
  rp->v.resize(at(b * keys * dv * wsize));
  p.k = contiguous_view(rp->k.data(), keys, 1, d);
  p.v = contiguous_view(rp->v.data(), keys, 1, dv);
  rp->out.resize(at(b * rp->rows * c.heads * dv * wsize));
  p.out = contiguous_view(rp->out.data(), rp->rows, c.heads, dv);
  rp->lse.resize(at(b * c.heads * rp->rows));
  p.lse = rp->lse.data();
  if (dir == Direction::backward) {
    const int64_t first_dout = element_offset(work.dout, 0, rp->first_row, c.first_head);
    p.dout = strided_view(work.dout, work.dtype, first_dout, c.hp.dilation, c.head_step);
    rp->dq.resize(at(b * rp->rows * c.heads * d * wsize));
    rp->dk.resize(rp->k.size());
    rp->dv.resize(rp->v.size());
    p.dq = contiguous_view(rp->dq.data(), rp->rows, c.heads, d);
    p.dk = contiguous_view(rp->dk.data(), keys, 1, d);
    p.dv = contiguous_view(rp->dv.data(), keys, 1, dv);
  }
}

// Fills the remote problem's k and v with the rows every sender sent for unit `ui`, senders
// in rank order.
void gather_received_keys(const RankView& view, const MessageLayout& layout, int ui,
                          const std::vector<unsigned char>& received, RemoteProblem* rp) {
  const Params& caller = *view.caller;
  const Params& work = *view.work;
  const Unit& u = view.plan->units[at(ui)];
  const int64_t d = work.head_dim, dv = work.head_dim_v;
  const int64_t row_bytes = (d + dv) * dtype_size(caller.dtype);
  int64_t r0 = 0;
  for (int q = 0; q < view.shards->size(); ++q) {
    const int64_t offset = layout.recv_at[at(ui)][at(q)];
    if (offset < 0) continue;
    const int64_t count = u.count[at(q)];
    for (int64_t b = 0; b < work.batch; ++b) {
      for (int64_t i = 0; i < count; ++i) {
        const unsigned char* row = received.data() + offset + (b * count + i) * row_bytes;
        const int64_t key = b * rp->keys + r0 + i;
        convert(caller.dtype, row, 0, work.dtype, rp->k.data(), key * d, d);
        convert(caller.dtype, row, d, work.dtype, rp->v.data(), key * dv, dv);
      }
    }
    r0 += count;
  }
}

// Local query row i of the remote problem (its position in the shard).
int64_t query_row(const RemoteProblem& rp, const KeyClass& c, int64_t i) {
  return rp.first_row + i * c.hp.dilation;
}

// out, lse of the shard <- union softmax of (out, lse) and the remote part (lse rule).
void merge_remote_result(const RankView& view, const KeyClass& c, const RemoteProblem& rp) {
  const Params& work = *view.work;
  const double share = output_scale(work);  // head_groups: the remote softmax is divided too
  const double none = -std::numeric_limits<double>::infinity();
  const int64_t dv = work.head_dim_v;
  for (int64_t b = 0; b < work.batch; ++b) {
    for (int64_t m = 0; m < c.heads; ++m) {
      const int64_t head = c.first_head + m * c.head_step;
      for (int64_t i = 0; i < rp.rows; ++i) {
        const int64_t t = query_row(rp, c, i);
        float& lse = work.lse[(b * work.heads + head) * work.seqlen + t];
        const double part = rp.lse[at((b * c.heads + m) * rp.rows + i)];
        const double old = lse;
        if (part == none) continue;
        double merged, w_old, w_part;
        if (std::isnan(part) || std::isnan(old)) {
          merged = w_old = w_part = std::numeric_limits<double>::quiet_NaN();
        } else {
          const double top = old > part ? old : part;
          merged = top + std::log(std::exp(old - top) + std::exp(part - top));
          w_old = std::exp(old - merged);
          w_part = std::exp(part - merged) * share;
        }
        const int64_t o = element_offset(work.out, b, t, head);
        const int64_t po = ((b * rp.rows + i) * c.heads + m) * dv;
        for (int64_t e = 0; e < dv; ++e) {
          const double x = w_old * load_element(work.dtype, work.out.data, o + e) +
                           w_part * load_element(work.dtype, rp.out.data(), po + e);
          store_element(work.dtype, work.out.data, o + e, x);
        }
        lse = static_cast<float>(merged);
      }
    }
  }
}

}  // namespace

MessageLayout layout_messages(const RankView& view, int64_t row_bytes, bool reverse, int send_peer,
                              int recv_peer) {
  const ExchangePlan& plan = *view.plan;
  const int ranks = view.shards->size(), me = view.rank;
  const int64_t batch = view.caller->batch;
  const size_t units = plan.units.size();
  MessageLayout m;
  m.send_bytes.assign(at(ranks), 0);
  m.recv_bytes.assign(at(ranks), 0);
  m.send_at.assign(units, std::vector<int64_t>(at(ranks), -1));
  m.recv_at.assign(units, std::vector<int64_t>(at(ranks), -1));
  for (int q = 0; q < ranks; ++q) {
    for (size_t i = 0; i < units; ++i) {
      const Unit& u = plan.units[i];
      // Forward: my rows to q, q's rows to me. Reverse: gradients of q's rows back to q, and
      // of my rows from q.
      const bool send_ok = send_peer < 0 || q == send_peer;
      const bool recv_ok = recv_peer < 0 || q == recv_peer;
      if (send_ok && (reverse ? plan.sends(u, q, me) : plan.sends(u, me, q))) {
        const int64_t bytes = batch * u.count[at(reverse ? q : me)] * row_bytes;
        m.send_at[i][at(q)] = m.send_total;
        m.send_total += bytes;
        m.send_bytes[at(q)] += bytes;
      }
      if (recv_ok && (reverse ? plan.sends(u, me, q) : plan.sends(u, q, me))) {
        const int64_t bytes = batch * u.count[at(reverse ? me : q)] * row_bytes;
        m.recv_at[i][at(q)] = m.recv_total;
        m.recv_total += bytes;
        m.recv_bytes[at(q)] += bytes;
      }
    }
  }
  return m;
}

int64_t received_rows(const RankView& view, const MessageLayout& layout, int ui) {
  const Unit& u = view.plan->units[at(ui)];
  int64_t rows = 0;
  for (int q = 0; q < view.shards->size(); ++q) {
    if (layout.recv_at[at(ui)][at(q)] >= 0) rows += u.count[at(q)];
  }
  return rows;
}

int64_t largest_one_shot_receive(const ExchangePlan& plan, const ShardTable& shards, int64_t batch,
                                 int64_t row_bytes) {
  int64_t largest = 0;
  for (int q = 0; q < shards.size(); ++q) {
    int64_t rows = 0;
    for (const Unit& u : plan.units) rows += u.count[at(q)] > 0 ? plan.received_rows(u, q) : 0;
    largest = std::max(largest, rows * batch * row_bytes);
  }
  return largest;
}

std::vector<ExchangeStep> exchange_steps(const ExchangePlan& plan, const ShardTable& shards,
                                         int rank, int64_t batch, int64_t row_bytes,
                                         int64_t budget) {
  const int ranks = shards.size();
  if (budget <= 0 || ranks < 3 ||
      largest_one_shot_receive(plan, shards, batch, row_bytes) <= budget) {
    return {ExchangeStep{}};
  }
  std::vector<ExchangeStep> steps;
  for (int s = 1; s < ranks; ++s) steps.push_back({(rank + s) % ranks, (rank - s + ranks) % ranks});
  return steps;
}

void pack_keys(const RankView& view, const MessageLayout& layout, std::vector<unsigned char>* buf) {
  const Params& p = *view.caller;
  const int me = view.rank;
  const int64_t esize = dtype_size(p.dtype);
  const int64_t k_bytes = p.head_dim * esize, v_bytes = p.head_dim_v * esize;
  buf->resize(at(layout.send_total));
  for (size_t ui = 0; ui < view.plan->units.size(); ++ui) {
    const Unit& u = view.plan->units[ui];
    const KeyClass& c = view.plan->classes[at(u.key_class)];
    const int64_t count = u.count[at(me)];
    for (int q = 0; q < view.shards->size(); ++q) {
      const int64_t offset = layout.send_at[ui][at(q)];
      if (offset < 0) continue;
      for (int64_t b = 0; b < p.batch; ++b) {
        for (int64_t i = 0; i < count; ++i) {
          const int64_t row = u.position(c.hp, u.first_selected[at(me)] + i) - view.offset();
          unsigned char* dst = buf->data() + offset + (b * count + i) * (k_bytes + v_bytes);
          const auto* k = static_cast<const unsigned char*>(p.k.data);
          const auto* v = static_cast<const unsigned char*>(p.v.data);
          std::memcpy(dst, k + element_offset(p.k, b, row, c.kv_head) * esize, at(k_bytes));
          std::memcpy(dst + k_bytes, v + element_offset(p.v, b, row, c.kv_head) * esize,
                      at(v_bytes));
        }
      }
    }
  }
}

Status remote_forward(const RankView& view, const MessageLayout& layout,
                      const std::vector<unsigned char>& received, int64_t* problems) {
  for (size_t ui = 0; ui < view.plan->units.size(); ++ui) {
    const Unit& u = view.plan->units[ui];
    const int64_t keys = received_rows(view, layout, static_cast<int>(ui));
    if (u.count[at(view.rank)] == 0 || keys == 0) continue;
    const KeyClass& c = view.plan->classes[at(u.key_class)];
    RemoteProblem rp;
    make_remote_problem(view, u, c, keys, Direction::forward, &rp);
    gather_received_keys(view, layout, static_cast<int>(ui), received, &rp);
    if (Status s = forward(rp.p, {}, view.backend); !s.ok()) return s;
    merge_remote_result(view, c, rp);
    ++*problems;
  }
  return {};
}

Status remote_backward(const RankView& view, const MessageLayout& layout,
                       const std::vector<unsigned char>& received, const MessageLayout& reverse,
                       std::vector<unsigned char>* returned, int64_t* problems) {
  const Params& work = *view.work;
  const DType wt = work.dtype;
  const int64_t d = work.head_dim, dv = work.head_dim_v;
  const int64_t row_bytes = (d + dv) * dtype_size(wt);
  // With dout as given and out = the softmax average (m * out in head_groups), the remote
  // problem's gradients are m times ours (DESIGN 2.5 with dout / m): scale them by 1/m.
  const double share = output_scale(work);
  returned->assign(at(reverse.send_total), 0);
  for (size_t ui = 0; ui < view.plan->units.size(); ++ui) {
    const Unit& u = view.plan->units[ui];
    const int64_t keys = received_rows(view, layout, static_cast<int>(ui));
    if (u.count[at(view.rank)] == 0 || keys == 0) continue;
    const KeyClass& c = view.plan->classes[at(u.key_class)];
    RemoteProblem rp;
    make_remote_problem(view, u, c, keys, Direction::backward, &rp);
    gather_received_keys(view, layout, static_cast<int>(ui), received, &rp);
    // The merged out and lse of the shard's rows, as the remote problem lays them out.
    for (int64_t b = 0; b < work.batch; ++b) {
      for (int64_t m = 0; m < c.heads; ++m) {
        const int64_t head = c.first_head + m * c.head_step;
        for (int64_t i = 0; i < rp.rows; ++i) {
          const int64_t t = query_row(rp, c, i);
          rp.lse[at((b * c.heads + m) * rp.rows + i)] =
              work.lse[(b * work.heads + head) * work.seqlen + t];
          convert(wt, work.out.data, element_offset(work.out, b, t, head), wt, rp.out.data(),
                  ((b * rp.rows + i) * c.heads + m) * dv, dv, 1.0 / share);
        }
      }
    }
    if (Status s = backward(rp.p, {}, view.backend); !s.ok()) return s;
    ++*problems;
    // dq rows of the shard += share * the remote problem's dq.
    for (int64_t b = 0; b < work.batch; ++b) {
      for (int64_t i = 0; i < rp.rows; ++i) {
        for (int64_t m = 0; m < c.heads; ++m) {
          const int64_t head = c.first_head + m * c.head_step;
          const int64_t o = element_offset(work.dq, b, query_row(rp, c, i), head);
          const int64_t po = ((b * rp.rows + i) * c.heads + m) * d;
          for (int64_t e = 0; e < d; ++e) {
            store_element(wt, work.dq.data, o + e,
                          load_element(wt, work.dq.data, o + e) +
                              share * load_element(wt, rp.dq.data(), po + e));
          }
        }
      }
    }
    // dk, dv of the received rows go back to their ranks, in the order they came.
    int64_t r0 = 0;
    for (int q = 0; q < view.shards->size(); ++q) {
      if (layout.recv_at[ui][at(q)] < 0) continue;
      const int64_t count = u.count[at(q)];
      const int64_t offset = reverse.send_at[ui][at(q)];
      for (int64_t b = 0; b < work.batch; ++b) {
        for (int64_t i = 0; i < count; ++i) {
          unsigned char* row = returned->data() + offset + (b * count + i) * row_bytes;
          const int64_t key = b * keys + r0 + i;
          convert(wt, rp.dk.data(), key * d, wt, row, 0, d, share);
          convert(wt, rp.dv.data(), key * dv, wt, row, d, dv, share);
        }
      }
      r0 += count;
    }
  }
  return {};
}

void add_returned_gradients(const RankView& view, const MessageLayout& reverse,
                            const std::vector<unsigned char>& received) {
  const Params& work = *view.work;
  const DType wt = work.dtype;
  const int64_t d = work.head_dim, dv = work.head_dim_v;
  const int64_t row_bytes = (d + dv) * dtype_size(wt);
  const int me = view.rank;
  for (int q = 0; q < view.shards->size(); ++q) {
    for (size_t ui = 0; ui < view.plan->units.size(); ++ui) {
      const int64_t offset = reverse.recv_at[ui][at(q)];
      if (offset < 0) continue;
      const Unit& u = view.plan->units[ui];
      const KeyClass& c = view.plan->classes[at(u.key_class)];
      const int64_t count = u.count[at(me)];
      for (int64_t b = 0; b < work.batch; ++b) {
        for (int64_t i = 0; i < count; ++i) {
          const unsigned char* row = received.data() + offset + (b * count + i) * row_bytes;
          const int64_t t = u.position(c.hp, u.first_selected[at(me)] + i) - view.offset();
          const int64_t ok = element_offset(work.dk, b, t, c.kv_head);
          const int64_t ov = element_offset(work.dv, b, t, c.kv_head);
          for (int64_t e = 0; e < d; ++e) {
            store_element(wt, work.dk.data, ok + e,
                          load_element(wt, work.dk.data, ok + e) + load_element(wt, row, e));
          }
          for (int64_t e = 0; e < dv; ++e) {
            store_element(wt, work.dv.data, ov + e,
                          load_element(wt, work.dv.data, ov + e) + load_element(wt, row, d + e));
          }
        }
      }
    }
  }
}

}  // namespace dilated::dist
