// allocate() over time: each step changes the cluster, runs the allocator on it and writes the
// results back into the Services' status, as k8slb-apply cluster does. Then: determinism
// under shuffled input, and random Services that must never end up sharing an address they
// may not share.

#include "k8slb/allocate.hpp"

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::allocate {
namespace {

using testing::Svc;
using testing::show;
using testing::test_pools;
using testing::texts;

pool::Config pools(const std::string& document) {
  return pool::parse_config(nlohmann::json::parse(document));
}

// "assigned 192.0.2.8", "kept 192.0.2.8,2001:db8::1 IPOutsidePool", "released"
std::string summary(const Result& result) {
  std::string out(to_string(result.outcome));
  if (!result.ips.empty()) out += " " + fmt::format("{}", fmt::join(texts(result.ips), ","));
  if (result.problem) out += " " + result.problem->reason;
  return out;
}

struct Cluster {
  std::map<std::string, model::Service> services; // namespace/name -> Service as stored
  pool::Config config = test_pools();

  void add(const Svc& svc) { services[svc.get().key()] = svc; }
  std::map<std::string, std::string> run() {
    std::vector<model::Service> input;
    for (const auto& [key, service] : services) input.push_back(service);
    std::map<std::string, std::string> out;
    for (const Result& result : allocate(input, config)) {
      services[result.service].ingress_ips = texts(result.ips); // published status
      out[result.service] = summary(result);
    }
    return out;
  }
};

struct Step {
  std::string description;
  std::function<void(Cluster&)> change;
  std::map<std::string, std::string> expected; // the Services to check -> summary
};

TEST(AllocateSteps, AssignmentsOverTime) {
  const std::vector<Step> steps = {
      {"a and b arrive and get the first two addresses",
       [](Cluster& c) {
         c.add(Svc("default/a"));
         c.add(Svc("default/b"));
       },
       {{"default/a", "assigned 192.0.2.8"}, {"default/b", "assigned 192.0.2.9"}}},
      {"nothing changes: both keep their addresses",
       [](Cluster&) {},
       {{"default/a", "kept 192.0.2.8"}, {"default/b", "kept 192.0.2.9"}}},
      {"a is deleted; c can grab a's former address",
       [](Cluster& c) {
         c.services.erase("default/a");
         c.add(Svc("default/c"));
       },
       {{"default/b", "kept 192.0.2.9"}, {"default/c", "assigned 192.0.2.8"}}},
      {"the range shrinks to 192.0.2.10/31: b and c keep theirs, inside the network",
       [](Cluster& c) {
         c.config = pools(R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10/31"}}})");
       },
       {{"default/b", "kept 192.0.2.9"}, {"default/c", "kept 192.0.2.8"}}},
      {"d arrives and gets the first address of the new range",
       [](Cluster& c) { c.add(Svc("default/d")); },
       {{"default/d", "assigned 192.0.2.10"}}},
      {"the pool moves to another network: the held addresses stay, with a warning",
       [](Cluster& c) {
         c.config = pools(R"({"pools": {"default": {"network": "203.0.113.0/24", "range": "203.0.113.8/30"}}})");
         c.add(Svc("default/e"));
       },
       {{"default/b", "kept 192.0.2.9 IPOutsidePool"},
        {"default/d", "kept 192.0.2.10 IPOutsidePool"},
        {"default/e", "assigned 203.0.113.8"}}},
      {"b asks for 203.0.113.50: it moves, because the user asked",
       [](Cluster& c) { c.services["default/b"].load_balancer_ip = "203.0.113.50"; },
       {{"default/b", "assigned 203.0.113.50"}}},
      {"b becomes a ClusterIP Service: its address is released",
       [](Cluster& c) { c.services["default/b"].type = "ClusterIP"; },
       {{"default/b", "released"}}},
      {"b, a ClusterIP Service holding nothing, is skipped",
       [](Cluster&) {},
       {{"default/b", "skipped"}}},
      {"b is a LoadBalancer again, without loadBalancerIP: a dynamic address",
       [](Cluster& c) {
         c.services["default/b"].type = "LoadBalancer";
         c.services["default/b"].load_balancer_ip.clear();
       },
       {{"default/b", "assigned 203.0.113.9"}}},
  };
  Cluster cluster;
  for (const Step& step : steps) {
    SCOPED_TRACE(step.description);
    step.change(cluster);
    std::map<std::string, std::string> got = cluster.run();
    for (const auto& [key, expected] : step.expected) {
      SCOPED_TRACE(key);
      EXPECT_EQ(got[key], expected);
    }
  }
}

// A mix of every kind of request, with collisions on purpose.
std::vector<model::Service> mixed_services() {
  std::vector<model::Service> services = {
      Svc("web/front"),
      Svc("web/front-tls").share("front").ports({{"TCP", 443}}),
      Svc("web/front-http").share("front"),
      Svc("web/static").ip("192.0.2.30"),
      Svc("web/static-too").ip("192.0.2.30").ports({{"TCP", 443}}),
      Svc("web/static-clash").ip("192.0.2.30"),
      Svc("db/held").holds({"192.0.2.9"}),
      Svc("db/held-twice").holds({"192.0.2.9"}),
      Svc("db/held-v6").pool("ipv6").holds({"2001:db8:1::1:0:7"}),
      Svc("dual/require").pool("default,ipv6").policy("RequireDualStack"),
      Svc("dual/prefer").pool("default,tiny6").policy("PreferDualStack"),
      Svc("dual/prefer2").pool("default,tiny6").policy("PreferDualStack"),
      Svc("other/cluster-ip").type("ClusterIP").holds({"192.0.2.8"}),
      Svc("other/class").lb_class("example.com/x"),
      Svc("other/unknown").pool("nosuch"),
      Svc("ext/a").pool("external"),
      Svc("ext/b").pool("external").ip("198.51.100.200"),
  };
  for (int i = 0; i < 20; ++i)
    services.push_back(Svc(fmt::format("many/s{:02}", i)).pool(i % 2 ? "ipv6" : "external"));
  return services;
}

TEST(AllocateDeterminism, ShuffledInputGivesTheSameResults) {
  std::vector<model::Service> services = mixed_services();
  pool::Config config = test_pools();
  std::vector<std::string> baseline;
  for (const Result& result : allocate(services, config)) baseline.push_back(show(result));
  ASSERT_EQ(baseline.size(), services.size());

  std::mt19937 rng(20240601);
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(fmt::format("shuffle {}", round));
    std::shuffle(services.begin(), services.end(), rng);
    std::vector<std::string> got;
    for (const Result& result : allocate(services, config)) got.push_back(show(result));
    EXPECT_EQ(got, baseline);
  }
}

// Random Services against a small pool. Whatever they ask, two Services hold one address only
// when they may share it (both asked for it, or one sharing key) and their ports differ; every
// address handed out is one the Service asked for, held before, one from the range, or one its
// sharing group holds; a second run on the published state moves nothing; and a third run
// changes nothing at all (a Service that lost a contested address gets a new one in the second).
TEST(AllocateProperty, RandomServicesNeverShareWhatTheyMayNot) {
  pool::Config config =
      pools(R"({"pools": {"default": {"network": "192.0.2.0/28", "range": "192.0.2.4-192.0.2.11"}}})");
  const std::vector<std::pair<std::string, int>> port_choices = {
      {"TCP", 80}, {"TCP", 443}, {"UDP", 53}};
  std::mt19937 rng(7);
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  auto address = [&](int limit) { return fmt::format("192.0.2.{}", rng() % limit); };

  for (int round = 0; round < 300; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    std::vector<model::Service> services;
    int count = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < count; ++i) {
      Svc svc(fmt::format("ns/s{}", i));
      std::vector<std::pair<std::string, int>> ports = {port_choices[rng() % 3]};
      if (chance(40)) ports.push_back(port_choices[rng() % 3]);
      std::sort(ports.begin(), ports.end());
      ports.erase(std::unique(ports.begin(), ports.end()), ports.end());
      svc.ports(ports);
      if (chance(30)) svc.ip(address(16));
      if (chance(30)) svc.share(chance(50) ? "x" : "y");
      if (chance(30)) svc.holds({address(20)});
      if (chance(10)) svc.type("ClusterIP");
      services.push_back(svc);
    }
    std::map<std::string, const model::Service*> by_key;
    for (const auto& service : services) by_key[service.key()] = &service;

    std::vector<Result> results = allocate(services, config);
    ASSERT_EQ(results.size(), services.size());
    std::map<ip::Address, std::vector<const model::Service*>> holders;
    for (const Result& result : results)
      for (const ip::Address& ip : result.ips) holders[ip].push_back(by_key.at(result.service));
    for (const Result& result : results) {
      const model::Service& service = *by_key.at(result.service);
      SCOPED_TRACE(show(result));
      bool holds = result.outcome == Outcome::kept || result.outcome == Outcome::assigned;
      EXPECT_EQ(holds, !result.ips.empty());
      for (const ip::Address& ip : result.ips) {
        std::string text = ip.to_string();
        bool asked = service.load_balancer_ip == text;
        bool held = std::find(service.ingress_ips.begin(), service.ingress_ips.end(), text) !=
                    service.ingress_ips.end();
        bool in_range = ip.value() >= ip::Address::parse("192.0.2.4").value() &&
                        ip.value() <= ip::Address::parse("192.0.2.11").value();
        std::string key = service.annotation(model::kAnnotationShare);
        bool group_holds = !key.empty() && std::any_of(holders[ip].begin(), holders[ip].end(),
            [&](const model::Service* other) {
              return other != &service && other->annotation(model::kAnnotationShare) == key;
            });
        EXPECT_TRUE(asked || held || in_range || group_holds) << text;
      }
    }
    for (const auto& [ip, services_here] : holders) {
      for (std::size_t i = 0; i < services_here.size(); ++i) {
        for (std::size_t j = i + 1; j < services_here.size(); ++j) {
          const model::Service& a = *services_here[i];
          const model::Service& b = *services_here[j];
          SCOPED_TRACE(fmt::format("{} and {} hold {}", a.key(), b.key(), ip.to_string()));
          bool both_asked = a.load_balancer_ip == ip.to_string() && b.load_balancer_ip == ip.to_string();
          std::string key = a.annotation(model::kAnnotationShare);
          bool one_key = !key.empty() && key == b.annotation(model::kAnnotationShare);
          EXPECT_TRUE(both_asked || one_key);
          for (const auto& pa : a.ports)
            for (const auto& pb : b.ports)
              EXPECT_FALSE(pa.protocol == pb.protocol && pa.port == pb.port)
                  << pa.protocol << "/" << pa.port;
        }
      }
    }

    // Publish the results and run again: nothing moves. Once more: nothing changes.
    auto publish_into = [](std::vector<model::Service>& cluster, const std::vector<Result>& out) {
      std::map<std::string, const Result*> result_by_key;
      for (const Result& result : out) result_by_key[result.service] = &result;
      for (auto& service : cluster) service.ingress_ips = texts(result_by_key.at(service.key())->ips);
    };
    std::vector<model::Service> cluster = services;
    publish_into(cluster, results);
    std::vector<Result> second = allocate(cluster, config);
    for (std::size_t i = 0; i < second.size(); ++i) {
      SCOPED_TRACE(show(results[i]) + " then " + show(second[i]));
      if (results[i].ips.empty()) continue;
      EXPECT_EQ(second[i].ips, results[i].ips);
      EXPECT_EQ(second[i].outcome, Outcome::kept);
    }
    publish_into(cluster, second);
    std::vector<Result> third = allocate(cluster, config);
    for (std::size_t i = 0; i < third.size(); ++i) {
      SCOPED_TRACE(show(second[i]) + " then " + show(third[i]));
      EXPECT_EQ(third[i].ips, second[i].ips);
      if (!second[i].ips.empty()) {
        EXPECT_EQ(third[i].outcome, Outcome::kept);
      }
    }
  }
}

} // namespace
} // namespace k8slb::allocate
