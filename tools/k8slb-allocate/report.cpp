// k8slb-allocate --report status|pools and --lint: what `kubectl k8slb` shows (scripts/kubectl-k8slb
// pipes `kubectl get ... -o json` in). The rows come from lib (k8slb/report.hpp); the config is
// read by the code the allocator reads it with, so that the errors are the watcher's.
#include "report.hpp"

#include <fmt/format.h>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"
#include "k8slb/report.hpp"
#include "k8slb/tool.hpp"

namespace k8slb_allocate {

namespace {

namespace report = k8slb::report;
namespace tool = k8slb::tool;
using k8slb::json;

std::string no_config(const ReportOptions& options) {
  return fmt::format("no config: give --config FILE or include the ConfigMap {} in the input", options.config_map);
}

} // namespace

int run_lint(const ReportOptions& options) {
  k8slb::pool::Config config;
  std::string source = options.config_file == "-" ? "<stdin>" : options.config_file;
  if (!options.config_file.empty()) {
    config = k8slb::pool::load_config_file(options.config_file); // as k8slb-allocate --config
  } else {
    auto snapshot = k8slb::model::make_snapshot(
        k8slb::read_objects(options.files.empty() ? std::vector<std::string>{"-"} : options.files).items,
        options.config_map);
    if (!snapshot.config_map) throw k8slb::Error(no_config(options));
    config = k8slb::pool::parse_config_map(*snapshot.config_map); // as the watcher reads its ConfigMap
    source = "ConfigMap " + options.config_map;
  }
  std::vector<std::string> pools;
  for (const auto& pool : config.pools)
    pools.push_back(fmt::format("{} ({} {})", pool.name, k8slb::ip::to_string(pool.family()), pool.network.to_string()));
  tool::write_line(fmt::format("{}: valid: {} pool{}: {}", k8slb::describe("", "", source), pools.size(),
                               pools.size() == 1 ? "" : "s", fmt::join(pools, ", ")));
  return tool::kExitOk;
}

int run_report(const ReportOptions& options) {
  k8slb::Objects objects =
      k8slb::read_objects(options.files.empty() ? std::vector<std::string>{"-"} : options.files);
  bool ok = true;
  for (const auto& error : objects.errors) {
    tool::error(error);
    ok = false;
  }
  std::vector<json> events;
  for (const json& item : objects.items)
    if (item["kind"] == "Event") events.push_back(item);
  auto snapshot = k8slb::model::make_snapshot(std::move(objects.items), options.config_map);
  for (const auto& error : snapshot.errors) {
    tool::error(fmt::format("{} (left out)", error));
    ok = false;
  }
  std::optional<k8slb::pool::Config> config;
  if (!options.config_file.empty()) {
    config = k8slb::pool::load_config_file(options.config_file);
  } else if (snapshot.config_map) {
    try {
      config = k8slb::pool::parse_config_map(*snapshot.config_map);
    } catch (const k8slb::Error& e) {
      if (options.report == "pools") throw;
      tool::warning(fmt::format("{} (pools unknown)", e.what()));
    }
  }
  k8slb::allocate::Options allocate_options{options.lb_class};
  bool as_json = options.output == "json";
  std::string out;
  if (options.report == "pools") {
    if (!config) throw k8slb::Error(no_config(options));
    auto rows = report::pool_usage(snapshot.services, *config, allocate_options);
    out = as_json ? report::pools_json(rows).dump(2) + "\n" : report::pools_table(rows);
  } else {
    if (!config) tool::warning(fmt::format("{} (pools unknown)", no_config(options)));
    auto rows = report::service_status(snapshot.services, events, config ? &*config : nullptr, allocate_options);
    out = as_json ? report::status_json(rows).dump(2, ' ', false, json::error_handler_t::replace) + "\n"
                  : report::status_table(rows, std::chrono::system_clock::now());
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return ok ? tool::kExitOk : tool::kExitPartial;
}

} // namespace k8slb_allocate
