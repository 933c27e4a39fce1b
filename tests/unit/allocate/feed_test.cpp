// Feed: k8slb-allocate's state between watch events. Steps of a running cluster, each with
// what the next document must carry.

#include "k8slb/allocate.hpp"

#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::allocate {
namespace {

using nlohmann::json;

json config_map(const std::string& range) {
  json config = {{"pools", {{"default", {{"network", "192.0.2.0/24"}, {"range", range}}}}}};
  return {{"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata", {{"namespace", "k8slb-system"}, {"name", "global"}, {"resourceVersion", "1"}}},
          {"data", {{"config", config.dump()}}}};
}

json service(const std::string& name, int version, const std::string& ip = "") {
  json item = {{"apiVersion", "v1"},
               {"kind", "Service"},
               {"metadata", {{"namespace", "default"}, {"name", name}, {"uid", "uid-" + name},
                             {"resourceVersion", std::to_string(version)}}},
               {"spec", json::parse(R"({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]})")},
               {"status", {{"loadBalancer", json::object()}}}};
  if (!ip.empty()) item["status"]["loadBalancer"]["ingress"] = {{{"ip", ip}, {"ipMode", "Proxy"}}};
  return item;
}

json event(const std::string& type, json object) { return {{"type", type}, {"object", std::move(object)}}; }

// Loads a List the way k8slb-allocate does: parsed Services, the ConfigMap's config.
Feed loaded(const std::vector<json>& items) {
  Feed feed("k8slb-system/global", Options{});
  std::vector<model::Service> services;
  std::optional<pool::Config> config;
  for (const json& item : items) {
    if (item["kind"] == "Service") services.push_back(model::parse_service(item));
    if (item["kind"] == "ConfigMap") config = pool::parse_config_map(item);
  }
  feed.load(items, services, config);
  return feed;
}

// The next document as k8slb-allocate prints it: "name ip" per Service with a status to write,
// then "Event reason" for every Event; "" when nothing would be printed.
std::string next_document(Feed& feed) {
  auto change = feed.take();
  if (!change) return "";
  json document = publish(change->items, change->services, change->results);
  for (json& extra : change->events) document["items"].push_back(std::move(extra));
  if (!Feed::trim(document)) return "";
  feed.published(document);
  std::string out;
  for (const json& item : document["items"]) {
    if (!out.empty()) out += "; ";
    if (item["kind"] == "Service") {
      const json& ingress = item["status"]["loadBalancer"]["ingress"];
      out += item["metadata"]["name"].get<std::string>() + " " +
             (ingress.empty() ? std::string("-") : ingress[0]["ip"].get<std::string>());
    } else {
      out += "Event " + item["reason"].get<std::string>();
    }
  }
  return out;
}

TEST(Feed, EachChangePublishesOnlyWhatItChanged) {
  Feed feed = loaded({config_map("192.0.2.10-192.0.2.12"), service("a", 2, "192.0.2.10")});
  struct Step {
    std::string description;
    std::vector<json> events;
    std::string document;
  };
  const std::vector<Step> steps = {
      {"a new Service gets the next address", {event("ADDED", service("b", 3))},
       "b 192.0.2.11; Event IPAllocated"},
      {"another, while b's status write is on its way: b is not published again",
       {event("ADDED", service("c", 4))}, "c 192.0.2.12; Event IPAllocated"},
      {"b's write comes back: nothing to do", {event("MODIFIED", service("b", 5, "192.0.2.11"))}, ""},
      {"the pool is full: a Warning, no status", {event("ADDED", service("d", 6))}, "Event AllocationFailed"},
      {"a is deleted: d, waiting, gets its address in the same document",
       {event("DELETED", service("a", 7, "192.0.2.10"))}, "d 192.0.2.10; Event IPAllocated"},
      {"a burst read at once: one document", {event("ADDED", service("e", 8)), event("DELETED", service("c", 9, "192.0.2.12"))},
       "e 192.0.2.12; Event IPAllocated"},
      {"a bookmark changes nothing", {json{{"type", "BOOKMARK"}, {"object", {{"kind", "Service"}}}}}, ""},
  };
  for (const Step& step : steps) {
    SCOPED_TRACE(step.description);
    for (const json& change : step.events) feed.apply(change);
    EXPECT_EQ(next_document(feed), step.document);
  }
}

// A resync List that was made before our status write reached the watch: the Service still
// shows no IP at the version we wrote over. The address it was given stays its own.
TEST(Feed, AResyncThatPredatesOurWriteKeepsTheAddressWePublished) {
  Feed feed = loaded({config_map("192.0.2.10-192.0.2.11")});
  feed.apply(event("ADDED", service("b", 3)));
  EXPECT_EQ(next_document(feed), "b 192.0.2.10; Event IPAllocated");
  // a, new in the List, comes first in namespace/name order: it must not get b's address.
  std::vector<json> resync = {config_map("192.0.2.10-192.0.2.11"), service("b", 3), service("a", 4)};
  std::vector<model::Service> services = {model::parse_service(resync[1]), model::parse_service(resync[2])};
  std::map<std::string, std::string> ips;
  for (const Result& result : feed.load(resync, services, pool::parse_config_map(resync[0])))
    ips[result.service] = result.ips.empty() ? "-" : result.ips[0].to_string();
  EXPECT_EQ(ips, (std::map<std::string, std::string>{{"default/a", "192.0.2.11"}, {"default/b", "192.0.2.10"}}));
}

TEST(Feed, ConfigMapEvents) {
  Feed feed = loaded({config_map("192.0.2.10-192.0.2.10"), service("a", 2, "192.0.2.10"), service("b", 3)});
  EXPECT_EQ(next_document(feed), "");
  // Refused: the last good config stays, the ConfigMap gets a Warning, and b, waiting, is told again.
  json broken = config_map("192.0.2.10-192.0.2.300");
  EXPECT_THROW(feed.apply(event("MODIFIED", broken)), Error);
  EXPECT_TRUE(feed.config_stale());
  EXPECT_EQ(next_document(feed), "Event AllocationFailed; Event InvalidConfig");
  // A wider range: b is served.
  feed.apply(event("MODIFIED", config_map("192.0.2.10-192.0.2.11")));
  EXPECT_FALSE(feed.config_stale());
  EXPECT_EQ(next_document(feed), "b 192.0.2.11; Event IPAllocated");
  // Deleted: the last good config stays.
  feed.apply(event("DELETED", config_map("192.0.2.10-192.0.2.11")));
  feed.apply(event("ADDED", service("c", 9)));
  EXPECT_EQ(next_document(feed), "Event AllocationFailed");
}

TEST(Feed, ServicesBeforeTheConfigAreAllocatedWhenItComes) {
  Feed feed = loaded({service("a", 2)});
  feed.apply(event("ADDED", service("b", 3)));
  EXPECT_EQ(next_document(feed), "");
  feed.apply(event("ADDED", config_map("192.0.2.10-192.0.2.20")));
  EXPECT_EQ(next_document(feed), "a 192.0.2.10; b 192.0.2.11; Event IPAllocated; Event IPAllocated");
}

TEST(Feed, EventsItCannotUseAreRefusedByName) {
  Feed feed = loaded({config_map("192.0.2.10-192.0.2.20")});
  struct Case {
    json event;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {json::array(), "must be a JSON object"},
      {{{"type", "ADDED"}}, "object: is required"},
      {{{"type", "ERROR"}, {"object", {{"kind", "Status"}, {"message", "too old resource version"}}}},
       "too old resource version"},
      {{{"type", "REPLACED"}, {"object", service("a", 2)}}, "expected ADDED, MODIFIED, DELETED or BOOKMARK"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.event.dump());
    try {
      feed.apply(c.event);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
    }
  }
}

} // namespace
} // namespace k8slb::allocate
