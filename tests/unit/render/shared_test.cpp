// Shared ports (Settings.shared_ports): which Service ports a shared frontend serves, which slot
// backend each gets across renderings, and what haproxy.cfg, the map and the server table say.

#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "k8slb/render.hpp"
#include "k8slb/render_model.hpp"

#include "fixture.hpp"

namespace k8slb::render {
namespace {

pool::Config pools() { return testing::documentation_pools(); }

model::ServicePort port(int number, int target = 8080) {
  model::ServicePort p;
  p.name = "p" + std::to_string(number);
  p.port = number;
  p.target_port = target;
  p.protocol = "TCP";
  return p;
}

model::Service service(std::string name, std::string vip, std::vector<model::ServicePort> ports,
                       std::map<std::string, std::string> annotations = {}) {
  model::Service s;
  s.ns = "default";
  s.name = std::move(name);
  s.type = "LoadBalancer";
  s.ports = std::move(ports);
  s.annotations = std::move(annotations);
  s.ingress_ips = {std::move(vip)};
  return s;
}

Input input_with(std::vector<model::Service> services, std::set<int> shared_ports = {80, 5432}) {
  Input input;
  input.config = pools();
  input.services = std::move(services);
  input.settings.proxy = Proxy::haproxy;
  input.settings.runtime_dir = "/run/k8slb";
  input.settings.shared_ports = std::move(shared_ports);
  return input;
}

// Service port id -> slot backend, after one rendering with `previous`.
std::map<std::string, std::string> slots_of(const std::vector<std::string>& names, const SharedSlots& previous = {}) {
  std::vector<model::Service> services;
  for (std::size_t i = 0; i < names.size(); ++i)
    services.push_back(service(names[i], "192.0.2." + std::to_string(10 + i), {port(5432)}));
  auto input = input_with(services);
  input.previous_slots = previous;
  return render_proxy(input).slots.backends;
}

TEST(Shared, WhichPortsAShareFrontendServes) {
  struct Case {
    std::string description;
    model::Service service;
    bool shared;
  };
  const std::vector<Case> cases = {
      {"layer 4 on a shared port", service("db", "192.0.2.10", {port(5432)}), true},
      {"http on 80 (its mode there)", service("web", "192.0.2.10", {port(80)}), true},
      {"IPv6", service("web", "2001:db8::10", {port(80)}), true},
      {"not a shared port", service("db", "192.0.2.10", {port(5433)}), false},
      {"layer 4 on 80 (annotated)", service("web", "192.0.2.10", {port(80)}, {{"loadbalancer/mode", "false"}}), false},
      {"http on 5432 (annotated)", service("db", "192.0.2.10", {port(5432)}, {{"loadbalancer/mode", "http"}}), false},
      {"TLS terminated", service("db", "192.0.2.10", {port(5432)}, {{"loadbalancer/ssl", "true"}}), false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with({c.service});
    auto output = render_proxy(input);
    const auto& cfg = output.files.at("haproxy.cfg");
    const std::string map_file = shared_map_file(c.service.ports[0].port);
    EXPECT_EQ(output.files.contains(map_file), c.shared);
    EXPECT_EQ(cfg.find("default_backend") == std::string::npos, c.shared) << cfg;
    if (c.shared) {
      const std::string vip = c.service.ingress_ips[0];
      EXPECT_EQ(output.files.at(map_file), vip + " shared_" + std::to_string(c.service.ports[0].port) + "_0\n");
    }
  }
  // Source ranges keep their own frontend too.
  auto ranged = service("db", "192.0.2.10", {port(5432)});
  ranged.source_ranges = {"198.51.100.0/24"};
  EXPECT_FALSE(render_proxy(input_with({ranged})).files.contains("haproxy-p5432.map"));
}

TEST(Shared, ServicesKeepTheirSlotsAndNewOnesTakeTheLowestSpare) {
  const auto first = slots_of({"a", "b", "c"});
  EXPECT_EQ(first, (std::map<std::string, std::string>{
                       {"default_a_5432", "shared_5432_0"}, {"default_b_5432", "shared_5432_1"}, {"default_c_5432", "shared_5432_2"}}));
  SharedSlots previous{first, {{5432, 19}}};
  struct Case {
    std::string description;
    std::vector<std::string> services;
    std::map<std::string, std::string> slots;
  };
  const std::vector<Case> cases = {
      {"b goes: its slot is spare", {"a", "c"}, {{"default_a_5432", "shared_5432_0"}, {"default_c_5432", "shared_5432_2"}}},
      {"a new one before the others by name takes the lowest spare, the others stay",
       {"a", "aa", "b", "c"},
       {{"default_a_5432", "shared_5432_0"}, {"default_aa_5432", "shared_5432_3"}, {"default_b_5432", "shared_5432_1"},
        {"default_c_5432", "shared_5432_2"}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(slots_of(c.services, previous), c.slots);
  }
  // b went, then d came: d takes b's slot.
  SharedSlots without_b{slots_of({"a", "c"}, previous), {{5432, 19}}};
  EXPECT_EQ(slots_of({"a", "c", "d"}, without_b).at("default_d_5432"), "shared_5432_1");
}

TEST(Shared, CapacityIsKeptUntilOutgrownOrFourTimesTooLarge) {
  struct Case {
    std::string description;
    int previous_capacity; // 0: none
    int services;
    int capacity;
  };
  const std::vector<Case> cases = {
      {"first rendering: the Services and 16 spares", 0, 3, 19},
      {"kept while they fit", 19, 19, 19},
      {"outgrown: the Services and their spares again", 19, 20, 36},
      {"an eighth of the Services once that is more than 16", 0, 800, 900},
      {"kept when smaller Services fit", 40, 3, 40},
      {"shrunk when four times what they need", 100, 3, 19},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    std::vector<std::string> names;
    for (int i = 0; i < c.services; ++i) names.push_back("s" + std::to_string(i));
    std::vector<model::Service> services;
    for (int i = 0; i < c.services; ++i)
      services.push_back(service(names[i], "192.0.2." + std::to_string(1 + i % 250), {port(5432)}));
    for (int i = 250; i < c.services; ++i) services[i].ingress_ips = {"2001:db8::" + std::to_string(i)};
    auto input = input_with(services);
    if (c.previous_capacity) input.previous_slots.capacity[5432] = c.previous_capacity;
    auto output = render_proxy(input);
    EXPECT_EQ(output.slots.capacity.at(5432), c.capacity);
    // Every slot backend is in the config and the server table, filled or spare.
    auto table = nlohmann::json::parse(output.files.at("haproxy-servers.json"));
    for (int k = 0; k < c.capacity; ++k) {
      const std::string name = "shared_5432_" + std::to_string(k);
      EXPECT_NE(output.files.at("haproxy.cfg").find("\nbackend " + name + "\n"), std::string::npos) << name;
      EXPECT_TRUE(table.contains(name)) << name;
    }
    EXPECT_FALSE(table.contains("shared_5432_" + std::to_string(c.capacity)));
  }
}

TEST(Shared, TheInstalledConfigGivesTheSlotsBack) {
  auto input = input_with({service("a", "192.0.2.10", {port(5432), port(80)}), service("b", "2001:db8::10", {port(5432)}),
                           service("c", "192.0.2.12", {port(5433)})});
  auto output = render_proxy(input);
  EXPECT_EQ(previous_shared_slots(output.files.at("haproxy.cfg")), output.slots);
  EXPECT_EQ(output.slots.backends.size(), 3u); // a:5432, a:80, b:5432
  // Rendering again from what is installed prints the same files.
  input.previous_slots = previous_shared_slots(output.files.at("haproxy.cfg"));
  EXPECT_EQ(render_proxy(input).files, output.files);
  // Lines that are not ours are skipped.
  EXPECT_EQ(previous_shared_slots("# x (not an id!)\nbackend shared_80_1\nbackend shared_0_1\nbackend shared_80_x\n"),
            (SharedSlots{{}, {{80, 2}}}));
}

TEST(Shared, TheConfigRoutesByDestinationToSlotBackends) {
  auto s = service("web", "192.0.2.10", {port(80)});
  auto input = input_with({s, service("v6", "2001:db8::10", {port(80)})});
  input.settings.min_server_slots = 2;
  auto output = render_proxy(input);
  const auto& cfg = output.files.at("haproxy.cfg");
  for (const char* expected : {"  default-path config\n",
                               "frontend shared_80\n  mode http\n  bind 0.0.0.0:80\n  bind :::80 v6only\n"
                               "  tcp-request connection reject unless { dst,map_ip(haproxy-p80.map) -m found }\n",
                               "  use_backend %[dst,map_ip(haproxy-p80.map)]\n",
                               "# default/web port 80: 0 ready of 2 slots (default_web_80)\nbackend shared_80_1\n",
                               "# port 80: spare\nbackend shared_80_2\n  mode http\n"
                               "  server s1 0.0.0.0:80 check disabled\n  server s2 0.0.0.0:80 check disabled\n"})
    EXPECT_NE(cfg.find(expected), std::string::npos) << expected << "\n----\n" << cfg;
  EXPECT_EQ(cfg.find("bind 192.0.2.10"), std::string::npos);
  EXPECT_EQ(output.files.at("haproxy-p80.map"), "192.0.2.10 shared_80_1\n2001:db8::10 shared_80_0\n");
  // Without shared ports nothing of this is printed.
  input.settings.shared_ports.clear();
  auto plain = render_proxy(input);
  EXPECT_EQ(plain.files.at("haproxy.cfg").find("shared"), std::string::npos);
  EXPECT_EQ(plain.files.at("haproxy.cfg").find("default-path"), std::string::npos);
  EXPECT_EQ(plain.files.size(), 2u);
}

// nginx has no runtime API: a new Service is still a reload, but of one server per shared port
// (a wildcard listen per family, a geo block from VIP to upstream) instead of one per VIP.
TEST(Shared, NginxServesASharedPortFromOneWildcardServer) {
  auto input = input_with({service("web", "192.0.2.10", {port(80)}), service("v6", "2001:db8::10", {port(80)}),
                           service("db", "192.0.2.11", {port(5432)})});
  input.settings.proxy = Proxy::nginx;
  auto output = render_proxy(input);
  EXPECT_TRUE(output.problems.empty());
  EXPECT_EQ(output.files.size(), 1u); // no map files: the routes are in nginx.conf
  const auto& conf = output.files.at("nginx.conf");
  for (const char* expected : {"  # port 5432: shared by 1 VIPs, routed by destination address\n"
                               "  geo $server_addr $k8slb_shared_5432 {\n    default k8slb_no_vip;\n"
                               "    192.0.2.11 default_db_5432;\n  }\n"
                               "  server {\n    listen 0.0.0.0:5432;\n    listen [::]:5432;\n"
                               "    proxy_pass $k8slb_shared_5432;\n  }\n",
                               "  geo $server_addr $k8slb_shared_80 {\n    default k8slb_no_vip;\n"
                               "    192.0.2.10 default_web_80;\n    2001:db8::10 default_v6_80;\n  }\n"
                               "  server {\n    listen 0.0.0.0:80 default_server;\n    listen [::]:80 default_server;\n"
                               "    location / {\n"
                               "      proxy_pass http://$k8slb_shared_80;\n",
                               "  upstream k8slb_no_vip {\n    server 127.0.0.1:1 down;",
                               "  # default/web port 80 (shared)\n  upstream default_web_80 {\n"})
    EXPECT_NE(conf.find(expected), std::string::npos) << expected << "\n----\n" << conf;
  EXPECT_EQ(conf.find("listen 192.0.2.10"), std::string::npos) << conf;
}

// The wildcard does not come and go with the port's Services: nginx binds a VIP's own socket
// only where there is no wildcard, and a reload cannot bind one beside the other.
TEST(Shared, NginxListensOnEverySharedPortOfThePoolsFamilies) {
  auto ranged = service("web", "192.0.2.10", {port(80)});
  ranged.source_ranges = {"198.51.100.0/24"};
  struct Case {
    std::string description;
    std::vector<model::Service> services;
  };
  const std::vector<Case> cases = {
      {"no Service", {}},
      {"only a Service with its own server on 80", {ranged}},
      {"a shared Service", {service("web", "192.0.2.10", {port(80)})}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with(c.services);
    input.settings.proxy = Proxy::nginx;
    const auto conf = render_proxy(input).files.at("nginx.conf");
    for (const char* listen : {"listen 0.0.0.0:80 default_server;", "listen [::]:80 default_server;",
                               "listen 0.0.0.0:5432;", "listen [::]:5432;"})
      EXPECT_NE(conf.find(listen), std::string::npos) << listen << "\n----\n" << conf;
  }
  // Pools of one family: that family's wildcard only.
  auto input = input_with({});
  input.settings.proxy = Proxy::nginx;
  std::erase_if(input.config.pools, [](const pool::Pool& pool) { return pool.family() == ip::Family::v6; });
  ASSERT_FALSE(input.config.pools.empty());
  const auto conf = render_proxy(input).files.at("nginx.conf");
  EXPECT_NE(conf.find("listen 0.0.0.0:80 default_server;"), std::string::npos) << conf;
  EXPECT_EQ(conf.find("listen [::]"), std::string::npos) << conf;
}

TEST(Shared, NginxRefusesAPortThatCannotBeBoundBesideASharedOne) {
  struct Case {
    std::string description;
    model::Service service;
    std::string listen; // its own listen line; empty: none (shared, or refused)
    bool refused;
  };
  const std::vector<Case> cases = {
      {"http on 80: shared", service("web", "192.0.2.10", {port(80)}), "", false},
      {"layer 4 on 80", service("raw", "192.0.2.10", {port(80)}, {{"loadbalancer/mode", "false"}}), "", true},
      {"http on 5432", service("db", "192.0.2.10", {port(5432)}, {{"loadbalancer/mode", "http"}}), "", true},
      {"TLS to the backend on 80: its own server", service("web", "192.0.2.10", {port(80)}, {{"loadbalancer/sslbackend", "true"}}),
       "listen 192.0.2.10:80;", false},
      {"TLS terminated on 80: its own server", service("web", "192.0.2.10", {port(80)}, {{"loadbalancer/ssl", "true"}}),
       "listen 192.0.2.10:80 ssl;", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with({c.service});
    input.settings.proxy = Proxy::nginx;
    auto output = render_proxy(input);
    const auto& conf = output.files.at("nginx.conf");
    ASSERT_EQ(output.problems.size(), c.refused ? 1u : 0u) << (output.problems.empty() ? "" : output.problems[0].to_string());
    if (c.refused) {
      EXPECT_EQ(output.problems[0].object, "default/" + c.service.name);
      EXPECT_EQ(output.problems[0].field, "spec.ports[0]");
      EXPECT_EQ(output.problems[0].reason, "PortConflict");
      EXPECT_EQ(conf.find("192.0.2.10"), std::string::npos) << conf;
    }
    if (!c.listen.empty()) {
      EXPECT_NE(conf.find(c.listen), std::string::npos) << conf;
    }
  }
  // HAProxy binds with SO_REUSEPORT: its own frontend there wins over the wildcard.
  auto input = input_with({service("raw", "192.0.2.10", {port(80)}, {{"loadbalancer/mode", "false"}})});
  EXPECT_TRUE(render_proxy(input).problems.empty());
}

} // namespace
} // namespace k8slb::render
