// The CUDA runtime API of the emulated device: the calls the project makes, with the toolkit's
// own declarations (cuda_runtime_api.h) and the semantics the CUDA documentation gives them,
// on host memory. Copies and frees are checked against the allocation table (device_memory.h)
// and what breaks a rule is reported (report.h) as well as refused. Work on a stream is queued
// (work_queue.h) and runs when the host waits; a copy to pageable host memory is synchronous,
// and one from pageable host memory takes its bytes at the call, as the documentation says.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu/device.h"
#include "cuda_emu/report.h"

using moe::emu::Device;
using moe::emu::fail;
using moe::emu::Finding;
using moe::emu::report;

namespace {

using Lock = std::lock_guard<std::recursive_mutex>;

const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "host to host";
    case cudaMemcpyHostToDevice: return "host to device";
    case cudaMemcpyDeviceToHost: return "device to host";
    case cudaMemcpyDeviceToDevice: return "device to device";
    default: return "default";
  }
}

bool on_device(const Device& d, const void* p) {
  const moe::emu::Allocation* a = d.memory.find(p);
  return a && a->device;
}
bool pinned(const Device& d, const void* p) {
  const moe::emu::Allocation* a = d.memory.find(p);
  return a && !a->device;
}

// Checks one side of a copy or memset: device memory holding [p, p + bytes) where `device`,
// else memory that is not the device's. "" where it is right.
std::string side_problem(const Device& d, const void* p, size_t bytes, bool device,
                         const char* side) {
  const moe::emu::Allocation* a = d.memory.find(p);
  if (device) {
    if (!a || !a->device)
      return std::string(side) + " " + (a ? "is pinned host memory" : "is not device memory") +
             " (" + d.memory.describe(p) + ")";
    if (!d.memory.find(p, bytes))
      return std::string(side) + ": " + std::to_string(bytes) + " bytes at " +
             d.memory.describe(p) + " run past its end";
    return "";
  }
  if (a && a->device)
    return std::string(side) + " is device memory (" + d.memory.describe(p) + ")";
  if (a && !d.memory.find(p, bytes))
    return std::string(side) + ": " + std::to_string(bytes) + " bytes at " +
           d.memory.describe(p) + " run past its end";
  return "";
}

cudaError_t check_copy(const Device& d, void* dst, const void* src, size_t bytes,
                       cudaMemcpyKind* kind, const char* call) {
  if (*kind == cudaMemcpyDefault)
    *kind = on_device(d, dst) ? (on_device(d, src) ? cudaMemcpyDeviceToDevice
                                                   : cudaMemcpyHostToDevice)
                              : (on_device(d, src) ? cudaMemcpyDeviceToHost
                                                   : cudaMemcpyHostToHost);
  if (*kind < cudaMemcpyHostToHost || *kind > cudaMemcpyDeviceToDevice) {
    report(Finding::kCopy, std::string(call) + ": kind " + std::to_string(int(*kind)));
    return cudaErrorInvalidMemcpyDirection;
  }
  const bool dst_dev = *kind == cudaMemcpyHostToDevice || *kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = *kind == cudaMemcpyDeviceToHost || *kind == cudaMemcpyDeviceToDevice;
  std::string bad = side_problem(d, dst, bytes, dst_dev, "the destination");
  if (bad.empty()) bad = side_problem(d, src, bytes, src_dev, "the source");
  if (bad.empty()) return cudaSuccess;
  report(Finding::kCopy, std::string(call) + " of " + std::to_string(bytes) + " bytes, " +
                             kind_name(*kind) + ": " + bad);
  return cudaErrorInvalidValue;
}

// Work on `stream` (a copy or memset): queued, unless the API makes it synchronous.
uint64_t enqueue(Device& d, cudaStream_t stream, std::function<void()> work) {
  return d.queue.enqueue(stream, std::move(work));
}

cudaError_t memcpy_impl(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                        cudaStream_t stream, bool sync, const char* call) {
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  if (bytes == 0) return cudaSuccess;
  const cudaError_t e = check_copy(d, dst, src, bytes, &kind, call);
  if (e != cudaSuccess) return fail(e);
  // From pageable host memory: the bytes are taken now. To pageable host memory: the call
  // returns once the copy is done.
  const bool src_pageable = kind == cudaMemcpyHostToDevice && !pinned(d, src);
  const bool dst_pageable = kind == cudaMemcpyDeviceToHost && !pinned(d, dst);
  uint64_t seq;
  if (src_pageable) {
    auto bytes_now = std::make_shared<std::vector<char>>(static_cast<const char*>(src),
                                                         static_cast<const char*>(src) + bytes);
    seq = enqueue(d, stream, [dst, bytes_now] {
      std::memcpy(dst, bytes_now->data(), bytes_now->size());
    });
  } else {
    seq = enqueue(d, stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
  }
  if (sync || dst_pageable) return fail(d.run_until(seq));
  return cudaSuccess;
}

cudaError_t memset_impl(void* dst, int value, size_t bytes, cudaStream_t stream,
                        const char* call) {
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  if (bytes == 0) return cudaSuccess;
  const std::string bad = side_problem(d, dst, bytes, true, "the destination");
  if (!bad.empty()) {
    report(Finding::kCopy, std::string(call) + " of " + std::to_string(bytes) + " bytes: " + bad);
    return fail(cudaErrorInvalidValue);
  }
  enqueue(d, stream, [dst, value, bytes] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

}  // namespace

extern "C" {

// ---- device ---------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}

cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (!prop) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  Device& d = Device::get();
  Lock lock(d.mu);
  *prop = d.props;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  const cudaDeviceProp& p = Device::get().props;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = int(p.sharedMemPerBlock); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = int(p.sharedMemPerBlockOptin); break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrL2CacheSize: *value = p.l2CacheSize; break;
    case cudaDevAttrGlobalMemoryBusWidth: *value = p.memoryBusWidth; break;
    default:
      report(Finding::kUnsupported, "cudaDeviceGetAttribute of attribute " +
                                        std::to_string(int(attr)));
      return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* v) {
  if (!v) return fail(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) { return cudaDriverGetVersion(v); }

cudaError_t cudaDeviceSynchronize() {
  Device& d = Device::get();
  Lock lock(d.mu);
  return fail(d.run_until(moe::emu::WorkQueue::kAll));
}

// Destroys the context: queued work is dropped, every allocation freed, the sticky error and
// the last error cleared; the next call starts afresh.
cudaError_t cudaDeviceReset() {
  Device& d = Device::get();
  Lock lock(d.mu);
  d.queue.drop_all();
  d.memory.release_all();
  d.sticky = cudaSuccess;
  moe::emu::last_error() = cudaSuccess;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  if (free_bytes) *free_bytes = d.memory.capacity() - d.memory.used();
  if (total_bytes) *total_bytes = d.memory.capacity();
  return cudaSuccess;
}

// ---- errors ---------------------------------------------------------------------------------
cudaError_t cudaGetLastError() {
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return d.sticky;
  const cudaError_t e = moe::emu::last_error();
  moe::emu::last_error() = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  Device& d = Device::get();
  Lock lock(d.mu);
  return d.sticky ? d.sticky : moe::emu::last_error();
}

// ---- memory ---------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  *p = d.memory.allocate(bytes, true);
  return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void* p) {
  Device& d = Device::get();
  Lock lock(d.mu);
  if (!p) return cudaSuccess;
  // cudaFree waits for the device: queued work may still use the buffer.
  const cudaError_t e = d.run_until(moe::emu::WorkQueue::kAll);
  if (!d.memory.release(p, true)) {
    report(Finding::kFree, "cudaFree of memory that is not a device allocation (" +
                               d.memory.describe(p) + ")");
    return fail(cudaErrorInvalidValue);
  }
  return fail(e);
}

cudaError_t cudaMallocHost(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  *p = d.memory.allocate(bytes, false);
  return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned int) { return cudaMallocHost(p, bytes); }

cudaError_t cudaFreeHost(void* p) {
  Device& d = Device::get();
  Lock lock(d.mu);
  if (!p) return cudaSuccess;
  const cudaError_t e = d.run_until(moe::emu::WorkQueue::kAll);  // queued copies may read it
  if (!d.memory.release(p, false)) {
    report(Finding::kFree, "cudaFreeHost of memory that is not pinned host memory (" +
                               d.memory.describe(p) + ")");
    return fail(cudaErrorInvalidValue);
  }
  return fail(e);
}

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
  if (!attr) return fail(cudaErrorInvalidValue);
  Device& d = Device::get();
  Lock lock(d.mu);
  *attr = cudaPointerAttributes{};
  const moe::emu::Allocation* a = d.memory.find(p);
  attr->type = !a ? cudaMemoryTypeUnregistered : a->device ? cudaMemoryTypeDevice
                                                           : cudaMemoryTypeHost;
  attr->device = 0;
  attr->devicePointer = a ? const_cast<void*>(p) : nullptr;
  attr->hostPointer = a && !a->device ? const_cast<void*>(p) : nullptr;
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return memcpy_impl(dst, src, bytes, kind, nullptr, true, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
  return memcpy_impl(dst, src, bytes, kind, stream, false, "cudaMemcpyAsync");
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  return memset_impl(dst, value, bytes, nullptr, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  return memset_impl(dst, value, bytes, stream, "cudaMemsetAsync");
}

// ---- streams --------------------------------------------------------------------------------
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (!s) return fail(cudaErrorInvalidValue);
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  *s = new CUstream_st{flags};
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* s) {
  return cudaStreamCreateWithFlags(s, cudaStreamDefault);
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  Device& d = Device::get();
  Lock lock(d.mu);
  const uint64_t last = s ? d.queue.last_of(s) : moe::emu::WorkQueue::kAll;
  return fail(d.run_until(last));
}

cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s) return fail(cudaErrorInvalidResourceHandle);
  Device& d = Device::get();
  Lock lock(d.mu);
  const cudaError_t e = d.run_until(d.queue.last_of(s));  // its work completes first
  delete s;
  return fail(e);
}

// One queue for every stream: whatever `event` follows was issued before, so it is done first.
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned int) {
  return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

// ---- events ---------------------------------------------------------------------------------
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (!e) return fail(cudaErrorInvalidValue);
  *e = new CUevent_st{};
  (*e)->flags = flags;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  Device& d = Device::get();
  Lock lock(d.mu);
  if (d.sticky) return fail(d.sticky);
  e->done = false;
  e->seq = d.queue.enqueue(s, [e] {
    e->done = true;
    e->at = std::chrono::steady_clock::now();
  });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  Device& d = Device::get();
  Lock lock(d.mu);
  return fail(d.run_until(e->seq));
}

// Runs the work before the event: a caller polling for it makes progress.
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms || !a || !b) return fail(cudaErrorInvalidResourceHandle);
  if ((a->flags | b->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  if (!a->done || !b->done) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle);
  Device& d = Device::get();
  Lock lock(d.mu);
  (void)d.run_until(e->seq);  // its queued record writes to it
  delete e;
  return cudaSuccess;
}

// ---- launches -------------------------------------------------------------------------------
// Launches go through launch.h; this entry point is reached only with a kernel the emulation
// cannot call (it does not know its parameters), or with none.
cudaError_t cudaLaunchKernel(const void* func, dim3, dim3, void**, size_t, cudaStream_t) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  report(Finding::kUnsupported, "cudaLaunchKernel with a function pointer: launch with <<<>>>");
  return fail(cudaErrorNotSupported);
}

}  // extern "C"
