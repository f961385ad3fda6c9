// The part of a rank's result that comes from other ranks' keys: packing the k/v rows that
// leave, and running this rank's queries against the rows that arrive, one unit (segment x key
// class) at a time, as windowed problems of the backends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dilated/dist.hpp"
#include "dist/exchange_plan.hpp"

namespace dilated::dist {

// Where each unit's rows lie in the message blocks of one all_to_all: every row is `row_bytes`
// bytes, a unit's block is [batch][rows][row].
struct MessageLayout {
  std::vector<int64_t> send_bytes, recv_bytes;  // per peer
  // [unit][peer]: byte offset of the unit's block in the send or receive buffer, -1 if none.
  std::vector<std::vector<int64_t>> send_at, recv_at;
  int64_t send_total = 0, recv_total = 0;
};

// The context of one call on one rank.
struct RankView {
  const ExchangePlan* plan = nullptr;
  const ShardTable* shards = nullptr;
  int rank = 0;
  const Params* caller = nullptr;  // the caller's shard problem (native element type)
  const Params* work = nullptr;    // the same in the compute type, windowed (ShardTensors)
  std::string backend;

  int64_t offset() const { return shards->begin(rank); }
};

// Forward: this rank's selected k/v rows go to the ranks that need them, in the caller's type
// (row = k then v). Backward sends the key gradients back the other way: `reverse` swaps the
// roles, rows in the compute type. A ring step exchanges with two peers only: `send_peer` and
// `recv_peer` (-1: every peer) keep the blocks sent to and received from them.
MessageLayout layout_messages(const RankView& view, int64_t row_bytes, bool reverse,
                              int send_peer = -1, int recv_peer = -1);

// Rows of unit `ui` this rank receives in `layout` (from every sender the layout holds).
int64_t received_rows(const RankView& view, const MessageLayout& layout, int ui);

// The most bytes of k/v rows any rank receives in a one-shot exchange (the same on every rank:
// it comes from the plan), for choosing between one exchange and the ring.
int64_t largest_one_shot_receive(const ExchangePlan& plan, const ShardTable& shards, int64_t batch,
                                 int64_t row_bytes);

// The peers of one exchange: every peer at once (-1, -1), or one ring step.
struct ExchangeStep {
  int to = -1;
  int from = -1;
};

// One exchange, or the ring (Options::exchange_budget_bytes) when the one-shot exchange would
// give some rank more than `budget` bytes of k/v rows: P - 1 steps, step s sending to
// rank + s and receiving from rank - s (mod P). Every rank decides alike (from the plan).
std::vector<ExchangeStep> exchange_steps(const ExchangePlan& plan, const ShardTable& shards,
                                         int rank, int64_t batch, int64_t row_bytes,
                                         int64_t budget);

// Packs this rank's k/v rows for every peer (forward layout).
void pack_keys(const RankView& view, const MessageLayout& layout, std::vector<unsigned char>* buf);

// This rank's queries against the received rows of every unit, merged into the work out and
// lse with the union-softmax rule (the local part must be there already).
Status remote_forward(const RankView& view, const MessageLayout& layout,
                      const std::vector<unsigned char>& received, int64_t* problems);

// Backward of the same: adds dq into the work dq, and writes the received rows' dk/dv (in the
// compute type) into `returned` at the reverse layout's send offsets.
Status remote_backward(const RankView& view, const MessageLayout& layout,
                       const std::vector<unsigned char>& received, const MessageLayout& reverse,
                       std::vector<unsigned char>* returned, int64_t* problems);

// Adds the dk/dv rows other ranks computed for this rank's keys into the work dk and dv.
void add_returned_gradients(const RankView& view, const MessageLayout& reverse,
                            const std::vector<unsigned char>& received);

}  // namespace dilated::dist
