#pragma once
// Typed views of the Kubernetes objects k8slb reads. Parsing validates the fields k8slb uses
// and reports the first bad one as Error("namespace/name: field: message").

#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

namespace k8slb::model {

using json = nlohmann::json;

// Annotation keys, as the original defined them.
inline constexpr const char* kAnnotationPool = "loadbalancer/pool";
inline constexpr const char* kAnnotationShare = "loadbalancer/share";
inline constexpr const char* kAnnotationNocheck = "loadbalancer/nocheck";
inline constexpr const char* kAnnotationMode = "loadbalancer/mode";
inline constexpr const char* kAnnotationSsl = "loadbalancer/ssl";
inline constexpr const char* kAnnotationSslBackend = "loadbalancer/sslbackend";
inline constexpr const char* kAnnotationSslRedirect = "loadbalancer/sslredirect";
// Static IPs, comma-separated, at most one per family (as metallb.io/loadBalancerIPs).
inline constexpr const char* kAnnotationIps = "loadbalancer/ips";

// What reading a Service's annotations has to say about them (docs/configuration.md):
// - reason AnnotationMapped (Normal): a key read as a k8slb one: the original's spelling
//   `loadBalancer/...`, or MetalLB's `metallb.io/...` / `metallb.universe.tf/...` keys;
// - reason UnknownAnnotation (Warning): an unknown key under `loadbalancer/` (any case), with
//   the nearest known one;
// - reason InvalidService (Warning): two keys for one setting with different values; the
//   Service is refused (k8slb/validate.hpp).
struct AnnotationNote {
  std::string type;    // "Normal" or "Warning"
  std::string reason;
  std::string field;   // metadata.annotations[<the key as written>]
  std::string message;
};

struct Annotations {
  // Every annotation as written, plus each k8slb setting under its canonical key
  // (loadbalancer/pool, ...), whichever spelling it was written in.
  std::map<std::string, std::string> values;
  std::map<std::string, std::string> written_as; // canonical key -> the key it was read from
  std::vector<AnnotationNote> notes;
};
// Pure; the notes are in key order.
Annotations read_annotations(const std::map<std::string, std::string>& written);

struct ServicePort {
  std::string name;            // may be empty for a single-port Service
  std::string protocol = "TCP"; // TCP, UDP or SCTP
  int port = 0;
  int target_port = 0;         // numeric targetPort, 0 when named
  std::string target_port_name; // named targetPort, empty when numeric
  int node_port = 0;
};

struct Service {
  std::string ns;
  std::string name;
  std::string uid;
  std::string resource_version;
  std::string type;     // "LoadBalancer", "ClusterIP", ...
  std::string lb_class; // spec.loadBalancerClass, empty when unset
  std::map<std::string, std::string> annotations; // Annotations::values
  std::map<std::string, std::string> annotation_keys; // Annotations::written_as
  std::vector<AnnotationNote> annotation_notes;
  std::map<std::string, std::string> selector;
  std::vector<ServicePort> ports;
  std::string load_balancer_ip;            // spec.loadBalancerIP, empty when unset
  std::vector<std::string> ip_families;    // spec.ipFamilies: "IPv4", "IPv6"
  std::string ip_family_policy;            // SingleStack, PreferDualStack, RequireDualStack
  std::vector<std::string> source_ranges;  // spec.loadBalancerSourceRanges
  std::vector<std::string> ingress_ips;    // status.loadBalancer.ingress[].ip, in order

  std::string key() const { return ns + "/" + name; }
  std::string annotation(const std::string& key) const; // "" when absent
  // "metadata.annotations[<key as the user wrote it>]" for a canonical key.
  std::string annotation_field(const std::string& key) const;
  bool is_load_balancer() const { return type == "LoadBalancer"; }
};

struct EndpointPort {
  std::string name;
  std::string protocol = "TCP";
  int port = 0;
};

struct Endpoint {
  std::vector<std::string> addresses;
  bool ready = true;       // conditions.ready; absent means ready
  bool serving = true;
  bool terminating = false;
  std::string node_name;
  std::string target; // targetRef namespace/name, for readability of configs
};

struct EndpointSlice {
  std::string ns;
  std::string name;
  std::string service_name; // label kubernetes.io/service-name
  std::string address_type; // IPv4, IPv6, FQDN
  std::vector<Endpoint> endpoints;
  std::vector<EndpointPort> ports;
};

struct Node {
  std::string name;
  std::map<std::string, std::string> labels;
  std::vector<std::string> internal_ips; // status.addresses of type InternalIP
  bool ready = true;
};

Service parse_service(const json& object);
EndpointSlice parse_endpoint_slice(const json& object);
Node parse_node(const json& object);

// Everything a tool reads in one input document, sorted by namespace/name.
struct Snapshot {
  std::vector<Service> services;
  std::vector<EndpointSlice> slices;
  std::vector<Node> nodes;
  std::optional<json> config_map; // the k8slb config ConfigMap (k8slb-system/global), if any
  std::vector<json> items;        // every object as read, in input order, for pass-through
  std::vector<std::string> errors; // objects that could not be parsed ("ns/name: field: msg")
};

// Splits Kubernetes objects by kind. A Service that fails to parse is reported in `errors`
// and left out of `services` (it stays in `items`). The ConfigMap is recognised by
// namespace/name `config_map_key` (default "k8slb-system/global").
Snapshot make_snapshot(std::vector<json> items,
                       const std::string& config_map_key = "k8slb-system/global");

// A watch event, as k8slb-watch --events prints it (kubectl's --output-watch-events shape):
// {"type": "ADDED|MODIFIED|DELETED", "object": {...}}.
struct WatchEvent {
  std::string type;    // ADDED, MODIFIED or DELETED
  const json* object;  // into the event read
};
// A document that is a watch event rather than an object (which has a kind).
bool is_watch_event(const json& document);
// The event's type and object; nullopt for a BOOKMARK. Throws Error for an ERROR event, an
// unknown type or an event without an object.
std::optional<WatchEvent> read_watch_event(const json& event);

// The objects of a List kept up to date by watch events, for a tool that needs every object
// after each change (k8slb-render on k8slb-watch --events): an event parses its own object
// only. After load(list) and any events, snapshot() holds what make_snapshot() gives for the
// List those events lead to (the same objects and errors; `items` is left empty).
class Store {
public:
  explicit Store(std::string config_map_key = "k8slb-system/global");
  void load(const std::vector<json>& items); // a whole List: replaces every object
  // Throws read_watch_event's errors; else never throws. Returns false when the change cannot
  // change a rendering: a Service without ingress IPs before and after, an EndpointSlice whose
  // Service has none (or is not kept), each read without an error. k8slb-render skips those.
  bool apply(const json& event);
  bool loaded() const { return loaded_; }
  Snapshot snapshot() const; // sorted by namespace/name; errors in kind, namespace, name order

private:
  using Key = std::pair<std::string, std::string>; // namespace, name
  void put(const json& object);
  void erase(const std::string& kind, const Key& key);
  bool rendered(const std::string& kind, const Key& key) const; // may reach a rendering

  std::string config_map_key_;
  bool loaded_ = false;
  std::map<Key, Service> services_;
  std::map<Key, EndpointSlice> slices_;
  std::map<Key, Node> nodes_;
  std::optional<json> config_map_;
  std::map<std::pair<std::string, Key>, std::string> errors_; // (kind, key) -> why it was left out
};

// Ready endpoint addresses and the port number for a Service port, from the Service's
// EndpointSlices, matched the way kube-proxy does (port name, then the slice's ports).
struct Backend {
  std::string address;
  int port = 0;
  std::string target; // pod namespace/name if known
  bool operator<(const Backend& o) const {
    return std::tie(address, port) < std::tie(o.address, o.port);
  }
  bool operator==(const Backend& o) const { return address == o.address && port == o.port; }
};
std::vector<Backend> backends_for(const Service& service, const ServicePort& port,
                                  const std::vector<EndpointSlice>& slices);

} // namespace k8slb::model
