// End to end: moe-coordinator plus `mpirun -np N moe-worker` on the tiny reference checkpoint,
// driven through the public gRPC API. Each test starts its own coordinator (a free loopback
// port) and worker job, and stops them. Every RPC has a deadline, so a hang fails the test.
// This binary does not start MPI itself: its children are a clean mpirun job.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "moe/v1/inference.grpc.pb.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
const std::string kBin = MOE_BIN_DIR;
const std::string kConfigs = MOE_CONFIGS_DIR;
const std::string kData = MOE_TEST_DATA;

// A child process in its own process group, killed with its group when the test ends.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& log) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawnattr_t at;
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    // Idle MPI ranks yield instead of spinning: the test machine has 2 cores.
    std::vector<std::string> env_s = {"OMPI_MCA_mpi_yield_when_idle=1"};
    for (char** e = environ; *e; ++e) env_s.push_back(*e);
    std::vector<char*> env;
    for (auto& e : env_s) env.push_back(e.data());
    env.push_back(nullptr);
    if (posix_spawnp(&pid_, args[0], &fa, &at, args.data(), env.data()) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
  }
  ~Child() { stop(SIGKILL, 0); }
  pid_t pid() const { return pid_; }
  // Freezes / thaws the whole process group (mpirun and its ranks).
  void pause() { ::kill(-pid_, SIGSTOP); }
  void resume() { ::kill(-pid_, SIGCONT); }
  // Sends `sig` to the group; waits up to `secs` for the exit. Returns the wait status, or -1.
  int stop(int sig, double secs) {
    if (pid_ <= 0) return status_;
    ::kill(-pid_, sig);
    const auto until = Clock::now() + std::chrono::duration<double>(secs);
    do {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        status_ = st;
        return st;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (Clock::now() < until);
    if (sig != SIGKILL) return stop(SIGKILL, 5);
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

template <class R>
std::unique_ptr<grpc::ClientContext> ctx_for(double secs) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(int(secs * 1000)));
  return c;
}

struct Job {
  int ranks = 2;
  std::vector<std::string> coordinator_args;
  std::vector<std::string> worker_args;
};

class ServingTest : public ::testing::Test {
 public:  // the shared checks below are free functions
  void start(const Job& job) {
    port_ = free_port();
    addr_ = "127.0.0.1:" + std::to_string(port_);
    const std::string tag = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    coord_log_ = "/tmp/moe_e2e_" + tag + "_coordinator.log";
    worker_log_ = "/tmp/moe_e2e_" + tag + "_worker.log";
    std::vector<std::string> c = {kBin + "/moe-coordinator", "--listen", addr_, "--metrics-port",
                                  "0", "--rank-timeout-s", "3", "--drain-timeout-s", "10"};
    c.insert(c.end(), job.coordinator_args.begin(), job.coordinator_args.end());
    coordinator_ = std::make_unique<Child>(c, coord_log_);
    std::vector<std::string> w = {"mpirun", "--oversubscribe"};
    if (geteuid() == 0) w.push_back("--allow-run-as-root");
    w.insert(w.end(), {"-np", std::to_string(job.ranks), kBin + "/moe-worker", "--coordinator",
                       addr_, "--config", kConfigs + "/tiny_a.yaml", "--log-level", "warn"});
    w.insert(w.end(), job.worker_args.begin(), job.worker_args.end());
    workers_ = std::make_unique<Child>(w, worker_log_);
    // Ready once the worker job has attached (GetLoadStats answers OK). A fresh channel per
    // attempt: a channel that failed to connect waits out a reconnect backoff of seconds.
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < until) {
      stub_ = moe::v1::Inference::NewStub(
          grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
      moe::v1::LoadStatsResponse r;
      if (stub_->GetLoadStats(ctx_for<int>(1).get(), {}, &r).ok()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "the serving job did not become ready in 60 s\ncoordinator:\n"
           << slurp(coord_log_) << "\nworkers:\n" << slurp(worker_log_);
  }

  void TearDown() override {
    if (coordinator_) coordinator_->stop(SIGTERM, 15);
    if (workers_) workers_->stop(SIGTERM, 10);
    if (HasFailure())
      std::fprintf(stderr, "--- coordinator log ---\n%s\n--- worker log ---\n%s\n",
                   slurp(coord_log_).c_str(), slurp(worker_log_).c_str());
  }

  // Submits, watches until the batch leaves RUNNING, returns the final status with results.
  moe::v1::BatchStatus run_batch(const moe::v1::SubmitBatchRequest& req, double secs,
                                 std::vector<moe::v1::BatchStatus>* progress = nullptr) {
    moe::v1::SubmitBatchResponse sub;
    auto st = stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub);
    EXPECT_TRUE(st.ok()) << st.error_message();
    auto ctx = ctx_for<int>(secs);
    moe::v1::GetBatchRequest g;
    g.set_batch_id(sub.batch_id());
    auto reader = stub_->WatchBatch(ctx.get(), g);
    moe::v1::BatchStatus s;
    while (reader->Read(&s))
      if (progress) progress->push_back(s);
    EXPECT_TRUE(reader->Finish().ok());
    moe::v1::BatchStatus out;
    EXPECT_TRUE(stub_->GetBatch(ctx_for<int>(10).get(), g, &out).ok());
    return out;
  }

  int port_ = 0;
  std::string addr_, coord_log_, worker_log_;
  std::unique_ptr<Child> coordinator_, workers_;
  std::unique_ptr<moe::v1::Inference::Stub> stub_;
};

// 64 prompts of 1 to 24 tokens, 1 to 12 new tokens each, seeded.
std::string make_prompts_jsonl(int n) {
  std::mt19937 rng(2024);
  std::string out;
  for (int i = 0; i < n; ++i) {
    json j;
    j["id"] = 1000 + i;
    std::vector<int> p(1 + rng() % 24);
    for (auto& t : p) t = 3 + int(rng() % 509);
    j["prompt_ids"] = p;
    j["max_new_tokens"] = 1 + int(rng() % 12);
    out += j.dump() + "\n";
  }
  return out;
}

// moe-run's results on one rank, by id: the reference for the served ones.
std::map<int64_t, json> moe_run_results(const std::string& jsonl) {
  const std::string in = "/tmp/moe_e2e_prompts.jsonl", out = "/tmp/moe_e2e_moe_run_out.jsonl";
  std::ofstream(in) << jsonl;
  Child run({kBin + "/moe-run", "--config", kConfigs + "/tiny_a.yaml", "--input", in, "--output",
             out, "--no-stats-table", "--log-level", "warn"},
            "/tmp/moe_e2e_moe_run.log");
  const int st = run.stop(0, 60);  // signal 0: just wait
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << slurp("/tmp/moe_e2e_moe_run.log");
  std::map<int64_t, json> res;
  std::istringstream lines(slurp(out));
  std::string line;
  while (std::getline(lines, line))
    if (!line.empty()) {
      json j = json::parse(line);
      res[j["id"].get<int64_t>()] = j;
    }
  return res;
}

void batch_matches_moe_run(ServingTest* t, int ranks) {
  const std::string jsonl = make_prompts_jsonl(64);
  const auto want = moe_run_results(jsonl);
  ASSERT_EQ(want.size(), 64u);
  moe::v1::SubmitBatchRequest req;
  std::istringstream lines(jsonl);
  std::string line;
  std::vector<int64_t> order;
  while (std::getline(lines, line)) {
    const json j = json::parse(line);
    auto* it = req.add_items();
    it->set_id(j["id"].get<int64_t>());
    for (int x : j["prompt_ids"]) it->add_prompt_ids(x);
    it->set_max_new_tokens(j["max_new_tokens"].get<int>());
    order.push_back(it->id());
  }
  std::vector<moe::v1::BatchStatus> progress;
  const auto done = t->run_batch(req, 120, &progress);
  ASSERT_EQ(done.state(), moe::v1::BATCH_STATE_DONE) << done.error();
  ASSERT_EQ(done.results_size(), 64);
  for (int i = 0; i < 64; ++i) {
    const auto& r = done.results(i);
    EXPECT_EQ(r.id(), order[i]) << "results must come in input order";
    const json& w = want.at(r.id());
    EXPECT_EQ(std::vector<int32_t>(r.output_ids().begin(), r.output_ids().end()),
              w["output_ids"].get<std::vector<int32_t>>())
        << "id " << r.id();
    EXPECT_EQ(r.finish_reason(), w["finish_reason"].get<std::string>()) << "id " << r.id();
  }
  // Progress was reported while it ran, and never went backwards.
  ASSERT_FALSE(progress.empty());
  for (size_t i = 1; i < progress.size(); ++i)
    EXPECT_GE(progress[i].completed(), progress[i - 1].completed());
  EXPECT_EQ(progress.back().completed(), 64);

  // The load statistics saw every routed token on the right number of ranks.
  moe::v1::LoadStatsResponse ls;
  ASSERT_TRUE(t->stub_->GetLoadStats(ctx_for<int>(5).get(), {}, &ls).ok());
  EXPECT_EQ(ls.ranks(), ranks);
  EXPECT_EQ(ls.experts(), 8);
  int64_t routed = 0, computed = 0;
  for (const auto& L : ls.layers()) {
    for (auto v : L.tokens_per_expert()) routed += v;
    for (auto v : L.rows_computed_per_rank()) computed += v;
    EXPECT_GE(L.expert_imbalance(), 1.0);
  }
  EXPECT_GT(routed, 0);
  EXPECT_EQ(routed, computed);
}

TEST_F(ServingTest, BatchOf64MatchesMoeRunAt2Ranks) {
  start({2, {}, {}});
  batch_matches_moe_run(this, 2);
}

TEST_F(ServingTest, BatchOf64MatchesMoeRunAt4Ranks) {
  start({4, {}, {}});
  batch_matches_moe_run(this, 4);
}

// Generate streams the tokens transformers generates (tests/data/tiny_a, prompt 1), in order.
TEST_F(ServingTest, GenerateStreamsTransformersTokensInOrder) {
  start({2, {}, {}});
  const json ref = json::parse(slurp(kData + "/tiny_a/reference.json"));
  const auto& p = ref["prompts"][1];
  moe::v1::GenerateRequest req;
  for (int x : p["prompt_ids"]) req.add_prompt_ids(x);
  req.set_max_new_tokens(16);
  auto ctx = ctx_for<int>(30);
  auto reader = stub_->Generate(ctx.get(), req);
  moe::v1::GenerateResponse r;
  std::vector<int32_t> got;
  std::string finish;
  while (reader->Read(&r)) {
    EXPECT_EQ(r.index(), int(got.size())) << "tokens must stream in order";
    EXPECT_TRUE(finish.empty()) << "nothing may follow the finishing token";
    got.push_back(r.token_id());
    finish = r.finish_reason();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(got, p["generated_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(finish, "length");
}

// A text prompt is tokenized with the checkpoint's tokenizer.model (which the worker sends to
// the coordinator) and the output decoded: the streamed text adds up to what moe-run decodes
// for the same prompt, and the ids are the same.
TEST_F(ServingTest, TextPromptsAreTokenizedAndDecoded) {
  start({2, {}, {}});
  const std::string prompt = "The licenses for most software";
  const auto want = moe_run_results(json({{"id", 5}, {"prompt", prompt}, {"max_new_tokens", 12}})
                                        .dump() + "\n");
  ASSERT_EQ(want.size(), 1u);
  const json& w = want.at(5);
  ASSERT_TRUE(w.contains("output_text"));

  moe::v1::GenerateRequest req;
  req.set_prompt_text(prompt);
  req.set_max_new_tokens(12);
  auto ctx = ctx_for<int>(30);
  auto reader = stub_->Generate(ctx.get(), req);
  moe::v1::GenerateResponse r;
  std::vector<int32_t> ids;
  std::string text;
  while (reader->Read(&r)) {
    ids.push_back(r.token_id());
    text += r.token_text();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(ids, w["output_ids"].get<std::vector<int32_t>>());
  EXPECT_EQ(text, w["output_text"].get<std::string>());

  // In a batch too: output_text beside the ids.
  moe::v1::SubmitBatchRequest b;
  auto* it = b.add_items();
  it->set_id(5);
  it->set_prompt_text(prompt);
  it->set_max_new_tokens(12);
  const auto done = run_batch(b, 60);
  ASSERT_EQ(done.state(), moe::v1::BATCH_STATE_DONE) << done.error();
  EXPECT_EQ(done.results(0).output_text(), w["output_text"].get<std::string>());
}

// Each kind of bad request is refused with INVALID_ARGUMENT (NOT_FOUND for an unknown batch)
// and a message naming what was wrong; a good request alongside is served all the same.
TEST_F(ServingTest, InvalidRequestsAreRefusedAndOthersServed) {
  start({2, {}, {}});
  auto generate_status = [&](const moe::v1::GenerateRequest& req) {
    auto ctx = ctx_for<int>(10);
    auto reader = stub_->Generate(ctx.get(), req);
    moe::v1::GenerateResponse r;
    while (reader->Read(&r)) {
    }
    return reader->Finish();
  };
  struct Case {
    std::string name;
    std::vector<int> ids;
    int max_new;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"empty prompt", {}, 4, "empty prompt"},
      {"id outside the vocabulary", {5, 512}, 4, "outside the vocabulary [0, 512)"},
      {"negative id", {-1}, 4, "outside the vocabulary"},
      {"max_new_tokens 0", {5}, 0, "max_new_tokens is 0"},
      {"beyond the context", {5, 6}, 255, "exceeds the context of 256"},
  };
  // A good request in flight while the bad ones are refused.
  moe::v1::GenerateRequest good;
  good.add_prompt_ids(7);
  good.set_max_new_tokens(12);
  good.set_ignore_eos(true);
  auto good_ctx = ctx_for<int>(30);
  auto good_reader = stub_->Generate(good_ctx.get(), good);
  for (const auto& c : cases) {
    moe::v1::GenerateRequest req;
    for (int x : c.ids) req.add_prompt_ids(x);
    req.set_max_new_tokens(c.max_new);
    const auto st = generate_status(req);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_NE(st.error_message().find(c.expect), std::string::npos)
        << c.name << ": " << st.error_message();
  }
  moe::v1::SubmitBatchRequest empty;
  moe::v1::SubmitBatchResponse sub;
  auto st = stub_->SubmitBatch(ctx_for<int>(10).get(), empty, &sub);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("empty batch"), std::string::npos) << st.error_message();

  moe::v1::SubmitBatchRequest dup;
  for (int i = 0; i < 2; ++i) {
    auto* it = dup.add_items();
    it->set_id(9);
    it->add_prompt_ids(5);
    it->set_max_new_tokens(2);
  }
  st = stub_->SubmitBatch(ctx_for<int>(10).get(), dup, &sub);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("duplicate id"), std::string::npos) << st.error_message();

  moe::v1::SubmitBatchRequest one_bad;  // refused whole: nothing of it runs
  for (int i = 0; i < 3; ++i) {
    auto* it = one_bad.add_items();
    it->set_id(i);
    it->add_prompt_ids(i == 2 ? 100000 : 5);
    it->set_max_new_tokens(2);
  }
  st = stub_->SubmitBatch(ctx_for<int>(10).get(), one_bad, &sub);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("item 2 (id 2)"), std::string::npos) << st.error_message();

  moe::v1::GetBatchRequest unknown;
  unknown.set_batch_id("batch-does-not-exist");
  moe::v1::BatchStatus bs;
  EXPECT_EQ(stub_->GetBatch(ctx_for<int>(10).get(), unknown, &bs).error_code(),
            grpc::StatusCode::NOT_FOUND);

  moe::v1::GenerateResponse r;
  int n = 0;
  while (good_reader->Read(&r)) ++n;
  EXPECT_TRUE(good_reader->Finish().ok());
  EXPECT_EQ(n, 12);
}

// Past --max-queue sequences in flight, requests get RESOURCE_EXHAUSTED; a batch that does not
// fit whole is refused whole; once the queue drains, requests are served again.
TEST_F(ServingTest, BackpressureRefusesPastTheQueueBound) {
  start({2, {"--max-queue", "4"}, {}});
  moe::v1::SubmitBatchRequest five;
  for (int i = 0; i < 5; ++i) {
    auto* it = five.add_items();
    it->set_id(i);
    it->add_prompt_ids(5 + i);
    it->set_max_new_tokens(4);
  }
  moe::v1::SubmitBatchResponse sub;
  auto st = stub_->SubmitBatch(ctx_for<int>(10).get(), five, &sub);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-queue"), std::string::npos) << st.error_message();

  // Four long sequences fill the queue...
  moe::v1::SubmitBatchRequest four;
  four.set_ignore_eos(true);
  for (int i = 0; i < 4; ++i) {
    auto* it = four.add_items();
    it->set_id(i);
    it->add_prompt_ids(5 + i);
    it->set_max_new_tokens(250);
  }
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), four, &sub).ok());
  // ...so one more is refused while they run. The worker job is paused meanwhile: the tiny
  // model could otherwise finish them before the next request arrives.
  workers_->pause();
  moe::v1::GenerateRequest more;
  more.add_prompt_ids(5);
  more.set_max_new_tokens(2);
  {
    auto ctx = ctx_for<int>(10);
    auto reader = stub_->Generate(ctx.get(), more);
    moe::v1::GenerateResponse r;
    while (reader->Read(&r)) {
    }
    const auto s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  }
  workers_->resume();
  // When the batch is done, the same request is served.
  moe::v1::GetBatchRequest g;
  g.set_batch_id(sub.batch_id());
  auto ctx = ctx_for<int>(120);
  auto watch = stub_->WatchBatch(ctx.get(), g);
  moe::v1::BatchStatus bs;
  while (watch->Read(&bs)) {
  }
  ASSERT_TRUE(watch->Finish().ok());
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_DONE) << bs.error();
  auto ctx2 = ctx_for<int>(30);
  auto reader = stub_->Generate(ctx2.get(), more);
  moe::v1::GenerateResponse r;
  int n = 0;
  while (reader->Read(&r)) ++n;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_GE(n, 1);
}

// A client that cancels frees its sequence: with one KV slot per rank and a queue bound of
// one, the next request can only run if both the coordinator and the rank let go of it.
TEST_F(ServingTest, CancelledClientFreesItsSequence) {
  start({1, {"--max-queue", "1"}, {"--max-seqs", "1"}});
  moe::v1::GenerateRequest long_req;
  long_req.add_prompt_ids(5);
  long_req.set_max_new_tokens(250);
  long_req.set_ignore_eos(true);
  {
    auto ctx = ctx_for<int>(30);
    auto reader = stub_->Generate(ctx.get(), long_req);
    moe::v1::GenerateResponse r;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&r));
    workers_->pause();  // so the sequence cannot finish before the cancel reaches it
    ctx->TryCancel();
    while (reader->Read(&r)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the coordinator's 100 ms poll
    workers_->resume();
  }
  moe::v1::GenerateRequest next;
  next.add_prompt_ids(6);
  next.set_max_new_tokens(3);
  next.set_ignore_eos(true);
  // The coordinator notices the cancel within its 100 ms polling; retry briefly until then.
  grpc::Status st;
  int n = 0;
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto ctx = ctx_for<int>(20);
    auto reader = stub_->Generate(ctx.get(), next);
    moe::v1::GenerateResponse r;
    n = 0;
    while (reader->Read(&r)) ++n;
    st = reader->Finish();
    if (st.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(n, 3);
}

// Killing one worker rank mid-batch fails the batch and the streams in flight with
// UNAVAILABLE and a message, within the bound; no client hangs.
TEST_F(ServingTest, KilledRankFailsTheBatchWithinTheBound) {
  // One token per rank per step: the tiny model is fast, and the batch must still be running
  // when the rank dies (64 x 250 tokens take thousands of steps).
  start({2, {}, {"--max-tokens-per-step", "1"}});
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(250);
  g.set_ignore_eos(true);
  auto gctx = ctx_for<int>(60);
  auto stream = stub_->Generate(gctx.get(), g);
  moe::v1::GenerateResponse first;
  ASSERT_TRUE(stream->Read(&first));
  moe::v1::SubmitBatchRequest req;
  req.set_ignore_eos(true);
  for (int i = 0; i < 64; ++i) {
    auto* it = req.add_items();
    it->set_id(i);
    it->add_prompt_ids(5 + i);
    it->set_max_new_tokens(250);
  }
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());

  // Kill one rank of the job (not mpirun itself): a moe-worker child of mpirun.
  const std::string cmd = "pgrep -f -n -P " + std::to_string(workers_->pid()) + " moe-worker";
  FILE* p = popen(cmd.c_str(), "r");
  int victim = 0;
  ASSERT_EQ(fscanf(p, "%d", &victim), 1) << cmd;
  pclose(p);
  const auto killed_at = Clock::now();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);

  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  auto wctx = ctx_for<int>(60);
  auto watch = stub_->WatchBatch(wctx.get(), gb);
  moe::v1::BatchStatus bs;
  while (watch->Read(&bs)) {
  }
  ASSERT_TRUE(watch->Finish().ok());
  const double secs = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_FAILED);
  EXPECT_NE(bs.error().find("worker job"), std::string::npos) << bs.error();
  EXPECT_LT(secs, 10.0) << "the failure must be reported within the rank timeout and margin";

  moe::v1::GenerateResponse r;
  while (stream->Read(&r)) {
  }
  const auto st = stream->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();

  // New work is refused clearly, not queued forever.
  auto ctx = ctx_for<int>(10);
  auto again = stub_->Generate(ctx.get(), g);
  while (again->Read(&r)) {
  }
  EXPECT_EQ(again->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

// SIGTERM drains: work in flight completes, new work is refused, the coordinator exits 0.
TEST_F(ServingTest, SigtermDrainsInFlightWork) {
  start({2, {}, {"--max-tokens-per-step", "1"}});  // slow enough that the drain is observed
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(11);
  g.set_max_new_tokens(250);
  g.set_ignore_eos(true);
  auto gctx = ctx_for<int>(60);
  auto stream = stub_->Generate(gctx.get(), g);
  moe::v1::GenerateResponse r;
  ASSERT_TRUE(stream->Read(&r));
  // More work in flight, so the drain lasts: 32 long sequences.
  moe::v1::SubmitBatchRequest bg;
  bg.set_ignore_eos(true);
  for (int i = 0; i < 32; ++i) {
    auto* it = bg.add_items();
    it->set_id(i);
    it->add_prompt_ids(20 + i);
    it->set_max_new_tokens(250);
  }
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), bg, &sub).ok());
  ::kill(coordinator_->pid(), SIGTERM);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  {
    auto ctx = ctx_for<int>(10);
    auto refused = stub_->Generate(ctx.get(), g);
    moe::v1::GenerateResponse x;
    while (refused->Read(&x)) {
    }
    EXPECT_EQ(refused->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  int n = 1;
  while (stream->Read(&r)) ++n;
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(n, 250);
  const int st = coordinator_->stop(0, 20);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  const int ws = workers_->stop(0, 20);  // the worker job stops when told to
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << "status " << ws;
}

}  // namespace
