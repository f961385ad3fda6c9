// dilated::dist::forward and backward: the shard against its own keys (one windowed call of
// the backend, overlapping the k/v exchange), then against the keys other ranks sent (one
// windowed call per unit), merged with the union-softmax rule. docs/design.md "Sequence
// parallelism" explains the decomposition and why it is exact.
#include <algorithm>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "core/pattern_math.hpp"
#include "dilated/dist.hpp"
#include "dist/agreement.hpp"
#include "dist/exchange_plan.hpp"
#include "dist/remote_part.hpp"
#include "dist/shard_tensors.hpp"
#if DILATED_WITH_CUDA
#include "dist/device/device_call.hpp"
#endif

namespace dilated::dist {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Status invalid(const std::string& message) {
  return Status::Invalid("dist: " + message);
}

// This rank's own arguments, checked before any exchange (the result travels with the
// configuration, so that every rank reports the first bad rank). `device`: where the
// communicator exchanges, hence where the tensors must be.
Status check_arguments(const Params& local, const ShardInfo& shard, Direction dir,
                       const std::string& backend, Device device, const Backend** chosen) {
  if (Status s = validate(local, dir); !s.ok()) return s;
  if (local.device != device) {
    return invalid(device == Device::host
                       ? "device = cuda: the communicator exchanges host memory (MPI); device "
                         "tensors need a device communicator (NCCL)"
                       : "device = host: the communicator exchanges device memory (NCCL); host "
                         "tensors need a host communicator (MPI)");
  }
  if (local.cu_seqlens) return invalid("cu_seqlens: varlen problems cannot be sharded");
  if (windowed(local)) {
    return invalid("Params::window must be unset: the ShardInfo says where the rows are");
  }
  if (shard.global_seqlen < 1) {
    return invalid("global_seqlen = " + std::to_string(shard.global_seqlen) + ": expected >= 1");
  }
  if (shard.offset < 0 || shard.offset > shard.global_seqlen - local.seqlen) {
    return invalid("shard offset = " + std::to_string(shard.offset) + " with " +
                   std::to_string(local.seqlen) + " rows: expected 0..global_seqlen - rows = " +
                   std::to_string(shard.global_seqlen - local.seqlen));
  }
  // The backends run the shard as windows: host ones in float32 for 16-bit inputs, device
  // ones in the caller's dtype.
  Params probe = local;
  probe.window = {shard.global_seqlen, shard.offset, shard.offset, local.seqlen};
  const bool widen = device == Device::host;
  if (widen && (probe.dtype == DType::f16 || probe.dtype == DType::bf16)) probe.dtype = DType::f32;
  return select_backend(probe, dir, backend, chosen);
}

// One call: checks, plan, exchange, local and remote parts, outcome.
class Call {
 public:
  Call(const Params& local, const ShardInfo& shard, Communicator& comm, const Options& options,
       Direction dir)
      : local_(local), shard_(shard), comm_(comm), options_(options), dir_(dir) {}

  Status run() {
    if (comm_.device() != Device::host) return run_on_device();
    const auto start = Clock::now();
    const Backend* chosen = nullptr;
    const Status checks =
        check_arguments(local_, shard_, dir_, options_.backend, Device::host, &chosen);
    if (chosen) stats_.backend = chosen->name();
    Status s =
        agree_on_configuration(local_, shard_, dir_, method(), checks, comm_, &shards_, &traffic_);
    stats_.exchange_seconds += seconds_since(start);
    if (s.ok()) {
      s = dir_ == Direction::forward ? run_forward() : run_backward();
      // A runtime error in a collective leaves the group unusable: report it as it is.
      if (!s.ok() && s.code() == StatusCode::runtime_error && communication_failed_) return s;
      const auto agree = Clock::now();
      s = agree_on_outcome(s, comm_, &traffic_);
      stats_.exchange_seconds += seconds_since(agree);
    }
    stats_.bytes_sent = traffic_.sent;
    stats_.bytes_received = traffic_.received;
    stats_.total_seconds = seconds_since(start);
    if (options_.stats) *options_.stats = stats_;
    return s;
  }

 private:
  // What the ranks must agree on besides the problem: the backend and the exchange budget.
  std::string method() const {
    if (options_.exchange_budget_bytes <= 0) return options_.backend;
    return options_.backend + " exchange_budget=" + std::to_string(options_.exchange_budget_bytes);
  }

  // Device tensors over a device communicator: the same checks and agreement (through host
  // staging buffers), then the plan on the GPU (device/device_call.hpp).
  Status run_on_device() {
#if DILATED_WITH_CUDA
    const auto start = Clock::now();
    DeviceScratch own;  // per-call memory when the caller keeps none
    DeviceScratch& scratch = options_.scratch ? *options_.scratch : own;
    const std::unique_ptr<Communicator> host = host_staging(comm_, scratch);
    const Backend* chosen = nullptr;
    const Status checks =
        check_arguments(local_, shard_, dir_, options_.backend, Device::cuda, &chosen);
    if (chosen) stats_.backend = chosen->name();
    Status s =
        agree_on_configuration(local_, shard_, dir_, method(), checks, *host, &shards_, &traffic_);
    stats_.exchange_seconds += seconds_since(start);
    if (s.ok()) {
      DeviceCall call;
      call.local = &local_;
      call.shards = &shards_;
      call.rank = comm_.rank();
      call.comm = &comm_;
      call.host = host.get();
      call.backend = chosen->name();
      call.stream = options_.stream.handle;
      call.scratch = &scratch;
      call.stats = &stats_;
      call.traffic = &traffic_;
      call.communication_failed = &communication_failed_;
      call.exchange_budget_bytes = options_.exchange_budget_bytes;
      s = dir_ == Direction::forward ? device_forward(call) : device_backward(call);
      if (!s.ok() && s.code() == StatusCode::runtime_error && communication_failed_) return s;
      const auto agree = Clock::now();
      s = agree_on_outcome(s, *host, &traffic_);
      stats_.exchange_seconds += seconds_since(agree);
    }
    stats_.bytes_sent = traffic_.sent;
    stats_.bytes_received = traffic_.received;
    stats_.total_seconds = seconds_since(start);
    if (options_.stats) *options_.stats = stats_;
    return s;
#else
    // Every rank has the same kind of communicator, so every rank returns this.
    return Status::Unsupported(
        "dist: the communicator exchanges device memory, but this build has no CUDA backend");
#endif
  }

  Status exchange(const std::vector<unsigned char>& send, const std::vector<int64_t>& send_bytes,
                  std::vector<unsigned char>* recv, const std::vector<int64_t>& recv_bytes) {
    const auto start = Clock::now();
    const Status s =
        comm_.all_to_all(send.data(), send_bytes.data(), recv->data(), recv_bytes.data());
    stats_.exchange_seconds += seconds_since(start);
    ++stats_.exchanges;
    stats_.largest_receive_bytes =
        std::max(stats_.largest_receive_bytes, static_cast<int64_t>(recv->size()));
    communication_failed_ = !s.ok();
    for (int q = 0; q < comm_.size(); ++q) {
      if (q == comm_.rank()) continue;
      traffic_.sent += send_bytes[static_cast<size_t>(q)];
      traffic_.received += recv_bytes[static_cast<size_t>(q)];
    }
    return s;
  }

  // The shard against its own keys, on another thread while this one exchanges.
  std::future<Status> start_local_part(const Params& work) {
    return std::async(std::launch::async, [this, work] {
      const auto start = Clock::now();
      const Status s = dir_ == Direction::forward ? forward(work, {}, options_.backend)
                                                  : backward(work, {}, options_.backend);
      stats_.local_seconds = seconds_since(start);
      return s;
    });
  }

  RankView view_of(const ExchangePlan& plan, const ShardTensors& tensors) const {
    RankView v;
    v.plan = &plan;
    v.shards = &shards_;
    v.rank = comm_.rank();
    v.caller = &local_;
    v.work = &tensors.params();
    v.backend = options_.backend;
    return v;
  }

  Status exchange_keys(const RankView& view, const MessageLayout& layout,
                       std::vector<unsigned char>* received) {
    std::vector<unsigned char> send;
    pack_keys(view, layout, &send);
    received->resize(static_cast<size_t>(layout.recv_total));
    const Status s = exchange(send, layout.send_bytes, received, layout.recv_bytes);
    const int64_t row_bytes = (local_.head_dim + local_.head_dim_v) * dtype_size(local_.dtype);
    stats_.remote_rows += layout.recv_total / row_bytes;
    return s;
  }

  std::vector<ExchangeStep> steps(const ExchangePlan& plan, int64_t row_bytes) const {
    return exchange_steps(plan, shards_, comm_.rank(), local_.batch, row_bytes,
                          options_.exchange_budget_bytes);
  }

  Status run_forward() {
    const ExchangePlan plan = plan_exchange(local_, shards_);
    ShardTensors tensors(local_, shard_.global_seqlen, shard_.offset, Direction::forward);
    const RankView view = view_of(plan, tensors);
    const int64_t row_bytes = (local_.head_dim + local_.head_dim_v) * dtype_size(local_.dtype);
    std::future<Status> local_part = start_local_part(tensors.params());
    Status local;
    bool local_done = false;
    for (const ExchangeStep& step : steps(plan, row_bytes)) {
      const MessageLayout layout = layout_messages(view, row_bytes, false, step.to, step.from);
      std::vector<unsigned char> received;
      const Status exchanged = exchange_keys(view, layout, &received);
      if (!local_done) {
        local = local_part.get();
        local_done = true;
      }
      if (!exchanged.ok()) return exchanged;
      // After a failure the ring's remaining steps still exchange (every rank reaches the same
      // collectives); their keys are ignored.
      if (!local.ok()) continue;
      const auto start = Clock::now();
      local = remote_forward(view, layout, received, &stats_.remote_problems);
      stats_.remote_seconds += seconds_since(start);
    }
    if (!local_done) local = local_part.get();
    if (local.ok()) tensors.store_outputs(Direction::forward);
    return local;
  }

  Status run_backward() {
    const ExchangePlan plan = plan_exchange(local_, shards_);
    ShardTensors tensors(local_, shard_.global_seqlen, shard_.offset, Direction::backward);
    const RankView view = view_of(plan, tensors);
    const int64_t row_bytes = (local_.head_dim + local_.head_dim_v) * dtype_size(local_.dtype);
    const int64_t gradient_bytes =
        (local_.head_dim + local_.head_dim_v) * dtype_size(tensors.compute_type());
    std::future<Status> local_part = start_local_part(tensors.params());
    Status local;
    bool local_done = false;
    for (const ExchangeStep& step : steps(plan, row_bytes)) {
      const MessageLayout layout = layout_messages(view, row_bytes, false, step.to, step.from);
      // Gradients of this step's received rows go back to their sender; those of this rank's
      // rows come from the rank they were sent to.
      const MessageLayout reverse = layout_messages(view, gradient_bytes, true, step.from, step.to);
      std::vector<unsigned char> received;
      const Status exchanged = exchange_keys(view, layout, &received);
      if (!local_done) {
        local = local_part.get();
        local_done = true;
      }
      if (!exchanged.ok()) return exchanged;

      // The gradients of other ranks' keys go back even when this rank failed (zeros then),
      // so that every rank reaches the same collectives.
      const auto start = Clock::now();
      std::vector<unsigned char> returned(static_cast<size_t>(reverse.send_total), 0);
      if (local.ok()) {
        local =
            remote_backward(view, layout, received, reverse, &returned, &stats_.remote_problems);
      }
      stats_.remote_seconds += seconds_since(start);
      std::vector<unsigned char> gradients(static_cast<size_t>(reverse.recv_total));
      if (Status s = exchange(returned, reverse.send_bytes, &gradients, reverse.recv_bytes);
          !s.ok()) {
        return s;
      }
      if (!local.ok()) continue;
      const auto add = Clock::now();
      add_returned_gradients(view, reverse, gradients);
      stats_.remote_seconds += seconds_since(add);
    }
    if (!local_done) local = local_part.get();
    if (local.ok()) tensors.store_outputs(Direction::backward);
    return local;
  }

  const Params& local_;
  const ShardInfo& shard_;
  Communicator& comm_;
  const Options& options_;
  const Direction dir_;
  ShardTable shards_;
  Traffic traffic_;
  Stats stats_;
  bool communication_failed_ = false;
};

}  // namespace

Status forward(const Params& local, const ShardInfo& shard, Communicator& comm,
               const Options& options) {
  return Call(local, shard, comm, options, Direction::forward).run();
}

Status backward(const Params& local, const ShardInfo& shard, Communicator& comm,
                const Options& options) {
  return Call(local, shard, comm, options, Direction::backward).run();
}

int64_t even_shard_rows(int64_t n, int rank, int size) {
  return n / size + (rank < n % size ? 1 : 0);
}

ShardInfo even_shard(int64_t n, int rank, int size) {
  ShardInfo s;
  s.global_seqlen = n;
  const int64_t base = n / size, extra = n % size;
  s.offset = rank * base + (rank < extra ? rank : extra);
  return s;
}

Status all_reduce_sum(Communicator& comm, double* values, int64_t count) {
  std::vector<double> all(static_cast<size_t>(count * comm.size()));
  const Status s =
      comm.all_gather(values, count * static_cast<int64_t>(sizeof(double)), all.data());
  if (!s.ok()) return s;
  for (int64_t i = 0; i < count; ++i) {
    double sum = 0;
    for (int q = 0; q < comm.size(); ++q) sum += all[static_cast<size_t>(q * count + i)];
    values[i] = sum;
  }
  return {};
}

}  // namespace dilated::dist
