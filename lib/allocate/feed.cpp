// Feed: k8slb-allocate's state between watch events (k8slb/allocate.hpp).
#include "k8slb/allocate.hpp"

#include <fmt/format.h>

#include "k8slb/documents.hpp"

namespace k8slb::allocate {

namespace {

using nlohmann::json;

std::string text_at(const json& object, std::initializer_list<const char*> path) {
  const json* at = &object;
  for (const char* step : path) {
    if (!at->is_object()) return "";
    auto it = at->find(step);
    if (it == at->end()) return "";
    at = &*it;
  }
  return at->is_string() ? at->get<std::string>() : "";
}

std::pair<std::string, std::string> key_of(const json& object) {
  return {text_at(object, {"metadata", "namespace"}), text_at(object, {"metadata", "name"})};
}

const json& ingress_of(const json& service) {
  static const json none = json::array();
  auto status = service.find("status");
  if (status == service.end() || !status->is_object()) return none;
  auto lb = status->find("loadBalancer");
  if (lb == status->end() || !lb->is_object()) return none;
  auto ingress = lb->find("ingress");
  return ingress == lb->end() ? none : *ingress;
}

} // namespace

Feed::Feed(std::string config_map_key, Options options)
    : config_map_key_(std::move(config_map_key)), tracker_(std::move(options)) {}

std::vector<Result> Feed::load(const std::vector<json>& items, std::vector<model::Service> services,
                               const std::optional<pool::Config>& config, bool stale) {
  loaded_ = true;
  // A List (a resync) that still shows a Service at the version we published a status for
  // predates our write: keep the status we published, or the address could go to another.
  std::map<Key, std::string> in_flight = std::move(in_flight_);
  std::map<Key, json> published_ingress;
  for (const auto& [key, version] : in_flight) {
    auto kept = items_.find(key);
    if (kept != items_.end()) published_ingress[key] = ingress_of(kept->second);
  }
  items_.clear();
  in_flight_.clear();
  pending_.clear();
  config_stale_ = stale;
  touched_.clear();
  changed_.clear();
  events_.clear();
  for (const json& item : items)
    if (item.is_object() && item.value("kind", "") == "Service") items_[key_of(item)] = item;
  if (!published_ingress.empty()) {
    std::map<Key, model::Service*> parsed;
    for (model::Service& service : services) parsed[{service.ns, service.name}] = &service;
    for (auto& [key, ingress] : published_ingress) {
      auto item = items_.find(key);
      auto service = parsed.find(key);
      if (item == items_.end() || service == parsed.end() ||
          text_at(item->second, {"metadata", "resourceVersion"}) != in_flight[key])
        continue;
      item->second["status"]["loadBalancer"]["ingress"] = std::move(ingress);
      in_flight_[key] = in_flight[key];
      *service->second = model::parse_service(item->second);
    }
  }
  if (config) config_ = config;
  if (!config_) return {};
  return tracker_.reset(*config_, std::move(services));
}

void Feed::note(const std::vector<Result>& results) {
  for (const Result& result : results) {
    auto slash = result.service.find('/');
    changed_.emplace(result.service.substr(0, slash), result.service.substr(slash + 1));
  }
}

// The config changed: everything is allocated again under it (the first config: from the
// Services kept so far).
void Feed::reallocate(const pool::Config& config) {
  if (config_) {
    config_ = config;
    note(tracker_.set_config(config));
    return;
  }
  config_ = config;
  std::vector<model::Service> services;
  for (const auto& [key, item] : items_) {
    try {
      services.push_back(model::parse_service(item));
    } catch (const Error&) {
      // reported when its event came
    }
  }
  note(tracker_.reset(config, std::move(services)));
}

void Feed::apply(const json& event) {
  auto read = model::read_watch_event(event);
  if (!read) return; // a BOOKMARK
  const std::string& type = read->type;
  const json& object = *read->object;
  const std::string kind = text_at(object, {"kind"});
  const Key key = key_of(object);
  if (kind == "ConfigMap") {
    if (key.first + "/" + key.second != config_map_key_ || type == "DELETED") return; // the last good config stays
    flush(); // the Services first, as they came before it
    try {
      pool::Config config = pool::parse_config_map(object);
      config_stale_ = false;
      reallocate(config);
    } catch (const Error& e) {
      // The Services still waiting are told again, now that the config they wait for is refused.
      config_stale_ = true;
      for (const Result& result : tracker_.results())
        if (result.outcome == Outcome::failed) note({result});
      std::string consequence = config_ ? "keeping the last good config" : "no IP is assigned until it is fixed";
      events_.push_back(make_object_event(object, "InvalidConfig", "Warning", fmt::format("{}; {}", e.what(), consequence)));
      throw Error(fmt::format("{} ({})", e.what(), consequence));
    }
    return;
  }
  if (kind != "Service") return;
  if (key.second.empty()) throw Error("watch event: a Service without metadata.name");
  in_flight_.erase(key);
  if (type == "DELETED") {
    items_.erase(key);
    touched_.erase(key);
    if (config_) pending_[key] = std::nullopt;
    return;
  }
  items_[key] = object;
  touched_.insert(key);
  if (!config_) return;
  try {
    pending_[key] = model::parse_service(object);
  } catch (const Error&) {
    pending_[key] = std::nullopt; // left out, as from a List
    throw;
  }
}

// The Service changes of the events read so far, allocated in one run.
void Feed::flush() {
  if (pending_.empty()) return;
  std::vector<model::Service> upserted;
  std::vector<std::pair<std::string, std::string>> erased;
  for (auto& [key, service] : pending_) {
    if (service) upserted.push_back(std::move(*service));
    else erased.push_back(key);
  }
  pending_.clear();
  note(tracker_.update(std::move(upserted), erased));
}

std::optional<Feed::Change> Feed::take() {
  flush();
  std::set<Key> keys = std::move(touched_);
  keys.merge(changed_);
  touched_.clear();
  changed_.clear();
  Change change;
  change.events = std::move(events_);
  events_.clear();
  if (config_) {
    for (const Key& key : keys) {
      auto item = items_.find(key);
      const model::Service* service = tracker_.find(key.first, key.second);
      const Result* result = tracker_.result(key.first, key.second);
      if (item == items_.end() || !service || !result) continue; // deleted, or unreadable
      auto flight = in_flight_.find(key);
      if (flight != in_flight_.end() && flight->second == text_at(item->second, {"metadata", "resourceVersion"}))
        continue; // its status is being written: its next event tells
      change.items.push_back(item->second);
      change.services.push_back(*service);
      change.results.push_back(*result);
    }
  }
  if (change.items.empty() && change.events.empty()) return std::nullopt;
  return change;
}

void Feed::published(const json& document) {
  const json* items = &document;
  if (document.is_object()) {
    auto found = document.find("items");
    if (found == document.end()) return;
    items = &*found;
  }
  if (!items->is_array()) return;
  std::vector<model::Service> written; // taken as written: settled at once, in one run
  for (const json& item : *items) {
    if (!item.is_object() || item.value("kind", "") != "Service") continue;
    const Key key = key_of(item);
    auto kept = items_.find(key);
    if (kept == items_.end()) continue;
    const json& ingress = ingress_of(item);
    if (ingress == ingress_of(kept->second)) continue;
    kept->second["status"]["loadBalancer"]["ingress"] = ingress;
    in_flight_[key] = text_at(item, {"metadata", "resourceVersion"});
    if (!config_) continue;
    try {
      written.push_back(model::parse_service(kept->second));
    } catch (const Error&) {
      // it was read before: only its status changed
    }
  }
  if (!written.empty()) note(tracker_.update(std::move(written), {}));
}

bool Feed::trim(json& document) {
  if (!document.is_object() || !document.contains("items") || !document["items"].is_array()) return false;
  json& items = document["items"];
  std::set<Key> named;
  bool any_event = false;
  for (const json& item : items) {
    if (item.value("kind", "") != "Event") continue;
    any_event = true;
    const std::string reason = text_at(item, {"reason"});
    if (reason != "IPAllocated" && reason != "IPReleased" && reason != "StatusUpdated") continue;
    if (text_at(item, {"involvedObject", "kind"}) == "Service")
      named.emplace(text_at(item, {"involvedObject", "namespace"}), text_at(item, {"involvedObject", "name"}));
  }
  json kept = json::array();
  for (json& item : items) {
    const std::string kind = item.value("kind", "");
    if (kind == "Event" || (kind == "Service" && named.count(key_of(item)))) kept.push_back(std::move(item));
  }
  items = std::move(kept);
  return any_event;
}

} // namespace k8slb::allocate
