// The proxy decisions, as tables: http/tcp, TLS, TLS to the backend, redirect, checks, slots,
// protocols per proxy, conflicts, and values outside their grammar.

#include <algorithm>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "k8slb/render.hpp"
#include "k8slb/render_model.hpp"

#include "fixture.hpp"

#include <nlohmann/json.hpp>

namespace k8slb::render {
namespace {

pool::Config pools() { return testing::documentation_pools(); }

model::Service service(std::vector<model::ServicePort> ports, std::map<std::string, std::string> annotations = {},
                       std::vector<std::string> ingress = {"192.0.2.10"}) {
  model::Service s;
  s.ns = "default";
  s.name = "app";
  s.type = "LoadBalancer";
  s.ports = std::move(ports);
  s.annotations = std::move(annotations);
  s.ingress_ips = std::move(ingress);
  return s;
}

model::ServicePort port(std::string name, int number, int target, std::string protocol = "TCP") {
  model::ServicePort p;
  p.name = std::move(name);
  p.port = number;
  p.target_port = target;
  p.protocol = std::move(protocol);
  return p;
}

Input input_with(std::vector<model::Service> services, Proxy proxy = Proxy::haproxy) {
  Input input;
  input.config = pools();
  input.services = std::move(services);
  input.settings.proxy = proxy;
  return input;
}

model::Endpoint endpoint(std::string address, bool ready = true) {
  model::Endpoint e;
  e.addresses = {std::move(address)};
  e.ready = ready;
  return e;
}

TEST(Decisions, MissingCertificateLeavesOutOnlyThatTlsPort) {
  struct Case {
    std::string description;
    Proxy proxy;
    std::optional<std::set<std::string>> certificates;
    std::vector<int> rendered_ports;
    std::vector<std::string> problems;
  };
  const std::string missing_pem =
      "default/app: spec.ports[1]: port 443: no readable certificate /etc/certs/default.pem (pool default); "
      "this TLS port is not rendered on 192.0.2.10";
  const std::vector<Case> cases = {
      {"not checked (offline)", Proxy::haproxy, std::nullopt, {443}, {}},
      {"haproxy: the pem is there", Proxy::haproxy, std::set<std::string>{"default.pem"}, {443}, {}},
      {"haproxy: no pem", Proxy::haproxy, std::set<std::string>{"other.pem"}, {}, {missing_pem}},
      {"nginx: pem and key", Proxy::nginx, std::set<std::string>{"default.pem", "default.key"}, {443}, {}},
      {"nginx: no key", Proxy::nginx, std::set<std::string>{"default.pem"}, {},
       {"default/app: spec.ports[1]: port 443: no readable certificate /etc/certs/default.key (pool default); "
        "this TLS port is not rendered on 192.0.2.10"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto other = service({port("http", 8080, 8080)}, {}, {"192.0.2.11"});
    other.name = "other";
    auto input = input_with({service({port("http", 80, 8080), port("https", 443, 8080)}), other}, c.proxy);
    input.certificates = c.certificates;
    auto plan = plan_proxy(input);
    std::vector<int> ports;
    for (const auto& p : plan.ports)
      if (p.name == "app") ports.push_back(p.port);
    EXPECT_EQ(ports, c.rendered_ports);
    // Port 80 redirects in every case: a missing certificate never turns it into plain http.
    ASSERT_EQ(plan.redirects.size(), 1u);
    EXPECT_EQ(plan.redirects.front().name, "app");
    EXPECT_TRUE(std::any_of(plan.ports.begin(), plan.ports.end(), [](const PortPlan& p) { return p.name == "other"; }))
        << "every other Service still renders";
    std::vector<std::string> problems;
    for (const auto& problem : plan.problems) problems.push_back(problem.to_string());
    EXPECT_EQ(problems, c.problems);
  }
}

TEST(Decisions, NginxConnectionsSizedFromListeners) {
  std::vector<model::Service> services;
  for (int i = 0; i < 600; ++i) {
    auto s = service({port("tcp", 1000 + i, 9000)}, {}, {"192.0.2.10"});
    s.name = fmt::format("app{}", i);
    services.push_back(s);
  }
  struct Case {
    std::string description;
    std::vector<std::string> global;
    std::vector<std::string> expected;
    std::vector<std::string> absent;
  };
  const std::vector<Case> cases = {
      {"sized: 600 listeners + 4096", {}, {"worker_rlimit_nofile 4952;\n", "events { worker_connections 4696; }\n"}, {}},
      {"nginx.global sets both", {"worker_rlimit_nofile 100000;", "events { worker_connections 20000; }"},
       {"worker_rlimit_nofile 100000;\n", "events { worker_connections 20000; }\n"},
       {"worker_rlimit_nofile 4952;", "worker_connections 4696;"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with(services, Proxy::nginx);
    input.config.nginx.global = c.global;
    auto conf = render_proxy(input).files.at("nginx.conf");
    for (const auto& text : c.expected) EXPECT_NE(conf.find(text), std::string::npos) << text;
    for (const auto& text : c.absent) EXPECT_EQ(conf.find(text), std::string::npos) << text;
  }
}

TEST(Decisions, ModeAndTlsPerAnnotation) {
  struct Case {
    std::string description;
    model::ServicePort port;
    std::map<std::string, std::string> annotations;
    Mode mode;
    bool tls, tls_backend, check;
  };
  const std::vector<Case> cases = {
      {"80 is http, no TLS", port("web", 80, 8080), {}, Mode::http, false, false, true},
      {"443 is http with TLS", port("web", 443, 8080), {}, Mode::http, true, false, true},
      {"targetPort 80 makes http", port("web", 8080, 80), {}, Mode::http, false, false, true},
      {"targetPort 443 means TLS to the backend", port("web", 8443, 443), {}, Mode::http, false, true, true},
      {"other ports are tcp", port("db", 5432, 5432), {}, Mode::tcp, false, false, true},
      {"port named https* terminates TLS", port("https-admin", 8443, 9000), {}, Mode::tcp, true, false, true},
      {"mode http forces layer 7", port("db", 5432, 5432), {{"loadbalancer/mode", "http"}}, Mode::http, false, false, true},
      {"mode false keeps 80 at layer 4", port("web", 80, 80), {{"loadbalancer/mode", "false"}}, Mode::tcp, false, false, true},
      {"ssl false forbids TLS on 443", port("web", 443, 8080), {{"loadbalancer/ssl", "false"}}, Mode::http, false, false, true},
      {"ssl true forces TLS", port("db", 5432, 5432), {{"loadbalancer/ssl", "true"}}, Mode::tcp, true, false, true},
      {"sslbackend false on targetPort 443", port("web", 443, 443), {{"loadbalancer/sslbackend", "false"}}, Mode::http, true, false, true},
      {"sslbackend true forces it", port("db", 5432, 5432), {{"loadbalancer/sslbackend", "true"}}, Mode::tcp, false, true, true},
      {"nocheck true turns checks off", port("db", 5432, 5432), {{"loadbalancer/nocheck", "true"}}, Mode::tcp, false, false, false},
      {"nocheck false keeps them", port("db", 5432, 5432), {{"loadbalancer/nocheck", "false"}}, Mode::tcp, false, false, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto plan = plan_proxy(input_with({service({c.port}, c.annotations)}));
    ASSERT_TRUE(plan.problems.empty()) << plan.problems.front().to_string();
    ASSERT_EQ(plan.ports.size(), 1u);
    const auto& p = plan.ports.front();
    EXPECT_EQ(p.mode, c.mode);
    EXPECT_EQ(p.tls, c.tls);
    EXPECT_EQ(p.tls_backend, c.tls_backend);
    EXPECT_EQ(p.check, c.check);
  }
}

TEST(Decisions, Redirects) {
  struct Case {
    std::string description;
    std::vector<model::ServicePort> ports;
    std::map<std::string, std::string> annotations;
    std::vector<int> redirect_to; // one per redirect
    std::vector<int> forwarded;   // the ports proxied to the pods
  };
  const std::vector<Case> cases = {
      {"TLS http-mode 443 gets a redirect", {port("https", 443, 8080)}, {}, {443}, {443}},
      {"not with sslredirect false", {port("https", 443, 8080)}, {{"loadbalancer/sslredirect", "false"}}, {}, {443}},
      {"the Service's own port 80 redirects (the original's behaviour)",
       {port("http", 80, 8080), port("https", 443, 8080)}, {}, {443}, {443}},
      {"its own port 80 forwards with sslredirect false",
       {port("http", 80, 8080), port("https", 443, 8080)}, {{"loadbalancer/sslredirect", "false"}}, {}, {80, 443}},
      {"its own port 80 at layer 4 stays", {port("http", 80, 8080), port("https", 443, 8080)},
       {{"loadbalancer/mode", "false"}}, {}, {80, 443}},
      {"its own port 80 with TLS stays", {port("http", 80, 8080), port("https", 443, 8080)},
       {{"loadbalancer/ssl", "true"}}, {}, {80, 443}},
      {"port 80 and 8443 (not 443): redirect to 8443", {port("http", 80, 8080), port("https-admin", 8443, 9000)},
       {{"loadbalancer/mode", "http"}}, {8443}, {8443}},
      {"port 80 alone is forwarded", {port("http", 80, 8080)}, {}, {}, {80}},
      {"not for TLS at layer 4", {port("https", 443, 8080)}, {{"loadbalancer/mode", "false"}}, {}, {443}},
      {"to the TLS port when it is not 443", {port("https-admin", 8443, 9000)}, {{"loadbalancer/mode", "http"}}, {8443}, {8443}},
      {"443 preferred over other TLS ports", {port("https-admin", 8443, 9000), port("https", 443, 8080)}, {}, {443},
       {443, 8443}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto plan = plan_proxy(input_with({service(c.ports, c.annotations)}));
    std::vector<int> to;
    for (const auto& r : plan.redirects) to.push_back(r.to_port);
    EXPECT_EQ(to, c.redirect_to);
    std::vector<int> forwarded;
    for (const auto& p : plan.ports) forwarded.push_back(p.port);
    EXPECT_EQ(forwarded, c.forwarded);
    EXPECT_TRUE(plan.problems.empty());
  }
}

TEST(Decisions, RedirectYieldsToAnotherServiceOnPort80) {
  auto secure = service({port("https", 443, 8080)});
  auto plain = service({port("http", 80, 8080)});
  plain.name = "plain"; // shares 192.0.2.10
  auto plan = plan_proxy(input_with({secure, plain}));
  EXPECT_TRUE(plan.redirects.empty());
  EXPECT_TRUE(plan.problems.empty());
  EXPECT_EQ(plan.ports.size(), 2u);
}

TEST(Decisions, ServerSlots) {
  struct Case {
    int endpoints, min_slots, slots;
  };
  const std::vector<Case> cases = {{0, 8, 8}, {1, 8, 8}, {8, 8, 8}, {9, 8, 16}, {17, 8, 32},
                                   {0, 1, 1}, {3, 1, 4}, {1000, 8, 1024}};
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.endpoints << " endpoints, at least " << c.min_slots);
    EXPECT_EQ(server_slots(c.endpoints, c.min_slots), c.slots);
  }
}

TEST(Decisions, SlotsAreFilledSortedThenDisabled) {
  auto s = service({port("db", 5432, 5432)});
  model::EndpointSlice slice;
  slice.ns = "default";
  slice.name = "app-1";
  slice.service_name = "app";
  slice.address_type = "IPv4";
  slice.ports.push_back({"db", "TCP", 6432});
  for (auto address : {"198.51.100.9", "198.51.100.2", "198.51.100.10"}) slice.endpoints.push_back(endpoint(address));
  slice.endpoints.push_back(endpoint("198.51.100.50", false)); // not ready
  auto input = input_with({s});
  input.slices = {slice};
  input.settings.min_server_slots = 4;
  auto plan = plan_proxy(input);
  ASSERT_EQ(plan.ports.size(), 1u);
  const auto& servers = plan.ports.front().servers;
  ASSERT_EQ(servers.size(), 4u);
  EXPECT_EQ(servers[0].address.to_string(), "198.51.100.2");
  EXPECT_EQ(servers[1].address.to_string(), "198.51.100.9");
  EXPECT_EQ(servers[2].address.to_string(), "198.51.100.10");
  EXPECT_EQ(servers[2].port, 6432);
  EXPECT_TRUE(servers[2].enabled);
  EXPECT_EQ(servers[3].name, "s4");
  EXPECT_FALSE(servers[3].enabled);
  EXPECT_EQ(plan.ports.front().filled, 3);
  auto cfg = render_proxy(input).files.at("haproxy.cfg");
  EXPECT_NE(cfg.find("server s4 0.0.0.0:5432 check disabled"), std::string::npos) << cfg;
  EXPECT_EQ(cfg.find("198.51.100.50"), std::string::npos) << "a not-ready endpoint is rendered";
}

TEST(Decisions, ProtocolsPerProxy) {
  struct Case {
    std::string description;
    Proxy proxy;
    std::string protocol;
    bool rendered;
    std::string problem; // substring of the problem, empty when none
  };
  const std::vector<Case> cases = {
      {"haproxy carries TCP", Proxy::haproxy, "TCP", true, ""},
      {"haproxy reports UDP", Proxy::haproxy, "UDP",  false,
       "default/app: spec.ports[0].protocol: UDP is not carried by haproxy; use the nginx proxy"},
      {"haproxy reports SCTP", Proxy::haproxy, "SCTP", false, "SCTP is not carried by haproxy"},
      {"nginx carries UDP", Proxy::nginx, "UDP", true, ""},
      {"nginx reports SCTP", Proxy::nginx, "SCTP", false, "default/app: spec.ports[0].protocol: SCTP is not carried by nginx"},
      {"unknown protocol", Proxy::nginx, "ICMP", false, "default/app: spec.ports[0].protocol: \"ICMP\" is not TCP, UDP or SCTP"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto plan = plan_proxy(input_with({service({port("dns", 53, 53, c.protocol), port("web", 80, 80)})}, c.proxy));
    EXPECT_EQ(plan.ports.size(), c.rendered ? 2u : 1u) << "the other port still renders";
    if (c.problem.empty()) {
      EXPECT_TRUE(plan.problems.empty());
    } else {
      ASSERT_EQ(plan.problems.size(), 1u);
      EXPECT_NE(plan.problems.front().to_string().find(c.problem), std::string::npos)
          << plan.problems.front().to_string();
    }
  }
}

TEST(Decisions, KubeproxyRendersNoProxyFile) {
  auto output = render_proxy(input_with({service({port("dns", 53, 53, "SCTP")})}, Proxy::kubeproxy));
  EXPECT_TRUE(output.files.empty());
  EXPECT_TRUE(output.problems.empty());
}

TEST(Decisions, PortConflictOnSharedVip) {
  auto first = service({port("web", 8080, 8080)});
  auto second = service({port("web", 8080, 8080), port("other", 9090, 9090)});
  second.name = "zzz";
  auto plan = plan_proxy(input_with({second, first}));
  ASSERT_EQ(plan.problems.size(), 1u);
  EXPECT_EQ(plan.problems.front().to_string(),
            "default/zzz: spec.ports[0]: 192.0.2.10:8080 TCP is already used by default/app; not rendered on this IP");
  ASSERT_EQ(plan.ports.size(), 2u);
  EXPECT_EQ(plan.ports[0].name, "app");
  EXPECT_EQ(plan.ports[1].port, 9090);
}

TEST(Decisions, SortedByNamespaceNamePort) {
  auto a = service({port("b", 9000, 9000), port("a", 8000, 8000)});
  auto b = service({port("a", 7000, 7000)}, {}, {"192.0.2.11"});
  b.ns = "aaa";
  auto plan = plan_proxy(input_with({a, b}));
  std::vector<std::string> ids;
  for (const auto& p : plan.ports) ids.push_back(p.id());
  EXPECT_EQ(ids, (std::vector<std::string>{"aaa_app_7000", "default_app_8000", "default_app_9000"}));
}

TEST(Decisions, SkipsServicesThatAreNotOurs) {
  auto other_class = service({port("web", 80, 80)});
  other_class.lb_class = "example.com/other";
  auto not_lb = service({port("web", 80, 80)}, {}, {"192.0.2.12"});
  not_lb.name = "cluster-ip";
  not_lb.type = "ClusterIP";
  auto no_ip = service({port("web", 80, 80)}, {}, {});
  no_ip.name = "pending";
  auto plan = plan_proxy(input_with({other_class, not_lb, no_ip}));
  EXPECT_TRUE(plan.ports.empty());
  EXPECT_TRUE(plan.problems.empty());
}

TEST(Decisions, IpsOutsidePoolsAndSecondIpOfAFamily) {
  auto plan = plan_proxy(input_with({service({port("web", 8080, 8080)}, {}, {"203.0.113.5", "192.0.2.10", "192.0.2.11", "2001:db8::5"})}));
  ASSERT_EQ(plan.ports.size(), 1u);
  ASSERT_EQ(plan.ports.front().vips.size(), 2u);
  EXPECT_EQ(plan.ports.front().vips[0], (Vip{ip::Address::parse("192.0.2.10"), "default"}));
  EXPECT_EQ(plan.ports.front().vips[1], (Vip{ip::Address::parse("2001:db8::5"), "ipv6"}));
  ASSERT_EQ(plan.problems.size(), 2u);
  EXPECT_EQ(plan.problems[0].field, "status.loadBalancer.ingress[0].ip");
  EXPECT_EQ(plan.problems[1].field, "status.loadBalancer.ingress[2].ip");
}

// Values from the cluster that would inject text into a config: each is refused with the
// Service and field named, and nothing of it reaches any file; a good Service beside it renders.
TEST(Decisions, InjectionAttemptsAreRefused) {
  struct Case {
    std::string description;
    model::Service service;
    std::string problem; // "object: field" prefix
    std::string payload; // must not appear in any rendered file
  };
  auto annotated = [](std::string key, std::string value) {
    auto s = service({port("web", 8080, 8080)}, {{key, value}});
    s.name = "evil";
    return s;
  };
  auto with = [](auto change) {
    auto s = service({port("web", 8080, 8080)});
    s.name = "evil";
    change(s);
    return s;
  };
  const std::vector<Case> cases = {
      {"newline in mode", annotated("loadbalancer/mode", "http\n  server x 203.0.113.66:80"),
       "default/evil: metadata.annotations[loadbalancer/mode]", "203.0.113.66"},
      {"brace in ssl", annotated("loadbalancer/ssl", "true }"), "default/evil: metadata.annotations[loadbalancer/ssl]", "true }"},
      {"semicolon in sslbackend", annotated("loadbalancer/sslbackend", "true; evil"),
       "default/evil: metadata.annotations[loadbalancer/sslbackend]", "evil;"},
      {"nocheck yes", annotated("loadbalancer/nocheck", "yes"), "default/evil: metadata.annotations[loadbalancer/nocheck]", "yes"},
      {"sslredirect with newline", annotated("loadbalancer/sslredirect", "false\n"),
       "default/evil: metadata.annotations[loadbalancer/sslredirect]", "false\n"},
      {"IP with a command", with([](model::Service& s) { s.ingress_ips = {"192.0.2.66; evil"}; }),
       "default/evil: status.loadBalancer.ingress[0].ip", "evil"},
      {"IP with a newline", with([](model::Service& s) { s.ingress_ips = {"192.0.2.66\nbackend x"}; }),
       "default/evil: status.loadBalancer.ingress[0].ip", "backend x"},
      {"source range with a brace", with([](model::Service& s) { s.source_ranges = {"0.0.0.0/0 }"}; }),
       "default/evil: spec.loadBalancerSourceRanges[0]", "0.0.0.0/0"},
      {"port name with spaces", with([](model::Service& s) { s.ports[0].name = "web admin"; }),
       "default/evil: spec.ports[0].name", "web admin"},
      {"protocol with a newline", with([](model::Service& s) { s.ports[0].protocol = "TCP\nx"; }),
       "default/evil: spec.ports[0].protocol", "TCP\nx"},
      {"name with a space", with([](model::Service& s) { s.name = "evil app"; }), "default/evil app: metadata.name", "evil app"},
      {"namespace with a slash", with([](model::Service& s) { s.ns = "a/b"; }), "a/b/evil: metadata.namespace", "a/b"},
  };
  auto good = service({port("web", 80, 8080)}, {}, {"192.0.2.20"});
  good.name = "good";
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    for (auto proxy : {Proxy::haproxy, Proxy::nginx}) {
      SCOPED_TRACE(to_string(proxy));
      auto input = input_with({c.service, good}, proxy);
      input.node.node_name = "lb-a";
      auto output = render_all(input);
      ASSERT_FALSE(output.problems.empty());
      EXPECT_EQ(output.problems.front().to_string().rfind(c.problem, 0), 0u) << output.problems.front().to_string();
      for (const auto& [name, text] : output.files) {
        EXPECT_EQ(text.find(c.payload), std::string::npos) << name;
        EXPECT_EQ(text.find("evil"), std::string::npos) << name;
        const bool lists_servers = name == "haproxy-servers.json"; // backend names, no VIPs
        EXPECT_NE(text.find(lists_servers ? "default_good_80" : "192.0.2.20"), std::string::npos)
            << name << ": the good Service is missing";
      }
    }
  }
}

TEST(Decisions, UnsafeSettingsAreErrors) {
  struct Case {
    std::string description;
    std::function<void(Settings&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"cert_dir with a space", [](Settings& s) { s.cert_dir = "/etc/my certs"; }, "settings: cert_dir:"},
      {"relative runtime_dir", [](Settings& s) { s.runtime_dir = "run"; }, "settings: runtime_dir:"},
      {"cert_dir climbing out", [](Settings& s) { s.cert_dir = "/etc/../tmp"; }, "settings: cert_dir:"},
      {"zero slots", [](Settings& s) { s.min_server_slots = 0; }, "settings: min_server_slots:"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with({service({port("web", 80, 80)})});
    c.change(input.settings);
    try {
      render_proxy(input);
      ADD_FAILURE() << "no error";
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()).rfind(c.message, 0), 0u) << error.what();
    }
  }
}

TEST(Decisions, IdsKeepPartsApart) {
  PortPlan a;
  a.ns = "a-b";
  a.name = "c";
  a.port = 53;
  a.protocol = Protocol::udp;
  PortPlan b = a;
  b.ns = "a";
  b.name = "b-c";
  EXPECT_EQ(a.id(), "a-b_c_53_udp");
  EXPECT_NE(a.id(), b.id());
}


namespace headers {

int count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

} // namespace headers

// A header the config document sets replaces ours: each reaches the pods once. One http-mode
// port (one location, one frontend) per case; the counts are the statements setting each header.
TEST(Decisions, DocumentHeadersReplaceOurs) {
  struct Case {
    std::string description;
    Proxy proxy;
    std::vector<std::string> front_or_proxy; // haproxy.httpfront / nginx.proxy
    std::vector<std::string> back_or_http;   // haproxy.httpback / nginx.http
    std::vector<std::pair<std::string, int>> counts; // statement -> times in the config
  };
  const std::vector<Case> cases = {
      {"nginx: ours alone", Proxy::nginx, {}, {},
       {{"proxy_set_header Host $host;", 1}, {"proxy_set_header X-Forwarded-For ", 1},
        {"proxy_set_header X-Forwarded-Proto ", 1}}},
      {"nginx: the original's proxy lines replace all three", Proxy::nginx,
       {"proxy_set_header Host $best_http_host;", "proxy_set_header x-forwarded-for $the_real_ip;",
        "proxy_set_header X-Forwarded-Proto  $pass_access_scheme;", "proxy_set_header Proxy \"\";"},
       {},
       {{"proxy_set_header Host", 1}, {"proxy_set_header Host $best_http_host;", 1},
        {"proxy_set_header X-Forwarded-For ", 0}, {"proxy_set_header x-forwarded-for", 1},
        {"proxy_set_header X-Forwarded-Proto", 1}}},
      {"nginx: one replaced, two statements on a line", Proxy::nginx,
       {"proxy_http_version 1.1; proxy_set_header Host $http_host;"}, {},
       {{"proxy_set_header Host", 1}, {"proxy_set_header X-Forwarded-For ", 1},
        {"proxy_set_header X-Forwarded-Proto ", 1}}},
      {"nginx: headers in http {} (none in the location): ours go there too, or the location would "
       "hide theirs",
       Proxy::nginx, {}, {"proxy_set_header X-Forwarded-Proto https;"},
       {{"  proxy_set_header Host $host;", 1}, {"      proxy_set_header", 0},
        {"proxy_set_header X-Forwarded-Proto", 1}}},
      {"haproxy: ours alone", Proxy::haproxy, {}, {},
       {{"option forwardfor", 1}, {"http-request set-header X-Forwarded-Proto http\n", 1}}},
      {"haproxy: the original's httpfront", Proxy::haproxy,
       {"option forwardfor", "http-request set-header X-Forwarded-Proto https if { ssl_fc }"}, {},
       {{"option forwardfor", 1}, {"http-request set-header X-Forwarded-Proto http\n", 1},
        {"http-request set-header X-Forwarded-Proto https if { ssl_fc }", 1}}},
      {"haproxy: forwardfor in the backend", Proxy::haproxy, {}, {"option forwardfor except 127.0.0.0/8"},
       {{"option forwardfor", 1}}},
      {"haproxy: the document adds X-Forwarded-Proto", Proxy::haproxy,
       {"http-request add-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]"}, {},
       {{"X-Forwarded-Proto", 1}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with({service({port("http", 80, 8080)})}, c.proxy);
    if (c.proxy == Proxy::nginx) {
      input.config.nginx.proxy = c.front_or_proxy;
      input.config.nginx.http = c.back_or_http;
    } else {
      input.config.haproxy.httpfront = c.front_or_proxy;
      input.config.haproxy.httpback = c.back_or_http;
    }
    auto output = render_proxy(input);
    const auto& text = output.files.at(c.proxy == Proxy::nginx ? "nginx.conf" : "haproxy.cfg");
    for (const auto& [statement, times] : c.counts)
      EXPECT_EQ(headers::count(text, statement), times) << statement << "\n" << text;
  }
}

namespace sni {

node::CertificateFile file(std::string name, std::vector<std::string> names, bool in_file = true, bool pair = false,
                           std::string error = "") {
  node::CertificateFile f;
  f.file = std::move(name);
  f.names = std::move(names);
  f.key_in_file = in_file;
  f.key_file = pair;
  f.has_key = in_file || pair || !error.empty();
  f.error = std::move(error);
  return f;
}

} // namespace sni

// The cert dir's other certificates are offered by SNI, the pool's own first (the default);
// nothing from a file name or a certificate reaches the config unchecked.
TEST(Decisions, SniCertificates) {
  struct Case {
    std::string description;
    Proxy proxy;
    std::vector<node::CertificateFile> files;
    std::vector<std::string> present; // in the config
    std::vector<std::string> absent;
    std::vector<std::string> problems; // substrings, one per problem, in order
  };
  const std::string bind = "bind 192.0.2.10:443 transparent ssl crt /etc/certs/default.pem";
  const std::vector<Case> cases = {
      {"haproxy: the pool's first, then the others", Proxy::haproxy,
       {sni::file("default.pem", {}), sni::file("one.pem", {"one.example.test"}), sni::file("two.pem", {})},
       {bind + " crt /etc/certs/one.pem crt /etc/certs/two.pem\n"}, {"crt /etc/certs/default.pem crt /etc/certs/default.pem"}, {}},
      {"haproxy: a pair without the key in the pem is refused", Proxy::haproxy,
       {sni::file("pair.pem", {"pair.example.test"}, false, true)}, {bind + "\n"}, {"pair.pem"},
       {"/etc/certs: \"pair.pem\" does not hold its private key"}},
      {"unsafe file names are refused", Proxy::haproxy,
       {sni::file("bad name.pem", {}), sni::file("a\nb.pem", {}), sni::file("q\"uote.pem", {}), sni::file(".pem", {}),
        sni::file("one.crt", {})},
       {bind + "\n"}, {"bad name", "uote"},
       {"\"bad name.pem\" is not a safe file name", "\"a\\nb.pem\" is not a safe file name",
        "\"q\\\"uote.pem\" is not a safe file name", "\".pem\" is not a safe file name", "\"one.crt\" is not a safe file name"}},
      {"a CA or chain file (no key) is not offered, silently", Proxy::haproxy,
       {sni::file("ca.pem", {"ca"}, false, false)}, {bind + "\n"}, {"ca.pem"}, {}},
      {"a key that does not match is refused", Proxy::haproxy,
       {sni::file("odd.pem", {"odd.example.test"}, false, false, "holds a private key that does not match its certificate")},
       {bind + "\n"}, {"odd.pem"}, {"\"odd.pem\" holds a private key that does not match its certificate; it is not offered by SNI"}},
      {"nginx: a server per certificate, names checked and lower-cased", Proxy::nginx,
       {sni::file("default.pem", {"pool.example.test"}, false, true),
        sni::file("one.pem", {"ONE.example.test", "*.wild.example.test", "bad name", "x;y"}, true, false),
        sni::file("two.pem", {"two.example.test", "one.example.test"}, false, true),
        sni::file("ip-only.pem", {}, true, false)},
       {"    listen 192.0.2.10:443 ssl;\n    ssl_certificate /etc/certs/default.pem;\n",
        "    server_name one.example.test *.wild.example.test;\n    ssl_certificate /etc/certs/one.pem;\n"
        "    ssl_certificate_key /etc/certs/one.pem;\n",
        "    server_name two.example.test;\n    ssl_certificate /etc/certs/two.pem;\n"
        "    ssl_certificate_key /etc/certs/two.key;\n"},
       {"pool.example.test", "bad name", "x;y", "ip-only", "server_names_hash_bucket_size"},
       {"\"one.pem\" names \"bad name\", which is not a DNS name", "\"one.pem\" names \"x;y\", which is not a DNS name"}},
      {"nginx: a long name sizes server_names_hash_bucket_size", Proxy::nginx,
       {sni::file("long.pem", {std::string(60, 'a') + ".example.test"})}, {"  server_names_hash_bucket_size 128;\n"}, {}, {}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = input_with({service({port("https", 443, 8080)}, {{"loadbalancer/sslredirect", "false"}})}, c.proxy);
    input.certificate_files = c.files;
    auto output = render_proxy(input);
    const auto& text = output.files.at(c.proxy == Proxy::nginx ? "nginx.conf" : "haproxy.cfg");
    for (const auto& wanted : c.present) EXPECT_NE(text.find(wanted), std::string::npos) << wanted << "\n" << text;
    for (const auto& unwanted : c.absent) EXPECT_EQ(text.find(unwanted), std::string::npos) << unwanted << "\n" << text;
    ASSERT_EQ(output.problems.size(), c.problems.size());
    for (std::size_t i = 0; i < c.problems.size(); ++i) {
      EXPECT_NE(output.problems[i].to_string().find(c.problems[i]), std::string::npos) << output.problems[i].to_string();
      EXPECT_EQ(output.problems[i].reason, "InvalidCertificate");
    }
  }
}

TEST(Decisions, SniCertificatesFitOnAHaproxyBindLine) {
  auto input = input_with({service({port("https", 443, 8080)}, {{"loadbalancer/sslredirect", "false"}})});
  for (int i = 0; i < 40; ++i) input.certificate_files.push_back(sni::file(fmt::format("c{:02}.pem", i), {}));
  auto output = render_proxy(input);
  const auto& text = output.files.at("haproxy.cfg");
  auto at = text.find("  bind ");
  std::istringstream line(text.substr(at, text.find('\n', at) - at));
  int words = 0;
  for (std::string word; line >> word;) ++words;
  EXPECT_EQ(words, 6 + 2 * static_cast<int>(kMaxSniCertificates)); // HAProxy reads 64 at most
  EXPECT_EQ(output.problems.size(), 40 - kMaxSniCertificates);
}

} // namespace
} // namespace k8slb::render

namespace k8slb::render {
namespace {

// haproxy-servers.json is printed without building a JSON document: it must be what
// nlohmann::json prints for the same table (k8slb-apply parses it; the golden file is that
// layout), whatever order the backend names sort in.
TEST(Decisions, ServerTableIsTheJsonLibrarysLayout) {
  std::vector<model::Service> services;
  std::vector<model::EndpointSlice> slices;
  int address = 10;
  for (const char* name : {"b", "b-c", "b0"}) { // plan order b, b-c, b0; "b-c_..." < "b0_..." < "b_..." as text
    auto s = service({port("http", 80, 8080), port("https", 443, 8443)}, {},
                     {fmt::format("192.0.2.{}", address++)});
    s.ns = "a";
    s.name = name;
    services.push_back(s);
    model::EndpointSlice slice;
    slice.ns = "a";
    slice.name = std::string(name) + "-1";
    slice.service_name = name;
    slice.address_type = "IPv4";
    slice.ports = {{"http", "TCP", 8080}, {"https", "TCP", 8443}};
    slice.endpoints = {endpoint("198.51.100.1"), endpoint("198.51.100.2", false)};
    slices.push_back(slice);
  }
  for (const auto& [what, chosen] : std::vector<std::pair<std::string, std::vector<model::Service>>>{
           {"no Service", {}}, {"three, two ports each", services}}) {
    SCOPED_TRACE(what);
    auto input = input_with(chosen);
    input.slices = slices;
    const auto output = render_proxy(input);
    const std::string& printed = output.files.at("haproxy-servers.json");
    EXPECT_EQ(printed, nlohmann::json::parse(printed).dump(2) + "\n");
    if (!chosen.empty()) {
      EXPECT_NE(printed.find(R"("address": "198.51.100.1")"), std::string::npos) << printed;
      EXPECT_LT(printed.find("a_b-c_443"), printed.find("a_b_80"));
    }
  }
}

} // namespace
} // namespace k8slb::render
