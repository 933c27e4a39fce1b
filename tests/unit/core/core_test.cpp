#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <gtest/gtest.h>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"

namespace k8slb {
namespace {

TEST(Documents, ReadsAStreamOfJsonDocuments) {
  std::istringstream in(R"({"a": 1}
{"b": 2}   {"c": [3]}
)");
  JsonStreamReader reader(in, "<test>");
  std::vector<json> seen;
  while (auto document = reader.next()) seen.push_back(*document);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[2]["c"][0], 3);
}

TEST(Documents, NamesTheDocumentThatIsMalformed) {
  std::istringstream in("{\"a\": 1}\n{\"b\": }\n");
  JsonStreamReader reader(in, "<stdin>");
  EXPECT_TRUE(reader.next().has_value());
  try {
    reader.next();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<stdin>: document 2: malformed JSON"), std::string::npos) << e.what();
  }
}

TEST(Documents, ReadsMultiDocumentYamlAsKubernetesDoes) {
  auto documents = parse_documents(R"(apiVersion: v1
kind: Service
metadata:
  name: a
  annotations:
    loadbalancer/nocheck: "true"
spec:
  ports:
  - port: 80
    targetPort: "8080"
    name: http
---
# an empty document is dropped
---
apiVersion: v1
kind: Service
metadata: {name: b}
)", "svc.yml");
  ASSERT_EQ(documents.size(), 2u);
  EXPECT_EQ(documents[0]["spec"]["ports"][0]["port"], 80);             // plain number: a number
  EXPECT_EQ(documents[0]["spec"]["ports"][0]["targetPort"], "8080");   // quoted: a string
  EXPECT_EQ(documents[0]["metadata"]["annotations"]["loadbalancer/nocheck"], "true");
  EXPECT_EQ(documents[1]["metadata"]["name"], "b");
}

TEST(Documents, FlattensLists) {
  auto items = flatten_items({json::parse(R"({"kind": "List", "items": [{"kind": "Service"}, {"kind": "Node"}]})"),
                              json::parse(R"({"kind": "ServiceList", "items": [{"kind": "Service"}]})"),
                              json::parse(R"({"kind": "ConfigMap"})")});
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[3]["kind"], "ConfigMap");
}

json service(const char* text) { return json::parse(text); }

TEST(Model, ParsesAServiceAsTheSeedWritesIt) {
  auto s = model::parse_service(service(R"({"kind": "Service", "metadata": {"name": "rancher", "namespace": "cattle-system",
    "annotations": {"loadbalancer/pool": "external"}},
    "spec": {"type": "LoadBalancer", "loadBalancerIP": "1.2.3.4",
      "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}, {"port": 80, "targetPort": "web"}]},
    "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})"));
  EXPECT_EQ(s.key(), "cattle-system/rancher");
  EXPECT_TRUE(s.is_load_balancer());
  EXPECT_EQ(s.annotation(model::kAnnotationPool), "external");
  EXPECT_EQ(s.load_balancer_ip, "1.2.3.4");
  ASSERT_EQ(s.ports.size(), 2u);
  EXPECT_EQ(s.ports[0].target_port, 443);
  EXPECT_EQ(s.ports[1].protocol, "TCP");
  EXPECT_EQ(s.ports[1].target_port_name, "web");
  EXPECT_EQ(s.ingress_ips, std::vector<std::string>{"1.2.3.4"});
}

// Issue 8 items 6 and 8: every spelling of a k8slb setting is read under its canonical key.
TEST(Model, ReadsAnnotationSpellingsAndMetalLBKeys) {
  struct Case {
    std::string description;
    std::map<std::string, std::string> written;
    std::map<std::string, std::string> canonical; // values under loadbalancer/... keys
    std::vector<std::string> notes;               // "<type> <reason> <field>: <message part>"
  };
  const std::vector<Case> cases = {
      {"the original's keys: nothing to say", {{"loadbalancer/pool", "external"}},
       {{"loadbalancer/pool", "external"}}, {}},
      {"loadBalancer/pool, as the seed's prose writes it", {{"loadBalancer/pool", "external"}},
       {{"loadbalancer/pool", "external"}},
       {"Normal AnnotationMapped metadata.annotations[loadBalancer/pool]: read as loadbalancer/pool"}},
      {"MetalLB's keys, both generations",
       {{"metallb.io/address-pool", "p"}, {"metallb.universe.tf/loadBalancerIPs", "192.0.2.1"},
        {"metallb.io/allow-shared-ip", "k"}},
       {{"loadbalancer/pool", "p"}, {"loadbalancer/ips", "192.0.2.1"}, {"loadbalancer/share", "k"}},
       {"Normal AnnotationMapped metadata.annotations[metallb.io/address-pool]: MetalLB's",
        "Normal AnnotationMapped metadata.annotations[metallb.io/allow-shared-ip]: MetalLB's",
        "Normal AnnotationMapped metadata.annotations[metallb.universe.tf/loadBalancerIPs]: MetalLB's"}},
      {"a typo: a Warning with the nearest known key (the key stays, as written, and is not read)",
       {{"loadbalancer/sslbakend", "true"}}, {{"loadbalancer/sslbakend", "true"}},
       {"Warning UnknownAnnotation metadata.annotations[loadbalancer/sslbakend]: \"loadbalancer/sslbakend\" "
        "is not a k8slb annotation and is ignored; the nearest known one is loadbalancer/sslbackend"}},
      {"two spellings that disagree: the canonical one is read, the other named",
       {{"loadbalancer/pool", "a"}, {"loadBalancer/pool", "b"}}, {{"loadbalancer/pool", "a"}},
       {"Normal AnnotationMapped metadata.annotations[loadBalancer/pool]: read as",
        "Warning InvalidService metadata.annotations[loadBalancer/pool]: \"b\" disagrees with loadbalancer/pool \"a\""}},
      {"other prefixes are not ours", {{"example.com/pol", "x"}, {"loadbalancers/pool", "x"}}, {}, {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    model::Annotations read = model::read_annotations(c.written);
    for (const auto& [key, value] : c.written) EXPECT_EQ(read.values.at(key), value); // kept as written
    std::map<std::string, std::string> canonical;
    for (const auto& [key, value] : read.values)
      if (key.rfind("loadbalancer/", 0) == 0) canonical[key] = value;
    EXPECT_EQ(canonical, c.canonical);
    ASSERT_EQ(read.notes.size(), c.notes.size());
    for (std::size_t i = 0; i < c.notes.size(); ++i) {
      std::string text = fmt::format("{} {} {}: {}", read.notes[i].type, read.notes[i].reason,
                                     read.notes[i].field, read.notes[i].message);
      EXPECT_EQ(text.substr(0, c.notes[i].size()), c.notes[i]);
    }
  }
}

TEST(Model, NamesTheServiceAndFieldThatIsWrong) {
  struct Case {
    const char* object;
    const char* error;
  };
  const Case cases[] = {
      {R"({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"ports": [{"port": 80}, {"port": "x"}]}})",
       "ns/a: spec.ports[1].port: must be an integer, not \"x\""},
      {R"({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"ports": [{"port": 70000}]}})",
       "ns/a: spec.ports[0].port: 70000 is out of range"},
      {R"({"metadata": {"name": "a", "namespace": "ns", "annotations": {"loadbalancer/pool": 3}}})",
       "ns/a: metadata.annotations[loadbalancer/pool]: must be a string"},
      {R"({"metadata": {"name": "a"}, "spec": {"loadBalancerIP": 7}})",
       "default/a: spec.loadBalancerIP: must be a string, not number"},
      {R"({"metadata": {"namespace": "ns"}})", "Service: metadata.name: is required"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.object);
    try {
      model::parse_service(json::parse(c.object));
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.error);
    }
  }
}

TEST(Model, BackendsAreTheReadyEndpointsOfTheMatchingSlicePort) {
  auto s = model::parse_service(service(R"({"metadata": {"name": "web", "namespace": "default"},
    "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "targetPort": "web"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}})"));
  auto slice = model::parse_endpoint_slice(json::parse(R"({"metadata": {"name": "web-abc", "namespace": "default",
    "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
    "endpoints": [
      {"addresses": ["198.51.100.12"], "conditions": {"ready": true}, "targetRef": {"namespace": "default", "name": "web-2"}},
      {"addresses": ["198.51.100.11"]},
      {"addresses": ["198.51.100.13"], "conditions": {"ready": false}}]})"));
  auto other = slice;
  other.service_name = "other";
  auto http = model::backends_for(s, s.ports[0], {slice, other});
  ASSERT_EQ(http.size(), 2u);
  EXPECT_EQ(http[0].address, "198.51.100.11");
  EXPECT_EQ(http[0].port, 8080);
  EXPECT_EQ(http[1].target, "default/web-2");
  auto dns = model::backends_for(s, s.ports[1], {slice});
  ASSERT_EQ(dns.size(), 2u);
  EXPECT_EQ(dns[0].port, 5353);
}

TEST(Model, SnapshotSortsAndKeepsBadServicesOut) {
  auto snapshot = model::make_snapshot({
      json::parse(R"({"kind": "Service", "metadata": {"name": "b", "namespace": "x"}})"),
      json::parse(R"({"kind": "Service", "metadata": {"name": "a", "namespace": "x"}})"),
      json::parse(R"({"kind": "Service", "metadata": {"name": "bad", "namespace": "x"}, "spec": {"ports": 5}})"),
      json::parse(R"({"kind": "ConfigMap", "metadata": {"name": "global", "namespace": "k8slb-system"}})"),
      json::parse(R"({"kind": "Node", "metadata": {"name": "n1", "labels": {"type": "loadBalancer"}},
                      "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}})")});
  ASSERT_EQ(snapshot.services.size(), 2u);
  EXPECT_EQ(snapshot.services[0].name, "a");
  EXPECT_EQ(snapshot.errors, std::vector<std::string>{"x/bad: spec.ports: must be a list"});
  EXPECT_TRUE(snapshot.config_map.has_value());
  ASSERT_EQ(snapshot.nodes.size(), 1u);
  EXPECT_EQ(snapshot.nodes[0].internal_ips, std::vector<std::string>{"192.0.2.11"});
  EXPECT_EQ(snapshot.items.size(), 5u);
}

} // namespace
} // namespace k8slb

namespace k8slb {
namespace {
TEST(Problems, AreOneLineWhateverTheClusterSends) {
  Problem p{"default/evil\nk8slb-render: error: forged", "spec.ports[0].name", "InvalidService", "bad\tname"};
  EXPECT_EQ(p.to_string(),
            "default/evil\\nk8slb-render: error: forged: spec.ports[0].name: bad\\tname");
  EXPECT_EQ(describe("a\x01", "", "m"), "a\\x01: m");
}
} // namespace
} // namespace k8slb

namespace k8slb {
namespace {

// dump_line prints what nlohmann's dump(-1, ' ', false, replace) prints, on documents of every
// value type and strings of every byte: each escape, UTF-8 of 1-4 bytes, invalid UTF-8.
TEST(DumpLine, PrintsWhatNlohmannPrints) {
  auto expected = [](const json& document) { return document.dump(-1, ' ', false, json::error_handler_t::replace); };
  std::vector<json> cases = {
      json(nullptr), json(true), json(false), json(0), json(-7), json(std::uint64_t{18446744073709551615u}),
      json(1.5), json(-0.1), json(1e300), json::object(), json::array(), json(""),
      json{{"files", {{"haproxy.cfg", "global\n\tlog stdout \"x\" \\ end\r\n"}}}, {"problems", json::array()}},
      json{{"b", 1}, {"a", {1, 2.25, "three", nullptr, json::object(), json::array()}}},
      json{{"key \"quoted\"\n", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}},
      json("bad \xff utf-8 \xc3"), json("\x7f del and \x1f unit separator"),
  };
  std::string every_byte;
  for (int c = 1; c < 128; ++c) every_byte += static_cast<char>(c);
  cases.push_back(json(every_byte));
  cases.push_back(json{{every_byte, every_byte}});
  // Random documents: strings of random bytes (mostly ASCII, some not), nested.
  std::mt19937 random(20261129);
  auto random_string = [&] {
    std::string text;
    const int length = static_cast<int>(random() % 40);
    const bool ascii = random() % 3 != 0;
    for (int i = 0; i < length; ++i) text += static_cast<char>(ascii ? random() % 128 : random() % 256);
    return text;
  };
  for (int n = 0; n < 300; ++n) {
    json document = json::object();
    for (int k = 0; k < 5; ++k) {
      json array = json::array();
      for (int i = 0; i < 4; ++i) array.push_back(random() % 2 ? json(random_string()) : json(static_cast<int>(random() % 1000) - 500));
      document[random_string()] = json{{"list", array}, {"text", random_string()}};
    }
    cases.push_back(document);
  }
  for (const auto& document : cases) ASSERT_EQ(dump_line(document), expected(document)) << expected(document);
}

} // namespace
} // namespace k8slb
