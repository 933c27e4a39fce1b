// k8slb-apply events: posts the Events a node's pipeline carries (k8slb-render --events, passed
// on by k8slb-apply node) to the API, rate-limited, under names every node shares (one Event
// however many nodes see the same problem).
//
//   k8slb-watch ... | k8slb-render all --stream --events ... | k8slb-apply node ... |
//     k8slb-apply events
//
// Each input line is passed on to stdout without its "events" (the node's result line stays in
// the log). The API never holds the node up: lines are read as they come, and the Events of
// the newest line are written by a thread of their own (those of older lines are superseded).
#include "commands.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "k8slb/cluster.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/kube.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/node.hpp"
#include "k8slb/tool.hpp"

namespace k8slb_apply {

namespace {

namespace cluster = k8slb::cluster;
namespace kube = k8slb::kube;
namespace tool = k8slb::tool;
using k8slb::json;

struct EventsOptions {
  k8slb::metrics::Options metrics;
  std::string node; // NodeAssigned notices for the VIPs this node takes; empty: none
  int vip_poll_ms = 250;
  std::string kubeconfig;
  std::string context;
  bool dry_run = false;
  double event_interval = 300;
  double event_burst = 20;
  double event_qps = 1;
};

// What waits to be written: the newest line's Events (a later line replaces them), and the
// failover notices in order.
struct Pending {
  std::optional<json> problems;
  std::vector<json> takeovers;
};

class Mailbox {
public:
  void put(json events) {
    {
      std::lock_guard lock(mutex_);
      pending_.problems = std::move(events);
    }
    ready_.notify_one();
  }
  void add_takeovers(std::vector<json> events) {
    {
      std::lock_guard lock(mutex_);
      for (auto& event : events)
        if (pending_.takeovers.size() < 10000) pending_.takeovers.push_back(std::move(event));
    }
    ready_.notify_one();
  }
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_one();
  }
  // What to write next; nullopt when closed and nothing is left.
  std::optional<Pending> take() {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return pending_.problems || !pending_.takeovers.empty() || closed_; });
    if (!pending_.problems && pending_.takeovers.empty()) return std::nullopt;
    Pending out = std::move(pending_);
    pending_ = Pending{};
    return out;
  }

private:
  std::mutex mutex_;
  std::condition_variable ready_;
  Pending pending_;
  bool closed_ = false;
};

int run_events(const EventsOptions& options) {
  if (options.event_burst < 1) k8slb::fail("", "--event-burst", "must be at least 1");
  if (options.event_qps < 0) k8slb::fail("", "--event-qps", "must not be negative");
  k8slb::metrics::set_component("k8slb-apply events");
  k8slb::metrics::Publisher metrics(options.metrics);
  cluster::WriterOptions writer_options;
  writer_options.dry_run = options.dry_run;
  writer_options.instance = tool::instance_name();
  writer_options.shared_event_names = true;
  writer_options.event_limits.interval = cluster::Seconds(options.event_interval);
  writer_options.event_limits.burst = options.event_burst;
  writer_options.event_limits.per_second = options.event_qps;
  std::unique_ptr<kube::Client> client;
  bool posting = true;
  try {
    if (!options.dry_run) client = std::make_unique<kube::Client>(kube::load_config({options.kubeconfig, options.context}));
  } catch (const std::exception& error) {
    // Events are reports: without them the node still applies its configs.
    tool::error(fmt::format("{}: no Events are posted; passing the lines on", error.what()));
    posting = false;
  }
  auto log = [](const std::string& line) { tool::info(line); };
  cluster::ClusterWriter writer(client.get(), writer_options, log);
  // A node taking a VIP back says so again, unless within a second of its last notice (the
  // tracker reports only real takeovers; burst and qps bound a flapping VIP's notices).
  cluster::WriterOptions takeover_options = writer_options;
  takeover_options.event_limits.interval = cluster::Seconds(1);
  cluster::ClusterWriter takeover_writer(client.get(), takeover_options, log);

  Mailbox mailbox;
  std::thread poster([&] {
    while (std::optional<Pending> pending = mailbox.take()) {
      if (!posting) continue;
      try {
        if (!pending->takeovers.empty())
          takeover_writer.write(json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", std::move(pending->takeovers)}});
        if (pending->problems)
          writer.write(json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", std::move(*pending->problems)}});
      } catch (const std::exception& error) {
        tool::error(fmt::format("Events not written: {}", error.what()));
      }
    }
  });
  cluster::TakeoverTracker takeovers(options.node);
  std::mutex takeovers_mutex; // set_vips (reader) and taken (poller)
  std::atomic<bool> reading{true};
  std::thread vip_poller;
  if (!options.node.empty()) {
    vip_poller = std::thread([&] {
      while (reading) {
        try {
          auto held = k8slb::node::read_addresses();
          std::vector<json> taken;
          {
            std::lock_guard lock(takeovers_mutex);
            taken = takeovers.taken(held);
          }
          if (!taken.empty()) mailbox.add_takeovers(std::move(taken));
        } catch (const std::exception& error) {
          tool::warning(fmt::format("VIPs held: {}", error.what()));
        }
        for (int waited = 0; reading && waited < options.vip_poll_ms; waited += 50)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  }
  k8slb::JsonStreamReader reader(std::cin, "stdin");
  bool output_open = true;
  while (true) {
    std::optional<json> line;
    try {
      line = reader.next();
    } catch (const k8slb::Error& error) {
      tool::error(error.what()); // one bad line: the next ones still count
      continue;
    }
    if (!line) break;
    if (!line->is_object()) {
      tool::error(fmt::format("stdin: document {}: expected an object (a k8slb-apply node result line); skipped",
                              reader.count()));
      continue;
    }
    auto events = line->find("events");
    if (events != line->end() && events->is_array()) {
      if (tool::enabled(tool::Level::debug))
        tool::debug(fmt::format("line {}: {} Event(s) to post", reader.count(), events->size()));
      // k8slb-apply node's own Events (ConfigRejected) do not know the node: this is it.
      if (!options.node.empty())
        for (auto& event : *events)
          if (event.is_object() && !(event.contains("source") && event["source"].is_object() &&
                                     event["source"].contains("host")))
            event["source"]["host"] = options.node;
      mailbox.put(std::move(*events));
      line->erase("events");
    }
    if (auto vips = line->find("vips"); vips != line->end()) {
      if (vips->is_object()) {
        std::lock_guard lock(takeovers_mutex);
        takeovers.set_vips(std::move(*vips));
      }
      line->erase("vips");
    }
    if (output_open) output_open = tool::write_line(line->dump(-1, ' ', false, json::error_handler_t::replace));
  }
  reading = false;
  if (vip_poller.joinable()) vip_poller.join();
  mailbox.close();
  poster.join();
  return tool::kExitOk;
}

} // namespace

void add_events_command(CLI::App& app, std::function<int()>& run) {
  auto options = std::make_shared<EventsOptions>();
  auto* sub = app.add_subcommand(
      "events", "Post the Events in k8slb-apply node's result lines (stdin) to the API, one per problem "
                "however many nodes report it; pass the lines on without them");
  sub->add_option("--node", options->node,
                  "This node: when it takes a VIP (the address appears on its interfaces), a Normal "
                  "Event NodeAssigned on the VIP's Services says so (the lines' \"vips\")")
      ->envname("NODE_NAME");
  sub->add_option("--vip-poll-ms", options->vip_poll_ms, "How often the node's addresses are read")
      ->check(CLI::Range(50, 60000))
      ->capture_default_str();
  sub->add_option("--kubeconfig", options->kubeconfig,
                  "kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)");
  sub->add_option("--context", options->context, "kubeconfig context (default: current-context)");
  sub->add_flag("--dry-run", options->dry_run,
                "Send nothing: print each request on stdout as JSON {method, path, body}");
  sub->add_option("--event-interval", options->event_interval,
                  "Seconds: the same Event is written at most once per interval; repeats raise its count")
      ->capture_default_str();
  sub->add_option("--event-burst", options->event_burst, "Event writes allowed at once (token bucket)")
      ->capture_default_str();
  sub->add_option("--event-qps", options->event_qps, "Event writes per second after the burst")
      ->capture_default_str();
  k8slb::metrics::add_options(*sub, options->metrics);
  sub->callback([&run, options] { run = [options] { return run_events(*options); }; });
}

} // namespace k8slb_apply
