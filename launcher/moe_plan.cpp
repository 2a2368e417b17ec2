// moe-plan: a placement from measured expert loads. Reads the statistics JSON of
// `moe-run --stats-json` or `moe-cli stats --json`, plans (runtime/placement_planner.h), prints
// the per-device load and imbalance it predicts before and after, and writes a placement YAML
// that moe-run and moe-worker take with --placement-file.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>

#include "common/error.h"
#include "launcher/cli_parse.h"
#include "launcher/rank_main.h"
#include "runtime/load_stats.h"
#include "runtime/placement_file.h"
#include "runtime/placement_planner.h"

namespace {

using namespace moe;

struct Options {
  std::string stats, output, current = "stats";
  int ranks = 0, redundant = 0, slots = 0, nodes = 1;
  double keep_within = 0.02;
  bool per_layer = false;
};

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open the statistics file");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ": not valid JSON (" + std::string(e.what()) +
                     "); expected the output of moe-run --stats-json or moe-cli stats --json");
  }
}

// The placement the load was measured under (or the one asked for), for `ranks` ranks.
runtime::Placement current_placement(const Options& o, const nlohmann::json& j,
                                     const runtime::LoadStats& s, int ranks) {
  using runtime::Placement;
  if (o.current == "contiguous" || o.current == "round_robin")
    return Placement::make(Placement::parse_kind(o.current), s.n_layers, s.n_experts, ranks);
  runtime::PlacementTables t;
  if (o.current == "stats") {
    if (!j.contains("placement") || ranks != s.world)
      return Placement::make(Placement::Kind::kContiguous, s.n_layers, s.n_experts, ranks);
    t = runtime::placement_tables_from_json(j["placement"], o.stats);
  } else {
    t = runtime::read_placement_yaml(o.current);
  }
  if (t.map.size() == 1) t.map.assign(size_t(s.n_layers), t.map[0]);
  if (t.shares.size() == 1) t.shares.assign(size_t(s.n_layers), t.shares[0]);
  if (int(t.map.size()) != s.n_layers)
    throw InputError("current placement has " + std::to_string(t.map.size()) +
                     " layers, the statistics " + std::to_string(s.n_layers));
  return Placement::from_map(t.map, ranks, t.shares);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{"moe-plan: plan an expert placement from measured loads (moe-run --stats-json or "
               "moe-cli stats --json); prints the predicted per-device load before and after and "
               "writes a placement YAML for --placement-file."};
  app.option_defaults()->always_capture_default();
  app.add_option("--stats", o.stats, "statistics JSON (moe-run --stats-json, moe-cli stats --json); required")->required();
  app.add_option("--output", o.output, "placement YAML to write (default: not written, only the table)");
  app.add_option("--ranks", o.ranks, "ranks to plan for (0: the statistics' world size)");
  app.add_option("--redundant-slots", o.redundant, "redundant expert slots per rank, on top of ceil(experts / ranks)");
  app.add_option("--slots-per-rank", o.slots, "expert slots per rank in all, overriding --redundant-slots (0: ceil(experts / ranks) + redundant)");
  app.add_option("--nodes", o.nodes, "nodes the ranks are on (node-major); ties go to the less loaded node");
  app.add_option("--current", o.current, "placement the plan starts from (weights kept where cheap): stats (the statistics' own, else contiguous), contiguous, round_robin, or a placement YAML");
  app.add_option("--keep-within", o.keep_within, "a plan moving fewer weights wins while its largest rank load is within this fraction of the best");
  app.add_flag("--per-layer", o.per_layer, "print every layer's predicted device loads (default: the sum over layers and a line per layer)");
  if (const auto code = launcher::parse_command_line(app, argc, argv)) return *code;

  try {
    const nlohmann::json j = read_json(o.stats);
    const runtime::LoadStats s = runtime::LoadStats::from_json(j, o.stats);
    const int N = o.ranks > 0 ? o.ranks : s.world;
    const runtime::Placement cur = current_placement(o, j, s, N);
    runtime::PlanRequest req;
    for (int l = 0; l < s.n_layers; ++l) {
      req.load.emplace_back();
      for (int e = 0; e < s.n_experts; ++e) req.load.back().push_back(double(s.token_count(l, e)));
    }
    req.n_ranks = N;
    req.redundant_per_rank = o.redundant;
    req.slots_per_rank = o.slots;
    req.nodes = o.nodes;
    req.current = &cur;
    req.keep_within = o.keep_within;
    const runtime::Plan plan = runtime::plan_placement(req);

    // The table: per layer the predicted imbalance before and after, then the rows computed per
    // device summed over layers.
    std::string out;
    out += "Planned " + std::to_string(s.n_layers) + " layers x " + std::to_string(s.n_experts) +
           " experts on " + std::to_string(N) + " ranks, " + std::to_string(plan.slots_per_rank) +
           " expert slots per rank (" + std::to_string(o.nodes) + " node(s)), from " +
           std::to_string(s.steps) + " steps of " + o.stats + "\n";
    out += "Predicted device imbalance (max / mean of routed choices computed per rank)\n";
    out += "layer    before     after   moved\n";
    std::vector<double> before(size_t(N), 0.0), after(size_t(N), 0.0);
    for (int l = 0; l < s.n_layers; ++l) {
      const auto& lp = plan.layers[size_t(l)];
      for (int r = 0; r < N; ++r) {
        before[size_t(r)] += lp.before[size_t(r)];
        after[size_t(r)] += lp.after[size_t(r)];
      }
      out += fmt("%-6.0f", l) + fmt("%9.3f", runtime::imbalance(lp.before)) +
             fmt("%10.3f", runtime::imbalance(lp.after)) + fmt("%8.0f", lp.moved) +
             (lp.kept ? "  (kept)" : "") + "\n";
      if (o.per_layer) {
        out += "       before:";
        for (double x : lp.before) out += fmt(" %9.0f", x);
        out += "\n       after: ";
        for (double x : lp.after) out += fmt(" %9.0f", x);
        out += "\n";
      }
    }
    // Steps wait for the slowest rank in every layer: the mean over layers of the per-layer
    // imbalance is what the step time follows.
    double mean_before = 0, mean_after = 0;
    for (const auto& lp : plan.layers) {
      mean_before += runtime::imbalance(lp.before) / s.n_layers;
      mean_after += runtime::imbalance(lp.after) / s.n_layers;
    }
    out += "mean  " + fmt("%9.3f", mean_before) +
           fmt("%10.3f", mean_after) + fmt("%8.0f", double(plan.weights_moved)) + "\n";
    out += "\nPredicted rows computed per device, all layers\n";
    out += "rank        before      after\n";
    for (int r = 0; r < N; ++r)
      out += fmt("%-8.0f", r) + fmt("%10.0f", before[size_t(r)]) +
             fmt("%11.0f", after[size_t(r)]) + "\n";
    out += "imbalance" + fmt("%9.3f", runtime::imbalance(before)) +
           fmt("%11.3f", runtime::imbalance(after)) + "\n";
    out += "expert weights moved: " + std::to_string(plan.weights_moved) + "\n";
    std::fputs(out.c_str(), stdout);

    if (!o.output.empty()) {
      std::ofstream f(o.output);
      if (!f) throw InputError(o.output + ": cannot open for writing");
      std::ostringstream comment;
      comment << "Written by moe-plan from " << o.stats << ": " << N << " ranks, "
              << plan.slots_per_rank << " slots per rank, " << o.nodes << " node(s).\n"
              << "Predicted mean per-layer device imbalance " << fmt("%.3f", mean_before)
              << " -> " << fmt("%.3f", mean_after) << "; " << plan.weights_moved
              << " expert weights moved.\n"
              << "Use: moe-run --placement-file THIS (or placement_file: in a run config).";
      f << runtime::placement_yaml(plan.placement, comment.str());
      std::fprintf(stderr, "moe-plan: wrote %s\n", o.output.c_str());
    }
  } catch (const InputError& e) {
    std::fprintf(stderr, "moe-plan: %s\n", e.what());
    return launcher::kExitBadInput;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-plan: %s\n", e.what());
    return 1;
  }
}
