#include "launcher/step_merge.h"

#include "common/error.h"

namespace moe::launcher {

namespace {
void add_counts(google::protobuf::RepeatedField<int64_t>* into,
                const google::protobuf::RepeatedField<int64_t>& next, const char* what) {
  if (into->empty()) {
    *into = next;
    return;
  }
  MOE_CHECK(next.empty() || next.size() == into->size(),
            std::string("step reports of different shapes: ") + what);
  for (int i = 0; i < next.size(); ++i) into->Set(i, into->Get(i) + next.Get(i));
}
}  // namespace

void merge_step(moe::v1::StepReport* into, moe::v1::StepReport&& next) {
  into->set_step(next.step());
  into->set_step_seconds(into->step_seconds() + next.step_seconds());
  into->set_compute_seconds(into->compute_seconds() + next.compute_seconds());
  into->set_exchange_seconds(into->exchange_seconds() + next.exchange_seconds());
  into->set_schedule_seconds(into->schedule_seconds() + next.schedule_seconds());
  into->set_control_seconds(into->control_seconds() + next.control_seconds());
  add_counts(into->mutable_tokens_per_expert(), next.tokens_per_expert(), "tokens_per_expert");
  add_counts(into->mutable_rows_computed(), next.rows_computed(), "rows_computed");
  add_counts(into->mutable_rows_sent(), next.rows_sent(), "rows_sent");
  for (auto& t : *next.mutable_tokens()) *into->add_tokens() = std::move(t);
  into->set_rebalances(next.rebalances());
  into->set_rebalance_weights_moved(next.rebalance_weights_moved());
  into->set_rebalance_bytes_moved(next.rebalance_bytes_moved());
  into->set_rebalance_seconds(next.rebalance_seconds());
  into->set_last_rebalance_seconds(next.last_rebalance_seconds());
  if (!next.expert_rank().empty()) *into->mutable_expert_rank() = next.expert_rank();
}

}  // namespace moe::launcher
