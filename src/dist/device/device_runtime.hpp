// The few runtime services the device path of sequence parallelism needs (events, stream
// waits, copies), behind plain functions so that device_call.cpp holds no CUDA API: the
// library implements them with the CUDA runtime (device_runtime_cuda.cpp); tests on hosts
// without GPUs link host versions that run the same plan in host memory. Streams and events
// are opaque pointers (cudaStream_t, cudaEvent_t).
#pragma once

#include <cstdint>

#include "dilated/status.hpp"

namespace dilated::dist::rt {

using Event = void*;

Event event_create();  // null when it failed; later calls then fail with a status
void event_destroy(Event e);
Status event_record(Event e, void* stream);
// `stream` waits for the work recorded in `e` (no host wait).
Status stream_wait_event(void* stream, Event e);
Status event_synchronize(Event e);
// Seconds between two completed events (0 when unknown).
double event_seconds(Event from, Event to);
Status stream_synchronize(void* stream);
Status memset_async(void* device, int64_t bytes, void* stream);
// Synchronous copies; a copy to the device is complete before any stream reads it.
Status copy_to_device(void* device, const void* host, int64_t bytes);
Status copy_to_host(void* host, const void* device, int64_t bytes);

}  // namespace dilated::dist::rt
