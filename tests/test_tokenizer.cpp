// The C++ tokenizer (libsentencepiece) against the Python sentencepiece reference encodings of
// tests/data/tiny_a (scripts/make_tokenizer.py).
#include <cstdint>
#include <fstream>

#include "common/error.h"
#include "runtime/tokenizer.h"
#include "tests/support/test_env.h"

namespace moe::test {
namespace {

TEST(TokenizerTest, MatchesPythonSentencePiece) {
  auto tok = runtime::Tokenizer::from_file(data_dir("tiny_a") + "/checkpoint/tokenizer.model");
  std::ifstream in(data_dir("tiny_a") + "/tokenizer_reference.json");
  const auto ref = nlohmann::json::parse(in);
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  for (const auto& s : ref["samples"]) {
    const std::string text = s["text"].get<std::string>();
    const auto want = s["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(text, false), want) << "'" << text << "'";
    auto with_bos = want;
    with_bos.insert(with_bos.begin(), 1);
    EXPECT_EQ(tok->encode(text), with_bos) << "'" << text << "'";
    EXPECT_EQ(tok->decode(want), s["decoded"].get<std::string>()) << "'" << text << "'";
  }
}

TEST(TokenizerTest, StreamingPiecesAddUpToTheWholeText) {
  auto tok = runtime::Tokenizer::from_file(data_dir("tiny_a") + "/checkpoint/tokenizer.model");
  const std::string text = "Ünïcödé text, streamed \U0001F600 piece by piece.";
  const auto ids = tok->encode(text, false);
  std::string streamed;
  std::vector<int32_t> so_far;
  size_t emitted = 0;
  for (int32_t id : ids) {
    so_far.push_back(id);
    const std::string piece = tok->decode_stream(so_far, &emitted);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "a replacement character escaped";
    streamed += piece;
  }
  EXPECT_EQ(streamed, tok->decode(ids));
  EXPECT_EQ(streamed, text);
}

// Whitespace alone encodes to no pieces at all: the prompt is then the bos id alone, as in
// Python's sentencepiece (encode(" ") == []).
TEST(TokenizerTest, WhitespaceOnlyTextHasNoPieces) {
  auto tok = runtime::Tokenizer::from_file(data_dir("tiny_a") + "/checkpoint/tokenizer.model");
  for (const std::string text : {" ", "   ", "", "\t"}) {
    EXPECT_EQ(tok->encode(text, false), std::vector<int32_t>{}) << "'" << text << "'";
    EXPECT_EQ(tok->encode(text), std::vector<int32_t>{1}) << "'" << text << "'";
  }
  EXPECT_EQ(tok->decode({}), "");
}

// A load that fails inside the shim comes back as an error, never as an exception across its
// C face (which would also lose the half-built processor). A size past what protobuf can parse
// is one such failure, refused before a byte is read.
TEST(TokenizerTest, ShimRefusesAnImpossibleModelSize) {
  const runtime::SpmShim& shim = runtime::spm_shim();
  const char byte = 0;
  char err[256] = "";
  void* sp = &err;
  EXPECT_NO_THROW(sp = shim.load(&byte, SIZE_MAX, err, sizeof err));
  EXPECT_EQ(sp, nullptr);
  EXPECT_NE(std::string(err).find("expected at most 2147483647"), std::string::npos) << err;
}

TEST(TokenizerTest, NotAModelIsRefused) {
  EXPECT_THROW(runtime::Tokenizer::from_serialized("not a model"), InputError);
  EXPECT_THROW(runtime::Tokenizer::from_file(data_dir("tiny_a") + "/checkpoint/config.json"),
               InputError);
}

}  // namespace
}  // namespace moe::test
