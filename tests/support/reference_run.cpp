#include "tests/support/reference_run.h"

#include <algorithm>

namespace moe::test {

runtime::RunConfig reference_run_config(const Reference& ref, const std::string& placement) {
  runtime::RunConfig rc;
  rc.checkpoint = ref.checkpoint;
  rc.placement = placement;
  rc.max_seqs = 8;
  rc.max_seq_len = 64;
  return rc;
}

std::map<int, PromptLogits> run_reference_steps(const Reference& ref, runtime::RankRuntime& rt,
                                                comm::Communicator& comm) {
  const int P = int(ref.prompts.size()), N = comm.size(), me = comm.rank();
  const int V = rt.model_config().vocab_size;
  std::map<int, PromptLogits> out;
  std::vector<float> logits;
  for (int round = 0; round * N < P; ++round) {
    const int i = round * N + me;
    const bool mine = i < P;
    const int slot = mine ? rt.cache().acquire() : -1;
    runtime::StepBatch b;
    if (mine) {
      const auto& ids = ref.prompts[i].prompt_ids;
      for (size_t t = 0; t < ids.size(); ++t) {
        b.tokens.push_back(ids[t]);
        b.slot.push_back(slot);
        b.pos.push_back(int(t));
        b.logit_rows.push_back(int(t));
      }
    }
    rt.model().forward(b, logits);
    if (mine) out[i].prefill = logits;
    const int steps = int(ref.prompts[0].decode_ids.size());
    for (int d = 0; d < steps; ++d) {
      b.clear();
      if (mine) {
        const auto& p = ref.prompts[i];
        b.tokens = {p.decode_ids[d]};
        b.slot = {slot};
        b.pos = {int(p.prompt_ids.size()) + d};
        b.logit_rows = {0};
      }
      rt.model().forward(b, logits);
      if (mine) out[i].decode.insert(out[i].decode.end(), logits.begin(), logits.begin() + V);
    }
    if (mine) rt.cache().release(slot);
  }
  return out;
}

std::map<int64_t, runtime::Result> generate_greedy(const Reference& ref, runtime::RankRuntime& rt,
                                                   comm::Communicator& comm, int max_new_tokens) {
  const int N = comm.size();
  size_t mine = 0;
  for (size_t i = 0; i < ref.prompts.size(); ++i)
    if (int(i) % N == comm.rank()) {
      rt.engine().add({int64_t(i), ref.prompts[i].prompt_ids, max_new_tokens});
      ++mine;
    }
  std::map<int64_t, runtime::Result> results;
  rt.engine().run([&](runtime::Result&& r) { results[r.id] = std::move(r); });
  EXPECT_EQ(results.size(), mine) << "results for rank " << comm.rank() << "'s prompts";
  return results;
}

std::vector<int32_t> argmax_ids(const PromptLogits& pl, int vocab, size_t steps) {
  std::vector<int32_t> ids;
  for (size_t d = 0; d < steps; ++d) {
    const float* row = d == 0 ? pl.prefill.data() + pl.prefill.size() - size_t(vocab)
                              : pl.decode.data() + (d - 1) * size_t(vocab);
    ids.push_back(int32_t(std::max_element(row, row + vocab) - row));
  }
  return ids;
}

}  // namespace moe::test
