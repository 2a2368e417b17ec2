#include "runtime/tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>

#include "common/error.h"

namespace moe::runtime {

namespace {

// Where the shim is: $MOE_SPM_SHIM, else lib/ beside the executable's bin/, else the build tree.
std::vector<std::string> shim_candidates() {
  std::vector<std::string> c;
  if (const char* env = std::getenv("MOE_SPM_SHIM")) c.push_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) c.push_back((exe.parent_path().parent_path() / "lib" / "libmoe_spm.so").string());
  c.push_back(MOE_SPM_SHIM_PATH);
  return c;
}

// A buffer the shim allocated, handed back to it (its heap is not ours: runtime/spm_shim.h).
struct ShimRelease {
  void operator()(void* p) const { spm_shim().release(p); }
};

}  // namespace

const SpmShim& spm_shim() {
  static SpmShim s;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string tried;
    void* h = nullptr;
    for (const auto& path : shim_candidates()) {
      // A new namespace: see runtime/spm_shim.cpp for why the shim may not share ours.
      h = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h) break;
      tried += "\n  " + path + ": " + dlerror();
    }
    if (!h) MOE_THROW("cannot load the sentencepiece shim libmoe_spm.so; tried:" + tried);
    auto sym = [&](const char* name) {
      void* p = dlsym(h, name);
      if (!p) MOE_THROW(std::string("sentencepiece shim lacks ") + name);
      return p;
    };
    s.load = reinterpret_cast<decltype(s.load)>(sym("moe_spm_load"));
    s.free_sp = reinterpret_cast<decltype(s.free_sp)>(sym("moe_spm_free"));
    s.encode = reinterpret_cast<decltype(s.encode)>(sym("moe_spm_encode"));
    s.decode = reinterpret_cast<decltype(s.decode)>(sym("moe_spm_decode"));
    s.release = reinterpret_cast<decltype(s.release)>(sym("moe_spm_release"));
    s.piece_size = reinterpret_cast<decltype(s.piece_size)>(sym("moe_spm_piece_size"));
    s.bos = reinterpret_cast<decltype(s.bos)>(sym("moe_spm_bos_id"));
    s.eos = reinterpret_cast<decltype(s.eos)>(sym("moe_spm_eos_id"));
  });
  return s;
}

std::unique_ptr<Tokenizer> Tokenizer::from_serialized(const std::string& bytes) {
  char err[512] = "";
  void* sp = spm_shim().load(bytes.data(), bytes.size(), err, sizeof err);
  if (!sp) throw InputError(std::string("serialized tokenizer: not a SentencePiece model (") + err + ")");
  return std::unique_ptr<Tokenizer>(new Tokenizer(sp));
}

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the tokenizer model");
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  char err[512] = "";
  void* sp = spm_shim().load(bytes.data(), bytes.size(), err, sizeof err);
  if (!sp) throw InputError(path + ": not a SentencePiece model (" + err + ")");
  return std::unique_ptr<Tokenizer>(new Tokenizer(sp));
}

Tokenizer::~Tokenizer() {
  if (sp_) spm_shim().free_sp(sp_);
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  int* ids = nullptr;
  size_t n = 0;
  char err[512] = "";
  const int rc = spm_shim().encode(sp_, text.data(), text.size(), &ids, &n, err, sizeof err);
  const std::unique_ptr<int, ShimRelease> owned(ids);
  if (rc != 0) throw InputError(std::string("cannot tokenize the prompt: ") + err);
  std::vector<int32_t> out;
  if (add_bos && bos_id() >= 0) out.push_back(bos_id());
  if (n > 0) out.insert(out.end(), ids, ids + n);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const std::vector<int> v(ids.begin(), ids.end());
  char* text = nullptr;
  size_t len = 0;
  char err[512] = "";
  const int rc = spm_shim().decode(sp_, v.data(), v.size(), &text, &len, err, sizeof err);
  const std::unique_ptr<char, ShimRelease> owned(text);
  if (rc != 0) throw InputError(std::string("cannot decode token ids: ") + err);
  return std::string(text, len);
}

std::string Tokenizer::decode_stream(const std::vector<int32_t>& ids, size_t* emitted,
                                     bool last) const {
  const std::string all = decode(ids);
  static const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD: an incomplete character
  if (!last && all.size() >= 3 && all.compare(all.size() - 3, 3, kReplacement) == 0) return {};
  if (all.size() <= *emitted) return {};
  std::string out = all.substr(*emitted);
  *emitted = all.size();
  return out;
}

int Tokenizer::vocab_size() const { return spm_shim().piece_size(sp_); }
int Tokenizer::bos_id() const { return spm_shim().bos(sp_); }
int Tokenizer::eos_id() const { return spm_shim().eos(sp_); }

}  // namespace moe::runtime
