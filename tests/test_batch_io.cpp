// The JSONL request and result files of batch runs (launcher/batch_io.cpp): inputs that the
// fuzzing harness (tests/fuzz/fuzz_batch_requests.cpp) found mishandled, each refused with an
// InputError naming the file, the line and what was expected.
#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "launcher/batch_io.h"
#include "tests/support/files.h"

namespace {

using moe::launcher::parse_request_file;
using moe::launcher::result_ids;
using moe::test::input_error;
using moe::test::mentions;

TEST(BatchIo, ReadsBothFormats) {
  const auto plain = parse_request_file(
      "{\"id\": \"q\", \"prompt_ids\": [1, 2], \"temperature\": 0.5}\n\n{\"prompt_ids\": [3]}\n",
      "in.jsonl", 7);
  ASSERT_EQ(plain.requests.size(), 2u);
  EXPECT_EQ(plain.user_ids[0], "q");
  EXPECT_EQ(plain.user_ids[1], 1);  // the line's index where it gave no id
  EXPECT_EQ(plain.requests[1].max_new_tokens, 7);
  EXPECT_FLOAT_EQ(plain.requests[0].sampling.temperature, 0.5f);
  const auto openai = parse_request_file(
      "{\"custom_id\": \"r\", \"body\": {\"prompt\": [4], \"max_tokens\": 3}}\n", "b.jsonl", 7);
  EXPECT_EQ(openai.format, moe::launcher::BatchFormat::kOpenAi);
  EXPECT_EQ(openai.requests.at(0).max_new_tokens, 3);
}

// The JSON parser refuses a number past a double's range with an exception of its own, not a
// parse error; it escaped as an internal error.
TEST(BatchIo, NumberPastADoublesRange) {
  EXPECT_TRUE(mentions(input_error([] {
                         parse_request_file(
                             "{\"prompt_ids\": [1]}\n{\"prompt_ids\": [1], "
                             "\"temperature\": 1e999}\n",
                             "in.jsonl", 16);
                       }),
                       {"in.jsonl:2: ", "1e999", "out of range", "expected"}));
  EXPECT_TRUE(mentions(
      input_error([] { result_ids("{\"id\": 1e999, \"output_ids\": []}\n", "out.jsonl"); }),
      {"out.jsonl:1: ", "1e999", "out of range", "expected"}));
}

// An OpenAI batch line's "method" or "url" of another type than a string: the JSON library's
// typed read threw its own exception, which escaped (found by fuzz_batch_requests).
TEST(BatchIo, OpenAiMethodAndUrlOfAnotherType) {
  EXPECT_TRUE(mentions(input_error([] {
                         parse_request_file(
                             "{\"custom_id\": \"r\", \"method\": [1, 2], \"body\": "
                             "{\"prompt\": [4]}}\n",
                             "b.jsonl", 16);
                       }),
                       {"b.jsonl:1: ", "\"method\" is [1,2]", "expected \"POST\""}));
  EXPECT_TRUE(mentions(input_error([] {
                         parse_request_file(
                             "{\"custom_id\": \"r\", \"url\": 7, \"body\": "
                             "{\"prompt\": [4]}}\n",
                             "b.jsonl", 16);
                       }),
                       {"b.jsonl:1: ", "\"url\" is 7", "/v1/completions"}));
}

}  // namespace
