#include "k8slb/allocate.hpp"

#include <map>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "k8slb/documents.hpp"

namespace k8slb::allocate {

namespace {

using nlohmann::json;

std::string key_of(const json& item) {
  const json& metadata = item.contains("metadata") && item["metadata"].is_object()
                             ? item["metadata"]
                             : json::object();
  std::string ns = metadata.contains("namespace") && metadata["namespace"].is_string()
                       ? metadata["namespace"].get<std::string>()
                       : "";
  std::string name = metadata.contains("name") && metadata["name"].is_string()
                         ? metadata["name"].get<std::string>()
                         : "";
  return (ns.empty() ? std::string("default") : ns) + "/" + name;
}

bool is_service(const json& item) {
  return item.is_object() && item.contains("kind") && item["kind"] == "Service";
}

// status.loadBalancer.ingress as it came in ([] when absent).
json current_ingress(const json& item) {
  if (!item.contains("status") || !item["status"].is_object()) return json::array();
  const json& status = item["status"];
  if (!status.contains("loadBalancer") || !status["loadBalancer"].is_object()) return json::array();
  const json& lb = status["loadBalancer"];
  if (!lb.contains("ingress") || !lb["ingress"].is_array()) return json::array();
  return lb["ingress"];
}

// The addresses of an ingress list, parsed where possible so that "2001:DB8::1" and
// "2001:db8::1" compare equal; entries without an ip (hostname only) count as "".
std::vector<std::string> addresses_of(const json& ingress) {
  std::vector<std::string> out;
  for (const json& entry : ingress) {
    std::string text = entry.is_object() && entry.contains("ip") && entry["ip"].is_string()
                           ? entry["ip"].get<std::string>()
                           : "";
    auto address = ip::Address::try_parse(text);
    out.push_back(address ? address->to_string() : text);
  }
  return out;
}

std::string why_released(const model::Service& service) {
  if (!service.is_load_balancer())
    return fmt::format("the Service is of type {}, not LoadBalancer", service.type);
  if (service.lb_class.empty()) return "the Service has no loadBalancerClass";
  return fmt::format("the Service's loadBalancerClass is '{}'", service.lb_class);
}

} // namespace

json make_event(const model::Service& service, const std::string& reason,
                const std::string& type, const std::string& message) {
  return json{
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"namespace", service.ns}, {"generateName", service.name + "."}}},
      {"involvedObject",
       {{"apiVersion", "v1"},
        {"kind", "Service"},
        {"namespace", service.ns},
        {"name", service.name},
        {"uid", service.uid},
        {"resourceVersion", service.resource_version}}},
      {"reason", reason},
      {"message", message},
      {"type", type},
      {"source", {{"component", "k8slb"}}},
      {"reportingComponent", "k8slb"},
  };
}

json make_object_event(const json& object, const std::string& reason, const std::string& type,
                       const std::string& message) {
  auto text = [&](const char* pointer) {
    const json::json_pointer at(pointer);
    return object.contains(at) && object.at(at).is_string() ? object.at(at).get<std::string>() : std::string();
  };
  std::string ns = text("/metadata/namespace");
  std::string name = text("/metadata/name");
  return json{
      {"apiVersion", "v1"},
      {"kind", "Event"},
      {"metadata", {{"namespace", ns}, {"generateName", name + "."}}},
      {"involvedObject",
       {{"apiVersion", text("/apiVersion")},
        {"kind", text("/kind")},
        {"namespace", ns},
        {"name", name},
        {"uid", text("/metadata/uid")},
        {"resourceVersion", text("/metadata/resourceVersion")}}},
      {"reason", reason},
      {"message", message},
      {"type", type},
      {"source", {{"component", "k8slb"}}},
      {"reportingComponent", "k8slb"},
  };
}

std::vector<json> no_config_events(const std::vector<model::Service>& services, const std::string& why,
                                   const Options& options) {
  std::vector<json> events;
  for (const model::Service& service : services) {
    if (!service.is_load_balancer() || service.lb_class != options.lb_class) continue;
    if (!service.ingress_ips.empty()) continue; // holds its IPs: kept, nothing to say
    Problem problem{service.key(), "", "AllocationFailed", why + "; no IP is assigned until it is fixed"};
    events.push_back(make_event(service, problem.reason, "Warning", problem.to_string()));
  }
  return events;
}

json publish(const std::vector<json>& items, const std::vector<model::Service>& services,
             const std::vector<Result>& results, const PublishOptions& options) {
  return publish(std::vector<json>(items), services, results, options);
}

// Edits the items in place: at 10,000 Services a copy of every item costs more than the
// allocation itself (k8slb-allocate moves the input through here).
json publish(std::vector<json>&& items, const std::vector<model::Service>& services,
             const std::vector<Result>& results, const PublishOptions& options) {
  std::map<std::string, const model::Service*> service_by_key; // namespace/name -> Service
  for (const model::Service& service : services) service_by_key.emplace(service.key(), &service);
  std::map<std::string, const Result*> result_by_key; // namespace/name -> its result
  for (const Result& result : results) result_by_key.emplace(result.service, &result);

  std::vector<json> events;
  for (json& item : items) {
    if (!is_service(item)) continue;
    std::string key = key_of(item);
    auto service_it = service_by_key.find(key);
    auto result_it = result_by_key.find(key);
    if (service_it == service_by_key.end() || result_it == result_by_key.end()) continue;
    const model::Service& service = *service_it->second;
    const Result& result = *result_it->second;
    if (result.outcome == Outcome::skipped) continue;

    json desired = json::array();
    std::vector<std::string> desired_addresses;
    for (const ip::Address& address : result.ips) {
      json entry{{"ip", address.to_string()}};
      if (!options.ip_mode.empty()) entry["ipMode"] = options.ip_mode;
      desired.push_back(std::move(entry));
      desired_addresses.push_back(address.to_string());
    }
    json current = current_ingress(item);
    if (current != desired) {
      json& copy = item;
      if (!copy.contains("status") || !copy["status"].is_object()) copy["status"] = json::object();
      if (!copy["status"].contains("loadBalancer") || !copy["status"]["loadBalancer"].is_object())
        copy["status"]["loadBalancer"] = json::object();
      copy["status"]["loadBalancer"]["ingress"] = desired;

      std::vector<std::string> released;
      for (const std::string& address : addresses_of(current))
        if (!address.empty() &&
            std::find(desired_addresses.begin(), desired_addresses.end(), address) ==
                desired_addresses.end())
          released.push_back(address);
      if (addresses_of(current) == desired_addresses) {
        events.push_back(make_event(
            service, "StatusUpdated", "Normal",
            options.ip_mode.empty()
                ? fmt::format("status rewritten for {}", fmt::join(desired_addresses, ", "))
                : fmt::format("ipMode {} for {}", options.ip_mode,
                              fmt::join(desired_addresses, ", "))));
      } else if (!desired_addresses.empty()) {
        std::vector<std::string> assigned;
        for (std::size_t i = 0; i < result.ips.size(); ++i)
          assigned.push_back(fmt::format("{} (pool {})", desired_addresses[i],
                                         i < result.pools.size() ? result.pools[i] : ""));
        std::string message = fmt::format("assigned {}", fmt::join(assigned, ", "));
        if (!released.empty()) message += fmt::format("; released {}", fmt::join(released, ", "));
        events.push_back(make_event(service, "IPAllocated", "Normal", message));
      } else {
        std::string message = released.empty()
                                  ? std::string("cleared status.loadBalancer.ingress")
                                  : fmt::format("released {}", fmt::join(released, ", "));
        if (result.outcome == Outcome::released) message += ": " + why_released(service);
        events.push_back(make_event(service, "IPReleased", "Normal", message));
      }
    }
    if (result.problem)
      events.push_back(
          make_event(service, result.problem->reason, "Warning", result.problem->to_string()));
    // Warnings stand as long as their cause; what was read how (AnnotationMapped) and moves
    // are told with the change they explain, not on every run.
    for (const Result::Note& note : result.notes)
      if (note.type == "Warning" || current != desired)
        events.push_back(make_event(service, note.problem.reason, note.type, note.problem.to_string()));
  }
  items.reserve(items.size() + events.size());
  for (json& event : events) items.push_back(std::move(event));
  return make_list(std::move(items));
}

} // namespace k8slb::allocate
