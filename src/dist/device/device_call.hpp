// Sequence parallelism on CUDA tensors with a device communicator (NCCL): the host algorithm's
// plan (exchange_plan, layout_messages) run on the GPU. The shard's own part is one windowed
// call of the CUDA backend on the compute stream; the selected k/v rows are packed by a kernel
// and exchanged on the communicator's stream meanwhile (ordered by an event, no host wait in
// between); remote units run as windowed calls and merge into the shard's out and lse with the
// lse rule (float32 arithmetic, in place in the caller's dtype); dk/dv of received rows go back
// and are added by their owner in a fixed order. Built with the CUDA backend only.
#pragma once

#include <memory>

#include "dilated/dist.hpp"
#include "dist/agreement.hpp"
#include "dist/exchange_plan.hpp"

namespace dilated::dist {

// A host-buffer view of a device communicator for the small configuration and outcome
// exchanges: buffers are staged through `scratch` with synchronous copies.
std::unique_ptr<Communicator> host_staging(Communicator& device_comm, DeviceScratch& scratch);

struct DeviceCall {
  const Params* local = nullptr;  // validated, device tensors, agreed by every rank
  const ShardTable* shards = nullptr;
  int rank = 0;
  Communicator* comm = nullptr;  // device communicator
  Communicator* host = nullptr;  // host_staging(*comm): for agreeing on the memory set-up
  std::string backend;           // the backend that computes (a CUDA one)
  void* stream = nullptr;        // cudaStream_t
  DeviceScratch* scratch = nullptr;
  Stats* stats = nullptr;
  Traffic* traffic = nullptr;
  bool* communication_failed = nullptr;  // set when a collective failed (group unusable)
  int64_t exchange_budget_bytes = 0;     // Options::exchange_budget_bytes (the ring)
};

Status device_forward(const DeviceCall& call);
Status device_backward(const DeviceCall& call);

}  // namespace dilated::dist
