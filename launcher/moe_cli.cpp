// moe-cli: a command-line client of moe-coordinator (service moe.v1.Inference). See
// docs/SERVING.md. stdout carries the answer (token ids, JSONL results, the table, the health
// word); stderr carries progress and errors, so scripts can pipe the one and read the other.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "launcher/cli_parse.h"
#include "common/error.h"
#include "launcher/batch_io.h"
#include "launcher/coordinator/auth.h"
#include "launcher/stats_plot.h"
#include "runtime/load_stats.h"
#include "runtime/placement_file.h"
#include "launcher/sampling_proto.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"

namespace {

using namespace moe;
using Clock = std::chrono::steady_clock;

// Exit codes, as docs/SERVING.md fixes them for scripts.
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;
constexpr int kExitUnavailable = 3;

// The health check must answer quickly even when the address swallows packets.
constexpr auto kHealthDeadline = std::chrono::seconds(2);
// GetLoadStats is a snapshot; a server that cannot produce it in this long is not healthy.
constexpr auto kStatsDeadline = std::chrono::seconds(30);
constexpr int kBarWidth = 30;

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN_CODE";
  }
}

int exit_code_for(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return kExitOk;
    case grpc::StatusCode::INVALID_ARGUMENT: return kExitBadInput;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::DEADLINE_EXCEEDED: return kExitUnavailable;
    default: return kExitFailure;
  }
}

// One line per failed RPC, in a fixed shape that scripts can match on.
int fail(const grpc::Status& st) {
  std::fprintf(stderr, "moe-cli: %s: %s\n", code_name(st.error_code()),
               st.error_message().c_str());
  return exit_code_for(st.error_code());
}

// moe-cli sends an item's index in the file as its id; the user knows it by the id its line
// gave (an integer or a string), as JSON text. An id moe-cli did not send is shown as it is.
std::string user_id(const launcher::RequestFile& sent, int64_t id) {
  return id >= 0 && size_t(id) < sent.user_ids.size() ? sent.user_ids[size_t(id)].dump()
                                                      : std::to_string(id);
}

// The coordinator names a refused item by the id moe-cli sent ("item 2 (id 2): ..."): the
// line's own id is put in its place.
grpc::Status with_user_id(const grpc::Status& st, const launcher::RequestFile& sent) {
  const std::string& m = st.error_message();
  long long index = -1, id = -1;
  int used = 0;
  if (std::sscanf(m.c_str(), "item %lld (id %lld): %n", &index, &id, &used) != 2 || used == 0)
    return st;
  return {st.error_code(), "item " + std::to_string(index) + " (id " + user_id(sent, id) +
                               "): " + m.substr(size_t(used))};
}

// The client's API key (--api-key, else MOE_API_KEY; "" for none) and TLS roots (--tls-ca).
std::string g_api_key;
std::shared_ptr<grpc::ChannelCredentials> g_credentials = grpc::InsecureChannelCredentials();

// Every call carries the API key, where there is one.
void authorize(grpc::ClientContext& ctx) {
  if (!g_api_key.empty()) ctx.AddMetadata(coordinator::kAuthorizationHeader, "Bearer " + g_api_key);
}

std::unique_ptr<moe::v1::Inference::Stub> connect(const std::string& server) {
  grpc::ChannelArguments args;
  // GetBatch returns every output of a batch in one message; the 4 MiB default is too small
  // for large batches, and the coordinator is trusted.
  args.SetMaxReceiveMessageSize(-1);
  return moe::v1::Inference::NewStub(grpc::CreateCustomChannel(server, g_credentials, args));
}

// ---- generate -----------------------------------------------------------------------------

struct GenerateOptions {
  std::string prompt_ids;
  std::string prompt;  // text, where the model has a tokenizer
  int max_new_tokens = 16;
  bool ignore_eos = false;
  float temperature = 0.0f, top_p = 1.0f, min_p = 0.0f;
  int top_k = 0;
  int64_t seed = -1;  // -1: none
  std::string stop_token_ids;
  int priority = 0;
};

int cmd_generate(moe::v1::Inference::Stub& stub, const GenerateOptions& o) {
  moe::v1::GenerateRequest req;
  if (o.prompt_ids.empty() == o.prompt.empty())
    throw InputError("generate: give exactly one of --prompt-ids or --prompt");
  if (!o.prompt_ids.empty())
    for (int32_t id : launcher::parse_id_list(o.prompt_ids)) req.add_prompt_ids(id);
  else
    req.set_prompt_text(o.prompt);
  req.set_max_new_tokens(o.max_new_tokens);
  req.set_ignore_eos(o.ignore_eos);
  req.set_priority(o.priority);
  runtime::SamplingParams sp;
  sp.temperature = o.temperature;
  sp.top_p = o.top_p;
  sp.top_k = o.top_k;
  sp.min_p = o.min_p;
  if (o.seed >= 0) sp.seed = uint64_t(o.seed);
  if (!o.stop_token_ids.empty()) sp.stop_token_ids = launcher::parse_id_list(o.stop_token_ids);
  *req.mutable_sampling() = launcher::sampling_to_proto(sp);
  grpc::ClientContext ctx;
  authorize(ctx);
  auto reader = stub.Generate(&ctx, req);
  moe::v1::GenerateResponse r;
  std::string finish;
  int64_t n = 0;
  while (reader->Read(&r)) {
    // Flushed per token: a reader of the pipe sees each one as it is generated. A text prompt
    // streams text; ids come one per line.
    if (o.prompt.empty())
      std::printf("%d\n", r.token_id());
    else
      std::fputs(r.token_text().c_str(), stdout);
    std::fflush(stdout);
    ++n;
    if (!r.finish_reason().empty()) finish = r.finish_reason();
  }
  const grpc::Status st = reader->Finish();
  if (!o.prompt.empty()) std::printf("\n");
  if (!st.ok()) return fail(st);
  std::fprintf(stderr, "%lld tokens, finish_reason: %s\n", (long long)n,
               finish.empty() ? "(none)" : finish.c_str());
  return kExitOk;
}

// ---- batch --------------------------------------------------------------------------------

struct BatchOptions {
  std::string input, output, model = "moe";
  int max_new_tokens = 16;
  bool ignore_eos = false;
  bool resume = false;
};

runtime::FinishReason finish_from_name(const std::string& s, int64_t id) {
  if (const auto r = runtime::parse_finish_reason(s)) return *r;
  MOE_THROW("item " + std::to_string(id) + ": the server sent finish_reason '" + s +
            "', expected length, eos, stop, context or cancelled");
}

// The bar fills with the prompts completed; failed ones show as 'x' after them, so a failed
// batch never looks done.
void draw_progress(const moe::v1::BatchStatus& st) {
  const int64_t total = std::max<int64_t>(st.total(), 1);
  const int filled = int(std::min<int64_t>(kBarWidth, st.completed() * kBarWidth / total));
  const int failed =  // rounded up: one failure shows
      int(std::min<int64_t>(kBarWidth - filled, (st.failed() * kBarWidth + total - 1) / total));
  std::string bar(size_t(filled), '#');
  bar.append(size_t(failed), 'x');
  bar.append(size_t(kBarWidth - filled - failed), '.');
  std::string failures;
  if (st.failed() > 0) failures = ", " + std::to_string(st.failed()) + " failed";
  if (st.state() == moe::v1::BATCH_STATE_FAILED) failures += ": batch FAILED";
  // Trailing spaces wipe what a longer previous line left behind.
  std::fprintf(stderr, "\r[%s] %lld/%lld prompts completed%s, %lld tokens, %.1f tokens/s    ",
               bar.c_str(), (long long)st.completed(), (long long)st.total(), failures.c_str(),
               (long long)st.generated_tokens(), st.tokens_per_second());
  std::fflush(stderr);
}

int cmd_batch(moe::v1::Inference::Stub& stub, const BatchOptions& o) {
  launcher::RequestFile all = launcher::parse_request_file(launcher::read_text_file(o.input),
                                                            o.input, o.max_new_tokens);
  if (all.requests.empty())
    throw InputError(o.input + ": no requests (expected one JSON object per line)");
  // Resuming: the requests whose ids the output already holds are skipped, the rest appended.
  launcher::RequestFile todo;
  todo.format = all.format;
  std::set<std::string> done_ids;
  if (o.resume) {
    if (o.output.empty()) throw InputError("--resume needs --output (the file to resume)");
    std::string text;
    if (std::filesystem::exists(o.output)) text = launcher::read_text_file(o.output);
    done_ids = launcher::result_ids(text, o.output);
    // A line cut short by the interrupted run is dropped: its request runs again.
    if (!text.empty() && text.back() != '\n')
      std::filesystem::resize_file(o.output, text.rfind('\n') == std::string::npos
                                                 ? 0 : text.rfind('\n') + 1);
  }
  for (size_t i = 0; i < all.requests.size(); ++i) {
    if (done_ids.count(all.user_ids[i].dump())) continue;
    todo.requests.push_back(all.requests[i]);
    todo.requests.back().id = int64_t(todo.user_ids.size());
    todo.user_ids.push_back(all.user_ids[i]);
  }
  if (o.resume)
    std::fprintf(stderr, "resuming: %zu of %zu requests already in %s, %zu to run\n",
                 all.requests.size() - todo.requests.size(), all.requests.size(),
                 o.output.c_str(), todo.requests.size());
  const auto& requests = todo.requests;
  // Opened before the batch runs, so an unwritable path fails in a second, not after an hour.
  std::ofstream file;
  if (!o.output.empty()) {
    file.open(o.output, o.resume ? std::ios::app : std::ios::trunc);
    if (!file) throw InputError(o.output + ": cannot open the output file for writing");
  }
  if (requests.empty()) return kExitOk;

  moe::v1::SubmitBatchRequest sub;
  sub.set_ignore_eos(o.ignore_eos);
  for (const auto& r : requests) {
    auto* item = sub.add_items();
    item->set_id(r.id);
    for (int32_t t : r.prompt) item->add_prompt_ids(t);
    if (r.prompt.empty()) item->set_prompt_text(r.text);
    item->set_max_new_tokens(r.max_new_tokens);
    *item->mutable_sampling() = launcher::sampling_to_proto(r.sampling);
    // A line's own "ignore_eos" (moe-run reads it too); --ignore-eos for every line.
    item->set_ignore_eos(r.ignore_eos || o.ignore_eos);
    if (r.priority) item->set_priority(*r.priority);  // none: the coordinator's batch default
  }
  const auto t0 = Clock::now();
  moe::v1::SubmitBatchResponse submitted;
  {
    grpc::ClientContext ctx;
    authorize(ctx);
    if (auto st = stub.SubmitBatch(&ctx, sub, &submitted); !st.ok())
      return fail(with_user_id(st, todo));
  }

  moe::v1::GetBatchRequest which;
  which.set_batch_id(submitted.batch_id());
  moe::v1::BatchStatus last;
  last.set_state(moe::v1::BATCH_STATE_RUNNING);
  // The watch stream ends once the batch leaves RUNNING; should it end early (a proxy cutting
  // long streams), watching again picks up where the batch is.
  bool watch_refused = false;
  while (last.state() == moe::v1::BATCH_STATE_RUNNING) {
    grpc::ClientContext ctx;
    authorize(ctx);
    auto reader = stub.WatchBatch(&ctx, which);
    moe::v1::BatchStatus st;
    while (reader->Read(&st)) {
      last = st;
      draw_progress(last);
    }
    if (auto s = reader->Finish(); !s.ok()) {
      // Too many watchers on the coordinator (--max-watchers): the batch runs on; watch again.
      if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        if (!watch_refused)
          std::fprintf(stderr, "\nnote: %s; watching again every second\n",
                       s.error_message().c_str());
        watch_refused = true;
        std::this_thread::sleep_for(std::chrono::seconds(1));
        continue;
      }
      std::fprintf(stderr, "\n");
      return fail(s);
    }
  }
  std::fprintf(stderr, "\n");
  moe::v1::BatchStatus done;
  {
    grpc::ClientContext ctx;
    authorize(ctx);
    if (auto st = stub.GetBatch(&ctx, which, &done); !st.ok()) return fail(st);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::map<int64_t, runtime::Result> by_id;
  std::set<int64_t> text_ids;  // items whose prompt was text: their lines carry output_text
  for (const auto& req : requests)
    if (req.prompt.empty()) text_ids.insert(req.id);
  int64_t generated = 0;
  std::string first_error;
  for (const auto& br : done.results()) {
    if (!br.error().empty()) {  // failed: not written, so that --resume runs it again
      if (first_error.empty())
        first_error = "item (id " + user_id(todo, br.id()) + "): " + br.error();
      continue;
    }
    runtime::Result r;
    r.id = br.id();
    r.output.assign(br.output_ids().begin(), br.output_ids().end());
    r.finish = finish_from_name(br.finish_reason(), br.id());
    for (const auto& lp : br.logprobs()) {
      runtime::TokenLogprob t;
      t.token = lp.token_id();
      t.logprob = lp.logprob();
      for (const auto& e : lp.top_logprobs()) t.top.emplace_back(e.token_id(), e.logprob());
      r.logprobs.push_back(std::move(t));
    }
    if (!br.output_text().empty() || text_ids.count(br.id())) r.text = br.output_text();
    generated += int64_t(r.output.size());
    by_id[r.id] = std::move(r);
  }
  // Written through moe-run's own formatter, so the two tools' outputs compare byte for byte.
  std::ostream& os = o.output.empty() ? std::cout : file;
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& req = requests[i];
    auto it = by_id.find(req.id);
    if (it == by_id.end() && done.state() == moe::v1::BATCH_STATE_FAILED) continue;
    if (it == by_id.end())
      MOE_THROW("batch " + submitted.batch_id() + ": no result for item " +
                std::to_string(req.id) + " (the server returned " +
                std::to_string(done.results_size()) + " results for " +
                std::to_string(requests.size()) + " items)");
    os << launcher::result_line(todo, i, it->second, o.model) << "\n";
  }
  os.flush();
  if (!os) throw InputError((o.output.empty() ? "stdout" : o.output) + ": write failed");
  if (done.state() != moe::v1::BATCH_STATE_DONE) {
    std::fprintf(stderr,
                 "moe-cli: batch %s failed: %lld of %lld items (%s); the %lld that finished "
                 "are written%s\n",
                 submitted.batch_id().c_str(), (long long)done.failed(), (long long)done.total(),
                 first_error.empty() ? done.error().c_str() : first_error.c_str(),
                 (long long)(done.total() - done.failed()),
                 o.output.empty() ? "" : " (moe-cli batch --resume runs the rest)");
    // The batch carries the status code of its failure: UNAVAILABLE exits 3, and so on.
    const int code = exit_code_for(grpc::StatusCode(done.error_code()));
    return code == kExitOk ? kExitFailure : code;
  }
  std::fprintf(stderr, "%zu prompts, %lld tokens in %.3f s (%.1f tokens/s)\n", requests.size(),
               (long long)generated, secs, double(generated) / std::max(secs, 1e-9));
  return kExitOk;
}

// ---- stats --------------------------------------------------------------------------------

// The same layout as runtime::LoadStats::table(), built from the RPC's answer.
std::string stats_table(const moe::v1::LoadStatsResponse& s, bool recent) {
  std::string out;
  char buf[128];
  auto cell = [&](const char* fmt, auto v) {
    std::snprintf(buf, sizeof buf, fmt, v);
    out += buf;
  };
  const int E = s.experts(), R = s.ranks();
  cell("Load statistics over %s", recent ? "the recent window" : "the whole run");
  if (s.window_seconds() > 0) cell(" (%.1f s)", s.window_seconds());
  out += ", ";
  cell("%d experts, ", E);
  cell("%d rank(s)\n", R);
  if (!s.worker_attached())
    out += "The worker job is gone" +
           (s.worker_lost().empty() ? std::string() : " (" + s.worker_lost() + ")") +
           ": these are the statistics it reported until then.\n";
  if (s.worker_restarts() > 0 || s.waiting_for_worker() > 0) {
    cell("Recovery: %lld worker job restart(s), ", (long long)s.worker_restarts());
    cell("%lld sequence(s) re-submitted after a loss", (long long)s.resubmitted());
    if (s.quarantined() > 0)
      cell(", %lld failed instead (in flight at every loss without a token)",
           (long long)s.quarantined());
    if (s.waiting_for_worker() > 0)
      cell(", %lld waiting for a new worker job now", (long long)s.waiting_for_worker());
    out += "\n";
  }
  // Whole run whatever the window: rebalances are rare events, not rates.
  if (s.rebalances() > 0) {
    cell("Live rebalancing: %lld rebalance(s), ", (long long)s.rebalances());
    cell("%lld expert weight(s) moved ", (long long)s.rebalance_weights_moved());
    cell("(%.3f MB), ", s.rebalance_bytes_moved() / 1e6);
    cell("%.3f s in all, ", s.rebalance_seconds());
    cell("%.3f s the last\n", s.last_rebalance_seconds());
  }
  out += "\n";

  out += "Tokens per expert (routed top-k choices), per layer; imbalance = max / mean\n";
  cell("%-7s", "layer");
  for (int e = 0; e < E; ++e) cell("%9s", ("e" + std::to_string(e)).c_str());
  out += "  imbalance\n";
  std::vector<int64_t> total(size_t(E), 0);
  for (const auto& L : s.layers()) {
    cell("%-7d", L.layer());
    for (int e = 0; e < E; ++e) {
      const int64_t v = e < L.tokens_per_expert_size() ? L.tokens_per_expert(e) : 0;
      cell("%9lld", (long long)v);
      total[size_t(e)] += v;
    }
    cell("  %9.3f\n", L.expert_imbalance());
  }
  cell("%-7s", "all");
  for (int e = 0; e < E; ++e) cell("%9lld", (long long)total[size_t(e)]);
  cell("  %9.3f\n", s.expert_imbalance());

  out += "\nRows computed per device ((row, expert) pairs through an FFN), per layer\n";
  cell("%-7s", "layer");
  for (int r = 0; r < R; ++r) cell("%11s", ("rank" + std::to_string(r)).c_str());
  out += "  imbalance\n";
  std::vector<int64_t> dev(size_t(R), 0);
  for (const auto& L : s.layers()) {
    cell("%-7d", L.layer());
    for (int r = 0; r < R; ++r) {
      const int64_t v = r < L.rows_computed_per_rank_size() ? L.rows_computed_per_rank(r) : 0;
      cell("%11lld", (long long)v);
      dev[size_t(r)] += v;
    }
    cell("  %9.3f\n", L.device_imbalance());
  }
  cell("%-7s", "all");
  for (int r = 0; r < R; ++r) cell("%11lld", (long long)dev[size_t(r)]);
  cell("  %9.3f\n", s.device_imbalance());

  if (R > 1) {
    out += "\nHidden-state rows sent, all layers (row = source rank, column = destination)\n";
    cell("%-7s", "src");
    for (int d = 0; d < R; ++d) cell("%11s", ("rank" + std::to_string(d)).c_str());
    out += "\n";
    for (int src = 0; src < R; ++src) {
      cell("%-7d", src);
      for (int d = 0; d < R; ++d) {
        int64_t n = 0;
        const int k = src * R + d;
        for (const auto& L : s.layers())
          if (k < L.rows_sent_size()) n += L.rows_sent(k);
        cell("%11lld", (long long)n);
      }
      out += "\n";
    }
  }
  return out;
}

// The statistics as moe-run --stats-json writes them (what moe-plan reads), with the placement
// as the workers reported it (the first replica of each expert).
nlohmann::json stats_json(const moe::v1::LoadStatsResponse& s) {
  const int L = s.layers_size(), E = s.experts(), R = s.ranks();
  runtime::LoadStats ls(L, E, R);
  std::vector<std::vector<std::vector<int>>> map(static_cast<size_t>(L));
  bool placed = L > 0;
  for (int l = 0; l < L; ++l) {
    const auto& x = s.layers(l);
    for (int e = 0; e < E && e < x.tokens_per_expert_size(); ++e) ls.token_count(l, e) = x.tokens_per_expert(e);
    for (int r = 0; r < R && r < x.rows_computed_per_rank_size(); ++r) ls.computed(l, r) = x.rows_computed_per_rank(r);
    for (int i = 0; i < R * R && i < x.rows_sent_size(); ++i) ls.row_count(l, i / R, i % R) = x.rows_sent(i);
    for (int i = 0; i < R * R && i < x.bytes_sent_size(); ++i) ls.byte_count(l, i / R, i % R) = x.bytes_sent(i);
    placed &= x.expert_rank_size() == E;
    for (int e = 0; placed && e < E; ++e) map[size_t(l)].push_back({x.expert_rank(e)});
  }
  ls.steps = s.steps();
  nlohmann::json j = ls.to_json();
  if (placed) j["placement"] = runtime::placement_json(runtime::Placement::from_map(map, R));
  j["step_seconds"] = s.step_seconds();
  // As moe-run --stats-json writes it; the placement above is the last one after a rebalance.
  j["rebalance"] = {{"rebalances", s.rebalances()},
                    {"weights_moved", s.rebalance_weights_moved()},
                    {"bytes_moved", s.rebalance_bytes_moved()},
                    {"seconds", s.rebalance_seconds()},
                    {"last_seconds", s.last_rebalance_seconds()}};
  return j;
}

int cmd_stats(moe::v1::Inference::Stub& stub, bool recent, bool as_json, const std::string& plot) {
  moe::v1::LoadStatsRequest req;
  req.set_recent_window(recent);
  moe::v1::LoadStatsResponse resp;
  grpc::ClientContext ctx;
  authorize(ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + kStatsDeadline);
  if (auto st = stub.GetLoadStats(&ctx, req, &resp); !st.ok()) return fail(st);
  if (!plot.empty()) {
    std::ofstream out(plot);
    out << launcher::stats_svg(resp, recent);
    if (!out.flush()) throw InputError(plot + ": cannot write the picture");
    std::fprintf(stderr, "moe-cli: wrote %s\n", plot.c_str());
  }
  if (as_json)
    std::printf("%s\n", stats_json(resp).dump(2).c_str());
  else
    std::fputs(stats_table(resp, recent).c_str(), stdout);
  return kExitOk;
}

// ---- health -------------------------------------------------------------------------------

// The standard grpc.health.v1 check: SERVING while a worker job is attached and the
// coordinator is not draining.
int cmd_health(const std::string& server) {
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(server, g_credentials));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext ctx;
  authorize(ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + kHealthDeadline);
  const grpc::Status st = health->Check(&ctx, req, &resp);
  if (st.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
    std::printf("SERVING\n");
    return kExitOk;
  }
  std::printf("NOT_SERVING\n");
  std::fflush(stdout);
  if (!st.ok()) return fail(st);
  return kExitUnavailable;
}

int run(int argc, char** argv) {
  std::string server = "127.0.0.1:50051";
  GenerateOptions gen;
  BatchOptions batch;
  bool recent = false;

  CLI::App app{"moe-cli: a client of moe-coordinator (gRPC moe.v1.Inference). Exit codes: 0 ok, "
               "2 bad input, 3 server unavailable or overloaded, 1 anything else."};
  app.option_defaults()->always_capture_default();
  app.add_option("--server", server, "address of moe-coordinator");
  std::string tls_ca;
  app.add_option("--api-key", g_api_key, "API key, where the server requires one (default: the MOE_API_KEY environment variable)")->default_str("");
  app.add_option("--tls-ca", tls_ca, "PEM root certificates: reach the server over TLS (default: plain text)");
  app.require_subcommand(1);

  auto* g = app.add_subcommand("generate", "generate for one prompt; prints token ids as they stream, one per line");
  g->option_defaults()->always_capture_default();
  g->add_option("--prompt-ids", gen.prompt_ids, "the prompt as comma-separated token ids, e.g. 1,2,3");
  g->add_option("--prompt", gen.prompt, "the prompt as text (the model needs a tokenizer.model); streams text");
  g->add_option("--max-new-tokens", gen.max_new_tokens, "new tokens to generate");
  g->add_flag("--ignore-eos", gen.ignore_eos, "keep generating past the end-of-sequence token");
  g->add_option("--temperature", gen.temperature, "sampling temperature (0: greedy)");
  g->add_option("--top-p", gen.top_p, "nucleus sampling: keep the most likely tokens holding this share");
  g->add_option("--top-k", gen.top_k, "keep the k most likely tokens (0: all)");
  g->add_option("--min-p", gen.min_p, "keep tokens at least this share of the most likely one's probability");
  g->add_option("--seed", gen.seed, "sampling seed (-1: none, the server draws one)");
  g->add_option("--stop-token-ids", gen.stop_token_ids, "comma-separated token ids that end the output (finish_reason stop); default: none");
  g->add_option("--priority", gen.priority, "admission order on the server: lower first (batch items default to 1)");

  auto* b = app.add_subcommand("batch", "submit a JSONL file as one batch; progress on stderr, results in input order");
  b->option_defaults()->always_capture_default();
  b->add_option("--input", batch.input, "JSONL requests: {\"id\": .., \"prompt_ids\": [..] or \"prompt\": \"text\", \"max_new_tokens\": N} per line")->required();
  b->add_option("--output", batch.output, "JSONL results, in input order (default: stdout)");
  b->add_option("--max-new-tokens", batch.max_new_tokens, "new tokens per prompt, where a request does not say");
  b->add_flag("--resume", batch.resume, "skip the requests whose ids --output already holds and append the rest (default: off, the output is rewritten)");
  b->add_option("--model", batch.model, "the model name written in OpenAI batch output lines");
  b->add_flag("--ignore-eos", batch.ignore_eos, "keep generating past the end-of-sequence token");

  auto* s = app.add_subcommand("stats", "table of tokens per expert and per device, with the imbalance");
  s->option_defaults()->always_capture_default();
  s->add_flag("--recent", recent, "over the recent window only (default: the whole run)");
  bool stats_as_json = false;
  std::string plot;
  s->add_flag("--json", stats_as_json, "print the statistics as JSON, in moe-run --stats-json's shape (moe-plan reads it) (default: a table)");
  s->add_option("--plot", plot, "also write an SVG picture here: tokens per (layer, expert) with the rank holding each, rows per device, rows per rank pair (default: none)");

  auto* h = app.add_subcommand("health", "prints SERVING or NOT_SERVING; exit 0 only when SERVING");

  if (const auto code = launcher::parse_command_line(app, argc, argv)) return *code;
  if (const int n = g->parsed() ? gen.max_new_tokens : batch.max_new_tokens; n < 1) {
    std::fprintf(stderr, "moe-cli: --max-new-tokens is %d, expected >= 1\n", n);
    return kExitBadInput;
  }

  if (g_api_key.empty())
    if (const char* k = std::getenv(coordinator::kApiKeyEnv)) g_api_key = k;
  if (!tls_ca.empty()) {
    std::ifstream in(tls_ca);
    if (!in) {
      std::fprintf(stderr, "moe-cli: --tls-ca %s: cannot read it\n", tls_ca.c_str());
      return kExitBadInput;
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
    g_credentials = grpc::SslCredentials(ssl);
  }
  auto stub = connect(server);
  if (g->parsed()) return cmd_generate(*stub, gen);
  if (b->parsed()) return cmd_batch(*stub, batch);
  if (s->parsed()) return cmd_stats(*stub, recent, stats_as_json, plot);
  if (h->parsed()) return cmd_health(server);
  return kExitBadInput;  // unreachable: require_subcommand(1)
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const moe::InputError& e) {
    std::fprintf(stderr, "moe-cli: %s\n", e.what());
    return kExitBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moe-cli: %s\n", e.what());
    return kExitFailure;
  }
}
