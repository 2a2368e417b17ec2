// moe-run: offline generation on N ranks (mpirun -np N moe-run ...), or on one without mpirun.
// Rank 0 reads the requests and writes the results; every rank holds the shared weights and its
// share of the experts, and generates for its share of the prompts.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "comm/mpi_context.h"
#include "common/error.h"
#include "common/log.h"
#include "launcher/batch_io.h"
#include "launcher/cli_parse.h"
#include "launcher/rank_main.h"
#include "launcher/run_options.h"
#include "runtime/placement_file.h"
#include "runtime/rank_runtime.h"
#include "runtime/routing_trace.h"
#include "runtime/tokenizer.h"

namespace {

using namespace moe;
using launcher::kExitBadInput;  // exit codes: launcher/rank_main.h

// An input is read in chunks of about this much text; a line may hold at most kMaxLineBytes.
constexpr size_t kDefaultChunkBytes = size_t(32) << 20;
constexpr size_t kMaxLineBytes = size_t(16) << 20;

struct Options {
  launcher::RunOptions run_opts;
  runtime::RunConfig run;
  std::string prompt_ids;
  std::string input, output, stats_json, trace;
  int max_new_tokens = 16;
  std::string log_level = "info";
  bool quiet_table = false;
  size_t input_chunk_bytes = kDefaultChunkBytes;
};

// The same text on every rank, from rank 0.
std::string broadcast_string(comm::Communicator& comm, std::string s) {
  int64_t n = int64_t(s.size());
  comm.broadcast(&n, sizeof n, 0);
  s.resize(size_t(n));
  if (n) comm.broadcast(s.data(), size_t(n), 0);
  return s;
}

// Every rank's text, in rank order, on every rank.
std::vector<std::string> all_gather_strings(comm::Communicator& comm, const std::string& mine) {
  const int N = comm.size();
  std::vector<int64_t> lens(N);
  const int64_t my_len = int64_t(mine.size());
  comm.all_gather(&my_len, lens.data(), sizeof(int64_t));
  std::vector<std::string> out(N);
  for (int r = 0; r < N; ++r) {
    out[r] = r == comm.rank() ? mine : std::string(size_t(lens[r]), '\0');
    if (lens[r]) comm.broadcast(out[r].data(), size_t(lens[r]), r);
  }
  return out;
}


// True when no rank has an error. Otherwise every rank returns: rank 0 says why when it has an
// error (ranks usually fail alike), else the ranks that have one.
bool agree(comm::Communicator& comm, const std::string& error) {
  int64_t failed = error.empty() ? 0 : 1;
  comm.all_reduce(&failed, 1, comm::Communicator::Op::kMax);
  if (!failed) return true;
  int64_t rank0_failed = comm.rank() == 0 && !error.empty();
  comm.broadcast(&rank0_failed, sizeof rank0_failed, 0);
  if (!error.empty() && (comm.rank() == 0 || !rank0_failed)) spdlog::error("{}", error);
  return false;
}

// Deterministic on every rank: each request goes to the rank with the fewest tokens so far.
std::vector<int> assign_ranks(const std::vector<runtime::Request>& reqs, int world) {
  std::vector<int64_t> load(world, 0);
  std::vector<int> owner(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const int r = int(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[r] += int64_t(reqs[i].prompt.size()) + reqs[i].max_new_tokens;
  }
  return owner;
}

int run(int argc, char** argv, comm::MpiContext& mpi) {
  auto comm = mpi.make_communicator();
  const int rank = comm->rank(), world = comm->size();
  set_log_rank(rank, world);

  Options o;
  CLI::App app{"moe-run: generate with a Mixtral-style MoE model, experts spread over the ranks "
               "(run under mpirun -np N for N ranks)."};
  app.option_defaults()->always_capture_default();
  launcher::add_run_options(app, o.run_opts);
  app.add_option("--prompt-ids", o.prompt_ids, "one prompt as comma-separated token ids, e.g. 1,2,3 (no default: give this or --input)");
  app.add_option("--input", o.input, "JSONL requests: {\"id\": .., \"prompt_ids\": [..], \"max_new_tokens\": N} per line (no default: give this or --prompt-ids)");
  app.add_option("--input-chunk-bytes", o.input_chunk_bytes, "the input is read, run and written a chunk of about this many bytes of whole lines at a time, so that an input of any size runs in bounded memory")->check(CLI::Range(size_t(1), size_t(1) << 30));
  app.add_option("--output", o.output, "JSONL results, in input order (default: stdout)");
  app.add_option("--max-new-tokens", o.max_new_tokens, "new tokens per prompt, where a request does not say");
  app.add_option("--stats-json", o.stats_json, "write the expert-load statistics here as JSON (default: not written)");
  app.add_option("--trace", o.trace, "write the routing trace here: per step, layer and source rank each token's top-k experts (runtime/routing_trace.h; for moe-sim) (default: not written)");
  app.add_flag("--no-stats-table", o.quiet_table, "do not print the expert-load table (default: printed)");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  if (const auto code = launcher::parse_command_line(app, argc, argv, rank == 0)) return *code;
  set_log_level(o.log_level);

  // ---- set-up: every rank reaches the same verdict, so a bad input ends all ranks cleanly ----
  std::unique_ptr<runtime::RankRuntime> rt;
  std::unique_ptr<runtime::Tokenizer> tokenizer;
  std::unique_ptr<launcher::LineChunks> chunks;  // rank 0's reader of --input
  std::string error;
  double load_s = 0;
  std::string model;  // the model's name in OpenAI's output: the checkpoint folder's
  std::set<std::string> seen_ids;  // user ids across the input's chunks
  std::optional<launcher::BatchFormat> format;
  launcher::RequestFile first_file;  // the input's first chunk, parsed before the load
  std::string first_text;
  int64_t first_more = 0, first_line0 = 1;
  // Step by step, agreeing after each: a rank-0-only failure (its file, its output path) must
  // not leave the other ranks waiting in a collective.
  try {
    o.run = launcher::resolve_run_config(app, o.run_opts);
    if (o.run.checkpoint.empty())
      throw InputError("no checkpoint: give --checkpoint DIR or a --config with 'checkpoint'");
    if (o.prompt_ids.empty() == o.input.empty())
      throw InputError("give exactly one of --prompt-ids or --input");
    if (!o.prompt_ids.empty()) launcher::parse_id_list(o.prompt_ids);  // refused before loading
    // Rank 0 reads the input (other nodes may not see the file) and writes the results and
    // statistics: find out now, not after generating, that it cannot.
    if (rank == 0) {
      if (!o.input.empty())
        chunks = std::make_unique<launcher::LineChunks>(o.input, o.input_chunk_bytes, kMaxLineBytes);
      for (const std::string* path : {&o.output, &o.stats_json, &o.trace})
        if (!path->empty() && !std::ofstream(*path, std::ios::app))
          throw InputError(*path + ": cannot open for writing");
      // The first chunk is read and parsed before the model loads: a bad input is refused in
      // a moment, not after the load.
      if (chunks) first_more = chunks->next(&first_text, &first_line0) ? 1 : 0;
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!agree(*comm, error)) return kExitBadInput;
  try {
    if (!o.input.empty()) {
      comm->broadcast(&first_more, sizeof first_more, 0);
      comm->broadcast(&first_line0, sizeof first_line0, 0);
      first_text = broadcast_string(*comm, first_text);
      if (first_more) {
        launcher::FilePosition at{first_line0, 0, &seen_ids, std::nullopt};
        first_file = launcher::parse_request_file(first_text, o.input, o.max_new_tokens, at);
        // A chunk of blank lines alone fixes no format for the chunks after it.
        if (!first_file.requests.empty()) format = first_file.format;
        std::string().swap(first_text);
      }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!agree(*comm, error)) return kExitBadInput;
  try {
    const auto load0 = std::chrono::steady_clock::now();
    rt = std::make_unique<runtime::RankRuntime>(
        o.run, *comm, runtime::LocalRank{mpi.local_rank(), mpi.local_size()});
    load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - load0).count();
    auto folder = std::filesystem::path(o.run.checkpoint).lexically_normal();
    if (folder.filename().empty()) folder = folder.parent_path();
    model = folder.filename().string();
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (!agree(*comm, error)) return kExitBadInput;

  std::ofstream file;  // rank 0's results
  if (rank == 0 && !o.output.empty()) {
    file.open(o.output);
    if (!file) throw InputError(o.output + ": cannot open the output file for writing");
  }
  std::ostream& os = o.output.empty() ? std::cout : file;
  const std::string spm = o.run.checkpoint + "/tokenizer.model";

  // ---- generate, a chunk of the input at a time -----------------------------------------------
  // Rank 0 reads up to kChunkBytes of whole lines and broadcasts them; every rank parses the
  // same text, generates for its share, and rank 0 writes the chunk's results in input order
  // before the next is read. Memory holds one chunk whatever the input's size.
  int64_t n_requests = 0, generated = 0;
  double secs = 0;
  runtime::RoutingTraceRecorder trace(rank);
  if (!o.trace.empty()) rt->model().set_routing_trace(&trace);
  for (int64_t chunk = 0;; ++chunk) {
    launcher::RequestFile request_file;
    std::vector<runtime::Request>& requests = request_file.requests;
    std::string text;
    int64_t first_line = 1, more = 1;
    try {
      if (o.input.empty()) {
        if (chunk == 0) {
          requests.push_back({0, launcher::parse_id_list(o.prompt_ids), o.max_new_tokens});
          request_file.user_ids.push_back(0);
        } else {
          more = 0;
        }
      } else if (chunk == 0) {
        more = first_more;
        request_file = std::move(first_file);
      } else if (rank == 0) {
        more = chunks->next(&text, &first_line) ? 1 : 0;
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!agree(*comm, error)) return kExitBadInput;
    if (!o.input.empty() && chunk > 0) {
      comm->broadcast(&more, sizeof more, 0);
      comm->broadcast(&first_line, sizeof first_line, 0);
    }
    if (!more) break;
    try {
      if (!o.input.empty() && chunk > 0) {
        text = broadcast_string(*comm, text);
        launcher::FilePosition at{first_line, n_requests, &seen_ids, format};
        request_file = launcher::parse_request_file(text, o.input, o.max_new_tokens, at);
        if (!request_file.requests.empty()) format = request_file.format;
        std::string().swap(text);
      }
      // Text prompts (JSONL "prompt") through the checkpoint's own tokenizer.model. OpenAI's
      // batch output carries text: decoded wherever the checkpoint has a tokenizer.
      bool any_text = false;
      for (const auto& r : requests) any_text |= r.prompt.empty() && !r.text.empty();
      const bool openai = request_file.format == launcher::BatchFormat::kOpenAi;
      if (!tokenizer && (any_text || (openai && std::filesystem::exists(spm))))
        tokenizer = runtime::Tokenizer::from_file(spm);
      for (auto& r : requests)
        if (r.prompt.empty() && !r.text.empty()) r.prompt = tokenizer->encode(r.text);
      for (const auto& r : requests) rt->engine().validate(r);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!agree(*comm, error)) return kExitBadInput;

    const auto owner = assign_ranks(requests, world);
    int64_t mine = 0;
    for (size_t i = 0; i < requests.size(); ++i)
      if (owner[i] == rank) {
        rt->engine().add(requests[i]);
        ++mine;
      }
    spdlog::debug("chunk {}: {} of {} requests on this rank", chunk, mine, requests.size());
    std::vector<runtime::Result> results;
    const auto t0 = std::chrono::steady_clock::now();
    rt->engine().run([&](runtime::Result&& r) { results.push_back(std::move(r)); });
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // Collect on rank 0, in input order.
    std::string lines;
    for (const auto& r : results) lines += launcher::result_to_json_line(r) + "\n";
    const auto all = all_gather_strings(*comm, lines);
    n_requests += int64_t(requests.size());
    if (rank != 0) continue;
    std::map<int64_t, runtime::Result> by_id;
    for (const auto& t : all) {
      std::istringstream in(t);
      std::string line;
      while (std::getline(in, line))
        if (!line.empty()) {
          auto r = launcher::result_from_json_line(line);
          by_id[r.id] = std::move(r);
        }
    }
    if (by_id.size() != requests.size())
      MOE_THROW("collected " + std::to_string(by_id.size()) + " results for " +
                std::to_string(requests.size()) + " requests");
    for (const auto& [id, r] : by_id) generated += int64_t(r.output.size());
    if (o.input.empty()) {
      const auto& out = by_id.begin()->second.output;
      for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : "", out[i]);
      std::printf("\n");
      std::fflush(stdout);
      continue;
    }
    const bool openai = request_file.format == launcher::BatchFormat::kOpenAi;
    for (size_t i = 0; i < requests.size(); ++i) {
      const runtime::Request& req = requests[i];
      runtime::Result& r = by_id.at(req.id);
      if ((!req.text.empty() || openai) && tokenizer) r.text = tokenizer->decode(r.output);
      os << launcher::result_line(request_file, i, r, model) << "\n";
    }
    os.flush();
    if (!os) throw InputError((o.output.empty() ? "stdout" : o.output) + ": write failed");
  }

  // ---- summary -------------------------------------------------------------------------------
  if (!o.trace.empty())
    trace.write(*comm, o.trace,
                runtime::trace_header(rt->model_config(), rt->model().row_layout(),
                                      rt->placement()));
  rt->stats().steps = rt->engine().steps();
  rt->stats().reduce(*comm);
  // The step time: the slowest rank's (every rank waits for it at the exchanges), split into
  // phases by their means over the ranks.
  const runtime::StepTiming& tt = rt->engine().total_timing();
  double slowest = tt.total, phases[3] = {tt.compute(), tt.exchange, tt.schedule};
  comm->all_reduce(&slowest, 1, comm::Communicator::Op::kMax);
  comm->all_reduce(phases, 3, comm::Communicator::Op::kSum);
  // Prefill and decode throughput: every rank's tokens over the slowest rank's time in them.
  const runtime::PhaseTotals& pt = rt->engine().phase_totals();
  int64_t tokens[2] = {pt.prefill_tokens, pt.decode_tokens};
  double times[3] = {pt.prefill_s, pt.decode_s, load_s};
  comm->all_reduce(tokens, 2, comm::Communicator::Op::kSum);
  comm->all_reduce(times, 3, comm::Communicator::Op::kMax);
  if (rank != 0) return 0;

  spdlog::info("{} requests, {} tokens generated in {:.3f} s ({:.1f} tokens/s) on {} rank(s)",
               n_requests, generated, secs, generated / std::max(secs, 1e-9), world);
  spdlog::info("load {:.2f} s; prefill {} tokens in {:.3f} s ({:.1f} tokens/s, {} steps); decode "
               "{} tokens in {:.3f} s ({:.1f} tokens/s, {} steps)",
               times[2], tokens[0], times[0], tokens[0] / std::max(times[0], 1e-9),
               pt.prefill_steps, tokens[1], times[1], tokens[1] / std::max(times[1], 1e-9),
               pt.decode_steps);
  if (const int64_t steps = rt->engine().steps(); steps > 0) {
    const double sum = std::max(phases[0] + phases[1] + phases[2], 1e-12);
    spdlog::info("{} steps, {:.3f} ms per step (slowest rank); compute {:.1f}%, exchange {:.1f}%, "
                 "scheduling {:.1f}% (means over ranks)",
                 steps, 1e3 * slowest / double(steps), 100 * phases[0] / sum,
                 100 * phases[1] / sum, 100 * phases[2] / sum);
  }
  // Live rebalancing: the totals are the same on every rank (the seconds are rank 0's).
  const runtime::RebalanceTotals rb =
      rt->rebalancer() ? rt->rebalancer()->totals() : runtime::RebalanceTotals{};
  if (rt->rebalancer())
    spdlog::info("rebalancing: {} rebalances in {} checks, {} expert weights moved ({:.3f} MB), "
                 "{:.3f} s in all ({:.3f} s the last)",
                 rb.rebalances, rb.checks, rb.weights_moved, rb.bytes_moved / 1e6, rb.seconds,
                 rb.last_seconds);
  if (!o.quiet_table) std::fprintf(stderr, "\n%s", rt->stats().table(rt->placement()).c_str());
  if (!o.stats_json.empty()) {
    std::ofstream js(o.stats_json);
    if (!js) throw InputError(o.stats_json + ": cannot open for writing");
    nlohmann::json j = rt->stats().to_json();
    j["placement"] = runtime::placement_json(rt->placement());  // what moe-plan starts from
    j["step_seconds"] = slowest;  // slowest rank's engine step time, summed over the steps
    // The placement above is the last one when rebalancing moved experts during the run.
    j["rebalance"] = {{"enabled", rt->rebalancer() != nullptr},
                      {"checks", rb.checks},
                      {"rebalances", rb.rebalances},
                      {"weights_moved", rb.weights_moved},
                      {"bytes_moved", rb.bytes_moved},
                      {"seconds", rb.seconds},
                      {"last_seconds", rb.last_seconds}};
    js << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return moe::launcher::rank_main(argc, argv, run); }
