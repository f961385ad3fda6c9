// The NCCL communicator for dilated::dist (device buffers on one stream). Link the dilated_nccl
// library (built when CMake finds the CUDA toolkit and NCCL).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "dilated/dist.hpp"

namespace dilated::dist {

// A communicator over the caller's NCCL communicator, enqueueing on `stream`. The caller
// keeps `comm` alive and destroys it. Collectives are waited for by polling the stream and
// ncclCommGetAsyncError until the timeout; then the communicator is aborted
// (ncclCommAbort) and the collective fails. A timeout can interrupt a collective that is
// still being set up only if `comm` was created non-blocking (ncclConfig_t::blocking = 0).
// Sequence parallelism also runs its remote units on `stream`, beside the local part on the
// compute stream: give `stream` a higher priority than the compute stream (as
// nccl_communicator_from_id does) so that they are not held back until it drains.
std::unique_ptr<Communicator> make_nccl_communicator(ncclComm_t comm, cudaStream_t stream);

// Creates (and owns) a non-blocking NCCL communicator of `size` ranks on CUDA device
// `device` from `id` (made by ncclGetUniqueId on one rank and shared with the others, for
// example through MPI). Its stream is created too, with the device's highest priority. The
// environment is left as it is: the library never turns NVLink SHARP (NCCL_NVLS_ENABLE) on.
Status nccl_communicator_from_id(const ncclUniqueId& id, int rank, int size, int device,
                                 double timeout_seconds, std::unique_ptr<Communicator>* out);

}  // namespace dilated::dist
