// The made-up routing moe-sim --loads replays (runtime/synthetic_routing.h): each token's
// top-k experts are distinct and have load, the choices follow the load distribution (a
// chi-square test with a fixed seed, so it cannot flake), the same (seed, step, layer, source)
// always gives the same choices, and bad distributions are refused naming the layer.
#include <set>

#include "common/error.h"
#include "runtime/synthetic_routing.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using runtime::SyntheticRouting;

TEST(SyntheticRouting, TokensChooseDistinctExpertsWithLoad) {
  SyntheticRouting r({{5, 0, 1, 3, 0, 2}, {1, 1, 1, 1, 1, 1}}, 3, 500, 7);
  for (int layer = 0; layer < 4; ++layer) {  // layers 2 and 3 replay the loads of 0 and 1
    const auto c = r.choices(0, layer, 1);
    ASSERT_EQ(c.size(), 500u * 3);
    for (int t = 0; t < 500; ++t) {
      std::set<int32_t> mine(c.begin() + t * 3, c.begin() + t * 3 + 3);
      ASSERT_EQ(mine.size(), 3u) << "token " << t << " chose an expert twice";
      if (layer % 2 == 0) {
        ASSERT_EQ(mine.count(1), 0u) << "expert 1 has no load";
        ASSERT_EQ(mine.count(4), 0u) << "expert 4 has no load";
      }
    }
  }
}

TEST(SyntheticRouting, TopOneFollowsTheLoads) {
  const std::vector<double> w = {8, 4, 2, 1, 1, 0, 3, 5};
  double total = 0;
  for (double v : w) total += v;
  SyntheticRouting r({w}, 1, 4000, 12345);
  std::vector<int64_t> seen(w.size(), 0);
  for (int step = 0; step < 5; ++step)
    for (int32_t e : r.choices(step, 0, step % 3)) ++seen[size_t(e)];
  const double n = 5 * 4000;
  double chi2 = 0;
  int dof = -1;
  for (size_t e = 0; e < w.size(); ++e) {
    if (w[e] == 0) {
      EXPECT_EQ(seen[e], 0) << "expert " << e << " has no load";
      continue;
    }
    const double expect = n * w[e] / total;
    chi2 += (seen[e] - expect) * (seen[e] - expect) / expect;
    ++dof;
  }
  // 6 degrees of freedom: 22.46 is the 0.999 quantile.
  EXPECT_EQ(dof, 6);
  EXPECT_LT(chi2, 22.46) << "choices do not follow the loads";
}

TEST(SyntheticRouting, SameSeedStepLayerAndSourceGiveTheSameChoices) {
  SyntheticRouting a({{1, 2, 3, 4}}, 2, 64, 99), b({{1, 2, 3, 4}}, 2, 64, 99), c({{1, 2, 3, 4}}, 2, 64, 100);
  const auto first = a.choices(3, 0, 5);
  a.choices(0, 0, 0);
  EXPECT_EQ(a.choices(3, 0, 5), first) << "a call in between changed the choices";
  EXPECT_EQ(b.choices(3, 0, 5), first) << "another instance with the same seed";
  EXPECT_NE(a.choices(3, 0, 6), first) << "another source should route other tokens";
  EXPECT_NE(a.choices(4, 0, 5), first) << "another step should route other tokens";
  EXPECT_NE(c.choices(3, 0, 5), first) << "another seed should route other tokens";
}

TEST(SyntheticRouting, BadDistributionsAreRefusedNamingTheLayer) {
  auto refused = [](std::vector<std::vector<double>> w, int k, const std::string& says) {
    try {
      SyntheticRouting(std::move(w), k, 8, 0);
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
      return;
    }
    ADD_FAILURE() << "accepted; expected an error saying " << says;
  };
  refused({{1, 0, 0, 0}, {1, 1, 1, 1}}, 2, "layer 0 has load on 1 experts, fewer than top_k = 2");
  refused({{1, 1}, {1, -1}}, 1, "layer 1 has a load below 0");
  refused({{1, 1}, {1, 1, 1}}, 1, "layer 1 has 3 experts, layer 0 2");
  refused({}, 1, "no layers or experts");
  refused({{1, 1}}, 0, "top_k is 0, expected >= 1");
}

}  // namespace
}  // namespace moe::test
