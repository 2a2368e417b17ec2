#pragma once
// What every test binary shares: MPI started once by the test main (so the same binaries run
// alone and under mpirun), the world communicator, the reference data, and a tolerance check
// that prints at most 10 mismatches.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "comm/mpi_context.h"

namespace moe::test {

comm::Communicator& world();
// A communicator of this rank alone (MPI_COMM_SELF).
comm::Communicator& self();
// The test main's MPI context: world and node-local rank and size.
const comm::MpiContext& mpi();

// tests/data/<name>, or $MOE_TEST_DATA/<name> where that is set.
std::string data_dir(const std::string& name);

struct ReferencePrompt {
  std::vector<int32_t> prompt_ids, decode_ids, generated_ids;
  bool hit_eos = false;
  std::vector<float> prefill_logits;  // [prompt_len, vocab]
  std::vector<float> decode_logits;   // [decode_len, vocab]
};

struct Reference {
  std::string name, checkpoint;  // checkpoint folder
  nlohmann::json meta;           // reference.json
  std::vector<ReferencePrompt> prompts;
};

Reference load_reference(const std::string& name);

// |got - want| <= atol + rtol * |want| everywhere; prints at most 10 mismatches.
::testing::AssertionResult all_close(const float* got, const float* want, size_t n, float atol,
                                     float rtol, const std::string& what);
float max_abs_diff(const float* a, const float* b, size_t n);

}  // namespace moe::test
