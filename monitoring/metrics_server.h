// A minimal HTTP/1.1 server for `GET /metrics`, one per rank. See metrics_server.cpp for why this
// is not prometheus-cpp's Exposer.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace hd::monitoring {

struct MetricsServerConfig {
  // Loopback by default: metrics reveal the run's configuration and there is no authentication.
  // Any other address must be asked for explicitly with allow_non_loopback.
  std::string bind_address = "127.0.0.1";
  bool allow_non_loopback = false;
  // Rank r listens on port_base + local_rank. 0 as port_base picks a free port (tests).
  static constexpr int kDefaultPortBase = 9470;
  int port_base = kDefaultPortBase;
  int local_rank = 0;
  int workers = 4;       // scrapes rendered and written at once
  int max_pending = 64;  // complete requests waiting for a worker; more get 503
  // Open connections that have not sent a whole request yet (held by the I/O thread, not by a
  // worker). At the limit the oldest is closed for each new one, so idle or slow clients can
  // never lock scrapers out.
  int max_connections = 512;
  // A client has this long to send its request, and each write of the reply this long.
  double io_timeout_seconds = 5.0;
};

class MetricsServer {
 public:
  // Produces the body of /metrics; called on a server thread for every scrape.
  using Source = std::function<std::string()>;

  // Binds and listens (throws hd::Error with the address on failure), then starts the threads.
  MetricsServer(MetricsServerConfig config, Source source);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  const std::string& address() const { return config_.bind_address; }
  int64_t requests_served() const { return served_.load(); }
  int64_t requests_failed() const { return failed_.load(); }

 private:
  struct Request {
    int fd;
    std::string text;  // the request line and headers
  };
  void io_loop();
  void worker_loop();
  void handle(const Request& request);
  void enqueue(int fd, std::string text);

  MetricsServerConfig config_;
  Source source_;
  int listen_fd_ = -1;
  int port_ = 0;
  // Read without the lock by the I/O thread's loop; set under mutex_, so a worker's Await
  // (re-evaluated when mutex_ is released) cannot miss it.
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> served_{0}, failed_{0};
  absl::Mutex mutex_;
  std::deque<Request> pending_ ABSL_GUARDED_BY(mutex_);
  std::thread acceptor_;
  std::vector<std::thread> workers_;
};

}  // namespace hd::monitoring
