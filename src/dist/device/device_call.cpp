#include "dist/device/device_call.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/pattern_math.hpp"
#include "dist/device/device_ops.hpp"
#include "dist/device/device_runtime.hpp"
#include "dist/remote_part.hpp"
#include "dist/shard_tensors.hpp"

namespace dilated::dist {
namespace {

using Clock = std::chrono::steady_clock;

size_t at(int64_t i) {
  return static_cast<size_t>(i);
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// DILATED_DIST_SERIAL_REMOTE=1 runs the remote units after the shard's own part on the compute
// stream, as when they cannot overlap it (for measurements and as a fallback).
bool serial_remote_requested() {
  const char* v = std::getenv("DILATED_DIST_SERIAL_REMOTE");
  return v && v[0] == '1';
}

// Above this, units keep sharing one set of result buffers (and run after the local part).
constexpr int64_t kConcurrentUnitBytes = int64_t{512} << 20;

// ---- the host view of a device communicator ----------------------------------------------

class HostStaging final : public Communicator {
 public:
  HostStaging(Communicator& comm, DeviceScratch& scratch) : comm_(comm), scratch_(scratch) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  Device device() const override { return Device::host; }
  void set_timeout(double seconds) override { comm_.set_timeout(seconds); }
  double timeout() const override { return comm_.timeout(); }
  [[noreturn]] void abort(const std::string& reason) override {
    comm_.abort(reason);
    std::abort();  // not reached: Communicator::abort ends the process
  }
  Status barrier() override { return comm_.barrier(); }

  Status all_gather(const void* send, int64_t bytes, void* recv) override {
    const int64_t total = bytes * (size() + 1);
    char* d = nullptr;
    if (Status s = stage_in(send, bytes, total, &d); !s.ok()) return s;
    if (Status s = comm_.all_gather(d, bytes, d + bytes); !s.ok()) return s;
    return stage_out(recv, d + bytes, bytes * size());
  }

  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                    const int64_t* recv_bytes) override {
    int64_t sent = 0, received = 0;
    for (int q = 0; q < size(); ++q) {
      sent += send_bytes[q];
      received += recv_bytes[q];
    }
    char* d = nullptr;
    if (Status s = stage_in(send, sent, sent + received, &d); !s.ok()) return s;
    if (Status s = comm_.all_to_all(d, send_bytes, d + sent, recv_bytes); !s.ok()) return s;
    return stage_out(recv, d + sent, received);
  }

 private:
  // The copy completes before the communicator's own stream reads the buffer.
  Status stage_in(const void* src, int64_t bytes, int64_t total, char** d) {
    void* base = nullptr;
    if (Status s = scratch_.reserve(total, &base); !s.ok()) return s;
    *d = static_cast<char*>(base);
    return rt::copy_to_device(*d, src, bytes);
  }
  Status stage_out(void* dst, const char* src, int64_t bytes) {
    return rt::copy_to_host(dst, src, bytes);
  }

  Communicator& comm_;
  DeviceScratch& scratch_;
};

// ---- device memory of one call -------------------------------------------------------------

// Offsets are taken first, then the scratch is reserved once for all of them.
class Arena {
 public:
  int64_t take(int64_t bytes) {
    const int64_t offset = size_;
    size_ += (bytes + 255) / 256 * 256;
    return offset;
  }
  // At least 64 KiB: the host staging of the agreement records (at offset 0, between the
  // calls' GPU work) then never grows the scratch, which would move the arena.
  Status bind(DeviceScratch& scratch) {
    void* p = nullptr;
    const Status s = scratch.reserve(std::max<int64_t>(size_, int64_t{1} << 16), &p);
    base_ = static_cast<char*>(p);
    return s;
  }
  void* ptr(int64_t offset) const { return base_ + offset; }
  int64_t size() const { return size_; }

 private:
  int64_t size_ = 0;
  char* base_ = nullptr;
};

// Events for ordering the two streams (and timing the parts).
class Event {
 public:
  Event() : e_(rt::event_create()) {}
  ~Event() { rt::event_destroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  rt::Event get() const { return e_; }

 private:
  rt::Event e_;
};

double elapsed_seconds(const Event& from, const Event& to) {
  return rt::event_seconds(from.get(), to.get());
}

// ---- one unit as a windowed problem --------------------------------------------------------

// The remote part of unit `ui` on this rank: its L query rows against the R rows the other
// ranks sent, as in remote_part.cpp (one segment of R + L positions, dilation 1, queries
// [R, R + L), keys [0, R)); q and dout are strided views of the shard (no copies).
struct UnitProblem {
  int ui = 0;
  const Unit* u = nullptr;
  const KeyClass* c = nullptr;
  int64_t rows = 0;       // L
  int64_t keys = 0;       // R
  int64_t first_row = 0;  // local row of query 0
  Params p;
};

struct UnitBuffers {  // arena offsets, sized for the largest unit
  int64_t k = 0, v = 0, out = 0, lse = 0, dq = 0, dk = 0, dv = 0, workspace = 0;
  int64_t workspace_bytes = 0;
};

class DeviceRun {
 public:
  DeviceRun(const DeviceCall& call, Direction dir)
      : call_(call),
        local_(*call.local),
        dir_(dir),
        stream_(call.stream),
        esize_(dtype_size(local_.dtype)),
        d_(local_.head_dim),
        dv_(local_.head_dim_v) {
    plan_ = plan_exchange(local_, *call.shards);
    view_.plan = &plan_;
    view_.shards = call.shards;
    view_.rank = call.rank;
    view_.caller = &local_;
    view_.work = &local_;
    view_.backend = call.backend;
    // One exchange, or the ring's steps (Options::exchange_budget_bytes), each with its
    // layouts: k/v rows one way, their gradients back the other.
    const int64_t row_bytes = (d_ + dv_) * esize_;
    steps_ = exchange_steps(plan_, *call.shards, call.rank, local_.batch, row_bytes,
                            call.exchange_budget_bytes);
    for (const ExchangeStep& step : steps_) {
      layouts_.push_back(layout_messages(view_, row_bytes, false, step.to, step.from));
      reverses_.push_back(dir == Direction::backward
                              ? layout_messages(view_, row_bytes, true, step.from, step.to)
                              : MessageLayout{});
    }
  }

  // The shard's own part starts on the compute stream right after the first exchange is
  // ordered, so that it overlaps that exchange. Buffers are reused step after step: the host
  // waits for each exchange, and the next one's stream waits for the compute stream's work
  // queued before it (start_exchange), reads of the previous step's rows included. After a
  // failure the remaining steps still exchange, so that every rank reaches the same
  // collectives.
  Status forward() {
    if (Status s = prepare_together(); !s.ok()) return s;
    Status local;
    for (size_t i = 0; i < steps_.size(); ++i) {
      if (Status s = exchange_keys(i, Direction::forward, &local); !s.ok()) return s;
      if (local.ok()) local = remote_units(Direction::forward);
    }
    rt::event_record(remote_end_.get(), stream_);
    return finish(local);
  }

  Status backward() {
    if (Status s = prepare_together(); !s.ok()) return s;
    Status local;
    for (size_t i = 0; i < steps_.size(); ++i) {
      if (Status s = exchange_keys(i, Direction::backward, &local); !s.ok()) return s;
      // The gradients of other ranks' keys go back even when this rank failed (zeros then).
      rt::memset_async(arena_.ptr(returned_), reverse_.send_total, side_);
      if (local.ok()) local = remote_units(Direction::backward);
      // After the returned rows are written (concurrent units wrote them on the communicator's
      // own stream, which the exchange follows).
      if (Status s = concurrent_ ? last_kernel_status("remote units") : start_exchange(); !s.ok()) {
        return s;
      }
      if (Status s = exchange(returned_, reverse_.send_bytes, gradients_, reverse_.recv_bytes);
          !s.ok()) {
        return s;
      }
      if (local.ok()) add_returned_gradients();
    }
    rt::event_record(remote_end_.get(), stream_);
    return finish(local);
  }

 private:
  void set_step(size_t i) {
    layout_ = layouts_[i];
    reverse_ = reverses_[i];
  }

  // Exchange step i of the key rows. At step 0 the shard's own part (direction `dir`) is
  // queued on the compute stream between ordering the exchange and waiting for it, so the two
  // overlap; its status lands in *local.
  Status exchange_keys(size_t i, Direction dir, Status* local) {
    set_step(i);
    pack_keys();
    if (Status s = start_exchange(); !s.ok()) return s;
    if (i == 0) {
      rt::event_record(local_start_.get(), stream_);
      *local = dir == Direction::forward ? dilated::forward(work_, {stream_}, call_.backend)
                                         : dilated::backward(work_, {stream_}, call_.backend);
      rt::event_record(local_end_.get(), stream_);
    }
    return exchange(send_, layout_.send_bytes, recv_, layout_.recv_bytes);
  }

  // A rank that cannot get its memory (the likely failure on a GPU) must not leave the others
  // waiting in the exchange: every rank learns every rank's outcome first. Nothing is queued
  // on the GPU yet, so the staging buffer may overlap the arena.
  Status prepare_together() {
    const Status mine = prepare();
    return agree_on_outcome(mine, *call_.host, call_.traffic);
  }

  // Plans the device memory (the largest unit's buffers are reused unit after unit: every
  // unit's kernels run in order on the compute stream) and binds it.
  Status prepare() {
    work_ = local_;
    const ShardTable& shards = *call_.shards;
    work_.window = {shards.global_seqlen(), shards.begin(call_.rank), shards.begin(call_.rank),
                    local_.seqlen};
    int64_t own_lse = -1;
    if (!work_.lse) own_lse = arena_.take(local_.batch * local_.heads * local_.seqlen * 4);
    const Backend* backend = find_backend(call_.backend);
    const int64_t local_workspace = backend->workspace_bytes(work_, dir_);
    const int64_t local_ws = arena_.take(local_workspace);
    int64_t max_send = 0, max_recv = 0, max_returned = 0, max_gradients = 0;
    int64_t max_k = 0, max_v = 0, max_out = 0, max_lse = 0, max_dq = 0, max_ws = 0;
    const int64_t b = local_.batch;
    for (size_t i = 0; i < steps_.size(); ++i) {
      set_step(i);
      max_send = std::max(max_send, layout_.send_total);
      max_recv = std::max(max_recv, layout_.recv_total);
      max_returned = std::max(max_returned, reverse_.send_total);
      max_gradients = std::max(max_gradients, reverse_.recv_total);
      for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
        UnitProblem up;
        if (!unit_problem(static_cast<int>(ui), &up)) continue;
        const int64_t heads = up.c->heads;
        max_k = std::max(max_k, b * up.keys * d_ * esize_);
        max_v = std::max(max_v, b * up.keys * dv_ * esize_);
        max_out = std::max(max_out, b * up.rows * heads * dv_ * esize_);
        max_lse = std::max(max_lse, b * up.rows * heads * 4);
        max_dq = std::max(max_dq, b * up.rows * heads * d_ * esize_);
        max_ws = std::max(max_ws, backend->workspace_bytes(up.p, dir_));
      }
    }
    send_ = arena_.take(max_send);
    recv_ = arena_.take(max_recv);
    if (dir_ == Direction::backward) {
      returned_ = arena_.take(max_returned);
      gradients_ = arena_.take(max_gradients);
    }
    unit_.k = arena_.take(max_k);
    unit_.v = arena_.take(max_v);
    unit_.out = arena_.take(max_out);
    unit_.lse = arena_.take(max_lse);
    if (dir_ == Direction::backward) {
      unit_.dq = arena_.take(max_dq);
      unit_.dk = arena_.take(max_k);
      unit_.dv = arena_.take(max_v);
    }
    unit_.workspace = arena_.take(max_ws);
    unit_.workspace_bytes = max_ws;
    choose_remote_stream();
    if (Status s = arena_.bind(*call_.scratch); !s.ok()) return s;
    if (own_lse >= 0) work_.lse = static_cast<float*>(arena_.ptr(own_lse));
    work_.workspace = local_workspace > 0 ? arena_.ptr(local_ws) : nullptr;
    work_.workspace_bytes = local_workspace;
    return {};
  }

  // The remote units take few SMs each and would run after the local part, which fills the
  // GPU for most of the call: with one exchange step and a communicator stream they run on that
  // stream instead, right after the exchange and beside the local part, each unit keeping its
  // results (forward: out and lse; backward: dq) apart until the compute stream merges them
  // once the local part is done. Units still run one after another there, so k, v, dk, dv and
  // the workspace stay shared.
  void choose_remote_stream() {
    side_ = stream_;
    concurrent_ = false;
    void* comm_stream = call_.comm->device_stream();
    if (steps_.size() != 1 || !comm_stream || serial_remote_requested()) return;
    set_step(0);
    const int64_t b = local_.batch;
    std::vector<int64_t> out_bytes(plan_.units.size(), 0), lse_bytes(plan_.units.size(), 0);
    int64_t total = 0;
    for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
      UnitProblem up;
      if (!unit_problem(static_cast<int>(ui), &up)) continue;
      const int64_t heads = up.c->heads;
      out_bytes[ui] = dir_ == Direction::forward ? b * up.rows * heads * dv_ * esize_
                                                 : b * up.rows * heads * d_ * esize_;
      lse_bytes[ui] = dir_ == Direction::forward ? b * up.rows * heads * 4 : 0;
      total += out_bytes[ui] + lse_bytes[ui];
    }
    if (total > kConcurrentUnitBytes) return;
    unit_result_.assign(plan_.units.size(), -1);
    unit_lse_.assign(plan_.units.size(), -1);
    for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
      if (out_bytes[ui] == 0) continue;
      unit_result_[ui] = arena_.take(out_bytes[ui]);
      if (lse_bytes[ui] > 0) unit_lse_[ui] = arena_.take(lse_bytes[ui]);
    }
    concurrent_ = true;
    side_ = comm_stream;
  }

  // The windowed problem of unit ui on this rank in the current step (buffers unbound);
  // false when this rank has no queries there or receives no keys for it in this step.
  bool unit_problem(int ui, UnitProblem* up) const {
    const Unit& u = plan_.units[at(ui)];
    const int me = call_.rank;
    up->ui = ui;
    up->u = &u;
    up->c = &plan_.classes[at(u.key_class)];
    up->rows = u.count[at(me)];
    up->keys = received_rows(view_, layout_, ui);
    if (up->rows == 0 || up->keys == 0) return false;
    const KeyClass& c = *up->c;
    up->first_row = u.position(c.hp, u.first_selected[at(me)]) - call_.shards->begin(me);
    Params& p = up->p;
    p = local_;
    p.seqlen = up->rows;
    p.heads = c.heads;
    p.heads_kv = 1;
    p.num_patterns = 1;
    p.patterns[0] = {up->keys + up->rows, 1};
    p.mode = Mode::longnet;
    p.head_offsets = HeadOffsets::paper;
    p.causal = false;  // every received row precedes this rank's rows (exchange_plan.hpp)
    p.scale = softmax_scale(local_);
    p.window = {up->keys + up->rows, up->keys, 0, up->keys};
    p.q = strided_view(local_.q, local_.dtype,
                       element_offset(local_.q, 0, up->first_row, c.first_head), c.hp.dilation,
                       c.head_step);
    if (dir_ == Direction::backward) {
      p.dout = strided_view(local_.dout, local_.dtype,
                            element_offset(local_.dout, 0, up->first_row, c.first_head),
                            c.hp.dilation, c.head_step);
    }
    p.k = contiguous_view(nullptr, up->keys, 1, d_);
    p.v = contiguous_view(nullptr, up->keys, 1, dv_);
    p.out = contiguous_view(nullptr, up->rows, c.heads, dv_);
    p.dq = contiguous_view(nullptr, up->rows, c.heads, d_);
    p.dk = contiguous_view(nullptr, up->keys, 1, d_);
    p.dv = contiguous_view(nullptr, up->keys, 1, dv_);
    p.lse = nullptr;
    p.workspace = nullptr;
    p.workspace_bytes = 0;
    return true;
  }

  void bind_unit(UnitProblem* up) const {
    Params& p = up->p;
    p.k.data = arena_.ptr(unit_.k);
    p.v.data = arena_.ptr(unit_.v);
    p.out.data = arena_.ptr(unit_.out);
    p.lse = static_cast<float*>(arena_.ptr(unit_.lse));
    if (dir_ == Direction::backward) {
      p.dq.data = arena_.ptr(unit_.dq);
      p.dk.data = arena_.ptr(unit_.dk);
      p.dv.data = arena_.ptr(unit_.dv);
    }
    p.workspace = unit_.workspace_bytes > 0 ? arena_.ptr(unit_.workspace) : nullptr;
    p.workspace_bytes = unit_.workspace_bytes;
    if (concurrent_) {
      if (dir_ == Direction::forward) {
        p.out.data = arena_.ptr(unit_result_[at(up->ui)]);
        p.lse = static_cast<float*>(arena_.ptr(unit_lse_[at(up->ui)]));
      } else {
        p.dq.data = arena_.ptr(unit_result_[at(up->ui)]);
      }
    }
  }

  // Rows of one k or v block inside a message: `count` rows of (d + dv) elements per batch
  // entry, the k part first.
  Tensor message_rows(int64_t offset_bytes, int64_t count, bool values) const {
    Tensor t;
    t.data = static_cast<char*>(arena_.ptr(0)) + offset_bytes + (values ? d_ * esize_ : 0);
    t.row_stride = d_ + dv_;
    t.batch_stride = count * (d_ + dv_);
    t.head_stride = 0;
    return t;
  }

  // This rank's rows of unit u in a shard tensor (kv head of the class, every dilation-th row).
  Tensor shard_rows(const Tensor& x, const Unit& u, const KeyClass& c) const {
    const int me = call_.rank;
    const int64_t row = u.position(c.hp, u.first_selected[at(me)]) - call_.shards->begin(me);
    return strided_view(x, local_.dtype, element_offset(x, 0, row, c.kv_head), c.hp.dilation, 1);
  }

  void pack_keys() {
    const int me = call_.rank;
    for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
      const Unit& u = plan_.units[ui];
      const KeyClass& c = plan_.classes[at(u.key_class)];
      const int64_t count = u.count[at(me)];
      for (int q = 0; q < call_.shards->size(); ++q) {
        const int64_t offset = layout_.send_at[ui][at(q)];
        if (offset < 0) continue;
        const RowBlock k{local_.batch, count, 1, d_}, v{local_.batch, count, 1, dv_};
        copy_rows(local_.dtype, shard_rows(local_.k, u, c),
                  message_rows(send_ + offset, count, false), k, 1.0f, false, stream_);
        copy_rows(local_.dtype, shard_rows(local_.v, u, c),
                  message_rows(send_ + offset, count, true), v, 1.0f, false, stream_);
      }
    }
  }

  // The communicator's stream waits for what the compute stream queued so far (the packed or
  // returned rows) without a host wait; communicators without a stream get a host wait.
  Status start_exchange() {
    if (Status s = last_kernel_status("packing rows"); !s.ok()) return s;
    if (Status s = rt::event_record(ready_.get(), stream_); !s.ok()) return s;
    if (void* comm_stream = call_.comm->device_stream()) {
      return rt::stream_wait_event(comm_stream, ready_.get());
    }
    return rt::event_synchronize(ready_.get());
  }

  Status exchange(int64_t send, const std::vector<int64_t>& send_bytes, int64_t recv,
                  const std::vector<int64_t>& recv_bytes) {
    const auto start = Clock::now();
    const Status s = call_.comm->all_to_all(arena_.ptr(send), send_bytes.data(), arena_.ptr(recv),
                                            recv_bytes.data());
    call_.stats->exchange_seconds += seconds_since(start);
    ++call_.stats->exchanges;
    int64_t received = 0;
    for (int64_t bytes : recv_bytes) received += bytes;
    call_.stats->largest_receive_bytes = std::max(call_.stats->largest_receive_bytes, received);
    if (!s.ok()) *call_.communication_failed = true;
    for (int q = 0; q < call_.comm->size(); ++q) {
      if (q == call_.rank) continue;
      call_.traffic->sent += send_bytes[at(q)];
      call_.traffic->received += recv_bytes[at(q)];
    }
    return s;
  }

  // The received rows of unit ui into the unit's contiguous k and v, senders in rank order.
  void gather_keys(const UnitProblem& up) const {
    int64_t r0 = 0;
    for (int q = 0; q < call_.shards->size(); ++q) {
      const int64_t offset = layout_.recv_at[at(up.ui)][at(q)];
      if (offset < 0) continue;
      const int64_t count = up.u->count[at(q)];
      Tensor k = up.p.k, v = up.p.v;
      k.data = static_cast<char*>(k.data) + r0 * k.row_stride * esize_;
      v.data = static_cast<char*>(v.data) + r0 * v.row_stride * esize_;
      copy_rows(local_.dtype, message_rows(recv_ + offset, count, false), k,
                {local_.batch, count, 1, d_}, 1.0f, false, side_);
      copy_rows(local_.dtype, message_rows(recv_ + offset, count, true), v,
                {local_.batch, count, 1, dv_}, 1.0f, false, side_);
      r0 += count;
    }
  }

  // The shard's lse at the unit's rows and heads, as a float32 view.
  Tensor shard_lse(const UnitProblem& up) const {
    Tensor t;
    t.data = work_.lse + up.c->first_head * local_.seqlen + up.first_row;
    t.batch_stride = local_.heads * local_.seqlen;
    t.row_stride = up.c->hp.dilation;
    t.head_stride = up.c->head_step * local_.seqlen;
    return t;
  }
  // The unit problem's lse [B, heads, L] as the same kind of view.
  Tensor unit_lse(const UnitProblem& up) const {
    Tensor t;
    t.data = up.p.lse;
    t.batch_stride = up.c->heads * up.rows;
    t.row_stride = 1;
    t.head_stride = up.rows;
    return t;
  }
  Tensor shard_query_rows(const Tensor& x, const UnitProblem& up) const {
    return strided_view(x, local_.dtype, element_offset(x, 0, up.first_row, up.c->first_head),
                        up.c->hp.dilation, up.c->head_step);
  }

  Status remote_units(Direction dir) {
    // head_groups: the remote problem is a plain softmax (longnet, one pattern), m times the
    // shard's share (DESIGN 2.4): its out merges with weight 1/m, its out input is m * out and
    // its gradients count 1/m (remote_part.cpp argues the same on the host).
    const float share = output_scale(local_);
    for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
      UnitProblem up;
      if (!unit_problem(static_cast<int>(ui), &up)) continue;
      bind_unit(&up);
      gather_keys(up);
      const int64_t heads = up.c->heads;
      const RowBlock rows{local_.batch, up.rows, heads, dv_};
      Status s;
      if (dir == Direction::forward) {
        s = dilated::forward(up.p, {side_}, call_.backend);
        if (!s.ok()) return s;
      } else {
        copy_rows(local_.dtype, shard_query_rows(local_.out, up), up.p.out, rows, 1.0f / share,
                  false, side_);
        copy_rows(DType::f32, shard_lse(up), unit_lse(up), {local_.batch, up.rows, heads, 1}, 1.0f,
                  false, side_);
        s = dilated::backward(up.p, {side_}, call_.backend);
        if (!s.ok()) return s;
        return_gradients(up, share);
      }
      if (!concurrent_) merge_unit(up, dir, share);
      ++call_.stats->remote_problems;
      if (Status k = last_kernel_status("remote unit"); !k.ok()) return k;
    }
    if (!concurrent_) return {};
    // The compute stream merges after its local part and after every unit.
    if (Status s = rt::event_record(side_done_.get(), side_); !s.ok()) return s;
    if (Status s = rt::stream_wait_event(stream_, side_done_.get()); !s.ok()) return s;
    for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
      UnitProblem up;
      if (!unit_problem(static_cast<int>(ui), &up)) continue;
      bind_unit(&up);
      merge_unit(up, dir, share);
    }
    return last_kernel_status("remote unit merges");
  }

  // A unit's results into the shard's, on the compute stream (after the local part): forward
  // merges out and lse by the union-softmax rule, backward adds dq.
  void merge_unit(const UnitProblem& up, Direction dir, float share) const {
    const int64_t heads = up.c->heads;
    if (dir == Direction::forward) {
      merge_rows(local_.dtype, shard_query_rows(local_.out, up), shard_lse(up), up.p.out,
                 unit_lse(up), {local_.batch, up.rows, heads, dv_}, share, stream_);
    } else {
      copy_rows(local_.dtype, up.p.dq, shard_query_rows(local_.dq, up),
                {local_.batch, up.rows, heads, d_}, share, true, stream_);
    }
  }

  // dk, dv of the received rows into the returned message, in the order they came.
  void return_gradients(const UnitProblem& up, float share) const {
    int64_t r0 = 0;
    for (int q = 0; q < call_.shards->size(); ++q) {
      if (layout_.recv_at[at(up.ui)][at(q)] < 0) continue;
      const int64_t count = up.u->count[at(q)];
      const int64_t offset = reverse_.send_at[at(up.ui)][at(q)];
      Tensor dk = up.p.dk, dv = up.p.dv;
      dk.data = static_cast<char*>(dk.data) + r0 * dk.row_stride * esize_;
      dv.data = static_cast<char*>(dv.data) + r0 * dv.row_stride * esize_;
      copy_rows(local_.dtype, dk, message_rows(returned_ + offset, count, false),
                {local_.batch, count, 1, d_}, share, false, side_);
      copy_rows(local_.dtype, dv, message_rows(returned_ + offset, count, true),
                {local_.batch, count, 1, dv_}, share, false, side_);
      r0 += count;
    }
  }

  // Other ranks' dk/dv of this rank's rows, added senders first, then units, in order.
  void add_returned_gradients() const {
    const int me = call_.rank;
    for (int q = 0; q < call_.shards->size(); ++q) {
      for (size_t ui = 0; ui < plan_.units.size(); ++ui) {
        const int64_t offset = reverse_.recv_at[ui][at(q)];
        if (offset < 0) continue;
        const Unit& u = plan_.units[ui];
        const KeyClass& c = plan_.classes[at(u.key_class)];
        const int64_t count = u.count[at(me)];
        copy_rows(local_.dtype, message_rows(gradients_ + offset, count, false),
                  shard_rows(local_.dk, u, c), {local_.batch, count, 1, d_}, 1.0f, true, stream_);
        copy_rows(local_.dtype, message_rows(gradients_ + offset, count, true),
                  shard_rows(local_.dv, u, c), {local_.batch, count, 1, dv_}, 1.0f, true, stream_);
      }
    }
  }

  // Waits for the compute stream; the first error of the call wins.
  Status finish(Status s) {
    const Status launched = last_kernel_status("sequence-parallel kernels");
    const Status done = rt::stream_synchronize(stream_);
    if (s.ok()) s = launched;
    if (s.ok()) s = done;
    if (s.ok()) {
      call_.stats->local_seconds = elapsed_seconds(local_start_, local_end_);
      call_.stats->remote_seconds = elapsed_seconds(local_end_, remote_end_);
      int64_t received = 0;
      for (const MessageLayout& l : layouts_) received += l.recv_total;
      call_.stats->remote_rows = received / ((d_ + dv_) * esize_);
    }
    return s;
  }

  const DeviceCall& call_;
  const Params& local_;
  const Direction dir_;
  void* stream_;  // the compute stream
  const int64_t esize_, d_, dv_;
  ExchangePlan plan_;
  RankView view_;
  std::vector<ExchangeStep> steps_;
  std::vector<MessageLayout> layouts_, reverses_;
  MessageLayout layout_, reverse_;  // the current step's
  Params work_;
  Arena arena_;
  UnitBuffers unit_;
  // Remote units beside the local part (choose_remote_stream): their stream, and per unit the
  // arena offsets of its own results.
  bool concurrent_ = false;
  void* side_ = nullptr;
  std::vector<int64_t> unit_result_, unit_lse_;
  int64_t send_ = 0, recv_ = 0, returned_ = 0, gradients_ = 0;
  Event ready_, local_start_, local_end_, remote_end_, side_done_;
};

}  // namespace

std::unique_ptr<Communicator> host_staging(Communicator& device_comm, DeviceScratch& scratch) {
  return std::make_unique<HostStaging>(device_comm, scratch);
}

Status device_forward(const DeviceCall& call) {
  return DeviceRun(call, Direction::forward).forward();
}

Status device_backward(const DeviceCall& call) {
  return DeviceRun(call, Direction::backward).backward();
}

}  // namespace dilated::dist
