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

#include <condition_variable>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "k8slb/cluster.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/kube.hpp"
#include "k8slb/tool.hpp"

namespace k8slb_apply {

namespace {

namespace cluster = k8slb::cluster;
namespace kube = k8slb::kube;
namespace tool = k8slb::tool;
using k8slb::json;

struct EventsOptions {
  std::string kubeconfig;
  std::string context;
  bool dry_run = false;
  double event_interval = 300;
  double event_burst = 20;
  double event_qps = 1;
};

// The newest Events waiting to be written (a later line replaces them).
class Mailbox {
public:
  void put(json events) {
    {
      std::lock_guard lock(mutex_);
      pending_ = std::move(events);
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
  // The next Events to write; nullopt when closed and nothing is left.
  std::optional<json> take() {
    std::unique_lock lock(mutex_);
    ready_.wait(lock, [&] { return pending_.has_value() || closed_; });
    std::optional<json> out = std::move(pending_);
    pending_.reset();
    return out;
  }

private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::optional<json> pending_;
  bool closed_ = false;
};

int run_events(const EventsOptions& options) {
  if (options.event_burst < 1) k8slb::fail("", "--event-burst", "must be at least 1");
  if (options.event_qps < 0) k8slb::fail("", "--event-qps", "must not be negative");
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
  cluster::ClusterWriter writer(client.get(), writer_options, [](const std::string& line) { tool::info(line); });

  Mailbox mailbox;
  std::thread poster([&] {
    while (std::optional<json> events = mailbox.take()) {
      if (!posting) continue;
      try {
        writer.write(json{{"apiVersion", "v1"}, {"kind", "List"}, {"items", std::move(*events)}});
      } catch (const std::exception& error) {
        tool::error(fmt::format("Events not written: {}", error.what()));
      }
    }
  });
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
    if (!line->is_object()) continue;
    auto events = line->find("events");
    if (events != line->end() && events->is_array()) {
      mailbox.put(std::move(*events));
      line->erase("events");
    }
    if (output_open) output_open = tool::write_line(line->dump(-1, ' ', false, json::error_handler_t::replace));
  }
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
  sub->callback([&run, options] { run = [options] { return run_events(*options); }; });
}

} // namespace k8slb_apply
