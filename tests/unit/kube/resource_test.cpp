// User-facing resource names, API paths and query strings.
#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

TEST(ParseResource, Names) {
  struct Case {
    std::string text;
    std::string plural;
    std::string ns;
    std::string name;
    std::string collection; // collection_path of the result
  };
  std::vector<Case> cases = {
      {"services", "services", "", "", "/api/v1/services"},
      {"svc", "services", "", "", "/api/v1/services"},
      {"Service", "services", "", "", "/api/v1/services"},
      {"services/web", "services", "web", "", "/api/v1/namespaces/web/services"},
      {"endpointslices", "endpointslices", "", "", "/apis/discovery.k8s.io/v1/endpointslices"},
      {"nodes", "nodes", "", "", "/api/v1/nodes"},
      {"node/lb-1", "nodes", "", "lb-1", "/api/v1/nodes"},
      {"configmap/k8slb-system/global", "configmaps", "k8slb-system", "global",
       "/api/v1/namespaces/k8slb-system/configmaps"},
      {"cm/k8slb-system/global", "configmaps", "k8slb-system", "global",
       "/api/v1/namespaces/k8slb-system/configmaps"},
      {"lease/k8slb-system/k8slb-watch", "leases", "k8slb-system", "k8slb-watch",
       "/apis/coordination.k8s.io/v1/namespaces/k8slb-system/leases"},
      {"events", "events", "", "", "/api/v1/events"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    ResourceRef ref = parse_resource(c.text);
    EXPECT_EQ(ref.kind.plural, c.plural);
    EXPECT_EQ(ref.ns, c.ns);
    EXPECT_EQ(ref.name, c.name);
    EXPECT_EQ(collection_path(ref.kind, ref.ns), c.collection);
  }
}

TEST(ParseResource, BadNamesAreErrors) {
  struct Case {
    std::string text;
    std::string message;
  };
  std::vector<Case> cases = {
      {"pods", "pods: unknown resource (known: services, endpointslices, configmaps, nodes, events, leases)"},
      {"configmap/k8slb-system/global/extra", "configmap/k8slb-system/global/extra: expected KIND, KIND/NAMESPACE or KIND/NAMESPACE/NAME"},
      {"node/a/b", "node/a/b: expected KIND or KIND/NAME (nodes are not namespaced)"},
      {"configmap/../global", "configmap/../global: \"..\" is not a valid namespace"},
      {"configmap/ns/Bad_Name", "configmap/ns/Bad_Name: \"Bad_Name\" is not a valid name"},
      {"configmap//global", "configmap//global: \"\" is not a valid namespace"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    try {
      parse_resource(c.text);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.message);
    }
  }
}

TEST(Paths, ObjectsAndSubresources) {
  EXPECT_EQ(object_path(find_kind("svc"), "default", "web", "status"),
            "/api/v1/namespaces/default/services/web/status");
  EXPECT_EQ(object_path(find_kind("lease"), "k8slb-system", "k8slb"),
            "/apis/coordination.k8s.io/v1/namespaces/k8slb-system/leases/k8slb");
  EXPECT_EQ(object_path(find_kind("nodes"), "ignored-for-cluster-scope", "lb-1"), "/api/v1/nodes/lb-1");
  EXPECT_EQ(find_kind("endpointslices").api_version(), "discovery.k8s.io/v1");
  EXPECT_EQ(find_kind("events").api_version(), "v1");
}

TEST(Paths, RefuseDotSegmentsAndEmptyNames) {
  // A hand-made document could name an object ".." and so reach another path.
  struct Case {
    const char* ns;
    const char* name;
  };
  const Case cases[] = {{"default", ".."}, {"default", "."}, {"..", "web"}, {"default", ""}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.ns) + "/" + c.name);
    EXPECT_THROW(object_path(find_kind("svc"), c.ns, c.name, "status"), Error);
  }
  EXPECT_EQ(object_path(find_kind("svc"), "default", "a..b"), "/api/v1/namespaces/default/services/a..b");
}

TEST(QueryString, EncodesEveryOption) {
  struct Case {
    std::string description;
    ListOptions options;
    std::string query;
  };
  ListOptions watch;
  watch.label_selector = "type=loadBalancer";
  watch.field_selector = "metadata.name=global";
  watch.resource_version = "42";
  watch.watch = true;
  watch.allow_watch_bookmarks = true;
  watch.timeout_seconds = 300;
  ListOptions page;
  page.limit = 500;
  page.continue_token = "a+b/c=";
  page.label_selector = "app in (a, b),!canary";
  std::vector<Case> cases = {
      {"nothing", {}, ""},
      {"a watch", watch,
       "?labelSelector=type%3DloadBalancer&fieldSelector=metadata.name%3Dglobal&resourceVersion=42"
       "&watch=true&allowWatchBookmarks=true&timeoutSeconds=300"},
      {"a page", page, "?labelSelector=app%20in%20%28a%2C%20b%29%2C%21canary&limit=500&continue=a%2Bb%2Fc%3D"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(query_string(c.options), c.query);
  }
}

} // namespace
} // namespace k8slb::kube
