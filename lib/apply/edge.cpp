// Child processes, files and a unix socket client for k8slb-apply node.
#include "edge.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include "k8slb/error.hpp"

namespace k8slb::apply::detail {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<char*> c_argv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  for (const auto& arg : argv) out.push_back(const_cast<char*>(arg.c_str()));
  out.push_back(nullptr);
  return out;
}

// In the child, after fork: default signal dispositions and an empty mask, so the daemon
// sees SIGHUP/SIGUSR2/SIGTERM as it expects whatever the parent did with them.
void reset_signals_in_child() {
  for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGPIPE, SIGCHLD, SIGALRM})
    std::signal(sig, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

// fork + exec; exec failure comes back through a close-on-exec pipe as errno.
// `setup` runs in the child before exec (async-signal-safe calls only).
template <typename Setup>
int fork_exec(const std::vector<std::string>& argv, Setup setup) {
  if (argv.empty()) fail("spawn", "", "empty command");
  int error_pipe[2];
  if (pipe2(error_pipe, O_CLOEXEC) != 0) fail("spawn", "", std::strerror(errno));
  auto args = c_argv(argv);
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(error_pipe[0]);
    close(error_pipe[1]);
    fail(argv[0], "", fmt::format("fork: {}", std::strerror(err)));
  }
  if (pid == 0) {
    close(error_pipe[0]);
    reset_signals_in_child();
    setup(error_pipe[1]);
    execvp(args[0], args.data());
    int err = errno;
    (void)!write(error_pipe[1], &err, sizeof err);
    _exit(127);
  }
  close(error_pipe[1]);
  int err = 0;
  ssize_t n;
  do n = read(error_pipe[0], &err, sizeof err);
  while (n < 0 && errno == EINTR);
  close(error_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof err)) {
    int status;
    waitpid(pid, &status, 0);
    fail(argv[0], "", fmt::format("cannot run: {}", std::strerror(err)));
  }
  return pid;
}

} // namespace

CheckResult run_check(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) fail(argv.at(0), "", std::strerror(errno));
  int pid;
  try {
    pid = fork_exec(argv, [&](int keep_fd) {
      int null = open("/dev/null", O_RDONLY);
      dup2(null, 0);
      dup2(out_pipe[1], 1);
      dup2(out_pipe[1], 2);
      // Close everything else but the exec-error pipe (close-on-exec anyway).
      long max = sysconf(_SC_OPEN_MAX);
      if (max < 0 || max > 65536) max = 65536;
      for (int fd = 3; fd < max; ++fd)
        if (fd != keep_fd) close(fd);
    });
  } catch (...) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    throw;
  }
  close(out_pipe[1]);
  CheckResult result;
  const auto deadline = Clock::now() + timeout;
  char buffer[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      result.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{out_pipe[0], POLLIN, 0};
    int ready = poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    ssize_t n = read(out_pipe[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (result.output.size() < 1 << 20) result.output.append(buffer, static_cast<std::size_t>(n));
  }
  close(out_pipe[0]);
  int status = 0;
  // The output pipe closed: the checker is exiting (or was killed); wait for it, bounded.
  for (int i = 0; i < 500; ++i) {
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (i == 499) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      result.timed_out = true;
      break;
    }
    usleep(10000);
  }
  result.exit_code = (!result.timed_out && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  return result;
}

int spawn_daemon(const std::vector<std::string>& argv, const SpawnOptions& options) {
  int log_fd = -1;
  if (options.detach) {
    log_fd = open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (log_fd < 0) fail(options.log_path, "", std::strerror(errno));
  }
  const pid_t parent = getpid();
  int pid;
  try {
    pid = fork_exec(argv, [&](int keep_fd) {
      int null = open("/dev/null", O_RDONLY);
      dup2(null, 0);
      if (options.detach) {
        setsid();
        dup2(log_fd, 1);
        dup2(log_fd, 2);
      } else {
        if (options.output_fd >= 0) {
          dup2(options.output_fd, 1);
          dup2(options.output_fd, 2);
        }
        setpgid(0, 0); // not in our process group: a terminal's ^C reaches us, and we stop it
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
      }
      long max = sysconf(_SC_OPEN_MAX);
      if (max < 0 || max > 65536) max = 65536;
      for (int fd = 3; fd < max; ++fd)
        if (fd != keep_fd) close(fd);
    });
  } catch (...) {
    if (log_fd >= 0) close(log_fd);
    throw;
  }
  if (log_fd >= 0) close(log_fd);
  return pid;
}

bool child_exited(int pid, int* status) {
  int local = 0;
  pid_t done = waitpid(pid, &local, WNOHANG);
  if (done == pid) {
    if (status) *status = local;
    return true;
  }
  if (done < 0 && errno == ECHILD) {
    if (status) *status = 0;
    return !process_alive(pid);
  }
  return false;
}

bool process_alive(int pid) {
  if (pid <= 0) return false;
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string text;
  if (!std::getline(stat, text)) return false;
  auto paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return true;
  char state = text[paren + 2];
  return state != 'Z' && state != 'X';
}

std::string process_name(int pid) {
  std::ifstream comm(fmt::format("/proc/{}/comm", pid));
  std::string name;
  std::getline(comm, name);
  return name;
}

std::vector<int> child_pids(int pid) {
  std::ifstream in(fmt::format("/proc/{}/task/{}/children", pid, pid));
  std::vector<int> pids;
  int child;
  while (in >> child) pids.push_back(child);
  return pids;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended";
}

std::optional<std::string> read_optional(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string write_temporary(const std::string& final_path, const std::string& content, unsigned mode) {
  std::filesystem::path target(final_path);
  std::string pattern = (target.parent_path() / ("." + target.filename().string() + ".new-XXXXXX")).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  int fd = mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) fail(final_path, "", fmt::format("cannot create a temporary file: {}", std::strerror(errno)));
  const std::string path(name.data());
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      unlink(path.c_str());
      fail(path, "", fmt::format("write: {}", std::strerror(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  fchmod(fd, static_cast<mode_t>(mode));
  if (fsync(fd) != 0) {
    int err = errno;
    close(fd);
    unlink(path.c_str());
    fail(path, "", fmt::format("fsync: {}", std::strerror(err)));
  }
  close(fd);
  return path;
}

void commit_rename(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0)
    fail(to, "", fmt::format("rename from {}: {}", from, std::strerror(errno)));
  auto dir = std::filesystem::path(to).parent_path().string();
  if (dir.empty()) dir = ".";
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

void ensure_directory(const std::string& path) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  if (error) fail(path, "", fmt::format("cannot create directory: {}", error.message()));
}

std::optional<int> read_pid_file(const std::string& path) {
  auto text = read_optional(path);
  if (!text) return std::nullopt;
  try {
    int pid = std::stoi(*text);
    if (pid > 0) return pid;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

std::optional<std::string> socket_command(const std::string& path, const std::string& command,
                                          std::chrono::milliseconds timeout) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) return std::nullopt;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return std::nullopt;
  }
  const std::string line = command + "\n";
  if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    close(fd);
    return std::nullopt;
  }
  std::string answer;
  const auto deadline = Clock::now() + timeout;
  char buffer[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      close(fd);
      return std::nullopt;
    }
    pollfd pfd{fd, POLLIN, 0};
    int ready = poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    ssize_t n = recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buffer, static_cast<std::size_t>(n));
    // An HAProxy CLI answer ends with an empty line (a bare "\n" when there is nothing to
    // say); the master CLI may keep the connection open after it.
    if (answer == "\n" || answer.ends_with("\n\n")) break;
  }
  close(fd);
  return answer;
}

} // namespace k8slb::apply::detail
