// dilated_attention._C.dist_forward / dist_backward: dilated::dist over a communicator whose
// collectives are Python callables (dilated_attention.distributed passes ones that call
// torch.distributed on a process group). The library computes with the GIL released; a
// collective takes it back to call Python.
#include "distributed.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dilated/dist.hpp"

namespace dilated_python {
namespace {

using Bytes = nb::ndarray<nb::numpy, uint8_t, nb::ndim<1>, nb::c_contig>;
using DeviceBytes = nb::ndarray<nb::pytorch, uint8_t, nb::ndim<1>, nb::c_contig>;

// A uint8 view (no copy) of `bytes` bytes at `data`, valid during the callback only: a NumPy
// array of host memory, a torch tensor of CUDA memory on device `device_id`, or None for no
// bytes of device memory (the callable makes an empty tensor).
nb::object view(const void* data, int64_t bytes, dilated::Device device, int device_id) {
  if (device == dilated::Device::cuda) {
    if (bytes == 0) return nb::none();
    const size_t shape[1] = {static_cast<size_t>(bytes)};
    return nb::cast(DeviceBytes(const_cast<void*>(data), 1, shape, nb::handle(), nullptr,
                                nb::dtype<uint8_t>(), nb::device::cuda::value, device_id),
                    nb::rv_policy::reference);
  }
  static unsigned char empty = 0;  // NumPy wants a pointer even for no bytes
  void* p = bytes > 0 ? const_cast<void*>(data) : &empty;
  return nb::cast(Bytes(p, {static_cast<size_t>(bytes)}), nb::rv_policy::reference);
}

std::vector<int64_t> counts(const int64_t* values, int size) {
  return std::vector<int64_t>(values, values + size);
}

class PyCommunicator final : public dilated::dist::Communicator {
 public:
  PyCommunicator(int rank, int size, dilated::Device device, int device_id, nb::object all_to_all,
                 nb::object all_gather, nb::object barrier)
      : rank_(rank),
        size_(size),
        device_(device),
        device_id_(device_id),
        all_to_all_(std::move(all_to_all)),
        all_gather_(std::move(all_gather)),
        barrier_(std::move(barrier)) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // CUDA memory when the tensors are CUDA tensors (the process group is then NCCL's).
  dilated::Device device() const override { return device_; }
  // The process group's own timeout governs (torch.distributed.init_process_group(timeout=));
  // this value is only reported.
  void set_timeout(double seconds) override { timeout_ = seconds; }
  double timeout() const override { return timeout_; }
  [[noreturn]] void abort(const std::string& reason) override {
    std::fprintf(stderr, "dilated_attention.distributed: rank %d ends the process: %s\n", rank_,
                 reason.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }

  dilated::Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                             const int64_t* recv_bytes) override {
    int64_t sent = 0, received = 0;
    for (int q = 0; q < size_; ++q) {
      sent += send_bytes[q];
      received += recv_bytes[q];
    }
    return call("all_to_all", [&] {
      all_to_all_(view(send, sent, device_, device_id_), counts(send_bytes, size_),
                  view(recv, received, device_, device_id_), counts(recv_bytes, size_));
    });
  }

  dilated::Status all_gather(const void* send, int64_t bytes, void* recv) override {
    return call("all_gather", [&] {
      all_gather_(view(send, bytes, device_, device_id_),
                  view(recv, bytes * size_, device_, device_id_));
    });
  }

  dilated::Status barrier() override {
    return call("barrier", [&] { barrier_(); });
  }

 private:
  // A Python exception (a timeout of the process group, a peer that went away) becomes a
  // runtime error; the group is unusable afterwards.
  template <class F>
  dilated::Status call(const char* what, const F& f) {
    if (broken_) {
      return dilated::Status::Runtime(
          "dist (torch.distributed): the process group failed earlier; it is unusable");
    }
    nb::gil_scoped_acquire gil;
    try {
      f();
      return {};
    } catch (nb::python_error& e) {
      broken_ = true;
      return dilated::Status::Runtime(std::string("dist (torch.distributed): rank ") +
                                      std::to_string(rank_) + " in " + what + ": " + e.what());
    }
  }

  int rank_, size_;
  dilated::Device device_;
  int device_id_;
  nb::object all_to_all_, all_gather_, barrier_;
  double timeout_ = dilated::dist::kDefaultTimeoutSeconds;
  bool broken_ = false;
};

void raise_for(const dilated::Status& s) {
  if (s.ok()) return;
  if (s.code() == dilated::StatusCode::invalid_argument) throw nb::value_error(s.message().c_str());
  throw std::runtime_error(s.message());
}

nb::dict stats_dict(const dilated::dist::Stats& s) {
  nb::dict d;
  d["backend"] = s.backend;
  d["bytes_sent"] = s.bytes_sent;
  d["bytes_received"] = s.bytes_received;
  d["remote_rows"] = s.remote_rows;
  d["remote_problems"] = s.remote_problems;
  d["exchanges"] = s.exchanges;
  d["largest_receive_bytes"] = s.largest_receive_bytes;
  d["exchange_seconds"] = s.exchange_seconds;
  d["local_seconds"] = s.local_seconds;
  d["remote_seconds"] = s.remote_seconds;
  d["total_seconds"] = s.total_seconds;
  return d;
}

struct Group {
  int rank;
  int size;
  int64_t global_seqlen;
  int64_t offset;
  nb::object all_to_all, all_gather, barrier;
  int64_t exchange_budget;  // dist::Options::exchange_budget_bytes
  uintptr_t stream;         // CUDA tensors: the compute stream (cudaStream_t), 0 = default
  int device_id;            // CUDA tensors: their device
};

nb::dict run(const dilated::Params& p, dilated::Direction dir, const Group& g,
             const std::string& backend) {
  PyCommunicator comm(g.rank, g.size, p.device, g.device_id, g.all_to_all, g.all_gather, g.barrier);
  dilated::dist::Stats stats;
  dilated::dist::Options options;
  options.backend = backend;
  options.exchange_budget_bytes = g.exchange_budget;
  options.stream.handle = reinterpret_cast<void*>(g.stream);
  options.stats = &stats;
  dilated::Status status;
  {
    nb::gil_scoped_release no_gil;
    const dilated::dist::ShardInfo shard{g.global_seqlen, g.offset};
    status = dir == dilated::Direction::forward ? dilated::dist::forward(p, shard, comm, options)
                                                : dilated::dist::backward(p, shard, comm, options);
  }
  raise_for(status);
  return stats_dict(stats);
}

nb::dict dist_forward(const InArray& q, const InArray& k, const InArray& v, const OutArray& out,
                      const OutArray& lse, std::vector<int64_t> segment_lengths,
                      std::vector<int64_t> dilation_rates, std::string mode, bool causal,
                      std::optional<double> scale, std::string head_offsets, std::string backend,
                      int32_t num_threads, int64_t global_seqlen, int64_t offset, int rank,
                      int size, nb::object all_to_all, nb::object all_gather, nb::object barrier,
                      int64_t exchange_budget, uintptr_t stream, int device_id) {
  const Arrays a = forward_arrays(q, k, v, out, &lse);
  const dilated::Params p = make_params(
      a, dilated_options(std::move(segment_lengths), std::move(dilation_rates), std::move(mode),
                         causal, scale, std::move(head_offsets), num_threads));
  return run(p, dilated::Direction::forward,
             {rank, size, global_seqlen, offset, std::move(all_to_all), std::move(all_gather),
              std::move(barrier), exchange_budget, stream, device_id},
             backend);
}

nb::dict dist_backward(const InArray& dout, const InArray& q, const InArray& k, const InArray& v,
                       const OutArray& out, const OutArray& lse, const OutArray& dq,
                       const OutArray& dk, const OutArray& dv, std::vector<int64_t> segment_lengths,
                       std::vector<int64_t> dilation_rates, std::string mode, bool causal,
                       std::optional<double> scale, std::string head_offsets, std::string backend,
                       int32_t num_threads, int64_t global_seqlen, int64_t offset, int rank,
                       int size, nb::object all_to_all, nb::object all_gather, nb::object barrier,
                       int64_t exchange_budget, uintptr_t stream, int device_id) {
  const Arrays a = backward_arrays(dout, q, k, v, out, lse, dq, dk, dv);
  const dilated::Params p = make_params(
      a, dilated_options(std::move(segment_lengths), std::move(dilation_rates), std::move(mode),
                         causal, scale, std::move(head_offsets), num_threads));
  return run(p, dilated::Direction::backward,
             {rank, size, global_seqlen, offset, std::move(all_to_all), std::move(all_gather),
              std::move(barrier), exchange_budget, stream, device_id},
             backend);
}

}  // namespace

void register_distributed(nb::module_& m) {
  using namespace nb::literals;
  m.def("dist_forward", &dist_forward, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "segment_lengths"_a,
        "dilation_rates"_a, "mode"_a, "is_causal"_a, "scale"_a.none(), "head_offsets"_a,
        "backend"_a, "num_threads"_a, "global_seqlen"_a, "offset"_a, "rank"_a, "size"_a,
        "all_to_all"_a, "all_gather"_a, "barrier"_a, "exchange_budget"_a = 0, "stream"_a = 0,
        "device_id"_a = 0,
        "Sequence-parallel forward of this rank's shard (dilated::dist::forward); the "
        "collectives are the given callables. Returns the call's statistics.");
  m.def("dist_backward", &dist_backward, "dout"_a, "q"_a, "k"_a, "v"_a, "out"_a, "lse"_a, "dq"_a,
        "dk"_a, "dv"_a, "segment_lengths"_a, "dilation_rates"_a, "mode"_a, "is_causal"_a,
        "scale"_a.none(), "head_offsets"_a, "backend"_a, "num_threads"_a, "global_seqlen"_a,
        "offset"_a, "rank"_a, "size"_a, "all_to_all"_a, "all_gather"_a, "barrier"_a,
        "exchange_budget"_a = 0, "stream"_a = 0, "device_id"_a = 0,
        "Sequence-parallel backward of this rank's shard (dilated::dist::backward).");
}

}  // namespace dilated_python
