// moe-bench-experts: the expert FFNs of one MoE layer on one GPU (8 experts at Mixtral 8x7B's
// sizes by default), for 1k to 16k routed rows split evenly over the experts, through the very
// code the runtime runs (runtime/expert_ffn: per expert a bf16 GEMM with w1|w3, silu*mul, a bf16
// GEMM with w2, fp32 accumulation), printed beside its bound measured in the same run: one dense
// cuBLAS GEMM of the same FLOPs (rows x hidden times hidden x 3 intermediate). Target: >= 85%.
//   build/bin/moe-bench-experts --rows 1024,2048,4096,8192,16384
#include <CLI/CLI.hpp>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/error.h"
#include "common/log.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda/cuda_ops.h"
#include "launcher/bench_roofline.h"
#include "launcher/cli_parse.h"
#include "launcher/rank_main.h"
#include "runtime/expert_ffn.h"

namespace {

using namespace moe;

int run(int argc, char** argv, comm::MpiContext&) {
  int experts = 8, hidden = 4096, intermediate = 14336, warmup = 3, repeats = 20, device = 0;
  std::vector<int> rows = {1024, 2048, 4096, 8192, 16384};
  CLI::App app{"moe-bench-experts: expert FFN TFLOP/s against one dense cuBLAS GEMM of the same "
               "FLOPs, on one GPU"};
  app.option_defaults()->always_capture_default();
  app.add_option("--experts", experts, "experts in the layer (rows split evenly over them)");
  app.add_option("--hidden", hidden, "hidden size (Mixtral 8x7B: 4096)");
  app.add_option("--intermediate", intermediate, "expert FFN width (Mixtral 8x7B: 14336)");
  app.add_option("--rows", rows, "routed rows (token-expert pairs) per measurement")->delimiter(',');
  app.add_option("--warmup", warmup, "untimed repetitions first");
  app.add_option("--repeats", repeats, "timed repetitions (the median is printed)");
  app.add_option("--device", device, "CUDA device");
  if (const auto code = launcher::parse_command_line(app, argc, argv, true)) return *code;
  if (experts < 1 || hidden < 1 || intermediate < 1 || rows.empty() || repeats < 1)
    throw InputError("--experts, --hidden, --intermediate, --repeats must be >= 1 and --rows "
                     "non-empty");

  auto ops = kernels::make_cuda_ops(device, DType::kBF16);
  cudaStream_t stream = kernels::cuda_stream(*ops);
  const int64_t H = hidden, I = intermediate;
  const int max_rows = *std::max_element(rows.begin(), rows.end());

  // The experts' weights, synthetic (as the runtime's synthetic mode makes them).
  std::vector<kernels::Buffer> storage(2 * size_t(experts));
  std::vector<kernels::Weight> w13, w2;
  for (int e = 0; e < experts; ++e) {
    w13.push_back(ops->random_weight(storage[2 * e], 2 * I, H, 100 + e, 0.0346f, 0.0f));
    w2.push_back(ops->random_weight(storage[2 * e + 1], H, I, 200 + e, 0.0346f, 0.0f));
  }
  const int64_t chunk = std::min<int64_t>(max_rows, runtime::kExpertChunkRows);
  kernels::Buffer x = ops->alloc(size_t(max_rows) * H * 4);  // [rows, H] fp32
  kernels::Buffer gate_up = ops->alloc(size_t(chunk) * 2 * I * 4);
  kernels::Buffer act = ops->alloc(size_t(chunk) * I * 4);
  kernels::Buffer y = ops->alloc(size_t(max_rows) * H * 4);
  kernels::cuda::random_fill(x.data(), DType::kF32, int64_t(max_rows) * H, 7, 1.0f, 0.0f, stream);
  ops->reserve_linear_input(chunk * std::max(H, I));

  // The dense bound: [rows, H] x [H, 3I], bf16 in, fp32 out, fp32 accumulation.
  cublasHandle_t cublas;
  CUBLAS_CHECK(cublasCreate(&cublas));
  CUBLAS_CHECK(cublasSetStream(cublas, stream));
  kernels::Buffer dx = ops->alloc(size_t(max_rows) * H * 2);
  kernels::Buffer dw = ops->alloc(size_t(3 * I) * H * 2);
  kernels::Buffer dy = ops->alloc(size_t(max_rows) * 3 * I * 4);
  kernels::cuda::random_fill(dx.data(), DType::kBF16, int64_t(max_rows) * H, 8, 1.0f, 0.0f, stream);
  kernels::cuda::random_fill(dw.data(), DType::kBF16, 3 * I * H, 9, 0.0346f, 0.0f, stream);
  ops->synchronize();

  std::printf("expert FFNs: %d experts, hidden %d, intermediate %d, bf16 weights and GEMM inputs, "
              "fp32 accumulate (device %d)\n",
              experts, hidden, intermediate, device);
  std::printf("%8s %12s %10s %12s %10s %8s\n", "rows", "experts ms", "TFLOP/s", "dense ms",
              "TFLOP/s", "ratio");
  bool all_met = true;
  for (int R : rows) {
    std::vector<int64_t> begin(size_t(experts) + 1, 0);
    for (int e = 0; e < experts; ++e) begin[e + 1] = begin[e] + R / experts + (e < R % experts);
    const runtime::ExpertFfnParams p{&w13, &w2, begin.data(), x.as<float>(), gate_up.as<float>(),
                                     act.as<float>(), y.as<float>(), hidden, intermediate};
    const double t_exp =
        launcher::time_on_stream(stream, warmup, repeats, [&] { runtime::run_expert_ffns(*ops, p); });
    const float alpha = 1.0f, beta = 0.0f;
    const double t_dense = launcher::time_on_stream(stream, warmup, repeats, [&] {
      CUBLAS_CHECK(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(3 * I), R, int(H), &alpha,
                                dw.data(), CUDA_R_16BF, int(H), dx.data(), CUDA_R_16BF, int(H),
                                &beta, dy.data(), CUDA_R_32F, int(3 * I), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
    });
    const double flops = 6.0 * R * double(H) * double(I);
    const double ratio = t_dense / t_exp;
    all_met &= ratio >= 0.85;
    std::printf("%8d %12.3f %10.1f %12.3f %10.1f %7.1f%%\n", R, t_exp, flops / t_exp / 1e9,
                t_dense, flops / t_dense / 1e9, 100.0 * ratio);
  }
  std::printf("target: expert FFNs at >= 85%% of the dense GEMM's TFLOP/s: %s\n",
              all_met ? "met at every size" : "NOT met at every size");
  cublasDestroy(cublas);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return moe::launcher::rank_main(argc, argv, run); }
