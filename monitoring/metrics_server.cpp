// Why our own HTTP server, not prometheus-cpp's Exposer (build notes §1.4, P1):
// The Exposer runs on civetweb, and Debian's civetweb starts its threads with a fixed 100 KiB
// stack. glibc carves the static TLS of every loaded library out of each thread's stack, and
// libcublasLt alone has 92 KiB of it, so in any process that links cuBLAS pthread_create fails
// with EINVAL and the Exposer constructor throws "null context when constructing CivetServer".
// The trainer links cuBLAS, so the Exposer cannot be used. Loading cuBLAS lazily with dlopen also
// works but would force every CUDA call site through dlsym; a separate exporter process would need
// IPC. Instead we keep prometheus-cpp for the metric types and the text format (core only) and
// serve the text ourselves: std::thread uses the default 8 MiB stack, so TLS fits, and the server
// is small enough to reason about (tests/monitoring/metrics_server_test.cpp,
// cublas_exporter_test.cpp).
//
// Design: one I/O thread accepts connections and reads requests for all of them at once
// (non-blocking sockets under one poll), so a connection that sends nothing, or half a request,
// costs a slot in that poll set and nothing else: it is closed when its io_timeout_seconds run
// out, or earlier when max_connections is reached (oldest first). Only a complete request goes
// to the few workers, through a bounded queue; a worker calls the source (which serializes the
// registry: the only place metrics are read) and writes the response with MSG_NOSIGNAL, so a
// scraper that disconnects mid-response gives EPIPE, not SIGPIPE, under a write timeout, so a
// client that stops reading ties up one worker for at most io_timeout_seconds. (Before, workers
// read requests themselves: 200 idle connections held every worker and filled the queue, and
// every scrape failed; tests/monitoring/metrics_server_test.cpp reproduces that abuse.)
// The training step never touches any of this: it only updates atomics in the registry.
#include "monitoring/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <fcntl.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "autograd/error.h"

namespace hd::monitoring {

namespace {

void set_timeouts(int fd, double seconds) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(seconds);
  tv.tv_usec = static_cast<suseconds_t>((seconds - double(tv.tv_sec)) * 1e6);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

// Writes all of `data`; false when the peer went away or timed out.
bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

std::string response(int code, const char* reason, const char* type, const std::string& body) {
  std::string head =
      "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type +
      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  return head + body;
}

}  // namespace

MetricsServer::MetricsServer(MetricsServerConfig config, Source source)
    : config_(std::move(config)), source_(std::move(source)) {
  HD_CHECK(source_, "MetricsServer: no metrics source");
  HD_CHECK(config_.workers >= 1 && config_.max_pending >= 1, "MetricsServer: workers ",
           config_.workers, " and max_pending ", config_.max_pending, " must be >= 1");
  in_addr addr{};
  HD_CHECK(inet_pton(AF_INET, config_.bind_address.c_str(), &addr) == 1,
           "MetricsServer: bind_address '", config_.bind_address, "' is not an IPv4 address");
  const bool loopback = (ntohl(addr.s_addr) >> 24) == 127;
  HD_CHECK(loopback || config_.allow_non_loopback, "MetricsServer: refusing to bind ",
           config_.bind_address, " (not loopback) without allow_non_loopback");
  const int port = config_.port_base == 0 ? 0 : config_.port_base + config_.local_rank;
  HD_CHECK(port >= 0 && port <= 65535, "MetricsServer: port ", port, " out of range (port_base ",
           config_.port_base, " + local_rank ", config_.local_rank, ")");

  // Non-blocking: the I/O thread accepts until EAGAIN after each poll.
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  HD_CHECK(listen_fd_ >= 0, "MetricsServer: socket(): ", std::strerror(errno));
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr = addr;
  sa.sin_port = htons(uint16_t(port));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    int err = errno;
    ::close(listen_fd_);
    throw Error(detail::concat("MetricsServer: cannot listen on ", config_.bind_address, ":", port,
                               " (port_base ", config_.port_base, " + local_rank ",
                               config_.local_rank, "): ", std::strerror(err)));
  }
  socklen_t len = sizeof(sa);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len);
  port_ = ntohs(sa.sin_port);

  HD_CHECK(config_.max_connections >= 1, "MetricsServer: max_connections must be >= 1");
  for (int i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  acceptor_ = std::thread([this] { io_loop(); });
}

MetricsServer::~MetricsServer() {
  {
    // Under the lock: a store and notify without it could land between a worker's check of the
    // queue and its going to sleep; that worker would never wake and the join would hang.
    absl::MutexLock lock(&mutex_);
    stop_.store(true);
  }
  if (acceptor_.joinable()) acceptor_.join();
  for (auto& w : workers_) w.join();
  absl::MutexLock lock(&mutex_);
  for (const Request& r : pending_) ::close(r.fd);
  ::close(listen_fd_);
}

void MetricsServer::enqueue(int fd, std::string text) {
  // The worker writes with blocking sends under a timeout.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  set_timeouts(fd, config_.io_timeout_seconds);
  {
    absl::MutexLock lock(&mutex_);
    if (int(pending_.size()) < config_.max_pending) {
      pending_.push_back({fd, std::move(text)});  // a waiting worker wakes on the unlock
      return;
    }
  }
  // Overloaded: answer at once rather than let the queue (and memory) grow without bound.
  send_all(fd, response(503, "Service Unavailable", "text/plain", "busy\n"));
  ::close(fd);
  failed_.fetch_add(1);
}

void MetricsServer::io_loop() {
  using Clock = std::chrono::steady_clock;
  struct Reading {
    int fd;
    std::string text;
    Clock::time_point deadline;
  };
  std::vector<Reading> open;  // oldest first
  const auto timeout = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(config_.io_timeout_seconds));
  auto drop = [&](size_t i) {
    ::close(open[i].fd);
    failed_.fetch_add(1);  // closed, timed out or evicted before sending a request
    open.erase(open.begin() + std::ptrdiff_t(i));
  };
  while (!stop_.load()) {
    std::vector<pollfd> polls;
    polls.push_back({listen_fd_, POLLIN, 0});
    for (const Reading& r : open) polls.push_back({r.fd, POLLIN, 0});
    int wait_ms = 100;  // the bound on how long the destructor waits
    const auto now = Clock::now();
    for (const Reading& r : open)
      wait_ms = std::min<int>(
          wait_ms,
          int(std::max<int64_t>(
              0, std::chrono::duration_cast<std::chrono::milliseconds>(r.deadline - now).count() +
                     1)));
    if (::poll(polls.data(), polls.size(), wait_ms) < 0 && errno != EINTR) continue;

    // Requests first (indices of `open` match polls[1..] until something is removed).
    std::vector<size_t> done, closed;
    for (size_t i = 0; i < open.size(); ++i) {
      if (!(polls[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[2048];
      ssize_t n = ::recv(open[i].fd, buf, sizeof(buf), 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (n <= 0) {
        closed.push_back(i);
        continue;
      }
      open[i].text.append(buf, size_t(n));
      // A whole request (scrapers send a few hundred bytes), or 8 KiB of something else.
      if (open[i].text.find("\r\n\r\n") != std::string::npos || open[i].text.size() >= 8192)
        done.push_back(i);
    }
    for (size_t k = open.size(); k-- > 0;) {
      if (std::find(done.begin(), done.end(), k) != done.end()) {
        enqueue(open[k].fd, std::move(open[k].text));
        open.erase(open.begin() + std::ptrdiff_t(k));
      } else if (std::find(closed.begin(), closed.end(), k) != closed.end()) {
        drop(k);
      }
    }
    const auto after = Clock::now();
    for (size_t k = open.size(); k-- > 0;)
      if (open[k].deadline <= after) drop(k);

    if (polls[0].revents & POLLIN) {
      while (true) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) break;  // EAGAIN: nothing more; ECONNABORTED: the client gave up
        if (int(open.size()) >= config_.max_connections) drop(0);  // the oldest waiter
        open.push_back({fd, std::string(), Clock::now() + timeout});
      }
    }
  }
  for (const Reading& r : open) ::close(r.fd);
}

void MetricsServer::worker_loop() {
  while (true) {
    Request r;
    {
      absl::MutexLock lock(&mutex_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stop_.load() || !pending_.empty();
      };
      mutex_.Await(absl::Condition(&ready));
      if (stop_.load()) return;
      r = std::move(pending_.front());
      pending_.pop_front();
    }
    handle(r);
    ::close(r.fd);
  }
}

void MetricsServer::handle(const Request& req) {
  const int fd = req.fd;
  const std::string& request = req.text;
  const size_t line_end = request.find("\r\n");
  if (line_end == std::string::npos) {
    failed_.fetch_add(1);  // closed or timed out before sending a request line
    return;
  }
  const std::string line = request.substr(0, line_end);
  const size_t sp1 = line.find(' '), sp2 = line.find(' ', sp1 + 1);
  const std::string method = line.substr(0, sp1);
  std::string path = sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));

  std::string reply;
  if (method != "GET" && method != "HEAD") {
    reply = response(405, "Method Not Allowed", "text/plain", "GET only\n");
  } else if (path == "/metrics") {
    std::string body;
    try {
      body = source_();
    } catch (const std::exception& e) {
      reply = response(500, "Internal Server Error", "text/plain", std::string(e.what()) + "\n");
    }
    if (reply.empty()) {
      reply = response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
      if (method == "HEAD") reply.resize(reply.find("\r\n\r\n") + 4);
    }
  } else if (path == "/" || path == "/healthz") {
    reply = response(200, "OK", "text/plain", "hdtrain metrics: see /metrics\n");
  } else {
    reply = response(404, "Not Found", "text/plain", "not found\n");
  }
  if (send_all(fd, reply)) {
    served_.fetch_add(1);
  } else {
    failed_.fetch_add(1);
  }
}

}  // namespace hd::monitoring
