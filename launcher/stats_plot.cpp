#include "launcher/stats_plot.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace moe::launcher {

namespace {

// White to red by v / max.
std::string heat(double v, double max) {
  const double t = max > 0 ? std::clamp(v / max, 0.0, 1.0) : 0.0;
  char c[32];
  std::snprintf(c, sizeof c, "rgb(255,%d,%d)", int(255 * (1 - t)), int(255 * (1 - t)));
  return c;
}

// Distinct hues for ranks (the placement stripe).
std::string rank_color(int r) {
  static const char* k[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd",
                            "#8c564b", "#e377c2", "#7f7f7f", "#17becf"};
  return k[r % 8];
}

struct Svg {
  std::string out;
  char buf[512];
  void rect(double x, double y, double w, double h, const std::string& fill,
            const char* extra = "") {
    std::snprintf(buf, sizeof buf,
                  "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" %s/>\n",
                  x, y, w, h, fill.c_str(), extra);
    out += buf;
  }
  void text(double x, double y, const std::string& t, int size = 11, const char* anchor = "start") {
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\" "
                  "font-family=\"sans-serif\">",
                  x, y, size, anchor);
    out += buf;
    for (char c : t) {  // the only text here is ours, but escape all the same
      if (c == '<') out += "&lt;";
      else if (c == '&') out += "&amp;";
      else out += c;
    }
    out += "</text>\n";
  }
};

}  // namespace

std::string stats_svg(const moe::v1::LoadStatsResponse& s, bool recent) {
  const int L = s.layers_size(), E = s.experts(), R = s.ranks();
  const double cell = std::clamp(600.0 / std::max(E, 1), 8.0, 36.0);
  const double left = 70, top = 60;
  const double heat_w = cell * E, heat_h = cell * L;
  const double bars_top = top + heat_h + 80, bars_h = 160, bar_w = std::clamp(600.0 / std::max(R, 1), 6.0, 40.0);
  const double mat_top = bars_top + bars_h + 80, mcell = std::clamp(320.0 / std::max(R, 1), 4.0, 32.0);
  const double width = left + std::max({heat_w, bar_w * R, mcell * R}) + 160;
  const double height = mat_top + mcell * R + 60;

  Svg g;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "viewBox=\"0 0 %.0f %.0f\">\n",
                width, height, width, height);
  g.out += buf;
  g.rect(0, 0, width, height, "white");
  std::snprintf(buf, sizeof buf,
                "Expert load over %s (%.1f s): %d layers x %d experts on %d ranks; expert "
                "imbalance %.2f, device imbalance %.2f",
                recent ? "the recent window" : "the whole run", s.window_seconds(), L, E, R,
                s.expert_imbalance(), s.device_imbalance());
  g.text(10, 20, buf, 13);

  // 1. Tokens per (layer, expert); a stripe above each column gives the rank holding it.
  g.text(left, top - 24, "Tokens per expert (routed top-k choices), per layer; stripe: rank holding it", 12);
  int64_t max_tokens = 0;
  for (const auto& l : s.layers())
    for (auto v : l.tokens_per_expert()) max_tokens = std::max(max_tokens, v);
  for (int li = 0; li < L; ++li) {
    const auto& l = s.layers(li);
    g.text(left - 6, top + cell * (li + 0.7), "layer " + std::to_string(l.layer()), 10, "end");
    for (int e = 0; e < E && e < l.tokens_per_expert_size(); ++e) {
      const int64_t v = l.tokens_per_expert(e);
      g.rect(left + cell * e, top + cell * li, cell - 1, cell - 1, heat(double(v), double(max_tokens)),
             "stroke=\"#ddd\"");
      if (e < l.expert_rank_size() && li == 0)
        g.rect(left + cell * e, top - 8, cell - 1, 6, rank_color(l.expert_rank(e)));
      if (cell >= 28) g.text(left + cell * (e + 0.5), top + cell * (li + 0.65), std::to_string(v), 8, "middle");
    }
  }
  for (int e = 0; e < E; e += std::max(1, E / 16))
    g.text(left + cell * (e + 0.5), top + heat_h + 14, "e" + std::to_string(e), 9, "middle");
  std::snprintf(buf, sizeof buf, "max %lld", (long long)max_tokens);
  g.text(left + heat_w + 10, top + 12, buf, 10);

  // 2. Rows computed per rank, all layers; the mean as a line.
  std::vector<int64_t> rows(size_t(R), 0);
  for (const auto& l : s.layers())
    for (int r = 0; r < R && r < l.rows_computed_per_rank_size(); ++r) rows[size_t(r)] += l.rows_computed_per_rank(r);
  const int64_t max_rows = std::max<int64_t>(1, *std::max_element(rows.begin(), rows.end()));
  double mean = 0;
  for (auto v : rows) mean += double(v) / std::max(R, 1);
  g.text(left, bars_top - 20, "(row, expert) pairs computed per rank, all layers; line: the mean", 12);
  for (int r = 0; r < R; ++r) {
    const double h = bars_h * double(rows[size_t(r)]) / double(max_rows);
    g.rect(left + bar_w * r, bars_top + bars_h - h, bar_w - 2, h, rank_color(r));
    if (bar_w >= 20) g.text(left + bar_w * (r + 0.5), bars_top + bars_h + 14, "r" + std::to_string(r), 9, "middle");
  }
  const double my = bars_top + bars_h - bars_h * mean / double(max_rows);
  std::snprintf(buf, sizeof buf,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
                "stroke-dasharray=\"4 3\"/>\n",
                left, my, left + bar_w * R, my);
  g.out += buf;
  std::snprintf(buf, sizeof buf, "max %lld, mean %.0f", (long long)max_rows, mean);
  g.text(left + bar_w * R + 10, bars_top + 12, buf, 10);

  // 3. Rows sent from each rank (row) to each rank (column), all layers.
  std::vector<int64_t> pair(size_t(R) * R, 0);
  for (const auto& l : s.layers())
    for (int i = 0; i < R * R && i < l.rows_sent_size(); ++i) pair[size_t(i)] += l.rows_sent(i);
  const int64_t max_pair = std::max<int64_t>(1, *std::max_element(pair.begin(), pair.end()));
  g.text(left, mat_top - 20, "Rows sent, source rank (row) to destination rank (column), all layers", 12);
  for (int a = 0; a < R; ++a)
    for (int b = 0; b < R; ++b)
      g.rect(left + mcell * b, mat_top + mcell * a, mcell - 1, mcell - 1,
             heat(double(pair[size_t(a) * R + b]), double(max_pair)), "stroke=\"#ddd\"");
  std::snprintf(buf, sizeof buf, "max %lld", (long long)max_pair);
  g.text(left + mcell * R + 10, mat_top + 12, buf, 10);
  g.out += "</svg>\n";
  return g.out;
}

}  // namespace moe::launcher
