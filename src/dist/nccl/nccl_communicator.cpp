// dilated::dist::Communicator over NCCL: grouped ncclSend/ncclRecv for all_to_all,
// ncclAllGather, a one-float all-reduce for barrier, all on one stream, waited for by polling
// (cudaStreamQuery, ncclCommGetAsyncError) so that a dead peer ends in an error after the
// timeout (ncclCommAbort) instead of a hang. Compiled where CUDA and NCCL exist.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "dilated/dist_nccl.hpp"

namespace dilated::dist {
namespace {

std::string seconds_text(double s) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", s);
  return text;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, bool owned)
      : comm_(comm), stream_(stream), owned_(owned) {
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
  }
  ~NcclCommunicator() override {
    if (scratch_) cudaFree(scratch_);
    if (!owned_) return;
    if (!broken_) {
      // A non-blocking communicator finalises asynchronously before it is destroyed.
      if (ncclCommFinalize(comm_) == ncclInProgress) poll_async();
      ncclCommDestroy(comm_);
    }
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda; }
  void* device_stream() const override { return stream_; }
  void set_timeout(double seconds) override { timeout_ = seconds; }
  double timeout() const override { return timeout_; }

  // Aborts the NCCL communicator (pending work on every rank then fails) and this process.
  [[noreturn]] void abort(const std::string& reason) override {
    if (!broken_) ncclCommAbort(comm_);
    std::fprintf(stderr, "dilated dist (NCCL): rank %d ends the job: %s\n", rank_, reason.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }

  Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                    const int64_t* recv_bytes) override {
    if (broken_) return unusable();
    int64_t send_at = 0, recv_at = 0;
    if (Status s = check(ncclGroupStart(), "all_to_all"); !s.ok()) return s;
    for (int q = 0; q < size_; ++q) {
      const auto* from = static_cast<const unsigned char*>(send) + send_at;
      auto* to = static_cast<unsigned char*>(recv) + recv_at;
      if (q == rank_) {
        if (send_bytes[q] > 0) {
          cudaMemcpyAsync(to, from, static_cast<size_t>(send_bytes[q]), cudaMemcpyDeviceToDevice,
                          stream_);
        }
      } else {
        if (send_bytes[q] > 0) {
          const ncclResult_t r =
              ncclSend(from, static_cast<size_t>(send_bytes[q]), ncclUint8, q, comm_, stream_);
          if (Status s = check(r, "all_to_all"); !s.ok()) return s;
        }
        if (recv_bytes[q] > 0) {
          const ncclResult_t r =
              ncclRecv(to, static_cast<size_t>(recv_bytes[q]), ncclUint8, q, comm_, stream_);
          if (Status s = check(r, "all_to_all"); !s.ok()) return s;
        }
      }
      send_at += send_bytes[q];
      recv_at += recv_bytes[q];
    }
    if (Status s = check(ncclGroupEnd(), "all_to_all"); !s.ok()) return s;
    return wait("all_to_all");
  }

  Status all_gather(const void* send, int64_t bytes, void* recv) override {
    if (broken_) return unusable();
    const ncclResult_t r =
        ncclAllGather(send, recv, static_cast<size_t>(bytes), ncclUint8, comm_, stream_);
    if (Status s = check(r, "all_gather"); !s.ok()) return s;
    return wait("all_gather");
  }

  Status barrier() override {
    if (broken_) return unusable();
    if (!scratch_ && cudaMalloc(&scratch_, sizeof(float)) != cudaSuccess) {
      return Status::Runtime("dist (NCCL): barrier: cudaMalloc of 4 bytes failed");
    }
    const ncclResult_t r = ncclAllReduce(scratch_, scratch_, 1, ncclFloat, ncclSum, comm_, stream_);
    if (Status s = check(r, "barrier"); !s.ok()) return s;
    return wait("barrier");
  }

 private:
  Status unusable() const {
    return Status::Runtime("dist (NCCL): rank " + std::to_string(rank_) +
                           ": the communicator failed earlier (timeout or error); abort the group");
  }

  // ncclInProgress is how a non-blocking communicator says "queued".
  Status check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess || r == ncclInProgress) return {};
    return fail(r, what);
  }

  Status fail(ncclResult_t r, const char* what) {
    broken_ = true;
    ncclCommAbort(comm_);
    return Status::Runtime("dist (NCCL): rank " + std::to_string(rank_) + " in " + what + ": " +
                           ncclGetErrorString(r) + " (" + ncclGetLastError(comm_) + ")");
  }

  // Polls ncclCommGetAsyncError until it leaves ncclInProgress; false on timeout.
  bool poll_async() {
    const auto start = std::chrono::steady_clock::now();
    ncclResult_t state = ncclInProgress;
    while (ncclCommGetAsyncError(comm_, &state) == ncclSuccess && state == ncclInProgress) {
      if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeout_)) {
        return false;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    return true;
  }

  // Waits for the queued collective: until the stream is idle, NCCL reports an error, or the
  // timeout passes (then the communicator is aborted, which releases the stream).
  Status wait(const char* what) {
    const auto start = std::chrono::steady_clock::now();
    int idle_polls = 0;
    for (;;) {
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) return fail(state, what);
      if (state == ncclSuccess) {
        const cudaError_t e = cudaStreamQuery(stream_);
        if (e == cudaSuccess) return {};
        if (e != cudaErrorNotReady) {
          broken_ = true;
          ncclCommAbort(comm_);
          return Status::Runtime("dist (NCCL): rank " + std::to_string(rank_) + " in " + what +
                                 ": " + cudaGetErrorString(e));
        }
      }
      if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeout_)) {
        broken_ = true;
        ncclCommAbort(comm_);
        return Status::Runtime("dist (NCCL): rank " + std::to_string(rank_) + " waited more than " +
                               seconds_text(timeout_) + " s in " + what +
                               " (a rank failed, exited or took another path); the NCCL " +
                               "communicator was aborted");
      }
      if (++idle_polls > 64) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
  double timeout_ = kDefaultTimeoutSeconds;
  bool broken_ = false;
  void* scratch_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(ncclComm_t comm, cudaStream_t stream) {
  return std::make_unique<NcclCommunicator>(comm, stream, false);
}

Status nccl_communicator_from_id(const ncclUniqueId& id, int rank, int size, int device,
                                 double timeout_seconds, std::unique_ptr<Communicator>* out) {
  if (cudaSetDevice(device) != cudaSuccess) {
    return Status::Unavailable("dist (NCCL): CUDA device " + std::to_string(device) +
                               " cannot be used");
  }
  cudaStream_t stream = nullptr;
  // The highest priority: sequence parallelism runs its few-CTA remote units on this stream
  // beside the local part, whose kernels would otherwise be handed the SMs first.
  int least = 0, greatest = 0;
  cudaDeviceGetStreamPriorityRange(&least, &greatest);
  if (cudaStreamCreateWithPriority(&stream, cudaStreamNonBlocking, greatest) != cudaSuccess) {
    return Status::Runtime("dist (NCCL): cudaStreamCreate failed");
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that a timeout can abort even the set-up
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
  const auto start = std::chrono::steady_clock::now();
  while (r == ncclInProgress) {
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeout_seconds)) {
      ncclCommAbort(comm);
      cudaStreamDestroy(stream);
      return Status::Runtime("dist (NCCL): rank " + std::to_string(rank) + " waited more than " +
                             seconds_text(timeout_seconds) +
                             " s for the other ranks to create the communicator");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) {
    cudaStreamDestroy(stream);
    return Status::Runtime(std::string("dist (NCCL): ncclCommInitRankConfig failed: ") +
                           ncclGetErrorString(r));
  }
  auto communicator = std::make_unique<NcclCommunicator>(comm, stream, true);
  communicator->set_timeout(timeout_seconds);
  *out = std::move(communicator);
  return {};
}

}  // namespace dilated::dist
