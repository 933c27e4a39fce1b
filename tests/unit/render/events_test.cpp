// Which Services a rendering's problems concern (the Events a node posts), as a table.

#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "k8slb/render.hpp"

namespace k8slb::render {
namespace {

model::Service service(std::string name, std::string ingress) {
  model::Service s;
  s.ns = "default";
  s.name = std::move(name);
  s.type = "LoadBalancer";
  s.ingress_ips = {std::move(ingress)};
  model::ServicePort port;
  port.name = "http";
  port.port = 80;
  port.target_port = 8080;
  port.protocol = "TCP";
  s.ports = {port};
  return s;
}

Input input() {
  Input in;
  in.config.pools.push_back({"default", ip::Range::parse("192.0.2.0/24"), ip::Range::parse("192.0.2.128/25"), "eth0"});
  in.config.pools.push_back({"web", ip::Range::parse("203.0.113.0/24"), ip::Range::parse("203.0.113.0/25"), "eth0"});
  in.services = {service("a", "192.0.2.10"), service("b", "203.0.113.5"), service("c", "203.0.113.6"),
                 service("idle", "")};
  return in;
}

TEST(ServiceProblems, EachProblemOnTheServicesItConcerns) {
  struct Case {
    std::string description;
    std::vector<Problem> problems;
    std::vector<std::string> expected; // "<service>: <problem>"
  };
  const Problem cert{"default/a", "spec.ports[0]", "MissingCertificate", "no readable certificate"};
  const Problem pool{"pools.web", "interface", "NoInterface", "no interface named 'eth9'"};
  const Problem idle_pool{"pools.spare", "interface", "NoInterface", "no interface named 'eth9'"};
  const Problem invalid{"default/b", "metadata.annotations", "InvalidService", "bad value"};
  const Problem node{"nodes/lb-a", "status.addresses", "NoUnicastAddress", "no InternalIP"};
  const Problem gone{"default/gone", "spec.ports[0]", "NotRendered", "not in the input"};
  const std::vector<Case> cases = {
      {"none", {}, {}},
      {"a Service's own problem", {cert}, {"default/a: default/a: spec.ports[0]: no readable certificate"}},
      {"a pool's problem reaches every Service with a VIP in it",
       {pool},
       {"default/b: pools.web: interface: no interface named 'eth9'",
        "default/c: pools.web: interface: no interface named 'eth9'"}},
      {"a pool no Service uses concerns none", {idle_pool}, {}},
      {"what the watcher reports (InvalidService) is left to it", {invalid}, {}},
      {"a Node's problem is not a Service's", {node}, {}},
      {"an object not in the input", {gone}, {}},
      {"sorted by Service",
       {pool, cert},
       {"default/a: default/a: spec.ports[0]: no readable certificate",
        "default/b: pools.web: interface: no interface named 'eth9'",
        "default/c: pools.web: interface: no interface named 'eth9'"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    Input in = input();
    Output out;
    out.problems = c.problems;
    std::vector<std::string> got;
    for (const auto& [index, problem] : service_problems(in, out))
      got.push_back(fmt::format("{}: {}", in.services[index].key(), problem.to_string()));
    EXPECT_EQ(got, c.expected);
  }
}

TEST(ServicesByVip, EveryRenderedVip) {
  Input in = input();
  in.services.push_back(service("shared", "203.0.113.5"));         // shares b's IP
  in.services.push_back(service("elsewhere", "198.51.100.7"));     // in no pool: not rendered
  std::map<std::string, std::vector<std::string>> got;
  for (const auto& [vip, indexes] : services_by_vip(in))
    for (std::size_t index : indexes) got[vip].push_back(in.services[index].key());
  const std::map<std::string, std::vector<std::string>> expected = {
      {"192.0.2.10", {"default/a"}},
      {"203.0.113.5", {"default/b", "default/shared"}},
      {"203.0.113.6", {"default/c"}},
  };
  EXPECT_EQ(got, expected);
  // render_all gives the same, from the check its files were rendered from.
  EXPECT_EQ(render_all(in).vips, services_by_vip(in));
  EXPECT_FALSE(services_by_vip(in).empty());
}

} // namespace
} // namespace k8slb::render
