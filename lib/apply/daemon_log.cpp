// The daemons' own output in k8slb's log: each line parsed (parse_daemon_line, pure) and
// printed as the daemon's (tool::print_as), read from a pipe by a thread that never blocks
// the daemon (DaemonLog: lines are dropped, and counted, while the log's reader is behind).
#include "edge.hpp"
#include "k8slb/apply.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <regex>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <fmt/format.h>

namespace k8slb::apply {

namespace {

using tool::Level;

Level nginx_level(const std::string& name) {
  if (name == "warn") return Level::warn;
  if (name == "notice" || name == "info") return Level::info;
  if (name == "debug") return Level::debug;
  return Level::error; // emerg, alert, crit, error
}

Level haproxy_level(const std::string& name) {
  if (name == "WARNING") return Level::warn;
  if (name == "ALERT" || name == "EMERG" || name == "CRIT" || name == "ERR") return Level::error;
  if (name == "DEBUG") return Level::debug;
  return Level::info; // NOTICE, INFO
}

} // namespace

DaemonLine parse_daemon_line(Daemon daemon, std::string_view text) {
  std::string line(text);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  std::smatch match;
  switch (daemon) {
  case Daemon::haproxy: {
    // "[NOTICE]   (8114) : haproxy version is 2.6.12"
    static const std::regex level_line(R"(^\[([A-Z]+)\]\s*(\(\d+\))?\s*:?\s*(.*)$)");
    if (std::regex_match(line, match, level_line))
      return {haproxy_level(match[1]), match[2].length() ? match[2].str() + " " + match[3].str() : match[3].str()};
    break;
  }
  case Daemon::nginx: {
    // "2026/11/28 12:43:04 [emerg] 8122#8122: message", "nginx: [warn] message"
    static const std::regex level_line(
        R"(^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )\[([a-z]+)\] (?:(\d+)#\d+: )?(.*)$)");
    if (std::regex_match(line, match, level_line))
      return {nginx_level(match[1]), match[2].length() ? "(" + match[2].str() + ") " + match[3].str() : match[3].str()};
    break;
  }
  case Daemon::keepalived: {
    // "Sat Nov 28 12:57:48 2026: (pool_default) Entering MASTER STATE"
    static const std::regex dated(R"(^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}: (.*)$)");
    if (std::regex_match(line, match, dated)) line = match[1].str();
    static const std::regex warning(R"((^|\) )WARNING - )");
    return {std::regex_search(line, warning) ? Level::warn : Level::info, line};
  }
  case Daemon::bird: {
    // "2026-11-29 11:20:42.721 <INFO> Started" (bird.conf: log stderr all)
    static const std::regex classed(R"(^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? <([A-Z]+)> (.*)$)");
    // Before its log settings apply BIRD writes "bird: <message>" and exits: a bad control
    // socket path, a config syntax error.
    if (line.rfind("bird: ", 0) == 0) return {Level::error, line.substr(6)};
    if (!std::regex_match(line, match, classed)) break;
    const std::string name = match[1].str();
    std::string message = match[2].str();
    // BIRD logs its clean exit in the fatal class: a stop is not an error.
    if (name == "FATAL" && message == "Shutdown completed") return {Level::info, message};
    if (name == "WARN") return {Level::warn, message};
    if (name == "ERR" || name == "BUG" || name == "FATAL") return {Level::error, message};
    if (name == "DBG" || name == "TRACE") return {Level::debug, message};
    return {Level::info, message}; // INFO, RMT, AUTH
  }
  }
  return {Level::info, line};
}

namespace detail {

struct DaemonLog::Shared {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<std::pair<Daemon, std::string>> lines; // read, not yet written
  std::size_t dropped = 0;                          // since the last line written
  bool closing = false;
  bool written_all = false;
};

DaemonLog::DaemonLog(std::size_t max_lines) : max_lines_(max_lines), shared_(std::make_shared<Shared>()) {
  if (pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) fail("daemon log", "", std::strerror(errno));
}

int DaemonLog::output_fd(Daemon daemon) {
  std::lock_guard lock(pipes_mutex_);
  for (const auto& pipe : pipes_)
    if (pipe.daemon == daemon) return pipe.write_fd;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) fail("daemon log", "", std::strerror(errno));
  // The daemon's end blocks as a pipe normally does; it never fills, as the reader below
  // always takes what is there.
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) & ~O_NONBLOCK);
  pipes_.push_back({daemon, fds[0], fds[1], {}});
  if (!reader_.joinable()) {
    reader_ = std::thread([this] { read_loop(); });
    writer_ = std::thread([shared = shared_] { write_loop(*shared); });
  }
  (void)!::write(wake_[1], "w", 1); // poll the new pipe too
  return fds[1];
}

void DaemonLog::read_loop() {
  std::optional<std::chrono::steady_clock::time_point> drain_until; // closing: bounded
  for (;;) {
    std::vector<pollfd> polled{{wake_[0], POLLIN, 0}};
    {
      std::lock_guard lock(pipes_mutex_);
      for (const auto& pipe : pipes_) polled.push_back({pipe.read_fd, POLLIN, 0});
    }
    const bool closing = stop_reading_.load();
    if (closing && !drain_until) drain_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    // Closing: what the daemons wrote last is read without waiting, then the reader ends.
    int ready = ::poll(polled.data(), polled.size(), closing ? 0 : -1);
    if (ready < 0 && errno == EINTR) continue;
    char drain[64];
    while (::read(wake_[0], drain, sizeof drain) > 0) {
    }
    bool any = false;
    {
      std::lock_guard lock(pipes_mutex_);
      for (auto& pipe : pipes_) {
        char chunk[16384];
        ssize_t n;
        while ((n = ::read(pipe.read_fd, chunk, sizeof chunk)) > 0) {
          any = true;
          pipe.partial.append(chunk, static_cast<std::size_t>(n));
          std::size_t start = 0;
          for (auto end = pipe.partial.find('\n'); end != std::string::npos; end = pipe.partial.find('\n', start)) {
            take(pipe.daemon, pipe.partial.substr(start, end - start));
            start = end + 1;
          }
          pipe.partial.erase(0, start);
          if (pipe.partial.size() > kMaxLine) { // a line without end: cut it
            take(pipe.daemon, pipe.partial);
            pipe.partial.clear();
          }
        }
        if (closing && !pipe.partial.empty()) {
          take(pipe.daemon, pipe.partial);
          pipe.partial.clear();
        }
      }
    }
    // Closing: until the pipes are empty, or a second (a daemon still writing).
    if (closing && (!any || std::chrono::steady_clock::now() > *drain_until)) break;
  }
  {
    std::lock_guard lock(shared_->mutex);
    shared_->closing = true;
  }
  shared_->ready.notify_all();
}

void DaemonLog::take(Daemon daemon, std::string line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;
  {
    std::lock_guard lock(shared_->mutex);
    if (shared_->lines.size() >= max_lines_) {
      ++shared_->dropped;
      return;
    }
    shared_->lines.emplace_back(daemon, std::move(line));
  }
  shared_->ready.notify_all();
}

void DaemonLog::write_loop(Shared& shared) {
  std::unique_lock lock(shared.mutex);
  for (;;) {
    shared.ready.wait(lock, [&] { return !shared.lines.empty() || shared.dropped > 0 || shared.closing; });
    if (shared.lines.empty() && shared.dropped == 0) break; // closing, all written
    const std::size_t dropped = std::exchange(shared.dropped, 0);
    std::optional<std::pair<Daemon, std::string>> next;
    if (!shared.lines.empty()) {
      next = std::move(shared.lines.front());
      shared.lines.pop_front();
    }
    lock.unlock(); // writing may block (a slow log reader); the reader thread goes on meanwhile
    if (dropped > 0)
      tool::warning(fmt::format("{} line(s) of the daemons' output dropped: the log's reader was behind", dropped));
    if (next) {
      auto parsed = parse_daemon_line(next->first, next->second);
      tool::print_as(to_string(next->first), parsed.level, parsed.message);
    }
    lock.lock();
  }
  shared.written_all = true;
  shared.ready.notify_all();
}

DaemonLog::~DaemonLog() {
  stop_reading_ = true;
  (void)!::write(wake_[1], "w", 1);
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) {
    // Bounded: a log nobody reads must not keep this process from ending.
    std::unique_lock lock(shared_->mutex);
    const bool done = shared_->ready.wait_for(lock, std::chrono::seconds(2), [&] { return shared_->written_all; });
    lock.unlock();
    if (done) writer_.join();
    else writer_.detach(); // it holds shared_ by its own pointer
  }
  for (const auto& pipe : pipes_) {
    ::close(pipe.read_fd);
    ::close(pipe.write_fd);
  }
  ::close(wake_[0]);
  ::close(wake_[1]);
}

} // namespace detail

} // namespace k8slb::apply
