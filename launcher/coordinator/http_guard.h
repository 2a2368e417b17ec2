// An HTTP port that slow clients cannot starve (issue 29): cpp-httplib gives each connection a
// pool thread from accept on, so clients that trickle their headers a byte at a time held every
// thread of the OpenAI port (128) and of the metrics port (32), and a normal request waited
// until it timed out. The guard takes over the server's task queue:
//  - a connection waits in a waiting room, watched by one poll thread, until its headers (and a
//    body of up to kWaitedBodyBytes) have all arrived; only then does it get a thread;
//  - a request must be read within the request timeout of its connection's accept (or of the
//    previous response on a kept-alive connection): headers in the waiting room, a larger body
//    on its thread (the connection is shut down at the deadline); a slow client is cut with 408;
//  - the waiting room holds at most max_waiting connections and the queue of read requests at
//    most `threads`: past either, a connection is answered 503 at once instead of queued.
// Route handlers are wrapped with HttpGuard::read: from there on the request is read, and its
// handler and response (a stream may run for minutes) are no longer under the deadline.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

namespace moe::coordinator {

struct HttpGuardOptions {
  std::string name;                // the port's label in logs and /metrics ("openai", "metrics")
  int threads = 32;                // requests handled at once (a streamed completion holds one)
  int max_waiting = 1024;          // connections whose request has not all arrived yet
  double request_timeout_s = 30;   // from accept (or the previous response) to the handler
};

// What the guard did, for /metrics; shared by the guard and the queue it installs.
struct HttpGuardCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused_waiting{0};  // 503: the waiting room was full
  std::atomic<uint64_t> refused_busy{0};     // 503: every thread busy and the queue full
  std::atomic<uint64_t> timed_out{0};        // 408 or shut down: not read within the timeout
  std::atomic<int64_t> waiting{0};           // in the waiting room now
  std::atomic<int64_t> queued{0};            // arrived, waiting for a thread now
};

class HttpGuard {
 public:
  // Bodies up to this size wait in the waiting room with their headers; larger ones are read on
  // the request's thread, under the same deadline.
  static constexpr size_t kWaitedBodyBytes = 16 << 10;

  // Installs the guard into `http` (its task queue and logger); call before listening.
  static std::shared_ptr<HttpGuard> install(httplib::Server& http, HttpGuardOptions options);

  // A route handler whose request counts as read when it starts.
  static httplib::Server::Handler read(httplib::Server::Handler handler);

  const HttpGuardOptions& options() const { return options_; }
  const HttpGuardCounters& counters() const { return *counters_; }
  // Prometheus lines for these ports (moe_http_*, labelled port="<name>"); null ones skipped.
  static std::string prometheus(std::initializer_list<const HttpGuard*> guards);

  HttpGuard(HttpGuardOptions options, std::shared_ptr<HttpGuardCounters> counters)
      : options_(std::move(options)), counters_(std::move(counters)) {}

 private:
  HttpGuardOptions options_;
  std::shared_ptr<HttpGuardCounters> counters_;
};

// The socket the calling thread accepted last (-1 if none since the last call). cpp-httplib's
// accept loop calls accept() and then, in the same thread, hands its task queue a closure that
// hides the socket; this program's accept() (http_guard.cpp) notes the socket for the queue.
int take_last_accepted();

}  // namespace moe::coordinator
