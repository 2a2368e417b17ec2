// The generated moe.v1 messages link and round-trip (the serving issue builds the services).
#include "moe/v1/inference.pb.h"
#include "moe/v1/worker.pb.h"
#include "runtime/tokenizer.h"
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

// libsentencepiece carries its own protobuf-lite: in a process that also has libprotobuf (every
// serving process) the tokenizer must still load and work (runtime/spm_shim.cpp).
TEST(ProtoTest, TokenizerWorksBesideProtobuf) {
  auto tok = runtime::Tokenizer::from_file(data_dir("tiny_a") + "/checkpoint/tokenizer.model");
  moe::v1::GenerateRequest req;
  for (int32_t id : tok->encode("Hello world")) req.add_prompt_ids(id);
  std::string wire;
  ASSERT_TRUE(req.SerializeToString(&wire));
  moe::v1::GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.prompt_ids(0), 1);  // bos
  EXPECT_EQ(tok->decode({back.prompt_ids().begin() + 1, back.prompt_ids().end()}), "Hello world");
}

}  // namespace
}  // namespace moe::test
