// libFuzzer harness: JSONL batch request files in both formats (plain lines and OpenAI batch
// lines), read whole as moe-cli does and in chunks of whole lines as moe-run streams them
// (LineChunks, each chunk parsed where the ones before it left off), which must agree; the
// results file a resumed batch reads back; and the --prompt-ids list. The input is split at
// its first 0xff byte: the part before it is the request file and the results file, the part
// after it the id list (so one input reaches all three without a structure the fuzzer must
// learn first).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>

#include "common/error.h"
#include "launcher/batch_io.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using moe::launcher::RequestFile;

// The file read as moe-run reads its --input (launcher/moe_run.cpp): chunks of about
// `chunk_bytes`, the ids seen, the requests before and the format carried from one to the
// next. The requests and ids of every chunk, in order.
RequestFile read_in_chunks(const std::string& text, size_t chunk_bytes) {
  static const std::string path = (moe::fuzz::scratch_dir() / "requests.jsonl").string();
  moe::fuzz::write_file(path, text);
  moe::launcher::LineChunks chunks(path, chunk_bytes, size_t(1) << 20);
  std::set<std::string> seen;
  std::optional<moe::launcher::BatchFormat> format;
  RequestFile all;
  std::string chunk;
  int64_t first_line = 1;
  while (chunks.next(&chunk, &first_line)) {
    const moe::launcher::FilePosition at{first_line, int64_t(all.requests.size()), &seen, format};
    RequestFile f = moe::launcher::parse_request_file(chunk, "fuzz.jsonl", 16, at);
    if (!f.requests.empty()) format = f.format;  // blank lines alone fix no format
    all.format = f.format;
    for (auto& r : f.requests) all.requests.push_back(std::move(r));
    for (auto& u : f.user_ids) all.user_ids.push_back(std::move(u));
  }
  return all;
}

bool same(const RequestFile& a, const RequestFile& b) {
  if (a.requests.size() != b.requests.size() || a.user_ids != b.user_ids) return false;
  if (!a.requests.empty() && a.format != b.format) return false;
  for (size_t i = 0; i < a.requests.size(); ++i) {
    const auto &x = a.requests[i], &y = b.requests[i];
    if (x.prompt != y.prompt || x.text != y.text || x.max_new_tokens != y.max_new_tokens ||
        x.ignore_eos != y.ignore_eos)
      return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find('\xff');
  const std::string text = input.substr(0, cut);
  const std::string ids = cut == std::string::npos ? "" : input.substr(cut + 1);
  std::optional<RequestFile> whole;
  try {
    whole = moe::launcher::parse_request_file(text, "fuzz.jsonl", 16);
  } catch (const moe::InputError&) {
  }
  // Read in chunks (of a size taken from the input's length, 1 to 64 bytes), the same file
  // gives the same requests, or is refused the same way.
  std::optional<RequestFile> chunked;
  try {
    chunked = read_in_chunks(text, 1 + size % 64);
  } catch (const moe::InputError&) {
  }
  if (whole.has_value() != chunked.has_value() || (whole && !same(*whole, *chunked))) std::abort();
  try {
    const auto f = moe::launcher::parse_request_file(text, "fuzz.jsonl", 16);
    if (f.requests.size() != f.user_ids.size()) std::abort();
    for (size_t i = 0; i < f.requests.size(); ++i) {
      if (f.requests[i].id != int64_t(i)) std::abort();
      // Every accepted request can be answered in its file's format.
      moe::runtime::Result r;
      r.id = int64_t(i);
      r.output = f.requests[i].prompt;
      (void)moe::launcher::result_line(f, i, r, "fuzz");
    }
  } catch (const moe::InputError&) {
  }
  try {
    (void)moe::launcher::result_ids(text, "fuzz-out.jsonl");
  } catch (const moe::InputError&) {
  }
  if (!ids.empty()) {
    try {
      (void)moe::launcher::parse_id_list(ids);
    } catch (const moe::InputError&) {
    }
  }
  return 0;
}
