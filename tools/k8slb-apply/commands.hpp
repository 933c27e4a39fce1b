#pragma once
// k8slb-apply's subcommands: `cluster` (write status and Events to the API), `node` (install,
// check and reload daemon configs), `health` (the proxy answers), `events` (a node's
// Events) and `metrics` (the pipeline's metrics on one endpoint). Each adds itself to the app; when it is the one selected on the command line, `run`
// is set to the function that runs it.

#include <functional>

#include <CLI/CLI.hpp>

namespace k8slb_apply {
void add_cluster_command(CLI::App& app, std::function<int()>& run);
void add_node_command(CLI::App& app, std::function<int()>& run);
void add_health_command(CLI::App& app, std::function<int()>& run);
void add_events_command(CLI::App& app, std::function<int()>& run);
void add_metrics_command(CLI::App& app, std::function<int()>& run);
} // namespace k8slb_apply
