// k8slb-apply cluster: writes what k8slb-allocate decided to the API: each Service's
// status.loadBalancer.ingress (status subresource, merge patch with a resourceVersion
// precondition) and the Events, rate-limited. With --lease-name, only while holding the Lease.
//
// Leader election runs in two steps (see docs/cluster.md):
//   k8slb-apply cluster --lease-name N --acquire-only   blocks until this identity holds the
//                                                        Lease, then exits 0 (a gate);
//   k8slb-watch ... | k8slb-allocate | k8slb-apply cluster --lease-name N
//                                                        renews it and writes while leader.
// So the first document a new leader reads comes from a list made after it became leader. A
// pipeline started without holding the Lease acquires it and exits 4: restart it.
#include "commands.hpp"

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>

#include "k8slb/cluster.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/kube.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/tool.hpp"

namespace k8slb_apply {

namespace {

namespace cluster = k8slb::cluster;

namespace kube = k8slb::kube;
namespace tool = k8slb::tool;

constexpr int kExitRestart = 4; // acquired the lease in a running pipeline: restart it

struct ClusterOptions {
  k8slb::metrics::Options metrics;
  std::string kubeconfig;
  std::string context;
  bool dry_run = false;
  std::string lease_name;
  std::string lease_namespace;
  std::string identity;
  double lease_duration = 15;
  double renew_deadline = 10;
  double retry_period = 2;
  bool acquire_only = false;
  double event_interval = 300;
  double event_burst = 100;
  double event_qps = 5;
};

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

void log_line(const std::string& line) { tool::info(line); }

[[noreturn]] void exit_now(int code) {
  std::fflush(nullptr);
  std::_Exit(code);
}

// SIGTERM / SIGINT are taken by a thread of their own (sigwait), so that a write in flight
// finishes and the lease is released before the process ends.
sigset_t termination_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

kube::Config lease_client_config(kube::Config config, const cluster::ElectionConfig& election) {
  // A lease request that hangs must not outlive the renew deadline; no retries inside a
  // round: the next round is the retry.
  config.retry.max_attempts = 1;
  auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(election.renew_deadline / 2);
  config.request_timeout = std::max(std::chrono::milliseconds(500), timeout);
  config.connect_timeout = std::min(config.connect_timeout, config.request_timeout);
  return config;
}

int run_cluster(const ClusterOptions& options) {
  // No fastbins: freeing a document's tree (10,000 Services: about a million small blocks)
  // otherwise fills them, and glibc's consolidation of them costs as much as the parse
  // (measured: docs/cluster.md, "Figures").
  ::mallopt(M_MXFAST, 0);
  std::string instance = tool::instance_name();
  cluster::WriterOptions writer_options;
  writer_options.dry_run = options.dry_run;
  writer_options.instance = instance;
  writer_options.event_limits.interval = cluster::Seconds(options.event_interval);
  writer_options.event_limits.burst = options.event_burst;
  writer_options.event_limits.per_second = options.event_qps;
  if (options.event_burst < 1) k8slb::fail("", "--event-burst", "must be at least 1");
  if (options.event_qps < 0) k8slb::fail("", "--event-qps", "must not be negative");

  bool elect = !options.lease_name.empty() && !options.dry_run;
  if (!options.lease_name.empty() && options.dry_run) {
    tool::warning("--dry-run: no leader election, nothing is written");
  }
  if (options.acquire_only && !elect) k8slb::fail("", "--acquire-only", "needs --lease-name (and no --dry-run)");

  // Block the termination signals in every thread; the signal thread takes them.
  sigset_t signals = termination_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  k8slb::metrics::set_component("k8slb-apply cluster");
  k8slb::metrics::Publisher metrics(options.metrics); // its threads start with the signals blocked

  std::unique_ptr<kube::Client> client;
  std::unique_ptr<kube::Client> lease_client;
  std::unique_ptr<cluster::Elector> elector;
  cluster::ElectionConfig election;
  if (!options.dry_run) {
    kube::Config config = kube::load_config({options.kubeconfig, options.context});
    if (elect) {
      election.identity = options.identity.empty() ? instance : options.identity;
      election.lease_name = options.lease_name;
      election.lease_namespace = !options.lease_namespace.empty() ? options.lease_namespace
                                 : !env("POD_NAMESPACE").empty() ? env("POD_NAMESPACE")
                                                                 : "k8slb-system";
      election.lease_duration = cluster::Seconds(options.lease_duration);
      election.renew_deadline = cluster::Seconds(options.renew_deadline);
      election.retry_period = cluster::Seconds(options.retry_period);
      cluster::validate(election);
      lease_client = std::make_unique<kube::Client>(lease_client_config(config, election));
      elector = std::make_unique<cluster::Elector>(*lease_client, election, log_line);
    }
    client = std::make_unique<kube::Client>(config);
  }

  std::atomic<bool> stopping{false};
  std::timed_mutex writing; // held while a document is written
  std::thread signal_thread([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    stopping = true;
    // Let the request in flight finish (the writer stops before its next one), then give up
    // the lease so that another replica takes over at once.
    bool idle = writing.try_lock_for(std::chrono::seconds(35));
    if (elector) elector->release();
    if (idle) writing.unlock();
    exit_now(tool::kExitOk);
  });
  signal_thread.detach();

  if (options.acquire_only) {
    log_line("lease " + election.lease_namespace + "/" + election.lease_name + ": waiting as " +
             election.identity);
    bool acquired = elector->acquire(stopping);
    return acquired ? tool::kExitOk : tool::kExitFailure;
  }

  std::jthread renewer;
  if (elector) {
    // A failed request is not a lost lease: retried within the renew deadline, as a leader's
    // renewal is. Only another holder, or the deadline passing, ends the claim.
    std::optional<cluster::Action> resumed = elector->resume(stopping);
    if (!resumed) {
      if (stopping) return tool::kExitOk;
      tool::error("could not renew the lease within the renew deadline: exiting so that the "
                  "pipeline restarts");
      return tool::kExitFailure;
    }
    cluster::Action first = *resumed;
    if (first != cluster::Action::renew) {
      if (first != cluster::Action::create && first != cluster::Action::take) {
        log_line("lease " + election.lease_namespace + "/" + election.lease_name +
                 ": not the leader; waiting as " + election.identity);
        if (!elector->acquire(stopping)) return tool::kExitFailure;
      }
      tool::warning("acquired the lease while the pipeline was running: its input may predate "
                    "the acquisition; exiting so that it restarts from a fresh list (run "
                    "--acquire-only first)");
      return kExitRestart;
    }
    renewer = std::jthread([&](std::stop_token stop) {
      while (!stop.stop_requested()) {
        auto until = cluster::Clock::now() +
                     std::chrono::duration_cast<cluster::Clock::duration>(elector->next_round_in());
        while (!stop.stop_requested() && cluster::Clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        if (stop.stop_requested() || stopping) return;
        if (elector->try_acquire_or_renew() == cluster::Action::stop) {
          tool::error("lost the lease: exiting so that the pipeline restarts");
          exit_now(tool::kExitFailure);
        }
      }
    });
  }

  auto may_write = [&]() { return !stopping && (!elector || elector->leading()); };
  cluster::ClusterWriter writer(client.get(), writer_options, log_line, may_write);
  k8slb::JsonStreamReader reader(std::cin, "stdin");
  const bool timing = std::getenv("K8SLB_TIMING") != nullptr; // one line per document on stderr
  auto& status_latency = k8slb::metrics::process_registry().histogram(
      "k8slb_status_write_duration_seconds",
      "From a change seen by k8slb-watch to the status writes it caused (documents that wrote a status).",
      k8slb::metrics::duration_buckets());
  bool stale = false;                // the documents lag behind our own writes ...
  cluster::TimePoint stale_since{};  // ... since then
  while (true) {
    // Failed status writes are tried again when due, between documents (cluster.hpp).
    while (auto due = writer.next_retry()) {
      if (reader.ready() ||
          tool::stdin_readable_within(std::chrono::duration_cast<std::chrono::milliseconds>(*due - cluster::Clock::now())))
        break;
      std::unique_lock lock(writing);
      if (!may_write()) break;
      try {
        writer.retry_due();
      } catch (const k8slb::Error&) {
        break; // stopping, or no longer the leader: as for a document, below
      }
    }
    std::optional<k8slb::json> document = reader.next();
    if (!document) break;
    std::unique_lock lock(writing);
    if (!may_write()) {
      if (stopping) break;
      tool::error("no longer the leader: exiting so that the pipeline restarts");
      return tool::kExitFailure;
    }
    try {
      const auto received = std::chrono::steady_clock::now();
      const auto seen = k8slb::observed_at(*document);
      cluster::WriteSummary summary = writer.write(*document);
      if (seen && summary.written > 0) status_latency.observe(std::chrono::duration<double>(std::chrono::system_clock::now() - *seen).count());
      document.reset();
      ::malloc_trim(0); // the document is freed: do not keep the heap at its high-water mark
      if (timing)
        log_line(fmt::format("timing: document written in {:.1f} ms ({} status, {} Events)",
                             std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - received).count(),
                             summary.written, summary.events_created));
      auto now = cluster::Clock::now();
      if (!summary.stale) {
        stale = false;
      } else if (!stale) {
        stale = true;
        stale_since = now;
      } else if (now - stale_since > std::chrono::seconds(30)) {
        tool::error("the input has lagged behind our own writes for 30 s: exiting so that the "
                    "pipeline restarts from a fresh list");
        return tool::kExitFailure;
      }
    } catch (const k8slb::Error& error) {
      if (stopping) break;
      throw;
    }
  }
  if (stopping) {
    // The signal thread releases the lease and ends the process.
    std::this_thread::sleep_for(std::chrono::seconds(60));
  }
  return tool::kExitOk;
}

} // namespace

void add_cluster_command(CLI::App& app, std::function<int()>& run) {
  auto options = std::make_shared<ClusterOptions>();
  auto* sub = app.add_subcommand(
      "cluster",
      "Write Service status (status.loadBalancer.ingress) and Events from k8slb-allocate's "
      "output (stdin, one JSON document per line) to the API");
  sub->add_option("--kubeconfig", options->kubeconfig,
                  "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)");
  sub->add_option("--context", options->context, "kubeconfig context (default: current-context)");
  sub->add_flag("--dry-run", options->dry_run,
                "Send nothing: print each request on stdout as JSON {method, path, body}");
  sub->add_option("--lease-name", options->lease_name,
                  "Elect a leader with this coordination.k8s.io Lease; write only while holding it");
  sub->add_option("--lease-namespace", options->lease_namespace,
                  "Namespace of the Lease (default: $POD_NAMESPACE, else k8slb-system)");
  sub->add_option("--identity", options->identity,
                  "holderIdentity of this replica (default: $POD_NAME, else the host name)");
  sub->add_option("--lease-duration", options->lease_duration,
                  "Seconds a lease is valid without renewal (whole seconds)")
      ->capture_default_str();
  sub->add_option("--renew-deadline", options->renew_deadline,
                  "Seconds the leader keeps writing without a successful renewal; then it exits")
      ->capture_default_str();
  sub->add_option("--retry-period", options->retry_period,
                  "Seconds between renewals (leader) and attempts (candidate)")
      ->capture_default_str();
  sub->add_flag("--acquire-only", options->acquire_only,
                "Block until this identity holds the lease, then exit 0 (read no input)");
  sub->add_option("--event-interval", options->event_interval,
                  "Seconds: the same Event (Service, reason, message) is written at most once per "
                  "interval; repeats raise its count")
      ->capture_default_str();
  sub->add_option("--event-burst", options->event_burst, "Event writes allowed at once (token bucket)")
      ->capture_default_str();
  sub->add_option("--event-qps", options->event_qps, "Event writes per second after the burst")
      ->capture_default_str();
  k8slb::metrics::add_options(*sub, options->metrics);
  sub->callback([&run, options] { run = [options] { return run_cluster(*options); }; });
}

} // namespace k8slb_apply
