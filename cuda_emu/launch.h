#pragma once
// Kernel launches in the emulation build. The build's rewrite (rewrite.cpp) turns
//   kernel<<<grid, block, shared, stream>>>(args...)
// into
//   kernel % ::moe::emu::launch_config(grid, block, shared, stream)(args...)
// so the launch is an ordinary call: the arguments are converted to the kernel's parameter
// types as a call would, pointer arguments are kept for the device-memory check, and the launch
// goes onto its stream (work_queue.h) to run when the host next waits for that stream. The
// rewrite also makes MOE_EMU_KERNEL_ENTRY(bounds) the first statement of every kernel, which a
// probe at launch time uses to learn the kernel's name, place and __launch_bounds__.
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace moe::emu {

struct PointerArg {
  int index;          // the kernel parameter's position
  const void* value;  // must be null or device (or pinned host) memory
};

struct LaunchRequest {
  dim3 grid, block;
  size_t shared_bytes = 0;  // dynamic shared memory
  cudaStream_t stream = nullptr;
  std::source_location site;        // the launch in the source
  std::vector<PointerArg> pointers;
  std::function<void()> run;        // calls the kernel (one thread's body, or the probe)
};

namespace detail {
void launch(LaunchRequest&& r);
// The kernel's first statement: true in a probe (the kernel's facts are recorded and its body
// skipped), false when a thread runs it.
bool kernel_entry(const char* pretty_name, const char* file, int line, int max_threads) noexcept;
constexpr int launch_bound() { return 0; }
template <class... Rest>
constexpr int launch_bound(int max_threads_per_block, Rest...) {
  return max_threads_per_block;
}
}  // namespace detail

template <class... A>
struct PendingLaunch;

struct LaunchConfig {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  std::source_location site;
  template <class... A>
  PendingLaunch<std::decay_t<A>...> operator()(A&&... args) const;
};

template <class... A>
struct PendingLaunch {
  LaunchConfig config;
  std::tuple<A...> args;
};

template <class... A>
PendingLaunch<std::decay_t<A>...> LaunchConfig::operator()(A&&... args) const {
  return {*this, std::tuple<std::decay_t<A>...>(std::forward<A>(args)...)};
}

inline LaunchConfig launch_config(dim3 grid, dim3 block, size_t shared_bytes = 0,
                                  cudaStream_t stream = nullptr,
                                  std::source_location site = std::source_location::current()) {
  return {grid, block, shared_bytes, stream, site};
}

template <class... P, class... A>
void operator%(void (*kernel)(P...), PendingLaunch<A...>&& pending) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
  using Args = std::tuple<std::decay_t<P>...>;
  auto args = std::make_shared<Args>(std::make_from_tuple<Args>(std::move(pending.args)));
  LaunchRequest r;
  r.grid = pending.config.grid;
  r.block = pending.config.block;
  r.shared_bytes = pending.config.shared_bytes;
  r.stream = pending.config.stream;
  r.site = pending.config.site;
  [&]<size_t... I>(std::index_sequence<I...>) {
    auto keep = [&](int index, const auto& v) {
      using T = std::decay_t<decltype(v)>;
      if constexpr (std::is_pointer_v<T> && std::is_object_v<std::remove_pointer_t<T>>)
        r.pointers.push_back({index, static_cast<const void*>(v)});
    };
    (keep(int(I), std::get<I>(*args)), ...);
  }(std::index_sequence_for<P...>{});
  r.run = [kernel, args] { std::apply(kernel, *args); };
  detail::launch(std::move(r));
}

}  // namespace moe::emu

#define MOE_EMU_KERNEL_ENTRY(...)                                                     \
  if (::moe::emu::detail::kernel_entry(__PRETTY_FUNCTION__, __FILE__, __LINE__,      \
                                       ::moe::emu::detail::launch_bound(__VA_ARGS__))) \
    return;
