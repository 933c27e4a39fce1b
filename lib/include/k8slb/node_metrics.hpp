#pragma once
// The actor's metrics (k8slb-apply node): what its daemons run, which VIPs this node holds and
// what keepalived says of its VRRP instances.
//
// keepalived tells its state changes on its notify_fifo (`notify_fifo <runtime_dir>/keepalived.fifo`
// in keepalived.conf's global_defs): one line per change, `INSTANCE "<name>" <STATE> <priority>`.
// keepalived opens the FIFO itself with O_RDWR | O_NONBLOCK, so it never waits for a reader and
// a full FIFO loses lines instead of holding keepalived up.
//
// Parsing is pure; NodeMetrics keeps the families in a registry; NodeObserver is the edge (the
// FIFO and the node's interfaces, read by a thread of its own).

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "k8slb/apply.hpp"
#include "k8slb/metrics.hpp"

namespace k8slb::apply {

// ---- keepalived's notify_fifo ------------------------------------------------------------

// The VRRP states keepalived reports on its FIFO, in the order they are exposed.
const std::vector<std::string>& vrrp_states(); // MASTER, BACKUP, FAULT, STOP

struct VrrpNotice {
  std::string instance;
  std::string state; // one of vrrp_states()
  int priority = 0;
  bool operator==(const VrrpNotice&) const = default;
};

// `INSTANCE "VI_1" MASTER 100` -> {"VI_1", "MASTER", 100}. nullopt for every other line: groups,
// virtual servers, states not in vrrp_states(), malformed text.
std::optional<VrrpNotice> parse_notify_fifo_line(std::string_view line);

// ---- keepalived.conf as k8slb-render writes it ---------------------------------------------

// The VRRP instances of keepalived.conf, by name, each with the VIPs of its virtual_ipaddress
// and virtual_ipaddress_excluded blocks (canonical text).
std::map<std::string, std::vector<std::string>> keepalived_instances(std::string_view keepalived_conf);

// ---- the families --------------------------------------------------------------------------

class NodeMetrics {
public:
  explicit NodeMetrics(metrics::Registry& registry);

  // The metrics of this process (on metrics::process_registry()).
  static NodeMetrics& process();

  // After NodeApplier::apply: reloads (by result), runtime updates, rejected configs, which
  // daemons serve a stale config, the time of the last successful apply (`now`, Unix seconds)
  // and, when something was applied, the time since the change was seen.
  void applied(const ApplyResult& result, std::chrono::steady_clock::duration since_seen, double now);

  // A daemon that died was started again.
  void restarted(Daemon daemon);
  // keepalived died: its instances are not in any state any more (STOP).
  void keepalived_gone();

  // A line read from keepalived's notify_fifo.
  void vrrp(const VrrpNotice& notice);

  // The VIPs of `keepalived_conf` among `held` (the node's addresses), by family; instances
  // no longer in the config lose their series.
  void vips(std::string_view keepalived_conf, const std::set<std::string>& held);

private:
  void write_states(); // caller holds mutex_

  metrics::Family& reloads_;
  metrics::Family& runtime_updates_;
  metrics::Family& rejected_;
  metrics::Family& restarts_;
  metrics::Family& last_success_;
  metrics::Family& duration_;
  metrics::Family& stale_;
  metrics::Family& vrrp_state_;
  metrics::Family& transitions_;
  metrics::Family& vips_;
  std::mutex mutex_;
  std::map<std::string, std::string> states_; // instance -> its state
};

// ---- the edge ------------------------------------------------------------------------------

// Creates the FIFO at `fifo` (when absent) and reads keepalived's lines from it in a thread of
// its own; every `interval` (and after each line) refreshes the VIP gauge from
// `keepalived_conf` (a path) and the node's interfaces. The FIFO is held open for reading and
// writing, so it never reads an end of file between two keepalived runs. Stops when destroyed.
class NodeObserver {
public:
  NodeObserver(NodeMetrics& metrics, std::string fifo, std::string keepalived_conf,
               std::chrono::milliseconds interval = std::chrono::milliseconds(500),
               std::function<void(const std::string&)> warn = {});
  ~NodeObserver();
  NodeObserver(const NodeObserver&) = delete;
  NodeObserver& operator=(const NodeObserver&) = delete;

private:
  struct State;
  std::unique_ptr<State> state_;
};

} // namespace k8slb::apply
