#pragma once
// Text <-> token ids through the checkpoint's SentencePiece model (tokenizer.model, as Mixtral
// ships it). Prompts get the bos id prepended, as Mixtral's tokenizer does. Optional: token ids
// always work without one. libsentencepiece is reached through runtime/spm_shim.cpp, loaded in
// a link-map namespace of its own (see the note there).
#include <memory>
#include <string>
#include <vector>

#include "runtime/spm_shim.h"

namespace moe::runtime {

// The shim's entry points (runtime/spm_shim.h) as loaded, loading it on first use. Throws
// moe::Error naming every place tried when it cannot be loaded. Tests reach the shim here.
struct SpmShim {
  decltype(&moe_spm_load) load;
  decltype(&moe_spm_free) free_sp;
  decltype(&moe_spm_encode) encode;
  decltype(&moe_spm_decode) decode;
  decltype(&moe_spm_release) release;
  decltype(&moe_spm_piece_size) piece_size;
  decltype(&moe_spm_bos_id) bos;
  decltype(&moe_spm_eos_id) eos;
};
const SpmShim& spm_shim();

class Tokenizer {
 public:
  // Throws InputError naming the file (or "serialized model") when it is not a valid model,
  // and moe::Error when the sentencepiece shim library cannot be loaded.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
  static std::unique_ptr<Tokenizer> from_serialized(const std::string& bytes);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  std::vector<int32_t> encode(const std::string& text, bool add_bos = true) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;

  // Streaming: the new text that `ids` (all tokens so far) add beyond the `*emitted` bytes
  // already handed out, which it advances. While the text ends inside a multi-byte character
  // (byte-fallback tokens), nothing is released yet, so no replacement character escapes;
  // `last` (the sequence's final token) releases everything left.
  std::string decode_stream(const std::vector<int32_t>& ids, size_t* emitted,
                            bool last = false) const;

 private:
  explicit Tokenizer(void* handle) : sp_(handle) {}
  void* sp_;  // the shim's processor
};

}  // namespace moe::runtime
