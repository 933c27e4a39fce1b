// What k8slb-watch passes on and how it prints it.
#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

json service(const std::string& ns, const std::string& name, const json& spec, const json& status = json::object()) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"namespace", ns}, {"name", name}}},
          {"spec", spec},
          {"status", status}};
}

const json kIngress = {{"loadBalancer", {{"ingress", {{{"ip", "192.0.2.10"}}}}}}};

TEST(WantedService, Table) {
  struct Case {
    std::string description;
    json spec;
    json status;
    std::string lb_class;
    bool wanted;
  };
  std::vector<Case> cases = {
      {"LoadBalancer without class", {{"type", "LoadBalancer"}}, {}, "", true},
      {"ClusterIP", {{"type", "ClusterIP"}}, {}, "", false},
      {"no type at all is ClusterIP", json::object(), {}, "", false},
      {"NodePort", {{"type", "NodePort"}}, {}, "", false},
      {"another controller's class, no --lb-class", {{"type", "LoadBalancer"}, {"loadBalancerClass", "other"}}, {}, "", false},
      {"our class", {{"type", "LoadBalancer"}, {"loadBalancerClass", "k8slb"}}, {}, "k8slb", true},
      {"another class with --lb-class", {{"type", "LoadBalancer"}, {"loadBalancerClass", "other"}}, {}, "k8slb", false},
      {"no class with --lb-class", {{"type", "LoadBalancer"}}, {}, "k8slb", true},
      {"no longer LoadBalancer but still holding an IP", {{"type", "ClusterIP"}}, kIngress, "", true},
      {"no longer LoadBalancer, IP released", {{"type", "ClusterIP"}}, {{"loadBalancer", {{"ingress", json::array()}}}}, "", false},
      {"another controller's LoadBalancer holding its IP",
       {{"type", "LoadBalancer"}, {"loadBalancerClass", "other"}}, kIngress, "", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(wanted_service(service("default", "s", c.spec, c.status), ViewOptions{c.lb_class}), c.wanted);
  }
}

std::vector<std::string> names_in(const std::string& document) {
  std::vector<std::string> names;
  const json parsed = json::parse(document);
  for (const auto& item : parsed.at("items"))
    names.push_back(item.at("kind").get<std::string>() + " " + object_key(item));
  return names;
}

TEST(View, SortedByKindNamespaceNameAndFiltered) {
  View view;
  const json lb = {{"type", "LoadBalancer"}};
  struct Step {
    std::string description;
    std::string kind;
    std::vector<Change> changes;
    bool changed;
    std::vector<std::string> items;
    std::vector<std::string> events; // the watch events the step prints: "TYPE Kind ns/name"
  };
  std::vector<Step> steps = {
      {"services, one of them not a LoadBalancer", "services",
       {{"web/b", service("web", "b", lb)}, {"default/z", service("default", "z", lb)},
        {"default/c", service("default", "c", {{"type", "ClusterIP"}})}},
       true, {"Service default/z", "Service web/b"}, {"ADDED Service web/b", "ADDED Service default/z"}},
      {"a node sorts before services", "nodes", {{"lb-1", json{{"kind", "Node"}, {"metadata", {{"name", "lb-1"}}}}}},
       true, {"Node lb-1", "Service default/z", "Service web/b"}, {"ADDED Node lb-1"}},
      {"the same object again changes nothing", "services", {{"web/b", service("web", "b", lb)}}, false,
       {"Node lb-1", "Service default/z", "Service web/b"}, {}},
      {"a changed object is MODIFIED", "services", {{"web/b", service("web", "b", lb, kIngress)}}, true,
       {"Node lb-1", "Service default/z", "Service web/b"}, {"MODIFIED Service web/b"}},
      {"a Service that turns ClusterIP (no IP) leaves", "services",
       {{"web/b", service("web", "b", {{"type", "ClusterIP"}})}}, true, {"Node lb-1", "Service default/z"},
       {"DELETED Service web/b"}},
      {"a deletion", "services", {{"default/z", std::nullopt}}, true, {"Node lb-1"}, {"DELETED Service default/z"}},
      {"deleting something absent changes nothing", "services", {{"default/q", std::nullopt}}, false, {"Node lb-1"}, {}},
      {"a ConfigMap sorts first", "configmaps",
       {{"k8slb-system/global", json{{"kind", "ConfigMap"}, {"metadata", {{"namespace", "k8slb-system"}, {"name", "global"}}}}}},
       true, {"ConfigMap k8slb-system/global", "Node lb-1"}, {"ADDED ConfigMap k8slb-system/global"}},
  };
  for (const auto& step : steps) {
    SCOPED_TRACE(step.description);
    std::vector<std::string> lines;
    EXPECT_EQ(view.apply(find_kind(step.kind), step.changes, &lines), step.changed);
    std::vector<std::string> events;
    for (const auto& line : lines) {
      const json event = json::parse(line);
      EXPECT_EQ(line.find('\n'), std::string::npos);
      events.push_back(event.at("type").get<std::string>() + " " + event.at("object").at("kind").get<std::string>() +
                       " " + object_key(event.at("object")));
    }
    EXPECT_EQ(events, step.events);
    EXPECT_EQ(names_in(view.document()), step.items);
    EXPECT_EQ(view.size(), step.items.size());
  }
  json document = json::parse(view.document());
  EXPECT_EQ(document.at("kind"), "List");
  EXPECT_EQ(document.at("apiVersion"), "v1");
  EXPECT_EQ(view.document().find('\n'), std::string::npos); // one line of NDJSON
}

TEST(View, EmptyIsAnEmptyList) {
  json document = json::parse(View().document());
  EXPECT_TRUE(document.at("items").empty());
  EXPECT_EQ(document.at("kind"), "List");
}

} // namespace
} // namespace k8slb::kube
