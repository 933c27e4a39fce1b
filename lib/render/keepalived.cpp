// keepalived.conf: VIP owners by rendezvous hashing, router ids, priorities, and the printer.

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"
#include "services.hpp"

namespace k8slb::render {

std::string owner_of(const std::string& vip, const std::vector<std::string>& node_names) {
  if (node_names.empty()) return {};
  auto address = ip::Address::try_parse(vip);
  return detail::rendezvous_order(address ? address->to_string() : vip, node_names).front();
}

namespace {

using detail::quote;

bool is_interface_name(std::string_view text) {
  if (text.empty() || text.size() > 15) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

bool is_password(std::string_view text) {
  if (text.empty() || text.size() > 8) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("-_.+=@%^*,:/~").find(c) != std::string_view::npos;
  });
}

bool is_host(std::string_view text) {
  return !text.empty() && text.size() <= 253 && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == ':' || c == '_';
  });
}

bool is_email(std::string_view text) {
  auto at = text.find('@');
  if (at == std::string_view::npos || at == 0 || text.size() > 254) return false;
  auto local = text.substr(0, at);
  auto domain = text.substr(at + 1);
  bool local_ok = std::all_of(local.begin(), local.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("._%+-").find(c) != std::string_view::npos;
  });
  return local_ok && is_host(domain) && domain.find(':') == std::string_view::npos;
}

std::string advert_int_text(int centiseconds) {
  std::string text = fmt::format("{}.{:02d}", centiseconds / 100, centiseconds % 100);
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

std::optional<ip::Address> address_of_family(const model::Node& node, ip::Family family) {
  for (const auto& text : node.internal_ips) {
    auto address = ip::Address::try_parse(text);
    if (address && address->family() == family) return address;
  }
  return std::nullopt;
}

} // namespace

std::map<std::string, std::string> previous_interfaces(std::string_view keepalived_conf) {
  std::map<std::string, std::string> found;
  std::string pool;
  while (!keepalived_conf.empty()) {
    auto end = keepalived_conf.find('\n');
    auto line = keepalived_conf.substr(0, end);
    keepalived_conf.remove_prefix(end == std::string_view::npos ? keepalived_conf.size() : end + 1);
    constexpr std::string_view pool_prefix = "# pool ", interface_prefix = "  interface ";
    if (line.starts_with(pool_prefix)) {
      line.remove_prefix(pool_prefix.size());
      auto colon = line.find(':');
      pool = colon == std::string_view::npos ? "" : std::string(line.substr(0, colon));
      if (!detail::is_pool_name(pool)) pool.clear();
    } else if (line.starts_with(interface_prefix) && !pool.empty()) {
      line.remove_prefix(interface_prefix.size());
      if (is_interface_name(line)) found[pool] = std::string(line);
      pool.clear();
    } else if (line == "}") {
      pool.clear();
    }
  }
  return found;
}

namespace {

// Router ids that stay put when nodes or pools come and go (a changed id makes keepalived
// re-elect, and the VIPs blink). Every (pool, node) instance of a family hashes to a preferred id
// in [offset + 1, 255]; an id two instances prefer goes to the first in (preferred id, name)
// order and the other takes the next free one. Every node computes the same table from the
// same pools and nodes; instances that hold no VIP yet are counted too, so a node's first VIP
// does not renumber the others. Names without an id (more instances than ids) are absent.
std::map<std::string, int> stable_router_ids(const std::vector<std::string>& instance_names, int offset) {
  const int capacity = 255 - offset;
  auto fnv1a = [](const std::string& text) {
    std::uint64_t hash = 1469598103934665603ull;
    for (unsigned char c : text) {
      hash ^= c;
      hash *= 1099511628211ull;
    }
    return hash;
  };
  std::vector<std::pair<int, std::string>> wanted; // (preferred id, instance name)
  for (const auto& name : instance_names)
    wanted.emplace_back(offset + 1 + static_cast<int>(fnv1a(name) % static_cast<std::uint64_t>(capacity)), name);
  std::sort(wanted.begin(), wanted.end());
  std::set<int> taken;
  std::map<std::string, int> ids;
  for (const auto& [preferred, name] : wanted) {
    if (static_cast<int>(taken.size()) == capacity) break;
    int id = preferred;
    while (taken.count(id)) id = id == 255 ? offset + 1 : id + 1;
    taken.insert(id);
    ids.emplace(name, id);
  }
  return ids;
}

} // namespace

KeepalivedPlan plan_keepalived(const Input& input) {
  return detail::plan_keepalived(input, detail::check_services(input));
}

KeepalivedPlan detail::plan_keepalived(const Input& input, const CheckedServices& check) {
  const auto& settings = input.settings;
  KeepalivedPlan plan;
  detail::check_settings(settings);
  detail::check_pool_names(input.config);
  if (!settings.vrrp_password.empty() && !is_password(settings.vrrp_password))
    fail("settings", "vrrp_password",
         "must be 1 to 8 characters: letters, digits or -_.+=@%^*,:/~");
  if (settings.advert_int_cs < 1 || settings.advert_int_cs > 4095)
    fail("settings", "advert_int_cs", "must be between 1 and 4095 centiseconds");
  if (settings.vrid_offset < 0 || settings.vrid_offset > 254)
    fail("settings", "vrid_offset", "must be between 0 and 254");
  if (!settings.notify_script.empty() && !detail::is_safe_path(settings.notify_script))
    fail("settings", "notify_script",
         fmt::format("{} is not a safe absolute path", quote(settings.notify_script)));

  if (!settings.proxy_check.empty()) {
    if (!detail::is_safe_path(settings.proxy_check))
      fail("settings", "proxy_check", fmt::format("{} is not a safe absolute path", quote(settings.proxy_check)));
    if (settings.proxy != Proxy::kubeproxy)
      plan.track_proxy = fmt::format("{} health --proxy {} --runtime-dir {}", settings.proxy_check,
                                     to_string(settings.proxy), settings.runtime_dir);
  }

  const auto& mail = input.config.keepalived;
  if (!mail.email.empty()) {
    if (!is_email(mail.email))
      fail("keepalived.email", "", fmt::format("{} is not an e-mail address", quote(mail.email)));
    if (!mail.email_from.empty() && !is_email(mail.email_from))
      fail("keepalived.emailFrom", "", fmt::format("{} is not an e-mail address", quote(mail.email_from)));
    if (!mail.email_server.empty() && !is_host(mail.email_server))
      fail("keepalived.emailServer", "", fmt::format("{} is not a host name or IP address", quote(mail.email_server)));
    if (mail.email_server_timeout < 1 || mail.email_server_timeout > 3600)
      fail("keepalived.emailServerTimeout", "", "must be between 1 and 3600 seconds");
    plan.email = mail;
  }

  plan.vrrp_version = settings.vrrp_password.empty() ? 3 : 2;
  // VRRPv2 counts adverts in whole seconds.
  plan.advert_int = plan.vrrp_version == 3 ? advert_int_text(settings.advert_int_cs)
                                           : std::to_string((settings.advert_int_cs + 99) / 100);

  // The load-balancer nodes, by name; offline without nodes, this node alone.
  std::vector<std::string> nodes;
  std::map<std::string, const model::Node*> node_objects;
  for (const auto& node : input.node.lb_nodes) {
    if (!detail::is_dns_subdomain(node.name)) {
      plan.problems.push_back(Problem{fmt::format("nodes/{}", node.name), "metadata.name", "InvalidNode",
                                      "not a DNS subdomain; the node is left out of VRRP"});
      continue;
    }
    if (node_objects.emplace(node.name, &node).second) nodes.push_back(node.name);
  }
  std::sort(nodes.begin(), nodes.end());
  std::string self = input.node.node_name;
  if (!self.empty() && !detail::is_dns_subdomain(self))
    fail("node", "name", fmt::format("{} is not a DNS subdomain", quote(self)));
  if (nodes.empty()) nodes.push_back(self.empty() ? "local" : self);
  if (self.empty()) {
    if (nodes.size() != 1)
      fail("node", "name", "the node to render for must be named when there are several load-balancer nodes");
    self = nodes.front();
  }
  if (!std::binary_search(nodes.begin(), nodes.end(), self))
    fail("node", "name", fmt::format("{} is not one of the load-balancer nodes", self));
  plan.router_id = self;
  const int node_count = static_cast<int>(nodes.size());

  // VIP -> owner, grouped by pool.
  std::map<std::string, std::map<std::string, std::set<ip::Address>>> vips_by_pool_owner;
  plan.problems.insert(plan.problems.end(), check.problems.begin(), check.problems.end());
  const auto& services = check.services;
  for (const auto& service : services)
    for (const auto& vip : service.vips)
      vips_by_pool_owner[vip.pool][owner_of(vip.address.to_string(), nodes)].insert(vip.address);

  // Router ids per family, over every possible (pool, node) instance.
  std::map<ip::Family, std::vector<std::string>> candidates;
  for (const auto& pool : input.config.pools)
    for (const auto& node_name : nodes)
      candidates[pool.family()].push_back(
          fmt::format("{}_{}_{}", pool.name, node_name, detail::family_suffix(pool.family())));
  std::map<std::string, int> stable_ids;
  for (const auto& [family, names] : candidates)
    for (const auto& [name, id] : stable_router_ids(names, settings.vrid_offset)) stable_ids.emplace(name, id);

  // (interface, family, router id) -> instance, to catch collisions.
  std::map<std::tuple<std::string, ip::Family, int>, std::string> router_ids;
  for (std::size_t pool_index = 0; pool_index < input.config.pools.size(); ++pool_index) {
    const auto& pool = input.config.pools[pool_index];
    // A pool announced by BGP is on every node at once (bird.conf), never in VRRP.
    if (pool.announce == pool::Announce::bgp) continue;
    auto found = vips_by_pool_owner.find(pool.name);
    if (found == vips_by_pool_owner.end()) continue;
    const std::string pool_object = fmt::format("pools.{}", pool.name);
    std::string interface;
    try {
      interface = node::select_interface(pool, input.node.interfaces);
    } catch (const Error& error) {
      std::string message = error.what();
      const std::string prefix = pool_object + ": interface: ";
      if (message.compare(0, prefix.size(), prefix) == 0) message.erase(0, prefix.size());
      // A pool this node cannot place keeps the interface of its last good instances, so no
      // VIP being served goes away over a config change (its VIPs still follow the Services).
      auto previous = input.previous_interfaces.find(pool.name);
      const bool previous_exists =
          previous != input.previous_interfaces.end() &&
          std::any_of(input.node.interfaces.begin(), input.node.interfaces.end(),
                      [&](const node::Interface& candidate) { return candidate.name == previous->second; });
      if (!previous_exists) {
        plan.problems.push_back(Problem{pool_object, "interface", "NoInterface",
                                        fmt::format("{}; the pool's IPs are not held by this node", message)});
        continue;
      }
      interface = previous->second;
      plan.problems.push_back(Problem{pool_object, "interface", "NoInterface",
                                      fmt::format("{}; keeping the last good interface {} for the pool's IPs",
                                                  message, interface)});
    }
    if (!is_interface_name(interface)) {
      plan.problems.push_back(Problem{pool_object, "interface", "NoInterface",
                                      fmt::format("{} is not an interface name", quote(interface))});
      continue;
    }
    for (int owner_index = 0; owner_index < node_count; ++owner_index) {
      const auto& owner = nodes[owner_index];
      auto vips = found->second.find(owner);
      if (vips == found->second.end()) continue;

      VrrpInstance instance;
      instance.pool = pool.name;
      instance.owner = owner;
      instance.family = pool.family();
      instance.name = fmt::format("{}_{}_{}", pool.name, owner, detail::family_suffix(instance.family));
      instance.interface = interface;
      auto stable_id = stable_ids.find(instance.name);
      instance.router_id = stable_id == stable_ids.end() ? 0 : stable_id->second;
      // Only the lowest VIP is advertised, the others are excluded VIPs (held and moved
      // alike): a backup drops adverts whose VIP list is not its own, so with every VIP in the
      // adverts, one Service added or removed on the master before the backup had reloaded
      // made the backup take the whole instance. One advertised address also never outgrows
      // an advert (keepalived -t refuses more than 89 IPv6 VIPs in one).
      instance.vips.assign(vips->second.begin(), std::next(vips->second.begin()));
      instance.excluded_vips.assign(std::next(vips->second.begin()), vips->second.end());
      instance.authenticated = plan.vrrp_version == 2 && instance.family == ip::Family::v4;
      instance.version = instance.authenticated ? 2 : 3;
      if (instance.router_id == 0) {
        plan.problems.push_back(Problem{
            pool_object, "virtual_router_id", "RouterIdOutOfRange",
            fmt::format("instance {} gets no router id: {} pools x {} nodes of {} need more than the {} ids "
                        "above offset {}; its IPs are not held: lower --vrid-offset or use fewer pools",
                        instance.name, candidates[instance.family].size() / static_cast<std::size_t>(node_count),
                        node_count, ip::to_string(instance.family), 255 - settings.vrid_offset,
                        settings.vrid_offset)});
        continue;
      }
      auto [it, inserted] = router_ids.emplace(
          std::make_tuple(instance.interface, instance.family, instance.router_id), instance.name);
      if (!inserted) {
        plan.problems.push_back(Problem{pool_object, "virtual_router_id", "RouterIdCollision",
                                        fmt::format("instance {} would share router id {} on {} with {}; "
                                                    "its IPs are not held: change --vrid-offset",
                                                    instance.name, instance.router_id, interface, it->second)});
        continue;
      }
      if (owner == self) {
        instance.priority = kOwnerPriority;
      } else {
        std::vector<std::string> others;
        for (const auto& name : nodes)
          if (name != owner) others.push_back(name);
        auto order = detail::rendezvous_order(instance.name, others);
        auto rank = std::find(order.begin(), order.end(), self) - order.begin();
        instance.priority = std::max(1, 100 - static_cast<int>(rank));
      }
      if (settings.unicast && node_objects.count(self)) {
        instance.unicast_src = address_of_family(*node_objects[self], instance.family);
        if (!instance.unicast_src) {
          plan.problems.push_back(Problem{fmt::format("nodes/{}", self), "status.addresses", "NoUnicastAddress",
                                          fmt::format("no {} InternalIP; instance {} uses multicast",
                                                      ip::to_string(instance.family), instance.name)});
        } else {
          for (const auto& name : nodes) {
            if (name == self) continue;
            auto peer = address_of_family(*node_objects[name], instance.family);
            if (peer) instance.unicast_peers.push_back(*peer);
            else
              plan.problems.push_back(Problem{fmt::format("nodes/{}", name), "status.addresses", "NoUnicastAddress",
                                              fmt::format("no {} InternalIP; not a unicast peer of {}",
                                                          ip::to_string(instance.family), instance.name)});
          }
          std::sort(instance.unicast_peers.begin(), instance.unicast_peers.end());
          if (instance.unicast_peers.empty()) instance.unicast_src.reset(); // alone: nothing to send to
        }
      }
      plan.instances.push_back(std::move(instance));
    }
  }
  return plan;
}

namespace detail {

std::string print_keepalived(const KeepalivedPlan& plan, const Settings& settings) {
  std::string out;
  auto line = [&](std::string_view text) {
    out += text;
    out += '\n';
  };
  line("# Generated by k8slb-render; do not edit.");
  line("global_defs {");
  line(fmt::format("  router_id {}", plan.router_id));
  line(fmt::format("  vrrp_version {}", plan.vrrp_version));
  line("  enable_script_security");
  // State changes for k8slb-apply node's metrics; keepalived opens the FIFO non-blocking and
  // never waits for its reader. The user (of a notify_fifo_script, of which there is none) must
  // be named under enable_script_security when no keepalived_script user exists.
  line(fmt::format("  notify_fifo {}/{} root", settings.runtime_dir, kNotifyFifoFile));
  // Adverts from the master a backup already follows are not checked against its own VIP
  // list: the lists differ while the nodes reload one after the other.
  line("  vrrp_skip_check_adv_addr");
  // No vrrp_rt_priority: with it, a keepalived reload that added an instance left another
  // instance's VIP on no node for a moment (e2e ReaderRestartTest, 3 probes of 20 ms lost).
  if (!settings.notify_script.empty() || !plan.track_proxy.empty()) line("  script_user root");
  if (plan.email) {
    line("  notification_email {");
    line(fmt::format("    {}", plan.email->email));
    line("  }");
    if (!plan.email->email_from.empty()) line(fmt::format("  notification_email_from {}", plan.email->email_from));
    if (!plan.email->email_server.empty()) line(fmt::format("  smtp_server {}", plan.email->email_server));
    line(fmt::format("  smtp_connect_timeout {}", plan.email->email_server_timeout));
  }
  line("}");
  if (!plan.track_proxy.empty()) {
    // A node whose proxy does not answer holds no VIP: its instances go to FAULT within about
    // a second (interval 1, fall 1; the check retries within its timeout) and a backup takes
    // over; two answers in a row (rise 2) and they come back.
    line("");
    line("vrrp_script k8slb_proxy {");
    line(fmt::format("  script \"{}\"", plan.track_proxy));
    line("  interval 1");
    line("  timeout 2");
    line("  fall 1");
    line("  rise 2");
    line("}");
  }
  for (const auto& instance : plan.instances) {
    line("");
    line(fmt::format("# pool {}: first choice {}", instance.pool, instance.owner));
    line(fmt::format("vrrp_instance {} {{", instance.name));
    line(instance.priority == kOwnerPriority ? "  state MASTER" : "  state BACKUP");
    line(fmt::format("  interface {}", instance.interface));
    line(fmt::format("  virtual_router_id {}", instance.router_id));
    line(fmt::format("  priority {}", instance.priority));
    if (instance.version != plan.vrrp_version) line(fmt::format("  version {}", instance.version));
    line(fmt::format("  advert_int {}", instance.version == plan.vrrp_version ? plan.advert_int
                                                                            : advert_int_text(settings.advert_int_cs)));
    if (instance.authenticated) {
      line("  authentication {");
      line("    auth_type PASS");
      line(fmt::format("    auth_pass {}", settings.vrrp_password));
      line("  }");
    }
    if (plan.email) line("  smtp_alert");
    if (!settings.notify_script.empty()) line(fmt::format("  notify {}", settings.notify_script));
    if (instance.unicast_src) {
      line(fmt::format("  unicast_src_ip {}", instance.unicast_src->to_string()));
      line("  unicast_peer {");
      for (const auto& peer : instance.unicast_peers) line(fmt::format("    {}", peer.to_string()));
      line("  }");
    }
    if (!plan.track_proxy.empty()) {
      line("  track_script {");
      line("    k8slb_proxy");
      line("  }");
    }
    auto vip_block = [&](std::string_view block, const std::vector<ip::Address>& vips) {
      line(fmt::format("  {} {{", block));
      for (const auto& vip : vips)
        line(fmt::format("    {}/{} dev {}", vip.to_string(), ip::bits(vip.family()), instance.interface));
      line("  }");
    };
    vip_block("virtual_ipaddress", instance.vips);
    if (!instance.excluded_vips.empty()) vip_block("virtual_ipaddress_excluded", instance.excluded_vips);
    line("}");
  }
  return out;
}

} // namespace detail

} // namespace k8slb::render
