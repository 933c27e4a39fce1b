// k8slb-apply: writes what the pipeline decided, to the cluster or to the node.
#include "commands.hpp"

#include "k8slb/tool.hpp"

int main(int argc, char** argv) {
  k8slb::tool::set_program("k8slb-apply");
  CLI::App app{"Write k8slb results to the cluster (status, Events) or to the node (configs)",
               "k8slb-apply"};
  app.set_version_flag("--version", std::string("k8slb-apply ") + K8SLB_VERSION);
  app.require_subcommand(1);
  std::function<int()> run;
  k8slb_apply::add_cluster_command(app, run);
  k8slb_apply::add_node_command(app, run);
  k8slb_apply::add_health_command(app, run);
  k8slb_apply::add_events_command(app, run);
  k8slb_apply::add_metrics_command(app, run);
  return k8slb::tool::run_main(app, argc, argv, [&] { return run(); });
}
