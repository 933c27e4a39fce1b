// Resource kinds k8slb uses, user-facing resource names, and API paths.
#include "k8slb/kube.hpp"

#include "text.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "k8slb/error.hpp"

namespace k8slb::kube {
namespace {

using detail::lower;

std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(separator, start);
    parts.emplace_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return parts;
}

// DNS-1123 label / subdomain, as Kubernetes requires of names and namespaces; keeps values
// from the command line out of paths unchecked.
bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok) return false;
  }
  return name.front() != '-' && name.front() != '.' && name.back() != '-' && name.back() != '.';
}

} // namespace

std::string ResourceKind::api_version() const {
  return group.empty() ? version : group + "/" + version;
}

const std::vector<ResourceKind>& known_kinds() {
  static const std::vector<ResourceKind> kinds = {
      {"", "v1", "services", true, "Service", {"service", "svc"}},
      {"discovery.k8s.io", "v1", "endpointslices", true, "EndpointSlice", {"endpointslice"}},
      {"", "v1", "configmaps", true, "ConfigMap", {"configmap", "cm"}},
      {"", "v1", "nodes", false, "Node", {"node", "no"}},
      {"", "v1", "events", true, "Event", {"event", "ev"}},
      {"coordination.k8s.io", "v1", "leases", true, "Lease", {"lease"}},
  };
  return kinds;
}

const ResourceKind& find_kind(std::string_view name) {
  const std::string wanted = lower(name);
  for (const auto& kind : known_kinds()) {
    if (wanted == kind.plural || wanted == lower(kind.kind)) return kind;
    for (const auto& alias : kind.names)
      if (wanted == alias) return kind;
  }
  std::string known;
  for (const auto& kind : known_kinds()) known += (known.empty() ? "" : ", ") + kind.plural;
  fail(name, "", "unknown resource (known: " + known + ")");
}

std::string ResourceRef::to_string() const {
  std::string text = kind.plural;
  if (!ns.empty()) text += "/" + ns;
  if (!name.empty()) text += "/" + name;
  return text;
}

ResourceRef parse_resource(std::string_view text) {
  auto parts = split(text, '/');
  ResourceRef ref;
  ref.kind = find_kind(parts[0]);
  auto check = [&](const std::string& value, const char* what) {
    if (!valid_name(value))
      fail(text, "", std::string("\"") + value + "\" is not a valid " + what);
  };
  if (parts.size() == 1) return ref;
  if (ref.kind.namespaced) {
    if (parts.size() > 3) fail(text, "", "expected KIND, KIND/NAMESPACE or KIND/NAMESPACE/NAME");
    check(parts[1], "namespace");
    ref.ns = parts[1];
    if (parts.size() == 3) {
      check(parts[2], "name");
      ref.name = parts[2];
    }
  } else {
    if (parts.size() > 2) fail(text, "", "expected KIND or KIND/NAME (" + ref.kind.plural + " are not namespaced)");
    check(parts[1], "name");
    ref.name = parts[1];
  }
  return ref;
}

namespace {
// A namespace or name as one path segment. Kubernetes never names an object "." or ".." (they
// would be dot segments that the URL resolves away); a hand-made document might.
std::string path_segment(std::string_view value, std::string_view what) {
  if (value.empty() || value == "." || value == "..")
    throw Error(fmt::format("'{}' is not a valid {}: it may not be empty, '.' or '..'", value, what));
  return url_encode(value);
}
} // namespace

std::string collection_path(const ResourceKind& kind, std::string_view ns) {
  std::string path = kind.group.empty() ? "/api/" + kind.version
                                        : "/apis/" + kind.group + "/" + kind.version;
  if (kind.namespaced && !ns.empty()) path += "/namespaces/" + path_segment(ns, "namespace");
  return path + "/" + kind.plural;
}

std::string object_path(const ResourceKind& kind, std::string_view ns, std::string_view name,
                        std::string_view subresource) {
  std::string path = collection_path(kind, ns) + "/" + path_segment(name, "name");
  if (!subresource.empty()) path += "/" + std::string(subresource);
  return path;
}

std::string url_encode(std::string_view value) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

std::string query_string(const ListOptions& options) {
  std::string query;
  auto add = [&](const char* name, const std::string& value) {
    query += query.empty() ? "?" : "&";
    query += name;
    query += "=";
    query += url_encode(value);
  };
  if (!options.label_selector.empty()) add("labelSelector", options.label_selector);
  if (!options.field_selector.empty()) add("fieldSelector", options.field_selector);
  if (options.limit > 0) add("limit", std::to_string(options.limit));
  if (!options.continue_token.empty()) add("continue", options.continue_token);
  if (!options.resource_version.empty()) add("resourceVersion", options.resource_version);
  if (options.watch) add("watch", "true");
  if (options.allow_watch_bookmarks) add("allowWatchBookmarks", "true");
  if (options.timeout_seconds > 0) add("timeoutSeconds", std::to_string(options.timeout_seconds));
  return query;
}

} // namespace k8slb::kube
