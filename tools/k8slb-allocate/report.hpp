#pragma once
// k8slb-allocate --report and --lint (report.cpp).

#include <string>
#include <vector>

namespace k8slb_allocate {

struct ReportOptions {
  std::string report;                // "status" or "pools"; empty: --lint
  std::string output = "table";      // table | json
  std::vector<std::string> files;    // empty: stdin
  std::string config_file;           // empty: the ConfigMap in the input
  std::string config_map = "k8slb-system/global";
  std::string lb_class;
};

// The config alone (--config FILE, or the ConfigMap in the input), checked as the allocator
// reads it: 0 and one line on stdout when valid; an invalid one throws the allocator's Error.
int run_lint(const ReportOptions& options);
// The rows of `kubectl k8slb status` / `pools` from the objects in the input.
int run_report(const ReportOptions& options);

} // namespace k8slb_allocate
