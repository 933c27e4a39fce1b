// NodeObserver: keepalived's notify_fifo and the node's addresses, read by a thread of its own.
#include "k8slb/node_metrics.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "edge.hpp"
#include "k8slb/node.hpp"

namespace k8slb::apply {

struct NodeObserver::State {
  NodeMetrics& metrics;
  std::string fifo;
  std::string keepalived_conf;
  std::chrono::milliseconds interval;
  std::function<void(const std::string&)> warn;
  int fd = -1;
  int wake[2] = {-1, -1}; // a pipe: written to stop the thread
  std::thread thread;

  void refresh() {
    try {
      metrics.vips(detail::read_optional(keepalived_conf).value_or(""), node::read_addresses());
    } catch (const std::exception& error) {
      if (warn) warn(fmt::format("VIP metrics not updated: {}", error.what()));
    }
  }

  void run() {
    std::string buffer;
    refresh();
    for (;;) {
      pollfd fds[2] = {{wake[0], POLLIN, 0}, {fd, POLLIN, 0}};
      const int ready = ::poll(fds, fd >= 0 ? 2 : 1, static_cast<int>(interval.count()));
      if (ready < 0 && errno != EINTR) return;
      if (fds[0].revents) return;
      if (fd >= 0 && (fds[1].revents & POLLIN)) {
        char chunk[4096];
        const ssize_t n = ::read(fd, chunk, sizeof chunk);
        if (n > 0) buffer.append(chunk, static_cast<std::size_t>(n));
        for (auto end = buffer.find('\n'); end != std::string::npos; end = buffer.find('\n')) {
          if (auto notice = parse_notify_fifo_line(std::string_view(buffer).substr(0, end))) metrics.vrrp(*notice);
          buffer.erase(0, end + 1);
        }
        if (buffer.size() > 65536) buffer.clear(); // not keepalived's lines
      }
      refresh();
    }
  }
};

NodeObserver::NodeObserver(NodeMetrics& metrics, std::string fifo, std::string keepalived_conf,
                           std::chrono::milliseconds interval, std::function<void(const std::string&)> warn)
    : state_(new State{metrics, std::move(fifo), std::move(keepalived_conf), interval, std::move(warn), -1, {-1, -1}, {}}) {
  auto& state = *state_;
  if (::pipe2(state.wake, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
  // The FIFO is made here (0600: keepalived runs as root) and held open for reading and
  // writing: opening never waits for keepalived, and its restarts read as no end of file.
  struct stat info {};
  if (::lstat(state.fifo.c_str(), &info) == 0 && !S_ISFIFO(info.st_mode)) {
    if (state.warn) state.warn(fmt::format("{} is not a FIFO: no VRRP state metrics", state.fifo));
  } else {
    if (::mkfifo(state.fifo.c_str(), 0600) != 0 && errno != EEXIST && state.warn)
      state.warn(fmt::format("cannot make the FIFO {}: {}: no VRRP state metrics", state.fifo, std::strerror(errno)));
    state.fd = ::open(state.fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
    if (state.fd < 0 && state.warn)
      state.warn(fmt::format("cannot open the FIFO {}: {}: no VRRP state metrics", state.fifo, std::strerror(errno)));
  }
  state.thread = std::thread([&state] { state.run(); });
}

NodeObserver::~NodeObserver() {
  auto& state = *state_;
  const char byte = 0;
  [[maybe_unused]] auto written = ::write(state.wake[1], &byte, 1);
  if (state.thread.joinable()) state.thread.join();
  for (int fd : {state.fd, state.wake[0], state.wake[1]})
    if (fd >= 0) ::close(fd);
}

} // namespace k8slb::apply
