#include "comm/nccl_library.h"

#include <memory>
#include <mutex>

#include "common/error.h"
#include "common/shared_library.h"

namespace moe::comm {

namespace {

constexpr const char* kSoname = "libnccl.so.2";

template <class Fn>
void bind(void* handle, Fn& fn, const char* name, const std::string& soname) {
  fn = reinterpret_cast<Fn>(dl_symbol(handle, name, soname + " (NCCL older than 2.19?)"));
}

}  // namespace

NcclLibrary load_nccl(const std::string& soname) {
  // RTLD_LOCAL: NCCL's symbols stay out of the global scope, so nothing else binds to them.
  void* handle = dl_open(soname, {}, "NCCL",
                         "put the folder that holds it on LD_LIBRARY_PATH, or use transport: mpi");
  NcclLibrary lib{};
  bind(handle, lib.get_unique_id, "ncclGetUniqueId", soname);
  bind(handle, lib.comm_init_rank_config, "ncclCommInitRankConfig", soname);
  bind(handle, lib.comm_get_async_error, "ncclCommGetAsyncError", soname);
  bind(handle, lib.comm_cu_device, "ncclCommCuDevice", soname);
  bind(handle, lib.comm_finalize, "ncclCommFinalize", soname);
  bind(handle, lib.comm_destroy, "ncclCommDestroy", soname);
  bind(handle, lib.comm_abort, "ncclCommAbort", soname);
  bind(handle, lib.group_start, "ncclGroupStart", soname);
  bind(handle, lib.group_end, "ncclGroupEnd", soname);
  bind(handle, lib.send, "ncclSend", soname);
  bind(handle, lib.recv, "ncclRecv", soname);
  bind(handle, lib.get_error_string, "ncclGetErrorString", soname);
  bind(handle, lib.get_last_error, "ncclGetLastError", soname);
  bind(handle, lib.get_version, "ncclGetVersion", soname);
  lib.path = dl_path_of(reinterpret_cast<const void*>(lib.get_version), soname);
  // Never dlclose'd: communicators may be torn down during exit.
  return lib;
}

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
  if (!lib) lib = std::make_unique<NcclLibrary>(load_nccl(kSoname));
  return *lib;
}

}  // namespace moe::comm
