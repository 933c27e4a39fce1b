// Shared frontends (Settings.shared_ports): one frontend per port, bound to the wildcard
// address, routing by destination. HAProxy: through haproxy-p<port>.map to slot backends; a new
// Service on such a port takes a spare slot backend, its servers and its map line are set
// through HAProxy's runtime API (k8slb-apply node), not by a reload. nginx: one server per port
// routing through a geo block on $server_addr to the Services' upstreams; still a reload, but of
// a config with one server per port instead of one per VIP and port.

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"

namespace k8slb::render {

namespace {

bool shareable(const PortPlan& port, const std::set<int>& shared_ports, Proxy proxy) {
  return shared_ports.contains(port.port) && port.protocol == Protocol::tcp && port.mode == shared_mode(port.port) &&
         !port.tls && port.source_ranges.empty() && (proxy == Proxy::haproxy || !port.tls_backend);
}

std::string slot_name(int port, int k) { return fmt::format("shared_{}_{}", port, k); }

// "shared_<port>_<k>" -> (port, k)
std::optional<std::pair<int, int>> parse_slot_name(std::string_view name) {
  constexpr std::string_view prefix = "shared_";
  if (!name.starts_with(prefix)) return std::nullopt;
  name.remove_prefix(prefix.size());
  auto underscore = name.find('_');
  if (underscore == std::string_view::npos) return std::nullopt;
  auto number = [](std::string_view text, int& value) {
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    return !text.empty() && error == std::errc() && end == text.data() + text.size() && value >= 0;
  };
  int port = 0, k = 0;
  if (!number(name.substr(0, underscore), port) || !number(name.substr(underscore + 1), k)) return std::nullopt;
  if (port < 1 || port > 65535 || k > 1'000'000) return std::nullopt;
  return std::make_pair(port, k);
}

// A Service port id as PortPlan::id() prints it: DNS labels and digits joined by '_'.
bool is_port_id(std::string_view id) {
  return !id.empty() && id.size() <= 200 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
  });
}

} // namespace

Mode shared_mode(int port) { return port == 80 || port == 443 ? Mode::http : Mode::tcp; }

std::string SharedPort::slot_name(int k) const { return render::slot_name(port, k); }

int spare_slots(int services) { return std::max(16, services / 8); }

std::string shared_map_file(int port) { return fmt::format("haproxy-p{}.map", port); }

SharedSlots plan_shared(ProxyPlan& plan, const std::set<int>& shared_ports, const SharedSlots& previous, Proxy proxy) {
  SharedSlots slots;
  std::map<int, std::vector<int>> by_port; // indexes into plan.ports, in plan order
  for (std::size_t i = 0; i < plan.ports.size(); ++i)
    if (shareable(plan.ports[i], shared_ports, proxy)) by_port[plan.ports[i].port].push_back(static_cast<int>(i));
  for (auto& [number, indexes] : by_port) {
    const int services = static_cast<int>(indexes.size());
    auto kept = previous.capacity.find(number);
    int capacity = services + spare_slots(services);
    if (kept != previous.capacity.end() && kept->second >= services && kept->second <= 4 * capacity)
      capacity = kept->second;
    std::vector<int> taken(capacity, -1);
    std::vector<int> unplaced;
    for (int index : indexes) {
      auto& port = plan.ports[index];
      auto before = previous.backends.find(port.id());
      auto parsed = before == previous.backends.end() ? std::nullopt : parse_slot_name(before->second);
      if (parsed && parsed->first == number && parsed->second < capacity && taken[parsed->second] < 0) {
        taken[parsed->second] = index;
        port.slot = before->second;
      } else {
        unplaced.push_back(index);
      }
    }
    int next = 0;
    for (int index : unplaced) {
      while (taken[next] >= 0) ++next;
      taken[next] = index;
      plan.ports[index].slot = slot_name(number, next);
    }
    SharedPort shared;
    shared.port = number;
    shared.mode = shared_mode(number);
    shared.capacity = capacity;
    shared.spare_port = number;
    for (int index : indexes) {
      const auto& port = plan.ports[index];
      slots.backends[port.id()] = port.slot;
      for (const auto& vip : port.vips) {
        (vip.address.family() == ip::Family::v4 ? shared.v4 : shared.v6) = true;
        shared.map.emplace_back(vip.address, port.slot);
      }
    }
    std::sort(shared.map.begin(), shared.map.end());
    shared.slots = std::move(taken);
    slots.capacity[number] = capacity;
    plan.shared.push_back(std::move(shared));
  }
  return slots;
}

void wildcard_every_shared_port(ProxyPlan& plan, const std::set<int>& shared_ports, const pool::Config& config) {
  bool v4 = false, v6 = false;
  for (const auto& pool : config.pools) (pool.family() == ip::Family::v4 ? v4 : v6) = true;
  for (int number : shared_ports)
    if (std::none_of(plan.shared.begin(), plan.shared.end(), [&](const SharedPort& shared) { return shared.port == number; })) {
      SharedPort shared;
      shared.port = number;
      shared.mode = shared_mode(number);
      plan.shared.push_back(std::move(shared));
    }
  std::sort(plan.shared.begin(), plan.shared.end(),
            [](const SharedPort& a, const SharedPort& b) { return a.port < b.port; });
  for (auto& shared : plan.shared) {
    shared.v4 = shared.v4 || v4;
    shared.v6 = shared.v6 || v6;
  }
}

SharedSlots previous_shared_slots(std::string_view haproxy_cfg) {
  SharedSlots found;
  std::string_view comment;
  while (!haproxy_cfg.empty()) {
    auto end = haproxy_cfg.find('\n');
    auto line = haproxy_cfg.substr(0, end);
    haproxy_cfg.remove_prefix(end == std::string_view::npos ? haproxy_cfg.size() : end + 1);
    constexpr std::string_view backend_prefix = "backend ";
    if (line.starts_with('#')) {
      comment = line;
      continue;
    }
    if (line.starts_with(backend_prefix)) {
      auto name = line.substr(backend_prefix.size());
      if (auto parsed = parse_slot_name(name)) {
        auto& capacity = found.capacity[parsed->first];
        capacity = std::max(capacity, parsed->second + 1);
        auto open = comment.rfind('(');
        if (open != std::string_view::npos && comment.ends_with(')')) {
          auto id = comment.substr(open + 1, comment.size() - open - 2);
          if (is_port_id(id)) found.backends[std::string(id)] = std::string(name);
        }
      }
    }
    comment = {};
  }
  return found;
}

} // namespace k8slb::render
