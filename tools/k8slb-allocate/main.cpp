// k8slb-allocate: assigns load-balancer IPs to Services.
//
//   kubectl get svc -A -o json | k8slb-allocate --config pools.json
//   k8slb-watch services configmap/k8slb-system/global | k8slb-allocate | k8slb-apply cluster
#include <iostream>
#include <optional>

#include <fmt/format.h>

#include "k8slb/allocate.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"
#include "k8slb/tool.hpp"

namespace {

using k8slb::json;

struct Options {
  std::vector<std::string> files;    // empty: a stream of documents on stdin
  std::string config_file;           // empty: the ConfigMap in the input
  std::string config_map = "k8slb-system/global";
  std::string ip_mode = "Proxy";
  std::string lb_class;
  bool pretty = false;
};

// Allocates one input document's objects; returns the published document and whether every
// Service was served. `config` is the last good config (from --config or an earlier ConfigMap).
std::pair<json, bool> allocate_document(std::vector<json> items, const Options& options,
                                        std::optional<k8slb::pool::Config>& config) {
  // Events in the input are an earlier run's output (its output fed back in): they are not
  // passed on, or they would be posted again.
  std::erase_if(items, [](const json& item) { return item.is_object() && item.value("kind", "") == "Event"; });
  auto snapshot = k8slb::model::make_snapshot(std::move(items), options.config_map);
  bool ok = true;
  if (options.config_file.empty()) {
    if (snapshot.config_map) {
      try {
        config = k8slb::pool::parse_config_map(*snapshot.config_map);
      } catch (const k8slb::Error& e) {
        // A broken config never replaces a good one: keep allocating with the last good one.
        k8slb::tool::error(config ? fmt::format("{} (keeping the previous config)", e.what()) : e.what());
        ok = false;
      }
    }
    if (!config)
      throw k8slb::Error(fmt::format("no config: give --config FILE or include the ConfigMap {} "
                                     "in the input",
                                     options.config_map));
  }
  for (const auto& error : snapshot.errors) {
    k8slb::tool::error(error);
    ok = false;
  }
  auto results = k8slb::allocate::allocate(snapshot.services, *config, {options.lb_class});
  for (const auto& result : results) {
    if (result.problem) {
      k8slb::tool::error(result.problem->to_string());
      ok = false;
    }
  }
  k8slb::allocate::PublishOptions publish_options;
  publish_options.ip_mode = options.ip_mode == "none" ? "" : options.ip_mode;
  return {k8slb::allocate::publish(snapshot.items, snapshot.services, results, publish_options), ok};
}

int run(const Options& options) {
  std::optional<k8slb::pool::Config> config;
  if (!options.config_file.empty()) config = k8slb::pool::load_config_file(options.config_file);
  int indent = options.pretty ? 2 : -1;
  if (!options.files.empty()) {
    auto [document, ok] = allocate_document(k8slb::read_items(options.files), options, config);
    k8slb::tool::write_line(document.dump(indent));
    return ok ? k8slb::tool::kExitOk : k8slb::tool::kExitFailure;
  }
  // Streaming: one output line per input document, flushed, until end of input.
  k8slb::JsonStreamReader reader(std::cin, "<stdin>");
  bool all_ok = true;
  while (auto document = reader.next()) {
    bool ok = false;
    json out;
    try {
      std::tie(out, ok) = allocate_document(k8slb::flatten_items({*document}), options, config);
    } catch (const k8slb::Error& e) {
      k8slb::tool::error(e.what());
      all_ok = false;
      continue;
    }
    all_ok = all_ok && ok;
    if (!k8slb::tool::write_line(out.dump(indent))) break;
  }
  return all_ok ? k8slb::tool::kExitOk : k8slb::tool::kExitFailure;
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
  app.add_flag("--pretty", options.pretty, "Indent the output");
  return k8slb::tool::run_main(app, argc, argv, [&] { return run(options); });
}
