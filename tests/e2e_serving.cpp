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

#include <dirent.h>
#include <google/protobuf/unknown_field_set.h>
#include <grpcpp/generic/generic_stub.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "grpc/health/v1/health.grpc.pb.h"
#include "moe/v1/inference.grpc.pb.h"
#include "moe/v1/worker.grpc.pb.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
const std::string kBin = MOE_BIN_DIR;
const std::string kConfigs = MOE_CONFIGS_DIR;
const std::string kData = MOE_TEST_DATA;

// /proc/<pid>/stat: the state letter and the parent pid, or {0, -1} once it is gone.
std::pair<char, pid_t> proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return {0, -1};
  // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
  std::istringstream rest(line.substr(line.rfind(')') + 1));
  char state = 0;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return {state, ppid};
}

// Every live descendant of `root` (children, grandchildren, ...), found by parent pid in /proc.
std::vector<pid_t> descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;  // parent -> child
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d)) {
      const pid_t p = pid_t(std::atoi(e->d_name));
      if (p > 0) children.emplace(proc_stat(p).second, p);
    }
    closedir(d);
  }
  std::vector<pid_t> out, todo = {root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    for (auto [it, end] = children.equal_range(p); it != end; ++it) {
      out.push_back(it->second);
      todo.push_back(it->second);
    }
  }
  return out;
}

// The MPI rank of a process (OMPI_COMM_WORLD_RANK in its environment), or -1.
int mpi_rank_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  const std::string key = "OMPI_COMM_WORLD_RANK=";
  for (std::string var; std::getline(in, var, '\0');)
    if (var.rfind(key, 0) == 0) return std::atoi(var.c_str() + key.size());
  return -1;
}

// Sends SIGSTOP and waits until every process in `pids` shows as stopped, so that nothing runs
// once this returns. False if one did not stop within 10 s.
bool freeze(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) ::kill(p, SIGSTOP);
  const auto until = Clock::now() + std::chrono::seconds(10);
  for (pid_t p : pids)
    for (char st; (st = proc_stat(p).first) != 0 && st != 'T' && st != 't' && st != 'Z';) {
      if (Clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  return true;
}

// A child process in its own process group, killed with its group when the test ends.
// NOTES: Open MPI puts every rank in a process group of its own, so signalling mpirun's group
// does not reach the ranks: pause/resume/stop also signal mpirun's descendants one by one.
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
    std::vector<std::string> env_s;
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
  // Freezes / thaws the child and every descendant (for mpirun: its ranks). pause() returns
  // once all of them are stopped.
  bool pause() {
    std::vector<pid_t> all = descendants(pid_);
    all.insert(all.begin(), pid_);
    return freeze(all);
  }
  void resume() {
    for (pid_t p : descendants(pid_)) ::kill(p, SIGCONT);
    ::kill(-pid_, SIGCONT);
  }
  // The pid of MPI rank `rank` among the descendants, or -1.
  pid_t rank_pid(int rank) const {
    for (pid_t p : descendants(pid_))
      if (mpi_rank_of(p) == rank) return p;
    return -1;
  }
  // Sends `sig` to the group; waits up to `secs` for the exit. Returns the wait status, or -1.
  // Frozen descendants are thawed first so that they can act on it, and SIGKILL reaches each
  // descendant by pid (they are not in the group, and once mpirun is gone no longer its own).
  int stop(int sig, double secs) { return stop(sig, secs, descendants(pid_)); }
  int stop(int sig, double secs, const std::vector<pid_t>& kids) {
    if (pid_ <= 0) return status_;
    if (sig != 0) {
      for (pid_t p : kids) ::kill(p, sig == SIGKILL ? SIGKILL : SIGCONT);
      ::kill(-pid_, SIGCONT);
    }
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
    if (sig != SIGKILL) return stop(SIGKILL, 5, kids);
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

// The API key every call carries ("" for none): set by the tests that turn keys on.
std::string g_api_key;
const char kWorkerSecret[] = "e2e-worker-secret-0123456789";

template <class R>
std::unique_ptr<grpc::ClientContext> ctx_for(double secs, const std::string& key = g_api_key) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(int(secs * 1000)));
  if (!key.empty()) c->AddMetadata("authorization", "Bearer " + key);
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
    // The coordinator refuses to start without a worker secret; the workers present it.
    setenv("MOE_WORKER_SECRET", kWorkerSecret, 1);
    port_ = free_port();
    addr_ = "127.0.0.1:" + std::to_string(port_);
    const std::string tag = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    coord_log_ = "/tmp/moe_e2e_" + tag + "_coordinator.log";
    worker_log_ = "/tmp/moe_e2e_" + tag + "_worker.log";
    std::vector<std::string> c = {kBin + "/moe-coordinator", "--listen", addr_, "--rank-timeout-s",
                                  "3", "--drain-timeout-s", "10", "--drain-grace-s", "5"};
    const auto& ca = job.coordinator_args;
    if (std::find(ca.begin(), ca.end(), "--metrics-port") == ca.end())
      c.insert(c.end(), {"--metrics-port", "0"});
    c.insert(c.end(), ca.begin(), ca.end());
    coordinator_ = std::make_unique<Child>(c, coord_log_);
    start_workers(job);
    wait_ready();
  }

  // A worker job for the running coordinator (again, after one was lost: as moe-launch does).
  void start_workers(const Job& job) {
    std::vector<std::string> w = {"mpirun", "--oversubscribe"};
    if (geteuid() == 0) w.push_back("--allow-run-as-root");
    w.insert(w.end(), {"-np", std::to_string(job.ranks), kBin + "/moe-worker", "--coordinator",
                       addr_, "--config", kConfigs + "/tiny_a.yaml", "--log-level", "warn"});
    w.insert(w.end(), job.worker_args.begin(), job.worker_args.end());
    if (workers_) workers_->stop(SIGKILL, 5);
    workers_ = std::make_unique<Child>(w, worker_log_ + (workers_ ? ".again" : ""));
  }

  void wait_ready() {
    // Ready once the worker job has attached (GetLoadStats answers OK). A fresh channel per
    // attempt: a channel that failed to connect waits out a reconnect backoff of seconds.
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < until) {
      stub_ = moe::v1::Inference::NewStub(
          grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
      moe::v1::LoadStatsResponse r;
      if (stub_->GetLoadStats(ctx_for<int>(1).get(), {}, &r).ok() && r.worker_attached()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL() << "the serving job did not become ready in 60 s\ncoordinator:\n"
           << slurp(coord_log_) << "\nworkers:\n" << slurp(worker_log_);
  }

  void TearDown() override {
    g_api_key.clear();
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

  // Watches the batch until its stream ends and returns the last status sent (the stream must
  // end cleanly).
  moe::v1::BatchStatus watch_to_end(const moe::v1::GetBatchRequest& g, double secs) {
    auto ctx = ctx_for<int>(secs);
    auto reader = stub_->WatchBatch(ctx.get(), g);
    moe::v1::BatchStatus s, last;
    while (reader->Read(&s)) last = s;
    const auto st = reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    return last;
  }

  moe::v1::LoadStatsResponse stats(bool recent = false) {
    moe::v1::LoadStatsResponse r;
    moe::v1::LoadStatsRequest req;
    req.set_recent_window(recent);
    const auto st = stub_->GetLoadStats(ctx_for<int>(10).get(), req, &r);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return r;
  }

  // Polls the statistics until `done` holds; false if it does not within `secs`.
  template <class Pred>
  bool stats_until(Pred done, double secs = 20) {
    const auto until = Clock::now() + std::chrono::duration<double>(secs);
    for (; Clock::now() < until; std::this_thread::sleep_for(std::chrono::milliseconds(20)))
      if (done(stats())) return true;
    return false;
  }

  // The standard health check of the whole server ("" service).
  grpc::health::v1::HealthCheckResponse::ServingStatus health() {
    auto h = grpc::health::v1::Health::NewStub(
        grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
    grpc::health::v1::HealthCheckResponse r;
    const auto st = h->Check(ctx_for<int>(5).get(), {}, &r);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return r.status();
  }

  int port_ = 0;
  std::string addr_, coord_log_, worker_log_;
  std::unique_ptr<Child> coordinator_, workers_;
  std::unique_ptr<moe::v1::Inference::Stub> stub_;
};

// n prompts of 1 to 24 tokens, min_new to min_new + 11 new tokens each, seeded.
std::string make_prompts_jsonl(int n, int min_new = 1) {
  std::mt19937 rng(2024);
  std::string out;
  for (int i = 0; i < n; ++i) {
    json j;
    j["id"] = 1000 + i;
    std::vector<int> p(1 + rng() % 24);
    for (auto& t : p) t = 3 + int(rng() % 509);
    j["prompt_ids"] = p;
    j["max_new_tokens"] = min_new + int(rng() % 12);
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

// A batch of n items: item i has id i, the one-token prompt first_token + i, and
// max_new_tokens new tokens.
moe::v1::SubmitBatchRequest small_batch(int n, int first_token, int max_new_tokens) {
  moe::v1::SubmitBatchRequest req;
  for (int i = 0; i < n; ++i) {
    auto* it = req.add_items();
    it->set_id(i);
    it->add_prompt_ids(first_token + i);
    it->set_max_new_tokens(max_new_tokens);
  }
  return req;
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

// Sampling through the API: a seeded Generate and a seeded batch item give the tokens moe-run
// gives for the same request line (the draw depends only on the seed and the token's index, not
// on the rank count, batch or schedule), logprobs come with each token where asked, a stop
// token ends the output with finish_reason "stop", and an out-of-range field is refused naming
// it.
TEST_F(ServingTest, SamplingMatchesMoeRunAndIsValidated) {
  start({2, {}, {}});
  const json line = {{"id", 3},          {"prompt_ids", {5, 6, 7, 8}}, {"max_new_tokens", 20},
                     {"temperature", 0.9}, {"top_k", 40},               {"seed", 1234},
                     {"logprobs", 2}};
  const auto want = moe_run_results(line.dump() + "\n");
  ASSERT_EQ(want.size(), 1u);
  const auto want_ids = want.at(3)["output_ids"].get<std::vector<int32_t>>();

  moe::v1::GenerateRequest req;
  for (int x : {5, 6, 7, 8}) req.add_prompt_ids(x);
  req.set_max_new_tokens(20);
  req.mutable_sampling()->set_temperature(0.9f);
  req.mutable_sampling()->set_top_k(40);
  req.mutable_sampling()->set_seed(1234);
  req.mutable_sampling()->set_logprobs(2);
  {
    auto ctx = ctx_for<int>(30);
    auto reader = stub_->Generate(ctx.get(), req);
    moe::v1::GenerateResponse r;
    std::vector<int32_t> got;
    while (reader->Read(&r)) {
      got.push_back(r.token_id());
      EXPECT_TRUE(r.has_logprob()) << "token " << got.size();
      EXPECT_LE(r.logprob(), 0.0f);
      EXPECT_EQ(r.top_logprobs_size(), 2);
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(got, want_ids);
  }
  // The same item in a batch beside others.
  auto batch = small_batch(3, 20, 6);
  auto* it = batch.add_items();
  it->set_id(3);
  for (int x : {5, 6, 7, 8}) it->add_prompt_ids(x);
  it->set_max_new_tokens(20);
  *it->mutable_sampling() = req.sampling();
  const auto done = run_batch(batch, 60, nullptr);
  ASSERT_EQ(done.state(), moe::v1::BATCH_STATE_DONE) << done.error();
  const auto& r3 = done.results(3);
  EXPECT_EQ(std::vector<int32_t>(r3.output_ids().begin(), r3.output_ids().end()), want_ids);
  EXPECT_EQ(r3.logprobs_size(), r3.output_ids_size());

  // A stop token: the greedy output's third token ends it.
  moe::v1::GenerateRequest greedy;
  for (int x : {5, 6, 7, 8}) greedy.add_prompt_ids(x);
  greedy.set_max_new_tokens(10);
  greedy.set_ignore_eos(true);
  std::vector<int32_t> plain;
  {
    auto ctx = ctx_for<int>(30);
    auto reader = stub_->Generate(ctx.get(), greedy);
    moe::v1::GenerateResponse r;
    while (reader->Read(&r)) plain.push_back(r.token_id());
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_EQ(plain.size(), 10u);
  greedy.mutable_sampling()->add_stop_token_ids(plain[2]);
  {
    auto ctx = ctx_for<int>(30);
    auto reader = stub_->Generate(ctx.get(), greedy);
    moe::v1::GenerateResponse r;
    std::vector<int32_t> got;
    std::string finish;
    while (reader->Read(&r)) {
      got.push_back(r.token_id());
      finish = r.finish_reason();
    }
    ASSERT_TRUE(reader->Finish().ok());
    const size_t first = size_t(std::find(plain.begin(), plain.end(), plain[2]) - plain.begin());
    EXPECT_EQ(got, std::vector<int32_t>(plain.begin(), plain.begin() + long(first) + 1));
    EXPECT_EQ(finish, "stop");
  }

  // A stop string over gRPC: the streamed text ends before it, finish_reason "stop"; refused in
  // a batch (stop_token_ids serve there).
  {
    moe::v1::GenerateRequest text_req;
    text_req.set_prompt_text("The licenses for most software");
    text_req.set_max_new_tokens(12);
    text_req.set_ignore_eos(true);
    auto stream_text = [&](const moe::v1::GenerateRequest& g, std::string* finish) {
      auto ctx = ctx_for<int>(30);
      auto reader = stub_->Generate(ctx.get(), g);
      moe::v1::GenerateResponse r;
      std::string text;
      while (reader->Read(&r)) {
        text += r.token_text();
        *finish = r.finish_reason();
      }
      EXPECT_TRUE(reader->Finish().ok());
      return text;
    };
    std::string finish;
    const std::string full = stream_text(text_req, &finish);
    ASSERT_GE(full.size(), 6u) << full;
    const std::string stop = full.substr(3, 3);
    text_req.mutable_sampling()->add_stop(stop);
    const std::string cut = stream_text(text_req, &finish);
    EXPECT_EQ(cut, full.substr(0, full.find(stop))) << "stop '" << stop << "' in '" << full << "'";
    EXPECT_EQ(finish, "stop");
    auto with_stop = small_batch(2, 20, 4);
    with_stop.mutable_items(1)->mutable_sampling()->add_stop("x");
    moe::v1::SubmitBatchResponse resp;
    const auto st = stub_->SubmitBatch(ctx_for<int>(10).get(), with_stop, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("sampling.stop"), std::string::npos) << st.error_message();
  }

  // Out of range: refused, naming the field.
  moe::v1::GenerateRequest bad = req;
  bad.mutable_sampling()->set_top_p(1.5f);
  auto ctx = ctx_for<int>(10);
  auto reader = stub_->Generate(ctx.get(), bad);
  moe::v1::GenerateResponse r;
  EXPECT_FALSE(reader->Read(&r));
  const grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("top_p"), std::string::npos) << st.error_message();
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
  moe::v1::SubmitBatchRequest five = small_batch(5, 5, 4);
  moe::v1::SubmitBatchResponse sub;
  auto st = stub_->SubmitBatch(ctx_for<int>(10).get(), five, &sub);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("--max-queue"), std::string::npos) << st.error_message();

  // Four long sequences fill the queue... The worker job is frozen first, so that they are
  // still in flight whatever the speed of the machine: the tiny model makes 250 tokens in
  // well under a second.
  ASSERT_TRUE(workers_->pause());
  moe::v1::SubmitBatchRequest four = small_batch(4, 5, 250);
  four.set_ignore_eos(true);
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), four, &sub).ok());
  // ...so one more is refused while they run.
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
  moe::v1::BatchStatus bs = watch_to_end(g, 120);
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_DONE) << bs.error();
  auto ctx2 = ctx_for<int>(30);
  auto reader = stub_->Generate(ctx2.get(), more);
  moe::v1::GenerateResponse r;
  int n = 0;
  while (reader->Read(&r)) ++n;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_GE(n, 1);
}

// Rows the model processed (prompt and generated tokens), from the whole-run statistics:
// tiny_a routes every token to its top 2 experts.
int64_t rows_processed(const moe::v1::LoadStatsResponse& ls) {
  constexpr int kTopK = 2;
  int64_t routed = 0;
  if (ls.layers_size() > 0)
    for (auto v : ls.layers(0).tokens_per_expert()) routed += v;
  return routed / kTopK;
}

// A client that cancels frees its sequence, in the coordinator and on its rank. One rank with
// one KV slot, a queue bound of one. The job is frozen before the sequence reaches it, so the
// cancel reaches the rank together with its work or one step after it (the order the worker
// must handle). While still frozen, a second request is admitted: the coordinator let go. Once
// thawed, the second request runs, and the rows computed over the whole run show the first
// sequence took at most one step: a rank that kept it would have made its 255 tokens first.
TEST_F(ServingTest, CancelledClientFreesItsSequence) {
  start({1, {"--max-queue", "1"}, {"--max-seqs", "1"}});
  ASSERT_TRUE(workers_->pause());
  moe::v1::GenerateRequest long_req;
  long_req.add_prompt_ids(5);
  long_req.set_max_new_tokens(255);  // the whole context of 256
  long_req.set_ignore_eos(true);
  {
    auto ctx = ctx_for<int>(30);
    auto reader = stub_->Generate(ctx.get(), long_req);
    ASSERT_TRUE(stats_until([](const auto& ls) { return ls.in_flight() == 1; }))
        << "the long request was not admitted";
    ctx->TryCancel();
    moe::v1::GenerateResponse r;
    while (reader->Read(&r)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  ASSERT_TRUE(stats_until([](const auto& ls) { return ls.in_flight() == 0; }))
      << "the coordinator did not release the cancelled sequence";

  moe::v1::GenerateRequest next;
  next.add_prompt_ids(6);
  next.set_max_new_tokens(3);
  next.set_ignore_eos(true);
  auto ctx = ctx_for<int>(60);
  auto reader = stub_->Generate(ctx.get(), next);  // admitted while the ranks are frozen
  ASSERT_TRUE(stats_until([](const auto& ls) { return ls.in_flight() == 1; }))
      << "the next request was not admitted after the cancel";
  workers_->resume();
  moe::v1::GenerateResponse r;
  int n = 0;
  while (reader->Read(&r)) ++n;
  const auto st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(n, 3);
  // The cancelled sequence: at most its prompt's step; the next one: its prompt and 2 decodes.
  const auto ls = stats();
  EXPECT_LE(rows_processed(ls), 1 + 3)
      << "the rank kept running the cancelled sequence (255 tokens asked for)";
  EXPECT_GE(rows_processed(ls), 3);
  EXPECT_EQ(ls.in_flight(), 0);
  ASSERT_EQ(ls.outstanding_tokens_per_rank_size(), 1);
  EXPECT_EQ(ls.outstanding_tokens_per_rank(0), 0);
}

// Killing one worker rank mid-batch fails the batch and the streams in flight with
// UNAVAILABLE and a message, within the bound; no client hangs.
TEST_F(ServingTest, KilledRankFailsTheBatchWithinTheBound) {
  // One token per rank per step: the tiny model is fast, and the batch must still be running
  // when the rank dies (64 x 250 tokens take thousands of steps). Recovery off: the sequences
  // fail at once instead of waiting for a new job.
  start({2, {"--recovery-wait-s", "0"}, {"--max-tokens-per-step", "1"}});
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(250);
  g.set_ignore_eos(true);
  auto gctx = ctx_for<int>(60);
  auto stream = stub_->Generate(gctx.get(), g);
  moe::v1::GenerateResponse first;
  ASSERT_TRUE(stream->Read(&first));
  moe::v1::SubmitBatchRequest req = small_batch(64, 5, 250);
  req.set_ignore_eos(true);
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());

  // Kill one rank of the job (not mpirun itself).
  const pid_t victim = workers_->rank_pid(1);
  ASSERT_GT(victim, 0) << "no rank 1 among mpirun's descendants";
  const auto killed_at = Clock::now();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);

  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  moe::v1::BatchStatus bs = watch_to_end(gb, 60);
  const double secs = std::chrono::duration<double>(Clock::now() - killed_at).count();
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_FAILED);
  EXPECT_NE(bs.error().find("worker job"), std::string::npos) << bs.error();
  EXPECT_LT(secs, 10.0) << "the failure must be reported within the rank timeout and margin";
  // The progress tells what completed and what failed, not 64/64.
  EXPECT_GT(bs.failed(), 0);
  EXPECT_EQ(bs.completed() + bs.failed(), 64);

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

  // What was gathered stays readable, and says the job is gone.
  const auto ls = stats();
  EXPECT_FALSE(ls.worker_attached());
  EXPECT_NE(ls.worker_lost(), "");
  EXPECT_GT(rows_processed(ls), 0);
}

// A rank that stops answering (frozen, not dead: its sockets stay open) is caught by the
// watchdog: within --rank-timeout-s (3 s here) plus a margin the streams and the batch in
// flight fail with UNAVAILABLE, health goes NOT_SERVING, and the statistics gathered so far
// still answer. Rank 1 frozen: rank 0 waits in a collective, its link open and silent. Rank 0
// frozen: nothing reads the link either, and the batch is sent into it all the same.
void hung_rank_fails_in_time(ServingTest* t, int rank, int batch_items, int prompt_len) {
  EXPECT_EQ(t->health(), grpc::health::v1::HealthCheckResponse::SERVING);
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(250);
  g.set_ignore_eos(true);
  auto gctx = ctx_for<int>(60);
  auto stream = t->stub_->Generate(gctx.get(), g);
  moe::v1::GenerateResponse first;
  ASSERT_TRUE(stream->Read(&first));

  const pid_t victim = t->workers_->rank_pid(rank);
  ASSERT_GT(victim, 0) << "no rank " << rank << " among mpirun's descendants";
  ASSERT_TRUE(freeze({victim}));
  const auto frozen_at = Clock::now();
  moe::v1::SubmitBatchRequest req;
  req.set_ignore_eos(true);
  for (int i = 0; i < batch_items; ++i) {
    auto* it = req.add_items();
    it->set_id(i);
    for (int j = 0; j < prompt_len; ++j) it->add_prompt_ids(5 + (i + j) % 500);
    it->set_max_new_tokens(250 - prompt_len);
  }
  moe::v1::SubmitBatchResponse sub;
  auto st = t->stub_->SubmitBatch(ctx_for<int>(20).get(), req, &sub);
  ASSERT_TRUE(st.ok()) << st.error_message();

  // While the job is silent every other RPC answers at once: no lock is held across a send to
  // the stalled rank 0.
  std::atomic<bool> streaming{true};
  std::atomic<int> answered{0}, slow{0};
  std::thread prober([&] {
    moe::v1::GetBatchRequest gb;
    gb.set_batch_id(sub.batch_id());
    while (streaming) {
      const auto t0 = Clock::now();
      moe::v1::LoadStatsResponse ls;
      moe::v1::BatchStatus bs;
      const bool ok = t->stub_->GetLoadStats(ctx_for<int>(1).get(), {}, &ls).ok() &&
                      t->stub_->GetBatch(ctx_for<int>(1).get(), gb, &bs).ok();
      if (ok && Clock::now() - t0 < std::chrono::milliseconds(500)) ++answered; else ++slow;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  moe::v1::GenerateResponse r;
  while (stream->Read(&r)) {
  }
  streaming = false;
  prober.join();
  EXPECT_EQ(slow.load(), 0) << "RPCs blocked or failed while the job was silent";
  EXPECT_GT(answered.load(), 5);
  st = stream->Finish();
  const double secs = std::chrono::duration<double>(Clock::now() - frozen_at).count();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_NE(st.error_message().find("--rank-timeout-s"), std::string::npos) << st.error_message();
  EXPECT_LT(secs, 3 + 10.0) << "the failure must come within the rank timeout plus a margin";

  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  moe::v1::BatchStatus bs;
  ASSERT_TRUE(t->stub_->GetBatch(ctx_for<int>(10).get(), gb, &bs).ok());
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_FAILED);
  EXPECT_EQ(bs.error_code(), int(grpc::StatusCode::UNAVAILABLE));
  EXPECT_EQ(bs.completed() + bs.failed(), batch_items);

  EXPECT_EQ(t->health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  const auto ls = t->stats();
  EXPECT_FALSE(ls.worker_attached());
  EXPECT_NE(ls.worker_lost().find("no step report"), std::string::npos) << ls.worker_lost();
  EXPECT_GT(ls.generated_tokens(), 0);
  EXPECT_EQ(ls.in_flight(), 0);

  auto ctx = ctx_for<int>(10);
  auto again = t->stub_->Generate(ctx.get(), g);
  while (again->Read(&r)) {
  }
  EXPECT_EQ(again->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ServingTest, HungRankFailsRequestsWithinTheRankTimeout) {
  // Slow enough to be mid-run when it hangs; recovery off (nothing restarts the job here).
  start({2, {"--recovery-wait-s", "0"}, {"--max-tokens-per-step", "1"}});
  hung_rank_fails_in_time(this, 1, 16, 1);
}

TEST_F(ServingTest, HungRankZeroFailsRequestsWithinTheRankTimeout) {
  start({2, {"--recovery-wait-s", "0"}, {"--max-tokens-per-step", "1"}});
  hung_rank_fails_in_time(this, 0, 1000, 32);
}

// The recent window holds the steps of the last --stats-window-s only, also when no report
// has come since (an idle job sends none), and says what span it covers; the whole-run
// totals keep everything.
TEST_F(ServingTest, RecentWindowForgetsIdleTimeWholeRunDoesNot) {
  constexpr double kWindow = 2;
  start({2, {"--stats-window-s", "2"}, {}});
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(200);
  g.set_ignore_eos(true);
  auto ctx = ctx_for<int>(30);
  auto stream = stub_->Generate(ctx.get(), g);
  moe::v1::GenerateResponse r;
  ASSERT_TRUE(stream->Read(&r));
  // Its steps are happening now: the window has them.
  const auto busy = stats(true);
  EXPECT_GT(rows_processed(busy), 0);
  EXPECT_GT(busy.window_seconds(), 0);
  EXPECT_LE(busy.window_seconds(), kWindow);
  while (stream->Read(&r)) {
  }
  ASSERT_TRUE(stream->Finish().ok());

  std::this_thread::sleep_for(std::chrono::duration<double>(kWindow + 0.5));
  const auto idle = stats(true);
  EXPECT_EQ(rows_processed(idle), 0) << "steps older than the window are still counted";
  EXPECT_DOUBLE_EQ(idle.window_seconds(), kWindow);
  const auto whole = stats(false);
  EXPECT_GE(rows_processed(whole), 200);
  EXPECT_GT(whole.window_seconds(), kWindow);
}

// Fetches http://127.0.0.1:<port><path> (HTTP/1.0, so the server closes when done); "" on
// failure.
std::string http_get(int port, const std::string& path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, req.data(), req.size()) == ssize_t(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
    }
  }
  close(fd);
  return out;
}

// The value of the sample line `name` (labels included) in a Prometheus exposition, or -1.
double metric_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

// /metrics serves every family docs/SERVING.md lists, with values that agree with the RPCs;
// server reflection lists the services.
TEST_F(ServingTest, MetricsAndReflectionAreServed) {
  const int mport = free_port();
  start({2, {"--metrics-port", std::to_string(mport)}, {}});
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(8);
  g.set_ignore_eos(true);
  auto ctx = ctx_for<int>(30);
  auto stream = stub_->Generate(ctx.get(), g);
  moe::v1::GenerateResponse r;
  while (stream->Read(&r)) {
  }
  ASSERT_TRUE(stream->Finish().ok());

  const std::string page = http_get(mport, "/metrics");
  ASSERT_NE(page.find("200 OK"), std::string::npos) << page;
  const std::string text = page.substr(page.find("\r\n\r\n") + 4);
  for (const char* family :
       {"moe_worker_attached", "moe_requests_total", "moe_requests_refused_total",
        "moe_requests_failed_total", "moe_tokens_generated_total", "moe_queue_depth",
        "moe_batches_retained", "moe_steps_total", "moe_step_seconds_total",
        "moe_step_compute_seconds_total", "moe_step_exchange_seconds_total",
        "moe_step_schedule_seconds_total", "moe_step_control_seconds_total",
        "moe_expert_tokens_total", "moe_device_rows_total"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + family + " "), std::string::npos) << family;
    EXPECT_NE(text.find(std::string("# HELP ") + family + " "), std::string::npos) << family;
  }
  EXPECT_EQ(metric_value(text, "moe_worker_attached"), 1);
  EXPECT_EQ(metric_value(text, "moe_requests_total"), 1);
  EXPECT_EQ(metric_value(text, "moe_tokens_generated_total"), 8);
  EXPECT_EQ(metric_value(text, "moe_queue_depth"), 0);
  EXPECT_GT(metric_value(text, "moe_steps_total"), 0);
  const auto ls = stats();
  ASSERT_EQ(ls.layers_size(), 2);  // tiny_a
  for (int l = 0; l < 2; ++l) {
    for (int e = 0; e < 8; ++e)
      EXPECT_EQ(metric_value(text, "moe_expert_tokens_total{layer=\"" + std::to_string(l) +
                                       "\",expert=\"" + std::to_string(e) + "\"}"),
                ls.layers(l).tokens_per_expert(e))
          << "layer " << l << " expert " << e;
    for (int k = 0; k < 2; ++k)
      EXPECT_EQ(metric_value(text, "moe_device_rows_total{layer=\"" + std::to_string(l) +
                                       "\",rank=\"" + std::to_string(k) + "\"}"),
                ls.layers(l).rows_computed_per_rank(k))
          << "layer " << l << " rank " << k;
  }

  // Reflection, spoken by hand (the reflection protos are not compiled here): a
  // ServerReflectionRequest with list_services (field 7) set to "", and the service names out
  // of list_services_response (field 6) -> service (1) -> name (1).
  grpc::GenericStub generic(grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
  grpc::CompletionQueue cq;
  auto rctx = ctx_for<int>(10);
  auto call = generic.PrepareCall(
      rctx.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto next = [&](intptr_t want) {
    return cq.Next(&tag, &ok) && ok && reinterpret_cast<intptr_t>(tag) == want;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(1));
  const std::string wire("\x3a\x00", 2);
  grpc::Slice slice(wire);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(2));
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(3));
  ASSERT_TRUE(next(3));
  call->WritesDone(reinterpret_cast<void*>(4));
  ASSERT_TRUE(next(4));
  grpc::Status fin;
  call->Finish(&fin, reinterpret_cast<void*>(5));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_TRUE(fin.ok()) << fin.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  google::protobuf::UnknownFieldSet response;
  ASSERT_TRUE(response.ParseFromString(bytes));
  std::set<std::string> services;
  for (int i = 0; i < response.field_count(); ++i) {
    const auto& f = response.field(i);
    if (f.number() != 6 || f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED)
      continue;
    google::protobuf::UnknownFieldSet list;
    ASSERT_TRUE(list.ParseFromString(f.length_delimited()));
    for (int j = 0; j < list.field_count(); ++j) {
      google::protobuf::UnknownFieldSet service;
      ASSERT_TRUE(service.ParseFromString(list.field(j).length_delimited()));
      for (int k = 0; k < service.field_count(); ++k)
        if (service.field(k).number() == 1) services.insert(service.field(k).length_delimited());
    }
  }
  for (const char* want : {"moe.v1.Inference", "moe.v1.WorkerLink", "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"})
    EXPECT_EQ(services.count(want), 1u) << want << " not listed by reflection";
}

// A finished batch's sequences are freed at once; its results stay readable until
// --batch-retention-s passes, then GetBatch says the batch expired (NOT_FOUND), which an id
// never issued does not.
TEST_F(ServingTest, FinishedBatchesExpireAfterTheRetention) {
  start({2, {"--batch-retention-s", "1"}, {}});
  moe::v1::SubmitBatchRequest req = small_batch(3, 5, 2);
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());
  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  moe::v1::BatchStatus bs = watch_to_end(gb, 60);
  ASSERT_EQ(bs.state(), moe::v1::BATCH_STATE_DONE);
  EXPECT_EQ(stats().in_flight(), 0);

  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto st = stub_->GetBatch(ctx_for<int>(10).get(), gb, &bs);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(st.error_message().find("expired"), std::string::npos) << st.error_message();
  EXPECT_NE(st.error_message().find("--batch-retention-s"), std::string::npos)
      << st.error_message();
  gb.set_batch_id("batch-99");
  st = stub_->GetBatch(ctx_for<int>(10).get(), gb, &bs);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(st.error_message().find("expired"), std::string::npos) << st.error_message();
}

// Past --max-finished-batches, the oldest finished batch expires first; the newer ones stay.
TEST_F(ServingTest, RetainedBatchesAreCapped) {
  const int mport = free_port();
  start({2, {"--max-finished-batches", "2", "--metrics-port", std::to_string(mport)}, {}});
  moe::v1::SubmitBatchRequest req = small_batch(2, 5, 2);
  std::vector<std::string> ids;
  for (int b = 0; b < 3; ++b) {
    moe::v1::SubmitBatchResponse sub;
    ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());
    ids.push_back(sub.batch_id());
    moe::v1::GetBatchRequest gb;
    gb.set_batch_id(sub.batch_id());
    moe::v1::BatchStatus bs = watch_to_end(gb, 60);
    ASSERT_EQ(bs.state(), moe::v1::BATCH_STATE_DONE);
  }
  for (int b = 0; b < 3; ++b) {
    moe::v1::GetBatchRequest gb;
    gb.set_batch_id(ids[b]);
    moe::v1::BatchStatus bs;
    const auto st = stub_->GetBatch(ctx_for<int>(10).get(), gb, &bs);
    if (b == 0) {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << ids[b];
      EXPECT_NE(st.error_message().find("--max-finished-batches"), std::string::npos)
          << st.error_message();
    } else {
      ASSERT_TRUE(st.ok()) << ids[b] << ": " << st.error_message();
      EXPECT_EQ(bs.results_size(), 2);
    }
  }
  EXPECT_EQ(metric_value(http_get(mport, "/metrics"), "moe_batches_retained"), 2);
}

// WatchBatch streams hold a server thread each while they last: past --max-watchers a new one is
// refused at once with RESOURCE_EXHAUSTED naming the flag, and a slot freed serves the next.
TEST_F(ServingTest, WatchersAreBounded) {
  start({2, {"--max-watchers", "1"}, {}});
  moe::v1::SubmitBatchRequest req = small_batch(300, 3, 100);
  req.set_ignore_eos(true);
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());
  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  auto ctx1 = ctx_for<int>(120);
  auto first = stub_->WatchBatch(ctx1.get(), gb);
  moe::v1::BatchStatus bs;
  ASSERT_TRUE(first->Read(&bs));  // the one slot is held
  ASSERT_EQ(bs.state(), moe::v1::BATCH_STATE_RUNNING) << "the batch ended too soon for the test";
  {
    auto ctx2 = ctx_for<int>(10);
    auto second = stub_->WatchBatch(ctx2.get(), gb);
    EXPECT_FALSE(second->Read(&bs));
    const grpc::Status st = second->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_NE(st.error_message().find("--max-watchers 1"), std::string::npos)
        << st.error_message();
  }
  ctx1->TryCancel();
  first->Finish();
  // The handler sees the cancel within its 0.25 s wait; then the slot serves a new watch.
  grpc::Status st;
  for (int i = 0; i < 50; ++i) {
    auto ctx3 = ctx_for<int>(120);
    auto third = stub_->WatchBatch(ctx3.get(), gb);
    moe::v1::BatchStatus last;
    while (third->Read(&bs)) last = bs;
    st = third->Finish();
    if (st.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_EQ(last.state(), moe::v1::BATCH_STATE_DONE);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(st.ok()) << st.error_message();
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
  // More work in flight, so the drain lasts: 8 long sequences (few enough to finish within the
  // 10 s drain on a loaded 2-core machine, at one token per rank per step).
  moe::v1::SubmitBatchRequest bg = small_batch(8, 20, 120);
  bg.set_ignore_eos(true);
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
  // The finished batch stays readable during the drain until its client has its results
  // (--drain-grace-s); fetching them lets the coordinator go.
  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  const auto bs = watch_to_end(gb, 30);
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_DONE) << bs.error();
  moe::v1::BatchStatus done;
  ASSERT_TRUE(stub_->GetBatch(ctx_for<int>(10).get(), gb, &done).ok());
  ASSERT_EQ(done.results_size(), 8);
  for (const auto& res : done.results()) EXPECT_EQ(res.output_ids_size(), 120);
  const int st = coordinator_->stop(0, 20);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  const int ws = workers_->stop(0, 20);  // the worker job stops when told to
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << "status " << ws;
}

// kill -9 of a rank mid-batch with recovery on (the default): the coordinator keeps every
// unfinished sequence with the tokens it has; a new worker job (started here, as moe-launch
// does) goes on from them. The batch completes with moe-run's tokens, and a streamed Generate
// continues without a repeated or missing token.
void killed_rank_recovers(ServingTest* t, int ranks, int victim_rank) {
  const std::string jsonl = make_prompts_jsonl(64, 40);
  const auto want = moe_run_results(jsonl);
  ASSERT_EQ(want.size(), 64u);
  const Job job{ranks, {}, {}};
  t->start(job);

  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(150);
  g.set_ignore_eos(true);
  auto gctx = ctx_for<int>(120);
  auto stream = t->stub_->Generate(gctx.get(), g);
  std::vector<int32_t> streamed;
  moe::v1::GenerateResponse r;
  ASSERT_TRUE(stream->Read(&r));
  streamed.push_back(r.token_id());

  moe::v1::SubmitBatchRequest req;
  std::istringstream lines(jsonl);
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line);
    auto* it = req.add_items();
    it->set_id(j["id"].get<int64_t>());
    for (int x : j["prompt_ids"]) it->add_prompt_ids(x);
    it->set_max_new_tokens(j["max_new_tokens"].get<int>());
  }
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(t->stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());
  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  // Kill once the batch has made tokens, well before it is done.
  moe::v1::BatchStatus bs;
  const auto until = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < until) {
    ASSERT_TRUE(t->stub_->GetBatch(ctx_for<int>(5).get(), gb, &bs).ok());
    if (bs.generated_tokens() > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const pid_t victim = t->workers_->rank_pid(victim_rank);
  ASSERT_GT(victim, 0) << "no rank " << victim_rank << " among mpirun's descendants";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  const auto killed_at = Clock::now();
  ASSERT_TRUE(t->stats_until([](const moe::v1::LoadStatsResponse& s) {
    return !s.worker_attached();
  })) << "the coordinator did not notice the lost job";
  const auto lost = t->stats();
  EXPECT_GT(lost.waiting_for_worker(), 0) << "the sequences in flight must wait, not fail";
  ASSERT_TRUE(t->stub_->GetBatch(ctx_for<int>(5).get(), gb, &bs).ok());
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_RUNNING) << bs.error();
  EXPECT_LT(bs.completed(), 64) << "the kill came too late to test anything";
  EXPECT_EQ(bs.failed(), 0);

  t->start_workers(job);
  t->wait_ready();
  const double recovery_s = std::chrono::duration<double>(Clock::now() - killed_at).count();
  std::fprintf(stderr, "recovery at %d ranks (rank %d killed): %.2f s from kill -9 to the new "
               "job attached\n", ranks, victim_rank, recovery_s);

  const auto end = t->watch_to_end(gb, 120);
  ASSERT_EQ(end.state(), moe::v1::BATCH_STATE_DONE) << end.error();
  moe::v1::BatchStatus done;
  ASSERT_TRUE(t->stub_->GetBatch(ctx_for<int>(10).get(), gb, &done).ok());
  ASSERT_EQ(done.results_size(), 64);
  for (const auto& res : done.results()) {
    const json& w = want.at(res.id());
    EXPECT_EQ(std::vector<int32_t>(res.output_ids().begin(), res.output_ids().end()),
              w["output_ids"].get<std::vector<int32_t>>())
        << "id " << res.id();
    EXPECT_EQ(res.finish_reason(), w["finish_reason"].get<std::string>()) << "id " << res.id();
  }

  while (stream->Read(&r)) {
    EXPECT_EQ(r.index(), int(streamed.size())) << "a token repeated or missing in the stream";
    streamed.push_back(r.token_id());
  }
  const auto st = stream->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message();
  // The same request on the new job, uninterrupted, gives the same tokens.
  auto g2 = ctx_for<int>(60);
  auto again = t->stub_->Generate(g2.get(), g);
  std::vector<int32_t> clean;
  while (again->Read(&r)) clean.push_back(r.token_id());
  EXPECT_TRUE(again->Finish().ok());
  EXPECT_EQ(streamed.size(), 150u);
  EXPECT_EQ(streamed, clean);

  const auto ls = t->stats();
  EXPECT_TRUE(ls.worker_attached());
  EXPECT_EQ(ls.worker_restarts(), 1);
  EXPECT_GT(ls.resubmitted(), 0);
  EXPECT_EQ(ls.waiting_for_worker(), 0);
  EXPECT_EQ(ls.in_flight(), 0);
}

TEST_F(ServingTest, KilledRankRecoversWithTheSameTokensAt2Ranks) { killed_rank_recovers(this, 2, 1); }
TEST_F(ServingTest, KilledRankZeroRecoversWithTheSameTokensAt2Ranks) {
  killed_rank_recovers(this, 2, 0);
}
TEST_F(ServingTest, KilledRankRecoversWithTheSameTokensAt4Ranks) { killed_rank_recovers(this, 4, 3); }
TEST_F(ServingTest, KilledRankZeroRecoversWithTheSameTokensAt4Ranks) {
  killed_rank_recovers(this, 4, 0);
}
TEST_F(ServingTest, KilledRankOneRecoversWithTheSameTokensAt4Ranks) {
  killed_rank_recovers(this, 4, 1);
}
TEST_F(ServingTest, KilledRankTwoRecoversWithTheSameTokensAt4Ranks) {
  killed_rank_recovers(this, 4, 2);
}

// Past --recovery-wait-s without a new job the kept sequences fail with UNAVAILABLE, naming
// the loss and the option.
TEST_F(ServingTest, KeptSequencesFailWhenNoJobComesBack) {
  start({2, {"--recovery-wait-s", "1"}, {"--max-tokens-per-step", "1"}});
  moe::v1::SubmitBatchRequest req = small_batch(8, 5, 250);
  req.set_ignore_eos(true);
  moe::v1::SubmitBatchResponse sub;
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());
  ASSERT_EQ(::kill(workers_->rank_pid(1), SIGKILL), 0);
  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  const auto bs = watch_to_end(gb, 30);
  EXPECT_EQ(bs.state(), moe::v1::BATCH_STATE_FAILED);
  EXPECT_EQ(bs.error_code(), int(grpc::StatusCode::UNAVAILABLE));
  EXPECT_NE(bs.error().find("--recovery-wait-s"), std::string::npos) << bs.error();
  EXPECT_EQ(bs.failed(), 8);
  // The failed batch's results still name each item's failure.
  moe::v1::BatchStatus done;
  ASSERT_TRUE(stub_->GetBatch(ctx_for<int>(10).get(), gb, &done).ok());
  ASSERT_EQ(done.results_size(), 8);
  for (const auto& res : done.results()) EXPECT_NE(res.error(), "");
}

// Only a job holding the coordinator's secret may attach; a rogue client is refused before it
// sees any work, and a worker job with the wrong secret says why and exits non-zero.
TEST_F(ServingTest, WorkerLinkNeedsTheSecret) {
  start({1, {}, {}});
  auto link = moe::v1::WorkerLink::NewStub(
      grpc::CreateChannel(addr_, grpc::InsecureChannelCredentials()));
  for (const std::string& secret : {std::string(), std::string("not-the-secret-0123456789")}) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (!secret.empty()) ctx.AddMetadata("x-moe-worker-secret", secret);
    auto stream = link->Attach(&ctx);
    moe::v1::WorkerMessage hello;
    auto* h = hello.mutable_hello();
    h->set_world_size(1);
    h->set_vocab_size(512);
    h->set_max_context(64);
    h->set_experts(8);
    h->set_layers(2);
    stream->Write(hello);
    moe::v1::CoordinatorMessage m;
    EXPECT_FALSE(stream->Read(&m)) << "a rogue attach got a message";
    const auto st = stream->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << st.error_message();
  }
  // The real job still serves.
  moe::v1::GenerateRequest g;
  g.add_prompt_ids(9);
  g.set_max_new_tokens(3);
  auto gctx = ctx_for<int>(30);
  auto stream = stub_->Generate(gctx.get(), g);
  moe::v1::GenerateResponse r;
  int n = 0;
  while (stream->Read(&r)) ++n;
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(n, 3);

  // A job with the wrong secret, against a coordinator that has none attached.
  workers_->stop(SIGTERM, 20);
  ASSERT_TRUE(stats_until([](const moe::v1::LoadStatsResponse& s) { return !s.worker_attached(); }));
  setenv("MOE_WORKER_SECRET", "not-the-secret-0123456789", 1);
  start_workers({1, {}, {}});
  setenv("MOE_WORKER_SECRET", kWorkerSecret, 1);
  const int ws = workers_->stop(0, 60);
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) != 0) << "status " << ws;
  const std::string log = slurp(worker_log_ + ".again");
  EXPECT_NE(log.find("refused this worker job"), std::string::npos) << log;
  EXPECT_NE(log.find("secret"), std::string::npos) << log;
  EXPECT_EQ(health(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
}

// With API keys on, every call needs one, batch ids are 128 random bits, and a batch answers
// only to the key that submitted it.
TEST_F(ServingTest, BatchesAnswerOnlyToTheKeyThatMadeThem) {
  const std::string keys = "/tmp/moe_e2e_api_keys.txt";
  std::ofstream(keys) << "# two clients\nkey-alpha-0001\nkey-bravo-0002\n";
  g_api_key = "key-alpha-0001";
  start({1, {"--api-keys-file", keys}, {}});
  const auto req = small_batch(4, 5, 3);
  moe::v1::SubmitBatchResponse sub, sub2;
  for (const std::string& key : {std::string(), std::string("key-wrong-9999")}) {
    const auto st = stub_->SubmitBatch(ctx_for<int>(10, key).get(), req, &sub);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << "key '" << key << "'";
  }
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub).ok());
  ASSERT_TRUE(stub_->SubmitBatch(ctx_for<int>(10).get(), req, &sub2).ok());
  for (const auto& id : {sub.batch_id(), sub2.batch_id()}) {
    ASSERT_EQ(id.size(), 6u + 32u) << id;
    EXPECT_EQ(id.substr(0, 6), "batch-");
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 6), std::string::npos) << id;
  }
  EXPECT_NE(sub.batch_id(), sub2.batch_id());
  moe::v1::GetBatchRequest gb;
  gb.set_batch_id(sub.batch_id());
  EXPECT_EQ(watch_to_end(gb, 30).state(), moe::v1::BATCH_STATE_DONE);
  moe::v1::BatchStatus out;
  auto st = stub_->GetBatch(ctx_for<int>(10, "key-bravo-0002").get(), gb, &out);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  EXPECT_EQ(out.results_size(), 0);
  {
    auto ctx = ctx_for<int>(10, "key-bravo-0002");
    auto reader = stub_->WatchBatch(ctx.get(), gb);
    moe::v1::BatchStatus x;
    EXPECT_FALSE(reader->Read(&x));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  ASSERT_TRUE(stub_->GetBatch(ctx_for<int>(10).get(), gb, &out).ok());
  EXPECT_EQ(out.results_size(), 4);
}

}  // namespace
