#include "tests/support/test_env.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>

#include "comm/mpi_communicator.h"
#include "comm/mpi_context.h"
#include "common/log.h"
#include "runtime/safetensors.h"

namespace moe::test {

namespace {
int* g_argc = nullptr;
char*** g_argv = nullptr;
std::unique_ptr<comm::MpiContext> g_mpi;
std::unique_ptr<comm::Communicator> g_world, g_self;

// MPI starts the first time a test asks for it (or at once under mpirun): a singleton's start
// and finish cost a third of a second, which most tests, and every listing of a binary's tests
// at build time, need not pay.
void ensure_mpi() {
  if (g_mpi) return;
  g_mpi = std::make_unique<comm::MpiContext>(g_argc, g_argv);
  g_world = g_mpi->make_communicator();
}

bool under_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

comm::Communicator& world() {
  ensure_mpi();
  return *g_world;
}
comm::Communicator& self() {
  ensure_mpi();
  if (!g_self) g_self = std::make_unique<comm::MpiCommunicator>(MPI_COMM_SELF);
  return *g_self;
}
const comm::MpiContext& mpi() {
  ensure_mpi();
  return *g_mpi;
}

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

// One main for every test binary. Under mpirun MPI is up first, only rank 0 prints progress,
// and every rank's failures are printed and fail its exit code; alone, MPI starts when a test
// first asks for the world, as a singleton that starts no daemon.
int main(int argc, char** argv) {
  using namespace moe::test;
  g_argc = &argc;
  g_argv = &argv;
  const bool job = under_mpirun();
  if (job)
    ensure_mpi();
  else
    setenv("OMPI_MCA_ess_singleton_isolated", "1", /*overwrite=*/0);
  ::testing::InitGoogleTest(&argc, argv);
  spdlog::set_level(spdlog::level::warn);  // the tests speak through GoogleTest
  if (job && g_mpi->world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  // A failure on any rank fails every rank, so mpirun's status reflects it.
  int64_t failed = rc != 0;
  if (g_world) g_world->all_reduce(&failed, 1, moe::comm::Communicator::Op::kMax);
  g_self.reset();
  g_world.reset();
  g_mpi.reset();
  return failed ? 1 : 0;
}
