#include "tests/support/test_env.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "comm/mpi_context.h"
#include "common/log.h"
#include "runtime/safetensors.h"

namespace moe::test {

namespace {
std::unique_ptr<comm::Communicator> g_world;
const comm::MpiContext* g_mpi = nullptr;
}

comm::Communicator& world() { return *g_world; }
const comm::MpiContext& mpi() { return *g_mpi; }

std::string data_dir(const std::string& name) {
  // $MOE_TEST_DATA wins over the build's path: a bundle run elsewhere (scripts/device_run.sh).
  const char* env = std::getenv("MOE_TEST_DATA");
  return std::string(env && *env ? env : MOE_TEST_DATA) + "/" + name;
}

Reference load_reference(const std::string& name) {
  Reference ref;
  ref.name = name;
  const std::string dir = data_dir(name);
  ref.checkpoint = dir + "/checkpoint";
  std::ifstream in(dir + "/reference.json");
  if (!in) throw std::runtime_error("missing " + dir + "/reference.json");
  ref.meta = nlohmann::json::parse(in);
  auto st = runtime::SafetensorsFile::open(dir + "/reference.safetensors");
  const auto& ps = ref.meta["prompts"];
  for (size_t i = 0; i < ps.size(); ++i) {
    ReferencePrompt p;
    p.prompt_ids = ps[i]["prompt_ids"].get<std::vector<int32_t>>();
    p.decode_ids = ps[i]["decode_ids"].get<std::vector<int32_t>>();
    p.generated_ids = ps[i]["generated_ids"].get<std::vector<int32_t>>();
    p.hit_eos = ps[i].value("hit_eos", false);
    for (auto [key, dst] : {std::pair{"prefill_logits", &p.prefill_logits},
                            std::pair{"decode_logits", &p.decode_logits}}) {
      const auto v = st.get("prompt" + std::to_string(i) + "." + key);
      dst->resize(size_t(v.numel()));
      convert_to_f32(v.data, v.dtype, dst->size(), dst->data());
    }
    ref.prompts.push_back(std::move(p));
  }
  return ref;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

::testing::AssertionResult all_close(const float* got, const float* want, size_t n, float atol,
                                     float rtol, const std::string& what) {
  size_t bad = 0;
  std::ostringstream os;
  for (size_t i = 0; i < n; ++i) {
    const float tol = atol + rtol * std::fabs(want[i]);
    if (!(std::fabs(got[i] - want[i]) <= tol)) {
      if (bad < 10)
        os << "\n  " << what << "[" << i << "]: got " << got[i] << ", want " << want[i]
           << ", |diff| " << std::fabs(got[i] - want[i]) << " > " << tol;
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << n << " values of " << what
                                       << " outside atol " << atol << " + rtol " << rtol
                                       << " (max |diff| " << max_abs_diff(got, want, n) << ")"
                                       << os.str() << (bad > 10 ? "\n  ..." : "");
}

}  // namespace moe::test

// One main for every test binary: MPI up first, then GoogleTest. Under mpirun only rank 0
// prints progress, but every rank's failures are printed and fail its exit code.
int main(int argc, char** argv) {
  moe::comm::MpiContext mpi(&argc, &argv);
  moe::test::g_mpi = &mpi;
  moe::test::g_world = mpi.make_communicator();
  ::testing::InitGoogleTest(&argc, argv);
  spdlog::set_level(spdlog::level::warn);  // the tests speak through GoogleTest
  if (mpi.world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  // A failure on any rank fails every rank, so mpirun's status reflects it.
  int64_t failed = rc != 0;
  moe::test::g_world->all_reduce(&failed, 1, moe::comm::Communicator::Op::kMax);
  moe::test::g_world.reset();
  return failed ? 1 : 0;
}
