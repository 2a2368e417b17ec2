// The coordinator's admission of one request item (launcher/coordinator/admission): each bound
// refused with the field, the value and the limit, before any list is walked or sent on.
#include <gtest/gtest.h>

#include <string>

#include "launcher/coordinator/admission.h"

namespace moe::coordinator {
namespace {

const ModelLimits kModel{.vocab = 512, .max_context = 256, .tokenizer = true};

moe::v1::BatchItem item() {
  moe::v1::BatchItem it;
  it.add_prompt_ids(1);
  it.add_prompt_ids(2);
  it.set_max_new_tokens(8);
  return it;
}

std::string refusal(const moe::v1::BatchItem& it, const ModelLimits& m = kModel) {
  const grpc::Status st = validate_item(it, m, "item 0 (id 7): ");
  if (st.ok()) return "OK";
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  return st.error_message();
}

TEST(Admission, AnOrdinaryItemIsAdmitted) {
  auto it = item();
  it.mutable_sampling()->add_stop("\n\n");
  it.mutable_sampling()->add_stop_token_ids(3);
  EXPECT_EQ(refusal(it), "OK");
}

TEST(Admission, StopTokenIdsAreBoundedInNumber) {
  auto it = item();
  for (int i = 0; i < kMaxStopTokenIds; ++i) it.mutable_sampling()->add_stop_token_ids(i % 512);
  EXPECT_EQ(refusal(it), "OK");
  it.mutable_sampling()->add_stop_token_ids(1);
  EXPECT_EQ(refusal(it),
            "item 0 (id 7): sampling.stop_token_ids holds 257 ids, expected at most 256");
  // Millions of ids (5 MB, past the worker link's messages) are refused the same way.
  for (int i = 0; i < 1'000'000; ++i) it.mutable_sampling()->add_stop_token_ids(1);
  EXPECT_NE(refusal(it).find("holds 1000257 ids, expected at most 256"), std::string::npos);
}

TEST(Admission, StopTokenIdsAreInTheVocabulary) {
  auto it = item();
  it.mutable_sampling()->add_stop_token_ids(512);
  EXPECT_NE(refusal(it).find("stop_token_ids holds 512, outside the vocabulary [0, 512)"),
            std::string::npos)
      << refusal(it);
}

TEST(Admission, StopStringsAreBoundedInNumberAndBytes) {
  auto it = item();
  for (int i = 0; i < kMaxStopStrings; ++i)
    it.mutable_sampling()->add_stop(std::string(1, char('a' + i)));
  EXPECT_EQ(refusal(it), "OK");
  it.mutable_sampling()->add_stop("e");
  EXPECT_EQ(refusal(it), "item 0 (id 7): sampling.stop holds 5 strings, expected at most 4");

  auto one = item();
  one.mutable_sampling()->add_stop(std::string(kMaxStopStringBytes, 'x'));
  EXPECT_EQ(refusal(one), "OK");
  one.mutable_sampling()->add_stop(std::string(5'000'000, 'x'));  // one 5 MB stop string
  EXPECT_EQ(refusal(one),
            "item 0 (id 7): sampling.stop[1] is 5000000 bytes, expected at most 256");

  auto empty = item();
  empty.mutable_sampling()->add_stop("");
  EXPECT_EQ(refusal(empty), "item 0 (id 7): sampling.stop holds an empty string");
}

TEST(Admission, StopStringsNeedATokenizer) {
  auto it = item();
  it.mutable_sampling()->add_stop("x");
  ModelLimits no_tokenizer = kModel;
  no_tokenizer.tokenizer = false;
  EXPECT_NE(refusal(it, no_tokenizer).find("sampling.stop needs a tokenizer"), std::string::npos);
}

TEST(Admission, TheContextIsCheckedBeforeThePromptIsWalked) {
  auto it = item();
  for (int i = 0; i < 300; ++i) it.add_prompt_ids(-1);  // past the context and out of range
  EXPECT_EQ(refusal(it),
            "item 0 (id 7): prompt of 302 tokens plus 8 new tokens exceeds the context of 256 "
            "tokens");
  auto bad = item();
  bad.set_prompt_ids(1, 512);
  EXPECT_EQ(refusal(bad),
            "item 0 (id 7): prompt_ids[1] is 512, outside the vocabulary [0, 512)");
}

// A text prompt is refused by its bytes before the tokenizer sees it: 64 bytes per token of
// context (a 7 MB prompt once took the coordinator 9.6 s and 2.1 GB to tokenize, then failed).
TEST(Admission, PromptTextIsBoundedInBytesBeforeTokenizing) {
  moe::v1::BatchItem it;
  it.set_max_new_tokens(8);
  it.set_prompt_text(std::string(256 * kMaxPromptBytesPerToken, 'a'));
  EXPECT_TRUE(validate_prompt_text(it, kModel, "").ok());
  it.set_prompt_text(std::string(256 * kMaxPromptBytesPerToken + 1, 'a'));
  const grpc::Status st = validate_prompt_text(it, kModel, "item 0 (id 7): ");
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(),
            "item 0 (id 7): prompt_text is 16385 bytes, expected at most 16384 (64 bytes for "
            "each of the 256 tokens of context): it cannot fit, and is not tokenized");
}

}  // namespace
}  // namespace moe::coordinator
