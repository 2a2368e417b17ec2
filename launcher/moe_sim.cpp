// moe-sim: replays a routing trace (moe-run --trace) on N ranks of nodes x GPUs per node under a
// placement policy and predicts rows computed per rank, all-to-all bytes per rank pair (within
// and across nodes), the imbalance and the step time (runtime/ep_simulator.h). With N equal to
// the trace's ranks and --placement trace it replays the recorded run: its rows and bytes are
// the measured ones exactly. With other N, simulated rank r takes the tokens trace rank
// r % trace_ranks routed at each step (the same tokens per rank: weak scaling), and model layer
// l replays trace layer l % trace_layers.
//
// With --loads (a statistics JSON: moe-run --stats-json, moe-cli stats --json) instead of a
// trace, the routing is made up from the recorded loads per (layer, expert): every simulated
// rank routes --tokens-per-rank tokens per step (runtime/synthetic_routing.h).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <map>
#include <numeric>
#include <optional>
#include <tuple>
#include <type_traits>

#include "common/dtype.h"
#include "common/error.h"
#include "launcher/cli_parse.h"
#include "launcher/rank_main.h"
#include "runtime/ep_simulator.h"
#include "runtime/placement_file.h"
#include "runtime/placement_planner.h"
#include "runtime/routing_trace.h"
#include "runtime/synthetic_routing.h"

namespace {

using namespace moe;

struct Options {
  std::string trace, loads, stats_json;
  int tokens_per_rank = 256, steps = 8, top_k = 2;
  uint64_t seed = 0;
  std::vector<int> ranks;
  std::vector<std::string> placements = {"trace"};
  std::vector<int> redundant = {0};
  int gpus_per_node = 8;
  int layers = 0, hidden = 0, intermediate = 0;
  std::string wire_dtype;
  bool mixtral = false;
  double expert_tflops = 400, intra_gbps = 150, inter_gbps = 50, latency_us = 10;
  double dense_us_per_token = 0, permute_ns_per_row = 0, step_us = 0, weight_gbps = 0;
  std::string calibrate;
};

// A trace replayed as recorded: its records by (step, layer, source).
class TraceSource {
 public:
  explicit TraceSource(const runtime::RoutingTrace& tr) : tr_(tr) {
    for (const auto& r : tr.records) at_[{r.step, r.layer, r.src}] = &r.experts;
  }
  // Simulated rank `src` takes trace rank src % ranks; model layer l trace layer l % layers.
  const std::vector<int32_t>& operator()(int step, int layer, int src) const {
    const auto it = at_.find({step, layer % tr_.layers, src % tr_.ranks});
    return it == at_.end() ? none_ : *it->second;
  }

 private:
  const runtime::RoutingTrace& tr_;
  std::map<std::tuple<int, int, int>, const std::vector<int32_t>*> at_;
  std::vector<int32_t> none_;
};

// One expert's FFN weights (w1, w3, w2), in the run's dtype: that of a returned row's values.
int64_t expert_weight_bytes(const runtime::SimModel& m) {
  return 3 * int64_t(m.hidden) * m.intermediate * (m.back_row_bytes / std::max(m.hidden, 1));
}

// A trace header's field, of the type the recording wrote; another type is the file's fault.
template <class T>
T header_field(const nlohmann::json& h, const char* key, T def, const std::string& path) {
  if (!h.contains(key)) return def;
  try {
    return h[key].get<T>();
  } catch (const nlohmann::json::exception&) {
    throw InputError(path + ": the header's \"" + key + "\" is " + h[key].dump() + ", expected " +
                     (std::is_same_v<T, std::string> ? "a string" : "a number"));
  }
}

// The run a trace was recorded from: its dimensions, wire format and placement.
runtime::SimModel recorded_model(const runtime::RoutingTrace& tr, const std::string& path) {
  runtime::SimModel m;
  m.layers = tr.layers;
  m.experts = tr.experts;
  m.top_k = tr.top_k;
  m.hidden = header_field(tr.header, "hidden", 0, path);
  m.intermediate = header_field(tr.header, "intermediate", 0, path);
  m.row_bytes = header_field(tr.header, "row_bytes", int64_t(0), path);
  m.back_row_bytes = header_field(tr.header, "back_row_bytes", int64_t(0), path);
  if (m.hidden < 1 || m.intermediate < 1 || m.row_bytes < 1)
    throw InputError(path + ": the header lacks hidden, intermediate or row_bytes");
  m.weight_bytes = expert_weight_bytes(m);
  return m;
}
runtime::Placement recorded_placement(const runtime::RoutingTrace& tr, const std::string& path) {
  if (!tr.header.contains("placement"))
    throw InputError(path + ": the header has no placement (a trace from moe-run --trace has)");
  auto t = runtime::placement_tables_from_json(tr.header["placement"], path);
  return runtime::Placement::from_map(t.map, tr.ranks, t.shares);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{"moe-sim: predict rows per rank, all-to-all bytes, imbalance and step time of a "
               "recorded routing trace (moe-run --trace) on N ranks under a placement."};
  app.option_defaults()->always_capture_default();
  auto* trace_opt = app.add_option("--trace", o.trace, "routing trace from moe-run --trace / moe-worker --trace (this or --loads)");
  app.add_option("--loads", o.loads, "instead of a trace: a statistics JSON (moe-run --stats-json, moe-cli stats --json) whose loads per (layer, expert) make up the routing")->excludes(trace_opt);
  app.add_option("--tokens-per-rank", o.tokens_per_rank, "with --loads: tokens each rank routes per step");
  app.add_option("--steps", o.steps, "with --loads: steps to simulate");
  app.add_option("--top-k", o.top_k, "with --loads: experts per token");
  app.add_option("--seed", o.seed, "with --loads: seed of the made-up routing");
  app.add_option("--ranks", o.ranks, "rank counts to simulate, e.g. 8,64,256 (default: the trace's)")->delimiter(',');
  app.add_option("--gpus-per-node", o.gpus_per_node, "ranks per node; traffic between nodes goes over --inter-gbps");
  app.add_option("--placement", o.placements, "placements, comma-separated: trace (the recorded run's; only at its rank count), contiguous, round_robin, planned (moe-plan's planner on the trace's loads)")->delimiter(',');
  app.add_option("--redundant-slots", o.redundant, "planned: redundant expert slots per rank, comma-separated for several")->delimiter(',');
  app.add_flag("--mixtral-8x7b", o.mixtral, "Mixtral 8x7B's dimensions: 32 layers, hidden 4096, intermediate 14336, bf16 rows (default: the trace's)");
  app.add_option("--layers", o.layers, "layers to simulate (0: the trace's; more replay its layers cyclically)");
  app.add_option("--hidden", o.hidden, "hidden size for the rows' bytes and FLOPs (0: the trace's)");
  app.add_option("--intermediate", o.intermediate, "expert FFN intermediate size (0: the trace's)");
  app.add_option("--wire-dtype", o.wire_dtype, "dtype of the rows on the wire: f32 or bf16 (default: the trace's)");
  app.add_option("--expert-tflops", o.expert_tflops, "cost model: expert-FFN TFLOP/s per rank (moe-bench-experts; a CPU rank: a few hundred GFLOP/s)");
  app.add_option("--intra-gbps", o.intra_gbps, "cost model: GB/s a rank moves within its node (NVLink; moe-bench-dispatch)");
  app.add_option("--inter-gbps", o.inter_gbps, "cost model: GB/s a rank moves across nodes (InfiniBand)");
  app.add_option("--latency-us", o.latency_us, "cost model: microseconds per all-to-all");
  app.add_option("--dense-us-per-token", o.dense_us_per_token, "cost model: microseconds per token per layer outside the MoE block (attention, norms, router)");
  app.add_option("--weight-gbps", o.weight_gbps, "cost model: GB/s a rank reads expert weights at (each expert with rows reads its weights once a step; HBM or DRAM); 0: not modelled");
  app.add_option("--permute-ns-per-row", o.permute_ns_per_row, "cost model: nanoseconds per row packed or received per layer (layout, pack, group, combine; small on a GPU)");
  app.add_option("--step-us", o.step_us, "cost model: microseconds per step whatever its tokens (scheduling, control)");
  app.add_option("--calibrate", o.calibrate, "fit the cost model to the times a trace measured (moe-run --trace records them): expert FLOP/s, permute per row, dense per token, per step, and latency and bandwidth where it has more than one rank; cost flags given explicitly win (default: off)");
  app.add_option("--stats-json", o.stats_json, "write the first simulated configuration's predicted statistics as moe-run --stats-json does (default: not written)");
  if (const auto code = launcher::parse_command_line(app, argc, argv)) return *code;

  try {
    if (o.trace.empty() == o.loads.empty()) throw InputError("give --trace or --loads (one of them)");
    // What the replay needs of its input, from a trace or from a load distribution.
    runtime::RoutingTrace tr;
    std::optional<runtime::SyntheticRouting> made;
    std::vector<std::vector<double>> file_load;  // --loads: [layer][expert]
    std::string input = o.trace;
    if (!o.trace.empty()) {
      tr = runtime::RoutingTrace::read(o.trace);
    } else {
      input = o.loads;
      std::ifstream f(o.loads);
      if (!f) throw InputError(o.loads + ": cannot read it");
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(f);
      } catch (const nlohmann::json::exception& e) {
        throw InputError(o.loads + ": not JSON (" + e.what() + ")");
      }
      const runtime::LoadStats ls = runtime::LoadStats::from_json(j, o.loads);
      if (o.steps < 1 || o.tokens_per_rank < 0)
        throw InputError("--steps must be >= 1 and --tokens-per-rank >= 0");
      if (o.top_k < 1 || o.top_k > ls.n_experts)
        throw InputError("--top-k is " + std::to_string(o.top_k) + ", expected 1 to the " +
                         std::to_string(ls.n_experts) + " experts of " + o.loads);
      std::vector<std::vector<double>> w(size_t(ls.n_layers), std::vector<double>(size_t(ls.n_experts)));
      for (int l = 0; l < ls.n_layers; ++l)
        for (int e = 0; e < ls.n_experts; ++e) w[size_t(l)][size_t(e)] = double(ls.token_count(l, e));
      file_load = w;
      made.emplace(std::move(w), o.top_k, o.tokens_per_rank, o.seed);
      tr.layers = ls.n_layers;
      tr.experts = ls.n_experts;
      tr.top_k = o.top_k;
      tr.ranks = ls.world;
      tr.steps = o.steps;
      if (j.contains("placement")) tr.header["placement"] = j["placement"];
    }
    const auto& h = tr.header;
    runtime::SimModel m;
    m.experts = tr.experts;
    m.top_k = tr.top_k;
    m.layers = o.layers > 0 ? o.layers : o.mixtral ? 32 : tr.layers;
    m.hidden = o.hidden > 0 ? o.hidden : o.mixtral ? 4096 : header_field(h, "hidden", 0, input);
    m.intermediate = o.intermediate > 0 ? o.intermediate : o.mixtral ? 14336 : header_field(h, "intermediate", 0, input);
    const std::string wire = !o.wire_dtype.empty() ? o.wire_dtype : o.mixtral ? "bf16" : "";
    if (wire.empty() && o.hidden == 0 && !o.mixtral) {
      m.row_bytes = header_field(h, "row_bytes", int64_t(0), input);
      m.back_row_bytes = header_field(h, "back_row_bytes", int64_t(0), input);
    } else {
      if (!wire.empty() && wire != "f32" && wire != "bf16")
        throw InputError("--wire-dtype is '" + wire + "', expected f32 or bf16");
      const std::string name = wire.empty() ? header_field(h, "wire_dtype", std::string("F32"), input) : wire;
      const DType dt = (name == "bf16" || name == "BF16") ? DType::kBF16 : DType::kF32;
      m.row_bytes = int64_t(kernels::RowLayout{m.hidden, m.top_k, dt}.stride());
      m.back_row_bytes = int64_t(m.hidden) * int64_t(dtype_size(dt));
    }
    if (m.hidden < 1 || m.intermediate < 1 || m.row_bytes < 1)
      throw InputError(input + (made ? ": a load distribution has no model dimensions"
                                     : ": the header lacks hidden, intermediate or row_bytes") +
                       "; give --hidden, --intermediate and --wire-dtype, or --mixtral-8x7b");
    m.weight_bytes = expert_weight_bytes(m);
    runtime::CostModel cost;
    cost.weight_bw = o.weight_gbps * 1e9;
    cost.expert_flops = o.expert_tflops * 1e12;
    cost.intra_bw = o.intra_gbps * 1e9;
    cost.inter_bw = o.inter_gbps * 1e9;
    cost.latency = o.latency_us * 1e-6;
    cost.dense_s_per_token = o.dense_us_per_token * 1e-6;
    cost.permute_s_per_row = o.permute_ns_per_row * 1e-9;
    cost.step_s = o.step_us * 1e-6;
    if (!(cost.expert_flops > 0 && cost.intra_bw > 0 && cost.inter_bw > 0 && cost.latency >= 0 &&
          cost.weight_bw >= 0 &&
          cost.dense_s_per_token >= 0 && cost.permute_s_per_row >= 0 && cost.step_s >= 0))
      throw InputError("cost model: TFLOP/s and link GB/s must be > 0; weight GB/s, latency, "
                       "dense, permute and step times >= 0");
    if (!o.calibrate.empty()) {
      const runtime::RoutingTrace ct = runtime::RoutingTrace::read(o.calibrate);
      if (ct.times.empty())
        throw InputError(o.calibrate + ": no measured times (W lines) to calibrate from; record "
                                       "the trace with this version's moe-run --trace");
      const TraceSource cs(ct);
      const auto fit = runtime::calibrate(std::cref(cs), recorded_model(ct, o.calibrate),
                                          recorded_placement(ct, o.calibrate), ct.times, cost);
      // Flags given explicitly win over the fit.
      auto keep = [&](const char* flag, double fitted, double* into) {
        if (app.count(flag) == 0) *into = fitted;
      };
      keep("--expert-tflops", fit.cost.expert_flops, &cost.expert_flops);
      keep("--weight-gbps", fit.cost.weight_bw, &cost.weight_bw);
      keep("--permute-ns-per-row", fit.cost.permute_s_per_row, &cost.permute_s_per_row);
      keep("--dense-us-per-token", fit.cost.dense_s_per_token, &cost.dense_s_per_token);
      keep("--step-us", fit.cost.step_s, &cost.step_s);
      if (fit.link_fitted) {
        keep("--latency-us", fit.cost.latency, &cost.latency);
        keep("--intra-gbps", fit.cost.intra_bw, &cost.intra_bw);
      }
      std::printf("calibrated on %s (%d ranks, %d rank-steps measured): experts %.3f TFLOP/s, "
                  "weights read at %.2f GB/s, permute %.1f ns per row, dense %.3f us per token "
                  "per layer, %.1f us per step%s\n",
                  o.calibrate.c_str(), ct.ranks, fit.samples, fit.cost.expert_flops / 1e12,
                  fit.cost.weight_bw / 1e9,
                  fit.cost.permute_s_per_row * 1e9, fit.cost.dense_s_per_token * 1e6,
                  fit.cost.step_s * 1e6,
                  fit.link_fitted ? (", exchange " + fmt("%.1f", fit.cost.latency * 1e6) +
                                     " us + " + fmt("%.2f", fit.cost.intra_bw / 1e9) + " GB/s").c_str()
                                  : ", exchange as given (one rank, or no fit)");
    }
    if (o.ranks.empty()) o.ranks = {tr.ranks};

    const TraceSource replay(tr);
    const runtime::SimSource source = [&](int step, int layer, int src) -> const std::vector<int32_t>& {
      if (made) return made->choices(step, layer, src);
      return replay(step, layer, src);
    };
    // The input's loads per (layer, expert), the planner's input.
    std::vector<std::vector<double>> load(size_t(m.layers), std::vector<double>(size_t(m.experts), 0.0));
    for (const auto& r : tr.records)
      for (int32_t e : r.experts)
        for (int l = r.layer; l < m.layers; l += tr.layers) load[size_t(l)][size_t(e)] += 1;
    if (made)
      for (int l = 0; l < m.layers; ++l) load[size_t(l)] = file_load[size_t(l % tr.layers)];

    std::printf("moe-sim: %s: %d steps, %d layers x %d experts top-%d recorded on %d ranks; "
                "simulated as %d layers, hidden %d, intermediate %d, rows of %lld bytes\n"
                "cost model: experts %.4g TFLOP/s per rank and weights read at %.4g GB/s, within "
                "node %.4g GB/s, across %.4g "
                "GB/s, %.4g us per exchange, %.4g us per token per layer outside the MoE block, "
                "%.4g ns per row permuted, %.4g us per step\n"
                "efficiency: the time with every expert on every rank (no exchange, no "
                "imbalance) over the predicted time\n\n",
                input.c_str(), tr.steps, tr.layers, tr.experts, tr.top_k, tr.ranks, m.layers,
                m.hidden, m.intermediate, (long long)m.row_bytes, cost.expert_flops / 1e12,
                cost.weight_bw / 1e9,
                cost.intra_bw / 1e9, cost.inter_bw / 1e9, cost.latency * 1e6,
                cost.dense_s_per_token * 1e6, cost.permute_s_per_row * 1e9, cost.step_s * 1e6);
    if (made)
      std::printf("the routing is made up from %s's loads: %d tokens per rank per step, top-%d, "
                  "seed %llu\n\n",
                  o.loads.c_str(), o.tokens_per_rank, o.top_k, (unsigned long long)o.seed);
    std::printf("%6s %5s %-14s %9s %9s %12s %12s %11s %11s %10s\n", "ranks", "nodes", "placement",
                "imbalance", "max rows", "intra MB/st", "inter MB/st", "step ms", "tokens/s",
                "efficiency");
    bool wrote = false;
    // Predictions of a recorded run need its own dimensions and routing.
    const bool own_dims = !made && o.layers == 0 && o.hidden == 0 && o.intermediate == 0 &&
                          !o.mixtral && o.wire_dtype.empty();
    std::vector<std::string> compared;
    for (int N : o.ranks) {
      if (N < 1) throw InputError("--ranks: " + std::to_string(N) + ", expected >= 1");
      const int gpn = std::min(o.gpus_per_node, N);
      if (N % gpn != 0)
        throw InputError("--ranks " + std::to_string(N) + " is not a whole number of nodes of " +
                         std::to_string(gpn) + " GPUs");
      // The ideal: every expert on every rank (each rank keeps its own tokens).
      std::vector<std::vector<int>> everywhere(size_t(m.experts), std::vector<int>(size_t(N)));
      for (auto& r : everywhere) std::iota(r.begin(), r.end(), 0);
      const auto ideal_p = runtime::Placement::from_map(
          std::vector<std::vector<std::vector<int>>>(size_t(m.layers), everywhere), N);
      const auto ideal = runtime::simulate(source, tr.steps, m, ideal_p, gpn, cost);
      for (const std::string& kind : o.placements) {
        std::vector<std::pair<std::string, runtime::Placement>> configs;
        if (kind == "trace") {
          if (N != tr.ranks || !h.contains("placement")) continue;
          auto t = runtime::placement_tables_from_json(h["placement"], o.trace);
          if (int(t.map.size()) != m.layers) continue;  // layers resized: no recorded map for them
          configs.push_back({"trace", runtime::Placement::from_map(t.map, N, t.shares)});
        } else if (kind == "planned") {
          for (int r : o.redundant) {
            runtime::PlanRequest req;
            req.load = load;
            req.n_ranks = N;
            req.redundant_per_rank = r;
            req.nodes = N / gpn;
            configs.push_back({"planned r=" + std::to_string(r), runtime::plan_placement(req).placement});
          }
        } else {
          configs.push_back({kind, runtime::Placement::make(runtime::Placement::parse_kind(kind),
                                                           m.layers, m.experts, N)});
        }
        for (const auto& [name, placement] : configs) {
          const auto res = runtime::simulate(source, tr.steps, m, placement, gpn, cost);
          double imb = 0;
          int64_t max_rows = 0, tokens = 0;
          for (int l = 0; l < m.layers; ++l) {
            imb += res.stats.device_imbalance(l) / m.layers;
            for (int r = 0; r < N; ++r) max_rows = std::max(max_rows, res.stats.computed(l, r));
          }
          for (int e = 0; e < m.experts; ++e) tokens += res.stats.token_count(0, e);
          tokens /= m.top_k;  // tokens through layer 0: each made top_k choices
          const double steps = std::max(tr.steps, 1);
          std::printf("%6d %5d %-14s %9.3f %9lld %12.3f %12.3f %11.4f %11.0f %9.1f%%\n", N,
                      N / gpn, name.c_str(), imb, (long long)max_rows,
                      res.bytes_intra / steps / 1e6, res.bytes_inter / steps / 1e6,
                      1e3 * res.total_s() / steps, tokens / std::max(res.total_s(), 1e-12),
                      100.0 * ideal.total_s() / std::max(res.total_s(), 1e-12));
          // The recorded run itself, where the trace measured it: predicted against measured.
          if (name == "trace" && !tr.times.empty() && own_dims) {
            std::map<int, double> slowest;  // per step: every rank waits for the slowest
            for (const auto& w : tr.times) slowest[w.step] = std::max(slowest[w.step], w.total);
            double measured = 0;
            for (const auto& [step, t] : slowest) measured += t;
            compared.push_back(std::to_string(N) + " ranks: measured " +
                               fmt("%.4f", 1e3 * measured / std::max<size_t>(slowest.size(), 1)) +
                               " ms per step, predicted " +
                               fmt("%.4f", 1e3 * res.total_s() / std::max(tr.steps, 1)) +
                               " ms, error " + fmt("%+.1f%%", 100.0 * (res.total_s() / measured - 1)));
          }
          if (!o.stats_json.empty() && !wrote) {
            std::ofstream f(o.stats_json);
            if (!f) throw InputError(o.stats_json + ": cannot open for writing");
            nlohmann::json j = res.stats.to_json();
            j["placement"] = runtime::placement_json(placement);
            j["predicted_step_seconds"] = res.total_s();
            f << j.dump(2) << "\n";
            wrote = true;
          }
        }
      }
    }
    if (!compared.empty()) {
      std::printf("\nthe recorded run, predicted against its measured step times (W lines):\n");
      for (const auto& c : compared) std::printf("  %s\n", c.c_str());
    }
  } catch (const InputError& e) {
    std::fprintf(stderr, "moe-sim: %s\n", e.what());
    return launcher::kExitBadInput;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-sim: %s\n", e.what());
    return 1;
  }
}
