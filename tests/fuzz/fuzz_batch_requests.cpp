// libFuzzer harness: JSONL batch request files in both formats (plain lines and OpenAI batch
// lines), as moe-run and moe-cli read them; the results file a resumed batch reads back; and
// the --prompt-ids list. The input is split at its first 0xff byte: the part before it is the
// request file and the results file, the part after it the id list (so one input can reach
// all three without a structure the fuzzer must learn first).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "launcher/batch_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find('\xff');
  const std::string text = input.substr(0, cut);
  const std::string ids = cut == std::string::npos ? "" : input.substr(cut + 1);
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
