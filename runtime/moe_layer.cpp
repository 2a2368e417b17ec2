#include "runtime/moe_layer.h"

#include <algorithm>
#include <chrono>
#include <cstring>

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
}  // namespace

MoeLayer::MoeLayer(const ModelConfig& cfg, const Placement& placement, kernels::Ops& ops,
                   comm::Communicator& comm, LoadStats* stats)
    : cfg_(cfg), placement_(placement), ops_(ops), comm_(comm), stats_(stats) {
  const int N = comm.size();
  send_counts_.assign(N, 0);
  recv_counts_.assign(N, 0);
  send_displs_.assign(N, 0);
  recv_displs_.assign(N, 0);
}

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
  const int64_t E = cfg_.num_local_experts, k = cfg_.num_experts_per_tok;
  const int64_t H = cfg_.hidden_size, I = cfg_.intermediate_size, N = comm_.size();
  const int64_t T = std::max(max_tokens, 1);
  const int64_t S = T * std::min(k, N);  // rows sent: one per (token, destination rank)
  const int64_t R = N * S;               // rows received, if every rank sends all of its here
  const int64_t G = N * T * k;           // (row, local expert) pairs: each routed choice once
  const int64_t C = std::min<int64_t>(G, kExpertChunkRows);
  const size_t f = sizeof(float);
  reserve(logits_, size_t(T * E) * f);
  reserve(expert_, size_t(T * k) * sizeof(int32_t));
  reserve(weight_, size_t(T * k) * f);
  reserve(send_x_, size_t(S * H) * f);
  reserve(send_meta_, size_t(S * k) * sizeof(RouteSlot));
  reserve(recv_x_, size_t(R * H) * f);
  reserve(recv_meta_, size_t(R * k) * sizeof(RouteSlot));
  reserve(grouped_x_, size_t(G * H) * f);
  reserve(gate_up_, size_t(C * 2 * I) * f);
  reserve(act_, size_t(C * I) * f);
  reserve(grouped_y_, size_t(G * H) * f);
  reserve(partial_, size_t(R * H) * f);
  reserve(back_, size_t(S * H) * f);
  reserve(index_, size_t(std::max({G, R * k, T * k, S})) * sizeof(int32_t));
  reserve(cweight_, size_t(std::max(R * k, T * k)) * f + 4);
  ops_.reserve_linear_input(std::max(T * H, C * std::max(H, I)));
  // The largest exchange: R rows received there (and sent back), the same for S and back.
  const size_t row = std::max(size_t(H) * sizeof(float), size_t(k) * sizeof(RouteSlot));
  comm_.reserve_exchange(size_t(std::max(R, S)) * row);
}

void MoeLayer::forward(int layer, const LayerWeights& w, const float* h, int T, float* out) {
  const int E = cfg_.num_local_experts, k = cfg_.num_experts_per_tok;
  const int H = cfg_.hidden_size, I = cfg_.intermediate_size;
  const int N = comm_.size(), me = comm_.rank();
  const size_t row_bytes = size_t(H) * sizeof(float);

  Lap lap;
  // ---- route -----------------------------------------------------------------------------
  reserve(logits_, size_t(T) * E * sizeof(float));
  reserve(expert_, size_t(T) * k * sizeof(int32_t));
  reserve(weight_, size_t(T) * k * sizeof(float));
  ops_.linear({h, w.gate, logits_.as<float>(), T});
  ops_.topk_router({logits_.as<float>(), expert_.as<int32_t>(), weight_.as<float>(), T, E, k});
  h_expert_.resize(size_t(T) * k);
  h_weight_.resize(size_t(T) * k);
  ops_.download(h_expert_.data(), expert_.data(), h_expert_.size() * sizeof(int32_t));
  ops_.download(h_weight_.data(), weight_.data(), h_weight_.size() * sizeof(float));
  lap(&times_.route);

  // ---- permute: one row per (token, destination rank) -----------------------------------
  // dest_of[t * k + s] = the rank serving slot s of token t.
  std::vector<int32_t>& dest_of = h_dest_of_;
  dest_of.resize(size_t(T) * k);
  std::fill(send_counts_.begin(), send_counts_.end(), 0);
  for (int t = 0; t < T; ++t) {
    for (int s = 0; s < k; ++s) {
      const int e = h_expert_[size_t(t) * k + s];
      const int d = placement_.route(layer, e, me);
      dest_of[size_t(t) * k + s] = d;
      if (stats_) stats_->token_count(layer, e) += 1;
      // Count a destination once per token: its first slot bound there.
      bool first = true;
      for (int s2 = 0; s2 < s; ++s2) first &= dest_of[size_t(t) * k + s2] != d;
      if (first) ++send_counts_[d];
    }
  }
  for (int d = 1; d < N; ++d) send_displs_[d] = send_displs_[d - 1] + send_counts_[d - 1];
  const int64_t S = send_displs_[N - 1] + send_counts_[N - 1];

  h_send_token_.assign(S, -1);
  h_send_meta_.assign(size_t(S) * k, RouteSlot{-1, 0.0f});
  h_home_index_.assign(size_t(T) * k, -1);
  h_ones_.assign(size_t(T) * k, 1.0f);
  {
    std::vector<int64_t>& next = h_next_row_;  // next free row per destination
    next = send_displs_;
    for (int t = 0; t < T; ++t) {
      int n_dest = 0;
      for (int d = 0; d < N; ++d) {  // ascending rank: the combine order
        int64_t row = -1;
        for (int s = 0; s < k; ++s) {
          if (dest_of[size_t(t) * k + s] != d) continue;
          if (row < 0) {
            row = next[d]++;
            h_send_token_[row] = t;
            h_home_index_[size_t(t) * k + n_dest++] = int32_t(row);
          }
          h_send_meta_[size_t(row) * k + s] = {h_expert_[size_t(t) * k + s],
                                               h_weight_[size_t(t) * k + s]};
        }
      }
    }
  }
  if (stats_)
    for (int d = 0; d < N; ++d) stats_->row_count(layer, me, d) += send_counts_[d];

  reserve(index_, size_t(std::max<int64_t>(S, 1)) * sizeof(int32_t));
  reserve(send_x_, size_t(S) * row_bytes);
  reserve(send_meta_, size_t(S) * k * sizeof(RouteSlot));
  ops_.upload(index_.data(), h_send_token_.data(), size_t(S) * sizeof(int32_t));
  ops_.gather_rows({h, index_.as<int32_t>(), send_x_.as<float>(), int(S), H});
  ops_.upload(send_meta_.data(), h_send_meta_.data(), h_send_meta_.size() * sizeof(RouteSlot));

  before_exchange(lap, &times_.permute);
  // ---- exchange: counts, then rows and their slots ----------------------------------------
  comm_.all_to_all_counts(send_counts_.data(), recv_counts_.data());
  for (int d = 1; d < N; ++d) recv_displs_[d] = recv_displs_[d - 1] + recv_counts_[d - 1];
  const int64_t R = recv_displs_[N - 1] + recv_counts_[N - 1];
  reserve(recv_x_, size_t(R) * row_bytes);
  reserve(recv_meta_, size_t(R) * k * sizeof(RouteSlot));
  comm_.all_to_all_v(send_x_.data(), send_counts_.data(), send_displs_.data(), recv_x_.data(),
                     recv_counts_.data(), recv_displs_.data(), row_bytes);
  comm_.all_to_all_v(send_meta_.data(), send_counts_.data(), send_displs_.data(),
                     recv_meta_.data(), recv_counts_.data(), recv_displs_.data(),
                     k * sizeof(RouteSlot));
  lap(&times_.exchange);

  // ---- experts: group the received (row, slot) pairs by local expert ----------------------
  h_recv_meta_.resize(size_t(R) * k);
  ops_.download(h_recv_meta_.data(), recv_meta_.data(), h_recv_meta_.size() * sizeof(RouteSlot));
  const auto& local = w.local_experts;
  std::vector<int64_t>& group_begin = h_group_begin_;
  group_begin.assign(local.size() + 1, 0);
  h_group_row_.clear();
  h_slot_index_.assign(size_t(R) * k, -1);
  h_slot_weight_.assign(size_t(R) * k, 0.0f);
  for (size_t i = 0; i < local.size(); ++i) {
    group_begin[i] = int64_t(h_group_row_.size());
    for (int64_t r = 0; r < R; ++r) {
      for (int s = 0; s < k; ++s) {
        const RouteSlot& rs = h_recv_meta_[size_t(r) * k + s];
        if (rs.expert != local[i]) continue;
        h_slot_index_[size_t(r) * k + s] = int32_t(h_group_row_.size());
        h_slot_weight_[size_t(r) * k + s] = rs.weight;
        h_group_row_.push_back(int32_t(r));
      }
    }
  }
  group_begin[local.size()] = int64_t(h_group_row_.size());
  // A slot naming an expert this rank does not hold means the sender's placement disagrees
  // with ours: refuse rather than drop the contribution.
  for (int64_t r = 0; r < R; ++r)
    for (int s = 0; s < k; ++s) {
      const RouteSlot& rs = h_recv_meta_[size_t(r) * k + s];
      if (rs.expert >= 0 && h_slot_index_[size_t(r) * k + s] < 0)
        MOE_THROW("layer " + std::to_string(layer) + ": rank " + std::to_string(me) +
                  " received a row for expert " + std::to_string(rs.expert) +
                  ", which it does not hold");
    }
  const int64_t G = int64_t(h_group_row_.size());
  if (stats_) stats_->computed(layer, me) += G;

  reserve(index_, size_t(std::max<int64_t>({G, R * k, int64_t(T) * k, 1})) * sizeof(int32_t));
  reserve(grouped_x_, size_t(G) * row_bytes);
  const int64_t chunk = std::min<int64_t>(G, kExpertChunkRows);
  reserve(gate_up_, size_t(chunk) * 2 * I * sizeof(float));
  reserve(act_, size_t(chunk) * I * sizeof(float));
  reserve(grouped_y_, size_t(G) * row_bytes);
  ops_.upload(index_.data(), h_group_row_.data(), size_t(G) * sizeof(int32_t));
  ops_.gather_rows({recv_x_.as<float>(), index_.as<int32_t>(), grouped_x_.as<float>(), int(G), H});
  lap(&times_.permute);  // the receive side of the dispatch
  run_expert_ffns(ops_, {&w.w13, &w.w2, group_begin.data(), grouped_x_.as<float>(),
                         gate_up_.as<float>(), act_.as<float>(), grouped_y_.as<float>(), H, I});

  lap(&times_.experts);
  // ---- reduce per received row, in slot order ----------------------------------------------
  reserve(partial_, size_t(R) * row_bytes);
  reserve(cweight_, size_t(std::max<int64_t>(R * k, int64_t(T) * k)) * sizeof(float) + 4);
  ops_.upload(index_.data(), h_slot_index_.data(), h_slot_index_.size() * sizeof(int32_t));
  ops_.upload(cweight_.data(), h_slot_weight_.data(), h_slot_weight_.size() * sizeof(float));
  ops_.weighted_combine({grouped_y_.as<float>(), index_.as<int32_t>(), cweight_.as<float>(),
                         partial_.as<float>(), int(R), k, H});

  // ---- exchange back, then combine at home -------------------------------------------------
  reserve(back_, size_t(S) * row_bytes);
  before_exchange(lap, &times_.combine);
  comm_.all_to_all_v(partial_.data(), recv_counts_.data(), recv_displs_.data(), back_.data(),
                     send_counts_.data(), send_displs_.data(), row_bytes);
  lap(&times_.exchange);
  ops_.upload(index_.data(), h_home_index_.data(), h_home_index_.size() * sizeof(int32_t));
  ops_.upload(cweight_.data(), h_ones_.data(), h_ones_.size() * sizeof(float));
  ops_.weighted_combine({back_.as<float>(), index_.as<int32_t>(), cweight_.as<float>(), out, T,
                         k, H});
  lap(&times_.combine);
}

}  // namespace moe::runtime
