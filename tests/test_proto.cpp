// The generated moe.v1 messages link and round-trip (the serving issue builds the services).
#include "moe/v1/inference.pb.h"
#include "moe/v1/worker.pb.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

TEST(ProtoTest, GenerateRequestRoundTrips) {
  moe::v1::GenerateRequest req;
  for (int id : {5, 6, 7}) req.add_prompt_ids(id);
  req.set_max_new_tokens(16);
  std::string wire;
  ASSERT_TRUE(req.SerializeToString(&wire));
  moe::v1::GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.prompt_ids_size(), 3);
  EXPECT_EQ(back.prompt_ids(2), 7);
  EXPECT_EQ(back.max_new_tokens(), 16);
}

TEST(ProtoTest, WorkerMessageOneofRoundTrips) {
  moe::v1::WorkerMessage m;
  auto* tok = m.mutable_step()->add_tokens();
  tok->set_seq_id(42);
  tok->set_token_id(9);
  std::string wire;
  ASSERT_TRUE(m.SerializeToString(&wire));
  moe::v1::WorkerMessage back;
  ASSERT_TRUE(back.ParseFromString(wire));
  ASSERT_EQ(back.kind_case(), moe::v1::WorkerMessage::kStep);
  EXPECT_EQ(back.step().tokens(0).seq_id(), 42);
}

}  // namespace
}  // namespace moe::test
