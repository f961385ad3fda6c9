// Sequence parallelism (DESIGN 2.7; docs/design.md "Sequence parallelism"): N is split into P
// contiguous shards, one per rank. Every rank holds the rows of its shard of q, k, v (and of
// out, lse, dout and the gradients) for every batch entry and head, and receives exactly its
// rows of the single-device result. Ranks exchange only the selected k/v rows of segments that
// cross a shard boundary, never all of N.
#pragma once

#include <cstdint>
#include <string>

#include "dilated/dilated.hpp"

namespace dilated::dist {

// How the ranks of one group talk. The library provides MPI (host buffers,
// dilated/dist_mpi.hpp) and NCCL (device buffers, dilated/dist_nccl.hpp); the Python package
// wraps a torch.distributed process group. Every method but rank(), size(), device() and the
// timeout accessors is collective: all ranks call it, in the same order.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Where the buffers handed to the collectives live.
  virtual Device device() const = 0;
  // For device communicators: the stream (cudaStream_t) its collectives run on, so that a
  // caller can order them after its own work with an event instead of a host wait. Null when
  // there is none (host communicators).
  virtual void* device_stream() const { return nullptr; }

  // Rank p sends send_bytes[q] bytes to every rank q (the blocks lie one after another in rank
  // order in `send`) and receives recv_bytes[q] bytes from every q into `recv` (same layout).
  // Sizes must agree pairwise: p's send_bytes[q] is q's recv_bytes[p].
  virtual Status all_to_all(const void* send, const int64_t* send_bytes, void* recv,
                            const int64_t* recv_bytes) = 0;
  // Every rank contributes `bytes` bytes; `recv` receives size() blocks in rank order.
  virtual Status all_gather(const void* send, int64_t bytes, void* recv) = 0;
  virtual Status barrier() = 0;

  // Seconds a collective waits for the other ranks before it fails with a runtime error that
  // says whom it waited for (a rank died, or took another path). After such an error the group
  // is unusable: end it with abort().
  virtual void set_timeout(double seconds) = 0;
  virtual double timeout() const = 0;
  // Ends every rank of the group (MPI_Abort; ncclCommAbort and exit): for errors that leave
  // ranks waiting on each other.
  [[noreturn]] virtual void abort(const std::string& reason) = 0;
};

// The default timeout of the library's communicators, in seconds.
inline constexpr double kDefaultTimeoutSeconds = 300.0;

// Element-wise sums over the ranks of a short vector (statistics), through all_gather: every
// rank gets the same result, summed in rank order.
Status all_reduce_sum(Communicator& comm, double* values, int64_t count);

// This rank's place in the sequence: local row t of every tensor is global position
// offset + t. Shards must tile [0, global_seqlen) in rank order (rank 0 first), at least one
// row each; forward() checks that on every rank.
struct ShardInfo {
  int64_t global_seqlen = 0;
  int64_t offset = 0;
};

// An even split of n tokens over `size` ranks: contiguous, the first n % size ranks one longer.
int64_t even_shard_rows(int64_t n, int rank, int size);
ShardInfo even_shard(int64_t n, int rank, int size);

// What one call did on this rank.
struct Stats {
  const char* backend = "";  // the backend that computed (Backend::name())
  int64_t bytes_sent = 0;    // every exchange of the call (configuration check included)
  int64_t bytes_received = 0;
  int64_t remote_rows = 0;            // k/v rows received (per kv head and batch entry)
  int64_t exchanges = 0;              // all_to_all calls of k/v rows and their gradients
  int64_t largest_receive_bytes = 0;  // the most k/v (or gradient) bytes one exchange received
  int64_t remote_problems = 0;        // calls of the backend on remote keys
  double exchange_seconds = 0;        // waiting in collectives (overlapping the local part)
  double local_seconds = 0;           // the shard against its own keys
  double remote_seconds = 0;          // the shard against the other ranks' keys, and the merge
  double total_seconds = 0;
};

// Device memory that one rank's sequence-parallel calls on device tensors reuse: it grows to
// the largest call's need and stays, so that calls after the first allocate nothing. One per
// rank, used by one call at a time; freed on destruction (on the device that allocated it).
class DeviceScratch {
 public:
  // Memory from `memory`'s device services (null: the CUDA backend's).
  explicit DeviceScratch(const Backend* memory = nullptr);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  // At least `bytes` bytes of device memory (contents undefined); earlier pointers die.
  Status reserve(int64_t bytes, void** ptr);
  int64_t capacity() const { return bytes_; }

 private:
  const Backend* memory_;
  void* data_ = nullptr;
  int64_t bytes_ = 0;
};

struct Options {
  // A backend that runs sequence windows on the tensors' device ("auto": the first one).
  std::string backend = "auto";
  Stats* stats = nullptr;  // filled when given
  // Device tensors: the compute stream (cudaStream_t; null = the default stream). The call
  // returns when its results are complete.
  Stream stream;
  // Device tensors: memory reused between calls; without it each call allocates its own.
  DeviceScratch* scratch = nullptr;
  // Bytes of other ranks' k/v rows a rank may hold at once (0: no limit). When the one-shot
  // exchange would give some rank more, the call runs as a ring instead (issue 6): P - 1
  // steps, step s sending to rank + s and receiving from rank - s (mod P), each step's keys
  // merged (lse rule) and their gradients returned before the next step; same results. Must
  // be the same on every rank (checked).
  int64_t exchange_budget_bytes = 0;
};

// `local` describes this rank's shard: its tensors hold local rows (seqlen = this rank's row
// count), every other field is the layer's (the same on every rank). Host tensors with a host
// communicator (MPI), or CUDA tensors with a device communicator (NCCL; the current CUDA
// device is the rank's); no varlen. forward writes out and lse (lse may be null), backward reads
// out, lse and dout and writes dq, dk, dv, like dilated::forward / dilated::backward.
//
// Every rank first checks the same configuration (sizes, patterns, mode, dtype, causal,
// scale, backend, direction, global length and the shard layout): when a rank differs or its
// own arguments are invalid, every rank returns the same invalid-argument error. A rank that
// does not take part makes the others fail with a runtime error after the communicator's
// timeout. Errors on one rank while computing reach all ranks (runtime error, same message).
Status forward(const Params& local, const ShardInfo& shard, Communicator& comm,
               const Options& options = {});
Status backward(const Params& local, const ShardInfo& shard, Communicator& comm,
                const Options& options = {});

}  // namespace dilated::dist
