// Watch-event decoding and the store that list+watch feeds.
#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

const ResourceKind& services() { return find_kind("services"); }

json service(const std::string& ns, const std::string& name, const std::string& rv,
             const std::string& type = "LoadBalancer") {
  return {{"metadata", {{"namespace", ns}, {"name", name}, {"resourceVersion", rv}}},
          {"spec", {{"type", type}}}};
}

std::string line(const std::string& type, const json& object) {
  return json{{"type", type}, {"object", object}}.dump();
}

TEST(DecodeWatchEvent, Types) {
  struct Case {
    std::string line;
    EventType type;
    std::string resource_version;
  };
  std::vector<Case> cases = {
      {line("ADDED", service("default", "a", "11")), EventType::added, "11"},
      {line("MODIFIED", service("default", "a", "12")), EventType::modified, "12"},
      {line("DELETED", service("default", "a", "13")), EventType::deleted, "13"},
      {line("BOOKMARK", {{"kind", "Service"}, {"apiVersion", "v1"}, {"metadata", {{"resourceVersion", "14"}}}}),
       EventType::bookmark, "14"},
      {line("ERROR", {{"kind", "Status"}, {"code", 410}, {"reason", "Expired"}}), EventType::error, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.line);
    WatchEvent event = decode_watch_event(c.line);
    EXPECT_EQ(event.type, c.type);
    EXPECT_EQ(event.resource_version(), c.resource_version);
  }
  EXPECT_EQ(decode_watch_event(cases[4].line).object.value("code", 0), 410);
}

TEST(DecodeWatchEvent, MalformedLinesAreErrors) {
  std::vector<std::string> lines = {
      "{not json",
      "[]",
      R"({"object": {"metadata": {}}})",
      R"({"type": "ADDED"})",
      R"({"type": "ADDED", "object": 5})",
      R"({"type": "RENAMED", "object": {"metadata": {}}})",
      R"({"type": "ADDED", "object": {"spec": {}}})",
  };
  for (const auto& text : lines) {
    SCOPED_TRACE(text);
    EXPECT_THROW(decode_watch_event(text), Error);
  }
}

TEST(DecodeWatchEvent, AnEventWhoseObjectCannotBeUsedNamesTheField) {
  // The watch skips such an event (the message starts "watch event: object") and goes on.
  struct Case {
    std::string line;
    const char* error;
  };
  const Case cases[] = {
      {R"({"type": "ADDED", "object": {"metadata": 5}})", "watch event: object.metadata: missing or not an object"},
      {R"({"type": "MODIFIED", "object": {"metadata": {"name": 5}}})", "watch event: object.metadata.name: missing"},
      {R"({"type": "DELETED", "object": {"metadata": {"name": "a", "namespace": []}}})",
       "watch event: object.metadata.namespace: must be a string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.line);
    try {
      decode_watch_event(c.line);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.error), std::string::npos) << e.what();
    }
  }
  // An ERROR event whose code is not a number is still an ERROR event (the watch backs off).
  WatchEvent error = decode_watch_event(R"({"type": "ERROR", "object": {"code": "abc"}})");
  EXPECT_EQ(error.type, EventType::error);
  // A line nested past the limit is an error, not a crash.
  EXPECT_THROW(decode_watch_event(std::string(100000, '[') + std::string(100000, ']')), Error);
}

TEST(Store, ARelistLeavesOutObjectsWithoutAName) {
  Store store(services());
  std::vector<json> items = {service("default", "a", "1"), json{{"metadata", 5}}, json{{"metadata", {{"name", 7}}}}, 5};
  auto changes = store.replace(std::move(items), "9");
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].key, "default/a");
}

TEST(ObjectKey, NamespacedAndClusterScoped) {
  EXPECT_EQ(object_key(service("default", "a", "1")), "default/a");
  EXPECT_EQ(object_key(json{{"metadata", {{"name", "node-1"}}}}), "node-1");
}

// An ordered script of events against one store: what each one changes.
TEST(Store, AppliesEventsInOrder) {
  struct Step {
    std::string description;
    std::string type;
    json object;
    bool changes;               // whether apply reports a change
    std::vector<std::string> keys; // store content after the step
    std::string resource_version;  // after the step
  };
  std::vector<Step> steps = {
      {"a appears", "ADDED", service("default", "a", "10"), true, {"default/a"}, "10"},
      {"b appears in another namespace", "ADDED", service("web", "b", "11"), true, {"default/a", "web/b"}, "11"},
      {"a replayed after a reconnect changes nothing", "ADDED", service("default", "a", "10"), false,
       {"default/a", "web/b"}, "10"},
      {"a modified", "MODIFIED", service("default", "a", "12", "ClusterIP"), true, {"default/a", "web/b"}, "12"},
      {"a bookmark moves the resourceVersion only", "BOOKMARK",
       {{"kind", "Service"}, {"apiVersion", "v1"}, {"metadata", {{"resourceVersion", "20"}}}}, false,
       {"default/a", "web/b"}, "20"},
      {"b deleted", "DELETED", service("web", "b", "21"), true, {"default/a"}, "21"},
      {"deleting b again changes nothing", "DELETED", service("web", "b", "22"), false, {"default/a"}, "22"},
      {"MODIFIED for an unknown object adds it", "MODIFIED", service("web", "c", "23"), true,
       {"default/a", "web/c"}, "23"},
  };
  Store store(services());
  for (const auto& step : steps) {
    SCOPED_TRACE(step.description);
    auto change = store.apply(decode_watch_event(line(step.type, step.object)));
    EXPECT_EQ(change.has_value(), step.changes);
    if (change) {
      EXPECT_EQ(change->key, object_key(step.object));
      EXPECT_EQ(change->object.has_value(), step.type != "DELETED");
    }
    std::vector<std::string> keys;
    for (const auto& [key, object] : store.objects()) keys.push_back(key);
    EXPECT_EQ(keys, step.keys);
    EXPECT_EQ(store.resource_version(), step.resource_version);
  }
}

TEST(Store, FillsInKindAndApiVersionAsKubectlDoes) {
  Store slices(find_kind("endpointslices"));
  auto change = slices.apply(decode_watch_event(line("ADDED", service("default", "a-1", "5"))));
  ASSERT_TRUE(change && change->object);
  EXPECT_EQ(change->object->at("kind"), "EndpointSlice");
  EXPECT_EQ(change->object->at("apiVersion"), "discovery.k8s.io/v1");
  EXPECT_EQ(json::parse(slices.objects().at("default/a-1")).at("kind"), "EndpointSlice");
  EXPECT_EQ(change->text, slices.objects().at("default/a-1")); // the text kept is the change's
}

TEST(Store, LeavesOutManagedFieldsAndTheLastAppliedManifest) {
  const json managed = json::array({{{"manager", "kubectl"}, {"operation", "Update"}}});
  struct Case {
    std::string name;
    json metadata_extra;       // merged into metadata
    json expected_annotations; // null: no annotations key at all
  };
  std::vector<Case> cases = {
      {"managed-fields-only", {{"managedFields", managed}}, nullptr},
      {"last-applied-only", {{"annotations", {{kLastAppliedAnnotation, "{\"kind\":\"Service\"}"}}}}, nullptr},
      {"both-and-ours",
       {{"managedFields", managed},
        {"annotations", {{kLastAppliedAnnotation, "{}"}, {"loadbalancer/pool", "blue"}}}},
       {{"loadbalancer/pool", "blue"}}},
      {"nothing-to-drop", {{"annotations", {{"loadbalancer/pool", "blue"}}}}, {{"loadbalancer/pool", "blue"}}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    json object = service("default", c.name, "5");
    object["metadata"].update(c.metadata_extra);
    Store watched(services());
    auto change = watched.apply(decode_watch_event(line("ADDED", object)));
    ASSERT_TRUE(change && change->object);
    Store listed(services());
    auto listed_changes = listed.replace({object}, "5");
    ASSERT_EQ(listed_changes.size(), 1u);
    for (const json& kept : {*change->object, json::parse(watched.objects().at("default/" + c.name)),
                             *listed_changes[0].object, json::parse(listed.objects().at("default/" + c.name)),
                             json::parse(change->text), json::parse(listed_changes[0].text)}) {
      const json& metadata = kept.at("metadata");
      EXPECT_FALSE(metadata.contains("managedFields"));
      EXPECT_EQ(metadata.value("annotations", json()), c.expected_annotations);
      EXPECT_EQ(metadata.at("name"), c.name);
      EXPECT_EQ(kept.at("spec"), object.at("spec"));
    }
  }
}

TEST(Store, RelistReportsOnlyRealDifferences) {
  Store store(services());
  auto initial = store.replace({service("default", "keep", "1"), service("default", "gone", "2"),
                                service("default", "edit", "3")},
                               "3");
  EXPECT_EQ(initial.size(), 3u); // everything is new to an empty store
  auto changes = store.replace({service("default", "edit", "7", "NodePort"), service("default", "keep", "1"),
                                service("default", "new", "8")},
                               "9");
  struct Expected {
    std::string key;
    bool present;
  };
  std::vector<Expected> expected = {{"default/edit", true}, {"default/gone", false}, {"default/new", true}};
  ASSERT_EQ(changes.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(expected[i].key);
    EXPECT_EQ(changes[i].key, expected[i].key);
    EXPECT_EQ(changes[i].object.has_value(), expected[i].present);
  }
  EXPECT_EQ(changes[0].object->at("spec").at("type"), "NodePort");
  EXPECT_EQ(store.resource_version(), "9");
  EXPECT_EQ(store.objects().size(), 3u);
  EXPECT_TRUE(store.replace({service("default", "edit", "7", "NodePort"), service("default", "keep", "1"),
                             service("default", "new", "8")},
                            "10")
                  .empty());
}

} // namespace
} // namespace k8slb::kube
