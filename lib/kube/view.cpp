// The view k8slb-watch prints: filtered, sorted, serialised once per change.
#include "k8slb/kube.hpp"

#include <fmt/format.h>

#include "k8slb/documents.hpp"

namespace k8slb::kube {

bool wanted_service(const json& service, const ViewOptions& options) {
  const json spec = service.value("spec", json::object());
  const std::string type = spec.is_object() ? spec.value("type", "ClusterIP") : "ClusterIP";
  if (type == "LoadBalancer") {
    auto lb_class = spec.find("loadBalancerClass");
    if (lb_class == spec.end() || lb_class->is_null()) return true;
    return lb_class->is_string() && !options.lb_class.empty() &&
           lb_class->get<std::string>() == options.lb_class;
  }
  // Not a LoadBalancer (any more): pass it on only while it still holds IPs.
  const json* ingress = nullptr;
  if (auto status = service.find("status"); status != service.end() && status->is_object()) {
    if (auto lb = status->find("loadBalancer"); lb != status->end() && lb->is_object()) {
      if (auto in = lb->find("ingress"); in != lb->end()) ingress = &*in;
    }
  }
  return ingress && ingress->is_array() && !ingress->empty();
}

View::View(ViewOptions options) : options_(std::move(options)) {}

namespace {
std::string watch_event(std::string_view type, std::string_view object) {
  std::string out;
  out.reserve(object.size() + 32);
  out += R"({"type":")";
  out += type;
  out += R"(","object":)";
  out += object;
  out += '}';
  return out;
}
} // namespace

bool View::apply(const ResourceKind& kind, const std::vector<Change>& changes, std::vector<std::string>* events) {
  bool changed = false;
  for (const auto& change : changes) {
    std::string ns, name;
    if (auto slash = change.key.find('/'); slash != std::string::npos) {
      ns = change.key.substr(0, slash);
      name = change.key.substr(slash + 1);
    } else {
      name = change.key;
    }
    auto key = std::make_tuple(kind.kind, std::move(ns), std::move(name));
    const bool keep = change.object && (kind.kind != "Service" || wanted_service(*change.object, options_));
    if (!keep) {
      auto it = items_.find(key);
      if (it == items_.end()) continue;
      if (events) events->push_back(watch_event("DELETED", it->second));
      items_.erase(it);
      changed = true;
      continue;
    }
    std::string text =
        change.text.empty() ? change.object->dump(-1, ' ', false, json::error_handler_t::replace) : change.text;
    auto [it, inserted] = items_.try_emplace(std::move(key), text);
    if (inserted) {
      changed = true;
      if (events) events->push_back(watch_event("ADDED", it->second));
    } else if (it->second != text) {
      it->second = std::move(text);
      changed = true;
      if (events) events->push_back(watch_event("MODIFIED", it->second));
    }
  }
  return changed;
}

std::string View::document(std::string_view observed_at) const {
  std::size_t size = 100;
  for (const auto& [key, text] : items_) size += text.size() + 1;
  std::string out;
  out.reserve(size);
  out += R"({"apiVersion":"v1","items":[)";
  bool first = true;
  for (const auto& [key, text] : items_) {
    if (!first) out += ',';
    first = false;
    out += text;
  }
  out += R"(],"kind":"List","metadata":{"resourceVersion":"")";
  if (!observed_at.empty()) out += fmt::format(R"(,"annotations":{{"{}":"{}"}})", kObservedAtAnnotation, observed_at);
  out += "}}";
  return out;
}

} // namespace k8slb::kube
