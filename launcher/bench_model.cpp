// moe-bench-model: the whole model on one GPU, Mixtral 8x7B's shape with synthetic weights (as
// many layers as fit, or --num-layers), each figure printed beside its bound measured in the
// same run:
//   decode : step time at batch 1..256 (one new token for each of B sequences holding --context
//            tokens) against the bytes a step must touch (the shared weights, the experts its
//            tokens were routed to, lm_head, the KV cache read and written) divided by the
//            measured device copy bandwidth. Target: within 1.3x of the bound up to batch 64.
//   prefill: tokens/s for 2k..16k tokens in one step (sequences of --seq-len tokens) against
//            the step's FLOPs divided by the measured bf16 GEMM peak. Target: >= 60% of peak.
// A step is timed from the host around Model::forward, which ends with the logits' copy to the
// host (as the engine's step does), median of --repeats after --warmup.
//   build/bin/moe-bench-model --mode decode --batch 1,8,64,256
//   build/bin/moe-bench-model --mode prefill --tokens 2048,16384
#include <CLI/CLI.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/error.h"
#include "common/log.h"
#include "launcher/bench_roofline.h"
#include "launcher/cli_parse.h"
#include "launcher/rank_main.h"
#include "runtime/checkpoint.h"
#include "runtime/kv_cache.h"
#include "runtime/rank_runtime.h"

namespace {

using namespace moe;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Options {
  std::string config = "configs/synthetic-mixtral-8x7b.yaml";
  std::string mode = "both";
  std::vector<int> batch = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  std::vector<int> tokens = {2048, 4096, 8192, 16384};
  int context = 512, seq_len = 2048, num_layers = 0, warmup = 2, repeats = 5;
  double memory_fraction = 0.9;
  bool phases = false;
  int64_t bound_bytes = int64_t(2) << 30;  // the bandwidth bound's copy
  int bound_gemm = 8192;                    // the GEMM peak's m = n = k
};

// The step of `b` split by phase: `repeats` more steps with timing barriers on (the device's
// queue waited for around every phase, so each holds only its own work; the barriers add their
// syncs, so the total is a little above the untimed step's), printed in ms a step beside each
// phase's share of the timed step.
void print_phases(runtime::RankRuntime& rt, const runtime::StepBatch& b, int repeats,
                  const char* label) {
  runtime::Model& m = rt.model();
  m.set_timing_barriers(true);
  m.reset_times();
  double total = 0;
  std::vector<float> logits;
  for (int s = 0; s < repeats; ++s) {
    rt.backend().ops().synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    m.forward(b, logits);
    total += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  m.set_timing_barriers(false);
  const runtime::MoePhaseTimes& p = m.moe_times();
  const double route = p.route, permute = p.permute, exchange = p.exchange + p.wait;
  const double experts = p.experts, combine = p.combine, attention = m.attention_seconds();
  const double other = std::max(0.0, total - route - permute - exchange - experts - combine -
                                         attention);
  auto ms = [&](double v) { return 1e3 * v / repeats; };
  auto pc = [&](double v) { return 100.0 * v / total; };
  std::printf("  phases of %s (ms a step, %% of the step timed with barriers, %.3f ms):\n", label,
              ms(total));
  std::printf("    route %.3f (%.0f%%)  permute %.3f (%.0f%%)  exchange %.3f (%.0f%%)  "
              "experts %.3f (%.0f%%)  combine %.3f (%.0f%%)  attention %.3f (%.0f%%)  "
              "other %.3f (%.0f%%)\n",
              ms(route), pc(route), ms(permute), pc(permute), ms(exchange), pc(exchange),
              ms(experts), pc(experts), ms(combine), pc(combine), ms(attention), pc(attention),
              ms(other), pc(other));
}

// Bytes of the weights one layer holds with every expert local, and of the layer-independent
// ones (embedding, lm_head, final norm), at 2 bytes an element.
struct LayerBytes {
  double shared_per_layer = 0, expert = 0, fixed = 0, lm_head = 0;
};

LayerBytes layer_bytes(const runtime::ModelConfig& c) {
  const double H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  LayerBytes b;
  b.shared_per_layer =
      2.0 * (2 * H + c.q_dim() * H + 2.0 * c.kv_dim() * H + H * c.q_dim() + c.num_local_experts * H);
  b.expert = 2.0 * 3 * H * I;
  b.fixed = 2.0 * (V * H * (c.tie_word_embeddings ? 1 : 2) + H);
  b.lm_head = 2.0 * V * H;  // read whole every step (the embedding only by the rows asked)
  return b;
}

// The step's workspace at T tokens on one rank (Model and MoeLayer reserve_for), roughly: the
// [T, H]-sized fp32 buffers, the q/attn ones, the expert chunk's intermediate, the logits.
double workspace_bytes(const runtime::ModelConfig& c, int T, int logit_rows) {
  const double H = c.hidden_size, k = c.num_experts_per_tok;
  const double chunk = std::min(double(T) * k, double(runtime::kExpertChunkRows));
  return 4.0 * T * (H * (7 + 2 * k) + 2.0 * c.q_dim() + 2.0 * c.kv_dim()) +
         4.0 * chunk * 3 * c.intermediate_size + 4.0 * logit_rows * c.vocab_size +
         2.0 * std::max(double(T) * H, chunk * c.intermediate_size);
}

// As many layers as fit in `fraction` of the free memory beside the KV cache and workspace.
int layers_that_fit(const runtime::ModelConfig& c, int slots, int max_len, int max_tokens,
                    double fraction) {
  size_t free_b = 0, total_b = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const LayerBytes b = layer_bytes(c);
  const double kv_per_layer = double(runtime::KvCache::bytes_per_slot(1, max_len, c.kv_dim(),
                                                                      DType::kBF16)) * slots;
  const double room = fraction * double(free_b) - b.fixed -
                      workspace_bytes(c, max_tokens, std::min(max_tokens, slots)) -
                      double(1ull << 30);  // cuBLAS, CUDA context growth, fragmentation
  const double per_layer = b.shared_per_layer + c.num_local_experts * b.expert + kv_per_layer;
  return std::max(0, std::min(c.num_hidden_layers, int(room / per_layer)));
}

// Runs one step of `b`, returning its wall time (the logits' download at its end syncs).
double timed_forward(runtime::RankRuntime& rt, const runtime::StepBatch& b) {
  std::vector<float> logits;
  rt.backend().ops().synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  rt.model().forward(b, logits);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Experts with at least one routed token in each layer since `before`, summed over layers.
int64_t experts_touched(const runtime::LoadStats& now, const runtime::LoadStats& before) {
  int64_t n = 0;
  for (int l = 0; l < now.n_layers; ++l)
    for (int e = 0; e < now.n_experts; ++e)
      n += now.token_count(l, e) > before.token_count(l, e);
  return n;
}

void bench_decode(runtime::RankRuntime& rt, const Options& o, double copy_bw) {
  const auto& c = rt.model_config();
  const LayerBytes lb = layer_bytes(c);
  const int L = c.num_hidden_layers;
  std::mt19937 rng(1);
  std::uniform_int_distribution<int32_t> tok(3, c.vocab_size - 1);
  std::printf("\ndecode: one token for each of B sequences of %d context tokens, %d layers\n",
              o.context, L);
  std::printf("%6s %10s %12s %14s %10s %8s\n", "batch", "step ms", "tokens/s", "bytes/step GB",
              "bound ms", "ratio");
  bool met = true;
  for (int B : o.batch) {
    if (B > rt.cache().slots()) {
      std::printf("%6d  skipped: the KV cache holds %d sequences\n", B, rt.cache().slots());
      continue;
    }
    std::vector<int> slots;
    for (int i = 0; i < B; ++i) slots.push_back(rt.cache().acquire());
    // Prefill the contexts, as many sequences a step as the token budget holds.
    runtime::StepBatch b;
    std::vector<float> logits;
    for (int i = 0; i < B; ++i) {
      if (b.size() + o.context > 4096 && b.size() > 0) {
        rt.model().forward(b, logits);
        b.clear();
      }
      for (int p = 0; p < o.context; ++p) {
        b.tokens.push_back(tok(rng));
        b.slot.push_back(slots[size_t(i)]);
        b.pos.push_back(p);
      }
      b.logit_rows.push_back(b.size() - 1);
    }
    if (b.size() > 0) rt.model().forward(b, logits);

    std::vector<double> times, bytes;
    for (int s = 0; s < o.warmup + o.repeats; ++s) {
      b.clear();
      double kv_read = 0;
      for (int i = 0; i < B; ++i) {
        b.tokens.push_back(tok(rng));
        b.slot.push_back(slots[size_t(i)]);
        b.pos.push_back(o.context + s);
        b.logit_rows.push_back(i);
        const int seen = c.sliding_window > 0 ? std::min(o.context + s + 1, c.sliding_window)
                                              : o.context + s + 1;
        kv_read += double(runtime::KvCache::bytes_per_slot(L, seen, c.kv_dim(), DType::kBF16));
      }
      const runtime::LoadStats before = rt.stats();
      const double t = timed_forward(rt, b);
      if (s < o.warmup) continue;
      const double kv_write = double(B) * runtime::KvCache::bytes_per_slot(L, 1, c.kv_dim(),
                                                                          DType::kBF16);
      bytes.push_back(lb.shared_per_layer * L + lb.lm_head +
                      double(experts_touched(rt.stats(), before)) * lb.expert + kv_read +
                      kv_write);
      times.push_back(t);
    }
    const double t = median(times), by = median(bytes), bound = by / copy_bw;
    if (B <= 64) met &= t <= 1.3 * bound;
    std::printf("%6d %10.3f %12.0f %14.3f %10.3f %7.2fx\n", B, t * 1e3, B / t, by / 1e9,
                bound * 1e3, t / bound);
    if (o.phases) print_phases(rt, b, o.repeats, ("decode batch " + std::to_string(B)).c_str());
    for (int sl : slots) rt.cache().release(sl);
  }
  std::printf("target: decode step within 1.3x of the bandwidth bound up to batch 64: %s\n",
              met ? "met" : "NOT met");
}

void bench_prefill(runtime::RankRuntime& rt, const Options& o, double gemm_peak) {
  const auto& c = rt.model_config();
  const int L = c.num_hidden_layers;
  std::mt19937 rng(2);
  std::uniform_int_distribution<int32_t> tok(3, c.vocab_size - 1);
  std::printf("\nprefill: T tokens in one step, sequences of %d tokens, %d layers\n", o.seq_len,
              L);
  std::printf("%7s %10s %12s %10s %12s\n", "tokens", "step ms", "tokens/s", "TFLOP/s",
              "of GEMM peak");
  bool met = true;
  for (int T : o.tokens) {
    const int n_seq = std::max(1, T / o.seq_len);
    if (n_seq > rt.cache().slots()) {
      std::printf("%7d  skipped: the KV cache holds %d sequences\n", T, rt.cache().slots());
      continue;
    }
    runtime::StepBatch b;
    double attn_flops = 0;
    std::vector<int> slots;
    for (int i = 0; i < n_seq; ++i) {
      slots.push_back(rt.cache().acquire());
      const int len = std::min(o.seq_len, T - i * o.seq_len);
      for (int p = 0; p < len; ++p) {
        b.tokens.push_back(tok(rng));
        b.slot.push_back(slots.back());
        b.pos.push_back(p);
        const int keys = c.sliding_window > 0 ? std::min(p + 1, c.sliding_window) : p + 1;
        attn_flops += 4.0 * keys * c.q_dim();  // q.k and p.v, 2 FLOPs a multiply-add
      }
      b.logit_rows.push_back(b.size() - 1);
    }
    const double H = c.hidden_size;
    const double dense_per_token =
        2.0 * (c.q_dim() * H + 2.0 * c.kv_dim() * H + H * c.q_dim() + c.num_local_experts * H) +
        c.num_experts_per_tok * 6.0 * H * c.intermediate_size;
    const double flops = L * (double(b.size()) * dense_per_token + attn_flops) +
                         n_seq * 2.0 * c.vocab_size * H;
    std::vector<double> times;
    for (int s = 0; s < o.warmup + o.repeats; ++s) {
      const double t = timed_forward(rt, b);
      if (s >= o.warmup) times.push_back(t);
    }
    const double t = median(times), rate = flops / t;
    met &= rate >= 0.6 * gemm_peak;
    std::printf("%7d %10.2f %12.0f %10.1f %11.1f%%\n", b.size(), t * 1e3, b.size() / t,
                rate / 1e12, 100.0 * rate / gemm_peak);
    if (o.phases) print_phases(rt, b, o.repeats, ("prefill of " + std::to_string(T)).c_str());
    for (int sl : slots) rt.cache().release(sl);
  }
  std::printf("target: prefill at >= 60%% of the GEMM peak: %s\n", met ? "met" : "NOT met");
}

int run(int argc, char** argv, comm::MpiContext& mpi) {
  Options o;
  std::string log_level = "warn";
  CLI::App app{"moe-bench-model: decode and prefill of a Mixtral-shaped model on one GPU, each "
               "beside its bound measured in the same run"};
  app.option_defaults()->always_capture_default();
  app.add_option("--config", o.config, "run config (synthetic weights, backend cuda)");
  app.add_option("--mode", o.mode, "decode, prefill or both")
      ->check(CLI::IsMember({"decode", "prefill", "both"}));
  app.add_option("--batch", o.batch, "decode batch sizes")->delimiter(',');
  app.add_option("--context", o.context, "tokens already in each decoding sequence's KV cache");
  app.add_option("--tokens", o.tokens, "prefill tokens per step")->delimiter(',');
  app.add_option("--seq-len", o.seq_len, "prefill sequence length (tokens split into sequences)");
  app.add_option("--num-layers", o.num_layers, "layers (0: as many as fit)");
  app.add_option("--memory-fraction", o.memory_fraction,
                 "share of the free GPU memory the layers, KV cache and workspace may take");
  app.add_option("--warmup", o.warmup, "untimed steps first");
  app.add_option("--repeats", o.repeats, "timed steps (the median is printed)");
  app.add_flag("--phases", o.phases,
               "after each size, its step split by phase (route, permute, exchange, experts, "
               "combine, attention), measured with timing barriers");
  app.add_option("--bound-bytes", o.bound_bytes,
                 "bytes of the device copy that measures the bandwidth bound (2 GiB: past L2)");
  app.add_option("--bound-gemm", o.bound_gemm,
                 "m = n = k of the cuBLAS GEMM that measures the bf16 peak");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (const auto code = launcher::parse_command_line(app, argc, argv, true)) return *code;
  set_log_level(log_level);
  if (mpi.world_size() != 1)
    throw InputError("moe-bench-model runs one rank on one GPU (got " +
                     std::to_string(mpi.world_size()) + " ranks)");
  if (o.batch.empty() || o.tokens.empty() || o.context < 1 || o.seq_len < 1 || o.repeats < 1)
    throw InputError("--batch and --tokens need values; --context, --seq-len, --repeats >= 1");

  runtime::RunConfig run = runtime::RunConfig::from_yaml_file(o.config);
  run.backend = "cuda";
  run.synthetic = true;
  run.transport = "mpi";  // one rank: nothing crosses
  const bool decode = o.mode != "prefill", prefill = o.mode != "decode";
  const int max_batch = decode ? *std::max_element(o.batch.begin(), o.batch.end()) : 0;
  const int max_tokens = prefill ? *std::max_element(o.tokens.begin(), o.tokens.end()) : 0;
  run.max_seqs = std::max(max_batch, prefill ? (max_tokens + o.seq_len - 1) / o.seq_len : 0);
  run.max_seq_len = std::max(decode ? o.context + o.warmup + o.repeats + 1 : 0,
                             prefill ? o.seq_len : 0);
  run.max_tokens_per_step = std::max({max_batch, max_tokens, 4096});
  run.gpu_memory_utilization = 0.98;  // the layer count below leaves the headroom

  const runtime::Checkpoint ckpt = runtime::Checkpoint::open_config_only(run.checkpoint);
  const auto full = runtime::ModelConfig::from_json(ckpt.config_json(), run.checkpoint);
  CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  if (o.bound_bytes < 1 || o.bound_gemm < 1)
    throw InputError("--bound-bytes and --bound-gemm must be >= 1");
  const double copy_bw = launcher::measure_copy_bandwidth(0, size_t(o.bound_bytes));
  const double gemm_peak =
      launcher::measure_gemm_flops(0, o.bound_gemm, o.bound_gemm, o.bound_gemm);
  run.num_layers = o.num_layers > 0 ? o.num_layers
                                    : layers_that_fit(full, run.max_seqs, run.max_seq_len,
                                                      run.max_tokens_per_step, o.memory_fraction);
  if (run.num_layers < 1)
    throw InputError("not one layer of " + run.checkpoint + " fits beside the KV cache and "
                     "workspace on " + prop.name + "; expected smaller --batch/--tokens/--context");

  std::printf("device: %s, %d SMs; measured copy bandwidth %.0f GB/s (read + write), bf16 GEMM "
              "peak %.0f TFLOP/s (%d^3, cuBLAS)\n",
              prop.name, prop.multiProcessorCount, copy_bw / 1e9, gemm_peak / 1e12, o.bound_gemm);
  std::printf("model: %s, synthetic weights, %d of %d layers (all %d experts local), bf16 weights "
              "and KV cache\n",
              run.checkpoint.c_str(), run.num_layers, full.num_hidden_layers,
              full.num_local_experts);
  const auto host = mpi.make_communicator();  // outlives the runtime, which refers to it
  runtime::RankRuntime rt(run, *host, {mpi.local_rank(), mpi.local_size()});
  if (decode) bench_decode(rt, o, copy_bw);
  if (prefill) bench_prefill(rt, o, gemm_peak);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return moe::launcher::rank_main(argc, argv, run); }
