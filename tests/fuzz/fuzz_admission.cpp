// libFuzzer harness: the coordinator's admission of request items (validate_item in
// launcher/coordinator/admission.cpp), on SubmitBatchRequest messages decoded from arbitrary
// protobuf wire bytes, against model limits drawn from the input too. An item admitted must
// hold what the engine relies on: a prompt of token ids inside the vocabulary, at least one new
// token, prompt plus new tokens within the context, and sampling fields the engine accepts.
#include <fuzzer/FuzzedDataProvider.h>
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/error.h"
#include "launcher/coordinator/admission.h"
#include "launcher/sampling_proto.h"
#include "runtime/model_config.h"

// gRPC refuses a string field of invalid UTF-8 as protobuf's parser does; its log line for
// each would be most of what the fuzzer prints, and slow it down.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  // The limits come from the end of the input (FuzzedDataProvider reads integers from there),
  // the message from the rest. Within what a config.json can declare.
  moe::coordinator::ModelLimits model;
  model.vocab = in.ConsumeIntegralInRange<int>(1, moe::runtime::ModelConfig::kMaxVocabSize);
  model.max_context = in.ConsumeIntegralInRange<int>(1, moe::runtime::ModelConfig::kMaxPositions);
  model.tokenizer = in.ConsumeBool();
  const std::vector<uint8_t> wire = in.ConsumeRemainingBytes<uint8_t>();
  moe::v1::SubmitBatchRequest req;
  if (!req.ParseFromArray(wire.data(), int(wire.size())))
    return 0;  // not a message: gRPC refuses it
  for (int i = 0; i < req.items_size(); ++i) {
    const moe::v1::BatchItem& it = req.items(i);
    // A text prompt's bytes are bounded before tokenizing: past the bound it is refused, naming
    // the item.
    const grpc::Status text = moe::coordinator::validate_prompt_text(
        it, model, "item " + std::to_string(i) + ": ");
    if (text.ok() != (it.prompt_text().size() <= size_t(model.max_context) *
                                                   moe::coordinator::kMaxPromptBytesPerToken) ||
        (!text.ok() && text.error_message().rfind("item " + std::to_string(i) + ": ", 0) != 0))
      std::abort();
    const grpc::Status st =
        moe::coordinator::validate_item(it, model, "item " + std::to_string(i) + ": ");
    if (!st.ok()) {
      // Refusals are INVALID_ARGUMENT with a message naming the item.
      if (st.error_code() != grpc::StatusCode::INVALID_ARGUMENT ||
          st.error_message().rfind("item " + std::to_string(i) + ": ", 0) != 0)
        std::abort();
      continue;
    }
    if (it.prompt_ids_size() == 0 || it.max_new_tokens() < 1 ||
        int64_t(it.prompt_ids_size()) + it.max_new_tokens() > model.max_context)
      std::abort();
    for (int32_t t : it.prompt_ids())
      if (t < 0 || t >= model.vocab) std::abort();
    try {
      moe::launcher::sampling_from_proto(it.sampling()).validate(model.vocab);
    } catch (const moe::InputError&) {
      std::abort();  // admitted, then refused by the engine's own check
    }
  }
  return 0;
}
