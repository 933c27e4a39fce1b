// k8slb-apply metrics: one Prometheus endpoint for the processes of a pod's pipeline, which
// keep their metrics in files (--metrics-file) in one directory.
#include <csignal>
#include <string>

#include <unistd.h>

#include "commands.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/tool.hpp"

namespace k8slb_apply {
namespace {

namespace metrics = k8slb::metrics;
namespace tool = k8slb::tool;

std::string merged(const std::string& directory) {
  return metrics::merge_expositions(metrics::read_directory(directory));
}

int serve(const std::string& address, const std::string& directory) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr); // before the server's thread starts: it inherits the mask
  metrics::Server server(address, [directory] { return merged(directory); });
  tool::info("serving the metrics in " + directory + " on http://" + server.local_address() + "/metrics");
  int signal = 0;
  sigwait(&signals, &signal);
  return tool::kExitOk;
}

} // namespace

void add_metrics_command(CLI::App& app, std::function<int()>& run) {
  static std::string directory;
  static std::string address;
  auto* sub = app.add_subcommand(
      "metrics", "Serve (or print) the metrics the pipeline's tools keep in DIRECTORY (--metrics-file)");
  sub->add_option("directory", directory, "Directory of the *.prom files")->required();
  sub->add_option("--listen", address, "Serve them on this address (:9402, 127.0.0.1:9402, [::1]:9402) until "
                                       "SIGTERM; without it, print them once");
  sub->callback([&run] {
    run = [] {
      if (address.empty())
        return tool::write_line(merged(directory)) ? tool::kExitOk : tool::kExitFailure;
      return serve(address, directory);
    };
  });
}

} // namespace k8slb_apply
