#pragma once
// Expert-load accounting: what users read to judge and tune their placement.
// Each rank counts what it routed, sent and computed; reduce() sums over the ranks.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::comm {
class Communicator;
}

namespace moe::runtime {

class Placement;

struct LoadStats {
  int n_layers = 0, n_experts = 0, world = 1;
  std::vector<int64_t> tokens;         // [layer, expert] routed (token, top-k slot) choices
  std::vector<int64_t> rows;           // [layer, src rank, dst rank] hidden-state rows sent
  std::vector<int64_t> rows_computed;  // [layer, rank] (row, expert) pairs run through an FFN
  std::vector<int64_t> bytes;          // [layer, src rank, dst rank] bytes of the exchanges: the
                                       // dispatched rows src -> dst and the rows returned
  int64_t steps = 0;

  LoadStats() = default;
  LoadStats(int n_layers, int n_experts, int world);

  int64_t& token_count(int l, int e) { return tokens[size_t(l) * n_experts + e]; }
  int64_t& row_count(int l, int s, int d) { return rows[(size_t(l) * world + s) * world + d]; }
  int64_t& computed(int l, int r) { return rows_computed[size_t(l) * world + r]; }
  int64_t& byte_count(int l, int s, int d) { return bytes[(size_t(l) * world + s) * world + d]; }
  int64_t byte_count(int l, int s, int d) const { return bytes[(size_t(l) * world + s) * world + d]; }
  int64_t token_count(int l, int e) const { return tokens[size_t(l) * n_experts + e]; }
  int64_t row_count(int l, int s, int d) const { return rows[(size_t(l) * world + s) * world + d]; }
  int64_t computed(int l, int r) const { return rows_computed[size_t(l) * world + r]; }

  // Sums every rank's counts into every rank's copy (a collective).
  void reduce(comm::Communicator& comm);

  // Tokens per device: the (token, slot) choices routed to experts, credited to the rank that
  // computed them (rows_computed).
  // Imbalance = max over mean; 1.0 is perfect balance.
  double expert_imbalance(int layer) const;
  double device_imbalance(int layer) const;
  double expert_imbalance_overall() const;
  double device_imbalance_overall() const;

  // Over all layers: routed (token, expert) choices; rows sent, one per (token, destination
  // rank), so fewer than routed where a token's experts share a rank; rows sent to another rank.
  struct RowTotals {
    int64_t routed = 0, sent = 0, remote = 0;
  };
  RowTotals row_totals() const;

  std::string table(const Placement& placement) const;  // human-readable, for stdout
  nlohmann::json to_json() const;
  // The counts of to_json()'s output (moe-run --stats-json, moe-cli stats --json): layers,
  // experts, world_size and per_layer's tokens_per_expert (required), rows_computed_per_rank and
  // rows_sent (zeros where absent). Throws InputError naming `source`, the field and what was
  // expected.
  static LoadStats from_json(const nlohmann::json& j, const std::string& source);
};

}  // namespace moe::runtime
