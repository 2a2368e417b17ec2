// moe-bench-dispatch: the time of the MoE layer's dispatch + combine (layout, pack, the count and
// payload exchanges there and back, grouping, the reductions) on N ranks, printed beside the
// bound it is measured against: a bare MPI_Alltoallv of the same bytes (the payload there, the
// returned rows back). Expert compute is excluded (it is timed separately by the layer and
// reported for reference only).
//   mpirun -np 4 build/bin/moe-bench-dispatch --tokens 1024 --hidden 4096 --dtype bf16
#include <CLI/CLI.hpp>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "comm/mpi_context.h"
#include "common/log.h"
#include "launcher/cli_parse.h"
#include "launcher/rank_main.h"
#include "runtime/moe_layer.h"

namespace {

using namespace moe;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The slowest rank's time: the step waits for it.
double slowest(comm::Communicator& comm, double t) {
  comm.all_reduce(&t, 1, comm::Communicator::Op::kMax);
  return t;
}

int run(int argc, char** argv, comm::MpiContext& mpi) {
  auto comm = mpi.make_communicator();
  set_log_rank(comm->rank(), comm->size());
  int tokens = 1024, hidden = 4096, experts = 8, top_k = 2, intermediate = 64, warmup = 3,
      repeats = 20;
  CLI::App app{"moe-bench-dispatch: MoE dispatch + combine against a bare MPI_Alltoallv of the same bytes"};
  app.option_defaults()->always_capture_default();
  app.add_option("--tokens", tokens, "tokens per rank");
  app.add_option("--hidden", hidden, "hidden size (Mixtral 8x7B: 4096)");
  app.add_option("--experts", experts, "experts per layer");
  app.add_option("--top-k", top_k, "experts per token");
  app.add_option("--intermediate", intermediate, "expert FFN width (small: compute is not the figure)");
  app.add_option("--warmup", warmup, "untimed repetitions first");
  app.add_option("--repeats", repeats, "timed repetitions (the median is printed)");
  std::string dtype = "f32";
  int threads = 0;
  app.add_option("--threads", threads, "threads per rank (0: the node's cores shared by its ranks, as moe-run)");
  app.add_option("--dtype", dtype, "precision of the rows on the wire (and of the CPU's roundings)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  if (const auto code = launcher::parse_command_line(app, argc, argv, comm->rank() == 0)) return *code;

  runtime::ModelConfig cfg;
  cfg.hidden_size = hidden;
  cfg.intermediate_size = intermediate;
  cfg.num_local_experts = experts;
  cfg.num_experts_per_tok = top_k;
  cfg.num_hidden_layers = 1;
  const int N = comm->size(), me = comm->rank();
  const auto placement =
      runtime::Placement::make(runtime::Placement::Kind::kContiguous, 1, experts, N);
  const DType precision = dtype == "bf16" ? DType::kBF16 : DType::kF32;
  if (threads <= 0)
    threads = std::max(1, int(std::thread::hardware_concurrency()) / std::max(1, mpi.local_size()));
  auto ops = kernels::make_cpu_ops(precision, threads);

  // Random weights: a random router spreads tokens roughly evenly over the experts.
  std::mt19937 rng(1234 + me);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto random = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    return v;
  };
  std::vector<kernels::Buffer> storage;
  runtime::LayerWeights lw;
  storage.emplace_back();
  std::mt19937 shared_rng(99);  // the router is shared: the same on every rank
  std::vector<float> gate(size_t(experts) * hidden);
  for (auto& x : gate) x = std::normal_distribution<float>(0.0f, 1.0f)(shared_rng);
  lw.gate = ops->upload_weight(storage.back(), gate.data(), experts, hidden);
  lw.local_experts = placement.local_experts(0, me);
  for (size_t i = 0; i < lw.local_experts.size(); ++i) {
    storage.emplace_back();
    lw.w13.push_back(ops->upload_weight(storage.back(), random(size_t(2) * intermediate * hidden).data(),
                                        2 * intermediate, hidden));
    storage.emplace_back();
    lw.w2.push_back(ops->upload_weight(storage.back(), random(size_t(hidden) * intermediate).data(),
                                       hidden, intermediate));
  }
  runtime::LoadStats stats(1, experts, N);
  runtime::MoeLayer layer(cfg, placement, *ops, *comm, &stats);
  // Each phase holds only its own work: the waits for the slowest rank before each exchange
  // (its expert compute, mostly) are timed apart and left out of the ratio.
  layer.set_timing_barriers(true);
  std::normal_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> h(size_t(tokens) * hidden), out(size_t(tokens) * hidden);
  for (auto& x : h) x = unit(rng);

  std::vector<double> t_dc, t_experts, t_bare, t_permute, t_exchange, t_combine, t_wait;
  for (int it = 0; it < warmup + repeats; ++it) {
    layer.reset_times();
    comm->barrier();
    layer.forward(0, lw, h.data(), tokens, out.data());
    if (it >= warmup) {
      t_dc.push_back(slowest(*comm, layer.times().dispatch_combine()));
      t_experts.push_back(slowest(*comm, layer.times().experts));
      t_permute.push_back(slowest(*comm, layer.times().permute));
      t_exchange.push_back(slowest(*comm, layer.times().exchange));
      t_combine.push_back(slowest(*comm, layer.times().combine));
      t_wait.push_back(slowest(*comm, layer.times().wait));
    }
  }
  // The rows this rank sent to each destination in one forward (stats hold warmup + repeats).
  std::vector<int64_t> send(N), recv(N), sd(N, 0), rd(N, 0);
  for (int d = 0; d < N; ++d) send[d] = stats.row_count(0, me, d) / (warmup + repeats);
  comm->all_to_all_counts(send.data(), recv.data());
  for (int d = 1; d < N; ++d) {
    sd[d] = sd[d - 1] + send[d - 1];
    rd[d] = rd[d - 1] + recv[d - 1];
  }
  const int64_t S = sd[N - 1] + send[N - 1], R = rd[N - 1] + recv[N - 1];
  // The same bytes as the layer: payload rows (values in the wire dtype, then the route slots)
  // there, returned rows (values only) back.
  const size_t there = layer.row_layout().stride(), back = size_t(hidden) * dtype_size(precision);
  std::vector<char> a(size_t(std::max<int64_t>(S, 1)) * there, 1),
      b(size_t(std::max<int64_t>(R, 1)) * there);
  for (int it = 0; it < warmup + repeats; ++it) {
    comm->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    comm->all_to_all_v(a.data(), send.data(), sd.data(), b.data(), recv.data(), rd.data(), there);
    comm->all_to_all_v(b.data(), recv.data(), rd.data(), a.data(), send.data(), sd.data(), back);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (it >= warmup) t_bare.push_back(slowest(*comm, t));
  }
  int64_t rows_total = S;
  comm->all_reduce(&rows_total, 1, comm::Communicator::Op::kSum);
  if (me == 0) {
    const double dc = median(t_dc), bare = median(t_bare);
    std::printf("ranks %d, tokens/rank %d, hidden %d, %d experts top-%d, rows as %s (transport: "
                "MPI, CPU memory)\n",
                N, tokens, hidden, experts, top_k, dtype.c_str());
    std::printf("rows sent per step, all ranks: %lld (of %lld token-expert pairs), %.1f MB there, "
                "%.1f MB back\n",
                (long long)rows_total, (long long)tokens * N * top_k, rows_total * there / 1e6,
                rows_total * back / 1e6);
    std::printf("%-44s %10.3f ms  (median of %d, slowest rank)\n", "dispatch + combine",
                dc * 1e3, repeats);
    std::printf("%-44s %10.3f ms\n", "  of which layout, pack, group, unpack", median(t_permute) * 1e3);
    std::printf("%-44s %10.3f ms\n", "  of which exchanges (counts, payload, back)", median(t_exchange) * 1e3);
    std::printf("%-44s %10.3f ms\n", "  of which reduce + combine", median(t_combine) * 1e3);
    std::printf("%-44s %10.3f ms\n", "bound: bare MPI_Alltoallv, same bytes", bare * 1e3);
    std::printf("%-44s %10.2f x\n", "ratio", dc / bare);
    std::printf("%-44s %10.3f ms  (not in the ratio)\n", "expert FFNs, for reference",
                median(t_experts) * 1e3);
    std::printf("%-44s %10.3f ms  (not in the ratio)\n", "waits for the slowest rank",
                median(t_wait) * 1e3);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return moe::launcher::rank_main(argc, argv, run); }
