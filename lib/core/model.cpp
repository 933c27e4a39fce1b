#include "k8slb/model.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include <fmt/format.h>

#include "k8slb/error.hpp"

namespace k8slb::model {

namespace {

// A value as it is shown in a message: JSON, invalid UTF-8 replaced, cut to a readable length.
std::string show(const json& value) {
  return shorten(value.dump(-1, ' ', false, json::error_handler_t::replace), 80);
}

// Reads Kubernetes JSON with errors that name the object and the field.
class Reader {
public:
  explicit Reader(std::string object) : object_(std::move(object)) {}

  const std::string& object() const { return object_; }

  [[noreturn]] void fail(const std::string& field, const std::string& message) const {
    k8slb::fail(object_, field, message);
  }

  std::string string(const json& parent, const char* key, const std::string& field) const {
    if (!parent.is_object() || !parent.contains(key) || parent[key].is_null()) return {};
    const json& value = parent[key];
    if (!value.is_string()) fail(field, fmt::format("must be a string, not {}", value.type_name()));
    return value.get<std::string>();
  }

  int integer(const json& parent, const char* key, const std::string& field) const {
    if (!parent.is_object() || !parent.contains(key) || parent[key].is_null()) return 0;
    const json& value = parent[key];
    if (!value.is_number_integer()) fail(field, fmt::format("must be an integer, not {}", show(value)));
    long long v = value.get<long long>();
    if (v < 0 || v > 65535) fail(field, fmt::format("{} is out of range", v));
    return static_cast<int>(v);
  }

  std::map<std::string, std::string> string_map(const json& parent, const char* key,
                                                const std::string& field) const {
    std::map<std::string, std::string> out;
    if (!parent.is_object() || !parent.contains(key) || parent[key].is_null()) return out;
    const json& value = parent[key];
    if (!value.is_object()) fail(field, "must be an object of strings");
    for (const auto& [k, v] : value.items()) {
      if (!v.is_string()) fail(fmt::format("{}[{}]", field, k), "must be a string");
      out[k] = v.get<std::string>();
    }
    return out;
  }

  std::vector<std::string> string_list(const json& parent, const char* key,
                                       const std::string& field) const {
    std::vector<std::string> out;
    if (!parent.is_object() || !parent.contains(key) || parent[key].is_null()) return out;
    const json& value = parent[key];
    if (!value.is_array()) fail(field, "must be a list of strings");
    for (std::size_t i = 0; i < value.size(); ++i) {
      if (!value[i].is_string()) fail(fmt::format("{}[{}]", field, i), "must be a string");
      out.push_back(value[i].get<std::string>());
    }
    return out;
  }

private:
  std::string object_;
};

// parent[key] when it is a string, else "" (for fields whose type is checked elsewhere).
std::string string_or_empty(const json& parent, const char* key) {
  if (!parent.is_object()) return {};
  auto it = parent.find(key);
  return it != parent.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& member(const json& parent, const char* key) {
  static const json empty = json::object();
  if (parent.is_object() && parent.contains(key) && parent[key].is_object()) return parent[key];
  return empty;
}

std::string object_key(const json& object) {
  const json& metadata = member(object, "metadata");
  std::string ns = string_or_empty(metadata, "namespace");
  std::string name = string_or_empty(metadata, "name");
  if (ns.empty()) return name;
  return ns + "/" + name;
}

Reader reader_for(const json& object, const char* kind) {
  if (!object.is_object()) throw Error(fmt::format("{}: not an object", kind));
  const json& metadata = member(object, "metadata");
  if (!metadata.contains("name") || !metadata["name"].is_string() ||
      metadata["name"].get<std::string>().empty())
    fail(kind, "metadata.name", "is required");
  return Reader(object_key(object));
}

} // namespace

std::string Service::annotation(const std::string& key) const {
  auto it = annotations.find(key);
  return it == annotations.end() ? std::string() : it->second;
}

std::string Service::annotation_field(const std::string& key) const {
  auto it = annotation_keys.find(key);
  return fmt::format("metadata.annotations[{}]", it == annotation_keys.end() ? key : it->second);
}

namespace {

// The settings under loadbalancer/ (the original's keys and k8slb's additions).
const char* const kKnownSettings[] = {"ips", "mode", "nocheck", "pool", "share",
                                      "ssl", "sslbackend", "sslredirect"};

// MetalLB's Service annotations and the k8slb setting each is read as.
struct Foreign {
  const char* key;
  const char* setting;
};
const Foreign kMetallb[] = {
    {"metallb.io/address-pool", "pool"},
    {"metallb.io/loadBalancerIPs", "ips"},
    {"metallb.io/allow-shared-ip", "share"},
    {"metallb.universe.tf/address-pool", "pool"},
    {"metallb.universe.tf/loadBalancerIPs", "ips"},
    {"metallb.universe.tf/allow-shared-ip", "share"},
};

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Levenshtein distance, for the nearest known key to a typo. Keys are at most 63 characters
// after the prefix (Kubernetes' limit for a key's name part), so O(n*m) is small.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string trimmed(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return std::string(text);
}

std::string shown_value(std::string_view text) {
  return shorten(json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace), 80);
}

} // namespace

Annotations read_annotations(const std::map<std::string, std::string>& written) {
  Annotations out;
  out.values = written;
  auto field = [](const std::string& key) { return fmt::format("metadata.annotations[{}]", key); };
  // canonical key -> the keys that set it, canonical spelling first
  std::map<std::string, std::vector<std::string>> sources;
  for (const auto& [key, value] : written) {
    auto slash = key.find('/');
    if (slash == std::string::npos) continue;
    std::string prefix = key.substr(0, slash);
    std::string name = key.substr(slash + 1);
    if (lower(prefix) == "loadbalancer") {
      bool known = std::find(std::begin(kKnownSettings), std::end(kKnownSettings), name) !=
                   std::end(kKnownSettings);
      if (known) {
        std::string canonical = "loadbalancer/" + name;
        auto& list = sources[canonical];
        if (key == canonical) list.insert(list.begin(), key);
        else list.push_back(key);
        if (key != canonical)
          out.notes.push_back({"Normal", "AnnotationMapped", field(key),
                               fmt::format("read as {} (the original's spelling)", canonical)});
        continue;
      }
      const char* nearest = kKnownSettings[0];
      std::size_t best = edit_distance(lower(name), nearest);
      for (const char* candidate : kKnownSettings) {
        std::size_t distance = edit_distance(lower(name), candidate);
        if (distance < best) best = distance, nearest = candidate;
      }
      out.notes.push_back({"Warning", "UnknownAnnotation", field(key),
                           fmt::format("{} is not a k8slb annotation and is ignored; the nearest "
                                       "known one is loadbalancer/{}",
                                       shown_value(key), nearest)});
      continue;
    }
    for (const Foreign& foreign : kMetallb) {
      if (key != foreign.key) continue;
      std::string canonical = std::string("loadbalancer/") + foreign.setting;
      sources[canonical].push_back(key);
      out.notes.push_back({"Normal", "AnnotationMapped", field(key),
                           fmt::format("MetalLB's {} is read as {}", key, canonical)});
    }
  }
  for (const auto& [canonical, keys] : sources) {
    const std::string& first = keys.front();
    out.values[canonical] = written.at(first);
    out.written_as[canonical] = first;
    for (const std::string& other : keys) {
      if (trimmed(written.at(other)) == trimmed(written.at(first))) continue;
      out.notes.push_back({"Warning", "InvalidService", field(other),
                           fmt::format("{} disagrees with {} {}: both set {}; remove one",
                                       shown_value(written.at(other)), first, shown_value(written.at(first)),
                                       canonical)});
    }
  }
  std::stable_sort(out.notes.begin(), out.notes.end(),
                   [](const AnnotationNote& a, const AnnotationNote& b) { return a.field < b.field; });
  return out;
}

Service parse_service(const json& object) {
  Reader r = reader_for(object, "Service");
  const json& metadata = member(object, "metadata");
  const json& spec = member(object, "spec");
  Service s;
  s.name = r.string(metadata, "name", "metadata.name");
  s.ns = r.string(metadata, "namespace", "metadata.namespace");
  if (s.ns.empty()) s.ns = "default";
  r = Reader(s.key());
  s.uid = r.string(metadata, "uid", "metadata.uid");
  s.resource_version = r.string(metadata, "resourceVersion", "metadata.resourceVersion");
  Annotations annotations = read_annotations(r.string_map(metadata, "annotations", "metadata.annotations"));
  s.annotations = std::move(annotations.values);
  s.annotation_keys = std::move(annotations.written_as);
  s.annotation_notes = std::move(annotations.notes);
  s.type = r.string(spec, "type", "spec.type");
  if (s.type.empty()) s.type = "ClusterIP";
  s.lb_class = r.string(spec, "loadBalancerClass", "spec.loadBalancerClass");
  s.selector = r.string_map(spec, "selector", "spec.selector");
  s.load_balancer_ip = r.string(spec, "loadBalancerIP", "spec.loadBalancerIP");
  s.ip_families = r.string_list(spec, "ipFamilies", "spec.ipFamilies");
  s.ip_family_policy = r.string(spec, "ipFamilyPolicy", "spec.ipFamilyPolicy");
  s.source_ranges = r.string_list(spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges");
  if (spec.contains("ports") && !spec["ports"].is_null()) {
    const json& ports = spec["ports"];
    if (!ports.is_array()) r.fail("spec.ports", "must be a list");
    for (std::size_t i = 0; i < ports.size(); ++i) {
      std::string field = fmt::format("spec.ports[{}]", i);
      const json& p = ports[i];
      if (!p.is_object()) r.fail(field, "must be an object");
      ServicePort port;
      port.name = r.string(p, "name", field + ".name");
      port.protocol = r.string(p, "protocol", field + ".protocol");
      if (port.protocol.empty()) port.protocol = "TCP";
      port.port = r.integer(p, "port", field + ".port");
      if (port.port == 0) r.fail(field + ".port", "is required and must be 1-65535");
      port.node_port = r.integer(p, "nodePort", field + ".nodePort");
      if (p.contains("targetPort") && !p["targetPort"].is_null()) {
        const json& target = p["targetPort"];
        if (target.is_string()) {
          std::string text = target.get<std::string>();
          bool numeric = !text.empty() && std::all_of(text.begin(), text.end(), ::isdigit);
          if (numeric && text.size() <= 5 && std::stoi(text) <= 65535 && std::stoi(text) > 0)
            port.target_port = std::stoi(text);
          else
            port.target_port_name = text;
        } else {
          port.target_port = r.integer(p, "targetPort", field + ".targetPort");
        }
      }
      if (port.target_port == 0 && port.target_port_name.empty()) port.target_port = port.port;
      s.ports.push_back(std::move(port));
    }
  }
  const json& status = member(object, "status");
  const json& lb = member(status, "loadBalancer");
  if (lb.contains("ingress") && lb["ingress"].is_array()) {
    const json& ingress = lb["ingress"];
    for (std::size_t i = 0; i < ingress.size(); ++i) {
      std::string ip = r.string(ingress[i], "ip", fmt::format("status.loadBalancer.ingress[{}].ip", i));
      if (ip.empty()) {
        // The original wrote "<ip>.sslip.io" as a hostname (so kube-proxy would not capture the
        // VIP): a Service migrated from it keeps that IP.
        std::string hostname =
            r.string(ingress[i], "hostname", fmt::format("status.loadBalancer.ingress[{}].hostname", i));
        const std::string suffix = ".sslip.io";
        if (hostname.size() > suffix.size() && hostname.ends_with(suffix))
          ip = hostname.substr(0, hostname.size() - suffix.size());
        if (ip.find('.') == std::string::npos) std::replace(ip.begin(), ip.end(), '-', ':'); // IPv6 form
      }
      if (!ip.empty()) s.ingress_ips.push_back(ip);
    }
  }
  return s;
}

EndpointSlice parse_endpoint_slice(const json& object) {
  Reader r = reader_for(object, "EndpointSlice");
  const json& metadata = member(object, "metadata");
  EndpointSlice slice;
  slice.name = r.string(metadata, "name", "metadata.name");
  slice.ns = r.string(metadata, "namespace", "metadata.namespace");
  if (slice.ns.empty()) slice.ns = "default";
  r = Reader(slice.ns + "/" + slice.name);
  auto labels = r.string_map(metadata, "labels", "metadata.labels");
  slice.service_name = labels["kubernetes.io/service-name"];
  slice.address_type = r.string(object, "addressType", "addressType");
  if (object.contains("endpoints") && object["endpoints"].is_array()) {
    const json& endpoints = object["endpoints"];
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
      std::string field = fmt::format("endpoints[{}]", i);
      const json& e = endpoints[i];
      Endpoint endpoint;
      endpoint.addresses = r.string_list(e, "addresses", field + ".addresses");
      const json& conditions = member(e, "conditions");
      auto flag = [&](const char* key, bool fallback) {
        if (!conditions.contains(key) || conditions[key].is_null()) return fallback;
        if (!conditions[key].is_boolean()) r.fail(field + ".conditions." + key, "must be a boolean");
        return conditions[key].get<bool>();
      };
      endpoint.ready = flag("ready", true);
      endpoint.serving = flag("serving", endpoint.ready);
      endpoint.terminating = flag("terminating", false);
      endpoint.node_name = r.string(e, "nodeName", field + ".nodeName");
      const json& target = member(e, "targetRef");
      std::string target_name = r.string(target, "name", field + ".targetRef.name");
      if (!target_name.empty()) {
        std::string target_ns = r.string(target, "namespace", field + ".targetRef.namespace");
        endpoint.target = target_ns.empty() ? target_name : target_ns + "/" + target_name;
      }
      slice.endpoints.push_back(std::move(endpoint));
    }
  }
  if (object.contains("ports") && object["ports"].is_array()) {
    const json& ports = object["ports"];
    for (std::size_t i = 0; i < ports.size(); ++i) {
      std::string field = fmt::format("ports[{}]", i);
      EndpointPort port;
      port.name = r.string(ports[i], "name", field + ".name");
      port.protocol = r.string(ports[i], "protocol", field + ".protocol");
      if (port.protocol.empty()) port.protocol = "TCP";
      port.port = r.integer(ports[i], "port", field + ".port");
      slice.ports.push_back(std::move(port));
    }
  }
  return slice;
}

Node parse_node(const json& object) {
  Reader r = reader_for(object, "Node");
  const json& metadata = member(object, "metadata");
  Node node;
  node.name = r.string(metadata, "name", "metadata.name");
  node.labels = r.string_map(metadata, "labels", "metadata.labels");
  const json& status = member(object, "status");
  if (status.contains("addresses") && status["addresses"].is_array()) {
    for (const auto& address : status["addresses"]) {
      if (string_or_empty(address, "type") == "InternalIP" &&
          address.contains("address") && address["address"].is_string())
        node.internal_ips.push_back(address["address"].get<std::string>());
    }
  }
  if (status.contains("conditions") && status["conditions"].is_array()) {
    for (const auto& condition : status["conditions"]) {
      if (string_or_empty(condition, "type") == "Ready") {
        std::string ready = string_or_empty(condition, "status");
        node.ready = ready.empty() || ready == "True";
      }
    }
  }
  return node;
}

namespace {
// Parses one object into `snapshot` (unsorted): make_snapshot's step, and Store's.
void add_object(Snapshot& snapshot, const json& item, const std::string& config_map_key) {
  if (!item.is_object()) return;
  std::string kind = string_or_empty(item, "kind");
  try {
    if (kind == "Service") {
      snapshot.services.push_back(parse_service(item));
    } else if (kind == "EndpointSlice") {
      snapshot.slices.push_back(parse_endpoint_slice(item));
    } else if (kind == "Node") {
      snapshot.nodes.push_back(parse_node(item));
    } else if (kind == "ConfigMap" && object_key(item) == config_map_key) {
      snapshot.config_map = item;
    }
  } catch (const Error& e) {
    snapshot.errors.push_back(e.what());
  } catch (const json::exception& e) {
    // A type the readers above did not foresee: still this object's error, not the input's.
    snapshot.errors.push_back(describe(object_key(item), "", e.what()));
  }
}
} // namespace

Snapshot make_snapshot(std::vector<json> items, const std::string& config_map_key) {
  Snapshot snapshot;
  for (const auto& item : items) add_object(snapshot, item, config_map_key);
  snapshot.items = std::move(items);
  auto by_key = [](const auto& a, const auto& b) {
    return std::tie(a.ns, a.name) < std::tie(b.ns, b.name);
  };
  std::sort(snapshot.services.begin(), snapshot.services.end(), by_key);
  std::sort(snapshot.slices.begin(), snapshot.slices.end(), by_key);
  std::sort(snapshot.nodes.begin(), snapshot.nodes.end(),
            [](const Node& a, const Node& b) { return a.name < b.name; });
  return snapshot;
}

std::vector<Backend> backends_for(const Service& service, const ServicePort& port,
                                  const std::vector<EndpointSlice>& slices) {
  std::set<Backend> found;
  for (const auto& slice : slices) {
    if (slice.ns != service.ns || slice.service_name != service.name) continue;
    if (slice.address_type == "FQDN") continue;
    // kube-proxy matches a Service port to the slice port of the same name (both empty for
    // an unnamed port) and protocol; the slice's port number is the one to connect to.
    const EndpointPort* match = nullptr;
    for (const auto& candidate : slice.ports) {
      if (candidate.name == port.name && candidate.protocol == port.protocol) {
        match = &candidate;
        break;
      }
    }
    if (match == nullptr || match->port == 0) continue;
    for (const auto& endpoint : slice.endpoints) {
      if (!endpoint.ready) continue;
      for (const auto& address : endpoint.addresses)
        found.insert(Backend{address, match->port, endpoint.target});
    }
  }
  return {found.begin(), found.end()};
}

} // namespace k8slb::model

namespace k8slb::model {

bool is_watch_event(const json& document) {
  return document.is_object() && document.contains("type") && document.contains("object") &&
         !document.contains("kind");
}

std::optional<WatchEvent> read_watch_event(const json& event) {
  if (!event.is_object()) throw Error("a watch event must be a JSON object");
  const std::string type = string_or_empty(event, "type");
  if (type == "BOOKMARK") return std::nullopt;
  auto found = event.find("object");
  if (found == event.end() || !found->is_object())
    throw Error(fmt::format("watch event {}: object: is required", type.empty() ? "(no type)" : shorten(type, 40)));
  if (type == "ERROR")
    throw Error(fmt::format("watch event ERROR: {}", shorten(string_or_empty(*found, "message"), 200)));
  if (type != "ADDED" && type != "MODIFIED" && type != "DELETED")
    throw Error(fmt::format("watch event type '{}': expected ADDED, MODIFIED, DELETED or BOOKMARK", shorten(type, 40)));
  return WatchEvent{type, &*found};
}

Store::Store(std::string config_map_key) : config_map_key_(std::move(config_map_key)) {}

void Store::load(const std::vector<json>& items) {
  services_.clear();
  slices_.clear();
  nodes_.clear();
  config_map_.reset();
  errors_.clear();
  for (const auto& item : items) put(item);
  loaded_ = true;
}

namespace {
// The object's (namespace, name) as the parsers read it: a Service or EndpointSlice without a
// namespace is in "default".
std::pair<std::string, std::string> store_key(const std::string& kind, const json& object) {
  const json& metadata = member(object, "metadata");
  std::string ns = string_or_empty(metadata, "namespace");
  if (ns.empty() && (kind == "Service" || kind == "EndpointSlice")) ns = "default";
  return {std::move(ns), string_or_empty(metadata, "name")};
}
} // namespace

bool Store::apply(const json& event) {
  auto read = read_watch_event(event);
  if (!read) return false;
  const json& object = *read->object;
  const std::string kind = string_or_empty(object, "kind");
  const Key key = store_key(kind, object);
  const bool before = rendered(kind, key);
  erase(kind, key);
  if (read->type != "DELETED") put(object);
  return before || rendered(kind, key);
}

bool Store::rendered(const std::string& kind, const Key& key) const {
  if (errors_.contains({kind, key})) return true; // every line names it
  auto has_ips = [&](const Key& service) {
    auto found = services_.find(service);
    return found != services_.end() && !found->second.ingress_ips.empty();
  };
  if (kind == "Service") return has_ips(key);
  if (kind == "EndpointSlice") {
    auto found = slices_.find(key);
    return found != slices_.end() && has_ips({key.first, found->second.service_name});
  }
  return true; // Nodes, the ConfigMap, anything else
}

// Parsed as make_snapshot parses it, so that a snapshot of the store is the List's.
void Store::put(const json& object) {
  if (!object.is_object()) return;
  const std::string kind = string_or_empty(object, "kind");
  const Key key = store_key(kind, object);
  Snapshot parsed;
  add_object(parsed, object, config_map_key_);
  if (!parsed.errors.empty()) errors_[{kind, key}] = std::move(parsed.errors.front());
  if (!parsed.services.empty()) services_.insert_or_assign(key, std::move(parsed.services.front()));
  if (!parsed.slices.empty()) slices_.insert_or_assign(key, std::move(parsed.slices.front()));
  if (!parsed.nodes.empty()) nodes_.insert_or_assign(key, std::move(parsed.nodes.front()));
  if (parsed.config_map) config_map_ = std::move(parsed.config_map);
}

void Store::erase(const std::string& kind, const Key& key) {
  errors_.erase({kind, key});
  if (kind == "Service") services_.erase(key);
  else if (kind == "EndpointSlice") slices_.erase(key);
  else if (kind == "Node") nodes_.erase(key);
  else if (kind == "ConfigMap" && key.first + "/" + key.second == config_map_key_)
    config_map_.reset();
}

Snapshot Store::snapshot() const {
  Snapshot snapshot;
  snapshot.services.reserve(services_.size());
  for (const auto& [key, service] : services_) snapshot.services.push_back(service);
  snapshot.slices.reserve(slices_.size());
  for (const auto& [key, slice] : slices_) snapshot.slices.push_back(slice);
  for (const auto& [key, node] : nodes_) snapshot.nodes.push_back(node);
  snapshot.config_map = config_map_;
  for (const auto& [key, error] : errors_) snapshot.errors.push_back(error);
  return snapshot;
}

} // namespace k8slb::model
