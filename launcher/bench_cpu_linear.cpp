// moe-bench-cpu-linear: the CPU backend's two linear paths, a weight streamed once
// (linear_streamed) and OpenBLAS's sgemm (linear_blas), at each row count, on the shapes of a
// Mixtral-style layer; each printed beside its bound: the weight's bytes over the measured copy
// bandwidth (what a row count that small cannot beat) and the GEMM's FLOPs at the sgemm rate of
// the largest row count. linear() takes the streamed path at every row count (a row's bits must
// not depend on the batch); the last column is what that costs against the sgemm.
//   build/bin/moe-bench-cpu-linear --n 7168 --k 1024 --threads 2
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "launcher/cli_parse.h"

namespace {

using Clock = std::chrono::steady_clock;

template <class F>
double median_seconds(int warmup, int repeats, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < warmup + repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= warmup) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int run(int argc, char** argv) {
  int n = 7168, k = 1024, threads = 1, warmup = 3, repeats = 15;
  std::string rows = "1,2,4,8,12,16,24,32,64,128";
  std::string dtype = "f32";
  CLI::App app{"moe-bench-cpu-linear: streamed weight vs OpenBLAS sgemm per row count"};
  app.option_defaults()->always_capture_default();
  app.add_option("--n", n, "weight rows (output features); Mixtral-style w13 at hidden 1024: 7168");
  app.add_option("--k", k, "weight columns (input features)");
  app.add_option("--rows", rows, "row counts of x to time, comma-separated");
  app.add_option("--threads", threads, "threads of both paths");
  app.add_option("--dtype", dtype, "weight dtype: f32, or bf16 (stored as bf16, widened where read)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--warmup", warmup, "untimed repetitions first");
  app.add_option("--repeats", repeats, "timed repetitions (the median is printed)");
  if (const auto code = moe::launcher::parse_command_line(app, argc, argv, true)) return *code;
  moe::kernels::cpu::set_threads(threads);

  std::vector<int> ms;
  std::stringstream ss(rows);
  for (std::string tok; std::getline(ss, tok, ',');) ms.push_back(std::stoi(tok));
  const int max_m = *std::max_element(ms.begin(), ms.end());
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(size_t(n) * k), x(size_t(max_m) * k), out(size_t(max_m) * n);
  for (auto& v : w) v = nd(rng);
  const bool bf16 = dtype == "bf16";
  std::vector<uint16_t> w16(bf16 ? w.size() : 0);
  for (size_t i = 0; i < w16.size(); ++i) w16[i] = moe::f32_to_bf16(w[i]);
  for (auto& v : x) v = nd(rng);
  // The copy bandwidth: the bound of a pass that must read the whole weight.
  std::vector<float> copy(w.size());
  const double t_copy = median_seconds(warmup, repeats, [&] {
    std::memcpy(copy.data(), w.data(), w.size() * sizeof(float));
  });
  const double bw = 2 * double(w.size()) * sizeof(float) / t_copy;  // read + write
  const double bytes = double(w.size()) * (bf16 ? 2 : 4);  // the weight, read once
  moe::kernels::LinearParams p;
  p.x = x.data();
  p.w = bf16 ? moe::kernels::Weight{w16.data(), moe::DType::kBF16, n, k}
              : moe::kernels::Weight{w.data(), moe::DType::kF32, n, k};
  p.out = out.data();
  p.M = max_m;
  const double t_big = median_seconds(warmup, repeats, [&] { moe::kernels::cpu::linear_blas(p); });
  const double peak = 2.0 * max_m * n * k / t_big;
  std::printf("weight [%d, %d] %s (%.1f MB), %d thread(s); copy bandwidth %.1f GB/s, sgemm at %d "
              "rows %.1f GFLOP/s\n", n, k, dtype.c_str(), bytes / 1e6, threads, bw / 1e9, max_m, peak / 1e9);
  std::printf("%6s %14s %14s %14s  %s\n", "rows", "streamed ms", "sgemm ms", "bound ms",
              "streamed / sgemm");
  for (int m : ms) {
    p.M = m;
    const double ts = median_seconds(warmup, repeats, [&] { moe::kernels::cpu::linear_streamed(p); });
    const double tb = median_seconds(warmup, repeats, [&] { moe::kernels::cpu::linear_blas(p); });
    const double bound = std::max(bytes / bw, 2.0 * m * n * k / peak);
    std::printf("%6d %14.3f %14.3f %14.3f  %.2fx\n", m, ts * 1e3, tb * 1e3, bound * 1e3, ts / tb);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-bench-cpu-linear: error: %s\n", e.what());
    return 1;
  }
}
