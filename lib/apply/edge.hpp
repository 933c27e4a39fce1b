#pragma once
// The I/O k8slb-apply node needs, kept small: child processes, files, a unix socket client.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "k8slb/apply.hpp"

namespace k8slb::apply::detail {

// ---- processes ----

struct CheckResult {
  int exit_code = -1;  // -1 when killed or not run
  bool timed_out = false;
  std::string output;  // stdout and stderr together
};
// Runs argv[0] (PATH searched) with stdin /dev/null, collects its output; kills it after
// `timeout`. Throws Error when it cannot be started.
CheckResult run_check(const std::vector<std::string>& argv, std::chrono::milliseconds timeout);

struct SpawnOptions {
  bool detach = false;       // new session, no parent-death signal, output to log_path
  std::string log_path;      // used when detach
  int output_fd = -1;        // !detach: the daemon's stdout and stderr (DaemonLog); -1: ours
};

// The daemons' stdout and stderr, one pipe each, read by a thread of its own that never
// blocks them: each line goes to a queue (at most `max_lines`; beyond, lines are dropped and
// counted) that another thread prints as the daemon's (parse_daemon_line, tool::print_as),
// however slowly stderr is read. The pipes stay open as long as this object: a daemon never
// gets SIGPIPE, and one restarted writes to the same pipe.
class DaemonLog {
public:
  explicit DaemonLog(std::size_t max_lines = 1000);
  ~DaemonLog(); // reads what is left, then waits (at most 2 s) for it to be printed
  DaemonLog(const DaemonLog&) = delete;
  DaemonLog& operator=(const DaemonLog&) = delete;
  // The write end for `daemon`'s output (made at the first call).
  int output_fd(Daemon daemon);

private:
  struct Shared;
  struct Pipe {
    Daemon daemon;
    int read_fd, write_fd;
    std::string partial; // a line not ended yet
  };
  static constexpr std::size_t kMaxLine = 8192;
  void read_loop();
  void take(Daemon daemon, std::string line);
  static void write_loop(Shared& shared);

  std::size_t max_lines_;
  std::shared_ptr<Shared> shared_;
  std::mutex pipes_mutex_;
  std::vector<Pipe> pipes_;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_reading_{false};
  std::thread reader_, writer_;
};
// Starts a daemon in the foreground; returns its pid. With !detach the child gets SIGTERM
// when this process dies. Throws Error when exec fails.
int spawn_daemon(const std::vector<std::string>& argv, const SpawnOptions& options);

// waitpid(pid, WNOHANG) for a child of ours: true when it has exited (status in *status).
bool child_exited(int pid, int* status);
// Any process: alive and not a zombie.
bool process_alive(int pid);
// /proc/<pid>/comm.
std::string process_name(int pid);
// Direct children of a process (/proc/<pid>/task/<pid>/children).
std::vector<int> child_pids(int pid);
std::string describe_status(int status);

// ---- files ----

std::optional<std::string> read_optional(const std::string& path);
// Writes `content` to a new temporary file in the directory of `final_path`, fsynced;
// returns its path.
std::string write_temporary(const std::string& final_path, const std::string& content, unsigned mode = 0644);
// rename(from, to) then fsync of the directory.
void commit_rename(const std::string& from, const std::string& to);
void ensure_directory(const std::string& path);
std::optional<int> read_pid_file(const std::string& path);

// ---- unix stream socket: one command, read the answer until the peer closes ----

std::optional<std::string> socket_command(const std::string& path, const std::string& command,
                                          std::chrono::milliseconds timeout);

} // namespace k8slb::apply::detail
