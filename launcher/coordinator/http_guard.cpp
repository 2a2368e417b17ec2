#include "launcher/coordinator/http_guard.h"

#include <dlfcn.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "common/log.h"

namespace moe::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

thread_local int tl_last_accepted = -1;

// cpp-httplib keeps an idle kept-alive connection this long; the next request's deadline counts
// from the previous response plus this.
constexpr int kKeepAliveS = 5;
// Headers longer than this are handed to cpp-httplib as they are, which refuses them itself.
constexpr size_t kPeekBytes = (16 << 10) + HttpGuard::kWaitedBodyBytes;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Writes a short answer and closes: what a refused or timed-out connection gets. What the client
// sent is read first, so that the close is a FIN and the answer is not lost to a reset.
void answer_and_close(int sock, int status, const std::string& why) {
  const char* reason = status == 408 ? "Request Timeout" : "Service Unavailable";
  const std::string body = why + "\n";
  const std::string msg = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                          "\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  char sink[4096];
  for (int i = 0; i < 16 && ::recv(sock, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  (void)::send(sock, msg.data(), msg.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(sock, SHUT_WR);
  ::close(sock);
}

// The value of Content-Length in a header block (case-insensitive name), SIZE_MAX for a chunked
// body or a value that is not a number (cpp-httplib reads and judges those itself), 0 if absent.
size_t content_length(std::string_view headers) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
  auto starts_with_ci = [&](std::string_view line, std::string_view name) {
    if (line.size() < name.size()) return false;
    for (size_t i = 0; i < name.size(); ++i)
      if (lower(line[i]) != name[i]) return false;
    return true;
  };
  size_t length = 0;
  for (size_t at = headers.find("\r\n"); at != std::string_view::npos && at + 2 < headers.size();) {
    const size_t end = headers.find("\r\n", at + 2);
    const std::string_view line = headers.substr(at + 2, end - at - 2);
    at = end;
    if (starts_with_ci(line, "transfer-encoding:")) return SIZE_MAX;
    if (!starts_with_ci(line, "content-length:")) continue;
    std::string_view v = line.substr(15);
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    if (v.empty() || v.size() > 18) return SIZE_MAX;
    length = 0;
    for (char c : v) {
      if (c < '0' || c > '9') return SIZE_MAX;
      length = length * 10 + size_t(c - '0');
    }
  }
  return length;
}

// The guard's task queue: the waiting room (one poll thread) in front of a fixed pool.
class GuardedQueue final : public httplib::TaskQueue {
 public:
  GuardedQueue(HttpGuardOptions options, std::shared_ptr<HttpGuardCounters> counters)
      : options_(std::move(options)), counters_(std::move(counters)), peek_(kPeekBytes) {
    wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    poller_ = std::thread([this] { poll_loop(); });
    for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ~GuardedQueue() override { shutdown(); }

  // On cpp-httplib's accept thread, right after accept().
  void enqueue(std::function<void()> fn) override {
    const int sock = take_last_accepted();
    counters_->accepted++;
    const auto deadline = Clock::now() + seconds(options_.request_timeout_s);
    if (sock < 0) {  // an accept this program did not see: served without the waiting room
      hand_off({sock, std::move(fn), deadline});
      return;
    }
    if (counters_->waiting.load() >= options_.max_waiting) {
      counters_->refused_waiting++;
      warn_at_most_every_10s("connections refused: " + std::to_string(options_.max_waiting) +
                             " already waiting for their requests to arrive");
      answer_and_close(sock, 503, "too many connections waiting (" +
                                      std::to_string(options_.max_waiting) + ")");
      return;  // `fn` holds nothing but the socket, closed here
    }
    counters_->waiting++;
    {
      std::lock_guard lock(mu_);
      incoming_.push_back({sock, std::move(fn), deadline});
    }
    wake();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    wake();
    ready_cv_.notify_all();
    if (poller_.joinable()) poller_.join();
    for (auto& w : workers_)
      if (w.joinable()) w.join();
    if (wake_fd_ >= 0) ::close(wake_fd_);
    wake_fd_ = -1;
  }

  // The calling worker's request has been read: its deadline no longer applies.
  void disarm() {
    if (tl_guard_fd < 0) return;
    std::lock_guard lock(mu_);
    reading_.erase(tl_guard_fd);
  }
  // A response went out: a next request on the kept-alive connection has its own deadline.
  void rearm() {
    if (tl_guard_fd < 0) return;
    std::lock_guard lock(mu_);
    reading_[tl_guard_fd] = Clock::now() + std::chrono::seconds(kKeepAliveS) +
                            seconds(options_.request_timeout_s);
  }

  static thread_local GuardedQueue* tl_queue;

 private:
  struct Conn {
    int sock;
    std::function<void()> fn;  // cpp-httplib's: reads, routes, answers, closes the socket
    Clock::time_point deadline;
    Clock::time_point queued{};  // when it joined the queue in front of the threads
  };
  enum class Arrival { kComplete, kIncomplete, kClosed };

  static thread_local int tl_guard_fd;

  void wake() {
    const uint64_t one = 1;
    if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof one);
  }

  void warn_at_most_every_10s(const std::string& what) {
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            Clock::now().time_since_epoch()).count();
    int64_t last = last_warning_s_.load();
    if (now - last < 10 || !last_warning_s_.compare_exchange_strong(last, now)) return;
    spdlog::warn("http {}: {} (refused so far: {} waiting, {} busy; timed out: {})",
                 options_.name, what, counters_->refused_waiting.load(),
                 counters_->refused_busy.load(), counters_->timed_out.load());
  }

  // Has the request on `sock` arrived: its headers, and its body if that is small enough to wait
  // for? Peeks only: cpp-httplib reads it all again. `*have` receives the bytes there so far.
  Arrival arrival(int sock, size_t* have) {
    const ssize_t n = ::recv(sock, peek_.data(), peek_.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return Arrival::kClosed;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? Arrival::kIncomplete
                                                                       : Arrival::kClosed;
    *have = size_t(n);
    const std::string_view seen(peek_.data(), size_t(n));
    const size_t end = seen.find("\r\n\r\n");
    if (end == std::string_view::npos)
      return size_t(n) == peek_.size() ? Arrival::kComplete : Arrival::kIncomplete;
    const size_t body = content_length(seen.substr(0, end + 2));
    if (body <= HttpGuard::kWaitedBodyBytes && size_t(n) - (end + 4) < body)
      return Arrival::kIncomplete;
    return Arrival::kComplete;
  }

  // A connection whose request has arrived (or whose large body is to be read) goes to a thread,
  // or is refused when the queue in front of the threads is full.
  void hand_off(Conn c) {
    {
      std::lock_guard lock(mu_);
      if (!stopped_ && ready_.size() < size_t(options_.threads)) {
        c.queued = Clock::now();
        ready_.push_back(std::move(c));
        counters_->queued++;
        ready_cv_.notify_one();
        return;
      }
    }
    counters_->refused_busy++;
    warn_at_most_every_10s("a request refused: every thread busy and " +
                           std::to_string(options_.threads) + " requests queued");
    if (c.sock >= 0) answer_and_close(c.sock, 503, "every server thread is busy; retry later");
  }

  void poll_loop() {
    std::vector<Conn> room;
    std::vector<pollfd> fds;
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (stopped_) break;
        for (auto& c : incoming_) room.push_back(std::move(c));
        incoming_.clear();
      }
      fds.assign(1, pollfd{wake_fd_, POLLIN, 0});
      for (const auto& c : room) fds.push_back(pollfd{c.sock, POLLIN | POLLRDHUP, 0});
      ::poll(fds.data(), fds.size(), 100);
      if (fds[0].revents) {
        uint64_t v;
        (void)!::read(wake_fd_, &v, sizeof v);
      }
      const auto now = Clock::now();
      std::vector<Conn> still;
      still.reserve(room.size());
      for (size_t i = 0; i < room.size(); ++i) {
        Conn& c = room[i];
        const short ev = fds[i + 1].revents;
        if (ev != 0) {
          size_t have = 0;
          const Arrival a = arrival(c.sock, &have);
          if (a == Arrival::kComplete) {
            const int one = 1;
            setsockopt(c.sock, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
            counters_->waiting--;
            hand_off(std::move(c));
            continue;
          }
          if (a == Arrival::kClosed || (ev & (POLLRDHUP | POLLHUP | POLLERR))) {
            ::close(c.sock);  // gone, or finished sending before its request was whole
            counters_->waiting--;
            continue;
          }
          // Not yet: wake when more than what is there has come (the poll is level-triggered).
          const int lowat = int(have) + 1;
          setsockopt(c.sock, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
        }
        if (now >= c.deadline) {
          counters_->timed_out++;
          counters_->waiting--;
          warn_at_most_every_10s("a connection cut: its request did not arrive within " +
                                 fmt::format("{:g}", options_.request_timeout_s) + " s");
          answer_and_close(c.sock, 408, "the request did not arrive within the timeout");
          continue;
        }
        still.push_back(std::move(c));
      }
      room.swap(still);
      // Requests whose body is read on their thread: shut down at the deadline. The guard's own
      // duplicate of the socket keeps its number from being reused while it is listed here.
      std::lock_guard lock(mu_);
      for (auto it = reading_.begin(); it != reading_.end();) {
        if (now < it->second) {
          ++it;
          continue;
        }
        counters_->timed_out++;
        ::shutdown(it->first, SHUT_RDWR);
        it = reading_.erase(it);
      }
    }
    for (auto& c : room) ::close(c.sock);
    counters_->waiting -= int64_t(room.size());
    std::lock_guard lock(mu_);
    for (auto& c : incoming_) ::close(c.sock);
    counters_->waiting -= int64_t(incoming_.size());
    incoming_.clear();
  }

  void worker_loop() {
    tl_queue = this;
    for (;;) {
      Conn c;
      {
        std::unique_lock lock(mu_);
        ready_cv_.wait(lock, [&] { return stopped_ || !ready_.empty(); });
        if (ready_.empty()) return;  // stopped, and everything queued was served
        c = std::move(ready_.front());
        ready_.pop_front();
        counters_->queued--;
      }
      const int guard = c.sock >= 0 ? ::dup(c.sock) : -1;
      if (guard >= 0) {  // the time it waited for a thread is the server's, not the client's
        std::lock_guard lock(mu_);
        reading_[guard] = c.deadline + (Clock::now() - c.queued);
      }
      tl_guard_fd = guard;
      c.fn();
      tl_guard_fd = -1;
      if (guard >= 0) {
        std::lock_guard lock(mu_);
        reading_.erase(guard);
        ::close(guard);
      }
    }
  }

  const HttpGuardOptions options_;
  const std::shared_ptr<HttpGuardCounters> counters_;
  std::vector<char> peek_;  // the poll thread's
  int wake_fd_ = -1;
  std::atomic<int64_t> last_warning_s_{0};

  std::mutex mu_;
  std::condition_variable ready_cv_;
  bool stopped_ = false;
  std::vector<Conn> incoming_;             // accepted, not yet in the poll thread's room
  std::deque<Conn> ready_;                 // arrived, waiting for a thread
  std::map<int, Clock::time_point> reading_;  // guard fd -> deadline, on a thread, not yet read

  std::thread poller_;
  std::vector<std::thread> workers_;
};

thread_local GuardedQueue* GuardedQueue::tl_queue = nullptr;
thread_local int GuardedQueue::tl_guard_fd = -1;

}  // namespace

int take_last_accepted() {
  const int sock = tl_last_accepted;
  tl_last_accepted = -1;
  return sock;
}

std::shared_ptr<HttpGuard> HttpGuard::install(httplib::Server& http, HttpGuardOptions options) {
  if (options.threads < 1 || options.max_waiting < 1 || !(options.request_timeout_s > 0))
    throw std::invalid_argument("HttpGuard: threads and max_waiting must be >= 1 and the "
                                "request timeout > 0");
  auto counters = std::make_shared<HttpGuardCounters>();
  auto guard = std::make_shared<HttpGuard>(options, counters);
  http.set_keep_alive_timeout(kKeepAliveS);
  http.new_task_queue = [options, counters] { return new GuardedQueue(options, counters); };
  http.set_logger([](const httplib::Request&, const httplib::Response&) {
    if (GuardedQueue::tl_queue) GuardedQueue::tl_queue->rearm();
  });
  return guard;
}

httplib::Server::Handler HttpGuard::read(httplib::Server::Handler handler) {
  return [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
    if (GuardedQueue::tl_queue) GuardedQueue::tl_queue->disarm();
    handler(req, res);
  };
}

std::string HttpGuard::prometheus(std::initializer_list<const HttpGuard*> guards) {
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, auto value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    for (const HttpGuard* g : guards)
      if (g) value(*g);
  };
  metric("moe_http_connections_total", "counter", "HTTP connections accepted, per port",
         [&](const HttpGuard& g) {
           out += fmt::format("moe_http_connections_total{{port=\"{}\"}} {}\n", g.options_.name,
                              g.counters_->accepted.load());
         });
  metric("moe_http_refused_total", "counter",
         "HTTP connections answered 503 at once: waiting room full, or every thread busy",
         [&](const HttpGuard& g) {
           out += fmt::format("moe_http_refused_total{{port=\"{}\",reason=\"waiting\"}} {}\n",
                              g.options_.name, g.counters_->refused_waiting.load());
           out += fmt::format("moe_http_refused_total{{port=\"{}\",reason=\"busy\"}} {}\n",
                              g.options_.name, g.counters_->refused_busy.load());
         });
  metric("moe_http_timed_out_total", "counter",
         "HTTP requests cut for not arriving within --http-request-timeout-s",
         [&](const HttpGuard& g) {
           out += fmt::format("moe_http_timed_out_total{{port=\"{}\"}} {}\n", g.options_.name,
                              g.counters_->timed_out.load());
         });
  metric("moe_http_queued_requests", "gauge",
         "HTTP requests that have arrived and wait for a server thread", [&](const HttpGuard& g) {
           out += fmt::format("moe_http_queued_requests{{port=\"{}\"}} {}\n", g.options_.name,
                              g.counters_->queued.load());
         });
  metric("moe_http_waiting_connections", "gauge",
         "HTTP connections whose request has not all arrived", [&](const HttpGuard& g) {
           out += fmt::format("moe_http_waiting_connections{{port=\"{}\"}} {}\n", g.options_.name,
                              g.counters_->waiting.load());
         });
  return out;
}

}  // namespace moe::coordinator

// cpp-httplib's accept loop, seen from below: the socket it accepted, noted for its task queue
// (GuardedQueue::enqueue runs next, on the same thread). This definition takes the place of the
// C library's for the whole program and calls through to it (or to a sanitizer's wrapper).
extern "C" int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  using Accept = int (*)(int, struct sockaddr*, socklen_t*);
  static const Accept next = reinterpret_cast<Accept>(dlsym(RTLD_NEXT, "accept"));
  const int sock = next(fd, addr, len);
  moe::coordinator::tl_last_accepted = sock;
  return sock;
}
