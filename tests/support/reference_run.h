#pragma once
// Driving a RankRuntime through the reference prompts (tests/data), shared by the CPU and GPU
// reference tests. Prompt i lives on rank i % N; every rank steps in lockstep, with an empty
// batch where it has no prompt.
#include <map>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/rank_runtime.h"
#include "tests/support/test_env.h"

namespace moe::test {

// The reference checkpoint on the CPU backend at fp32, 8 sequences of 64 positions.
runtime::RunConfig reference_run_config(const Reference& ref,
                                        const std::string& placement = "contiguous");

// Logits of every prompt position and of the decode steps, of the prompts this rank owns.
struct PromptLogits {
  std::vector<float> prefill;  // [prompt_len, vocab]
  std::vector<float> decode;   // [decode steps, vocab]
};

// Prefill of each prompt, then its reference decode_ids fed one step at a time, through
// Model::forward directly.
std::map<int, PromptLogits> run_reference_steps(const Reference& ref, runtime::RankRuntime& rt,
                                                comm::Communicator& comm);

// Greedy generation of `max_new_tokens` for this rank's prompts through the engine. Fails the
// test unless every prompt this rank owns came back.
std::map<int64_t, runtime::Result> generate_greedy(const Reference& ref, runtime::RankRuntime& rt,
                                                   comm::Communicator& comm,
                                                   int max_new_tokens = 16);

// The greedy ids the reference fed in its decode steps, as chosen by `pl`'s logits: d0 from the
// last prefill row, d(k+1) from decode step k.
std::vector<int32_t> argmax_ids(const PromptLogits& pl, int vocab, size_t steps);

}  // namespace moe::test
