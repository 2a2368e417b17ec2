#include "runtime/routing_trace.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <fstream>
#include <sstream>
#include <tuple>

#include "comm/communicator.h"
#include "common/error.h"
#include "runtime/model_config.h"
#include "runtime/moe_layer.h"
#include "runtime/placement_file.h"

namespace moe::runtime {

namespace {
constexpr const char* kMagic = "moe-routing-trace 1";
}

nlohmann::json trace_header(const ModelConfig& cfg, const kernels::RowLayout& rows,
                            const Placement& placement) {
  nlohmann::json h;
  h["layers"] = cfg.num_hidden_layers;
  h["experts"] = cfg.num_local_experts;
  h["top_k"] = cfg.num_experts_per_tok;
  h["ranks"] = placement.world_size();
  h["hidden"] = cfg.hidden_size;
  h["intermediate"] = cfg.intermediate_size;
  h["wire_dtype"] = dtype_name(rows.dtype);
  h["row_bytes"] = rows.stride();
  h["back_row_bytes"] = int64_t(cfg.hidden_size) * int64_t(dtype_size(rows.dtype));
  h["placement"] = placement_json(placement);
  return h;
}

void RoutingTraceRecorder::record(int layer, const int32_t* experts, int T, int k) {
  if (layer == 0) ++step_;
  if (T == 0) return;
  std::string line = "S " + std::to_string(step_) + " " + std::to_string(layer) + " " +
                     std::to_string(rank_) + " " + std::to_string(T);
  for (int64_t i = 0; i < int64_t(T) * k; ++i) line += " " + std::to_string(experts[i]);
  lines_ += line + "\n";
}

void RoutingTraceRecorder::record_step_time(double total_s, const MoePhaseTimes& moe) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "W %d %d %.9g %.9g %.9g %.9g %.9g %.9g %.9g\n", step_, rank_,
                total_s, moe.route, moe.permute, moe.exchange, moe.experts, moe.combine, moe.wait);
  lines_ += buf;
}

void RoutingTraceRecorder::write(comm::Communicator& comm, const std::string& path,
                                 const nlohmann::json& header) const {
  std::vector<std::string> all;
  comm.gather_bytes(lines_, &all, 0);
  if (comm.rank() != 0) return;
  // Each rank's lines are in (step, layer) order; merge them into (step, layer, src).
  struct Line {
    int step, layer, src;
    std::string text;
  };
  std::vector<Line> lines;
  for (const auto& text : all) {
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) {
      Line x{0, 0, 0, l};
      if (l[0] == 'W') {  // after the step's S lines
        std::sscanf(l.c_str(), "W %d %d", &x.step, &x.src);
        x.layer = std::numeric_limits<int>::max();
      } else {
        std::sscanf(l.c_str(), "S %d %d %d", &x.step, &x.layer, &x.src);
      }
      lines.push_back(std::move(x));
    }
  }
  std::stable_sort(lines.begin(), lines.end(), [](const Line& a, const Line& b) {
    return std::tie(a.step, a.layer, a.src) < std::tie(b.step, b.layer, b.src);
  });
  std::ofstream f(path);
  if (!f) throw InputError(path + ": cannot open the trace file for writing");
  f << kMagic << "\n" << header.dump() << "\n";
  for (const auto& l : lines) f << l.text << "\n";
}

RoutingTrace RoutingTrace::read(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw InputError(path + ": cannot open the trace file");
  std::string line;
  if (!std::getline(f, line) || line != kMagic)
    throw InputError(path + ":1: expected '" + std::string(kMagic) +
                     "' (a trace from moe-run --trace)");
  RoutingTrace t;
  if (!std::getline(f, line)) throw InputError(path + ":2: missing the JSON header");
  try {
    t.header = nlohmann::json::parse(line);
    t.layers = t.header.at("layers").get<int>();
    t.experts = t.header.at("experts").get<int>();
    t.top_k = t.header.at("top_k").get<int>();
    t.ranks = t.header.at("ranks").get<int>();
  } catch (const nlohmann::json::exception& e) {
    throw InputError(path + ":2: the header is not JSON with layers, experts, top_k and ranks (" +
                     std::string(e.what()) + ")");
  }
  if (t.layers < 1 || t.experts < 1 || t.top_k < 1 || t.top_k > t.experts || t.ranks < 1)
    throw InputError(path + ":2: header counts out of range (layers, experts, ranks >= 1; "
                            "1 <= top_k <= experts)");
  int64_t n = 2;
  std::tuple<int, int, int> last{-1, 0, 0};
  while (std::getline(f, line)) {
    ++n;
    if (line.empty()) continue;
    const std::string at = path + ":" + std::to_string(n) + ": ";
    std::istringstream in(line);
    std::string tag;
    if (line[0] == 'W') {
      StepTime w;
      in >> tag >> w.step >> w.src >> w.total >> w.route >> w.permute >> w.exchange >> w.experts >>
          w.combine >> w.wait;
      std::string extra;
      if (!in || tag != "W" || (in >> extra))
        throw InputError(at + "expected 'W step src total route permute exchange experts "
                              "combine wait' (seconds)");
      if (w.step < 0 || w.src < 0 || w.src >= t.ranks)
        throw InputError(at + "step or source rank out of range (ranks " +
                         std::to_string(t.ranks) + ")");
      for (double v : {w.total, w.route, w.permute, w.exchange, w.experts, w.combine, w.wait})
        if (!(v >= 0) || v > 1e6) throw InputError(at + "a time below 0 or past 1e6 s");
      t.times.push_back(w);
      continue;
    }
    Record r;
    int64_t T = -1;
    in >> tag >> r.step >> r.layer >> r.src >> T;
    if (!in || tag != "S" || T < 1)
      throw InputError(at + "expected 'S step layer src T' and T * top_k expert ids, or a W line");
    if (r.step < 0 || r.layer < 0 || r.layer >= t.layers || r.src < 0 || r.src >= t.ranks)
      throw InputError(at + "step, layer or source rank out of range (layers " +
                       std::to_string(t.layers) + ", ranks " + std::to_string(t.ranks) + ")");
    const std::tuple<int, int, int> key{r.step, r.layer, r.src};
    if (key <= last) throw InputError(at + "records out of (step, layer, src) order");
    last = key;
    r.experts.resize(size_t(T) * t.top_k);
    for (auto& e : r.experts) {
      if (!(in >> e))
        throw InputError(at + "expected " + std::to_string(T * t.top_k) + " expert ids");
      if (e < 0 || e >= t.experts)
        throw InputError(at + "expert " + std::to_string(e) + " outside [0, " +
                         std::to_string(t.experts) + ")");
    }
    std::string extra;
    if (in >> extra) throw InputError(at + "more than T * top_k expert ids");
    t.steps = std::max(t.steps, r.step + 1);
    t.records.push_back(std::move(r));
  }
  return t;
}

}  // namespace moe::runtime
