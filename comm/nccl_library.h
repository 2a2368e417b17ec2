#pragma once
// NCCL's entry points, loaded with dlopen("libnccl.so.2") the first time a NCCL communicator is
// made, not linked: a run with backend cpu, or cuda with transport mpi, then starts where NCCL is
// not installed (the binaries have no DT_NEEDED entry for it). Only nccl.h's types are used at
// build time.
#include <nccl.h>

#include <string>

namespace moe::comm {

struct NcclLibrary {
  decltype(&::ncclGetUniqueId) get_unique_id;
  decltype(&::ncclCommInitRankConfig) comm_init_rank_config;
  decltype(&::ncclCommGetAsyncError) comm_get_async_error;
  decltype(&::ncclCommCuDevice) comm_cu_device;
  decltype(&::ncclCommFinalize) comm_finalize;
  decltype(&::ncclCommDestroy) comm_destroy;
  decltype(&::ncclCommAbort) comm_abort;
  decltype(&::ncclGroupStart) group_start;
  decltype(&::ncclGroupEnd) group_end;
  decltype(&::ncclSend) send;
  decltype(&::ncclRecv) recv;
  decltype(&::ncclGetErrorString) get_error_string;
  decltype(&::ncclGetLastError) get_last_error;
  decltype(&::ncclGetVersion) get_version;
  std::string path;  // where the loader found it (dladdr), for the log

  // "ncclCommInitRankConfig failed: unhandled system error (<NCCL's last error>)".
  std::string describe(const char* call, ncclResult_t r, ncclComm_t comm = nullptr) const;
};

// Loads NCCL once (thread-safe) and returns its entry points. Throws moe::Error naming
// libnccl.so.2 and dlerror() where it cannot be loaded, or the first symbol it lacks; the
// folder that holds it goes on LD_LIBRARY_PATH (scripts/device_run.sh searches the usual ones).
const NcclLibrary& nccl_library();

// What nccl_library() does, for any library: loads it and binds every entry point. Not cached.
NcclLibrary load_nccl(const std::string& soname);

}  // namespace moe::comm
