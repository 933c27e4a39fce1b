// NodeApplier: check, install, start/reload/update a node's daemons, and keep them running.
#include "k8slb/apply.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "edge.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/node_metrics.hpp"

namespace k8slb::apply {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

const char* const kKnownFiles[] = {"haproxy.cfg", kHaproxyServersFile, "nginx.conf", "keepalived.conf", "bird.conf"};

std::string basename_of(const std::string& path) {
  auto name = std::filesystem::path(path).filename().string();
  return name.substr(0, 15); // /proc/<pid>/comm keeps 15 characters
}

std::string trim(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  return text.substr(start);
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
  return text;
}

// "haproxy.cfg: message" -> "message", for errors that name the file the Problem names too.
std::string without_prefix(std::string text, const std::string& object) {
  const std::string prefix = object + ": ";
  if (text.starts_with(prefix)) text.erase(0, prefix.size());
  return text;
}

// The checker's message without its banner lines (haproxy's "[NOTICE] ... version is").
std::string checker_message(const std::string& output) {
  std::string out;
  std::size_t start = 0;
  while (start < output.size()) {
    auto end = output.find('\n', start);
    if (end == std::string::npos) end = output.size();
    auto line = output.substr(start, end - start);
    start = end + 1;
    if (line.starts_with("[NOTICE]") || trim(line).empty()) continue;
    if (out.find(line) != std::string::npos) continue; // keepalived repeats itself
    if (!out.empty()) out += '\n';
    out += line;
  }
  return out.empty() ? trim(output) : out;
}

} // namespace

std::map<std::string, std::string> read_file_set(const std::string& dir) {
  if (!std::filesystem::is_directory(dir)) fail(dir, "", "not a directory");
  const auto manifest_path = (std::filesystem::path(dir) / render::kManifestFile).string();
  auto manifest = detail::read_optional(manifest_path);
  if (!manifest)
    fail(dir, "",
         fmt::format("no {}: not a complete set from k8slb-render --output-dir (a render failed, was "
                     "interrupted or is still writing); nothing applied",
                     render::kManifestFile));
  auto listed = render::files_of_manifest(*manifest, manifest_path, [&](const std::string& name) {
    return detail::read_optional((std::filesystem::path(dir) / name).string());
  });
  std::map<std::string, std::string> files;
  for (const char* name : kKnownFiles)
    if (auto found = listed.find(name); found != listed.end()) files[name] = std::move(found->second);
  if (files.empty())
    fail(dir, "", "holds none of haproxy.cfg, nginx.conf, keepalived.conf (run k8slb-render --output-dir)");
  return files;
}

std::map<std::string, std::string> file_set_from_json(const nlohmann::json& document) {
  if (!document.is_object()) fail("input", "", "expected an object with \"files\"");
  auto files = document.find("files");
  if (files == document.end() || !files->is_object()) fail("input", "files", "expected an object of file name -> content");
  std::map<std::string, std::string> out;
  for (const auto& [name, content] : files->items()) {
    if (!content.is_string()) fail("input", "files." + name, "expected the file's content as a string");
    out[name] = content.get<std::string>();
  }
  return out;
}

std::optional<std::string> proxy_health(render::Proxy proxy, const std::string& runtime_dir,
                                        std::chrono::milliseconds budget) {
  const auto deadline = Clock::now() + budget;
  std::string why;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (attempt > 0 && left <= 0ms) break;
    switch (proxy) {
    case render::Proxy::kubeproxy: return std::nullopt;
    case render::Proxy::haproxy: {
      const auto socket = (std::filesystem::path(runtime_dir) / "haproxy.sock").string();
      auto answer = detail::socket_command(socket, "show info", std::max(left / 3, 50ms));
      if (answer && answer->find("Name: HAProxy") != std::string::npos) return std::nullopt;
      why = fmt::format("haproxy does not answer `show info` on {}", socket);
      break;
    }
    case render::Proxy::nginx: {
      const auto pid_file = (std::filesystem::path(runtime_dir) / "nginx.pid").string();
      auto pid = detail::read_pid_file(pid_file);
      if (!pid || !detail::process_alive(*pid) || detail::process_name(*pid) != "nginx")
        why = fmt::format("no nginx runs with the pid in {}", pid_file);
      else if (detail::child_pids(*pid).empty())
        why = fmt::format("nginx (pid {}) has no worker", *pid);
      else
        return std::nullopt;
      break;
    }
    }
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(100ms, std::max(0ms, left / 3)));
  }
  return why;
}

struct NodeApplier::State {
  Daemon daemon = Daemon::haproxy;
  int pid = 0;
  bool child = false;           // started by this process (waitpid works)
  bool wanted = false;          // should be running (a config was installed or it was found running)
  bool stopping = false;
  Clock::time_point started{};
  int failures = 0;             // deaths in a row, for the restart backoff
  std::optional<Clock::time_point> restart_at;
  int output_fd = -1;           // where its stdout and stderr go (DaemonLog); -1: ours
};

namespace {

struct Paths {
  std::string cfg, pid, master_socket, servers, nginx_prefix, vrrp_pid, checkers_pid, log;
};

Paths paths_for(const NodeOptions& options, Daemon daemon) {
  namespace fs = std::filesystem;
  const fs::path config(options.config_dir), runtime(options.runtime_dir);
  Paths paths;
  paths.cfg = (config / config_file_of(daemon)).string();
  paths.log = (runtime / (std::string(to_string(daemon)) + ".log")).string();
  switch (daemon) {
  case Daemon::haproxy:
    paths.pid = (runtime / "haproxy.pid").string();
    paths.master_socket = (runtime / "haproxy-master.sock").string();
    paths.servers = (config / kHaproxyServersFile).string();
    break;
  case Daemon::nginx:
    paths.pid = (runtime / "nginx.pid").string();
    paths.nginx_prefix = (runtime / "nginx").string() + "/";
    break;
  case Daemon::bird:
    paths.pid = (runtime / "bird.pid").string();
    paths.master_socket = (runtime / "bird.ctl").string(); // birdc's control socket
    break;
  case Daemon::keepalived:
    paths.pid = (runtime / "keepalived.pid").string();
    paths.vrrp_pid = (runtime / "keepalived-vrrp.pid").string();
    paths.checkers_pid = (runtime / "keepalived-checkers.pid").string();
    break;
  }
  return paths;
}

const std::string& binary_of(const NodeOptions& options, Daemon daemon) {
  switch (daemon) {
  case Daemon::haproxy: return options.haproxy_bin;
  case Daemon::nginx: return options.nginx_bin;
  case Daemon::keepalived: return options.keepalived_bin;
  case Daemon::bird: return options.bird_bin;
  }
  return options.haproxy_bin;
}

// nginx runs in the foreground; its pid file is the config's `pid` or ours.
std::string nginx_globals(const std::string& conf, const Paths& paths) {
  std::string globals = "daemon off;";
  if (!nginx_pid_path(conf)) globals += fmt::format(" pid {};", paths.pid);
  return globals;
}

std::string nginx_pid_file(const std::string& conf, const Paths& paths) {
  auto pid = nginx_pid_path(conf);
  if (!pid) return paths.pid;
  if (std::filesystem::path(*pid).is_absolute()) return *pid;
  return paths.nginx_prefix + *pid;
}

std::vector<std::string> check_argv(const NodeOptions& options, Daemon daemon, const std::string& file,
                                    const std::string& content) {
  const auto paths = paths_for(options, daemon);
  const auto& bin = binary_of(options, daemon);
  switch (daemon) {
  case Daemon::haproxy: return {bin, "-c", "-f", file};
  case Daemon::nginx:
    return {bin, "-t", "-q", "-c", file, "-p", paths.nginx_prefix, "-g", nginx_globals(content, paths)};
  case Daemon::keepalived: return {bin, "-t", "-f", file};
  case Daemon::bird: return {bin, "-p", "-c", file};
  }
  return {};
}

std::vector<std::string> start_argv(const NodeOptions& options, Daemon daemon, const std::string& content) {
  const auto paths = paths_for(options, daemon);
  const auto& bin = binary_of(options, daemon);
  std::vector<std::string> argv;
  switch (daemon) {
  case Daemon::haproxy:
    // -db: the master stays in the foreground even when haproxy.global says `daemon`, as the
    // original's shipped document does (the master would fork away and look like it exited).
    argv = {bin, "-W", "-db", "-S", paths.master_socket, "-f", paths.cfg, "-p", paths.pid};
    argv.insert(argv.end(), options.haproxy_options.begin(), options.haproxy_options.end());
    break;
  case Daemon::nginx:
    argv = {bin, "-c", paths.cfg, "-p", paths.nginx_prefix, "-g", nginx_globals(content, paths)};
    argv.insert(argv.end(), options.nginx_options.begin(), options.nginx_options.end());
    break;
  case Daemon::keepalived:
    // -G: to stderr only. -l alone also sends each message to syslog with LOG_CONS, and with
    // no syslog daemon glibc then writes it to /dev/console: on a serial console a reload with
    // 10,000 VIPs took 0.33-0.36 s to the new VIP (0.12 s with -G; bench/keepalived_bench.py).
    argv = {bin, "-n", "-l", "-G", "-f", paths.cfg, "-p", paths.pid, "-r", paths.vrrp_pid, "-c", paths.checkers_pid};
    argv.insert(argv.end(), options.keepalived_options.begin(), options.keepalived_options.end());
    break;
  case Daemon::bird:
    argv = {bin, "-f", "-c", paths.cfg, "-s", paths.master_socket, "-P", paths.pid};
    argv.insert(argv.end(), options.bird_options.begin(), options.bird_options.end());
    break;
  }
  return argv;
}

std::optional<ProcStatus> show_proc(const std::string& master_socket) {
  auto answer = detail::socket_command(master_socket, "show proc", 2s);
  if (!answer) return std::nullopt;
  auto status = parse_show_proc(*answer);
  if (status.master_pid == 0) return std::nullopt;
  return status;
}

// The map files of shared ports the installed haproxy.cfg no longer names.
void remove_other_maps(const std::string& config_dir, const std::map<std::string, std::string>& kept) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(config_dir, error)) {
    const auto name = entry.path().filename().string();
    if (is_map_file_name(name) && !kept.contains(name)) std::filesystem::remove(entry.path(), error);
  }
}

bool runtime_answer_ok(const std::string& answer) {
  auto text = trim(answer);
  return text.empty() || text.starts_with("IP changed") || text.starts_with("no need to change") ||
         text.starts_with("port changed");
}

} // namespace

NodeApplier::NodeApplier(NodeOptions options) : options_(std::move(options)) {
  switch (options_.proxy) {
  case render::Proxy::haproxy: daemons_.push_back(Daemon::haproxy); break;
  case render::Proxy::nginx: daemons_.push_back(Daemon::nginx); break;
  case render::Proxy::kubeproxy: break;
  }
  if (options_.keepalived) daemons_.push_back(Daemon::keepalived);
  daemons_.push_back(Daemon::bird); // runs once a set holds bird.conf (BGP mode)
  detail::ensure_directory(options_.config_dir);
  detail::ensure_directory(options_.runtime_dir);
  if (options_.proxy == render::Proxy::nginx) detail::ensure_directory(paths_for(options_, Daemon::nginx).nginx_prefix);
  for (auto daemon : daemons_) {
    auto state = std::make_unique<State>();
    state->daemon = daemon;
    // A daemon already running from an earlier k8slb-apply (one-shot mode) is adopted.
    auto paths = paths_for(options_, daemon);
    std::string pid_file = paths.pid;
    if (daemon == Daemon::nginx)
      if (auto conf = detail::read_optional(paths.cfg)) pid_file = nginx_pid_file(*conf, paths);
    if (auto pid = detail::read_pid_file(pid_file);
        pid && detail::process_alive(*pid) && detail::process_name(*pid) == basename_of(binary_of(options_, daemon))) {
      state->pid = *pid;
      state->wanted = true;
      state->started = Clock::now();
    }
    if (!options_.detach) {
      if (!daemon_log_) daemon_log_ = std::make_unique<detail::DaemonLog>();
      state->output_fd = daemon_log_->output_fd(daemon);
    }
    states_[daemon] = std::move(state);
  }
}

NodeApplier::~NodeApplier() = default;

namespace {

using State = NodeApplier::State;

// keepalived.conf may hold the VRRP password (auth_pass): only root reads it. The proxies'
// configs hold nothing secret (certificates are files of their own).
// bird.conf may hold BGP passwords.
unsigned file_mode(Daemon daemon) { return daemon == Daemon::keepalived || daemon == Daemon::bird ? 0600 : 0644; }

// birdc on the control socket; throws Error with its answer when it fails.
std::string birdc(const NodeOptions& options, const std::vector<std::string>& command) {
  std::vector<std::string> argv = {options.birdc_bin, "-s", paths_for(options, Daemon::bird).master_socket};
  argv.insert(argv.end(), command.begin(), command.end());
  auto result = detail::run_check(argv, 5s);
  if (result.exit_code != 0)
    fail("bird.conf", "", fmt::format("`birdc {}` failed: {}", fmt::join(command, " "), checker_message(result.output)));
  return result.output;
}

// The loopback's VIPs: `ip addr replace` (add) or `ip addr del` (remove) for each. Returns what
// failed, empty when all went well.
std::string set_loopback_vips(const NodeOptions& options, const std::vector<ip::Address>& vips, bool add) {
  std::string failed;
  for (const auto& vip : vips) {
    const auto cidr = fmt::format("{}/{}", vip.to_string(), ip::bits(vip.family()));
    auto result = detail::run_check({options.ip_bin, vip.family() == ip::Family::v6 ? "-6" : "-4", "addr",
                                     add ? "replace" : "del", cidr, "dev", options.loopback},
                                    5s);
    if (result.exit_code != 0 && (add || result.output.find("Cannot assign") == std::string::npos))
      failed += fmt::format("{}`ip addr {} {}`: {}", failed.empty() ? "" : "; ", add ? "replace" : "del", cidr,
                            trim(result.output));
  }
  return failed;
}

std::vector<ip::Address> minus(const std::vector<ip::Address>& from, const std::vector<ip::Address>& take) {
  std::vector<ip::Address> out;
  for (const auto& vip : from)
    if (std::find(take.begin(), take.end(), vip) == take.end()) out.push_back(vip);
  return out;
}

// True when the daemon of `state` is running. A death is noticed here: pid goes to 0 and
// `death` (if given) says how it ended.
bool is_running(const NodeOptions& options, State& state, std::string* death = nullptr) {
  if (state.pid <= 0) return false;
  if (state.child) {
    int status = 0;
    if (!detail::child_exited(state.pid, &status)) return true;
    if (death) *death = fmt::format("{} (pid {}) {}", to_string(state.daemon), state.pid, detail::describe_status(status));
  } else {
    if (detail::process_alive(state.pid) &&
        detail::process_name(state.pid) == basename_of(binary_of(options, state.daemon)))
      return true;
    if (death) *death = fmt::format("{} (pid {}) is gone", to_string(state.daemon), state.pid);
  }
  state.pid = 0;
  state.child = false;
  return false;
}

// Waits (bounded) until a just started daemon is serving: HAProxy has a worker, nginx and
// keepalived have written their pid file. Throws Error when it exits or times out.
void wait_started(const NodeOptions& options, State& state, const std::string& content) {
  const auto paths = paths_for(options, state.daemon);
  const std::string pid_file = state.daemon == Daemon::nginx ? nginx_pid_file(content, paths) : paths.pid;
  const auto deadline = Clock::now() + std::chrono::seconds(options.start_timeout_s);
  for (;;) {
    std::string death;
    if (!is_running(options, state, &death))
      fail(config_file_of(state.daemon), "",
           fmt::format("{} did not start: {}{}", to_string(state.daemon), death,
                       options.detach ? " (see " + paths.log + ")" : ""));
    if (state.daemon == Daemon::haproxy) {
      auto status = show_proc(paths.master_socket);
      if (status && !status->workers.empty()) return;
    } else if (detail::read_pid_file(pid_file) == state.pid) {
      return;
    }
    if (Clock::now() > deadline)
      fail(config_file_of(state.daemon), "",
           fmt::format("{} (pid {}) not ready after {} s", to_string(state.daemon), state.pid, options.start_timeout_s));
    std::this_thread::sleep_for(20ms);
  }
}

void start_daemon(const NodeOptions& options, State& state, const std::string& content) {
  const auto paths = paths_for(options, state.daemon);
  detail::SpawnOptions spawn{options.detach, paths.log, state.output_fd};
  state.pid = detail::spawn_daemon(start_argv(options, state.daemon, content), spawn);
  state.child = true;
  state.wanted = true;
  state.stopping = false;
  state.started = Clock::now();
  state.restart_at.reset();
  wait_started(options, state, content);
}

// Sends the reload signal. For HAProxy, first waits (bounded) while too many old workers are
// still finishing, and afterwards until the new worker is up, so reloads never pile up.
void reload_daemon(const NodeOptions& options, State& state, const std::string& content, std::string& detail_text) {
  const auto paths = paths_for(options, state.daemon);
  if (state.daemon == Daemon::bird) {
    // `configure` keeps established sessions; only changed protocols restart.
    birdc(options, {"configure"});
    return;
  }
  if (state.daemon == Daemon::keepalived) {
    if (kill(state.pid, SIGHUP) != 0)
      fail("keepalived.conf", "", fmt::format("cannot signal keepalived (pid {})", state.pid));
    return;
  }
  if (state.daemon == Daemon::nginx) {
    // nginx reports a failed reload (a listen address it cannot bind, say) only in its log and
    // keeps its old workers: a reload counts when a new worker appears.
    const auto old_workers = detail::child_pids(state.pid);
    if (kill(state.pid, SIGHUP) != 0) fail("nginx.conf", "", fmt::format("cannot signal nginx (pid {})", state.pid));
    const auto deadline = Clock::now() + std::chrono::seconds(options.start_timeout_s);
    auto new_worker = [&] {
      const auto now = detail::child_pids(state.pid);
      return std::any_of(now.begin(), now.end(), [&](int pid) {
        return std::find(old_workers.begin(), old_workers.end(), pid) == old_workers.end();
      });
    };
    while (Clock::now() < deadline && !new_worker()) std::this_thread::sleep_for(10ms);
    if (!new_worker())
      fail("nginx.conf", "",
           fmt::format("nginx (pid {}) started no new worker within {} s: the reload failed, see its log{}", state.pid,
                       options.start_timeout_s, options.detach ? " " + paths.log : ""));
    // Until an old worker takes its QUIT (nginx's master sends it 100 ms after starting the new
    // ones) it still accepts on the sockets the new config keeps, with the old config: on a
    // wildcard socket (a shared port) a new VIP's connection would get a 502. An old worker
    // closes its listeners as it retitles itself "worker process is shutting down" (or it is
    // gone). With a socket per VIP the new VIP's is the new workers' alone: no wait.
    if (!nginx_listens_on_wildcard(content)) return;
    auto old_worker_accepting = [&] { // still the master's child (not a reused pid), not retitled
      const auto children = detail::child_pids(state.pid);
      return std::any_of(old_workers.begin(), old_workers.end(), [&](int pid) {
        if (std::find(children.begin(), children.end(), pid) == children.end()) return false;
        auto title = detail::read_optional(fmt::format("/proc/{}/cmdline", pid));
        return title && !title->empty() && title->find("shutting down") == std::string::npos;
      });
    };
    const auto quit_deadline = Clock::now() + std::chrono::seconds(options.start_timeout_s);
    while (Clock::now() < quit_deadline && old_worker_accepting()) std::this_thread::sleep_for(5ms);
    if (old_worker_accepting())
      detail_text += fmt::format("; old workers still accepting after {} s", options.start_timeout_s);
    return;
  }
  auto before = show_proc(paths.master_socket);
  const auto wait_deadline = Clock::now() + std::chrono::seconds(options.reload_wait_s);
  while (before && static_cast<int>(before->old_workers.size()) >= options.haproxy_max_old_workers &&
         Clock::now() < wait_deadline) {
    std::this_thread::sleep_for(50ms);
    before = show_proc(paths.master_socket);
  }
  if (before && static_cast<int>(before->old_workers.size()) >= options.haproxy_max_old_workers)
    detail_text += fmt::format("; {} old workers still running", before->old_workers.size());
  if (kill(state.pid, SIGUSR2) != 0)
    fail("haproxy.cfg", "", fmt::format("cannot signal haproxy master (pid {})", state.pid));
  if (!before) return; // no master CLI: nothing to wait on
  const auto deadline = Clock::now() + std::chrono::seconds(options.start_timeout_s);
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
    auto now = show_proc(paths.master_socket);
    if (!now || now->reloads <= before->reloads || now->workers.empty()) continue;
    bool fresh = std::none_of(now->workers.begin(), now->workers.end(), [&](int pid) {
      return std::find(before->workers.begin(), before->workers.end(), pid) != before->workers.end();
    });
    if (fresh) return;
  }
  fail("haproxy.cfg", "", fmt::format("haproxy reload did not bring up a new worker within {} s", options.start_timeout_s));
}

// A daemon that should run but is down while its new config is not applied gets the last good
// (installed) one.
void start_last_good(const NodeOptions& options, State& state, const std::optional<std::string>& installed,
                     ApplyResult& result) {
  if (!installed || !state.wanted) return;
  const std::string file(config_file_of(state.daemon));
  try {
    start_daemon(options, state, *installed);
  } catch (const Error& error) {
    result.problems.push_back({file, "", "StartFailed", without_prefix(error.what(), file)});
  }
}

} // namespace

ApplyResult NodeApplier::apply(const std::map<std::string, std::string>& files) {
  ApplyResult result;
  for (auto daemon : daemons_) {
    auto& state = *states_.at(daemon);
    const auto paths = paths_for(options_, daemon);
    const std::string file(config_file_of(daemon));
    DaemonResult outcome;
    outcome.daemon = daemon;
    auto problem = [&](std::string reason, std::string message) {
      outcome.ok = false;
      outcome.detail = message;
      result.problems.push_back({file, "", std::move(reason), std::move(message)});
    };
    // Proxy first: when the proxy did not take its new config, keepalived keeps the VIP set
    // that matches the config the proxy still runs (a daemon that is down gets its last one).
    if (daemon == Daemon::bird && !files.contains(file) && !state.wanted) continue; // no BGP
    if (daemon == Daemon::keepalived || daemon == Daemon::bird) {
      if (auto hold = keepalived_hold_reason(result.daemons)) {
        problem("ProxyNotUpdated", fmt::format("not applied: {}; {} keeps the VIPs it {}", *hold, to_string(daemon),
                                               daemon == Daemon::bird ? "announces" : "holds"));
        outcome.held = true;
        if (!is_running(options_, state)) start_last_good(options_, state, detail::read_optional(paths.cfg), result);
        result.daemons.push_back(outcome);
        continue;
      }
    }
    auto wanted = files.find(file);
    if (wanted == files.end()) {
      problem("MissingFile", fmt::format("not in the input, {} left as it is", to_string(daemon)));
      result.daemons.push_back(outcome);
      continue;
    }
    const auto installed = detail::read_optional(paths.cfg);
    const bool running = is_running(options_, state);

    // What to do.
    Plan plan;
    std::optional<std::string> wanted_servers_text;
    std::optional<MapFiles> wanted_maps = MapFiles{};
    std::map<std::string, std::string> map_texts;                   // name -> wanted content
    std::map<std::string, std::optional<std::string>> replaced_maps; // name -> what it held before
    auto config_path = [&](const std::string& name) { return (std::filesystem::path(options_.config_dir) / name).string(); };
    // haproxy.cfg names its map files: they are in place before it is checked or loaded, and
    // put back when it is not taken.
    auto install_maps = [&] {
      for (const auto& [name, content] : map_texts) {
        auto before = detail::read_optional(config_path(name));
        if (before == content) continue;
        replaced_maps.emplace(name, std::move(before));
        detail::commit_rename(detail::write_temporary(config_path(name), content), config_path(name));
      }
    };
    auto restore_maps = [&] {
      for (const auto& [name, before] : replaced_maps) try {
          if (before) detail::commit_rename(detail::write_temporary(config_path(name), *before), config_path(name));
          else ::unlink(config_path(name).c_str());
        } catch (const std::exception&) {
        }
    };
    if (daemon == Daemon::haproxy) {
      HaproxyFiles installed_files{installed, std::nullopt, {}};
      if (auto text = detail::read_optional(paths.servers)) {
        try {
          if (parsed_servers_ && parsed_servers_->first == *text) installed_files.servers = parsed_servers_->second;
          else installed_files.servers = parse_server_table(nlohmann::json::parse(*text), paths.servers);
        } catch (const std::exception&) {
        }
      }
      std::optional<ServerTable> wanted_servers;
      if (auto found = files.find(kHaproxyServersFile); found != files.end()) {
        wanted_servers_text = found->second;
        try {
          wanted_servers = parse_server_table(nlohmann::json::parse(found->second), kHaproxyServersFile);
          parsed_servers_.emplace(found->second, *wanted_servers);
        } catch (const nlohmann::json::exception& error) {
          result.problems.push_back({kHaproxyServersFile, "", "InvalidServerTable", error.what()});
        } catch (const Error& error) {
          result.problems.push_back({kHaproxyServersFile, "", "InvalidServerTable", error.what()});
        }
      }
      // The shared ports' map files (the set's own; the installed ones of the same names).
      for (const auto& [name, content] : files) {
        if (!is_map_file_name(name)) continue;
        map_texts[name] = content;
        try {
          if (wanted_maps) (*wanted_maps)[name] = parse_map_file(content, name);
        } catch (const Error& error) {
          result.problems.push_back({name, "", "InvalidMapFile", error.what()});
          wanted_maps.reset();
        }
        if (auto text = detail::read_optional(config_path(name))) try {
            installed_files.maps[name] = parse_map_file(*text, name);
          } catch (const Error&) {
          }
      }
      plan = plan_haproxy(running, installed_files, wanted->second, wanted_servers, wanted_maps);
    } else {
      plan = plan_daemon(running, installed, wanted->second);
    }
    outcome.action = plan.action;
    outcome.detail = plan.reason;
    if (plan.action == Action::none) {
      try {
        if (wanted_servers_text && detail::read_optional(paths.servers) != wanted_servers_text)
          detail::commit_rename(detail::write_temporary(paths.servers, *wanted_servers_text), paths.servers);
        install_maps();
      } catch (const std::exception& error) {
        problem("ApplyFailed", without_prefix(error.what(), file));
      }
      state.wanted = true;
      result.daemons.push_back(outcome);
      continue;
    }

    // Check the new file where it will live (relative paths resolve the same), then install.
    // Anything that fails here (a checker that cannot run, a full disk) is this daemon's problem:
    // the running config stays and the other daemons are still applied.
    std::optional<std::string> staged;
    try {
      // A runtime update installs its map files once its commands are sent (below).
      if (plan.action != Action::runtime_update) install_maps();
      if (!installed || *installed != wanted->second) {
        staged = detail::write_temporary(paths.cfg, wanted->second, file_mode(daemon));
      }
      // A runtime update is not checked: the config is the installed one but for the values the
      // server table and the map files carry (addresses, ports, VIPs, backend names), parsed.
      if (staged && plan.action != Action::runtime_update) {
        auto check = check_argv(options_, daemon, *staged, wanted->second);
        auto checked = detail::run_check(check, std::chrono::seconds(options_.check_timeout_s));
        if (checked.exit_code != 0) {
          const std::string rejected = paths.cfg + ".rejected";
          detail::commit_rename(*staged, rejected);
          std::string output = checker_message(replace_all(checked.output, *staged, rejected));
          if (checked.timed_out) output = fmt::format("timed out after {} s. {}", options_.check_timeout_s, output);
          problem("ConfigRejected", fmt::format("rejected by `{} {}` (kept as {}), the running config stays: {}",
                                                basename_of(check[0]), check[1], rejected, output));
          // For the Event: worded alike on every node (no paths of this node, no pids).
          outcome.rejected = checker_summary(checked.output, {{*staged, file}, {rejected, file},
                                                              {options_.config_dir + "/", ""}, {options_.runtime_dir + "/", ""}});
          if (checked.timed_out) outcome.rejected = fmt::format("timed out after {} s. {}", options_.check_timeout_s, outcome.rejected);
          restore_maps();
          if (!running) start_last_good(options_, state, installed, result);
          result.daemons.push_back(outcome);
          continue;
        }
      }
    } catch (const std::exception& error) {
      if (staged) ::unlink(staged->c_str());
      restore_maps();
      problem("ApplyFailed", fmt::format("{}; the running config stays", without_prefix(error.what(), file)));
      result.daemons.push_back(outcome);
      continue;
    }

    bool committed = false;
    try {
      if (plan.action == Action::runtime_update) {
        std::string failed;
        auto socket = stats_socket_path(wanted->second).value_or("");
        const auto sent = Clock::now();
        std::chrono::duration<double> slowest{0};
        std::string slowest_command;
        for (const auto& command : plan.commands) {
          const auto at = Clock::now();
          auto answer = detail::socket_command(socket, command, 2s);
          if (const std::chrono::duration<double> took = Clock::now() - at; took > slowest) {
            slowest = took;
            slowest_command = command;
          }
          if (!answer || !runtime_answer_ok(*answer)) {
            failed = fmt::format("`{}`: {}", command, answer ? trim(*answer) : "no answer on " + socket);
            break;
          }
        }
        // How long HAProxy took to answer, for whoever reads the log: the slowest command is
        // named once the whole update took more than 0.1 s.
        const std::chrono::duration<double> took = Clock::now() - sent;
        outcome.detail += fmt::format("; {} command(s) in {:.3f} s", plan.commands.size(), took.count());
        if (took > 100ms) outcome.detail += fmt::format(", the slowest `{}` {:.3f} s", slowest_command, slowest.count());
        install_maps(); // what HAProxy now holds, or what the reload below loads
        if (!failed.empty()) {
          outcome.action = Action::reload;
          outcome.detail = "runtime update failed (" + failed + "), reloading";
          if (staged) { // not checked yet
            auto checked = detail::run_check(check_argv(options_, daemon, *staged, wanted->second),
                                             std::chrono::seconds(options_.check_timeout_s));
            if (checked.exit_code != 0)
              fail(file, "", fmt::format("{}; the config is rejected: {}", outcome.detail, checker_message(checked.output)));
          }
        }
      }
      // BGP: the node accepts the new VIPs' traffic (loopback) before they are announced.
      if (daemon == Daemon::bird) {
        auto failed = set_loopback_vips(options_, render::announced_vips(wanted->second), true);
        if (!failed.empty()) fail(file, "", "cannot put the VIPs on " + options_.loopback + ": " + failed);
      }
      if (staged) {
        detail::commit_rename(*staged, paths.cfg);
        committed = true;
      }
      if (wanted_servers_text) detail::commit_rename(detail::write_temporary(paths.servers, *wanted_servers_text), paths.servers);
      state.wanted = true;
      if (outcome.action == Action::start) start_daemon(options_, state, wanted->second);
      else if (outcome.action == Action::reload) reload_daemon(options_, state, wanted->second, outcome.detail);
      if (daemon == Daemon::haproxy) remove_other_maps(options_.config_dir, map_texts);
      if (daemon == Daemon::bird) {
        // `configure` enables the VIP routes again: withdraw them at once if the proxy is down.
        if (auto line = follow_proxy_health(true)) outcome.detail += "; " + *line;
        // Withdrawn first, then the VIPs that went leave the loopback.
        if (installed) {
          auto failed = set_loopback_vips(
              options_, minus(render::announced_vips(*installed), render::announced_vips(wanted->second)), false);
          if (!failed.empty()) result.problems.push_back({file, "", "AddressFailed", failed});
        }
      }
    } catch (const std::exception& error) {
      problem(outcome.action == Action::start ? "StartFailed" : "ReloadFailed", without_prefix(error.what(), file));
      if (staged && !committed) ::unlink(staged->c_str());
      restore_maps();
      // Runtime commands sent before the failure changed HAProxy beyond what the installed
      // files say: without its server table, the next set is a reload (from checked files).
      if (plan.action == Action::runtime_update) ::unlink(paths.servers.c_str());
      // The daemon still runs the previous config: put that file back, so the installed file
      // says what runs and the same input is tried again (not taken as already applied).
      if (committed && installed) {
        try {
          detail::commit_rename(detail::write_temporary(paths.cfg, *installed, file_mode(daemon)), paths.cfg);
        } catch (const std::exception&) {
        }
      }
    }
    result.daemons.push_back(outcome);
  }
  return result;
}

std::vector<std::string> NodeApplier::supervise() {
  std::vector<std::string> log;
  const auto now = Clock::now();
  for (auto daemon : daemons_) {
    auto& state = *states_.at(daemon);
    if (!state.wanted || state.stopping) continue;
    std::string death;
    if (is_running(options_, state, &death)) {
      if (state.failures > 0 && now - state.started > 60s) state.failures = 0; // stable again
      continue;
    }
    if (!death.empty()) {
      if (daemon == Daemon::keepalived) NodeMetrics::process().keepalived_gone();
      state.failures = now - state.started > 60s ? 1 : state.failures + 1;
      const auto delay = restart_delay(state.failures);
      state.restart_at = now + delay;
      log.push_back(fmt::format("{}; restarting in {} ms", death, delay.count()));
    }
    if (!state.restart_at) state.restart_at = now;
    if (now < *state.restart_at) continue;
    const auto paths = paths_for(options_, daemon);
    auto content = detail::read_optional(paths.cfg);
    if (!content) {
      state.wanted = false;
      log.push_back(fmt::format("{}: no installed {}, not restarting", to_string(daemon), paths.cfg));
      continue;
    }
    try {
      start_daemon(options_, state, *content);
      log.push_back(fmt::format("restarted {} (pid {})", to_string(daemon), state.pid));
      NodeMetrics::process().restarted(daemon);
    } catch (const Error& error) {
      state.failures += 1;
      const auto delay = restart_delay(state.failures);
      state.restart_at = Clock::now() + delay;
      log.push_back(fmt::format("{}; retrying in {} ms", error.what(), delay.count()));
    }
  }
  if (auto line = follow_proxy_health(false)) log.push_back(*line);
  return log;
}

std::optional<std::string> NodeApplier::follow_proxy_health(bool force) {
  auto& bird = *states_.at(Daemon::bird);
  if (!bird.wanted || bird.stopping || !is_running(options_, bird)) {
    announcing_.reset(); // a (re)started bird announces: asserted again once it runs
    return std::nullopt;
  }
  auto why = proxy_health(options_.proxy, options_.runtime_dir, 300ms);
  const bool healthy = !why;
  if (!force && announcing_ == healthy) return std::nullopt;
  try {
    birdc(options_, {healthy ? "enable" : "disable", "\"k8slb_vips_*\""});
  } catch (const Error& error) {
    announcing_.reset();
    return std::string(error.what());
  }
  const bool changed = announcing_ != healthy;
  announcing_ = healthy;
  if (!changed && force && healthy) return std::nullopt;
  return healthy ? std::string("bird: announcing the VIPs (the proxy answers)")
                 : fmt::format("bird: VIP routes withdrawn: {}", *why);
}

std::vector<std::string> NodeApplier::stop_all(bool adopted) {
  std::vector<std::string> log;
  // BGP: the routes are withdrawn first, and the proxy still serves while the routers move the
  // traffic to the other nodes.
  auto& bird = *states_.at(Daemon::bird);
  if (bird.pid > 0 && (bird.child || adopted) && is_running(options_, bird)) {
    try {
      birdc(options_, {"disable", "\"k8slb_vips_*\""});
      log.push_back(fmt::format("bird: VIP routes withdrawn; stopping in {} ms", options_.bgp_withdraw_wait_ms));
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.bgp_withdraw_wait_ms));
    } catch (const Error& error) {
      log.push_back(error.what());
    }
  }
  // Then keepalived, so the VIPs move away before the proxy behind them stops.
  for (auto daemon = daemons_.rbegin(); daemon != daemons_.rend(); ++daemon) {
    auto& state = *states_.at(*daemon);
    state.stopping = true;
    if (*daemon == Daemon::bird && (state.child || adopted))
      if (auto conf = detail::read_optional(paths_for(options_, Daemon::bird).cfg))
        if (auto failed = set_loopback_vips(options_, render::announced_vips(*conf), false); !failed.empty())
          log.push_back(failed);
    if (state.pid <= 0 || (!state.child && !adopted)) continue;
    const auto plan = stop_plan(*daemon);
    const bool child = state.child;
    auto gone = [&] {
      return child ? detail::child_exited(state.pid, nullptr) : !detail::process_alive(state.pid);
    };
    kill(state.pid, plan.signal);
    const auto deadline = Clock::now() + plan.wait;
    bool stopped = gone();
    while (!stopped && Clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
      stopped = gone();
    }
    if (stopped) {
      log.push_back(fmt::format("stopped {} (pid {}, {})", to_string(*daemon), state.pid, strsignal(plan.signal)));
    } else {
      kill(state.pid, SIGKILL);
      for (int i = 0; i < 200 && !gone(); ++i) std::this_thread::sleep_for(10ms);
      log.push_back(fmt::format("killed {} (pid {}): still running {} s after {}", to_string(*daemon), state.pid,
                                std::chrono::duration_cast<std::chrono::seconds>(plan.wait).count(),
                                strsignal(plan.signal)));
    }
    state.pid = 0;
    state.child = false;
  }
  return log;
}

} // namespace k8slb::apply
