#include "runtime/moe_layer.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "common/error.h"

namespace moe::runtime {

namespace {
// Adds the time since the last lap to `*into` and restarts.
struct Lap {
  std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
  void operator()(double* into) {
    const auto now = std::chrono::steady_clock::now();
    *into += std::chrono::duration<double>(now - t).count();
    t = now;
  }
};

// displs[i] = sum of counts[0, i); returns the total.
int64_t prefix(const std::vector<int64_t>& counts, std::vector<int64_t>& displs) {
  int64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    displs[i] = total;
    total += counts[i];
  }
  return total;
}
}  // namespace

MoeLayer::MoeLayer(const ModelConfig& cfg, const Placement& placement, kernels::Ops& ops,
                   comm::Communicator& comm, LoadStats* stats)
    : cfg_(cfg), ops_(ops), comm_(comm), stats_(stats),
      n_ranks_(comm.size()), me_(comm.rank()), n_experts_(cfg.num_local_experts),
      k_(cfg.num_experts_per_tok),
      rows_{cfg.hidden_size, cfg.num_experts_per_tok, ops.precision()},
      back_row_bytes_(size_t(cfg.hidden_size) * dtype_size(ops.precision())) {
  set_placement(placement);
  const int E = n_experts_, N = n_ranks_;
  counts_ = ops_.alloc(size_t(N + E * N) * sizeof(int32_t));
  h_counts_.assign(size_t(N + E * N), 0);
  send_blocks_.assign(size_t(N) * (1 + E), 0);
  recv_blocks_.assign(size_t(N) * (1 + E), 0);
  send_counts_.assign(N, 0);
  recv_counts_.assign(N, 0);
  send_displs_.assign(N, 0);
  recv_displs_.assign(N, 0);
}

void MoeLayer::set_placement(const Placement& placement) {
  MOE_CHECK(placement.world_size() == n_ranks_ && placement.n_experts() == n_experts_ &&
                placement.n_layers() >= cfg_.num_hidden_layers,
            "MoE layer: the placement (" + std::to_string(placement.n_layers()) + " layers, " +
                std::to_string(placement.n_experts()) + " experts, " +
                std::to_string(placement.world_size()) + " ranks) does not fit the model and " +
                "world (" + std::to_string(cfg_.num_hidden_layers) + ", " +
                std::to_string(n_experts_) + ", " + std::to_string(n_ranks_) + ")");
  const int L = placement.n_layers(), E = n_experts_;
  route_host_.assign(size_t(L) * E * kernels::kRouteWheel, 0);
  local_index_host_.assign(size_t(L) * E, -1);
  for (int l = 0; l < L; ++l) {
    const auto wheel = placement.route_wheel(l, me_);
    std::copy(wheel.begin(), wheel.end(), route_host_.begin() + long(l) * E * kernels::kRouteWheel);
    const auto local = placement.local_experts(l, me_);
    for (size_t i = 0; i < local.size(); ++i) local_index_host_[size_t(l) * E + local[i]] = int32_t(i);
  }
  // The per-step path uploads nothing: the tables change only here.
  reserve(route_, route_host_.size() * sizeof(int32_t));
  reserve(local_index_, local_index_host_.size() * sizeof(int32_t));
  ops_.upload(route_.data(), route_host_.data(), route_host_.size() * sizeof(int32_t));
  ops_.upload(local_index_.data(), local_index_host_.data(),
              local_index_host_.size() * sizeof(int32_t));
}

kernels::RowLayout MoeLayer::row_layout() const { return rows_; }

template <class Lap>
void MoeLayer::before_exchange(Lap& lap, double* into) {
  if (!timing_barriers_) return lap(into);
  ops_.synchronize();
  lap(into);
  comm_.barrier();
  lap(&times_.wait);
}

void MoeLayer::reserve(kernels::Buffer& buf, size_t bytes) {
  if (buf.bytes() < bytes) buf = ops_.alloc(std::max(bytes, buf.bytes() * 3 / 2));
}

void MoeLayer::reserve_for(int max_tokens) {
  const int64_t E = n_experts_, k = k_, N = n_ranks_;
  const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int64_t T = std::max(max_tokens, 1);
  const int64_t S = T * std::min(k, N);  // rows sent: one per (token, destination rank)
  const int64_t R = N * S;               // rows received, if every rank sends all of its here
  const int64_t G = N * T * k;           // (row, local expert) pairs: each routed choice once
  const int64_t C = std::min<int64_t>(G, kExpertChunkRows);
  const size_t f = sizeof(float), i32 = sizeof(int32_t);
  reserve(logits_, size_t(T * E) * f);
  reserve(expert_, size_t(T * k) * i32);
  reserve(weight_, size_t(T * k) * f);
  reserve(slot_rank_, size_t(T * k) * i32);
  reserve(send_token_, size_t(S) * i32);
  reserve(send_slots_, size_t(S * k) * sizeof(RouteSlot));
  reserve(home_, size_t(T * k) * i32);
  reserve(send_payload_, size_t(S) * rows_.stride());
  reserve(recv_payload_, size_t(R) * rows_.stride());
  reserve(offsets_, size_t(E + 1) * i32);
  reserve(gather_, size_t(R * k) * i32);
  reserve(slot_row_, size_t(R * k) * i32);
  reserve(slot_weight_, size_t(R * k) * f);
  reserve(grouped_x_, size_t(G * H) * f);
  reserve(gate_up_, size_t(C * 2 * I) * f);
  reserve(act_, size_t(C * I) * f);
  reserve(grouped_y_, size_t(G * H) * f);
  reserve(partial_, size_t(R) * back_row_bytes_);
  reserve(back_, size_t(S) * back_row_bytes_);
  ops_.reserve_linear_input(std::max(T * H, C * std::max(H, I)));
  // The largest exchange: R rows received there (and sent back), S sent.
  comm_.reserve_exchange(size_t(R) * rows_.stride());
}

void MoeLayer::forward(int layer, const LayerWeights& w, const float* h, int T, float* out) {
  Lap lap;
  route(w, h, T);
  if (trace_) {
    // Only when tracing: one more copy back, the step's choices.
    trace_experts_.resize(size_t(T) * k_);
    if (T > 0)
      ops_.download(trace_experts_.data(), expert_.data(), trace_experts_.size() * sizeof(int32_t));
    trace_->record(layer, trace_experts_.data(), T, k_);
  }
  lap(&times_.route);
  layout(layer, T);  // the layer's one device-to-host copy: the counts
  pack(h);
  before_exchange(lap, &times_.permute);
  exchange_counts(layer);
  exchange_rows();
  lap(&times_.exchange);
  account(layer);
  group(layer, w);
  lap(&times_.permute);  // the receive side of the dispatch
  experts(w);
  lap(&times_.experts);
  reduce();
  before_exchange(lap, &times_.combine);
  exchange_back();
  lap(&times_.exchange);
  combine(T, out);
  lap(&times_.combine);
  last_bytes_sent_ = size_t(S_) * rows_.stride() + size_t(R_) * back_row_bytes_;
}

// ---- the phases -------------------------------------------------------------------------------

void MoeLayer::route(const LayerWeights& w, const float* h, int T) {
  reserve(logits_, size_t(T) * n_experts_ * sizeof(float));
  reserve(expert_, size_t(T) * k_ * sizeof(int32_t));
  reserve(weight_, size_t(T) * k_ * sizeof(float));
  ops_.linear({h, w.gate, logits_.as<float>(), T});
  ops_.topk_router({logits_.as<float>(), expert_.as<int32_t>(), weight_.as<float>(), T,
                    n_experts_, k_});
}

void MoeLayer::layout(int layer, int T) {
  const int N = n_ranks_, E = n_experts_;
  const int64_t s_max = int64_t(T) * std::min(k_, N);
  reserve(send_token_, size_t(s_max) * sizeof(int32_t));
  reserve(send_slots_, size_t(s_max) * k_ * sizeof(RouteSlot));
  reserve(home_, size_t(T) * k_ * sizeof(int32_t));
  reserve(slot_rank_, size_t(T) * k_ * sizeof(int32_t));
  kernels::DispatchLayoutParams p;
  p.expert = expert_.as<int32_t>();
  p.weight = weight_.as<float>();
  p.route = route_.as<int32_t>() + size_t(layer) * E * kernels::kRouteWheel;
  p.counts = counts_.as<int32_t>();
  p.slot_rank = slot_rank_.as<int32_t>();
  p.send_token = send_token_.as<int32_t>();
  p.send_slots = send_slots_.as<RouteSlot>();
  p.home = home_.as<int32_t>();
  p.T = T;
  p.k = k_;
  p.n_experts = E;
  p.n_ranks = N;
  ops_.dispatch_layout(p);
  // NOTES: the one copy back of the layer. The host needs the row counts to size and post the
  // exchange (MPI and NCCL both take host counts), and the per-expert counts are the load
  // statistics and, summed at the receivers, the expert groups' sizes. With N ranks and E
  // experts that is N * (E + 1) ints, what the counts' exchange carries anyway.
  ops_.download(h_counts_.data(), counts_.data(), h_counts_.size() * sizeof(int32_t));
  for (int d = 0; d < N; ++d) send_counts_[d] = h_counts_[d];
  S_ = prefix(send_counts_, send_displs_);
}

void MoeLayer::pack(const float* h) {
  reserve(send_payload_, size_t(S_) * rows_.stride());
  ops_.pack_rows({h, send_token_.as<int32_t>(), send_slots_.as<RouteSlot>(),
                  send_payload_.data(), rows_, int(S_)});
}

void MoeLayer::exchange_counts(int layer) {
  const int N = n_ranks_, E = n_experts_, B = 1 + E;
  // Per peer: the rows it gets from me, then my choices of each expert it serves for me.
  std::fill(send_blocks_.begin(), send_blocks_.end(), 0);
  for (int d = 0; d < N; ++d) send_blocks_[size_t(d) * B] = h_counts_[d];
  for (int e = 0; e < E; ++e)
    for (int d = 0; d < N; ++d) send_blocks_[size_t(d) * B + 1 + e] = h_counts_[N + size_t(e) * N + d];
  comm_.all_to_all_counts(send_blocks_.data(), recv_blocks_.data(), B);
  for (int src = 0; src < N; ++src) recv_counts_[src] = recv_blocks_[size_t(src) * B];
  R_ = prefix(recv_counts_, recv_displs_);

  // The size of each local expert's group: every source's choices of it. A choice of an expert
  // this rank does not hold means the sender's placement disagrees with ours: refuse rather
  // than drop the contribution.
  const int32_t* local = local_index_host_.data() + size_t(layer) * E;
  int n_local = 0;
  for (int e = 0; e < E; ++e) n_local += local[e] >= 0;
  group_begin_.assign(size_t(n_local) + 1, 0);
  for (int src = 0; src < N; ++src) {
    for (int e = 0; e < E; ++e) {
      const int64_t c = recv_blocks_[size_t(src) * B + 1 + e];
      if (c == 0) continue;
      if (local[e] < 0)
        MOE_THROW("layer " + std::to_string(layer) + ": rank " + std::to_string(me_) +
                  " was sent " + std::to_string(c) + " rows for expert " + std::to_string(e) +
                  " by rank " + std::to_string(src) + ", but does not hold it");
      group_begin_[size_t(local[e]) + 1] += c;
    }
  }
  for (int i = 0; i < n_local; ++i) group_begin_[i + 1] += group_begin_[i];
  G_ = group_begin_[n_local];
}

void MoeLayer::exchange_rows() {
  reserve(recv_payload_, size_t(R_) * rows_.stride());
  comm_.all_to_all_v(send_payload_.data(), send_counts_.data(), send_displs_.data(),
                     recv_payload_.data(), recv_counts_.data(), recv_displs_.data(),
                     rows_.stride());
}

void MoeLayer::group(int layer, const LayerWeights& w) {
  const int n_local = int(group_begin_.size()) - 1;
  MOE_CHECK(size_t(n_local) == w.local_experts.size(),
            "layer " + std::to_string(layer) + ": the weights hold " +
                std::to_string(w.local_experts.size()) + " experts, the placement " +
                std::to_string(n_local));
  const size_t pairs = size_t(R_) * k_;
  reserve(offsets_, size_t(n_local + 1) * sizeof(int32_t));
  reserve(gather_, pairs * sizeof(int32_t));
  reserve(slot_row_, pairs * sizeof(int32_t));
  reserve(slot_weight_, pairs * sizeof(float));
  kernels::GroupByExpertParams p;
  p.payload = recv_payload_.data();
  p.layout = rows_;
  p.local_index = local_index_.as<int32_t>() + size_t(layer) * n_experts_;
  p.offsets = offsets_.as<int32_t>();
  p.gather = gather_.as<int32_t>();
  p.slot_row = slot_row_.as<int32_t>();
  p.slot_weight = slot_weight_.as<float>();
  p.R = int(R_);
  p.n_experts = n_experts_;
  p.n_local = n_local;
  ops_.group_by_expert(p);
  reserve(grouped_x_, size_t(G_) * cfg_.hidden_size * sizeof(float));
  ops_.unpack_rows({recv_payload_.data(), rows_, gather_.as<int32_t>(), grouped_x_.as<float>(),
                    int(G_)});
}

void MoeLayer::experts(const LayerWeights& w) {
  const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int64_t chunk = std::min<int64_t>(G_, kExpertChunkRows);
  reserve(gate_up_, size_t(chunk) * 2 * I * sizeof(float));
  reserve(act_, size_t(chunk) * I * sizeof(float));
  reserve(grouped_y_, size_t(G_) * H * sizeof(float));
  run_expert_ffns(ops_, {&w.w13, &w.w2, group_begin_.data(), grouped_x_.as<float>(),
                         gate_up_.as<float>(), act_.as<float>(), grouped_y_.as<float>(), int(H),
                         int(I)});
}

void MoeLayer::reduce() {
  reserve(partial_, size_t(R_) * back_row_bytes_);
  kernels::WeightedCombineParams p;
  p.y = grouped_y_.data();
  p.index = slot_row_.as<int32_t>();
  p.weight = slot_weight_.as<float>();
  p.out = partial_.data();
  p.R = int(R_);
  p.k = k_;
  p.cols = cfg_.hidden_size;
  p.y_dtype = DType::kF32;
  p.out_dtype = rows_.dtype;  // rounded once, for the wire
  ops_.weighted_combine(p);
}

void MoeLayer::exchange_back() {
  reserve(back_, size_t(S_) * back_row_bytes_);
  comm_.all_to_all_v(partial_.data(), recv_counts_.data(), recv_displs_.data(), back_.data(),
                     send_counts_.data(), send_displs_.data(), back_row_bytes_);
}

void MoeLayer::combine(int T, float* out) {
  kernels::WeightedCombineParams p;
  p.y = back_.data();
  p.index = home_.as<int32_t>();
  p.weight = nullptr;  // each returned row is already weighted
  p.out = out;
  p.R = T;
  p.k = k_;
  p.cols = cfg_.hidden_size;
  p.y_dtype = rows_.dtype;
  p.out_dtype = DType::kF32;
  ops_.weighted_combine(p);
}

void MoeLayer::account(int layer) {
  if (!stats_) return;
  const int N = n_ranks_;
  for (int e = 0; e < n_experts_; ++e)
    for (int d = 0; d < N; ++d) stats_->token_count(layer, e) += h_counts_[N + size_t(e) * N + d];
  for (int d = 0; d < N; ++d) stats_->row_count(layer, me_, d) += send_counts_[d];
  stats_->computed(layer, me_) += G_;
  // Bytes as posted to the exchanges: rows dispatched to d, and rows returned to each source.
  for (int d = 0; d < N; ++d) stats_->byte_count(layer, me_, d) += send_counts_[d] * int64_t(rows_.stride());
  for (int s = 0; s < N; ++s) stats_->byte_count(layer, me_, s) += recv_counts_[s] * int64_t(back_row_bytes_);
}

}  // namespace moe::runtime
