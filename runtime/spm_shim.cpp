// libsentencepiece behind a C face (runtime/spm_shim.h), built as its own shared library and
// loaded by runtime/tokenizer.cpp with dlmopen into a new link-map namespace.
//
// NOTES: Debian's libsentencepiece carries a private copy of protobuf-lite (3.14) and exports
// its symbols. In a process that also holds libprotobuf (3.21; every gRPC process here), one
// copy's symbols interpose the other's and the protobuf version check aborts the process.
// In a namespace of its own, sentencepiece binds only to its own protobuf-lite, and nothing of
// it enters the process's global scope. RTLD_DEEPBIND would isolate it too, but the
// sanitizers' runtimes refuse it. The price of the namespace is a second C library, and with
// it a second heap: see the ownership rule in the header.
#include "runtime/spm_shim.h"

#include <sentencepiece_processor.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

using sentencepiece::SentencePieceProcessor;

void set_error(const char* msg, char* err, size_t errlen) {
  if (err && errlen) {
    std::strncpy(err, msg, errlen - 1);
    err[errlen - 1] = '\0';
  }
}

// Runs f, turning any exception into an error message: none may cross the C face, where the
// caller has no way to catch it and whatever f had allocated would be lost.
template <class F>
int guarded(F&& f, char* err, size_t errlen) {
  try {
    return f();
  } catch (const std::exception& e) {
    set_error(e.what(), err, errlen);
  } catch (...) {
    set_error("unknown exception in libsentencepiece", err, errlen);
  }
  return 1;
}

SentencePieceProcessor* processor(void* sp) { return static_cast<SentencePieceProcessor*>(sp); }

}  // namespace

extern "C" {

void* moe_spm_load(const char* bytes, size_t n, char* err, size_t errlen) {
  void* out = nullptr;
  guarded(
      [&] {
        // protobuf parses at most INT_MAX bytes (its sizes are int), and sentencepiece would
        // pass it a truncated size.
        if (n > size_t(INT_MAX)) {
          set_error(("a serialized model of " + std::to_string(n) +
                     " bytes; expected at most " + std::to_string(INT_MAX))
                        .c_str(),
                    err, errlen);
          return 1;
        }
        auto sp = std::make_unique<SentencePieceProcessor>();
        const auto st = sp->LoadFromSerializedProto(std::string_view(bytes, n));
        if (!st.ok()) {
          set_error(st.ToString().c_str(), err, errlen);
          return 1;
        }
        out = sp.release();
        return 0;
      },
      err, errlen);
  return out;
}

void moe_spm_free(void* sp) { delete processor(sp); }

int moe_spm_encode(void* sp, const char* text, size_t n, int** ids, size_t* count, char* err,
                   size_t errlen) {
  *ids = nullptr;
  *count = 0;
  return guarded(
      [&] {
        std::vector<int> v;
        const auto st = processor(sp)->Encode(std::string_view(text, n), &v);
        if (!st.ok()) {
          set_error(st.ToString().c_str(), err, errlen);
          return 1;
        }
        // Text that is all whitespace encodes to no pieces, and v.data() may then be null,
        // which memcpy must never be given, even for zero bytes.
        if (v.empty()) return 0;
        *ids = static_cast<int*>(std::malloc(sizeof(int) * v.size()));
        if (!*ids) throw std::bad_alloc();
        std::memcpy(*ids, v.data(), sizeof(int) * v.size());
        *count = v.size();
        return 0;
      },
      err, errlen);
}

int moe_spm_decode(void* sp, const int* ids, size_t n, char** text, size_t* len, char* err,
                   size_t errlen) {
  *text = nullptr;
  *len = 0;
  return guarded(
      [&] {
        std::string out;
        const auto st = processor(sp)->Decode(std::vector<int>(ids, ids + n), &out);
        if (!st.ok()) {
          set_error(st.ToString().c_str(), err, errlen);
          return 1;
        }
        // One byte more than needed, so that an empty text is still a buffer, not null.
        *text = static_cast<char*>(std::malloc(out.size() + 1));
        if (!*text) throw std::bad_alloc();
        std::memcpy(*text, out.data(), out.size() + 1);
        *len = out.size();
        return 0;
      },
      err, errlen);
}

void moe_spm_release(void* buffer) { std::free(buffer); }

int moe_spm_piece_size(void* sp) { return processor(sp)->GetPieceSize(); }
int moe_spm_bos_id(void* sp) { return processor(sp)->bos_id(); }
int moe_spm_eos_id(void* sp) { return processor(sp)->eos_id(); }

}  // extern "C"
