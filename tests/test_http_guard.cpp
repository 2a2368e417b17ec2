// The HTTP guard (launcher/coordinator/http_guard.h) on a loopback server of its own: slow
// clients hold no thread, a request that does not arrive in time is cut, the waiting room and
// the queue are bounded with the excess refused at once, and a handler may run past the
// deadline. Before the guard, the first case's normal requests timed out: the trickling
// connections held every pool thread (issue 29).
#include "launcher/coordinator/http_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace moe::coordinator {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class GuardedServer {
 public:
  explicit GuardedServer(HttpGuardOptions options) {
    guard_ = HttpGuard::install(http_, std::move(options));
    http_.Get("/hi", HttpGuard::read([](const httplib::Request&, httplib::Response& res) {
      res.set_content("hi", "text/plain");
    }));
    http_.Get("/slow", HttpGuard::read([this](const httplib::Request&, httplib::Response& res) {
      slow_started++;
      std::this_thread::sleep_for(1500ms);
      res.set_content("done", "text/plain");
    }));
    http_.Post("/size", HttpGuard::read([](const httplib::Request& req, httplib::Response& res) {
      res.set_content(std::to_string(req.body.size()), "text/plain");
    }));
    http_.set_payload_max_length(size_t(1) << 20);
    port_ = http_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { http_.listen_after_bind(); });
    for (int i = 0; i < 200 && !http_.is_running(); ++i) std::this_thread::sleep_for(5ms);
  }
  ~GuardedServer() {
    http_.stop();
    thread_.join();
  }
  int port() const { return port_; }
  const HttpGuardCounters& counters() const { return guard_->counters(); }
  const HttpGuard* guard() const { return guard_.get(); }
  std::atomic<int> slow_started{0};

  // A normal client's GET; empty if it got no answer within 3 s.
  std::string get(const std::string& path) const {
    httplib::Client cli("127.0.0.1", port_);
    cli.set_connection_timeout(3, 0);
    cli.set_read_timeout(3, 0);
    auto r = cli.Get(path.c_str());
    return r ? std::to_string(r->status) + " " + r->body : "";
  }

 private:
  httplib::Server http_;
  std::shared_ptr<HttpGuard> guard_;
  std::thread thread_;
  int port_ = 0;
};

int connect_to(int port) {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  return s;
}

void send_text(int s, const std::string& text) {
  EXPECT_EQ(::send(s, text.data(), text.size(), MSG_NOSIGNAL), ssize_t(text.size()));
}

// Everything the server sends until it closes, or until `limit` passes.
std::string read_until_closed(int s, std::chrono::seconds limit) {
  timeval tv{long(limit.count()), 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::recv(s, buf, sizeof buf, 0)) > 0;) got.append(buf, size_t(n));
  return got;
}

template <typename F>
bool eventually(F f, std::chrono::milliseconds limit = 3000ms) {
  const auto until = Clock::now() + limit;
  while (!f()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

TEST(HttpGuard, TricklingClientsHoldNoThread) {
  GuardedServer server({"test", 2, 256, 20});
  constexpr int kSlow = 64;
  std::vector<int> slow;
  for (int i = 0; i < kSlow; ++i) {
    slow.push_back(connect_to(server.port()));
    send_text(slow.back(), "GET /hi HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {  // a byte per connection every 100 ms: never a whole request
    while (!done) {
      for (int s : slow) (void)::send(s, "a", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(100ms);
    }
  });
  EXPECT_TRUE(eventually([&] { return server.counters().waiting.load() == kSlow; }))
      << server.counters().waiting.load() << " waiting";
  for (int i = 0; i < 5; ++i) EXPECT_EQ(server.get("/hi"), "200 hi") << "request " << i;
  EXPECT_EQ(server.counters().waiting.load(), kSlow);
  done = true;
  trickle.join();
  for (int s : slow) ::close(s);
  EXPECT_TRUE(eventually([&] { return server.counters().waiting.load() == 0; }));
  EXPECT_EQ(server.counters().timed_out.load(), 0u);
}

TEST(HttpGuard, ARequestThatDoesNotArriveInTimeIsCut) {
  GuardedServer server({"test", 2, 256, 1});
  const int s = connect_to(server.port());
  send_text(s, "GET /hi HTTP/1.1\r\nHost: x\r\n");  // the headers never end
  const auto t0 = Clock::now();
  const std::string got = read_until_closed(s, 10s);
  ::close(s);
  EXPECT_EQ(got.rfind("HTTP/1.1 408 ", 0), 0u) << got;
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_EQ(server.counters().timed_out.load(), 1u);
  // A small body that stops short waits in the room as well, and is cut the same way.
  const int b = connect_to(server.port());
  send_text(b, "POST /size HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
  EXPECT_EQ(read_until_closed(b, 10s).rfind("HTTP/1.1 408 ", 0), 0u);
  ::close(b);
  EXPECT_EQ(server.counters().timed_out.load(), 2u);
  EXPECT_EQ(server.get("/hi"), "200 hi");
}

TEST(HttpGuard, TheWaitingRoomIsBoundedAndTheExcessRefusedAtOnce) {
  GuardedServer server({"test", 2, 4, 20});
  std::vector<int> silent;
  for (int i = 0; i < 4; ++i) silent.push_back(connect_to(server.port()));
  ASSERT_TRUE(eventually([&] { return server.counters().waiting.load() == 4; }));
  const int extra = connect_to(server.port());
  const std::string got = read_until_closed(extra, 10s);
  ::close(extra);
  EXPECT_EQ(got.rfind("HTTP/1.1 503 ", 0), 0u) << got;
  EXPECT_NE(got.find("too many connections waiting (4)"), std::string::npos) << got;
  EXPECT_EQ(server.counters().refused_waiting.load(), 1u);
  for (int s : silent) ::close(s);
  EXPECT_TRUE(eventually([&] { return server.counters().waiting.load() == 0; }));
  EXPECT_EQ(server.get("/hi"), "200 hi");
}

TEST(HttpGuard, ALargeBodyIsReadOnItsThreadUnderTheSameDeadline) {
  GuardedServer server({"test", 2, 256, 1});
  // Over kWaitedBodyBytes: handed to a thread after its headers; it stalls there and is shut
  // down at the deadline, while other requests are served.
  const int s = connect_to(server.port());
  send_text(s, "POST /size HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                   std::string(100, 'x'));
  EXPECT_EQ(server.get("/hi"), "200 hi");
  const auto t0 = Clock::now();
  const std::string got = read_until_closed(s, 10s);
  ::close(s);
  EXPECT_LT(Clock::now() - t0, 5s) << got;
  EXPECT_EQ(got.find("200"), std::string::npos) << got;
  EXPECT_EQ(server.counters().timed_out.load(), 1u);
  // The same body sent at once is served.
  httplib::Client cli("127.0.0.1", server.port());
  for (size_t n : {size_t(10000), size_t(100000)}) {
    auto r = cli.Post("/size", std::string(n, 'y'), "text/plain");
    ASSERT_TRUE(r) << n;
    EXPECT_EQ(r->body, std::to_string(n));
  }
}

TEST(HttpGuard, AHandlerMayRunPastTheDeadline) {
  GuardedServer server({"test", 2, 256, 1});
  EXPECT_EQ(server.get("/slow"), "200 done");  // 1.5 s in its handler, 1 s to arrive
  EXPECT_EQ(server.counters().timed_out.load(), 0u);
  // Kept alive: the next request on the connection is served too.
  httplib::Client cli("127.0.0.1", server.port());
  cli.set_keep_alive(true);
  for (int i = 0; i < 3; ++i) {
    auto r = cli.Get("/hi");
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->body, "hi");
  }
}

TEST(HttpGuard, RequestsBeyondTheThreadsAndTheQueueAreRefused) {
  GuardedServer server({"test", 1, 256, 20});
  // One thread in a 1.5 s handler, one request queued behind it: the third is refused.
  std::thread first([&] { EXPECT_EQ(server.get("/slow"), "200 done"); });
  ASSERT_TRUE(eventually([&] { return server.slow_started.load() == 1; }));
  std::thread second([&] { EXPECT_EQ(server.get("/hi"), "200 hi"); });
  EXPECT_TRUE(eventually([&] { return server.counters().queued.load() == 1; }));
  const std::string third = server.get("/hi");
  first.join();
  second.join();
  EXPECT_EQ(third.rfind("503 ", 0), 0u) << third;
  EXPECT_EQ(server.counters().refused_busy.load(), 1u);
  EXPECT_EQ(server.get("/hi"), "200 hi");
}

TEST(HttpGuard, MetricsNameEachPort) {
  GuardedServer server({"openai", 2, 8, 5});
  EXPECT_EQ(server.get("/hi"), "200 hi");
  httplib::Server other;  // installed, never listening
  const auto metrics = HttpGuard::install(other, {"metrics", 1, 8, 5});
  const std::string text = HttpGuard::prometheus({metrics.get(), server.guard(), nullptr});
  for (const char* line : {"moe_http_connections_total{port=\"openai\"} 1\n",
                           "moe_http_connections_total{port=\"metrics\"} 0\n",
                           "moe_http_refused_total{port=\"openai\",reason=\"busy\"} 0\n",
                           "moe_http_timed_out_total{port=\"openai\"} 0\n",
                           "moe_http_waiting_connections{port=\"openai\"} 0\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << " in\n" << text;
  // One TYPE line per metric, whatever the number of ports.
  EXPECT_EQ(text.find("# TYPE moe_http_connections_total counter"),
            text.rfind("# TYPE moe_http_connections_total counter"));
}

}  // namespace
}  // namespace moe::coordinator
