#include "comm/nccl_library.h"

#include <dlfcn.h>

#include <memory>
#include <mutex>

#include "common/error.h"

namespace moe::comm {

namespace {

constexpr const char* kSoname = "libnccl.so.2";

template <class Fn>
void bind(void* handle, Fn& fn, const char* name) {
  void* sym = dlsym(handle, name);
  if (!sym)
    MOE_THROW(std::string(kSoname) + " has no " + name +
              " (NCCL older than 2.19?): " + (dlerror() ? dlerror() : "not found"));
  fn = reinterpret_cast<Fn>(sym);
}

NcclLibrary load() {
  // RTLD_LOCAL: NCCL's symbols stay out of the global scope, so nothing else binds to them.
  void* handle = dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    MOE_THROW(std::string("cannot load NCCL (") + kSoname + "): " + (why ? why : "not found") +
              "; put the folder that holds it on LD_LIBRARY_PATH, or use transport: mpi");
  }
  NcclLibrary lib{};
  bind(handle, lib.get_unique_id, "ncclGetUniqueId");
  bind(handle, lib.comm_init_rank_config, "ncclCommInitRankConfig");
  bind(handle, lib.comm_get_async_error, "ncclCommGetAsyncError");
  bind(handle, lib.comm_cu_device, "ncclCommCuDevice");
  bind(handle, lib.comm_finalize, "ncclCommFinalize");
  bind(handle, lib.comm_destroy, "ncclCommDestroy");
  bind(handle, lib.comm_abort, "ncclCommAbort");
  bind(handle, lib.group_start, "ncclGroupStart");
  bind(handle, lib.group_end, "ncclGroupEnd");
  bind(handle, lib.send, "ncclSend");
  bind(handle, lib.recv, "ncclRecv");
  bind(handle, lib.get_error_string, "ncclGetErrorString");
  bind(handle, lib.get_last_error, "ncclGetLastError");
  bind(handle, lib.get_version, "ncclGetVersion");
  Dl_info info{};
  lib.path = dladdr(reinterpret_cast<void*>(lib.get_version), &info) && info.dli_fname
                 ? info.dli_fname
                 : kSoname;
  // Never dlclose'd: communicators may be torn down during exit.
  return lib;
}

}  // namespace

std::string NcclLibrary::describe(const char* call, ncclResult_t r, ncclComm_t comm) const {
  const char* last = get_last_error(comm);
  return std::string(call) + " failed: " + get_error_string(r) +
         (last && *last ? std::string(" (") + last + ")" : std::string());
}

const NcclLibrary& nccl_library() {
  // A failed load is not cached: the error is thrown again, with its message, on the next call.
  static std::mutex mu;
  static std::unique_ptr<NcclLibrary> lib;
  std::lock_guard<std::mutex> lock(mu);
  if (!lib) lib = std::make_unique<NcclLibrary>(load());
  return *lib;
}

}  // namespace moe::comm
