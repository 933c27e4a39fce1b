// k8slb-watch: the cluster as a stream of snapshots. Lists and watches the named resources
// and prints their state as one `v1 List` per line: once at the start, then after each
// change (at most one per --debounce window), only when the content changed. With --events,
// the List once, then each change as a watch event line ({"type":"MODIFIED","object":...}),
// and the whole List again every --resync.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <malloc.h>
#include <poll.h>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "k8slb/error.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/kube.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/tool.hpp"

namespace {

using namespace std::chrono_literals;
namespace kube = k8slb::kube;

struct Options {
  k8slb::metrics::Options metrics;
  std::string kubeconfig;
  std::string context;
  std::string ns;
  std::string selector;
  std::string node_selector;
  std::string lb_class;
  std::string debounce = "50ms";
  std::string resync = "0";
  bool once = false;
  bool events = false;
  std::vector<std::string> resources;
};

std::atomic<bool> g_terminate{false};

// True when the reader of stdout went away (a pipe whose other end is closed), so that
// `k8slb-watch services | head -1` ends even when nothing changes.
bool stdout_closed() {
  pollfd fd{1, 0, 0};
  return ::poll(&fd, 1, 0) == 1 && (fd.revents & (POLLERR | POLLHUP | POLLNVAL));
}
extern "C" void on_signal(int) { g_terminate = true; }

// Changes from the caches' threads, waiting for the main loop.
struct Inbox {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::pair<kube::ResourceKind, std::vector<kube::Change>>> batches;
  std::string error;
};

// --events: after the first List, every change to the view as a watch event line, at once,
// and the whole List again every --resync (0: never), so that a reader that missed something
// starts again from the truth (as an informer's resync).
template <typename Drain, typename Print>
int print_events(std::chrono::milliseconds resync, Inbox& inbox, Drain& drain, std::vector<std::string>*& events,
                 Print& print) {
  auto next_resync = std::chrono::steady_clock::now() + resync;
  std::vector<std::string> lines;
  events = &lines;
  while (!g_terminate && !stdout_closed()) {
    {
      std::unique_lock lock(inbox.mutex);
      inbox.cv.wait_for(lock, 200ms, [&] { return !inbox.batches.empty() || !inbox.error.empty(); });
    }
    const auto now = std::chrono::steady_clock::now();
    drain();
    for (const std::string& line : lines)
      if (!k8slb::tool::write_line(line)) return k8slb::tool::kExitOk;
    lines.clear();
    if (resync.count() > 0 && now >= next_resync) {
      if (!print(now, std::chrono::system_clock::now())) break;
      next_resync = now + resync;
    }
  }
  return k8slb::tool::kExitOk;
}

int run(const Options& options) {
  // No fastbins: freeing a document's tree (10,000 Services: about a million small blocks)
  // otherwise fills them, and glibc's consolidation of them costs as much as the parse
  // (measured: docs/cluster.md, "Figures").
  ::mallopt(M_MXFAST, 0);
  k8slb::metrics::Publisher metrics(options.metrics);
  const auto debounce = kube::parse_duration(options.debounce, "--debounce");
  const auto resync = kube::parse_duration(options.resync, "--resync");
  std::vector<kube::ResourceRef> refs;
  for (const auto& name : options.resources) refs.push_back(kube::parse_resource(name));

  kube::Client client(kube::load_config({options.kubeconfig, options.context}));
  Inbox inbox;
  auto on_change = [&inbox](const kube::ResourceKind& kind, const std::vector<kube::Change>& changes) {
    std::lock_guard lock(inbox.mutex);
    inbox.batches.emplace_back(kind, changes);
    inbox.cv.notify_one();
  };
  auto on_error = [&inbox](const std::string& message) {
    std::lock_guard lock(inbox.mutex);
    if (inbox.error.empty()) inbox.error = message;
    inbox.cv.notify_one();
  };

  std::vector<std::unique_ptr<kube::Cache>> caches;
  for (auto ref : refs) {
    kube::CacheOptions cache;
    if (ref.kind.namespaced && ref.ns.empty()) ref.ns = options.ns;
    if (ref.name.empty())
      cache.label_selector = ref.kind.plural == "nodes" ? options.node_selector : options.selector;
    cache.resource = ref;
    caches.push_back(std::make_unique<kube::Cache>(client, cache, on_change, on_error,
                                                   [](const std::string& message) { k8slb::tool::warning(message); }));
  }
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  for (auto& cache : caches) cache->start(!options.once);

  kube::View view({options.lb_class});
  std::string printed;
  std::vector<std::string>* events = nullptr; // set after the first List with --events
  auto drain = [&] {
    std::vector<std::pair<kube::ResourceKind, std::vector<kube::Change>>> batches;
    {
      std::lock_guard lock(inbox.mutex);
      batches.swap(inbox.batches);
      if (!inbox.error.empty()) throw k8slb::Error(inbox.error);
    }
    bool changed = false;
    for (const auto& [kind, changes] : batches) changed |= view.apply(kind, changes, events);
    return changed;
  };
  // K8SLB_TIMING=1: one line per document on stderr (docs/cluster.md, "Figures").
  const bool timing = std::getenv("K8SLB_TIMING") != nullptr;
  auto print = [&](std::chrono::steady_clock::time_point since, std::chrono::system_clock::time_point seen) {
    bool written = k8slb::tool::write_line(view.document(k8slb::observed_at_text(seen)));
    // The list, the watch events and the superseded texts are freed by now: give the memory
    // back rather than keep the heap at its high-water mark.
    ::malloc_trim(0);
    if (timing)
      k8slb::tool::info(fmt::format("timing: document of {} objects, {} bytes, {:.1f} ms after the first change",
                                    view.size(), printed.size(),
                                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count()));
    return written;
  };
  const auto started = std::chrono::steady_clock::now();
  const auto started_wall = std::chrono::system_clock::now();
  drain();
  printed = view.document();
  if (!print(started, started_wall) || options.once) return k8slb::tool::kExitOk;
  std::optional<std::chrono::steady_clock::time_point> last_printed = std::chrono::steady_clock::now();
  if (options.events) return print_events(resync, inbox, drain, events, print);

  while (!g_terminate && !stdout_closed()) {
    {
      std::unique_lock lock(inbox.mutex);
      inbox.cv.wait_for(lock, 200ms, [&] { return !inbox.batches.empty() || !inbox.error.empty(); });
      if (inbox.batches.empty() && inbox.error.empty()) continue;
    }
    // At most one document per debounce window (kube::print_at): a lone change goes out at
    // once, changes within the window of the last document wait for its end, coalesced.
    const auto first_change = std::chrono::steady_clock::now();
    const auto first_change_wall = std::chrono::system_clock::now();
    const auto deadline = kube::print_at(first_change, last_printed, debounce);
    while (!g_terminate && std::chrono::steady_clock::now() < deadline) {
      std::unique_lock lock(inbox.mutex);
      if (!inbox.error.empty()) break;
      inbox.cv.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + 200ms));
    }
    if (!drain()) continue;
    std::string document = view.document();
    if (document == printed) continue;
    printed = std::move(document);
    if (!print(first_change, first_change_wall)) break;
    last_printed = std::chrono::steady_clock::now();
  }
  return k8slb::tool::kExitOk;
}

} // namespace

int main(int argc, char** argv) {
  k8slb::tool::set_program("k8slb-watch");
  CLI::App app{"Print the state of Kubernetes resources as v1 List documents, one per change",
               "k8slb-watch"};
  app.set_version_flag("--version", std::string("k8slb-watch ") + K8SLB_VERSION);
  Options options;
  app.add_option("--kubeconfig", options.kubeconfig,
                 "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)");
  app.add_option("--context", options.context, "kubeconfig context (default: current-context)");
  app.add_option("-n,--namespace", options.ns,
                 "only this namespace for namespaced resources named without one (default: all)");
  app.add_option("-l,--selector", options.selector, "label selector for the resources (not nodes)");
  app.add_option("--node-selector", options.node_selector, "label selector for nodes, e.g. type=loadBalancer");
  app.add_option("--lb-class", options.lb_class,
                 "spec.loadBalancerClass of the Services to pass on (default: Services without a class)");
  app.add_option("--debounce", options.debounce, "at most one document per window; a lone change goes out at once (e.g. 200ms, 1s)")
      ->capture_default_str();
  app.add_flag("--once", options.once, "print the current state once and exit");
  auto* events = app.add_flag("--events", options.events,
                              "after the first List, print each change as a watch event line "
                              "({\"type\":\"ADDED|MODIFIED|DELETED\",\"object\":...}) at once");
  app.add_option("--resync", options.resync, "with --events: print the whole List again every DURATION (0: never)")
      ->needs(events)
      ->capture_default_str();
  k8slb::metrics::add_options(app, options.metrics);
  app.add_option("resources", options.resources,
                 "services, endpointslices, nodes, configmaps, configmap/NAMESPACE/NAME, ...")
      ->required();
  return k8slb::tool::run_main(app, argc, argv, [&] { return run(options); });
}
