// The cluster writer's pure parts: which writes a document asks for, the recheck after a 409,
// Event completion and the Event rate limit; and the writer itself in dry-run mode.
#include "k8slb/cluster.hpp"

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace k8slb::cluster {
namespace {

using std::chrono::seconds;

json service(const std::string& ns, const std::string& name, const std::string& rv, json ingress) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"namespace", ns}, {"name", name}, {"uid", "uid-" + name}, {"resourceVersion", rv}}},
          {"spec", {{"type", "LoadBalancer"}, {"ports", {{{"port", 80}, {"protocol", "TCP"}}}}}},
          {"status", {{"loadBalancer", {{"ingress", ingress}}}}}};
}

json event(const std::string& ns, const std::string& name, const std::string& reason,
           const std::string& message, const std::string& type = "Normal") {
  return {{"apiVersion", "v1"},
          {"kind", "Event"},
          {"metadata", {{"namespace", ns}, {"generateName", name + "."}}},
          {"involvedObject",
           {{"apiVersion", "v1"}, {"kind", "Service"}, {"namespace", ns}, {"name", name}, {"uid", "uid-" + name}}},
          {"reason", reason},
          {"message", message},
          {"type", type},
          {"source", {{"component", "k8slb"}}},
          {"reportingComponent", "k8slb"}};
}

json proxy_ip(const std::string& ip) { return json::array({{{"ip", ip}, {"ipMode", "Proxy"}}}); }

json list(std::vector<json> items) {
  return {{"apiVersion", "v1"}, {"kind", "List"}, {"metadata", json::object()}, {"items", items}};
}

TEST(PlanDocument, WritesOnlyWhatTheEventsAskFor) {
  json document = list({
      service("default", "web", "11", proxy_ip("192.0.2.10")),
      service("default", "unchanged", "12", proxy_ip("192.0.2.11")),
      service("default", "broken", "13", json::array()),
      service("apps", "gone", "14", json::array()),
      service("apps", "mode", "15", proxy_ip("192.0.2.12")),
      {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"namespace", "k8slb-system"}, {"name", "global"}}}},
      event("default", "web", "IPAllocated", "assigned 192.0.2.10 (pool default)"),
      event("default", "broken", "AllocationFailed", "default/broken: pool: no pool named x", "Warning"),
      event("apps", "gone", "IPReleased", "released 192.0.2.20"),
      event("apps", "mode", "StatusUpdated", "ipMode Proxy for 192.0.2.12"),
      event("apps", "missing", "IPAllocated", "assigned 192.0.2.30 (pool default)"),
  });
  Plan plan = plan_document(document);
  struct Expected {
    std::string key, resource_version, ingress;
  };
  std::vector<Expected> expected = {
      {"apps/gone", "14", "[]"},
      {"apps/mode", "15", "[192.0.2.12]"},
      {"default/web", "11", "[192.0.2.10]"},
  };
  ASSERT_EQ(plan.writes.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].key);
    EXPECT_EQ(plan.writes[i].key(), expected[i].key);
    EXPECT_EQ(plan.writes[i].resource_version, expected[i].resource_version);
    EXPECT_EQ(describe_ingress(plan.writes[i].ingress), expected[i].ingress);
    EXPECT_FALSE(plan.writes[i].previous_ingress.has_value());
  }
  EXPECT_EQ(plan.events.size(), 5u);
  ASSERT_EQ(plan.errors.size(), 1u);
  EXPECT_NE(plan.errors[0].find("apps/missing"), std::string::npos) << plan.errors[0];
}

TEST(PlanDocument, SingleObjectsAndOddInput) {
  EXPECT_TRUE(plan_document(json(nullptr)).writes.empty());
  EXPECT_TRUE(plan_document(json::array()).writes.empty());
  Plan single = plan_document(event("default", "x", "AllocationFailed", "m", "Warning"));
  EXPECT_EQ(single.events.size(), 1u);
  EXPECT_TRUE(single.writes.empty());
  json with_previous = service("default", "web", "5", proxy_ip("192.0.2.10"));
  with_previous["metadata"]["annotations"][kPreviousIngressAnnotation] = "[]";
  Plan plan = plan_document(list({with_previous, event("default", "web", "IPAllocated", "m")}));
  ASSERT_EQ(plan.writes.size(), 1u);
  ASSERT_TRUE(plan.writes[0].previous_ingress.has_value());
  EXPECT_EQ(*plan.writes[0].previous_ingress, json::array());
}

// Documents that lag behind our own writes are skipped until the watch catches up.
TEST(PredatesWrites, Script) {
  std::map<std::string, std::string> superseded = {{"default/a", "10"}, {"default/b", "20"}};
  struct Step {
    std::string description;
    json document;
    std::optional<std::string> stale;
    std::size_t remembered;
  };
  std::vector<Step> steps = {
      {"both still at the versions we replaced: stale (first by name)",
       list({service("default", "a", "10", json::array()), service("default", "b", "20", json::array())}),
       "default/a", 2},
      {"a caught up, b not yet: stale because of b",
       list({service("default", "a", "11", proxy_ip("192.0.2.10")), service("default", "b", "20", json::array())}),
       "default/b", 1},
      {"b caught up: fresh, nothing left to wait for",
       list({service("default", "b", "21", proxy_ip("192.0.2.11"))}), std::nullopt, 0},
  };
  for (const Step& step : steps) {
    SCOPED_TRACE(step.description);
    EXPECT_EQ(predates_writes(step.document, superseded), step.stale);
    EXPECT_EQ(superseded.size(), step.remembered);
  }
  std::map<std::string, std::string> gone = {{"default/a", "10"}};
  EXPECT_EQ(predates_writes(list({}), gone), std::nullopt) << "a deleted Service is not waited for";
  EXPECT_TRUE(gone.empty());
}

TEST(StatusPatch, CarriesThePrecondition) {
  EXPECT_EQ(status_patch(proxy_ip("192.0.2.10"), "42"),
            json::parse(R"({"metadata":{"resourceVersion":"42"},
                            "status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.10","ipMode":"Proxy"}]}}})"));
  EXPECT_EQ(status_patch(json::array(), ""),
            json::parse(R"({"status":{"loadBalancer":{"ingress":[]}}})"));
}

TEST(DescribeIngress, Readable) {
  struct Case {
    json ingress;
    std::string text;
  };
  std::vector<Case> cases = {
      {json::array(), "[]"},
      {proxy_ip("192.0.2.10"), "[192.0.2.10]"},
      {json::parse(R"([{"ip":"192.0.2.10","ipMode":"VIP"},{"ip":"2001:db8::10","ipMode":"VIP"}])"),
       "[192.0.2.10 (VIP), 2001:db8::10 (VIP)]"},
      {json::parse(R"([{"hostname":"192.0.2.10.sslip.io"}])"), "[192.0.2.10.sslip.io]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(describe_ingress(c.ingress), c.text);
  }
}

TEST(MayReapply, OnlyWhenTheDecisionStillHolds) {
  json desired = proxy_ip("192.0.2.10");
  StatusWrite write;
  write.ns = "default";
  write.name = "web";
  write.uid = "uid-web";
  write.resource_version = "11";
  write.ingress = desired;
  write.service = service("default", "web", "11", desired);
  write.previous_ingress = json::array();

  auto fresh = [](json ingress, const std::string& rv = "12") {
    return service("default", "web", rv, std::move(ingress));
  };
  json relabelled = fresh(json::array());
  relabelled["metadata"]["labels"] = {{"team", "x"}};
  json reannotated = fresh(json::array());
  reannotated["metadata"]["annotations"] = {{"loadbalancer/pool", "external"}};
  json respecced = fresh(json::array());
  respecced["spec"]["loadBalancerIP"] = "192.0.2.50";
  json recreated = fresh(json::array());
  recreated["metadata"]["uid"] = "uid-other";
  StatusWrite unknown_previous = write;
  unknown_previous.previous_ingress.reset();

  struct Case {
    std::string description;
    const StatusWrite& write;
    json fresh;
    Recheck expected;
  };
  std::vector<Case> cases = {
      {"someone already wrote the same ingress", write, fresh(desired), Recheck::already_current},
      {"only a label changed: the decision holds", write, relabelled, Recheck::reapply},
      {"another writer gave it another IP", write, fresh(proxy_ip("192.0.2.99")), Recheck::changed},
      {"the pool annotation changed", write, reannotated, Recheck::changed},
      {"spec.loadBalancerIP changed", write, respecced, Recheck::changed},
      {"deleted and created again (new uid)", write, recreated, Recheck::changed},
      {"previous ingress unknown: leave it to the next document", unknown_previous, relabelled,
       Recheck::changed},
      {"previous unknown but already current", unknown_previous, fresh(desired), Recheck::already_current},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(to_string(may_reapply(c.write, c.fresh)), to_string(c.expected));
  }
}

TEST(CompleteEvent, FieldsTheApiWants) {
  auto now = std::chrono::system_clock::from_time_t(1795600000) + std::chrono::microseconds(123456);
  json completed = complete_event(event("default", "web", "IPAllocated", "assigned 192.0.2.10"), now,
                                  "watcher-0");
  EXPECT_FALSE(completed["metadata"].contains("generateName"));
  std::string name = completed["metadata"]["name"];
  EXPECT_EQ(name.rfind("web.", 0), 0u) << name;
  EXPECT_EQ(completed["metadata"]["namespace"], "default");
  EXPECT_EQ(completed["firstTimestamp"], rfc3339(now));
  EXPECT_EQ(completed["lastTimestamp"], rfc3339(now));
  EXPECT_EQ(completed["eventTime"], rfc3339_micro(now));
  EXPECT_EQ(completed["count"], 1);
  EXPECT_EQ(completed["action"], "Allocate");
  EXPECT_EQ(completed["reportingComponent"], "k8slb");
  EXPECT_EQ(completed["reportingInstance"], "watcher-0");
  EXPECT_EQ(completed["involvedObject"]["uid"], "uid-web");

  EXPECT_EQ(rfc3339_micro(now).size(), std::string("2026-11-26T10:03:20.123456Z").size());
  EXPECT_EQ(rfc3339_micro(now).substr(19), ".123456Z");

  std::string long_message(3000, 'x');
  json cut = complete_event(event("default", "web", "InvalidService", long_message, "Warning"), now, "w");
  EXPECT_LE(cut["message"].get<std::string>().size(), 1024u);
  EXPECT_EQ(cut["action"], "Allocate");
  EXPECT_EQ(complete_event(event("d", "w", "IPReleased", "m"), now, "w")["action"], "Release");
}

TEST(SharedEventName, SameForEveryNodeDifferentPerFact) {
  json base = event("default", "web", "MissingCertificate", "spec.ports[1]: no readable certificate", "Warning");
  const std::string name = shared_event_name(base);
  EXPECT_EQ(name.rfind("web.k8slb-", 0), 0u) << name;
  EXPECT_EQ(name.size(), std::string("web.k8slb-").size() + 16);
  json other_node = base;
  other_node["source"]["host"] = "lb-b"; // who reports it does not name it
  EXPECT_EQ(shared_event_name(other_node), name);
  struct Case {
    std::string description;
    std::function<void(json&)> change;
  };
  const std::vector<Case> different = {
      {"another message", [](json& e) { e["message"] = "spec.ports[2]: no readable certificate"; }},
      {"another reason", [](json& e) { e["reason"] = "NoInterface"; }},
      {"another Service", [](json& e) { e["involvedObject"]["name"] = "api"; }},
      {"the Service made again (new uid)", [](json& e) { e["involvedObject"]["uid"] = "uid-web-2"; }},
      {"another namespace", [](json& e) { e["involvedObject"]["namespace"] = "prod"; }},
  };
  for (const auto& c : different) {
    SCOPED_TRACE(c.description);
    json changed = base;
    c.change(changed);
    EXPECT_NE(shared_event_name(changed), name);
  }
  json long_name = event("default", std::string(253, 'a'), "NotRendered", "m", "Warning");
  EXPECT_LE(shared_event_name(long_name).size(), 253u);
}

TEST(TakeoverTracker, ReportsEachTakeoverOnce) {
  TakeoverTracker tracker("lb-b");
  tracker.set_vips(json::parse(R"({
    "192.0.2.10": [{"namespace": "default", "name": "web", "uid": "u-web"},
                   {"namespace": "default", "name": "web-udp", "uid": "u-udp"}],
    "2001:db8::10": [{"namespace": "prod", "name": "api", "uid": "u-api"}],
    "192.0.2.99": [{"namespace": "", "name": "broken"}]
  })"));
  auto names = [](const std::vector<json>& events) {
    std::vector<std::string> out;
    for (const json& e : events)
      out.push_back(e["involvedObject"]["namespace"].get<std::string>() + "/" +
                    e["involvedObject"]["name"].get<std::string>() + ": " + e["message"].get<std::string>());
    return out;
  };
  struct Step {
    std::string description;
    std::set<std::string> held;
    std::vector<std::string> reported;
  };
  const std::vector<Step> steps = {
      {"the node's own address only", {"198.51.100.2"}, {}},
      {"takes a VIP: its Services, each once",
       {"198.51.100.2", "192.0.2.10"},
       {"default/web: 192.0.2.10 is served by node lb-b", "default/web-udp: 192.0.2.10 is served by node lb-b"}},
      {"still holds it: nothing new", {"198.51.100.2", "192.0.2.10"}, {}},
      {"takes the IPv6 one too", {"192.0.2.10", "2001:db8::10"}, {"prod/api: 2001:db8::10 is served by node lb-b"}},
      {"loses both", {"198.51.100.2"}, {}},
      {"takes one back: said again",
       {"192.0.2.10"},
       {"default/web: 192.0.2.10 is served by node lb-b", "default/web-udp: 192.0.2.10 is served by node lb-b"}},
      {"an entry without a namespace is skipped", {"192.0.2.10", "192.0.2.99"}, {}},
      {"a VIP no Service has", {"192.0.2.10", "192.0.2.200"}, {}},
  };
  for (const auto& step : steps) {
    SCOPED_TRACE(step.description);
    auto events = tracker.taken(step.held);
    EXPECT_EQ(names(events), step.reported);
    for (const json& e : events) {
      EXPECT_EQ(e["reason"], "NodeAssigned");
      EXPECT_EQ(e["type"], "Normal");
      EXPECT_EQ(e["source"]["host"], "lb-b");
      EXPECT_FALSE(e["involvedObject"]["uid"].get<std::string>().empty());
    }
  }
}

TEST(TokenBucket, BurstThenRate) {
  TimePoint t0{};
  TokenBucket bucket(2, 1); // 2 at once, then 1 per second
  struct Step {
    int at_ms;
    bool granted;
  };
  std::vector<Step> steps = {{0, true}, {0, true}, {0, false}, {500, false}, {1000, true},
                             {1000, false}, {5000, true}, {5000, true}, {5000, false}};
  for (std::size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i) + " at " + std::to_string(steps[i].at_ms) + " ms");
    EXPECT_EQ(bucket.take(t0 + std::chrono::milliseconds(steps[i].at_ms)), steps[i].granted);
  }
}

// The same failing Service reported in every document: one Event, its count raised once per
// interval, never a flood.
TEST(EventLimiter, SameEventScript) {
  EventLimits limits;
  limits.interval = Seconds(300);
  limits.burst = 3;
  limits.per_second = 0.001;
  EventLimiter limiter(limits);
  TimePoint t0{};
  using V = EventLimiter::Verdict;
  struct Step {
    std::string description;
    std::string key;
    int at_s;
    V verdict;
    std::int64_t count = 0; // for update
  };
  std::vector<Step> steps = {
      {"first report of a: create", "a", 0, V::create},
      {"a again 1 s later: counted only", "a", 1, V::suppress},
      {"a again 299 s later: counted only", "a", 299, V::suppress},
      {"b, another Service: create", "b", 10, V::create},
      {"a after the interval: update, count 1 + 2 suppressed + this", "a", 301, V::update, 4},
      {"a right after the update: counted only", "a", 302, V::suppress},
      {"c: the bucket is empty (3 used, refill 0.001/s): dropped", "c", 303, V::drop},
      {"c much later, bucket refilled: create", "c", 1100, V::create},
  };
  for (const Step& step : steps) {
    SCOPED_TRACE(step.description);
    TimePoint now = t0 + seconds(step.at_s);
    EventLimiter::Decision decision = limiter.check(step.key, now);
    EXPECT_EQ(to_string(decision.verdict), to_string(step.verdict));
    if (decision.verdict == V::create) limiter.created(step.key, step.key + ".1", "first", now);
    if (decision.verdict == V::update) {
      EXPECT_EQ(decision.count, step.count);
      EXPECT_EQ(decision.name, step.key + ".1");
      limiter.updated(step.key, decision.count, now);
    }
  }
  limiter.expire(t0 + seconds(1100 + 3601), Seconds(3600));
  EXPECT_EQ(limiter.size(), 0u) << "records of Services long quiet are dropped";
}

TEST(EventLimiter, ForgottenEventIsCreatedAgain) {
  EventLimiter limiter(EventLimits{Seconds(60), 10, 1});
  TimePoint t0{};
  ASSERT_EQ(limiter.check("a", t0).verdict, EventLimiter::Verdict::create);
  limiter.created("a", "a.1", "first", t0);
  ASSERT_EQ(limiter.check("a", t0 + seconds(61)).verdict, EventLimiter::Verdict::update);
  limiter.forget("a"); // the PATCH answered 404: the Event expired
  EXPECT_EQ(to_string(limiter.check("a", t0 + seconds(62)).verdict), "create");
}

// The writer in dry-run mode prints the requests it would send, one JSON line each.
TEST(ClusterWriterDryRun, PrintsStatusPatchesThenEvents) {
  std::vector<std::string> log;
  WriterOptions options;
  options.dry_run = true;
  options.instance = "watcher-0";
  ClusterWriter writer(nullptr, options, [&](const std::string& line) { log.push_back(line); });
  json document = list({
      service("default", "web", "11", proxy_ip("192.0.2.10")),
      service("default", "broken", "13", json::array()),
      event("default", "web", "IPAllocated", "assigned 192.0.2.10 (pool default)"),
      event("default", "broken", "AllocationFailed", "default/broken: pool: no pool x", "Warning"),
  });
  testing::internal::CaptureStdout();
  WriteSummary first = writer.write(document);
  WriteSummary second = writer.write(document);
  std::string out = testing::internal::GetCapturedStdout();

  std::vector<json> requests;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) requests.push_back(json::parse(line));
  // First document: PATCH web, POST 2 Events. Second: PATCH web again (the allocator asked
  // again), its Event and the failure's are suppressed.
  ASSERT_EQ(requests.size(), 4u) << out;
  EXPECT_EQ(requests[0]["method"], "PATCH");
  EXPECT_EQ(requests[0]["path"], "/api/v1/namespaces/default/services/web/status");
  EXPECT_EQ(requests[0]["body"]["metadata"]["resourceVersion"], "11");
  EXPECT_EQ(requests[1]["method"], "POST");
  EXPECT_EQ(requests[1]["path"], "/api/v1/namespaces/default/events");
  EXPECT_EQ(requests[1]["body"]["reason"], "IPAllocated");
  EXPECT_EQ(requests[2]["body"]["reason"], "AllocationFailed");
  EXPECT_EQ(requests[3]["method"], "PATCH");
  EXPECT_EQ(first.written, 1);
  EXPECT_EQ(first.events_created, 2);
  EXPECT_EQ(second.events_created, 0);
  EXPECT_EQ(second.events_suppressed, 2);
  ASSERT_FALSE(log.empty());
  EXPECT_EQ(log[0], "default/web: status.loadBalancer.ingress = [192.0.2.10]");
}

TEST(ClusterWriter, StopsWhenNoLongerLeader) {
  WriterOptions options;
  options.dry_run = true;
  ClusterWriter writer(nullptr, options, [](const std::string&) {}, [] { return false; });
  json document = list({service("default", "web", "11", proxy_ip("192.0.2.10")),
                        event("default", "web", "IPAllocated", "assigned 192.0.2.10")});
  testing::internal::CaptureStdout();
  EXPECT_THROW(writer.write(document), Error);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "") << "nothing written";
}

} // namespace
} // namespace k8slb::cluster
