// k8slb-apply node: install, check and reload the daemons' configs on this node.
#include <cerrno>
#include <chrono>
#include <csignal>
#include <optional>
#include <string>

#include <poll.h>
#include <unistd.h>

#include "commands.hpp"
#include "k8slb/apply.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/node_metrics.hpp"
#include "k8slb/tool.hpp"

namespace k8slb_apply {
namespace {

namespace apply = k8slb::apply;
namespace tool = k8slb::tool;

struct NodeCommandOptions {
  k8slb::metrics::Options metrics;
  std::string from_dir;
  std::string config_dir = "/etc/k8slb";
  std::string runtime_dir = "/run/k8slb";
  std::string proxy = "haproxy";
  bool no_keepalived = false;
  bool stay = false;
  bool stop = false;
  std::string haproxy = "haproxy";
  std::string nginx = "nginx";
  std::string keepalived = "keepalived";
  std::string haproxy_options, nginx_options, keepalived_options;
  int check_timeout_s = 30;
  int start_timeout_s = 10;
  int haproxy_max_old_workers = 8;
};

volatile std::sig_atomic_t stop_requested = 0;
void on_stop_signal(int) { stop_requested = 1; }

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0; // no SA_RESTART: poll() returns EINTR
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

apply::NodeOptions to_node_options(const NodeCommandOptions& options) {
  apply::NodeOptions node;
  node.config_dir = options.config_dir;
  node.runtime_dir = options.runtime_dir;
  node.proxy = k8slb::render::parse_proxy(options.proxy);
  node.keepalived = !options.no_keepalived;
  node.haproxy_bin = options.haproxy;
  node.nginx_bin = options.nginx;
  node.keepalived_bin = options.keepalived;
  node.haproxy_options = apply::split_options(options.haproxy_options);
  node.nginx_options = apply::split_options(options.nginx_options);
  node.keepalived_options = apply::split_options(options.keepalived_options);
  node.detach = !options.from_dir.empty();
  node.check_timeout_s = options.check_timeout_s;
  node.start_timeout_s = options.start_timeout_s;
  node.haproxy_max_old_workers = options.haproxy_max_old_workers;
  return node;
}

// Prints the problems on stderr and the result line on stdout, with the input's Events (from
// k8slb-render --events) passed on for `k8slb-apply events`, and a ConfigRejected on each of
// the input's Services when a checker refused a config. The bytes written (0: stdout is closed).
std::size_t report(const apply::ApplyResult& result, k8slb::json events = nullptr, k8slb::json vips = nullptr) {
  for (const auto& problem : result.problems) tool::error(problem.to_string());
  for (const auto& daemon : result.daemons)
    if (daemon.ok && daemon.action != apply::Action::none)
      tool::info(std::string(apply::to_string(daemon.daemon)) + ": " + std::string(apply::to_string(daemon.action)) +
                 " (" + daemon.detail + ")");
  auto line = result.to_json();
  if (events.is_array()) {
    for (auto& event : apply::rejected_config_events(result, vips)) events.push_back(std::move(event));
    line["events"] = std::move(events);
  }
  if (vips.is_object()) line["vips"] = std::move(vips); // 10,000 Services: 10,000 entries, moved
  const std::string text = k8slb::dump_line(line);
  return tool::write_line(text) ? text.size() : 0;
}

// What the metrics options ask for: the endpoint or file, and keepalived's state changes.
struct Observability {
  k8slb::metrics::Publisher publisher;
  std::optional<apply::NodeObserver> observer;
  explicit Observability(const NodeCommandOptions& options) : publisher(options.metrics) {
    apply::NodeMetrics::process(); // every family shows from the first scrape
    if (options.no_keepalived || (options.metrics.address.empty() && options.metrics.file.empty())) return;
    observer.emplace(apply::NodeMetrics::process(), options.runtime_dir + "/" + k8slb::render::kNotifyFifoFile,
                     options.config_dir + "/keepalived.conf", std::chrono::milliseconds(500),
                     [](const std::string& line) { tool::warning(line); });
  }
};

// Counts an apply. Its duration runs from the change k8slb-watch saw (the set's "observedAt",
// from k8slb-render --stream) when the set carries it, else from the set read (`seen`).
void count(const apply::ApplyResult& result, std::chrono::steady_clock::time_point seen,
           const k8slb::json& observed = nullptr) {
  const auto now = std::chrono::system_clock::now();
  std::chrono::steady_clock::duration since = std::chrono::steady_clock::now() - seen;
  if (observed.is_string()) {
    k8slb::json list{{"metadata", {{"annotations", {{k8slb::kObservedAtAnnotation, observed}}}}}};
    if (auto at = k8slb::observed_at(list); at && *at <= now)
      since = std::chrono::duration_cast<std::chrono::steady_clock::duration>(now - *at);
  }
  apply::NodeMetrics::process().applied(result, since,
                                        std::chrono::duration<double>(now.time_since_epoch()).count());
}

int run_once(const NodeCommandOptions& options) {
  apply::NodeApplier applier(to_node_options(options)); // makes the runtime dir
  Observability observability(options);                // before any daemon starts
  const auto seen = std::chrono::steady_clock::now();
  auto result = applier.apply(apply::read_file_set(options.from_dir));
  count(result, seen);
  report(result);
  if (result.ok()) return tool::kExitOk;
  // Partial: a daemon was updated while another was not (each named on stderr).
  for (const auto& daemon : result.daemons)
    if (daemon.ok && daemon.action != apply::Action::none) return tool::kExitPartial;
  return tool::kExitFailure;
}

// Reads NDJSON sets from stdin for ever. When several lines are waiting, only the last is
// applied (coalescing). Between inputs, daemons that die are restarted.
int run_stream(const NodeCommandOptions& options) {
  install_stop_handlers();
  apply::NodeApplier applier(to_node_options(options)); // makes the runtime dir
  Observability observability(options);                // before any daemon starts
  std::string buffer;
  std::size_t scanned = 0; // bytes of `buffer` known to hold no newline
  auto supervised = std::chrono::steady_clock::now();
  bool input_open = true;
  int document = 0;
  tool::StageTimer timer; // K8SLB_TIMING=1
  while (!stop_requested) {
    // Not between the chunks of a line being read (a node's set is megabytes at 1,000 Services),
    // but at least every 200 ms.
    if (buffer.empty() || std::chrono::steady_clock::now() - supervised > std::chrono::milliseconds(200)) {
      for (const auto& line : applier.supervise()) tool::warning(line);
      supervised = std::chrono::steady_clock::now();
    }
    if (!input_open) {
      if (!options.stay) break;
      ::poll(nullptr, 0, 200);
      continue;
    }
    pollfd pfd{0, POLLIN, 0};
    int ready = ::poll(&pfd, 1, 200);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    static char chunk[1 << 20];
    ssize_t n = ::read(0, chunk, sizeof chunk);
    const auto seen = std::chrono::steady_clock::now();
    if (n < 0 && errno == EINTR) continue;
    if (buffer.empty()) timer.restart(); // a line's first bytes
    if (n <= 0) {
      input_open = false;
      if (!buffer.empty()) buffer += '\n'; // a last line without newline still counts
    } else {
      buffer.append(chunk, static_cast<std::size_t>(n));
    }
    // Take the last complete line; earlier ones are superseded. Only the new bytes are searched.
    if (buffer.find('\n', scanned) == std::string::npos) {
      scanned = buffer.size();
      continue;
    }
    scanned = 0;
    auto end = buffer.rfind('\n');
    std::string pending = buffer.substr(0, end);
    buffer.erase(0, end + 1);
    std::string last;
    std::size_t start = 0;
    int lines = 0;
    while (start <= pending.size()) {
      auto stop = pending.find('\n', start);
      if (stop == std::string::npos) stop = pending.size();
      auto text = pending.substr(start, stop - start);
      if (text.find_first_not_of(" \t\r") != std::string::npos) {
        last = std::move(text);
        ++lines;
      }
      start = stop + 1;
    }
    if (lines == 0) continue;
    document += lines;
    timer.mark("read");
    std::map<std::string, std::string> files;
    k8slb::json events, vips, observed;
    try {
      auto set = k8slb::json::parse(last);
      files = apply::file_set_from_json(set);
      if (auto found = set.find("events"); found != set.end() && found->is_array()) events = std::move(*found);
      if (auto found = set.find("vips"); found != set.end() && found->is_object()) vips = std::move(*found);
      if (auto found = set.find("observedAt"); found != set.end()) observed = *found;
    } catch (const std::exception& error) {
      tool::error("stdin: document " + std::to_string(document) + ": " + error.what());
      timer.restart(); // no timing line for a set not applied
      continue;
    }
    timer.mark("parse");
    apply::ApplyResult result;
    try {
      result = applier.apply(files);
    } catch (const std::exception& error) {
      // Never leave the node without its daemons over one bad set: report it, keep running.
      tool::error("stdin: document " + std::to_string(document) + ": " + error.what());
      timer.restart();
      continue;
    }
    timer.mark("apply");
    count(result, seen, observed);
    // A closed stdout loses the result lines, not the node: only the end of stdin (or SIGTERM)
    // stops the daemons.
    const std::size_t written = report(result, std::move(events), std::move(vips));
    timer.mark("report");
    timer.flush(written);
  }
  for (const auto& line : applier.stop_all()) tool::info(line);
  return tool::kExitOk;
}

// Stops the daemons an earlier run left running (their pid files in the runtime dir).
int run_stop(const NodeCommandOptions& options) {
  apply::NodeApplier applier(to_node_options(options));
  auto stopped = applier.stop_all(/*adopted=*/true);
  for (const auto& line : stopped) tool::info(line);
  if (stopped.empty()) tool::info("nothing running from " + options.runtime_dir);
  return tool::kExitOk;
}

} // namespace

void add_node_command(CLI::App& app, std::function<int()>& run) {
  static NodeCommandOptions options;
  auto* sub = app.add_subcommand(
      "node", "Check, install and reload the node's daemon configs (haproxy or nginx, keepalived)");
  sub->add_option("--from-dir", options.from_dir,
                  "Apply the files k8slb-render wrote into DIR once and exit (started daemons keep "
                  "running); without it, read NDJSON sets from stdin for ever")
      ->check(CLI::ExistingDirectory);
  sub->add_option("--config-dir", options.config_dir, "Where the daemons' config files are installed")
      ->capture_default_str();
  sub->add_option("--runtime-dir", options.runtime_dir, "Pid files, sockets, logs (as given to k8slb-render)")
      ->capture_default_str();
  sub->add_option("--proxy", options.proxy, "haproxy, nginx or kubeproxy (no proxy daemon)")
      ->check(CLI::IsMember({"haproxy", "nginx", "kubeproxy"}))
      ->capture_default_str();
  sub->add_flag("--no-keepalived", options.no_keepalived, "Do not manage keepalived");
  sub->add_flag("--stay", options.stay, "At the end of stdin keep supervising the daemons until SIGTERM");
  sub->add_flag("--stop", options.stop,
                "Stop the daemons running from --runtime-dir gracefully (keepalived first, then the "
                "proxy's soft stop) and exit")
      ->excludes("--from-dir");
  sub->add_option("--haproxy", options.haproxy, "haproxy binary")->capture_default_str();
  sub->add_option("--nginx", options.nginx, "nginx binary")->capture_default_str();
  sub->add_option("--keepalived", options.keepalived, "keepalived binary")->capture_default_str();
  sub->add_option("--haproxy-options", options.haproxy_options, "Extra haproxy arguments (HP_OPTIONS)");
  sub->add_option("--nginx-options", options.nginx_options, "Extra nginx arguments (NX_OPTIONS)");
  sub->add_option("--keepalived-options", options.keepalived_options, "Extra keepalived arguments (KA_OPTIONS)");
  sub->add_option("--check-timeout", options.check_timeout_s, "Seconds a config checker may take")
      ->capture_default_str();
  sub->add_option("--start-timeout", options.start_timeout_s, "Seconds a daemon may take to start or reload")
      ->capture_default_str();
  sub->add_option("--haproxy-max-old-workers", options.haproxy_max_old_workers,
                  "Before a reload, wait (bounded) while this many old HAProxy workers are still finishing")
      ->capture_default_str();
  k8slb::metrics::add_options(*sub, options.metrics);
  sub->callback([&run] {
    run = [] {
      if (options.stop) return run_stop(options);
      return options.from_dir.empty() ? run_stream(options) : run_once(options);
    };
  });
}

// keepalived's vrrp_script: exit 0 when the proxy answers, 1 (with the reason) when not.
void add_health_command(CLI::App& app, std::function<int()>& run) {
  static std::string proxy = "haproxy";
  static std::string runtime_dir = "/run/k8slb";
  static int budget_ms = 900;
  auto* sub = app.add_subcommand("health", "Exit 0 when this node's proxy answers (keepalived's track script)");
  sub->add_option("--proxy", proxy, "haproxy, nginx or kubeproxy (always healthy)")
      ->check(CLI::IsMember({"haproxy", "nginx", "kubeproxy"}))
      ->capture_default_str();
  sub->add_option("--runtime-dir", runtime_dir, "Sockets and pid files (as given to k8slb-apply node)")
      ->capture_default_str();
  sub->add_option("--timeout-ms", budget_ms, "Give up after this long (several tries)")
      ->check(CLI::Range(10, 60000))
      ->capture_default_str();
  sub->callback([&run] {
    run = [] {
      auto why = apply::proxy_health(k8slb::render::parse_proxy(proxy), runtime_dir,
                                     std::chrono::milliseconds(budget_ms));
      if (!why) return tool::kExitOk;
      tool::error(*why);
      return tool::kExitFailure;
    };
  });
}

} // namespace k8slb_apply
