// Placeholder until the cluster side lands; replaced by its owner.
#include "commands.hpp"

namespace k8slb_apply {
void add_cluster_command(CLI::App& app, std::function<int()>& run) {
  auto* sub = app.add_subcommand("cluster", "not built yet");
  sub->callback([&run] { run = [] { return 1; }; });
}
} // namespace k8slb_apply
