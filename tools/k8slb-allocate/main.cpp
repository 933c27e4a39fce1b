// k8slb-allocate: assigns load-balancer IPs to Services.
//
//   kubectl get svc -A -o json | k8slb-allocate --config pools.json
//   k8slb-watch services configmap/k8slb-system/global | k8slb-allocate | k8slb-apply cluster
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <optional>
#include <utility>

#include <malloc.h>

#include <fmt/format.h>

#include "k8slb/allocate.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"
#include "k8slb/render.hpp"
#include "k8slb/render_model.hpp"
#include "k8slb/tool.hpp"
#include "report.hpp"

namespace {

using k8slb::json;

struct Options {
  k8slb::metrics::Options metrics;
  std::vector<std::string> files;    // empty: a stream of documents on stdin
  std::string config_file;           // empty: the ConfigMap in the input
  std::string config_map = "k8slb-system/global";
  std::string ip_mode = "Proxy";
  std::string lb_class;
  std::string proxy; // haproxy | nginx | kubeproxy: also check what that proxy can carry
  bool pretty = false;
  bool lint = false;
  std::string report; // status | pools (kubectl k8slb)
  std::string output = "table";
};

// What the node side will refuse (a port the proxy cannot carry, an annotation outside its
// grammar): found here too, so the watcher can put it on the Service as a Warning Event. The
// Services are moved into the proxy's input (they are not needed after publish): copying
// 10,000 of them per document cost more than the check. Each problem comes with its Service.
std::vector<std::pair<k8slb::Problem, k8slb::model::Service>>
proxy_problems(std::vector<k8slb::model::Service> services, const std::vector<k8slb::allocate::Result>& results,
               const k8slb::pool::Config& config, const std::string& proxy) {
  k8slb::render::Input input;
  input.config = config;
  input.settings.proxy = k8slb::render::parse_proxy(proxy);
  std::map<std::string, const k8slb::allocate::Result*> result_by_key;
  for (const auto& result : results) result_by_key.emplace(result.service, &result);
  for (auto& service : services) {
    auto it = result_by_key.find(service.key());
    if (it == result_by_key.end() || it->second->ips.empty()) continue;
    service.ingress_ips.clear();
    for (const auto& address : it->second->ips) service.ingress_ips.push_back(address.to_string());
    input.services.push_back(std::move(service));
  }
  std::vector<std::pair<k8slb::Problem, k8slb::model::Service>> out;
  auto problems = k8slb::render::plan_proxy(input).problems;
  if (problems.empty()) return out;
  std::map<std::string, const k8slb::model::Service*> service_by_key;
  for (const auto& service : input.services) service_by_key.emplace(service.key(), &service);
  for (auto& problem : problems) {
    auto result = result_by_key.find(problem.object);
    if (result != result_by_key.end() && result->second->problem &&
        result->second->problem->field == problem.field)
      continue; // the allocator reported it already (k8slb/validate.hpp: the same checks)
    auto it = service_by_key.find(problem.object);
    if (it != service_by_key.end()) out.emplace_back(std::move(problem), *it->second);
    else out.emplace_back(std::move(problem), k8slb::model::Service{});
  }
  return out;
}

// Reports each result's problem and Warning notes on stderr; with a refused ConfigMap (the
// last good config in use), a failed Service's problem says so. True when every Service was
// served.
bool report_results(std::vector<k8slb::allocate::Result>& results, bool config_stale, const Options& options) {
  bool ok = true;
  for (auto& result : results) {
    for (const auto& note : result.notes)
      if (note.type == "Warning") k8slb::tool::warning(note.problem.to_string());
    if (!result.problem) continue;
    if (config_stale && result.outcome == k8slb::allocate::Outcome::failed)
      result.problem->message += fmt::format(" (the ConfigMap {} is invalid; the last good config is in use)",
                                             options.config_map);
    if (result.outcome == k8slb::allocate::Outcome::failed) {
      k8slb::tool::error(result.problem->to_string());
      ok = false;
    } else {
      k8slb::tool::warning(result.problem->to_string()); // served, with a caveat
    }
  }
  return ok;
}

k8slb::allocate::Options allocate_options_for(const Options& options) {
  k8slb::allocate::Options allocate_options{options.lb_class};
  allocate_options.families_bridged = options.proxy != "kubeproxy" && options.ip_mode != "VIP";
  return allocate_options;
}

// Adds a Warning Event for each problem the proxy would have with a Service (--proxy).
void add_proxy_problems(json& document, std::vector<k8slb::model::Service> services,
                        const std::vector<k8slb::allocate::Result>& results, const k8slb::pool::Config& config,
                        const Options& options) {
  if (options.proxy.empty()) return;
  for (const auto& [problem, service] : proxy_problems(std::move(services), results, config, options.proxy)) {
    k8slb::tool::warning(problem.to_string());
    if (!service.name.empty())
      document["items"].push_back(k8slb::allocate::make_event(service, problem.reason, "Warning", problem.to_string()));
  }
}

// Allocates one input document's objects; returns the published document and whether every
// object was served. `config` is the last good config (from --config or an earlier ConfigMap).
// A ConfigMap that cannot be read gets a Warning Event naming the field; without a last good
// config, `streaming` passes the document on with a Warning Event on each Service waiting for
// an IP (otherwise: Error, nothing written).
std::pair<json, bool> allocate_document(k8slb::Objects objects, const Options& options,
                                        std::optional<k8slb::pool::Config>& config, bool streaming,
                                        k8slb::allocate::Feed* feed = nullptr) {
  // Events in the input are an earlier run's output (its output fed back in): they are not
  // passed on, or they would be posted again.
  std::erase_if(objects.items, [](const json& item) { return item["kind"] == "Event"; });
  auto snapshot = k8slb::model::make_snapshot(std::move(objects.items), options.config_map);
  bool ok = true;
  for (const auto& error : objects.errors) {
    k8slb::tool::error(error);
    ok = false;
  }
  std::vector<json> config_events;
  std::string config_error; // why the ConfigMap in this document cannot be used
  if (options.config_file.empty()) {
    if (snapshot.config_map) {
      try {
        config = k8slb::pool::parse_config_map(*snapshot.config_map);
      } catch (const k8slb::Error& e) {
        // A broken config never replaces a good one: keep allocating with the last good one.
        config_error = e.what();
        std::string consequence = config ? "keeping the last good config" : "no IP is assigned until it is fixed";
        k8slb::tool::error(fmt::format("{} ({})", config_error, consequence));
        config_events.push_back(k8slb::allocate::make_object_event(
            *snapshot.config_map, "InvalidConfig", "Warning", fmt::format("{}; {}", config_error, consequence)));
        ok = false;
      }
    }
    if (!config) {
      std::string why = config_error.empty()
                            ? fmt::format("no config: the ConfigMap {} is not in the input", options.config_map)
                            : "no valid config: " + config_error;
      if (!streaming)
        throw k8slb::Error(config_error.empty() ? fmt::format("no config: give --config FILE or include the "
                                                              "ConfigMap {} in the input",
                                                              options.config_map)
                                                : why);
      // Nothing is allocated and nothing released: the Services pass on unchanged, and those
      // waiting for an IP are told why they get none.
      if (config_error.empty()) k8slb::tool::error(why);
      for (json& event : k8slb::allocate::no_config_events(snapshot.services, why, {options.lb_class}))
        config_events.push_back(std::move(event));
      k8slb::allocate::record_metrics(nullptr, k8slb::allocate::Tally{}, false);
      if (feed) feed->load(snapshot.items, std::move(snapshot.services), std::nullopt, !config_error.empty());
      json document = {{"apiVersion", "v1"}, {"kind", "List"}, {"items", std::move(snapshot.items)}};
      for (json& event : config_events) document["items"].push_back(std::move(event));
      return {std::move(document), false};
    }
  }
  for (const auto& error : snapshot.errors) {
    k8slb::tool::error(error);
    ok = false;
  }
  const k8slb::allocate::Options allocate_options = allocate_options_for(options);
  auto results = feed ? feed->load(snapshot.items, snapshot.services, config, !config_error.empty())
                      : k8slb::allocate::allocate(snapshot.services, *config, allocate_options);
  ok = report_results(results, !config_error.empty(), options) && ok;
  k8slb::allocate::record_metrics(&*config, results, !config_error.empty());
  k8slb::allocate::PublishOptions publish_options;
  publish_options.ip_mode = options.ip_mode == "none" ? "" : options.ip_mode;
  json document =
      k8slb::allocate::publish(std::move(snapshot.items), snapshot.services, results, publish_options);
  for (json& event : config_events) document["items"].push_back(std::move(event));
  add_proxy_problems(document, std::move(snapshot.services), results, *config, options);
  if (feed) feed->published(document);
  return {std::move(document), ok};
}

// Watch events (k8slb-watch --events) after a List: what they changed, as one document
// holding only the Services with something to write and their Events; nullopt when nothing
// is to be written.
std::optional<json> publish_changes(k8slb::allocate::Feed& feed, const Options& options) {
  auto change = feed.take();
  if (!change) return std::nullopt;
  report_results(change->results, feed.config_stale(), options);
  k8slb::allocate::PublishOptions publish_options;
  publish_options.ip_mode = options.ip_mode == "none" ? "" : options.ip_mode;
  json document = k8slb::allocate::publish(std::move(change->items), change->services, change->results, publish_options);
  for (json& event : change->events) document["items"].push_back(std::move(event));
  if (feed.config()) add_proxy_problems(document, std::move(change->services), change->results, *feed.config(), options);
  if (!k8slb::allocate::Feed::trim(document)) return std::nullopt;
  feed.published(document);
  return document;
}

// One watch event into the feed. A problem with it is reported (naming the event) and the
// stream goes on; the events already read are published all the same.
void apply_event(k8slb::allocate::Feed& feed, const json& event, const std::string& where) {
  if (!feed.loaded())
    throw k8slb::Error(k8slb::list_first_error(where));
  try {
    feed.apply(event);
  } catch (const k8slb::Error& e) {
    k8slb::tool::error(fmt::format("{}: {}", where, e.what()));
  }
}

int run(const Options& options) {
  // No fastbins: freeing a document's tree (10,000 Services: about a million small blocks)
  // otherwise fills them, and glibc's consolidation of them costs as much as the parse
  // (measured: docs/cluster.md, "Figures").
  ::mallopt(M_MXFAST, 0);
  k8slb::metrics::Publisher metrics(options.metrics);
  std::optional<k8slb::pool::Config> config;
  if (!options.config_file.empty()) config = k8slb::pool::load_config_file(options.config_file);
  int indent = options.pretty ? 2 : -1;
  if (!options.files.empty()) {
    auto [document, ok] = allocate_document(k8slb::read_objects(options.files), options, config, false);
    k8slb::tool::write_line(document.dump(indent, ' ', false, json::error_handler_t::replace));
    return ok ? k8slb::tool::kExitOk : k8slb::tool::kExitPartial;
  }
  // Streaming: one output line per input document, flushed, until end of input. A document
  // that cannot be read or allocated is reported and the stream goes on.
  k8slb::JsonStreamReader reader(std::cin, "<stdin>");
  bool all_ok = true;
  bool written_any = false;
  k8slb::tool::StageTimer timer;
  // A --config file wins over the ConfigMap, in events as in Lists.
  k8slb::allocate::Feed feed(options.config_file.empty() ? options.config_map : "", allocate_options_for(options));
  bool metrics_due = false;
  std::optional<std::chrono::system_clock::time_point> batch_started; // the first event of a burst read
  auto metrics_recorded = std::chrono::steady_clock::now();
  while (true) {
    if (metrics_due && !reader.ready() &&
        (std::chrono::steady_clock::now() - metrics_recorded > std::chrono::seconds(1) ||
         !k8slb::tool::stdin_readable_within(std::chrono::milliseconds(100)))) {
      const auto& current = feed.config();
      k8slb::allocate::record_metrics(current ? &*current : nullptr, feed.tracker().tally(), feed.config_stale());
      metrics_due = false;
      metrics_recorded = std::chrono::steady_clock::now();
    }
    std::optional<json> document;
    std::optional<std::chrono::system_clock::time_point> seen; // passed on (k8slb/documents.hpp)
    bool ok = false;
    json out;
    try {
      document = reader.next();
      if (!document) break;
      timer.mark("read");
      if (k8slb::model::is_watch_event(*document)) {
        // A burst of events is read whole, then published as one document, stamped with the
        // time its first event was read (watch events carry no time of their own).
        if (!batch_started) batch_started = std::chrono::system_clock::now();
        apply_event(feed, *document, reader.name());
        if (reader.ready()) continue;
        seen = std::exchange(batch_started, std::nullopt);
        auto changes = publish_changes(feed, options);
        config = feed.config();
        metrics_due = true; // recounted when the input pauses, or once a second (a pass over the addresses held, Tracker::tally())
        if (!changes) continue;
        out = std::move(*changes);
        ok = true;
      } else {
        seen = k8slb::observed_at(*document);
        auto objects = k8slb::take_objects({std::move(*document)}, reader.name());
        k8slb::require_objects(objects, reader.name());
        std::tie(out, ok) = allocate_document(std::move(objects), options, config, true, &feed);
      }
    } catch (const k8slb::Error& e) {
      k8slb::tool::error(e.what());
      all_ok = false;
      continue;
    }
    timer.mark("allocate");
    k8slb::set_observed_at(out, seen);
    all_ok = all_ok && ok;
    std::string line = indent < 0 ? k8slb::dump_line(out) : out.dump(indent, ' ', false, json::error_handler_t::replace);
    timer.mark("dump");
    bool written = k8slb::tool::write_line(line);
    written_any = true;
    const std::size_t bytes = line.size();
    timer.mark("write");
    out = json();
    document.reset();
    line = std::string();
    // Give the freed objects of this document back to the system: otherwise the heap stays
    // at the high-water mark of the largest document seen.
    ::malloc_trim(0);
    timer.mark("free");
    timer.flush(bytes);
    if (!written) break;
  }
  if (reader.count() == 0) k8slb::require_objects({}, "<stdin>"); // an empty input: throws
  if (!written_any) return k8slb::tool::kExitFailure;
  return all_ok ? k8slb::tool::kExitOk : k8slb::tool::kExitPartial;
}

} // namespace

int main(int argc, char** argv) {
  k8slb::tool::set_program("k8slb-allocate");
  CLI::App app{"Assign load-balancer IPs from pools to Services of type LoadBalancer.\n"
               "Reads Kubernetes JSON (a List, objects, or a stream of documents) on stdin or YAML/JSON "
               "files with -f; writes the objects with status.loadBalancer.ingress filled, plus "
               "Events, one JSON document per line.",
               "k8slb-allocate"};
  app.set_version_flag("--version", std::string("k8slb-allocate ") + K8SLB_VERSION);
  Options options;
  app.add_option("-f,--filename", options.files, "Read objects from FILE (JSON or YAML; - is stdin); repeatable")
      ->type_name("FILE");
  app.add_option("-c,--config", options.config_file,
                 "Pools config: the config document or the ConfigMap carrying it (default: the "
                 "ConfigMap found in the input)")
      ->type_name("FILE");
  app.add_option("--config-map", options.config_map, "namespace/name of the config ConfigMap in the input")
      ->capture_default_str();
  app.add_option("--ip-mode", options.ip_mode,
                 "status ingress ipMode: Proxy (haproxy, nginx), VIP (kube-proxy) or none")
      ->check(CLI::IsMember({"Proxy", "VIP", "none"}))
      ->capture_default_str();
  app.add_option("--lb-class", options.lb_class,
                 "Serve Services of this spec.loadBalancerClass (default: only those without a class)");
  app.add_option("--proxy", options.proxy,
                 "Also report, as Warning Events, what this proxy will refuse to carry "
                 "(haproxy: UDP and SCTP ports; bad annotations)")
      ->check(CLI::IsMember({"haproxy", "nginx", "kubeproxy"}));
  app.add_flag("--pretty", options.pretty, "Indent the output");
  k8slb::metrics::add_options(app, options.metrics);
  auto* lint = app.add_flag("--lint", options.lint,
                            "Check the config (--config FILE, or the ConfigMap in the input) as the allocator "
                            "reads it, and stop");
  auto* report = app.add_option("--report", options.report,
                 "Print what kubectl k8slb shows: status (each Service's IPs, pool, node) or pools (size, "
                 "in use, free), from the Services, Events and ConfigMap in the input")
      ->check(CLI::IsMember({"status", "pools"}))
      ->excludes(lint);
  app.add_option("-o,--output", options.output, "With --report: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->needs(report)
      ->capture_default_str();
  return k8slb::tool::run_main(app, argc, argv, [&] {
    if (!options.lint && options.report.empty()) return run(options);
    k8slb_allocate::ReportOptions report{options.report, options.output, options.files,
                                         options.config_file, options.config_map, options.lb_class};
    return options.lint ? k8slb_allocate::run_lint(report) : k8slb_allocate::run_report(report);
  });
}
