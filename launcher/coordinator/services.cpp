#include "launcher/coordinator/services.h"

#include <algorithm>
#include <mutex>

#include "common/log.h"

namespace moe::coordinator {

namespace {
Clock::time_point in(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}
}  // namespace

grpc::Status InferenceService::Generate(grpc::ServerContext* ctx,
                                        const moe::v1::GenerateRequest* req,
                                        grpc::ServerWriter<moe::v1::GenerateResponse>* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  moe::v1::BatchItem item;
  *item.mutable_prompt_ids() = req->prompt_ids();
  item.set_prompt_text(req->prompt_text());
  item.set_max_new_tokens(req->max_new_tokens());
  *item.mutable_sampling() = req->sampling();
  std::vector<int64_t> ids;
  if (auto st = s_.admit({item}, "", req->ignore_eos(), &ids); !st.ok()) return st;
  const int64_t id = ids[0];
  size_t sent = 0, text_emitted = 0;
  // Text prompts stream text too, and stop strings need it: the tokenizer is fixed while this
  // job is attached (admission refused stop strings where there is none).
  const std::vector<std::string> stop(req->sampling().stop().begin(), req->sampling().stop().end());
  const auto tok = req->prompt_ids_size() == 0 || !stop.empty() ? s_.tokenizer() : nullptr;
  // With stop strings, text that may be the start of one is held back until it is not.
  std::string text;      // everything decoded so far
  size_t released = 0;   // bytes of `text` streamed
  for (;;) {
    // Wake at least every 100 ms to notice a client that went away.
    const Sequence s = s_.wait(id, sent, in(0.1));
    if (ctx->IsCancelled()) {
      s_.cancel(id);
      s_.forget(id);
      return {grpc::StatusCode::CANCELLED, "the client cancelled"};
    }
    for (; sent < s.output.size(); ++sent) {
      moe::v1::GenerateResponse r;
      r.set_token_id(s.output[sent]);
      r.set_index(int32_t(sent));
      bool last = sent + 1 == s.output.size() && !s.finish.empty();
      bool stopped = false;  // a stop string ended the text at this token
      std::string finish = s.finish;
      if (tok) {
        text += tok->decode_stream({s.output.begin(), s.output.begin() + long(sent) + 1},
                                   &text_emitted, last);
        size_t upto = text.size();
        if (!stop.empty()) {
          size_t hit = std::string::npos;
          for (const auto& x : stop) hit = std::min(hit, text.find(x));
          if (hit != std::string::npos) {  // cut before it, as OpenAI's API does, and stop
            upto = hit;
            last = stopped = true;
            finish = "stop";
          } else if (!last) {
            for (const auto& x : stop)  // the longest end of `text` that begins a stop string
              for (size_t k = std::min(x.size() - 1, text.size()); k > 0; --k)
                if (text.compare(text.size() - k, k, x, 0, k) == 0) {
                  upto = std::min(upto, text.size() - k);
                  break;
                }
          }
        }
        if (upto > released) r.set_token_text(text.substr(released, upto - released));
        released = std::max(released, upto);
      }
      if (last) r.set_finish_reason(finish);
      if (sent < s.logprobs.size()) {
        r.set_logprob(s.logprobs[sent].logprob());
        *r.mutable_top_logprobs() = s.logprobs[sent].top_logprobs();
      }
      if (!out->Write(r)) {  // the client is gone
        s_.cancel(id);
        s_.forget(id);
        return {grpc::StatusCode::CANCELLED, "the client went away"};
      }
      if (stopped) {  // the rest is not wanted (nor streamed, should it have come already)
        if (s.finish.empty()) s_.cancel(id);
        s_.forget(id);
        return grpc::Status::OK;
      }
    }
    if (!s.error.ok()) {
      s_.forget(id);
      return s.error;
    }
    if (!s.finish.empty()) {
      s_.forget(id);
      return grpc::Status::OK;
    }
  }
}

grpc::Status InferenceService::SubmitBatch(grpc::ServerContext* ctx,
                                           const moe::v1::SubmitBatchRequest* req,
                                           moe::v1::SubmitBatchResponse* out) {
  std::string owner, id;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  if (auto st = s_.submit_batch(*req, owner, &id); !st.ok()) return st;
  out->set_batch_id(id);
  spdlog::info("{}: {} prompts admitted", id, req->items_size());
  return grpc::Status::OK;
}

grpc::Status InferenceService::GetBatch(grpc::ServerContext* ctx,
                                        const moe::v1::GetBatchRequest* req,
                                        moe::v1::BatchStatus* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  return s_.batch_status(req->batch_id(), owner, true, out);
}

grpc::Status InferenceService::WatchBatch(grpc::ServerContext* ctx,
                                          const moe::v1::GetBatchRequest* req,
                                          grpc::ServerWriter<moe::v1::BatchStatus>* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  for (;;) {
    moe::v1::BatchStatus st;
    if (auto s = s_.batch_status(req->batch_id(), owner, false, &st); !s.ok()) return s;
    if (!out->Write(st) || ctx->IsCancelled()) return grpc::Status::OK;
    if (st.state() != moe::v1::BATCH_STATE_RUNNING) return grpc::Status::OK;
    s_.wait_change(in(0.25));
  }
}

grpc::Status InferenceService::GetLoadStats(grpc::ServerContext* ctx,
                                            const moe::v1::LoadStatsRequest* req,
                                            moe::v1::LoadStatsResponse* out) {
  std::string owner;
  if (auto st = auth_.check(*ctx, &owner); !st.ok()) return st;
  // After the job is lost the statistics gathered so far still answer (worker_attached says
  // it is gone, and the health service NOT_SERVING): they are what one reads to see why.
  if (!s_.load_stats(req->recent_window(), out))
    return {grpc::StatusCode::UNAVAILABLE,
            "no worker job has attached yet: no statistics (start mpirun -np N moe-worker "
            "--coordinator ...)"};
  return grpc::Status::OK;
}

}  // namespace moe::coordinator
