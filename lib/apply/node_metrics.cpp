// The actor's metrics: keepalived's notify_fifo lines, keepalived.conf's instances, the families.
#include "k8slb/node_metrics.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "k8slb/ip.hpp"

namespace k8slb::apply {

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

// The next white-space separated word of `text`, removed from it.
std::string_view next_word(std::string_view& text) {
  text = trim(text);
  auto end = std::find_if(text.begin(), text.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
  auto word = text.substr(0, static_cast<std::size_t>(end - text.begin()));
  text.remove_prefix(word.size());
  return word;
}

// Each line of `text`, without its end of line.
template <typename F> void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    auto end = text.find('\n');
    f(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  }
}

} // namespace

const std::vector<std::string>& vrrp_states() {
  static const std::vector<std::string> states{"MASTER", "BACKUP", "FAULT", "STOP"};
  return states;
}

std::optional<VrrpNotice> parse_notify_fifo_line(std::string_view line) {
  if (next_word(line) != "INSTANCE") return std::nullopt;
  line = trim(line);
  // The name in double quotes (keepalived writes it so; names hold no quote or space).
  if (line.size() < 2 || line.front() != '"') return std::nullopt;
  auto close = line.find('"', 1);
  if (close == std::string_view::npos || close == 1) return std::nullopt;
  VrrpNotice notice;
  notice.instance = std::string(line.substr(1, close - 1));
  if (std::any_of(notice.instance.begin(), notice.instance.end(),
                  [](char c) { return std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)); }))
    return std::nullopt;
  line.remove_prefix(close + 1);
  auto state = next_word(line);
  const auto& states = vrrp_states();
  if (std::find(states.begin(), states.end(), state) == states.end()) return std::nullopt;
  notice.state = std::string(state);
  auto priority = next_word(line);
  if (priority.empty() || !trim(line).empty()) return std::nullopt;
  auto [end, error] = std::from_chars(priority.data(), priority.data() + priority.size(), notice.priority);
  if (error != std::errc() || end != priority.data() + priority.size() || notice.priority < 0 || notice.priority > 255)
    return std::nullopt;
  return notice;
}

std::map<std::string, std::vector<std::string>> keepalived_instances(std::string_view keepalived_conf) {
  std::map<std::string, std::vector<std::string>> instances;
  std::string instance;      // the vrrp_instance block we are in
  int depth = 0;             // of braces
  bool in_vips = false;      // in its virtual_ipaddress or virtual_ipaddress_excluded block
  for_each_line(keepalived_conf, [&](std::string_view line) {
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) return;
    const bool opens = line.back() == '{';
    auto rest = line;
    auto first = next_word(rest);
    if (line == "}") {
      depth = std::max(0, depth - 1);
      if (depth <= 1) in_vips = false;
      if (depth == 0) instance.clear();
      return;
    }
    if (opens) {
      if (depth == 0 && first == "vrrp_instance") {
        instance = std::string(next_word(rest));
        instances[instance];
      } else if (depth == 1 && !instance.empty() &&
                 (first == "virtual_ipaddress" || first == "virtual_ipaddress_excluded")) {
        in_vips = true;
      }
      ++depth;
      return;
    }
    if (in_vips && depth == 2) {
      // "192.0.2.10/32 dev eth0"
      auto address = first.substr(0, first.find('/'));
      if (auto parsed = ip::Address::try_parse(std::string(address))) instances[instance].push_back(parsed->to_string());
    }
  });
  return instances;
}

NodeMetrics::NodeMetrics(metrics::Registry& registry)
    : reloads_(registry.counter("k8slb_daemon_reloads_total",
                                "Reloads of a daemon to take a new config, by daemon and result (success, failure).",
                                {"daemon", "result"})),
      runtime_updates_(registry.counter("k8slb_runtime_updates_total",
                                        "Endpoint changes applied through the daemon's runtime API, without a reload.",
                                        {"daemon"})),
      rejected_(registry.counter("k8slb_config_rejected_total",
                                 "New configs the daemon's own checker refused (the running config stays).",
                                 {"daemon"})),
      restarts_(registry.counter("k8slb_daemon_restarts_total", "Daemons started again after they died.",
                                 {"daemon"})),
      last_success_(registry.gauge("k8slb_last_apply_success_timestamp_seconds",
                                   "Unix time of the last apply in which every daemon took its config.")),
      duration_(registry.histogram("k8slb_apply_duration_seconds",
                                   "Time from a new set read on stdin to its configs installed and the daemons "
                                   "reloaded or updated.",
                                   metrics::duration_buckets())),
      stale_(registry.gauge("k8slb_config_stale",
                            "1 while the daemon runs its last good config because the newest was refused or "
                            "could not be applied.",
                            {"daemon"})),
      vrrp_state_(registry.gauge("k8slb_vrrp_state",
                                 "1 for the state keepalived last reported for the VRRP instance, 0 for the others.",
                                 {"vrrp_instance", "state"})),
      transitions_(registry.counter("k8slb_vrrp_transitions_total",
                                    "State changes keepalived reported for the VRRP instance, by the state entered.",
                                    {"vrrp_instance", "state"})),
      vips_(registry.gauge("k8slb_node_vips",
                           "VIPs of keepalived.conf this node holds on its interfaces now, by family (IPv4, IPv6).",
                           {"family"})) {
  for (auto family : {ip::Family::v4, ip::Family::v6}) vips_.set({std::string(ip::to_string(family))}, 0);
}

NodeMetrics& NodeMetrics::process() {
  static NodeMetrics metrics(metrics::process_registry());
  return metrics;
}

void NodeMetrics::applied(const ApplyResult& result, std::chrono::steady_clock::duration since_seen, double now) {
  auto reason_of = [&](Daemon daemon) -> std::string {
    const std::string file(config_file_of(daemon));
    for (const auto& problem : result.problems)
      if (problem.object == file) return problem.reason;
    return {};
  };
  bool applied_something = false;
  for (const auto& outcome : result.daemons) {
    const std::string daemon(to_string(outcome.daemon));
    const auto reason = reason_of(outcome.daemon);
    if (outcome.ok) {
      stale_.set({daemon}, 0);
      if (outcome.action == Action::reload) reloads_.add({daemon, "success"});
      if (outcome.action == Action::runtime_update) runtime_updates_.add({daemon});
      if (outcome.action != Action::none) applied_something = true;
      continue;
    }
    if (reason == "ConfigRejected") rejected_.add({daemon});
    if (reason == "ReloadFailed") reloads_.add({daemon, "failure"});
    if (reason == "ConfigRejected" || reason == "ReloadFailed" || reason == "ApplyFailed" || reason == "ProxyNotUpdated")
      stale_.set({daemon}, 1);
  }
  if (result.ok()) last_success_.set(now);
  if (applied_something) duration_.observe(std::chrono::duration<double>(since_seen).count());
}

void NodeMetrics::restarted(Daemon daemon) { restarts_.add({std::string(to_string(daemon))}); }

void NodeMetrics::keepalived_gone() {
  std::lock_guard lock(mutex_);
  for (auto& [instance, state] : states_) state = "STOP";
  write_states();
}

void NodeMetrics::vrrp(const VrrpNotice& notice) {
  std::lock_guard lock(mutex_);
  auto& state = states_[notice.instance];
  if (state != notice.state) transitions_.add({notice.instance, notice.state});
  state = notice.state;
  write_states();
}

void NodeMetrics::vips(std::string_view keepalived_conf, const std::set<std::string>& held) {
  auto instances = keepalived_instances(keepalived_conf);
  std::map<std::string, int> counts{{std::string(ip::to_string(ip::Family::v4)), 0},
                                    {std::string(ip::to_string(ip::Family::v6)), 0}};
  std::set<std::string> names, counted;
  for (const auto& [name, vips] : instances) {
    names.insert(name);
    for (const auto& vip : vips)
      if (held.count(vip) && counted.insert(vip).second)
        ++counts[std::string(ip::to_string(vip.find(':') == std::string::npos ? ip::Family::v4 : ip::Family::v6))];
  }
  for (const auto& [family, count] : counts) vips_.set({family}, count);
  // An instance gone from the config (or told of before its config was read) loses its series.
  std::lock_guard lock(mutex_);
  bool pruned = false;
  for (auto it = states_.begin(); it != states_.end();) {
    if (names.count(it->first)) {
      ++it;
    } else {
      it = states_.erase(it);
      pruned = true;
    }
  }
  if (!pruned) return;
  vrrp_state_.clear();
  write_states();
}

void NodeMetrics::write_states() {
  for (const auto& [instance, current] : states_)
    for (const auto& state : vrrp_states()) vrrp_state_.set({instance, state}, state == current ? 1 : 0);
}

} // namespace k8slb::apply
