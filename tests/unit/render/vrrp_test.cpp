// VRRP decisions: rendezvous owners, router ids, priorities, versions.

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "k8slb/render.hpp"
#include "k8slb/render_model.hpp"

namespace k8slb::render {
namespace {

std::vector<std::string> vips(int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) out.push_back(fmt::format("192.0.2.{}", i + 1));
  return out;
}

TEST(Owner, AddingANodeMovesOnlyTheVipsItTakes) {
  const std::vector<std::string> three = {"lb-a", "lb-b", "lb-c"};
  const std::vector<std::string> four = {"lb-a", "lb-b", "lb-c", "lb-d"};
  int moved = 0;
  for (const auto& vip : vips(200)) {
    SCOPED_TRACE(vip);
    auto before = owner_of(vip, three), after = owner_of(vip, four);
    if (before != after) {
      EXPECT_EQ(after, "lb-d") << "a VIP moved between old nodes";
      ++moved;
    }
  }
  // lb-d takes its share: some, not all (200 VIPs, expected about 50).
  EXPECT_GT(moved, 20);
  EXPECT_LT(moved, 90);
}

TEST(Owner, RemovingANodeMovesOnlyItsVips) {
  const std::vector<std::string> three = {"lb-a", "lb-b", "lb-c"};
  const std::vector<std::string> two = {"lb-a", "lb-c"};
  for (const auto& vip : vips(200)) {
    SCOPED_TRACE(vip);
    auto before = owner_of(vip, three);
    if (before != "lb-b") {
      EXPECT_EQ(owner_of(vip, two), before);
    }
  }
}

TEST(Owner, SpreadsAndIgnoresOrderAndSpelling) {
  const std::vector<std::string> nodes = {"lb-a", "lb-b", "lb-c"};
  const std::vector<std::string> shuffled = {"lb-c", "lb-a", "lb-b"};
  std::map<std::string, int> count;
  for (const auto& vip : vips(300)) {
    EXPECT_EQ(owner_of(vip, nodes), owner_of(vip, shuffled));
    ++count[owner_of(vip, nodes)];
  }
  ASSERT_EQ(count.size(), 3u);
  for (const auto& [node, n] : count) EXPECT_GT(n, 50) << node;
  EXPECT_EQ(owner_of("2001:db8:0::1", nodes), owner_of("2001:db8::1", nodes));
  EXPECT_EQ(owner_of("192.0.2.1", {}), "");
}

Input cluster(int nodes, int pools, std::string self = "lb-0") {
  Input input;
  for (int p = 0; p < pools; ++p) {
    auto network = ip::Range::parse(fmt::format("2001:db8:{:x}::/64", p));
    input.config.pools.push_back({fmt::format("pool{:02d}", p), network, network, "eth0"});
    // One Service per (pool, owner) is enough for every instance to exist: give each pool
    // 64 IPs so every node owns some.
    for (int i = 1; i <= 64; ++i) {
      model::Service s;
      s.ns = "default";
      s.name = fmt::format("s{}-{}", p, i);
      s.type = "LoadBalancer";
      s.ingress_ips = {fmt::format("2001:db8:{:x}::{:x}", p, i)};
      input.services.push_back(s);
    }
  }
  for (int n = 0; n < nodes; ++n) {
    model::Node node;
    node.name = fmt::format("lb-{}", n);
    node.internal_ips = {fmt::format("203.0.113.{}", n + 1)};
    input.node.lb_nodes.push_back(node);
  }
  input.node.node_name = self;
  input.settings.proxy = Proxy::kubeproxy;
  return input;
}

TEST(Vrrp, RouterIdsAreUniqueUpTo255) {
  struct Case {
    int nodes, pools, offset;
    bool overflows; // offset + pools x nodes > 255: some instances cannot get an id
  };
  // The original collided at 10 nodes or pools ("1" "10" vs "11" "0"); these do not.
  const std::vector<Case> cases = {{3, 2, 0, false}, {10, 10, 0, false}, {11, 11, 0, false},
                                   {12, 12, 100, false}, {12, 12, 150, true}, {16, 16, 0, true}};
  for (const auto& c : cases) {
    SCOPED_TRACE(fmt::format("{} nodes, {} pools, offset {}", c.nodes, c.pools, c.offset));
    auto input = cluster(c.nodes, c.pools);
    input.settings.vrid_offset = c.offset;
    std::vector<std::string> names;
    for (const auto& node : input.node.lb_nodes) names.push_back(node.name);
    std::set<std::pair<std::string, std::string>> pairs; // (pool, owner) holding VIPs
    for (const auto& service : input.services)
      for (const auto& pool : input.config.pools)
        if (pool.network.contains(ip::Address::parse(service.ingress_ips[0])))
          pairs.emplace(pool.name, owner_of(service.ingress_ips[0], names));
    auto plan = plan_keepalived(input);
    EXPECT_EQ(plan.instances.size() + plan.problems.size(), pairs.size());
    EXPECT_EQ(!plan.problems.empty(), c.overflows);
    std::set<int> ids;
    for (const auto& instance : plan.instances) {
      EXPECT_GE(instance.router_id, 1);
      EXPECT_LE(instance.router_id, 255);
      EXPECT_TRUE(ids.insert(instance.router_id).second) << "router id " << instance.router_id << " twice";
    }
    for (const auto& problem : plan.problems) {
      EXPECT_EQ(problem.reason, "RouterIdOutOfRange");
      EXPECT_NE(problem.message.find("--vrid-offset"), std::string::npos) << problem.message;
    }
  }
}

TEST(Vrrp, RouterIdsStayPutWhenANodeJoinsOrAPoolIsAdded) {
  // A changed router id makes keepalived re-elect and the VIPs blink: a node joining (or a
  // pool added) must leave the other instances' ids alone.
  struct Case {
    const char* description;
    Input before, after;
  };
  Input more_pools = cluster(3, 3);
  const Case cases[] = {
      {"a fourth node joins", cluster(3, 2), cluster(4, 2)},
      {"a node leaves", cluster(4, 2), cluster(3, 2)},
      {"a third pool is added", cluster(3, 2), more_pools},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    std::map<std::string, int> before;
    for (const auto& instance : plan_keepalived(c.before).instances) before[instance.name] = instance.router_id;
    int compared = 0;
    for (const auto& instance : plan_keepalived(c.after).instances) {
      auto it = before.find(instance.name);
      if (it == before.end()) continue;
      EXPECT_EQ(instance.router_id, it->second) << instance.name;
      ++compared;
    }
    EXPECT_GE(compared, 4) << "the case compares too few instances to mean anything";
  }
}

TEST(Vrrp, PrioritiesOwnerFirstOthersDistinct) {
  const int nodes = 5;
  std::map<std::string, std::set<int>> priorities; // instance -> priorities across nodes
  std::map<std::string, int> owner_priority;
  for (int n = 0; n < nodes; ++n) {
    auto plan = plan_keepalived(cluster(nodes, 1, fmt::format("lb-{}", n)));
    ASSERT_EQ(plan.instances.size(), 5u);
    for (const auto& instance : plan.instances) {
      priorities[instance.name].insert(instance.priority);
      if (instance.owner == plan.router_id) owner_priority[instance.name] = instance.priority;
      EXPECT_EQ(instance.unicast_src, std::nullopt);
    }
  }
  for (const auto& [name, set] : priorities) {
    SCOPED_TRACE(name);
    EXPECT_EQ(set.size(), 5u) << "two nodes share a priority";
    EXPECT_EQ(owner_priority[name], render::kOwnerPriority);
    EXPECT_EQ(*set.rbegin(), render::kOwnerPriority);
  }
}

// A new (pool, owner) instance must not wait for an election before its first VIP is up: the
// owner renders it `state MASTER` at priority 255 (keepalived then skips the master-down wait),
// every other node `state BACKUP`.
TEST(Vrrp, OwnerStartsAsMasterOthersAsBackup) {
  const int nodes = 3;
  for (int n = 0; n < nodes; ++n) {
    const auto self = fmt::format("lb-{}", n);
    SCOPED_TRACE(self);
    const auto text = render_keepalived(cluster(nodes, 1, self)).files.at("keepalived.conf");
    int masters = 0, backups = 0;
    for (const auto& instance : plan_keepalived(cluster(nodes, 1, self)).instances) {
      const auto block = text.substr(text.find(fmt::format("vrrp_instance {} {{", instance.name)));
      const auto state = block.substr(0, block.find("\n}\n")).find("\n  state MASTER\n") != std::string::npos;
      EXPECT_EQ(state, instance.owner == self) << instance.name;
      EXPECT_EQ(instance.priority == kOwnerPriority, instance.owner == self) << instance.name;
      (state ? masters : backups) += 1;
    }
    EXPECT_EQ(masters, 1);
    EXPECT_EQ(backups, nodes - 1);
  }
}

// A backup drops adverts whose VIP list differs from its own, and the nodes reload one after
// the other: with every VIP advertised, one Service added on the master made the backup take the
// whole instance. Only the lowest VIP is advertised; the others are excluded VIPs, held alike.
// (It also keeps keepalived -t from refusing an instance past 89 IPv6 VIPs.)
TEST(Vrrp, OnlyTheLowestVipIsAdvertised) {
  struct Case {
    std::string description;
    std::string network;
    int vips;
  };
  const std::vector<Case> cases = {
      {"one VIP: advertised, nothing excluded", "192.0.2.0/24", 1},
      {"a few IPv4 VIPs", "192.0.2.0/24", 20},
      {"IPv4, the whole /24", "203.0.113.0/24", 254},
      {"IPv6, more than an advert could carry", "2001:db8:1::/64", 300},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    Input input;
    auto network = ip::Range::parse(c.network);
    input.config.pools.push_back({"big", network, network, "eth0"});
    std::vector<ip::Address> all;
    for (int i = c.vips; i >= 1; --i) { // out of order: the plan sorts
      auto vip = ip::Address(network.first().family(), network.first().value() + i);
      all.insert(all.begin(), vip);
      model::Service service;
      service.ns = "default";
      service.name = fmt::format("s{}", i);
      service.type = "LoadBalancer";
      service.ingress_ips = {vip.to_string()};
      input.services.push_back(service);
    }
    input.settings.proxy = Proxy::kubeproxy;
    const auto plan = plan_keepalived(input);
    ASSERT_EQ(plan.instances.size(), 1u);
    const auto& instance = plan.instances.front();
    EXPECT_EQ(instance.vips, std::vector<ip::Address>{all.front()});
    auto held = instance.vips;
    held.insert(held.end(), instance.excluded_vips.begin(), instance.excluded_vips.end());
    EXPECT_EQ(held, all) << "every VIP held once, in order";
    const auto text = render_keepalived(input).files.at("keepalived.conf");
    EXPECT_EQ(text.find("virtual_ipaddress_excluded {") != std::string::npos, c.vips > 1);
    EXPECT_NE(text.find("\n  vrrp_skip_check_adv_addr\n"), std::string::npos);
  }
}

TEST(Vrrp, SameInstancesOnEveryNode) {
  auto a = plan_keepalived(cluster(4, 3, "lb-0"));
  auto b = plan_keepalived(cluster(4, 3, "lb-3"));
  ASSERT_EQ(a.instances.size(), b.instances.size());
  for (std::size_t i = 0; i < a.instances.size(); ++i) {
    EXPECT_EQ(a.instances[i].name, b.instances[i].name);
    EXPECT_EQ(a.instances[i].router_id, b.instances[i].router_id);
    EXPECT_EQ(a.instances[i].vips, b.instances[i].vips);
  }
}

TEST(Vrrp, PasswordVersionUnicastAndAdverts) {
  auto input = cluster(3, 1, "lb-1");
  input.config.pools.push_back({"v4", ip::Range::parse("192.0.2.0/24"), ip::Range::parse("192.0.2.0/24"), "eth0"});
  model::Service v4;
  v4.ns = "default";
  v4.name = "v4";
  v4.type = "LoadBalancer";
  v4.ingress_ips = {"192.0.2.10"};
  input.services.push_back(v4);
  input.node.lb_nodes[0].internal_ips.push_back("2001:db8:ffff::a");
  input.node.lb_nodes[1].internal_ips.push_back("2001:db8:ffff::b");
  input.settings.vrrp_password = "s3cret";
  input.settings.unicast = true;
  input.settings.advert_int_cs = 150;
  auto output = render_keepalived(input);
  const auto& text = output.files.at("keepalived.conf");
  EXPECT_NE(text.find("vrrp_version 2"), std::string::npos);
  EXPECT_NE(text.find("auth_pass s3cret"), std::string::npos);
  EXPECT_NE(text.find("advert_int 2\n"), std::string::npos) << "VRRPv2 rounds up to whole seconds";
  EXPECT_NE(text.find("version 3\n  advert_int 1.5\n"), std::string::npos) << "IPv6 stays VRRPv3";
  EXPECT_NE(text.find("unicast_src_ip 203.0.113.2"), std::string::npos);
  EXPECT_NE(text.find("unicast_src_ip 2001:db8:ffff::b"), std::string::npos);
  // lb-2 has no IPv6 InternalIP: reported, not a peer.
  bool reported = false;
  for (const auto& p : output.problems) reported |= p.object == "nodes/lb-2" && p.reason == "NoUnicastAddress";
  EXPECT_TRUE(reported);
}

// A crashed master's VIPs move once its backups' master-down interval (3 adverts plus the skew
// (256 - priority) / 256 of an advert, RFC 5798) runs out: with the default 0.05 s adverts that
// is under 0.2 s on every backup, leaving room for the gratuitous ARP within 0.3 s. Not rendered:
// vrrp_rt_priority (with it, a reload that added an instance left another VIP on no node).
TEST(Vrrp, DefaultTimersFailOverInUnder200msWithoutRealTimePriority) {
  auto input = cluster(4, 1, "lb-1");
  const auto text = render_keepalived(input).files.at("keepalived.conf");
  const auto global_defs = text.substr(0, text.find("\n}\n"));
  EXPECT_EQ(global_defs.find("vrrp_rt_priority"), std::string::npos)
      << text;
  const auto plan = plan_keepalived(input);
  ASSERT_FALSE(plan.instances.empty());
  EXPECT_EQ(plan.advert_int, "0.05");
  EXPECT_EQ(text.find("advert_int 0.2"), std::string::npos);
  for (const auto& instance : plan.instances) {
    if (instance.priority == render::kOwnerPriority) continue;
    SCOPED_TRACE(instance.name);
    const double advert = input.settings.advert_int_cs / 100.0;
    const double master_down = 3 * advert + (256 - instance.priority) * advert / 256;
    EXPECT_LT(master_down, 0.2);
  }
}

TEST(Vrrp, BadSettingsAndNodes) {
  struct Case {
    std::string description;
    std::function<void(Input&)> change;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"password too long", [](Input& i) { i.settings.vrrp_password = "123456789"; }, "settings: vrrp_password:"},
      {"password with a space", [](Input& i) { i.settings.vrrp_password = "a b"; }, "settings: vrrp_password:"},
      {"password with a comment char", [](Input& i) { i.settings.vrrp_password = "a#b"; }, "settings: vrrp_password:"},
      {"advert 0", [](Input& i) { i.settings.advert_int_cs = 0; }, "settings: advert_int_cs:"},
      {"this node unknown", [](Input& i) { i.node.node_name = "lb-9"; }, "node: name: lb-9 is not one of"},
      {"no node name with several nodes", [](Input& i) { i.node.node_name = ""; }, "node: name:"},
      {"email with a brace", [](Input& i) { i.config.keepalived.email = "a@b }"; }, "keepalived.email:"},
      {"notify script relative", [](Input& i) { i.settings.notify_script = "notify.sh"; }, "settings: notify_script:"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = cluster(3, 1);
    c.change(input);
    try {
      render_keepalived(input);
      ADD_FAILURE() << "no error";
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()).rfind(c.error, 0), 0u) << error.what();
    }
  }
}

TEST(Vrrp, OfflineWithoutNodesIsOneNode) {
  auto input = cluster(0, 1, "");
  auto plan = plan_keepalived(input);
  EXPECT_EQ(plan.router_id, "local");
  ASSERT_EQ(plan.instances.size(), 1u);
  EXPECT_EQ(plan.instances.front().priority, render::kOwnerPriority);
  EXPECT_EQ(plan.instances.front().vips.size() + plan.instances.front().excluded_vips.size(), 64u);
}

TEST(Vrrp, PoolWithoutInterfaceIsAProblem) {
  auto input = cluster(2, 2);
  input.config.pools[1].interface = "";
  node::Interface eth0;
  eth0.name = "eth0";
  eth0.addresses = {ip::Prefix::parse("2001:db8:0::1/64")};
  input.node.interfaces = {eth0};
  auto plan = plan_keepalived(input);
  ASSERT_EQ(plan.problems.size(), 1u);
  EXPECT_EQ(plan.problems.front().object, "pools.pool01");
  EXPECT_EQ(plan.problems.front().field, "interface");
  EXPECT_EQ(plan.instances.size(), 2u) << "pool00 still renders";
}

TEST(Vrrp, PoolTheNodeCannotPlaceKeepsItsLastGoodInterface) {
  node::Interface eth0;
  eth0.name = "eth0";
  eth0.addresses = {ip::Prefix::parse("2001:db8:0::1/64")};
  struct Case {
    std::string description;
    std::map<std::string, std::string> previous;
    std::string interface; // of pool01's instances; empty: none
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"no last good config: the pool is not held",
       {},
       "",
       "pools.pool01: interface: no interface named 'eth9' on this node; the pool's IPs are not held by this node"},
      {"last good interface eth0: kept",
       {{"pool01", "eth0"}},
       "eth0",
       "pools.pool01: interface: no interface named 'eth9' on this node; keeping the last good interface eth0 "
       "for the pool's IPs"},
      {"last good interface is gone too: not held",
       {{"pool01", "eth1"}},
       "",
       "pools.pool01: interface: no interface named 'eth9' on this node; the pool's IPs are not held by this node"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = cluster(2, 2);
    input.node.interfaces = {eth0};
    input.config.pools[1].interface = "eth9";
    input.previous_interfaces = c.previous;
    // A Service of pool01 deleted meanwhile: its VIP goes, the others stay.
    input.services.erase(std::find_if(input.services.begin(), input.services.end(),
                                      [](const model::Service& s) { return s.name == "s1-1"; }));
    auto plan = plan_keepalived(input);
    ASSERT_EQ(plan.problems.size(), 1u);
    EXPECT_EQ(plan.problems.front().to_string(), c.problem);
    std::set<std::string> interfaces;
    std::size_t vips = 0;
    for (const auto& instance : plan.instances) {
      if (instance.pool != "pool01") continue;
      interfaces.insert(instance.interface);
      vips += instance.vips.size() + instance.excluded_vips.size();
    }
    EXPECT_EQ(interfaces, c.interface.empty() ? std::set<std::string>{} : std::set<std::string>{c.interface});
    EXPECT_EQ(vips, c.interface.empty() ? 0u : 63u);
  }
}

TEST(Vrrp, PreviousInterfacesFromARenderedConfig) {
  auto input = cluster(2, 2);
  node::Interface eth0, eth1;
  eth0.name = "eth0";
  eth1.name = "eth1";
  input.node.interfaces = {eth0, eth1};
  input.config.pools[1].interface = "eth1";
  auto output = render_keepalived(input);
  auto conf = output.files.at("keepalived.conf");
  EXPECT_EQ(previous_interfaces(conf), (std::map<std::string, std::string>{{"pool00", "eth0"}, {"pool01", "eth1"}}));
  // What the renderer hands the next rendering is what a restart reads back from the file.
  EXPECT_EQ(output.interfaces, previous_interfaces(conf));
  EXPECT_EQ(render_all(input).interfaces, output.interfaces);
  EXPECT_EQ(previous_interfaces(""), (std::map<std::string, std::string>{}));
  EXPECT_EQ(previous_interfaces("# pool bad name: first choice x\nvrrp_instance x {\n  interface eth0\n}\n"
                                "# pool p: first choice x\nvrrp_instance y {\n  interface 'eth0;\n}\n"),
            (std::map<std::string, std::string>{}));
}

TEST(Vrrp, KeepalivedTracksTheProxy) {
  struct Case {
    std::string description;
    Proxy proxy;
    std::string proxy_check;
    bool tracked;
  };
  const std::vector<Case> cases = {
      {"haproxy, tracked", Proxy::haproxy, "/usr/bin/k8slb-apply", true},
      {"nginx, tracked", Proxy::nginx, "/usr/bin/k8slb-apply", true},
      {"kubeproxy: no proxy to track", Proxy::kubeproxy, "/usr/bin/k8slb-apply", false},
      {"not asked for", Proxy::haproxy, "", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = cluster(2, 1);
    input.settings.proxy = c.proxy;
    input.settings.proxy_check = c.proxy_check;
    auto conf = render_keepalived(input).files.at("keepalived.conf");
    const std::string script = fmt::format("vrrp_script k8slb_proxy {{\n  script \"/usr/bin/k8slb-apply health --proxy {} "
                                           "--runtime-dir /run/k8slb\"\n  interval 1\n  timeout 2\n  fall 1\n  rise 2\n}}\n",
                                           to_string(c.proxy));
    EXPECT_EQ(conf.find(script) != std::string::npos, c.tracked) << conf;
    std::size_t tracks = 0;
    for (auto at = conf.find("  track_script {\n    k8slb_proxy\n  }\n"); at != std::string::npos;
         at = conf.find("  track_script {", at + 1))
      ++tracks;
    EXPECT_EQ(tracks, c.tracked ? 2u : 0u) << "every instance tracks the proxy";
    EXPECT_EQ(conf.find("script_user root") != std::string::npos, c.tracked);
  }
  auto input = cluster(1, 1);
  input.settings.proxy = Proxy::haproxy;
  input.settings.proxy_check = "/usr/bin/k8slb-apply; reboot";
  EXPECT_THROW(plan_keepalived(input), Error);
}

} // namespace
} // namespace k8slb::render
