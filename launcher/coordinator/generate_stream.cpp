#include "launcher/coordinator/generate_stream.h"

#include <algorithm>

#include "common/log.h"
#include "launcher/coordinator/stop_strings.h"

namespace moe::coordinator {

namespace {
class Refusal final : public grpc::ServerWriteReactor<moe::v1::GenerateResponse> {
 public:
  explicit Refusal(const grpc::Status& st) { Finish(st); }
  void OnDone() override { delete this; }
};
}  // namespace

grpc::ServerWriteReactor<moe::v1::GenerateResponse>* GenerateStream::refuse(grpc::Status st) {
  return new Refusal(st);
}

grpc::ServerWriteReactor<moe::v1::GenerateResponse>* GenerateStream::start(
    State& s, int64_t id, const moe::v1::GenerateRequest& req) {
  auto g = std::make_shared<GenerateStream>(s, id, req);
  g->self_ = g;
  s.watch(id, g);
  // Tokens made before watch() were not told: look once now.
  g->on_change();
  return g.get();
}

GenerateStream::GenerateStream(State& s, int64_t id, const moe::v1::GenerateRequest& req)
    : s_(s), id_(id), stop_(req.sampling().stop().begin(), req.sampling().stop().end()) {
  // Text prompts stream text too, and stop strings need it: the tokenizer is fixed while this
  // job is attached (admission refused stop strings where there is none).
  if (req.prompt_ids_size() == 0 || !stop_.empty()) tok_ = s.tokenizer();
}

void GenerateStream::on_change() {
  std::lock_guard lk(mu_);
  pump_locked();
}

void GenerateStream::OnWriteDone(bool ok) {
  std::lock_guard lk(mu_);
  writing_ = false;
  if (!pending_.empty()) pending_.pop_front();
  if (!ok) {  // the client is gone
    pending_.clear();
    s_.cancel(id_);
    end_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }
  pump_locked();
}

void GenerateStream::OnCancel() {
  std::lock_guard lk(mu_);
  if (finished_) return;
  s_.cancel(id_);
  // A write in flight completes (not ok) first; then the call ends.
  pending_.erase(pending_.begin() + (writing_ ? 1 : 0), pending_.end());
  end_ = grpc::Status(grpc::StatusCode::CANCELLED, "the client cancelled");
  pump_locked();
}

void GenerateStream::OnDone() {
  s_.unwatch(id_);
  s_.forget(id_);
  std::shared_ptr<GenerateStream> me;
  {
    std::lock_guard lk(mu_);
    me = std::move(self_);
  }
  // `me` may be the last reference (this is destroyed here), or a thread telling this stream of
  // a change (State's dispatch thread, or a step report's) may still hold one: that call finds
  // it finished and returns.
}

void GenerateStream::end_locked(grpc::Status st) {
  finished_ = true;
  Finish(std::move(st));
}

void GenerateStream::pump_locked() {
  if (finished_ || writing_) return;
  if (pending_.empty() && !end_) take_updates_locked();
  if (pending_.size() == 1 && end_) {
    // The last message and the status leave together: one write, and no OnWriteDone round
    // before the client sees the call end. pending_ keeps the message until OnDone.
    finished_ = true;
    StartWriteAndFinish(&pending_.front(), grpc::WriteOptions(), *end_);
    return;
  }
  if (!pending_.empty()) {
    writing_ = true;
    StartWrite(&pending_.front());
    return;
  }
  if (end_) end_locked(*end_);
}

void GenerateStream::take_updates_locked() {
  SequenceUpdate u = s_.read(id_, output_.size());
  if (!u.found) {
    end_ = grpc::Status(grpc::StatusCode::INTERNAL, "sequence vanished");
    return;
  }
  const size_t first = output_.size();
  for (size_t j = 0; j < u.tokens.size(); ++j) {
    const size_t index = first + j;
    output_.push_back(u.tokens[j]);
    moe::v1::GenerateResponse r;
    r.set_token_id(u.tokens[j]);
    r.set_index(int32_t(index));
    bool last = index + 1 == u.total && !u.finish.empty();
    bool stopped = false;  // a stop string ended the text at this token
    std::string finish = u.finish;
    if (tok_) {
      text_ += tok_->decode_stream(output_, &text_emitted_, last);
      size_t upto = text_.size();
      if (!stop_.empty()) {
        if (const auto hit = find_stop(text_, stop_)) {  // cut before it, as OpenAI's API does
          upto = *hit;
          last = stopped = true;
          finish = "stop";
        } else if (!last) {
          upto = stop_safe_length(text_, stop_);  // the start of a stop string waits
        }
      }
      if (upto > released_) r.set_token_text(text_.substr(released_, upto - released_));
      released_ = std::max(released_, upto);
    }
    if (last) r.set_finish_reason(finish);
    if (j < u.logprobs.size()) {
      r.set_logprob(u.logprobs[j].logprob());
      *r.mutable_top_logprobs() = u.logprobs[j].top_logprobs();
    }
    pending_.push_back(std::move(r));
    if (stopped) {  // the rest is not wanted (nor streamed, should it have come already)
      if (u.finish.empty() && u.error.ok()) s_.cancel(id_);
      end_ = grpc::Status::OK;
      return;
    }
  }
  if (!u.error.ok())
    end_ = u.error;
  else if (!u.finish.empty())
    end_ = grpc::Status::OK;
}

}  // namespace moe::coordinator
