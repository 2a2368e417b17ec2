// The MoE layer's dispatch ops on the GPU against their CPU references (the cases of
// tests/support/moe_cases.h: uneven placements, k above N, replicas, every token to one expert,
// a rank receiving nothing, T = 0, more than 65,536 rows), and the whole layer on the GPU: the
// same output as on the CPU, with one device-to-host copy and no host-to-device copy. The plans
// are integers and must be equal; the values are copies and fp32 sums in the same order, so
// they must be equal too. Skipped where no CUDA device is present.
#include <cuda_runtime.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "comm/staged_mpi_communicator.h"
#include "common/check.h"
#include "common/dtype.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_ops.h"
#include "runtime/moe_layer.h"
#include "tests/support/counting_ops.h"
#include "tests/support/moe_cases.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

using kernels::Buffer;
using kernels::RouteSlot;

template <class T>
Buffer put(kernels::Ops& ops, const std::vector<T>& v) {
  Buffer b = ops.alloc(std::max<size_t>(v.size(), 1) * sizeof(T));
  ops.upload(b.data(), v.data(), v.size() * sizeof(T));
  return b;
}
// A buffer of n elements with every byte 0xff first, so an element nothing wrote shows.
template <class T>
Buffer poisoned(kernels::Ops& ops, size_t n) {
  std::vector<unsigned char> ff(std::max<size_t>(n, 1) * sizeof(T), 0xff);
  return put(ops, ff);
}
template <class T>
std::vector<T> get(kernels::Ops& ops, const Buffer& b, size_t n) {
  std::vector<T> v(n);
  ops.download(v.data(), b.data(), n * sizeof(T));
  return v;
}

bool same(const RouteSlot& a, const RouteSlot& b) {
  return a.expert == b.expert && std::memcmp(&a.weight, &b.weight, sizeof(float)) == 0;
}

class CudaMoeOps : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
      GTEST_SKIP() << "no CUDA device: GPU MoE op tests skipped";
    gpu_ = kernels::make_cuda_ops(0, DType::kF32);
  }
  std::unique_ptr<kernels::Ops> gpu_;
  std::mt19937 rng_{99};
};

TEST_F(CudaMoeOps, DispatchLayoutMatchesCpu) {
  for (const auto& c : layout_cases()) {
    SCOPED_TRACE(c.name);
    const size_t s_max = size_t(c.T) * std::min(c.k, c.N);
    std::vector<int32_t> counts(size_t(c.N + c.E * c.N)), token(s_max), home(size_t(c.T) * c.k),
        slot_rank(size_t(c.T) * c.k);
    std::vector<RouteSlot> slots(s_max * c.k);
    kernels::DispatchLayoutParams p;
    p.expert = c.expert.data();
    p.weight = c.weight.data();
    p.route = c.route.data();
    p.counts = counts.data();
    p.slot_rank = slot_rank.data();
    p.send_token = token.data();
    p.send_slots = slots.data();
    p.home = home.data();
    p.T = c.T;
    p.k = c.k;
    p.n_experts = c.E;
    p.n_ranks = c.N;
    kernels::cpu::dispatch_layout(p);
    size_t S = 0;
    for (int d = 0; d < c.N; ++d) S += size_t(counts[size_t(d)]);

    Buffer de = put(*gpu_, c.expert), dw = put(*gpu_, c.weight), dr = put(*gpu_, c.route);
    Buffer dc = poisoned<int32_t>(*gpu_, counts.size()), dt = poisoned<int32_t>(*gpu_, s_max),
           ds = poisoned<RouteSlot>(*gpu_, s_max * c.k),
           dh = poisoned<int32_t>(*gpu_, home.size()),
           dk = poisoned<int32_t>(*gpu_, slot_rank.size());
    kernels::DispatchLayoutParams g = p;
    g.expert = de.as<int32_t>();
    g.weight = dw.as<float>();
    g.route = dr.as<int32_t>();
    g.counts = dc.as<int32_t>();
    g.slot_rank = dk.as<int32_t>();
    g.send_token = dt.as<int32_t>();
    g.send_slots = ds.as<RouteSlot>();
    g.home = dh.as<int32_t>();
    gpu_->dispatch_layout(g);
    EXPECT_EQ(get<int32_t>(*gpu_, dc, counts.size()), counts);
    EXPECT_EQ(get<int32_t>(*gpu_, dk, slot_rank.size()), slot_rank);
    auto gt = get<int32_t>(*gpu_, dt, S);
    EXPECT_EQ(gt, std::vector<int32_t>(token.begin(), token.begin() + long(S)));
    EXPECT_EQ(get<int32_t>(*gpu_, dh, home.size()), home);
    const auto gs = get<RouteSlot>(*gpu_, ds, S * c.k);
    int bad = 0;
    for (size_t i = 0; i < gs.size() && bad < 10; ++i)
      if (!same(gs[i], slots[i])) {
        ++bad;
        ADD_FAILURE() << "send slot " << i << ": gpu (" << gs[i].expert << ", " << gs[i].weight
                      << "), cpu (" << slots[i].expert << ", " << slots[i].weight << ")";
      }
  }
}

TEST_F(CudaMoeOps, GroupByExpertMatchesCpu) {
  for (const auto& c : group_cases()) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(c.name + " " + dtype_name(dt));
      const kernels::RowLayout L{7, c.k, dt};
      const auto payload = payload_of(c, L, std::vector<float>(size_t(c.R) * 7, 0.5f));
      const size_t pairs = size_t(c.R) * c.k;
      std::vector<int32_t> offsets(size_t(c.n_local + 1)), gather(pairs), slot_row(pairs);
      std::vector<float> slot_weight(pairs);
      kernels::GroupByExpertParams p;
      p.payload = payload.data();
      p.layout = L;
      p.local_index = c.local_index.data();
      p.offsets = offsets.data();
      p.gather = gather.data();
      p.slot_row = slot_row.data();
      p.slot_weight = slot_weight.data();
      p.R = c.R;
      p.n_experts = c.E;
      p.n_local = c.n_local;
      kernels::cpu::group_by_expert(p);
      const size_t G = size_t(offsets.back());

      Buffer dp = put(*gpu_, payload), dl = put(*gpu_, c.local_index);
      Buffer dof = poisoned<int32_t>(*gpu_, offsets.size()), dg = poisoned<int32_t>(*gpu_, pairs),
             dsr = poisoned<int32_t>(*gpu_, pairs), dsw = poisoned<float>(*gpu_, pairs);
      kernels::GroupByExpertParams g = p;
      g.payload = dp.data();
      g.local_index = dl.as<int32_t>();
      g.offsets = dof.as<int32_t>();
      g.gather = dg.as<int32_t>();
      g.slot_row = dsr.as<int32_t>();
      g.slot_weight = dsw.as<float>();
      gpu_->group_by_expert(g);
      EXPECT_EQ(get<int32_t>(*gpu_, dof, offsets.size()), offsets);
      EXPECT_EQ(get<int32_t>(*gpu_, dg, G),
                std::vector<int32_t>(gather.begin(), gather.begin() + long(G)));
      EXPECT_EQ(get<int32_t>(*gpu_, dsr, pairs), slot_row);
      EXPECT_EQ(get<float>(*gpu_, dsw, pairs), slot_weight);
    }
  }
}

TEST_F(CudaMoeOps, PackAndUnpackMatchCpu) {
  std::normal_distribution<float> nd(0.0f, 2.0f);
  struct Shape { int T, S, hidden, k; };
  for (const Shape sh : {Shape{5, 9, 1, 2}, Shape{40, 77, 4097, 3}, Shape{64, 70000, 8, 2}}) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE("S " + std::to_string(sh.S) + " hidden " + std::to_string(sh.hidden) + " " +
                   dtype_name(dt));
      const kernels::RowLayout L{sh.hidden, sh.k, dt};
      std::vector<float> x(size_t(sh.T) * sh.hidden);
      for (auto& v : x) v = nd(rng_);
      std::vector<int32_t> token(static_cast<size_t>(sh.S));
      std::vector<RouteSlot> slots(size_t(sh.S) * sh.k);
      for (int i = 0; i < sh.S; ++i) token[size_t(i)] = (i * 7) % sh.T;
      for (size_t i = 0; i < slots.size(); ++i) slots[i] = {int32_t(i % 5) - 1, float(i) * 0.5f};
      std::vector<char> want(size_t(sh.S) * L.stride());
      kernels::cpu::pack_rows({x.data(), token.data(), slots.data(), want.data(), L, sh.S});
      Buffer dx = put(*gpu_, x), dtok = put(*gpu_, token), dsl = put(*gpu_, slots);
      Buffer dpay = poisoned<char>(*gpu_, want.size());
      gpu_->pack_rows({dx.as<float>(), dtok.as<int32_t>(), dsl.as<RouteSlot>(), dpay.data(), L,
                       sh.S});
      EXPECT_TRUE(get<char>(*gpu_, dpay, want.size()) == want) << "payload bytes differ";

      std::vector<int32_t> index(size_t(sh.S) + 1);
      for (size_t i = 0; i < index.size(); ++i) index[i] = int32_t((i * 13) % size_t(sh.S));
      index[1] = -1;
      std::vector<float> out(index.size() * size_t(sh.hidden));
      kernels::cpu::unpack_rows({want.data(), L, index.data(), out.data(), int(index.size())});
      Buffer didx = put(*gpu_, index), dout = poisoned<float>(*gpu_, out.size());
      gpu_->unpack_rows({dpay.data(), L, didx.as<int32_t>(), dout.as<float>(), int(index.size())});
      EXPECT_TRUE(get<float>(*gpu_, dout, out.size()) == out) << "unpacked rows differ";
    }
  }
}

TEST_F(CudaMoeOps, WeightedCombineInAndOutOfBf16MatchesCpu) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int cols = 300, k = 3, rows_y = 50;
  for (int R : {1, 70000}) {
    std::vector<float> y(size_t(rows_y) * cols);
    for (auto& v : y) v = nd(rng_);
    std::vector<uint16_t> yb(y.size());
    for (size_t i = 0; i < y.size(); ++i) yb[i] = f32_to_bf16(y[i]);
    std::vector<int32_t> index(size_t(R) * k);
    for (size_t i = 0; i < index.size(); ++i) index[i] = i % 4 == 3 ? -1 : int32_t(i % rows_y);
    std::vector<float> weight(index.size());
    for (auto& v : weight) v = nd(rng_);
    for (DType in : {DType::kF32, DType::kBF16})
      for (DType out : {DType::kF32, DType::kBF16})
        for (bool weighted : {false, true}) {
          SCOPED_TRACE(std::string("R ") + std::to_string(R) + " in " + dtype_name(in) +
                       " out " + dtype_name(out) + (weighted ? " weighted" : " ones"));
          const size_t out_bytes = size_t(R) * cols * dtype_size(out);
          std::vector<char> want(out_bytes);
          kernels::WeightedCombineParams p;
          p.y = in == DType::kBF16 ? static_cast<const void*>(yb.data()) : y.data();
          p.y_dtype = in;
          p.index = index.data();
          p.weight = weighted ? weight.data() : nullptr;
          p.out = want.data();
          p.out_dtype = out;
          p.R = R;
          p.k = k;
          p.cols = cols;
          kernels::cpu::weighted_combine(p);
          Buffer dy = in == DType::kBF16 ? put(*gpu_, yb) : put(*gpu_, y);
          Buffer di = put(*gpu_, index), dw = put(*gpu_, weight);
          Buffer dout = poisoned<char>(*gpu_, out_bytes);
          kernels::WeightedCombineParams g = p;
          g.y = dy.data();
          g.index = di.as<int32_t>();
          g.weight = weighted ? dw.as<float>() : nullptr;
          g.out = dout.data();
          gpu_->weighted_combine(g);
          EXPECT_TRUE(get<char>(*gpu_, dout, out_bytes) == want) << "combined rows differ";
        }
  }
}

// The whole layer on the GPU (rows through MPI staged in pinned memory, so it runs at any rank
// count on one GPU): what the CPU layer computes at the same precision, and one copy back.
TEST_F(CudaMoeOps, MoeLayerMatchesCpuWithOneCopyBack) {
  comm::Communicator& world_comm = world();
  const int me = world_comm.rank(), N = world_comm.size();
  for (DType precision : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(dtype_name(precision));
    runtime::ModelConfig cfg;
    cfg.hidden_size = 64;
    cfg.intermediate_size = 96;
    cfg.num_local_experts = 8;
    cfg.num_experts_per_tok = 2;
    cfg.num_hidden_layers = 1;
    const auto placement =
        runtime::Placement::make(runtime::Placement::Kind::kContiguous, 1, 8, N);
    auto cpu = kernels::make_cpu_ops(precision);
    auto gpu = kernels::make_cuda_ops(0, precision);
    CountingOps counting(*gpu);
    comm::StagedMpiCommunicator staged(world_comm, kernels::cuda_stream(*gpu));

    std::mt19937 shared(3);  // every rank builds the same weights
    std::normal_distribution<float> nd(0.0f, 0.2f);
    auto random = [&](size_t n) {
      std::vector<float> v(n);
      for (auto& x : v) x = nd(shared);
      return v;
    };
    std::vector<Buffer> storage;
    runtime::LayerWeights lc, lg;
    auto both = [&](const std::vector<float>& v, int64_t rows, int64_t cols, kernels::Weight& c,
                    kernels::Weight& g) {
      storage.emplace_back();
      c = cpu->upload_weight(storage.back(), v.data(), rows, cols);
      storage.emplace_back();
      g = gpu->upload_weight(storage.back(), v.data(), rows, cols);
    };
    both(random(size_t(8) * 64), 8, 64, lc.gate, lg.gate);
    lc.local_experts = lg.local_experts = placement.local_experts(0, me);
    for (int e = 0; e < 8; ++e) {
      const auto w13 = random(size_t(2) * 96 * 64), w2 = random(size_t(64) * 96);
      if (!placement.holds(0, e, me)) continue;
      lc.w13.emplace_back();
      lg.w13.emplace_back();
      both(w13, 2 * 96, 64, lc.w13.back(), lg.w13.back());
      lc.w2.emplace_back();
      lg.w2.emplace_back();
      both(w2, 64, 96, lc.w2.back(), lg.w2.back());
    }
    const int T = 33 + 10 * me;
    std::mt19937 rng(50 + me);
    std::vector<float> x(size_t(T) * 64);
    for (auto& v : x) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);

    std::vector<float> want(x.size());
    runtime::MoeLayer layer_c(cfg, placement, *cpu, world_comm, nullptr);
    layer_c.forward(0, lc, x.data(), T, want.data());

    runtime::MoeLayer layer_g(cfg, placement, counting, staged, nullptr);
    layer_g.reserve_for(T);
    Buffer dx = put(*gpu, x), dout = gpu->alloc(x.size() * sizeof(float));
    counting.reset_counts();
    layer_g.forward(0, lg, dx.as<float>(), T, dout.as<float>());
    EXPECT_EQ(counting.downloads, 1) << "the counts, and nothing else";
    EXPECT_EQ(counting.uploads, 0);
    const auto got = get<float>(*gpu, dout, x.size());
    // The GEMMs sum in another order than OpenBLAS (and at bf16 that can move a rounding of a
    // returned row by one bf16 step); the plan and the combine are exact.
    const float tol = precision == DType::kBF16 ? 1e-2f : 1e-4f;
    EXPECT_TRUE(all_close(got.data(), want.data(), got.size(), tol, tol, "MoE layer gpu vs cpu"));
  }
}

}  // namespace
}  // namespace moe::test
