// bird.conf: the VIPs of pools with `announce: bgp`, announced to the config's peers, and the
// printer. Every node announces every such VIP; routers spread the traffic by ECMP.

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"
#include "services.hpp"
#include "printers.hpp"
#include "services.hpp"

namespace k8slb::render {

namespace {

using detail::quote;

// A TCP-MD5 key as BIRD reads it between double quotes: printable ASCII without '"' and '\',
// at most 80 bytes (the kernel's TCP_MD5SIG_MAXKEYLEN).
bool is_bird_password(std::string_view text) {
  return !text.empty() && text.size() <= 80 && std::all_of(text.begin(), text.end(), [](char c) {
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
  });
}

std::string peer_name(const ip::Address& address) {
  std::string name = "k8slb_" + address.to_string();
  std::replace(name.begin(), name.end(), '.', '_');
  std::replace(name.begin(), name.end(), ':', '_');
  return name;
}

} // namespace

BirdPlan plan_bird(const Input& input) { return detail::plan_bird(input, detail::check_services(input)); }

BirdPlan detail::plan_bird(const Input& input, const CheckedServices& check) {
  if (!input.config.bgp) fail("bgp", "", "the config document has no bgp section");
  const auto& bgp = *input.config.bgp;
  BirdPlan plan;
  plan.asn = bgp.asn;

  // This node's IPv4 InternalIP is its router id (unique per node, unlike anything the
  // cluster-wide document could name).
  for (const auto& node : input.node.lb_nodes) {
    if (node.name != input.node.node_name) continue;
    for (const auto& text : node.internal_ips) {
      auto address = ip::Address::try_parse(text);
      if (address && address->family() == ip::Family::v4) {
        plan.router_id = address;
        break;
      }
    }
  }

  // Without one (an IPv6-only node), an id from the node's name: BIRD needs one to start.
  if (!plan.router_id && !input.node.node_name.empty()) {
    auto hash = detail::stable_hash(input.node.node_name);
    plan.router_id = ip::Address::parse(fmt::format("{}.{}.{}.{}", 1 + (hash >> 24 & 0xfe), hash >> 16 & 0xff,
                                                    hash >> 8 & 0xff, hash & 0xff));
  }

  std::set<ip::Address> v4, v6;
  plan.problems.insert(plan.problems.end(), check.problems.begin(), check.problems.end());
  for (const auto& service : check.services)
    for (const auto& vip : service.vips) {
      const auto* pool = input.config.find(vip.pool);
      if (pool == nullptr || pool->announce != pool::Announce::bgp) continue;
      (vip.address.family() == ip::Family::v4 ? v4 : v6).insert(vip.address);
    }
  plan.vips_v4.assign(v4.begin(), v4.end());
  plan.vips_v6.assign(v6.begin(), v6.end());

  for (std::size_t i = 0; i < bgp.peers.size(); ++i) {
    const auto& peer = bgp.peers[i];
    const std::string object = fmt::format("bgp.peers[{}]", i);
    BgpPeerPlan out;
    out.name = peer_name(peer.address);
    out.address = peer.address;
    out.asn = peer.asn;
    out.port = peer.port;
    out.bfd = peer.bfd;
    out.hold_time = peer.hold_time;
    out.internal = peer.asn == bgp.asn;
    if (!peer.password_file.empty()) {
      auto found = input.bgp_passwords.find(peer.password_file);
      if (found == input.bgp_passwords.end()) {
        plan.problems.push_back(Problem{object, "passwordFile", "MissingPassword",
                                        fmt::format("{} cannot be read; the peer is left out",
                                                    quote(peer.password_file))});
        continue;
      }
      std::string password = found->second;
      while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
      if (!is_bird_password(password)) {
        plan.problems.push_back(Problem{object, "passwordFile", "InvalidPassword",
                                        fmt::format("{} must hold 1 to 80 printable characters other than "
                                                    "'\"' and '\\'; the peer is left out",
                                                    quote(peer.password_file))});
        continue;
      }
      out.password = std::move(password);
    }
    plan.bfd = plan.bfd || out.bfd;
    plan.peers.push_back(std::move(out));
  }
  return plan;
}

std::vector<ip::Address> announced_vips(std::string_view bird_conf) {
  std::vector<ip::Address> found;
  while (!bird_conf.empty()) {
    auto end = bird_conf.find('\n');
    auto line = bird_conf.substr(0, end);
    bird_conf.remove_prefix(end == std::string_view::npos ? bird_conf.size() : end + 1);
    constexpr std::string_view prefix = "  route ", suffix = " blackhole;";
    if (!line.starts_with(prefix) || !line.ends_with(suffix)) continue;
    line.remove_prefix(prefix.size());
    line.remove_suffix(suffix.size());
    auto slash = line.find('/');
    if (slash == std::string_view::npos) continue;
    auto address = ip::Address::try_parse(std::string(line.substr(0, slash)));
    if (!address || line.substr(slash + 1) != std::to_string(ip::bits(address->family()))) continue;
    found.push_back(*address);
  }
  return found;
}

namespace detail {

std::string print_bird(const BirdPlan& plan) {
  std::string out;
  auto line = [&](std::string_view text) {
    out += text;
    out += '\n';
  };
  line("# Generated by k8slb-render; do not edit.");
  line("# The VIPs of pools with `announce: bgp`, announced to every peer. k8slb-apply node disables");
  line("# the k8slb_vips_* protocols (every route withdrawn) while this node's proxy does not answer.");
  if (plan.router_id) line(fmt::format("router id {};", plan.router_id->to_string()));
  line("log stderr all;");
  line("");
  line("protocol device k8slb_device {");
  line("}");
  struct Family {
    const char* suffix;
    const char* channel;
    const std::vector<ip::Address>* vips;
  };
  const Family families[] = {{"v4", "ipv4", &plan.vips_v4}, {"v6", "ipv6", &plan.vips_v6}};
  for (const auto& family : families) {
    line("");
    line(fmt::format("protocol static k8slb_vips_{} {{", family.suffix));
    line(fmt::format("  {};", family.channel));
    for (const auto& vip : *family.vips)
      line(fmt::format("  route {}/{} blackhole;", vip.to_string(), ip::bits(vip.family())));
    line("}");
    line("");
    // Only these routes, of this protocol, ever leave the node.
    line(fmt::format("filter k8slb_export_{} {{", family.suffix));
    if (!family.vips->empty()) {
      std::string set;
      for (const auto& vip : *family.vips)
        set += fmt::format("{}{}/{}", set.empty() ? "" : ", ", vip.to_string(), ip::bits(vip.family()));
      line(fmt::format("  if proto = \"k8slb_vips_{}\" && net ~ [ {} ] then accept;", family.suffix, set));
    }
    line("  reject;");
    line("}");
  }
  if (plan.bfd) {
    // Sub-second detection of a dead peer: 3 missed packets of 100 ms.
    line("");
    line("protocol bfd k8slb_bfd {");
    line("  interface \"*\" {");
    line("    min rx interval 100 ms;");
    line("    min tx interval 100 ms;");
    line("    multiplier 3;");
    line("  };");
    line("}");
  }
  for (const auto& peer : plan.peers) {
    const bool v4 = peer.address.family() == ip::Family::v4;
    line("");
    line(fmt::format("protocol bgp {} {{", peer.name));
    line(fmt::format("  local as {};", plan.asn));
    line(fmt::format("  neighbor {} port {} as {};", peer.address.to_string(), peer.port, peer.asn));
    if (peer.internal) line("  direct;");
    // A node that goes away takes its routes with it (no stale routes kept for a restart).
    line("  graceful restart off;");
    // After a lost session (a link cut, a hold timer), try again within seconds, not BIRD's
    // default 60-300 s.
    line("  connect retry time 5;");
    line("  error wait time 5, 60;");
    if (peer.hold_time > 0) line(fmt::format("  hold time {};", peer.hold_time));
    if (peer.bfd) line("  bfd on;");
    if (!peer.password.empty()) line(fmt::format("  password \"{}\";", peer.password));
    line(fmt::format("  {} {{", v4 ? "ipv4" : "ipv6"));
    line("    import none;");
    line(fmt::format("    export filter k8slb_export_{};", v4 ? "v4" : "v6"));
    line("  };");
    line("}");
  }
  return out;
}

} // namespace detail

Output render_bird(const Input& input) { return detail::bird_output(input, detail::check_services(input)); }

Output detail::bird_output(const Input& input, const CheckedServices& check) {
  Output output;
  if (!input.config.bgp) return output;
  auto plan = detail::plan_bird(input, check);
  output.files["bird.conf"] = detail::print_bird(plan);
  output.problems = std::move(plan.problems);
  return output;
}

} // namespace k8slb::render
