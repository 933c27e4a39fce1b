// publish(): the v1 List k8slb-allocate prints and k8slb-apply cluster reads. Services come
// in as Kubernetes JSON, go through model::parse_service and allocate(), and come out with
// their status set, followed by Events.

#include "k8slb/allocate.hpp"

#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::allocate {
namespace {

using nlohmann::json;
using testing::test_pools;

json service_json(const std::string& name, const json& extra_metadata, const json& extra_spec,
                  const json& ingress = nullptr) {
  json service = {
      {"apiVersion", "v1"},
      {"kind", "Service"},
      {"metadata", {{"name", name}, {"namespace", "web"}, {"uid", "uid-" + name},
                    {"resourceVersion", "41"}, {"labels", {{"app", name}}}}},
      {"spec", {{"type", "LoadBalancer"},
                {"selector", {{"app", name}}},
                {"ports", {{{"name", "http"}, {"port", 80}, {"protocol", "TCP"}, {"targetPort", 8080}}}}}},
  };
  service["metadata"].update(extra_metadata);
  service["spec"].update(extra_spec);
  if (!ingress.is_null()) service["status"] = {{"loadBalancer", {{"ingress", ingress}}}};
  return service;
}

const json kSlice = {
    {"apiVersion", "discovery.k8s.io/v1"},
    {"kind", "EndpointSlice"},
    {"metadata", {{"name", "a-x1"}, {"namespace", "web"},
                  {"labels", {{"kubernetes.io/service-name", "a"}}}}},
    {"addressType", "IPv4"},
    {"endpoints", json::array()},
};

struct Published {
  json list;
  std::vector<json> objects; // items that are not Events, in order
  std::vector<json> events;
};

Published run(const std::vector<json>& items, const PublishOptions& options = {}) {
  std::vector<model::Service> services;
  for (const json& item : items)
    if (item.value("kind", "") == "Service") services.push_back(model::parse_service(item));
  std::vector<Result> results = allocate(services, test_pools());
  Published out;
  out.list = publish(items, services, results, options);
  for (const json& item : out.list.at("items"))
    (item.value("kind", "") == "Event" ? out.events : out.objects).push_back(item);
  return out;
}

std::vector<std::string> reasons(const std::vector<json>& events) {
  std::vector<std::string> out;
  for (const json& event : events) out.push_back(event.at("reason").get<std::string>());
  return out;
}

TEST(Publish, ListShapeStatusAndEvent) {
  json a = service_json("a", json::object(), json::object());
  json cluster_ip = service_json("b", json::object(), {{"type", "ClusterIP"}});
  Published out = run({a, kSlice, cluster_ip});

  EXPECT_EQ(out.list.at("apiVersion"), "v1");
  EXPECT_EQ(out.list.at("kind"), "List");
  ASSERT_EQ(out.objects.size(), 3u);
  // The Service gets its status and keeps everything else.
  json expected_a = a;
  expected_a["status"] = {{"loadBalancer", {{"ingress", {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}}}}}};
  EXPECT_EQ(out.objects[0], expected_a);
  // Other items pass through untouched, in input order.
  EXPECT_EQ(out.objects[1], kSlice);
  EXPECT_EQ(out.objects[2], cluster_ip);

  ASSERT_EQ(out.events.size(), 1u);
  const json expected_event = {
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"namespace", "web"}, {"generateName", "a."}}},
      {"involvedObject", {{"apiVersion", "v1"}, {"kind", "Service"}, {"namespace", "web"},
                          {"name", "a"}, {"uid", "uid-a"}, {"resourceVersion", "41"}}},
      {"reason", "IPAllocated"},
      {"message", "assigned 192.0.2.8 (pool default)"},
      {"type", "Normal"},
      {"source", {{"component", "k8slb"}}},
      {"reportingComponent", "k8slb"},
  };
  EXPECT_EQ(out.events[0], expected_event);
}

struct EventCase {
  std::string description;
  json service;
  PublishOptions options;
  json expected_ingress;                 // status.loadBalancer.ingress after publish
  std::vector<std::string> event_reasons; // in order
  std::string message_part;              // in the last event's message
};

TEST(Publish, EventsFollowChanges) {
  const json no_change = json::object();
  const std::vector<EventCase> cases = {
      {"kept with the same status: no Event, Service unchanged",
       service_json("a", no_change, no_change, {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}}),
       {},
       {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}},
       {},
       ""},
      {"only ipMode differs: StatusUpdated",
       service_json("a", no_change, no_change, {{{"ip", "192.0.2.8"}}}),
       {},
       {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}},
       {"StatusUpdated"},
       "ipMode Proxy for 192.0.2.8"},
      {"ipMode VIP for kube-proxy",
       service_json("a", no_change, no_change, {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}}),
       {"VIP"},
       {{{"ip", "192.0.2.8"}, {"ipMode", "VIP"}}},
       {"StatusUpdated"},
       "ipMode VIP"},
      {"empty ip_mode leaves ipMode out",
       service_json("a", no_change, no_change),
       {""},
       {{{"ip", "192.0.2.8"}}},
       {"IPAllocated"},
       "assigned 192.0.2.8"},
      {"moved to a new loadBalancerIP: IPAllocated, then IPMoved naming both",
       service_json("a", no_change, {{"loadBalancerIP", "192.0.2.20"}},
                    {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}}),
       {},
       {{{"ip", "192.0.2.20"}, {"ipMode", "Proxy"}}},
       {"IPAllocated", "IPMoved"},
       "web/a: moved from 192.0.2.8 to 192.0.2.20 (pool default): spec.loadBalancerIP asks for 192.0.2.20"},
      {"the pool annotation changed: a new IP from that pool, IPMoved naming both",
       service_json("a", {{"annotations", {{"loadbalancer/pool", "external"}}}}, no_change,
                    {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}}),
       {},
       {{{"ip", "198.51.100.16"}, {"ipMode", "Proxy"}}},
       {"IPAllocated", "IPMoved"},
       "moved from 192.0.2.8 to 198.51.100.16 (pool external)"},
      {"a MetalLB annotation: a Normal Event saying what it is read as",
       service_json("a", {{"annotations", {{"metallb.io/address-pool", "external"}}}}, no_change),
       {},
       {{{"ip", "198.51.100.16"}, {"ipMode", "Proxy"}}},
       {"IPAllocated", "AnnotationMapped"},
       "web/a: metadata.annotations[metallb.io/address-pool]: MetalLB's metallb.io/address-pool is read as loadbalancer/pool"},
      {"a typo in a key: a Warning naming the nearest known one",
       service_json("a", {{"annotations", {{"loadbalancer/pol", "external"}}}}, no_change),
       {},
       {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}},
       {"IPAllocated", "UnknownAnnotation"},
       "the nearest known one is loadbalancer/pool"},
      {"no longer a LoadBalancer: IPReleased and an empty ingress",
       service_json("a", no_change, {{"type", "ClusterIP"}},
                    {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}}),
       {},
       json::array(),
       {"IPReleased"},
       "released 192.0.2.8: the Service is of type ClusterIP, not LoadBalancer"},
      {"failed: a Warning with the problem, no status",
       service_json("a", no_change, {{"loadBalancerIP", "203.0.113.99"}}),
       {},
       nullptr,
       {"AllocationFailed"},
       "web/a: spec.loadBalancerIP: 203.0.113.99 is outside pool default (192.0.2.0/24)"},
      {"invalid: reason InvalidService",
       service_json("a", {{"annotations", {{"loadbalancer/pool", "default,,x"}}}}, no_change),
       {},
       nullptr,
       {"InvalidService"},
       "web/a: metadata.annotations[loadbalancer/pool]: 'default,,x' has an empty pool name"},
      {"kept outside every pool: status unchanged, a Warning",
       service_json("a", no_change, no_change, {{{"ip", "203.0.113.200"}, {"ipMode", "Proxy"}}}),
       {},
       {{{"ip", "203.0.113.200"}, {"ipMode", "Proxy"}}},
       {"IPOutsidePool"},
       "keeping 203.0.113.200"},
      {"the original's sslip.io hostname gives way to an ip",
       service_json("a", no_change, no_change, {{{"hostname", "192.0.2.8.sslip.io"}}}),
       {},
       {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}},
       {"IPAllocated"},
       "assigned 192.0.2.8"},
  };
  for (const EventCase& c : cases) {
    SCOPED_TRACE(c.description);
    Published out = run({c.service}, c.options);
    ASSERT_EQ(out.objects.size(), 1u);
    const json& service = out.objects[0];
    if (c.expected_ingress.is_null()) {
      EXPECT_FALSE(service.contains("status"));
    } else {
      EXPECT_EQ(service.at("status").at("loadBalancer").at("ingress"), c.expected_ingress);
    }
    json without_status = service;
    json input_without_status = c.service;
    without_status.erase("status");
    input_without_status.erase("status");
    EXPECT_EQ(without_status, input_without_status); // nothing else touched
    EXPECT_EQ(reasons(out.events), c.event_reasons);
    if (c.event_reasons.empty()) {
      EXPECT_EQ(service, c.service);
    } else {
      std::string message = out.events.back().at("message");
      EXPECT_NE(message.find(c.message_part), std::string::npos) << message;
      const std::string& last = c.event_reasons.back();
      bool warning = last != "IPAllocated" && last != "IPReleased" && last != "StatusUpdated" &&
                     last != "IPMoved" && last != "AnnotationMapped";
      EXPECT_EQ(out.events.back().at("type"), warning ? "Warning" : "Normal");
    }
  }
}

TEST(Publish, ReleasedAndReassignedInOneDocument) {
  // b leaves LoadBalancer; a takes its address in the same run. Two Normal Events.
  json a = service_json("a", json::object(), json::object());
  json b = service_json("b", json::object(), {{"type", "NodePort"}},
                        {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}}});
  Published out = run({b, a});
  ASSERT_EQ(out.objects.size(), 2u);
  EXPECT_EQ(out.objects[0]["status"]["loadBalancer"]["ingress"], json::array());
  EXPECT_EQ(out.objects[1]["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.8");
  EXPECT_EQ(reasons(out.events), (std::vector<std::string>{"IPReleased", "IPAllocated"}));
  EXPECT_EQ(out.events[0]["involvedObject"]["name"], "b");
  EXPECT_EQ(out.events[1]["involvedObject"]["name"], "a");
}

TEST(Publish, DualStackStatusListsBothAddresses) {
  json a = service_json("a", {{"annotations", {{"loadbalancer/pool", "default,ipv6"}}}},
                        {{"ipFamilyPolicy", "RequireDualStack"}, {"ipFamilies", {"IPv4", "IPv6"}}});
  Published out = run({a});
  const json expected = {{{"ip", "192.0.2.8"}, {"ipMode", "Proxy"}},
                         {{"ip", "2001:db8:1::1:0:0"}, {"ipMode", "Proxy"}}};
  EXPECT_EQ(out.objects[0]["status"]["loadBalancer"]["ingress"], expected);
  ASSERT_EQ(out.events.size(), 1u);
  EXPECT_EQ(out.events[0]["message"],
            "assigned 192.0.2.8 (pool default), 2001:db8:1::1:0:0 (pool ipv6)");
}

} // namespace
} // namespace k8slb::allocate

namespace k8slb::allocate {
namespace {

TEST(ConfigEvents, AnEventOnAnyObjectNamesIt) {
  json config_map = {{"apiVersion", "v1"},
                     {"kind", "ConfigMap"},
                     {"metadata", {{"name", "global"}, {"namespace", "k8slb-system"}, {"uid", "u1"},
                                   {"resourceVersion", "9"}}}};
  json event = make_object_event(config_map, "InvalidConfig", "Warning", "data.config: bad");
  EXPECT_EQ(event["involvedObject"],
            (json{{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"namespace", "k8slb-system"},
                  {"name", "global"}, {"uid", "u1"}, {"resourceVersion", "9"}}));
  EXPECT_EQ(event["metadata"]["namespace"], "k8slb-system");
  EXPECT_EQ(event["type"], "Warning");
  EXPECT_EQ(event["reason"], "InvalidConfig");
}

TEST(ConfigEvents, WithoutAConfigEachServiceWaitingForAnIpIsTold) {
  std::vector<model::Service> services = {
      testing::Svc("default/waiting"), testing::Svc("default/holds").holds({"192.0.2.10"}),
      testing::Svc("default/cluster-ip").type("ClusterIP"), testing::Svc("default/other-class").lb_class("x")};
  std::vector<json> events = no_config_events(services, "no valid config: ConfigMap k8slb-system/global: data.config: x");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["involvedObject"]["name"], "waiting");
  EXPECT_EQ(events[0]["type"], "Warning");
  EXPECT_EQ(events[0]["reason"], "AllocationFailed");
  EXPECT_EQ(events[0]["message"], "default/waiting: no valid config: ConfigMap k8slb-system/global: "
                                  "data.config: x; no IP is assigned until it is fixed");
}

} // namespace
} // namespace k8slb::allocate
