// The CPU kernels' e^x (kernels/cpu/lanes.h exp_lanes) and the SiLU that uses it: within 1 ulp
// of the exact value over the range it promises, its edges as documented, and silu_mul the
// formula it implements.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/lanes.h"

namespace moe::kernels::cpu {
namespace {

// e^x of every element, 16 at a time.
std::vector<float> exp_of(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); i += kLanes) {
    float in[kLanes] = {}, res[kLanes];
    for (size_t j = 0; j < kLanes && i + j < x.size(); ++j) in[j] = x[i + j];
    store_lanes(res, exp_lanes(load_lanes(in)));
    for (size_t j = 0; j < kLanes && i + j < x.size(); ++j) out[i + j] = res[j];
  }
  return out;
}

// |got - want| in units of the last place of the float nearest `want`.
double ulps(float got, double want) {
  const float w = float(want);
  const double ulp = double(std::nextafter(w, std::numeric_limits<float>::infinity())) - w;
  return std::fabs(double(got) - want) / ulp;
}

TEST(CpuExp, WithinOneUlpOverItsRange) {
  std::vector<float> x;
  for (double v = -87.3; v <= 88.3; v += 0.0007) x.push_back(float(v));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 0.5f, -0.5f, 0.34657359f, -0.34657359f, 1.0f})
    x.push_back(v);
  const std::vector<float> e = exp_of(x);
  double worst = 0;
  float at = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double u = ulps(e[i], std::exp(double(x[i])));
    if (u > worst) {
      worst = u;
      at = x[i];
    }
  }
  std::printf("[ figures  ] exp_lanes: worst %.2f ulp (at x = %.6g) over %zu points\n", worst,
              double(at), x.size());
  EXPECT_LE(worst, 1.0) << "at x = " << at;
  EXPECT_EQ(exp_of({0.0f})[0], 1.0f);
}

TEST(CpuExp, EdgesAreZeroInfinityAndNan) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> e =
      exp_of({-88.0f, -1000.0f, -inf, 88.5f, 1000.0f, inf, std::nanf("")});
  EXPECT_EQ(e[0], 0.0f);
  EXPECT_EQ(e[1], 0.0f);
  EXPECT_EQ(e[2], 0.0f);
  EXPECT_EQ(e[3], inf);
  EXPECT_EQ(e[4], inf);
  EXPECT_EQ(e[5], inf);
  EXPECT_TRUE(std::isnan(e[6]));
}

TEST(CpuExp, SiluMulIsTheFormulaOnEveryElement) {
  // Rows of an odd length: the tail goes through the same lanes as the rest.
  const int M = 3, I = 37;
  std::vector<float> gate_up(size_t(M) * 2 * I), out(size_t(M) * I);
  for (size_t i = 0; i < gate_up.size(); ++i) gate_up[i] = float(std::sin(double(i) * 0.7) * 12.0);
  gate_up[5] = -100.0f;  // e^100 is past the range: silu is -0
  gate_up[6] = 100.0f;   // e^-100 is under it: silu is g itself
  silu_mul({gate_up.data(), out.data(), M, I});
  for (int m = 0; m < M; ++m)
    for (int i = 0; i < I; ++i) {
      const double g = gate_up[size_t(m) * 2 * I + i], u = gate_up[size_t(m) * 2 * I + I + i];
      const double want = g / (1.0 + std::exp(-g)) * u;
      EXPECT_NEAR(out[size_t(m) * I + i], want, 4e-7 * std::fabs(want) + 1e-30)
          << "row " << m << ", element " << i;
    }
}

}  // namespace
}  // namespace moe::kernels::cpu
