#pragma once
// The load statistics as one SVG picture (moe-cli stats --plot): a heat map of tokens per
// (layer, expert) with the rank holding each expert marked, the rows each device computed
// (bars, with the mean), and the rows each rank pair exchanged (a matrix), over all layers.
#include <string>

#include "moe/v1/inference.pb.h"

namespace moe::launcher {

std::string stats_svg(const moe::v1::LoadStatsResponse& s, bool recent);

}  // namespace moe::launcher
