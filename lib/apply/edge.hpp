#pragma once
// The I/O k8slb-apply node needs, kept small: child processes, files, a unix socket client.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

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
