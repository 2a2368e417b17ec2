#include "runtime/load_stats.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "comm/communicator.h"
#include "common/error.h"
#include "runtime/placement.h"

namespace moe::runtime {

namespace {
double max_over_mean(const int64_t* v, int n) {
  if (n == 0) return 1.0;
  const int64_t sum = std::accumulate(v, v + n, int64_t(0));
  if (sum == 0) return 1.0;
  const int64_t mx = *std::max_element(v, v + n);
  return double(mx) * n / double(sum);
}
}  // namespace

LoadStats::LoadStats(int n_layers_, int n_experts_, int world_)
    : n_layers(n_layers_),
      n_experts(n_experts_),
      world(world_),
      tokens(size_t(n_layers_) * n_experts_, 0),
      rows(size_t(n_layers_) * world_ * world_, 0),
      rows_computed(size_t(n_layers_) * world_, 0),
      bytes(size_t(n_layers_) * world_ * world_, 0) {}

void LoadStats::reduce(comm::Communicator& comm) {
  comm.all_reduce(tokens.data(), int(tokens.size()), comm::Communicator::Op::kSum);
  comm.all_reduce(rows.data(), int(rows.size()), comm::Communicator::Op::kSum);
  comm.all_reduce(rows_computed.data(), int(rows_computed.size()), comm::Communicator::Op::kSum);
  comm.all_reduce(bytes.data(), int(bytes.size()), comm::Communicator::Op::kSum);
  comm.all_reduce(&steps, 1, comm::Communicator::Op::kMax);
}

double LoadStats::expert_imbalance(int l) const {
  return max_over_mean(&tokens[size_t(l) * n_experts], n_experts);
}

double LoadStats::device_imbalance(int l) const {
  return max_over_mean(&rows_computed[size_t(l) * world], world);
}

double LoadStats::expert_imbalance_overall() const {
  std::vector<int64_t> sum(n_experts, 0);
  for (int l = 0; l < n_layers; ++l)
    for (int e = 0; e < n_experts; ++e) sum[e] += token_count(l, e);
  return max_over_mean(sum.data(), n_experts);
}

double LoadStats::device_imbalance_overall() const {
  std::vector<int64_t> sum(world, 0);
  for (int l = 0; l < n_layers; ++l)
    for (int r = 0; r < world; ++r) sum[r] += computed(l, r);
  return max_over_mean(sum.data(), world);
}

LoadStats::RowTotals LoadStats::row_totals() const {
  RowTotals t;
  for (int l = 0; l < n_layers; ++l) {
    for (int e = 0; e < n_experts; ++e) t.routed += token_count(l, e);
    for (int src = 0; src < world; ++src)
      for (int d = 0; d < world; ++d) {
        t.sent += row_count(l, src, d);
        if (d != src) t.remote += row_count(l, src, d);
      }
  }
  return t;
}

std::string LoadStats::table(const Placement& placement) const {
  std::string out;
  char buf[64];
  auto cell = [&](const char* fmt, auto v) {
    std::snprintf(buf, sizeof buf, fmt, v);
    out += buf;
  };
  out += "Tokens per expert (routed top-k choices), per layer; imbalance = max / mean\n";
  cell("%-7s", "layer");
  for (int e = 0; e < n_experts; ++e) cell("%9s", ("e" + std::to_string(e)).c_str());
  out += "  imbalance\n";
  std::vector<int64_t> total(n_experts, 0);
  for (int l = 0; l < n_layers; ++l) {
    cell("%-7d", l);
    for (int e = 0; e < n_experts; ++e) {
      cell("%9lld", (long long)token_count(l, e));
      total[e] += token_count(l, e);
    }
    cell("  %9.3f\n", expert_imbalance(l));
  }
  cell("%-7s", "all");
  for (int e = 0; e < n_experts; ++e) cell("%9lld", (long long)total[e]);
  cell("  %9.3f\n", expert_imbalance_overall());

  out += "\nRows computed per device ((row, expert) pairs through an FFN), per layer\n";
  cell("%-7s", "layer");
  for (int r = 0; r < world; ++r) cell("%11s", ("rank" + std::to_string(r)).c_str());
  out += "  imbalance\n";
  std::vector<int64_t> dev(world, 0);
  for (int l = 0; l < n_layers; ++l) {
    cell("%-7d", l);
    for (int r = 0; r < world; ++r) {
      cell("%11lld", (long long)computed(l, r));
      dev[r] += computed(l, r);
    }
    cell("  %9.3f\n", device_imbalance(l));
  }
  cell("%-7s", "all");
  for (int r = 0; r < world; ++r) cell("%11lld", (long long)dev[r]);
  cell("  %9.3f\n", device_imbalance_overall());

  if (world > 1) {
    out += "\nHidden-state rows sent, all layers (row = source rank, column = destination)\n";
    cell("%-7s", "src");
    for (int d = 0; d < world; ++d) cell("%11s", ("rank" + std::to_string(d)).c_str());
    out += "\n";
    for (int s = 0; s < world; ++s) {
      cell("%-7d", s);
      for (int d = 0; d < world; ++d) {
        int64_t n = 0;
        for (int l = 0; l < n_layers; ++l) n += row_count(l, s, d);
        cell("%11lld", (long long)n);
      }
      out += "\n";
    }
  }
  {
    const RowTotals t = row_totals();
    char line[256];
    std::snprintf(line, sizeof line,
                  "\nRows sent, all layers: %lld for %lld routed choices (a token whose experts "
                  "share a rank crosses once: %lld rows saved); %lld to another rank, %lld stay "
                  "on their own\n",
                  (long long)t.sent, (long long)t.routed, (long long)(t.routed - t.sent),
                  (long long)t.remote, (long long)(t.sent - t.remote));
    out += line;
  }
  out += "\nPlacement (layer 0): ";
  for (int e = 0; e < n_experts && e < placement.n_experts(); ++e) {
    out += "e" + std::to_string(e) + "->";
    const auto& r = placement.ranks_of(0, e);
    for (size_t i = 0; i < r.size(); ++i) out += (i ? "," : "") + std::to_string(r[i]);
    out += e + 1 < n_experts ? " " : "\n";
  }
  return out;
}

nlohmann::json LoadStats::to_json() const {
  nlohmann::json j;
  j["layers"] = n_layers;
  j["experts"] = n_experts;
  j["world_size"] = world;
  j["steps"] = steps;
  auto& layers = j["per_layer"] = nlohmann::json::array();
  for (int l = 0; l < n_layers; ++l) {
    nlohmann::json L;
    L["layer"] = l;
    L["tokens_per_expert"] = std::vector<int64_t>(tokens.begin() + size_t(l) * n_experts,
                                                  tokens.begin() + size_t(l + 1) * n_experts);
    L["rows_computed_per_rank"] = std::vector<int64_t>(
        rows_computed.begin() + size_t(l) * world, rows_computed.begin() + size_t(l + 1) * world);
    nlohmann::json m = nlohmann::json::array();
    for (int s = 0; s < world; ++s) {
      std::vector<int64_t> row(world);
      for (int d = 0; d < world; ++d) row[d] = row_count(l, s, d);
      m.push_back(row);
    }
    L["rows_sent"] = m;  // [src][dst]
    nlohmann::json b = nlohmann::json::array();
    for (int s = 0; s < world; ++s) {
      std::vector<int64_t> row(world);
      for (int d = 0; d < world; ++d) row[d] = byte_count(l, s, d);
      b.push_back(row);
    }
    L["bytes_sent"] = b;  // [src][dst], rows dispatched and returned
    L["expert_imbalance"] = expert_imbalance(l);
    L["device_imbalance"] = device_imbalance(l);
    layers.push_back(L);
  }
  const RowTotals t = row_totals();
  j["routed_choices"] = t.routed;  // token-expert pairs over all layers
  j["rows_sent_total"] = t.sent;   // one per (token, destination rank): at most routed_choices
  j["rows_sent_remote"] = t.remote;  // of those, to another rank than their own
  j["expert_imbalance"] = expert_imbalance_overall();
  j["device_imbalance"] = device_imbalance_overall();
  return j;
}

LoadStats LoadStats::from_json(const nlohmann::json& j, const std::string& source) {
  auto bad = [&](const std::string& field, const std::string& expected) {
    throw InputError(source + ": field '" + field + "' " + expected);
  };
  if (!j.is_object()) bad("(top)", "is not a JSON object, expected moe-run --stats-json output");
  auto count = [&](const char* key, int lo, int hi) {
    if (!j.contains(key) || !j[key].is_number_integer())
      bad(key, "is missing or not an integer, expected a count");
    const int64_t v = j[key].get<int64_t>();
    if (v < lo || v > hi)
      bad(key, "is " + std::to_string(v) + ", expected [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
    return int(v);
  };
  // Bounds of the tables' sizes: far past any model, short of huge allocations.
  const int L = count("layers", 1, 4096), E = count("experts", 1, 4096);
  const int N = count("world_size", 1, 4096);
  LoadStats s(L, E, N);
  if (j.contains("steps") && j["steps"].is_number_integer()) s.steps = j["steps"].get<int64_t>();
  if (!j.contains("per_layer") || !j["per_layer"].is_array() || int(j["per_layer"].size()) != L)
    bad("per_layer", "is missing or not a list of " + std::to_string(L) + " layers");
  auto ints = [&](const nlohmann::json& v, const std::string& field, int n) {
    if (!v.is_array() || int(v.size()) != n)
      bad(field, "is not a list of " + std::to_string(n) + " counts");
    std::vector<int64_t> out;
    for (const auto& x : v) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0)
        bad(field, "holds " + x.dump() + ", expected integers >= 0");
      out.push_back(x.get<int64_t>());
    }
    return out;
  };
  for (int l = 0; l < L; ++l) {
    const auto& layer = j["per_layer"][size_t(l)];
    const std::string at = "per_layer[" + std::to_string(l) + "].";
    if (!layer.is_object() || !layer.contains("tokens_per_expert"))
      bad(at + "tokens_per_expert", "is missing");
    const auto t = ints(layer["tokens_per_expert"], at + "tokens_per_expert", E);
    std::copy(t.begin(), t.end(), s.tokens.begin() + long(l) * E);
    if (layer.contains("rows_computed_per_rank")) {
      const auto c = ints(layer["rows_computed_per_rank"], at + "rows_computed_per_rank", N);
      std::copy(c.begin(), c.end(), s.rows_computed.begin() + long(l) * N);
    }
    if (layer.contains("rows_sent")) {
      const auto& m = layer["rows_sent"];
      if (!m.is_array() || int(m.size()) != N)
        bad(at + "rows_sent", "is not a " + std::to_string(N) + " x " + std::to_string(N) +
                                  " matrix [src][dst]");
      for (int src = 0; src < N; ++src) {
        const auto row = ints(m[size_t(src)], at + "rows_sent[" + std::to_string(src) + "]", N);
        for (int d = 0; d < N; ++d) s.row_count(l, src, d) = row[size_t(d)];
      }
    }
    if (layer.contains("bytes_sent")) {
      const auto& m = layer["bytes_sent"];
      if (!m.is_array() || int(m.size()) != N)
        bad(at + "bytes_sent", "is not a " + std::to_string(N) + " x " + std::to_string(N) +
                                   " matrix [src][dst]");
      for (int src = 0; src < N; ++src) {
        const auto row = ints(m[size_t(src)], at + "bytes_sent[" + std::to_string(src) + "]", N);
        for (int d = 0; d < N; ++d) s.byte_count(l, src, d) = row[size_t(d)];
      }
    }
  }
  return s;
}

}  // namespace moe::runtime
