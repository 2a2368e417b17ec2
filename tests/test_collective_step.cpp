// Set-up failures agreed over ranks (runtime/collective_step.h): run alone and under mpirun
// -np 2, 4, 8. A step that throws on some ranks only must throw on every rank, with the lowest
// failing rank's message, and leave the communicator usable (nobody is left in a collective).
#include "runtime/collective_step.h"

#include <stdexcept>
#include <string>

#include "common/error.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

// What collective_step threw on this rank: {"", false} for nothing, else {message, InputError?}.
template <class F>
std::pair<std::string, bool> outcome(F&& step) {
  try {
    runtime::collective_step(world(), std::forward<F>(step));
  } catch (const InputError& e) {
    return {e.what(), true};
  } catch (const std::exception& e) {
    return {e.what(), false};
  }
  return {"", false};
}

std::string prefix(int rank) {
  return world().size() > 1 ? "rank " + std::to_string(rank) + ": " : "";
}

TEST(CollectiveStep, NoFailureGoesOnEverywhere) {
  int ran = 0;
  EXPECT_EQ(outcome([&] { ++ran; }).first, "");
  EXPECT_EQ(ran, 1);
}

TEST(CollectiveStep, OneRankFailingFailsAllWithItsMessage) {
  const int last = world().size() - 1;
  const auto [msg, input] = outcome([&] {
    if (world().rank() == last) throw InputError("bad file on rank " + std::to_string(last));
  });
  EXPECT_EQ(msg, prefix(last) + "bad file on rank " + std::to_string(last));
  EXPECT_TRUE(input) << "an InputError stays an InputError on every rank";
}

TEST(CollectiveStep, LowestFailingRankSpeaksForAll) {
  const int last = world().size() - 1;
  const auto [msg, input] = outcome([&] {
    if (world().rank() == 0) throw std::runtime_error("out of memory on rank 0");
    if (world().rank() == last) throw InputError("bad file");
  });
  EXPECT_EQ(msg, prefix(0) + "out of memory on rank 0");
  EXPECT_FALSE(input);
}

TEST(CollectiveStep, CommunicatorUsableAfterAFailure) {
  outcome([&] {
    if (world().rank() == 0) throw std::runtime_error("x");
  });
  int64_t sum = 1;
  world().all_reduce(&sum, 1, comm::Communicator::Op::kSum);
  EXPECT_EQ(sum, world().size());
}

}  // namespace
}  // namespace moe::test
