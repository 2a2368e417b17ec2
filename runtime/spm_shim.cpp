// A C face for libsentencepiece, built as its own shared library and loaded by
// runtime/tokenizer.cpp with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// NOTES: Debian's libsentencepiece carries a private copy of protobuf-lite and exports its
// symbols. In a process that also loads libprotobuf (every gRPC process here), one copy's
// symbols interpose the other's and static initialisation crashes. Loaded this way, the shim
// and sentencepiece bind to their own copy and nothing of it enters the global scope.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
void set_error(const std::string& msg, char* err, size_t errlen) {
  if (err && errlen) {
    std::strncpy(err, msg.c_str(), errlen - 1);
    err[errlen - 1] = '\0';
  }
}
}  // namespace

extern "C" {

void* moe_spm_load(const char* bytes, size_t n, char* err, size_t errlen) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto st = sp->LoadFromSerializedProto(std::string(bytes, n));
  if (!st.ok()) {
    set_error(st.ToString(), err, errlen);
    delete sp;
    return nullptr;
  }
  return sp;
}

void moe_spm_free(void* sp) { delete static_cast<sentencepiece::SentencePieceProcessor*>(sp); }

// *ids is malloc'd; the caller frees it with free().
int moe_spm_encode(void* sp, const char* text, size_t n, int** ids, size_t* count, char* err,
                   size_t errlen) {
  std::vector<int> v;
  const auto st = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Encode(
      std::string(text, n), &v);
  if (!st.ok()) {
    set_error(st.ToString(), err, errlen);
    return 1;
  }
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (v.size() + 1)));
  std::memcpy(*ids, v.data(), sizeof(int) * v.size());
  *count = v.size();
  return 0;
}

// *text is malloc'd; the caller frees it with free().
int moe_spm_decode(void* sp, const int* ids, size_t n, char** text, size_t* len, char* err,
                   size_t errlen) {
  std::string out;
  const auto st = static_cast<sentencepiece::SentencePieceProcessor*>(sp)->Decode(
      std::vector<int>(ids, ids + n), &out);
  if (!st.ok()) {
    set_error(st.ToString(), err, errlen);
    return 1;
  }
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.data(), out.size());
  *len = out.size();
  return 0;
}

int moe_spm_piece_size(void* sp) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->GetPieceSize();
}
int moe_spm_bos_id(void* sp) { return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->bos_id(); }
int moe_spm_eos_id(void* sp) { return static_cast<sentencepiece::SentencePieceProcessor*>(sp)->eos_id(); }

}  // extern "C"
