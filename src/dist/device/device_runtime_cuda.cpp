#include <cuda_runtime.h>

#include <string>

#include "dist/device/device_runtime.hpp"

namespace dilated::dist::rt {
namespace {

Status check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return {};
  return Status::Runtime(std::string("dist: ") + what + ": " + cudaGetErrorString(e));
}
cudaStream_t stream_of(void* s) {
  return static_cast<cudaStream_t>(s);
}
cudaEvent_t event_of(Event e) {
  return static_cast<cudaEvent_t>(e);
}

}  // namespace

Event event_create() {
  cudaEvent_t e = nullptr;
  return cudaEventCreate(&e) == cudaSuccess ? e : nullptr;
}
void event_destroy(Event e) {
  if (e) cudaEventDestroy(event_of(e));
}
Status event_record(Event e, void* stream) {
  return check(cudaEventRecord(event_of(e), stream_of(stream)), "cudaEventRecord");
}
Status stream_wait_event(void* stream, Event e) {
  return check(cudaStreamWaitEvent(stream_of(stream), event_of(e), 0), "cudaStreamWaitEvent");
}
Status event_synchronize(Event e) {
  return check(cudaEventSynchronize(event_of(e)), "cudaEventSynchronize");
}
double event_seconds(Event from, Event to) {
  float ms = 0;
  if (cudaEventElapsedTime(&ms, event_of(from), event_of(to)) != cudaSuccess) {
    cudaGetLastError();  // not an error of the computation
    return 0;
  }
  return ms / 1000.0;
}
Status stream_synchronize(void* stream) {
  return check(cudaStreamSynchronize(stream_of(stream)), "cudaStreamSynchronize");
}
Status memset_async(void* device, int64_t bytes, void* stream) {
  if (bytes == 0) return {};
  return check(cudaMemsetAsync(device, 0, static_cast<size_t>(bytes), stream_of(stream)),
               "cudaMemsetAsync");
}
Status copy_to_device(void* device, const void* host, int64_t bytes) {
  // A copy from pageable memory may return before the data lands: wait for the device.
  if (Status s = check(cudaMemcpy(device, host, static_cast<size_t>(bytes), cudaMemcpyHostToDevice),
                       "cudaMemcpy");
      !s.ok()) {
    return s;
  }
  return check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}
Status copy_to_host(void* host, const void* device, int64_t bytes) {
  return check(cudaMemcpy(host, device, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost),
               "cudaMemcpy");
}

}  // namespace dilated::dist::rt
