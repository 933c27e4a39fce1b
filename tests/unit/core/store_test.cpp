// model::Store: a List kept up to date by watch events gives what make_snapshot() gives for
// the List those events lead to.
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <gtest/gtest.h>

#include "k8slb/error.hpp"
#include "k8slb/model.hpp"

namespace k8slb::model {
namespace {

json service(const std::string& ns, const std::string& name, int version, int port = 80) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"namespace", ns}, {"name", name}, {"resourceVersion", std::to_string(version)}}},
          {"spec", {{"type", "LoadBalancer"}, {"ports", {{{"port", port}, {"protocol", "TCP"}}}}}}};
}

json service_with_ip(const std::string& ns, const std::string& name, int version, const std::string& ip) {
  auto object = service(ns, name, version);
  object["status"] = {{"loadBalancer", {{"ingress", {{{"ip", ip}}}}}}};
  return object;
}

json broken_service(const std::string& ns, const std::string& name) {
  auto object = service(ns, name, 1);
  object["spec"]["ports"][0]["port"] = "eighty"; // spec.ports[0].port: must be an integer
  return object;
}

json slice(const std::string& ns, const std::string& name, const std::string& address) {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata", {{"namespace", ns}, {"name", name}, {"labels", {{"kubernetes.io/service-name", name}}}}},
          {"addressType", "IPv4"},
          {"ports", {{{"port", 8080}, {"protocol", "TCP"}}}},
          {"endpoints", {{{"addresses", {address}}}}}};
}

json node(const std::string& name, const std::string& role) {
  return {{"apiVersion", "v1"}, {"kind", "Node"}, {"metadata", {{"name", name}, {"labels", {{"type", role}}}}}};
}

json config_map(const std::string& ns, const std::string& name, const std::string& data) {
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"namespace", ns}, {"name", name}}},
          {"data", {{"config.json", data}}}};
}

json event(const std::string& type, const json& object) { return {{"type", type}, {"object", object}}; }

// What a test can compare of a snapshot, in one string per object. `rendered`: only what a
// renderer reads (Services with ingress IPs, their EndpointSlices; Nodes, the config, errors).
std::vector<std::string> fingerprint(const Snapshot& snapshot, bool rendered = false) {
  std::vector<std::string> out;
  std::set<std::string> with_ips;
  for (const auto& s : snapshot.services) {
    if (rendered && s.ingress_ips.empty()) continue;
    with_ips.insert(s.key());
    out.push_back(fmt::format("Service {} v{} port {}{}", s.key(), s.resource_version, s.ports.at(0).port,
                              s.ingress_ips.empty() ? "" : fmt::format(" ips {}", fmt::join(s.ingress_ips, ","))));
  }
  for (const auto& s : snapshot.slices) {
    if (rendered && !with_ips.contains(s.ns + "/" + s.service_name)) continue;
    out.push_back(fmt::format("EndpointSlice {}/{} {}", s.ns, s.name, s.endpoints.at(0).addresses.at(0)));
  }
  for (const auto& n : snapshot.nodes) out.push_back(fmt::format("Node {} {}", n.name, n.labels.at("type")));
  if (snapshot.config_map) out.push_back("ConfigMap " + snapshot.config_map->dump());
  for (const auto& e : snapshot.errors) out.push_back("error " + e);
  return out;
}

TEST(Store, KeepsTheListUpToDate) {
  struct Case {
    std::string what;
    std::vector<json> events;
    std::vector<std::string> expected;
  };
  const std::vector<json> list = {service("default", "web", 1), slice("default", "web", "192.0.2.1"),
                                  node("lb-0", "loadBalancer"), config_map("k8slb-system", "global", "{}")};
  const std::vector<Case> cases = {
      {"no event", {},
       {"Service default/web v1 port 80", "EndpointSlice default/web 192.0.2.1", "Node lb-0 loadBalancer",
        R"(ConfigMap {"apiVersion":"v1","data":{"config.json":"{}"},"kind":"ConfigMap","metadata":{"name":"global","namespace":"k8slb-system"}})"}},
      {"a Service added, one modified, an endpoint moved",
       {event("ADDED", service("default", "api", 2)), event("MODIFIED", service("default", "web", 3, 443)),
        event("MODIFIED", slice("default", "web", "192.0.2.2"))},
       {"Service default/api v2 port 80", "Service default/web v3 port 443", "EndpointSlice default/web 192.0.2.2",
        "Node lb-0 loadBalancer",
        R"(ConfigMap {"apiVersion":"v1","data":{"config.json":"{}"},"kind":"ConfigMap","metadata":{"name":"global","namespace":"k8slb-system"}})"}},
      {"deleted objects go, the config map too; bookmarks and other config maps change nothing",
       {event("DELETED", service("default", "web", 1)), event("DELETED", node("lb-0", "")),
        event("BOOKMARK", {{"metadata", {{"resourceVersion", "9"}}}}),
        event("ADDED", config_map("default", "global", "{}")),
        event("DELETED", config_map("k8slb-system", "global", "{}"))},
       {"EndpointSlice default/web 192.0.2.1"}},
      {"a Service that cannot be read is left out with its error, until it is fixed or deleted",
       {event("MODIFIED", broken_service("default", "web")), event("ADDED", broken_service("default", "bad"))},
       {"EndpointSlice default/web 192.0.2.1", "Node lb-0 loadBalancer",
        R"(ConfigMap {"apiVersion":"v1","data":{"config.json":"{}"},"kind":"ConfigMap","metadata":{"name":"global","namespace":"k8slb-system"}})",
        "error default/bad: spec.ports[0].port: must be an integer, not \"eighty\"",
        "error default/web: spec.ports[0].port: must be an integer, not \"eighty\""}},
      {"an event for a Service without a namespace is about the one in default (as the parser reads it)",
       {event("MODIFIED", [] {
          auto web = service("default", "web", 5);
          web["metadata"].erase("namespace");
          return web;
        }())},
       {"Service default/web v5 port 80", "EndpointSlice default/web 192.0.2.1", "Node lb-0 loadBalancer",
        R"(ConfigMap {"apiVersion":"v1","data":{"config.json":"{}"},"kind":"ConfigMap","metadata":{"name":"global","namespace":"k8slb-system"}})"}},
      {"fixed and deleted",
       {event("MODIFIED", broken_service("default", "web")), event("MODIFIED", service("default", "web", 4)),
        event("ADDED", broken_service("default", "bad")), event("DELETED", broken_service("default", "bad"))},
       {"Service default/web v4 port 80", "EndpointSlice default/web 192.0.2.1", "Node lb-0 loadBalancer",
        R"(ConfigMap {"apiVersion":"v1","data":{"config.json":"{}"},"kind":"ConfigMap","metadata":{"name":"global","namespace":"k8slb-system"}})"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Store store;
    EXPECT_FALSE(store.loaded());
    store.load(list);
    EXPECT_TRUE(store.loaded());
    for (const auto& e : c.events) store.apply(e);
    EXPECT_EQ(fingerprint(store.snapshot()), c.expected);
  }
}

TEST(Store, RefusesEventsItCannotUse) {
  struct Case {
    json event;
    std::string error;
  };
  const std::vector<Case> cases = {
      {json::array(), "a watch event must be a JSON object"},
      {{{"type", "ADDED"}}, "watch event ADDED: object: is required"},
      {{{"type", "ERROR"}, {"object", {{"kind", "Status"}, {"message", "too old resource version"}}}},
       "watch event ERROR: too old resource version"},
      {{{"type", "CHANGED"}, {"object", service("default", "web", 1)}},
       "watch event type 'CHANGED': expected ADDED, MODIFIED, DELETED or BOOKMARK"},
  };
  for (const auto& c : cases) {
    Store store;
    store.load({service("default", "web", 1)});
    try {
      store.apply(c.event);
      ADD_FAILURE() << "no error for " << c.event.dump();
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.error);
    }
    EXPECT_EQ(fingerprint(store.snapshot()), std::vector<std::string>{"Service default/web v1 port 80"});
  }
}

// Random changes to a small cluster: after each, the store's snapshot is the List's.
TEST(Store, MatchesTheListAfterEveryEvent) {
  const std::vector<std::string> names = {"a", "b", "c", "d"};
  for (unsigned seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    std::mt19937 random(seed);
    auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
    // (kind, namespace, name) -> object: the cluster, in the order a List sorts its errors.
    std::map<std::tuple<std::string, std::string, std::string>, json> cluster;
    auto random_object = [&](int version) {
      const std::string ns = pick(2) ? "default" : "other", name = names[pick(4)];
      switch (pick(8)) {
      case 0: return broken_service(ns, name);
      case 6:
      case 7: return service_with_ip(ns, name, version, fmt::format("198.51.100.{}", pick(3) + 1));
      case 1: return slice(ns, name, fmt::format("192.0.2.{}", version % 250 + 1));
      case 2: return node(name, pick(2) ? "loadBalancer" : "worker");
      case 3: return config_map(pick(2) ? "k8slb-system" : "default", "global", fmt::format("{{\"v\":{}}}", version));
      default: return service(ns, name, version, 80 + pick(3));
      }
    };
    auto key_of = [](const json& object) {
      return std::make_tuple(object["kind"].get<std::string>(), object["metadata"].value("namespace", ""),
                             object["metadata"]["name"].get<std::string>());
    };
    auto list = [&] {
      std::vector<json> items;
      for (const auto& [key, object] : cluster) items.push_back(object);
      return items;
    };
    for (int i = 0; i < 6; ++i) {
      auto object = random_object(i);
      cluster[key_of(object)] = object;
    }
    Store store;
    store.load(list());
    int quiet = 0;
    for (int step = 0; step < 150; ++step) {
      auto object = random_object(100 + step);
      const auto key = key_of(object);
      const auto before = fingerprint(store.snapshot(), true);
      bool rendered = false;
      if (cluster.contains(key) && pick(3) == 0) {
        rendered = store.apply(event("DELETED", cluster.at(key)));
        cluster.erase(key);
      } else {
        rendered = store.apply(event(cluster.contains(key) ? "MODIFIED" : "ADDED", object));
        cluster[key] = object;
      }
      // A change said not to reach a rendering leaves what a renderer reads as it was.
      if (!rendered) {
        ++quiet;
        ASSERT_EQ(fingerprint(store.snapshot(), true), before) << "step " << step << ": " << object.dump();
      }
      if (step % 50 == 49) store.load(list()); // a resync
      ASSERT_EQ(fingerprint(store.snapshot()), fingerprint(make_snapshot(list()))) << "step " << step;
    }
    EXPECT_GT(quiet, 10); // the case is exercised
  }
}

} // namespace
} // namespace k8slb::model
